"""The interactive viewer, driven for real: Xvfb, the Open3D window, key presses sent through the
X server (XTest), pictures read back from the window. It runs in a subprocess so that DISPLAY is
set before GLFW starts and a crash in the GL stack cannot take pytest down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avfusion.errors import InputError
from avfusion.tools.viz import render
from avfusion.tools.viz.viewer import BevViewer

_VIEWER_SCRIPT = textwrap.dedent(
    """
    import ctypes, json, sys, time
    import numpy as np
    from avfusion.calibration.boxes import Boxes3D
    from avfusion.calibration.camera import CameraIntrinsics
    from avfusion.labels import CLASS_INDEX
    from avfusion.calibration.se3 import SE3
    from avfusion.tools.viz import render
    from avfusion.tools.viz.viewer import BevViewer

    car = CLASS_INDEX["car"]

    def frame(x_m):
        gt = Boxes3D(center=np.array([[x_m, 0.0, 1.0]]), size_wlh=np.array([[2.0, 4.5, 1.7]]),
                     yaw_rad=np.zeros(1), label=np.array([car]))
        rng = np.random.default_rng(0)
        points = rng.uniform(-40.0, 40.0, (2000, 3)).astype(np.float32)
        points[:, 2] = 0.0
        intrinsics = CameraIntrinsics(np.array([[100.0, 0.0, 99.5], [0.0, 100.0, 49.5], [0.0, 0.0, 1.0]]), 200, 100)
        camera_from_ego = SE3.from_matrix(np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]))
        camera = render.CameraView("CAM_FRONT", np.full((100, 200, 3), (30, 160, 60), np.uint8), intrinsics, camera_from_ego)
        # A gate that trusts the lidar alone everywhere: the ground is drawn red while layer 7 is on.
        gate = render.BevGate(np.stack([np.ones((10, 10), np.float32), np.zeros((10, 10), np.float32)]),
                              ("lidar", "map"), (-40.0, 40.0), (-40.0, 40.0))
        return render.SceneFrame(f"x={x_m}", points, np.zeros(2000, np.float32), gt, None, cameras=(camera,),
                                 gate_bev=gate)

    loads = []

    class LazyFrames:  # a lazily loading sequence, as the CLI gives the viewer
        def __len__(self):
            return 3

        def __getitem__(self, index):
            loads.append(index)
            return frame([20.0, -20.0, 0.0][index])

    x11 = ctypes.CDLL("libX11.so.6")
    xtst = ctypes.CDLL("libXtst.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XStringToKeysym.restype = ctypes.c_ulong
    x11.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    xtst.XTestFakeKeyEvent.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_ulong]
    xtst.XTestFakeMotionEvent.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
    x11.XFlush.argtypes = [ctypes.c_void_p]
    display = x11.XOpenDisplay(None)

    def press(viewer, key):
        code = x11.XKeysymToKeycode(display, x11.XStringToKeysym(key.encode()))
        xtst.XTestFakeMotionEvent(display, -1, 300, 300, 0)  # no window manager: focus follows the pointer
        xtst.XTestFakeKeyEvent(display, code, 1, 0)
        xtst.XTestFakeKeyEvent(display, code, 0, 0)
        x11.XFlush(display)
        for _ in range(20):
            time.sleep(0.05)
            viewer.step()

    def red_ground(picture):
        return int(((picture[..., 0] > 150) & (picture[..., 1] < 60) & (picture[..., 2] < 60)).sum())

    def car_rows(picture):
        mask = np.all(picture == render.CLASS_COLORS_RGB[car], axis=2)
        rows = np.nonzero(mask)[0]
        return [int(mask.sum()), float(rows.mean()) if len(rows) else None]

    result = {}
    viewer = BevViewer(LazyFrames(), show_cameras=True, window_size_px=(600, 600))
    viewer.open()
    for _ in range(5):
        viewer.step()
    result["first"] = car_rows(viewer.capture())
    result["red_ground"] = red_ground(viewer.capture())
    cameras = viewer.capture_cameras()
    # The camera window shows the panel: CAM_FRONT's green image, with the car 20 m ahead drawn on it.
    result["camera_green"] = int(np.all(np.abs(cameras.astype(int) - (30, 160, 60)) <= 3, axis=2).sum())
    result["camera_car"] = int(np.any(np.all(np.abs(cameras.astype(int) - render.CLASS_COLORS_RGB[car]) <= 40, axis=2)))
    press(viewer, "n")
    result["after_n"] = [viewer.index] + car_rows(viewer.capture())
    press(viewer, "2")  # hide the ground truth
    result["after_2"] = car_rows(viewer.capture())
    press(viewer, "2")
    press(viewer, "p")
    result["after_p"] = [viewer.index] + car_rows(viewer.capture())
    press(viewer, "7")  # hide the gate map
    result["after_7"] = red_ground(viewer.capture())
    viewer.toggle_play()
    deadline = time.monotonic() + 20
    while viewer.playing and time.monotonic() < deadline:
        viewer.step()
        time.sleep(0.02)
    result["after_play"] = viewer.index
    result["loads"] = loads
    viewer.close()
    print("RESULT" + json.dumps(result))
    """
)


def test_viewer_window_under_xvfb_steps_with_keys(tmp_path: Path) -> None:
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb not installed (Debian package xvfb; `make system-deps` installs it)")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            display_number = pipe.readline().strip()
        assert display_number, "Xvfb did not report a display number"
        env = dict(os.environ, DISPLAY=f":{display_number}")
        result = subprocess.run(  # noqa: PLW1510 - the return code is asserted below with stderr shown
            [sys.executable, "-c", _VIEWER_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(text for text in result.stdout.splitlines() if text.startswith("RESULT"))
    report = json.loads(line[len("RESULT") :])
    pixels, first_row = report["first"]
    assert pixels > 20, report  # the car is drawn in its class colour
    index, pixels_n, row_n = report["after_n"]
    assert index == 1 and pixels_n > 20
    assert row_n > first_row + 50  # frame 1's car is 20 m behind the ego, frame 0's 20 m ahead: lower in the window
    assert report["after_2"][0] == 0  # key 2 hid the ground-truth boxes
    assert report["after_p"][0] == 0 and abs(report["after_p"][2] - first_row) < 3
    assert report["red_ground"] > 10000 and report["after_7"] == 0  # key 7 hid the gate map
    assert "gate: lidar=red map=blue" in result.stdout  # its key, printed with the frame's title
    assert report["camera_green"] > 5000 and report["camera_car"] == 1
    assert report["after_play"] == 2  # playback ran to the last frame and stopped
    # Keys must reach our callbacks in both windows: an unhandled "p" is Open3D's screen capture,
    # which writes ScreenCapture_*.png into the working directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert sorted(set(report["loads"])) == [0, 1, 2]  # frames were loaded lazily, on demand


def test_viewer_without_display_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    frame = render.SceneFrame("t", np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
    with pytest.raises(InputError, match="--headless"):
        BevViewer([frame]).open()
    with pytest.raises(InputError, match="at least one frame"):
        BevViewer([])
