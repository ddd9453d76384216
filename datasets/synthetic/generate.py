"""`make_synthetic_log`: write a complete nuScenes-format dataroot from the synthetic world.

Layout written (nuScenes' own, plus two avfusion files):
```
<out>/<version>/{13 tables}.json, <out>/<version>/splits.json   {"synth_train": [...], "synth_val": [...], "synth_all": [...]}
<out>/samples/LIDAR_TOP/*.pcd.bin, <out>/sweeps/LIDAR_TOP/*.pcd.bin   (5 x float32 per point)
<out>/samples/CAM_*/*.jpg                                          (keyframes only, see below)
<out>/maps/<token>.png                                             (drivable area, 0.1 m/px)
<out>/gnss/<scene-name>.json                                       (10 Hz fixes, see gnss.py)
<out>/.avfusion-synthetic.json                                     (the generation parameters)
```
Timing follows nuScenes: lidar sweeps at 20 Hz, every tenth one a keyframe (2 Hz samples); each
sample_data has its own ego pose (same token); sweeps belong to the next sample. Deviation from
nuScenes: cameras are written at keyframes only (2 Hz instead of 12 Hz), each at the time the lidar
beam crosses its field of view (up to ~50 ms before the lidar timestamp), because rendering is the
generator's main cost and the pipeline only consumes keyframe images.

Splits: scene i goes to `synth_val` when `i % 4 == 1` and to `synth_train` otherwise, so any log of
two or more scenes has both; a one-scene log puts its scene in `synth_val` and leaves `synth_train`
empty (the scene is useful for evaluating, not for training). `synth_all` lists every scene: a log
generated from a seed no training run used is a held-out set as a whole, evaluated with it.

`annotations_only=True` writes every table, split, map and GNSS file, with the same tokens,
timestamps and annotations (`num_lidar_pts` from ray-casting each keyframe sweep, visibility from
coarse camera rays) as a full run, but no sensor files: fast, for evaluation at scale.
The output appears atomically: everything is generated into a hidden directory beside `out_dir`
and renamed into place at the end, so an interrupted run never leaves a complete-looking dataroot.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from avfusion.calibration.se3 import SE3, quaternion_from_yaw
from avfusion.datasets.index import TABLE_NAMES
from avfusion.datasets.synthetic.cameras import (
    CameraCast,
    cast_camera,
    shade_camera,
    shading_scale,
    visibility_token,
    visible_fractions,
)
from avfusion.datasets.synthetic.geometry import AgentShapes, RayCaster, SceneMesh, build_scene_mesh
from avfusion.datasets.synthetic.gnss import GNSS_RATE_HZ, GnssNoise, simulate_fixes
from avfusion.datasets.synthetic.layout import (
    LOCATIONS,
    LocationLayout,
    build_location_layout,
    drivable_mask,
    stable_seed,
)
from avfusion.datasets.synthetic.lidar import simulate_sweep
from avfusion.datasets.synthetic.rig import (
    CAMERAS,
    EGO_FROM_LIDAR,
    LIDAR_CHANNEL,
    SWEEP_DURATION_US,
    CameraSpec,
    camera_offset_us,
)
from avfusion.datasets.synthetic.shading import loop_table
from avfusion.datasets.synthetic.tables import make_token, vocabulary_tables
from avfusion.datasets.synthetic.world import SceneWorld, build_scene_world
from avfusion.errors import InputError
from avfusion.fileio import write_json_atomic

MARKER_NAME = ".avfusion-synthetic.json"
MARKER_FORMAT = 1
SWEEPS_PER_SAMPLE = 10
ANNOTATION_RANGE_M = 75.0  # agents annotated within this xy distance of the ego
SCENE_RADIUS_M = 110.0  # world geometry ray-cast around the ego (lidar range is 100 m)
# Cameras are ray-cast at 0.25 x the output resolution (400 x 225 rays for 1600 x 900), shaded
# at 0.5 x by a compiled kernel that intersects each pixel's own ray with the plane its nearest
# cast ray hit (`shading.shade_image`), then resized: ray casting is the generator's main cost.
DEFAULT_RENDER_SCALE = 0.25
JPEG_QUALITY = 90
# Background threads shade, encode and write while the main thread ray-casts (Open3D holds the
# GIL while casting; the Numba kernels, OpenCV and file writes release it). Output bytes do not
# depend on the thread count: every task's randomness comes from its own seed.
WORKER_THREADS = 2
MAX_PENDING = 16
MAP_RESOLUTION_M = 0.1
VAL_EVERY = 4


@dataclass(slots=True)
class GenerationReport:
    """What one generation did: where, how much, and the seconds spent per stage."""

    path: Path
    num_samples: int = 0
    num_sweeps: int = 0
    num_images: int = 0
    num_annotations: int = 0
    stage_seconds: dict[str, float] = field(
        default_factory=lambda: {"world": 0.0, "lidar": 0.0, "cameras": 0.0, "annotations": 0.0, "writing": 0.0}
    )


def scene_name(seed: int, scene_index: int) -> str:
    """Scene names carry the seed, so logs of different seeds never share a scene name."""
    return f"scene-s{seed}-{scene_index:04d}"


def split_of(scene_index: int, num_scenes: int) -> str:
    """`synth_val` for every fourth scene starting with the second (and for a lone scene), else `synth_train`."""
    if num_scenes == 1 or scene_index % VAL_EVERY == 1:
        return "synth_val"
    return "synth_train"


def num_samples_for(seconds: float) -> int:
    """Keyframes of a scene `seconds` long (2 Hz), at least one."""
    return max(1, round(seconds * 2.0))


def _validate(
    out_dir: Path,
    num_scenes: object,
    seconds: object,
    seed: object,
    version: object,
    image_scale: object,
    render_scale: object,
) -> None:
    if isinstance(num_scenes, bool) or not isinstance(num_scenes, (int, np.integer)) or num_scenes < 1:
        raise InputError(f"number of scenes must be an integer >= 1, got {num_scenes!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not np.isfinite(seconds) or seconds <= 0:
        raise InputError(f"scene length in seconds must be a number > 0, got {seconds!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    if not isinstance(version, str) or not version or "/" in version or version.startswith("."):
        raise InputError(f"version must be a folder name such as 'v1.0-mini', got {version!r}")
    if not isinstance(image_scale, (int, float)) or not (0.05 <= image_scale <= 2.0):
        raise InputError(f"image scale must lie in [0.05, 2], got {image_scale!r}")
    if not isinstance(render_scale, (int, float)) or not (0.05 <= render_scale <= 1.0):
        raise InputError(f"render scale must lie in [0.05, 1], got {render_scale!r}")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"output {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / MARKER_NAME).is_file():
            raise InputError(
                f"output directory {out_dir} exists, is not empty and is not a previous synthetic log "
                f"(no {MARKER_NAME}); choose another --out or remove it"
            )


def make_synthetic_log(
    out_dir: str | Path,
    *,
    num_scenes: int,
    seconds: float,
    seed: int,
    version: str = "v1.0-mini",
    image_scale: float = 1.0,
    annotations_only: bool = False,
    progress: bool = True,
    render_scale: float = DEFAULT_RENDER_SCALE,
    gnss_noise: GnssNoise | None = None,
) -> Path:
    """Generate a synthetic nuScenes-format log into `out_dir` and return its path (the dataroot).

    Args:
        out_dir: the dataroot to create; an existing previous synthetic log there is replaced.
        num_scenes: scenes (each its own log, at one of the four nuScenes locations), >= 1.
        seconds: length of each scene (s); it has `round(2 * seconds)` keyframes.
        seed: everything (layout, agents, noise, tokens) is a function of it: same seed, same bytes.
        version: the table folder name (`nuscenes.NuScenes(version=...)`).
        image_scale: camera images are written at `image_scale` x 1600 x 900.
        annotations_only: write tables, splits, maps and GNSS only (see the module docstring).
        progress: show a progress bar.
        render_scale: cameras are ray-cast at this fraction of the output resolution and resized.
        gnss_noise: the GNSS error model (default `GnssNoise()`).
    Raises:
        InputError: invalid arguments, or `out_dir` exists and is neither empty nor a synthetic log.
    """
    return generate_log(
        out_dir,
        num_scenes=num_scenes,
        seconds=seconds,
        seed=seed,
        version=version,
        image_scale=image_scale,
        annotations_only=annotations_only,
        progress=progress,
        render_scale=render_scale,
        gnss_noise=gnss_noise,
    ).path


def generate_log(
    out_dir: str | Path,
    *,
    num_scenes: int,
    seconds: float,
    seed: int,
    version: str = "v1.0-mini",
    image_scale: float = 1.0,
    annotations_only: bool = False,
    progress: bool = True,
    render_scale: float = DEFAULT_RENDER_SCALE,
    gnss_noise: GnssNoise | None = None,
) -> GenerationReport:
    """`make_synthetic_log`, returning a `GenerationReport` with the time spent per stage."""
    out = Path(out_dir)
    _validate(out, num_scenes, seconds, seed, version, image_scale, render_scale)
    seed = int(seed)
    noise = GnssNoise() if gnss_noise is None else gnss_noise
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    report = GenerationReport(out)
    try:
        _generate_into(
            staging,
            report,
            num_scenes=int(num_scenes),
            seconds=float(seconds),
            seed=seed,
            version=version,
            image_scale=float(image_scale),
            annotations_only=bool(annotations_only),
            progress=progress,
            render_scale=float(render_scale),
            noise=noise,
        )
        marker = {
            "generator": "avfusion.datasets.synthetic",
            "format": MARKER_FORMAT,
            "num_scenes": int(num_scenes),
            "seconds": float(seconds),
            "seed": seed,
            "version": version,
            "image_scale": float(image_scale),
            "render_scale": float(render_scale),
            "annotations_only": bool(annotations_only),
            "scenes": [scene_name(seed, i) for i in range(int(num_scenes))],
        }
        write_json_atomic(staging / MARKER_NAME, marker)
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(retired / "log")
            staging.rename(out)
            shutil.rmtree(retired)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


@dataclass(slots=True)
class _Tables:
    rows: dict[str, list[dict]]

    def add(self, table: str, record: dict) -> None:
        self.rows[table].append(record)


def _generate_into(
    root: Path,
    report: GenerationReport,
    *,
    num_scenes: int,
    seconds: float,
    seed: int,
    version: str,
    image_scale: float,
    annotations_only: bool,
    progress: bool,
    render_scale: float,
    noise: GnssNoise,
) -> None:
    stages = report.stage_seconds
    tables = _Tables({name: [] for name in TABLE_NAMES})
    for name, rows in vocabulary_tables(seed).items():
        tables.rows[name].extend(rows)
    location_rng = np.random.default_rng(stable_seed(seed, "locations"))
    scene_locations = [LOCATIONS[int(location_rng.integers(0, len(LOCATIONS)))] for _ in range(num_scenes)]
    layouts: dict[str, LocationLayout] = {}
    map_logs: dict[str, list[str]] = {}
    n_samples = num_samples_for(seconds)
    sweeps_per_scene = (n_samples - 1) * SWEEPS_PER_SAMPLE + 1
    steps = num_scenes * (n_samples if annotations_only else sweeps_per_scene)
    splits: dict[str, list[str]] = {"synth_train": [], "synth_val": [], "synth_all": []}
    with (
        tqdm(total=steps, desc="synthetic log", unit="sweep", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="synthetic") as workers,
    ):
        for scene_index, location in enumerate(scene_locations):
            started = time.perf_counter()
            if location not in layouts:
                layouts[location] = build_location_layout(seed, location)
            layout = layouts[location]
            world = build_scene_world(seed, scene_index, layout, seconds)
            stages["world"] += time.perf_counter() - started
            log_token = _write_scene(
                root,
                tables,
                report,
                world,
                seed=seed,
                scene_index=scene_index,
                n_samples=n_samples,
                image_scale=image_scale,
                annotations_only=annotations_only,
                render_scale=render_scale,
                noise=noise,
                bar=bar,
                workers=workers,
            )
            map_logs.setdefault(location, []).append(log_token)
            splits[split_of(scene_index, num_scenes)].append(scene_name(seed, scene_index))
            splits["synth_all"].append(scene_name(seed, scene_index))

    started = time.perf_counter()
    for location in sorted(map_logs):
        token = make_token(seed, "map", location)
        filename = f"maps/{token}.png"
        ok, png = cv2.imencode(".png", drivable_mask(layouts[location], MAP_RESOLUTION_M))
        if not ok:
            raise RuntimeError(f"PNG encoding of the {location} map failed")
        (root / "maps").mkdir(exist_ok=True)
        (root / filename).write_bytes(png.tobytes())
        tables.add(
            "map",
            {"token": token, "log_tokens": map_logs[location], "category": "semantic_prior", "filename": filename},
        )
    table_dir = root / version
    table_dir.mkdir(parents=True, exist_ok=True)
    for name in TABLE_NAMES:
        with open(table_dir / f"{name}.json", "w") as handle:
            json.dump(tables.rows[name], handle, indent=0)
    with open(table_dir / "splits.json", "w") as handle:
        json.dump(splits, handle, indent=1)
    stages["writing"] += time.perf_counter() - started


def _pose_record(token: str, xy: np.ndarray, yaw: float, timestamp_us: int) -> dict:
    return {
        "token": token,
        "timestamp": int(timestamp_us),
        "rotation": quaternion_from_yaw(yaw).tolist(),
        "translation": [float(xy[0]), float(xy[1]), 0.0],
    }


def _write_scene(
    root: Path,
    tables: _Tables,
    report: GenerationReport,
    world: SceneWorld,
    *,
    seed: int,
    scene_index: int,
    n_samples: int,
    image_scale: float,
    annotations_only: bool,
    render_scale: float,
    noise: GnssNoise,
    bar: tqdm,
    workers: ThreadPoolExecutor,
) -> str:
    """Simulate and record one scene (its own log); returns the log token."""
    stages = report.stage_seconds
    layout = world.layout
    name = scene_name(seed, scene_index)
    start_us = 1_700_000_000_000_000 + (seed % 1000) * 86_400_000_000 + scene_index * 3_600_000_000
    date = datetime.datetime.fromtimestamp(start_us / 1e6, tz=datetime.timezone.utc)
    logfile = f"n900-{date:%Y-%m-%d-%H-%M-%S}+0000"
    log_token = make_token(seed, "log", scene_index)
    scene_token = make_token(seed, "scene", scene_index)
    tables.add(
        "log",
        {
            "token": log_token,
            "logfile": logfile,
            "vehicle": "n900",
            "date_captured": f"{date:%Y-%m-%d}",
            "location": layout.location,
        },
    )

    # Calibration (one record per sensor per log, as in nuScenes).
    calibration_tokens: dict[str, str] = {}
    lidar_token = make_token(seed, "calibrated_sensor", scene_index, LIDAR_CHANNEL)
    calibration_tokens[LIDAR_CHANNEL] = lidar_token
    tables.add(
        "calibrated_sensor",
        {
            "token": lidar_token,
            "sensor_token": make_token(seed, "sensor", LIDAR_CHANNEL),
            "translation": EGO_FROM_LIDAR.translation.tolist(),
            "rotation": EGO_FROM_LIDAR.quaternion.tolist(),
            "camera_intrinsic": [],
        },
    )
    for camera in CAMERAS:
        token = make_token(seed, "calibrated_sensor", scene_index, camera.channel)
        calibration_tokens[camera.channel] = token
        ego_from_camera = camera.ego_from_camera()
        tables.add(
            "calibrated_sensor",
            {
                "token": token,
                "sensor_token": make_token(seed, "sensor", camera.channel),
                "translation": ego_from_camera.translation.tolist(),
                "rotation": ego_from_camera.quaternion.tolist(),
                "camera_intrinsic": camera.intrinsics(image_scale).matrix.tolist(),
            },
        )

    # Timeline: sweeps at 20 Hz with a little trigger jitter; keyframes every tenth sweep.
    timing_rng = np.random.default_rng(stable_seed(seed, "timing", scene_index))
    n_sweeps = (n_samples - 1) * SWEEPS_PER_SAMPLE + 1
    sweep_us = start_us + SWEEP_DURATION_US * np.arange(n_sweeps) + timing_rng.integers(-300, 301, n_sweeps)
    sweep_us[0] = start_us
    sample_tokens = [make_token(seed, "sample", scene_index, i) for i in range(n_samples)]
    for i, token in enumerate(sample_tokens):
        tables.add(
            "sample",
            {
                "token": token,
                "timestamp": int(sweep_us[i * SWEEPS_PER_SAMPLE]),
                "scene_token": scene_token,
                "prev": sample_tokens[i - 1] if i > 0 else "",
                "next": sample_tokens[i + 1] if i + 1 < n_samples else "",
            },
        )
    tables.add(
        "scene",
        {
            "token": scene_token,
            "name": name,
            "log_token": log_token,
            "nbr_samples": n_samples,
            "first_sample_token": sample_tokens[0],
            "last_sample_token": sample_tokens[-1],
            "description": f"synthetic drive around a block in {layout.location}, {len(world.agents)} agents",
        },
    )

    lidar_tokens = [make_token(seed, "sample_data", scene_index, LIDAR_CHANNEL, k) for k in range(n_sweeps)]
    camera_tokens = {
        camera.channel: [make_token(seed, "sample_data", scene_index, camera.channel, i) for i in range(n_samples)]
        for camera in CAMERAS
    }
    instance_tokens = [make_token(seed, "instance", scene_index, a) for a in range(len(world.agents))]
    annotations_of: dict[int, list[dict]] = {}
    category_tokens = {name: make_token(seed, "category", name) for name in set(world.agents.category)}
    attribute_tokens: dict[str, str] = {}
    sun = _sun_direction(seed, scene_index)
    shapes = AgentShapes.of(world.agents)
    loops = loop_table(layout)
    pending: list[Future] = []

    for k in range(n_sweeps):
        keyframe = k % SWEEPS_PER_SAMPLE == 0
        sample_index = (k + SWEEPS_PER_SAMPLE - 1) // SWEEPS_PER_SAMPLE  # sweeps belong to the next sample
        timestamp = int(sweep_us[k])
        t_s = (timestamp - start_us) * 1e-6
        xy, yaw, _ = world.ego_pose(t_s)
        folder = "samples" if keyframe else "sweeps"
        filename = f"{folder}/{LIDAR_CHANNEL}/{logfile}__{LIDAR_CHANNEL}__{timestamp}.pcd.bin"
        tables.add("ego_pose", _pose_record(lidar_tokens[k], xy, yaw, timestamp))
        tables.add(
            "sample_data",
            {
                "token": lidar_tokens[k],
                "sample_token": sample_tokens[sample_index],
                "ego_pose_token": lidar_tokens[k],
                "calibrated_sensor_token": lidar_token,
                "filename": filename,
                "fileformat": "pcd",
                "width": 0,
                "height": 0,
                "timestamp": timestamp,
                "is_key_frame": keyframe,
                "prev": lidar_tokens[k - 1] if k > 0 else "",
                "next": lidar_tokens[k + 1] if k + 1 < n_sweeps else "",
            },
        )
        report.num_sweeps += 1
        if annotations_only and not keyframe:
            continue

        started = time.perf_counter()
        states = world.agent_states(t_s, attributes=keyframe)
        caster = RayCaster(build_scene_mesh(layout.structures, shapes, states, xy, SCENE_RADIUS_M))
        sweep = simulate_sweep(
            caster, layout, world.ego_poses, t_s, np.random.default_rng(stable_seed(seed, "lidar", scene_index, k))
        )
        stages["lidar"] += time.perf_counter() - started
        if not annotations_only:
            pending.append(workers.submit(_write_file, root / filename, sweep.points.tobytes()))
            _collect(pending, stages, keep=MAX_PENDING)
        bar.update(1)
        if not keyframe:
            continue

        started = time.perf_counter()
        global_from_ego = SE3.from_yaw(yaw, (float(xy[0]), float(xy[1]), 0.0))
        annotated = np.flatnonzero(np.hypot(*(states.center[:, :2] - xy).T) <= ANNOTATION_RANGE_M)
        points = np.bincount(sweep.agent[sweep.agent >= 0], minlength=len(world.agents))
        fractions = visible_fractions(
            caster,
            CAMERAS,
            global_from_ego,
            annotated,
            states.center[annotated],
            world.agents.size_wlh[annotated],
            states.yaw_rad[annotated],
        )
        for agent, fraction in zip(annotated, fractions, strict=True):
            attribute = states.attribute[agent]
            if attribute and attribute not in attribute_tokens:
                attribute_tokens[attribute] = make_token(seed, "attribute", attribute)
            width, length, height = world.agents.size_wlh[agent]
            annotations_of.setdefault(int(agent), []).append(
                {
                    "token": make_token(seed, "sample_annotation", scene_index, sample_index, int(agent)),
                    "sample_token": sample_tokens[sample_index],
                    "instance_token": instance_tokens[agent],
                    "visibility_token": visibility_token(float(fraction)),
                    "attribute_tokens": [attribute_tokens[attribute]] if attribute else [],
                    "translation": states.center[agent].tolist(),
                    "size": [float(width), float(length), float(height)],
                    "rotation": quaternion_from_yaw(states.yaw_rad[agent]).tolist(),
                    "prev": "",
                    "next": "",
                    "num_lidar_pts": int(points[agent]),
                    "num_radar_pts": 0,
                }
            )
        report.num_annotations += len(annotated)
        stages["annotations"] += time.perf_counter() - started

        for camera in CAMERAS:
            camera_us = timestamp + camera_offset_us(camera) + int(timing_rng.integers(-200, 201))
            camera_t = (camera_us - start_us) * 1e-6
            camera_xy, camera_yaw, _ = world.ego_pose(camera_t)
            token = camera_tokens[camera.channel][sample_index]
            tokens = camera_tokens[camera.channel]
            intrinsics = camera.intrinsics(image_scale)
            filename = f"samples/{camera.channel}/{logfile}__{camera.channel}__{camera_us}.jpg"
            tables.add("ego_pose", _pose_record(token, camera_xy, camera_yaw, camera_us))
            tables.add(
                "sample_data",
                {
                    "token": token,
                    "sample_token": sample_tokens[sample_index],
                    "ego_pose_token": token,
                    "calibrated_sensor_token": calibration_tokens[camera.channel],
                    "filename": filename,
                    "fileformat": "jpg",
                    "width": intrinsics.width,
                    "height": intrinsics.height,
                    "timestamp": camera_us,
                    "is_key_frame": True,
                    "prev": tokens[sample_index - 1] if sample_index > 0 else "",
                    "next": tokens[sample_index + 1] if sample_index + 1 < n_samples else "",
                },
            )
            if annotations_only:
                continue
            started = time.perf_counter()
            camera_states = world.agent_states(camera_t, attributes=False)
            camera_caster = RayCaster(
                build_scene_mesh(layout.structures, shapes, camera_states, camera_xy, SCENE_RADIUS_M)
            )
            global_from_ego_at_camera = SE3.from_yaw(camera_yaw, (float(camera_xy[0]), float(camera_xy[1]), 0.0))
            cast = cast_camera(camera_caster, camera, global_from_ego_at_camera, image_scale * render_scale)
            noise_seed = int(
                np.random.default_rng(stable_seed(seed, "camera", scene_index, k, camera.channel)).integers(0, 2**63)
            )
            stages["cameras"] += time.perf_counter() - started
            # Shading, JPEG encoding and writing release the GIL: they overlap the next ray casts.
            pending.append(
                workers.submit(
                    _shade_and_write,
                    root / filename,
                    cast,
                    camera_caster.mesh,
                    loops,
                    camera,
                    image_scale,
                    image_scale * shading_scale(render_scale),
                    sun,
                    noise_seed,
                )
            )
            report.num_images += 1
            _collect(pending, stages, keep=MAX_PENDING)
        report.num_samples += 1

    _collect(pending, stages, keep=0)

    # Instances and their annotation chains.
    for agent, agent_annotations in sorted(annotations_of.items()):
        for i, record in enumerate(agent_annotations):
            record["prev"] = agent_annotations[i - 1]["token"] if i > 0 else ""
            record["next"] = agent_annotations[i + 1]["token"] if i + 1 < len(agent_annotations) else ""
            tables.add("sample_annotation", record)
        tables.add(
            "instance",
            {
                "token": instance_tokens[agent],
                "category_token": category_tokens[world.agents.category[agent]],
                "nbr_annotations": len(agent_annotations),
                "first_annotation_token": agent_annotations[0]["token"],
                "last_annotation_token": agent_annotations[-1]["token"],
            },
        )

    # GNSS over the scene's span.
    started = time.perf_counter()
    duration_s = (int(sweep_us[-1]) - start_us) * 1e-6
    fixes = simulate_fixes(
        layout.location,
        world.ego_poses,
        world.ego_speeds,
        start_us,
        duration_s,
        noise,
        np.random.default_rng(stable_seed(seed, "gnss", scene_index)),
    )
    gnss_dir = root / "gnss"
    gnss_dir.mkdir(exist_ok=True)
    with open(gnss_dir / f"{name}.json", "w") as handle:
        json.dump(
            {
                "scene_token": scene_token,
                "scene_name": name,
                "location": layout.location,
                "rate_hz": GNSS_RATE_HZ,
                "fixes": fixes,
            },
            handle,
            indent=0,
        )
    stages["writing"] += time.perf_counter() - started
    return log_token


def _collect(pending: list[Future], stages: dict[str, float], keep: int) -> None:
    """Wait for the oldest background tasks until at most `keep` are pending (bounding the memory
    their inputs hold), adding their seconds per stage; re-raises a task's exception."""
    while len(pending) > keep:
        for stage, seconds in pending.pop(0).result().items():
            stages[stage] += seconds


def _write_file(path: Path, payload: bytes) -> dict[str, float]:
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return {"writing": time.perf_counter() - started}


def _shade_and_write(
    path: Path,
    cast: CameraCast,
    mesh: SceneMesh,
    loops: np.ndarray,
    camera: CameraSpec,
    image_scale: float,
    shade_scale: float,
    sun: np.ndarray,
    noise_seed: int,
) -> dict[str, float]:
    """Shade one cast camera image, encode it as JPEG and write it; returns seconds per stage."""
    started = time.perf_counter()
    image = shade_camera(cast, mesh, loops, camera, image_scale, shade_scale, sun, noise_seed)
    shaded = time.perf_counter()
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg.tobytes())
    return {"cameras": shaded - started, "writing": time.perf_counter() - shaded}


def _sun_direction(seed: int, scene_index: int) -> np.ndarray:
    """Unit vector towards the sun (map frame), 25-65 deg above the horizon."""
    rng = np.random.default_rng(stable_seed(seed, "sun", scene_index))
    azimuth = rng.uniform(0, 2 * np.pi)
    elevation = np.radians(rng.uniform(25, 65))
    return np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation), np.sin(elevation)])
