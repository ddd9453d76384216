"""The tracker's batched constant-velocity Kalman filter against filterpy's, one track at a time:
prediction, update, Rauch-Tung-Striebel smoothing of tracks of different lengths, the process
noise, and the closed-form inverses."""

from __future__ import annotations

import numpy as np
import pytest
from filterpy.common import Q_discrete_white_noise
from filterpy.kalman import KalmanFilter

from avfusion.fusion.tracking import cv_predict, cv_transition, cv_update, rts_smooth, small_inverse


def random_spd(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """`(n, dim, dim)` symmetric positive definite matrices."""
    a = rng.normal(size=(n, dim, dim))
    return a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(dim)


def filterpy_filter(x: np.ndarray, p: np.ndarray, r_var: float) -> KalmanFilter:
    kf = KalmanFilter(dim_x=4, dim_z=2)
    kf.x = x.reshape(4, 1).copy()
    kf.P = p.copy()
    kf.H = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    kf.R = np.eye(2) * r_var
    return kf


@pytest.mark.parametrize("dt_s, var", [(0.5, 2.25), (0.05, 0.01), (1.5, 4.0)])
def test_transition_is_filterpy_white_noise_model(dt_s, var):
    f, q = cv_transition(dt_s, var)
    expected_f = np.eye(4)
    expected_f[0, 2] = expected_f[1, 3] = dt_s
    np.testing.assert_array_equal(f, expected_f)
    # filterpy orders the state (x, y, vx, vy) with order_by_dim=False.
    np.testing.assert_allclose(
        q, Q_discrete_white_noise(2, dt=dt_s, var=var, block_size=2, order_by_dim=False), rtol=1e-12
    )


def test_transition_broadcasts_per_track_variance():
    f, q = cv_transition(0.5, np.array([1.0, 4.0, 0.25]))
    assert f.shape == q.shape == (3, 4, 4)
    for k, var in enumerate([1.0, 4.0, 0.25]):
        np.testing.assert_allclose(q[k], cv_transition(0.5, var)[1], rtol=1e-15)


def test_predict_and_update_match_filterpy_track_by_track():
    rng = np.random.default_rng(3)
    n = 7
    x = rng.normal(0, 5, (n, 4))
    p = random_spd(rng, n, 4)
    var = rng.uniform(0.1, 3.0, n)
    r_var = rng.uniform(0.01, 0.5, n)
    z = rng.normal(0, 5, (n, 2))
    f, q = cv_transition(0.5, var)
    xp, pp = cv_predict(x, p, f, q)
    xu, pu = cv_update(xp, pp, z, r_var)
    for k in range(n):
        kf = filterpy_filter(x[k], p[k], r_var[k])
        kf.predict(F=f[k], Q=q[k])
        np.testing.assert_allclose(xp[k], kf.x[:, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(pp[k], kf.P, rtol=1e-12, atol=1e-12)
        kf.update(z[k].reshape(2, 1))
        np.testing.assert_allclose(xu[k], kf.x[:, 0], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(pu[k], kf.P, rtol=1e-10, atol=1e-10)


def test_rts_smoother_matches_filterpy_on_tracks_of_different_lengths():
    """Three tracks of 6, 1 and 4 steps, filtered with filterpy (missed steps: prediction only),
    padded into one batch and smoothed at once; each must equal filterpy's own smoother."""
    rng = np.random.default_rng(5)
    lengths = np.array([6, 1, 4])
    steps = int(lengths.max())
    var = np.array([2.25, 0.64, 1.0])
    dt = rng.uniform(0.4, 0.6, (3, steps))
    xs = np.zeros((3, steps, 4))
    ps = np.broadcast_to(np.eye(4), (3, steps, 4, 4)).copy()
    expected = []
    for m in range(3):
        kf = filterpy_filter(np.array([rng.normal(), rng.normal(), 3.0, -1.0]), np.diag([0.1, 0.1, 25.0, 25.0]), 0.09)
        fs, qs = [np.eye(4)], [np.zeros((4, 4))]
        xs[m, 0], ps[m, 0] = kf.x[:, 0], kf.P
        for k in range(1, lengths[m]):
            f, q = cv_transition(dt[m, k], var[m])
            kf.predict(F=f, Q=q)
            if k != 2:  # a missed detection in the middle
                kf.update(kf.x[:2] + rng.normal(0, 0.3, (2, 1)))
            xs[m, k], ps[m, k] = kf.x[:, 0], kf.P
            fs.append(f)
            qs.append(q)
        smoothed, smoothed_p, _, _ = kf.rts_smoother(
            xs[m, : lengths[m], :, None], ps[m, : lengths[m]], np.array(fs), np.array(qs)
        )
        expected.append((smoothed[:, :, 0], smoothed_p))
    out_x, out_p = rts_smooth(xs, ps, dt, var, lengths)
    for m in range(3):
        np.testing.assert_allclose(out_x[m, : lengths[m]], expected[m][0], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(out_p[m, : lengths[m]], expected[m][1], rtol=1e-9, atol=1e-10)
        # Padding is left as given.
        np.testing.assert_array_equal(out_x[m, lengths[m] :], xs[m, lengths[m] :])


@pytest.mark.parametrize("dim", [2, 4])
def test_small_inverse_is_the_inverse(dim):
    m = random_spd(np.random.default_rng(dim), 20, dim)
    np.testing.assert_allclose(small_inverse(m), np.linalg.inv(m), rtol=1e-9, atol=1e-9)
    # A matrix's inverse does not depend on the batch it comes in.
    np.testing.assert_array_equal(small_inverse(m[3]), small_inverse(m)[3])
    with pytest.raises(ValueError, match="small_inverse"):
        small_inverse(np.eye(3))
