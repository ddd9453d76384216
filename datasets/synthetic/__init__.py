"""Generator of nuScenes-format driving logs: lidar, six cameras, GNSS, maps and annotated agents.

`make_synthetic_log(out_dir, num_scenes=..., seconds=..., seed=...)` writes a dataroot that
`nuscenes.nuscenes.NuScenes` loads unchanged; see `generate.py` for the layout and timing.
"""

from avfusion.datasets.synthetic.generate import (
    MARKER_NAME,
    GenerationReport,
    generate_log,
    make_synthetic_log,
    scene_name,
    split_of,
)
from avfusion.datasets.synthetic.gnss import GnssNoise

__all__ = [
    "MARKER_NAME",
    "GenerationReport",
    "GnssNoise",
    "generate_log",
    "make_synthetic_log",
    "scene_name",
    "split_of",
]
