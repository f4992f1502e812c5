"""NeRF-convention orbit cameras: look-at poses, batches, and DreamWaltz's random sampler.

Conventions:
    - World: SMPL's canonical frame, +y up, the body facing +z (its left hand at +x).
    - Camera: OpenGL / NeRF. ``cam2world[:3, :3]`` columns are the camera's right (+x), up
      (+y) and back (+z) axes in world coordinates; the camera looks along its -z axis.
      ``cam2world[:3, 3]`` is the camera centre.
    - Orbit angles (stable-dreamfusion's, which DreamWaltz uses): the camera centre is
      ``target + radius * (sin(polar) sin(azimuth), cos(polar), sin(polar) cos(azimuth))``.
      Polar is measured from +y (90 = level with the target, < 90 above it); azimuth 0 puts
      the camera on +z, in front of the body (the front view), azimuth 90 on +x (the body's
      left side), 180 behind it, 270 on its right side.
"""

from __future__ import annotations

import dataclasses

import numpy as np

WORLD_UP = (0.0, 1.0, 0.0)


@dataclasses.dataclass(frozen=True)
class CameraRanges:
    """Ranges of the random orbit sampler (each ``(low, high)``, sampled uniformly).

    Attributes:
        radius: distance from the look-at target.
        polar_deg: polar angle from +y, degrees.
        azimuth_deg: azimuth, degrees, 0 = front view.
        fovy_deg: vertical field of view, degrees.
        target_jitter: each coordinate of the look-at target is ``target + U(-j, j)``.
        target: the un-jittered look-at target (world coordinates).
    """

    radius: tuple = (1.0, 2.0)
    polar_deg: tuple = (60.0, 120.0)
    azimuth_deg: tuple = (0.0, 360.0)
    fovy_deg: tuple = (40.0, 70.0)
    target_jitter: float = 0.5
    target: tuple = (0.0, 0.0, 0.0)


DREAMWALTZ_RANGES = CameraRanges()
"""DreamWaltz's training orbit: radius (1, 2), polar (60, 120), azimuth (0, 360), fovy
(40, 70), look-at jitter +-0.5 around the origin."""


