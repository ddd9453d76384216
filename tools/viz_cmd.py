"""`avfusion viz`: look at a scene in the fused BEV: the Open3D window, or `--headless` pictures.

Predictions come from a replay run (`--run RUN`: its submission and, with `replay --save-bev`, its
heatmaps and a gated model's gate maps) or, without `--run`, from running the detector on each frame
as it is shown. A gate map, where a frame has one, is drawn instead of the heatmap unless `--no-gate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avfusion.errors import InputError
from avfusion.tools.viz.render import ALL_LAYERS, Layer, PointColoring, RenderOptions, render_scene
from avfusion.tools.viz.scene import scene_frames_for_viewing
from avfusion.tools.viz.viewer import BevViewer


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "viz",
        help="Open3D viewer of the fused BEV (points, boxes, map, heatmap, cameras); --headless renders PNG/GIF/MP4",
        description=(
            "Show a scene: lidar points, ground-truth and predicted boxes coloured by class, the map and "
            "the BEV heatmap on the ground (for a gated model its gate map instead: lidar red, camera "
            "green, map blue), the six cameras with projected boxes. Keys: N/P next/previous, Space play, "
            "H/I/C point colours, 1-7 toggle points/truth/predictions/map/heatmap/tracks/gate, R top view, "
            "Q quit."
        ),
    )
    parser.add_argument("--dataroot", type=Path, required=True, help="the nuScenes-format dataroot")
    parser.add_argument("--version", default="v1.0-mini", help="table folder (default v1.0-mini)")
    parser.add_argument(
        "--run", type=Path, help="a replay run folder: show its predictions (and kept heatmaps and gate maps)"
    )
    parser.add_argument("--scene", help="scene name (default: the first scene of the run, else of the log)")
    parser.add_argument("--checkpoint", type=Path, help="without --run: detector weights (default: shipped)")
    parser.add_argument("--device", default="cpu", help="without --run: torch device for the detector")
    parser.add_argument("--no-predictions", action="store_true", help="show sensors and ground truth only")
    parser.add_argument("--color", choices=("height", "intensity", "camera"), default="height", help="point colours")
    parser.add_argument("--sweeps", type=int, default=1, help="lidar sweeps shown per frame (default 1)")
    parser.add_argument("--headless", action="store_true", help="render pictures instead of opening a window")
    parser.add_argument("--out", type=Path, help="with --headless: folder for the PNGs, GIF and MP4")
    parser.add_argument("--frames", type=int, help="show / render only the first N frames of the scene")
    parser.add_argument("--fps", type=float, default=2.0, help="playback and video rate (keyframes are 2 Hz)")
    parser.add_argument("--no-video", action="store_true", help="with --headless: PNGs only")
    parser.add_argument(
        "--no-gate", action="store_true", help="draw the BEV heatmap even where a gated model's gate map exists"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.headless and args.out is None:
        raise InputError("--headless needs --out DIR for the pictures")
    if args.sweeps < 1:
        raise InputError(f"--sweeps must be >= 1, got {args.sweeps}")
    if args.frames is not None and args.frames < 1:
        raise InputError(f"--frames must be >= 1, got {args.frames}")
    frames, scene_name = scene_frames_for_viewing(
        dataroot=args.dataroot,
        version=args.version,
        scene=args.scene,
        run_dir=args.run,
        checkpoint=args.checkpoint,
        device=args.device,
        with_predictions=not args.no_predictions,
        num_sweeps=args.sweeps,
    )
    if args.frames is not None:
        frames = frames[: args.frames]
    layers = ALL_LAYERS - {Layer.GATE} if args.no_gate else ALL_LAYERS
    options = RenderOptions(layers=layers, point_coloring=PointColoring(args.color))
    if args.headless:
        from tqdm import tqdm

        with tqdm(total=len(frames), unit="frame", desc=f"render {scene_name}") as bar:
            rendered = render_scene(
                frames,
                args.out,
                options,
                fps=args.fps,
                stem=scene_name,
                video=not args.no_video,
                progress=lambda _index: bar.update(1),
            )
        print(f"{len(rendered.pictures)} pictures of {scene_name} in {args.out}")
        if rendered.gif is not None:
            print(f"animation: {rendered.gif}\nvideo:     {rendered.mp4}")
        return 0
    BevViewer(frames, options, play_interval_s=1.0 / args.fps).run()
    return 0
