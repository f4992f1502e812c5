"""NeRF-convention look-at poses, orbit cameras and DreamWaltz's camera sampler."""

import numpy as np
import pytest

from ssd_toolkit.integrations.avatar import cameras


def _assert_rotation(pose):
    r = pose[..., :3, :3]
    np.testing.assert_allclose(np.swapaxes(r, -1, -2) @ r, np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)


def test_look_at_axes():
    pose = cameras.look_at([0.0, 0.0, 3.0], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(pose, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]], atol=1e-12)
    eye, target = np.array([1.0, 2.0, -0.5]), np.array([0.2, -0.3, 0.4])
    pose = cameras.look_at(eye, target)
    _assert_rotation(pose)
    forward = -pose[:3, 2]  # OpenGL: the camera looks along its -z
    np.testing.assert_allclose(forward, (target - eye) / np.linalg.norm(target - eye), atol=1e-12)
    assert pose[1, 1] > 0  # camera up leans towards world up
    assert abs(pose[1, 0]) < 1e-12  # no roll: right stays horizontal


def test_look_at_straight_down_stays_a_rotation():
    pose = cameras.look_at([[0.0, 2.0, 0.0], [0.0, -2.0, 0.0]], [0.0, 0.0, 0.0])
    _assert_rotation(pose)
    np.testing.assert_allclose(-pose[:, :3, 2], [[0, -1, 0], [0, 1, 0]], atol=1e-12)


def test_orbit_azimuth_convention():
    cams = cameras.orbit_cameras(2.0, [90, 90, 90, 90, 60], [0, 90, 180, 270, 0], 50.0)
    np.testing.assert_allclose(
        cams.centers,
        [[0, 0, 2], [2, 0, 0], [0, 0, -2], [-2, 0, 0], [0, 2 * np.cos(np.pi / 3), 2 * np.sin(np.pi / 3)]],
        atol=1e-12,
    )  # azimuth 0: in front (+z, the way SMPL faces); 90: the body's left (+x); polar 60: above
    _assert_rotation(cams.cam2world)
    assert len(cams) == 5 and cams.fovy_deg.shape == (5,) and cams.target.shape == (5, 3)


def test_orbit_around_a_target():
    cams = cameras.orbit_cameras([1.0, 1.5], 75.0, 30.0, 40.0, target=(0.1, 0.2, 0.3))
    np.testing.assert_allclose(np.linalg.norm(cams.centers - [0.1, 0.2, 0.3], axis=-1), [1.0, 1.5])
    to_target = np.array([0.1, 0.2, 0.3]) - cams.centers
    np.testing.assert_allclose(-cams.cam2world[:, :3, 2], to_target / np.linalg.norm(to_target, axis=-1)[:, None])


def test_sampler_ranges_and_determinism():
    ranges = cameras.DREAMWALTZ_RANGES
    assert (ranges.radius, ranges.polar_deg, ranges.azimuth_deg, ranges.fovy_deg, ranges.target_jitter) == (
        (1.0, 2.0), (60.0, 120.0), (0.0, 360.0), (40.0, 70.0), 0.5)
    cams = cameras.sample_cameras(500, np.random.default_rng(0))
    assert len(cams) == 500
    for name, (low, high) in (("radius", ranges.radius), ("polar_deg", ranges.polar_deg),
                              ("azimuth_deg", ranges.azimuth_deg), ("fovy_deg", ranges.fovy_deg)):
        value = getattr(cams, name)
        assert low <= value.min() and value.max() <= high and np.ptp(value) > 0.8 * (high - low), name
    assert np.abs(cams.target).max() <= 0.5 and np.abs(cams.target).max() > 0.45
    np.testing.assert_allclose(np.linalg.norm(cams.centers - cams.target, axis=-1), cams.radius)
    polar = np.degrees(np.arccos((cams.centers - cams.target)[:, 1] / cams.radius))
    np.testing.assert_allclose(polar, cams.polar_deg, atol=1e-9)
    again = cameras.sample_cameras(500, np.random.default_rng(0))
    np.testing.assert_array_equal(again.cam2world, cams.cam2world)


def test_indexing_gives_sub_batches():
    cams = cameras.orbit_cameras(2.0, 90.0, [0, 90, 180], [40, 50, 60])
    one = cams[1]
    assert len(one) == 1 and one.fovy_deg[0] == 50
    np.testing.assert_array_equal(cams[[0, 2]].cam2world, cams.cam2world[[0, 2]])


def test_errors():
    with pytest.raises(ValueError, match="eye, target: expected distinct points"):
        cameras.look_at([1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="radius: expected > 0"):
        cameras.orbit_cameras(0.0, 90, 0, 50)
    with pytest.raises(ValueError, match="fovy_deg: expected values in"):
        cameras.orbit_cameras(1.0, 90, 0, 180)
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
        cameras.sample_cameras(0, 0)
    with pytest.raises(ValueError, match=r"cam2world: expected shape \[B, 4, 4\]"):
        cameras.Cameras(np.eye(4), [50], [1], [90], [0], [[0, 0, 0]])
    bad = cameras.CameraRanges(radius=(2.0, 1.0))
    with pytest.raises(ValueError, match="ranges.radius: expected low <= high"):
        cameras.sample_cameras(2, 0, bad)
