"""Map noise augmentation: off by default, misregistration moves the crop, holes and blanking."""

from __future__ import annotations

import dataclasses

import numpy as np

from avfusion.fusion.augment import MapNoise, SampleAugmentation, draw_augmentation, draw_map_noise
from avfusion.fusion.batch import map_patch
from avfusion.fusion.config import AugmentConfig, tiny_for_tests


def test_off_by_default_and_the_other_draws_unchanged_when_on() -> None:
    config = AugmentConfig()
    assert not config.map_noise_enabled
    rng = np.random.default_rng(5)
    plain = [draw_augmentation(rng, config) for _ in range(20)]
    assert all(a.map_noise == MapNoise() for a in plain)
    noisy_config = dataclasses.replace(
        config,
        map_shift_probability=0.5,
        map_holes_probability=0.5,
        map_blank_probability=0.2,
        map_wrong_probability=0.2,
    )
    # Noise is drawn after everything else: the first sample's geometry and drops are the same.
    first_plain = draw_augmentation(np.random.default_rng(9), config)
    first_noisy = draw_augmentation(np.random.default_rng(9), noisy_config)
    assert dataclasses.replace(first_noisy, map_noise=MapNoise()) == first_plain
    draws = [draw_map_noise(rng, noisy_config) for _ in range(400)]
    assert 0.1 < np.mean([d.blank for d in draws]) < 0.3
    wrong = [d for d in draws if np.hypot(*d.shift_xy_m) >= 30.0]
    shifted = [d for d in draws if 0.0 < np.hypot(*d.shift_xy_m) < 30.0]
    assert 0.1 < len(wrong) / 400 < 0.3 and len(shifted) > 100
    assert all(max(abs(v) for v in d.shift_xy_m) <= 1.5 and abs(d.rotation_rad) <= 0.05 for d in shifted)
    assert 0.35 < np.mean([bool(d.holes) for d in draws]) < 0.65
    # No map, no noise drawn.
    assert draw_augmentation(np.random.default_rng(1), noisy_config, has_map=False).map_noise == MapNoise()


def test_shift_moves_the_patch_and_holes_blank_cells(frame_factory) -> None:
    frame = frame_factory()
    config = tiny_for_tests()
    cell = config.grid.cell_m
    clean = map_patch(frame, config, SampleAugmentation())
    assert clean is not None and 0.0 < clean.mean() < 1.0
    # Cropping around the pose moved 3 cells to the left (ego +y) shows the map 3 rows further on.
    shifted = map_patch(frame, config, SampleAugmentation(map_noise=MapNoise(shift_xy_m=(0.0, 3 * cell))))
    np.testing.assert_allclose(shifted[:-3], clean[3:], atol=1e-5)
    holes = MapNoise(holes=((0.0, 0.0, 0.5, 0.5),))
    patched = map_patch(frame, config, SampleAugmentation(map_noise=holes))
    rows, cols = clean.shape
    assert np.all(patched[: rows // 2, : cols // 2] == 0.0)
    np.testing.assert_array_equal(patched[rows // 2 :], clean[rows // 2 :])
    blank = map_patch(frame, config, SampleAugmentation(map_noise=MapNoise(blank=True)))
    assert blank.shape == clean.shape and not blank.any()
