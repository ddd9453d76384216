"""MapRaster: the pixel convention (row 0 north, origin bottom-left) and BEV crops around a pose."""

from __future__ import annotations

import numpy as np
import pytest

from avfusion.calibration.se3 import SE3
from avfusion.sensors.map_raster import BevGrid, MapRaster, drivable_from_lyft_rgb


def raster_with_east_half_drivable() -> MapRaster:
    # 200 x 300 pixels at 0.1 m: 30 m east-west, 20 m north-south; x >= 15 m drivable
    drivable = np.zeros((200, 300), np.uint8)
    drivable[:, 150:] = 255
    return MapRaster("boston-seaport", drivable)


def test_pixel_convention_row_zero_is_north() -> None:
    drivable = np.zeros((200, 300), np.uint8)
    drivable[0, 0] = 255  # the north-west pixel: x in [0, 0.1), y in [19.9, 20.0)
    raster = MapRaster("boston-seaport", drivable)
    assert raster.is_drivable(np.array([[0.05, 19.95], [0.05, 0.05], [0.15, 19.95], [-1.0, 19.95]])).tolist() == [
        True,
        False,
        False,
        False,
    ]
    np.testing.assert_allclose(raster.pixel_from_map([[0.05, 19.95]]), [[0.0, 0.0]], atol=1e-12)
    assert raster.size_m == pytest.approx((30.0, 20.0))


def test_crop_identity_heading_east() -> None:
    raster = raster_with_east_half_drivable()
    # ego at (15, 10) heading east (yaw 0): ego x = map x - 15
    patch = raster.crop_bev(SE3.from_yaw(0.0, [15.0, 10.0, 0.0]), (-5.0, 5.0), (-4.0, 4.0), 1.0)
    assert patch.shape == (8, 10) and patch.dtype == np.float32
    # columns run along ego x: the five forward columns (x > 0) are drivable, the rear five not
    np.testing.assert_allclose(patch[:, 5:], 1.0)
    np.testing.assert_allclose(patch[:, :5], 0.0)


def test_crop_heading_north_puts_east_on_the_right() -> None:
    raster = raster_with_east_half_drivable()
    # heading north (yaw pi/2): ego -y (right) points east, the drivable side
    patch = raster.crop_bev(SE3.from_yaw(np.pi / 2, [15.0, 10.0, 0.0]), (-4.0, 4.0), (-5.0, 5.0), 1.0)
    assert patch.shape == (10, 8)
    # rows run along ego y, row 0 = most negative y = the right side = east
    np.testing.assert_allclose(patch[:5], 1.0, atol=1e-6)
    np.testing.assert_allclose(patch[5:], 0.0, atol=1e-6)


def test_crop_off_the_map_is_zero() -> None:
    raster = raster_with_east_half_drivable()
    patch = raster.crop_bev(SE3.from_yaw(0.3, [500.0, -400.0, 0.0]), (-10.0, 10.0), (-10.0, 10.0), 0.5)
    assert patch.shape == (40, 40) and not patch.any()


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"uint8 array, got shape \(2, 2, 3\)"):
        MapRaster("x", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="increasing"):
        BevGrid((1.0, -1.0), (0.0, 1.0), 0.5)


def test_lyft_rgba_prior_is_every_pixel_with_no_white_channel() -> None:
    pixels = np.array(
        [
            [[255, 255, 255, 255], [128, 128, 128, 255], [254, 254, 254, 255]],
            [[255, 200, 200, 255], [200, 200, 255, 255], [100, 100, 100, 0]],
        ],
        np.uint8,
    )
    # white background off; grey on; near-white on; a 255 in any channel off; transparent off
    assert drivable_from_lyft_rgb(pixels).tolist() == [[0, 255, 255], [0, 0, 0]]
    assert drivable_from_lyft_rgb(pixels[:, :, :3]).tolist() == [[0, 255, 255], [0, 0, 255]]
    with pytest.raises(ValueError, match="H, W, 3"):
        drivable_from_lyft_rgb(pixels[:, :, :2])
