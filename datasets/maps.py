"""Reader for the map rasters of nuScenes-schema logs (`maps/<token>.png`) into `MapRaster`.

nuScenes' files are 8-bit single-channel PNGs at 0.1 m/pixel, row 0 the northern edge, the map
frame's origin at the bottom-left corner, 255 = drivable (the semantic prior). Lyft Level 5's are
RGBA pictures of the same geometry, the prior drawn on white (`drivable_from_lyft_rgb`). They can
exceed OpenCV's default pixel limit (singapore-queenstown is ~1.2 gigapixels), so Pillow decodes
them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from avfusion.errors import FileFormatError
from avfusion.sensors.errors import MissingSensorFile
from avfusion.sensors.map_raster import MapRaster, drivable_from_lyft_rgb

MAP_RESOLUTION_M = 0.1


def read_map_raster(path: str | os.PathLike[str], location: str, resolution_m: float = MAP_RESOLUTION_M) -> MapRaster:
    """Read a map PNG: 8-bit single channel (nuScenes) or RGB / RGBA (Lyft).

    Raises `MissingSensorFile` if the file is absent, `FileFormatError` if it is another kind of
    picture or cannot be decoded.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise MissingSensorFile(file_path, "map raster")
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the real rasters are larger than Pillow's decompression-bomb guard
    try:
        with Image.open(file_path) as image:
            if image.mode in ("L", "1"):
                drivable = np.asarray(image.convert("L"), dtype=np.uint8)
            elif image.mode in ("RGB", "RGBA"):
                drivable = drivable_from_lyft_rgb(np.asarray(image, dtype=np.uint8))
            else:
                raise FileFormatError(
                    file_path,
                    "map raster must be an 8-bit single-channel (nuScenes) or RGB / RGBA (Lyft) PNG, "
                    f"found mode {image.mode!r} {image.size}",
                )
    except OSError as error:
        raise FileFormatError(file_path, f"cannot decode map raster: {error}") from error
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    return MapRaster(location=location, drivable=drivable, resolution_m=resolution_m)
