"""`avfusion dataset make-synthetic`: write a synthetic nuScenes-format log (lidar, cameras, GNSS, maps)."""

from __future__ import annotations

import argparse

from avfusion.datasets.synthetic import GnssNoise, generate_log


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("make-synthetic", help="generate a synthetic nuScenes-format log")
    parser.add_argument("--out", required=True, help="dataroot to create (a previous synthetic log there is replaced)")
    parser.add_argument("--scenes", type=int, required=True, help="number of scenes (>= 1)")
    parser.add_argument("--seconds", type=float, required=True, help="length of each scene in seconds (> 0)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    parser.add_argument("--version", default="v1.0-mini", help="table folder name (default v1.0-mini)")
    parser.add_argument("--image-scale", type=float, default=1.0, help="images at this x 1600x900 (default 1)")
    parser.add_argument(
        "--render-scale",
        type=float,
        default=None,
        help="ray-cast cameras at this fraction of the image size (default 0.25)",
    )
    parser.add_argument(
        "--annotations-only",
        action="store_true",
        help="tables, maps, GNSS and splits only: no lidar or image files (fast)",
    )
    parser.add_argument("--gnss-noise-m", type=float, default=None, help="GNSS white position noise per axis (m)")
    parser.add_argument("--gnss-dropout", type=float, default=None, help="chance that a single GNSS fix is missing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    noise = GnssNoise()
    if args.gnss_noise_m is not None or args.gnss_dropout is not None:
        noise = GnssNoise(
            position_sigma_m=noise.position_sigma_m if args.gnss_noise_m is None else args.gnss_noise_m,
            dropout_probability=noise.dropout_probability if args.gnss_dropout is None else args.gnss_dropout,
        )
    options = {} if args.render_scale is None else {"render_scale": args.render_scale}
    report = generate_log(
        args.out,
        num_scenes=args.scenes,
        seconds=args.seconds,
        seed=args.seed,
        version=args.version,
        image_scale=args.image_scale,
        annotations_only=args.annotations_only,
        progress=not args.no_progress,
        gnss_noise=noise,
        **options,
    )
    total = sum(report.stage_seconds.values())
    print(
        f"wrote {report.path}: {args.scenes} scenes, {report.num_samples} samples, {report.num_sweeps} lidar "
        f"sweeps, {report.num_images} images, {report.num_annotations} annotations in {total:.1f} s"
    )
    return 0