@dataclasses.dataclass
class Cameras:
    """A batch of B pinhole cameras.

    Attributes:
        cam2world: ``[B, 4, 4]`` float64 NeRF-convention camera-to-world poses.
        fovy_deg: ``[B]`` vertical field of view, degrees.
        radius: ``[B]`` distance from camera centre to look-at target.
        polar_deg: ``[B]`` polar angle from +y, degrees.
        azimuth_deg: ``[B]`` azimuth, degrees (0 = front view).
        target: ``[B, 3]`` look-at targets.
    """

    cam2world: np.ndarray
    fovy_deg: np.ndarray
    radius: np.ndarray
    polar_deg: np.ndarray
    azimuth_deg: np.ndarray
    target: np.ndarray

    def __post_init__(self):
        self.cam2world = np.asarray(self.cam2world, dtype=np.float64)
        if self.cam2world.ndim != 3 or self.cam2world.shape[1:] != (4, 4):
            raise ValueError(f"cam2world: expected shape [B, 4, 4], got {self.cam2world.shape}")
        b = self.cam2world.shape[0]
        for name, shape in (("fovy_deg", (b,)), ("radius", (b,)), ("polar_deg", (b,)),
                            ("azimuth_deg", (b,)), ("target", (b, 3))):  # fmt: skip
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"{name}: expected shape {list(shape)}, got {list(value.shape)}")
            setattr(self, name, value)
        if np.any((self.fovy_deg <= 0) | (self.fovy_deg >= 180)):
            raise ValueError(f"fovy_deg: expected values in (0, 180), got {self.fovy_deg}")

    def __len__(self):
        return self.cam2world.shape[0]

    def __getitem__(self, index):
        """Sub-batch (an int gives a batch of one)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Cameras(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    @property
    def centers(self):
        """``[B, 3]`` camera centres in world coordinates."""
        return self.cam2world[:, :3, 3]


def look_at(eye, target, up=WORLD_UP):
    """NeRF-convention camera-to-world poses looking from ``eye`` at ``target``.

    Args:
        eye: ``[3]`` or ``[B, 3]`` camera centres.
        target: ``[3]`` or ``[B, 3]`` points to look at.
        up: ``[3]`` approximate world up. Where the viewing direction is (anti)parallel to
            it (a camera straight above or below), world +z is used instead, so the pose
            stays a proper rotation.

    Returns:
        ``[4, 4]`` (single inputs) or ``[B, 4, 4]`` float64 poses: columns right, up, back
        (= -forward), centre.

    Raises:
        ValueError: eye and target coincide, or shapes do not broadcast to ``[B, 3]``.
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    single = eye.ndim == 1 and target.ndim == 1
    try:
        eye, target = np.broadcast_arrays(np.atleast_2d(eye), np.atleast_2d(target))
    except ValueError as exc:
        raise ValueError(f"eye, target: expected [3] or [B, 3], got {eye.shape} and {target.shape}") from exc
    if eye.shape[-1] != 3:
        raise ValueError(f"eye: expected [3] or [B, 3], got {eye.shape}")
    forward = target - eye
    dist = np.linalg.norm(forward, axis=-1, keepdims=True)
    if np.any(dist <= 1e-12):
        raise ValueError("eye, target: expected distinct points, got eye == target")
    forward = forward / dist
    up = np.broadcast_to(np.asarray(up, dtype=np.float64), forward.shape)
    right = np.cross(forward, up)
    degenerate = np.linalg.norm(right, axis=-1) < 1e-9
    if np.any(degenerate):
        right[degenerate] = np.cross(forward[degenerate], np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    true_up = np.cross(right, forward)
    pose = np.zeros(forward.shape[:-1] + (4, 4))
    pose[..., :3, 0], pose[..., :3, 1], pose[..., :3, 2] = right, true_up, -forward
    pose[..., :3, 3] = eye
    pose[..., 3, 3] = 1.0
    return pose[0] if single else pose


def orbit_cameras(radius, polar_deg, azimuth_deg, fovy_deg, target=(0.0, 0.0, 0.0)):
    """A batch of orbit cameras looking at ``target`` (scalars broadcast to the batch).

    Args:
        radius: distance(s) from the target, > 0.
        polar_deg: polar angle(s) from +y, degrees.
        azimuth_deg: azimuth(s), degrees (0 = in front of the body, on +z).
        fovy_deg: vertical field(s) of view, degrees.
        target: ``[3]`` or ``[B, 3]`` look-at target(s).

    Returns:
        Cameras with ``B`` = the broadcast batch size (1 for all-scalar input).
    """
    target = np.asarray(target, dtype=np.float64)
    r, polar, azimuth, fovy = (np.atleast_1d(np.asarray(v, dtype=np.float64))
                               for v in (radius, polar_deg, azimuth_deg, fovy_deg))  # fmt: skip
    b = np.broadcast_shapes(r.shape, polar.shape, azimuth.shape, fovy.shape, target.shape[:-1] or (1,))
    if len(b) != 1:
        raise ValueError(f"radius, polar_deg, azimuth_deg, fovy_deg: expected scalars or [B], got batch shape {b}")
    r, polar, azimuth, fovy = (np.broadcast_to(v, b).copy() for v in (r, polar, azimuth, fovy))
    target = np.broadcast_to(target, b + (3,)).copy()
    if np.any(r <= 0):
        raise ValueError(f"radius: expected > 0, got {r}")
    p, a = np.radians(polar), np.radians(azimuth)
    offset = np.stack([np.sin(p) * np.sin(a), np.cos(p), np.sin(p) * np.cos(a)], axis=-1)
    pose = look_at(target + r[:, None] * offset, target)
    return Cameras(pose, fovy, r, polar, azimuth, target)


def sample_cameras(batch_size, rng, ranges=DREAMWALTZ_RANGES):
    """Random orbit cameras, each parameter uniform in its range (DreamWaltz's sampler).

    Args:
        batch_size: number of cameras, >= 1.
        rng: ``numpy.random.Generator`` (or an int seed).
        ranges: CameraRanges; the default is DreamWaltz's.

    Returns:
        Cameras of batch ``batch_size``; ``target`` holds the jittered look-at points.
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    rng = np.random.default_rng(rng)

    def uniform(bounds, name):
        low, high = bounds
        if low > high:
            raise ValueError(f"ranges.{name}: expected low <= high, got {bounds}")
        return rng.uniform(low, high, batch_size)

    radius = uniform(ranges.radius, "radius")
    polar = uniform(ranges.polar_deg, "polar_deg")
    azimuth = uniform(ranges.azimuth_deg, "azimuth_deg")
    fovy = uniform(ranges.fovy_deg, "fovy_deg")
    jitter = rng.uniform(-ranges.target_jitter, ranges.target_jitter, (batch_size, 3))
    return orbit_cameras(radius, polar, azimuth, fovy, np.asarray(ranges.target, dtype=np.float64) + jitter)
