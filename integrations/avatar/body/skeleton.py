"""Skeleton condition images: project the 18 OpenPose keypoints, cull hidden face points,
draw with controlnet_aux's OpenPose annotator.

Pixel convention: ``uv = (u, v)``, u to the right and v downwards, in continuous pixel
units where pixel ``(i, j)`` (column, row) covers ``[i, i + 1) x [j, j + 1)``; the optical
axis hits ``(W / 2, H / 2)``. The focal length is ``(H / 2) / tan(fovy / 2)`` for both axes
(square pixels). A point in camera coordinates ``(x, y, z)`` (OpenGL: looking down -z) at
depth ``d = -z > 0`` lands at ``u = W/2 + f x / d``, ``v = H/2 - f y / d``.
"""

from __future__ import annotations

import numpy as np

from .openpose import FACE_KEYPOINTS, load_openpose_drawing

OCCLUSION_MARGIN = 0.02
"""A face point is hidden when the mesh is hit more than this (world units) before it."""

_NEAR = 1e-6
_PAIRS_PER_CHUNK = 1 << 21  # ray x triangle pairs per vectorised block


def image_size(size):
    """``(H, W)`` from an int (square) or an ``(H, W)`` pair.

    Raises:
        ValueError: a non-positive or malformed size.
    """
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    if int(h) != h or int(w) != w or h < 1 or w < 1:
        raise ValueError(f"size: expected an int >= 1 or (H, W) of ints >= 1, got {size!r}")
    return int(h), int(w)


def world_to_camera(points, cameras):
    """``[B, N, 3]`` camera-frame coordinates of world points ``[N, 3]`` for each camera."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points: expected shape [N, 3], got {list(points.shape)}")
    rotation, centre = cameras.cam2world[:, :3, :3], cameras.cam2world[:, :3, 3]
    # world -> camera: R^T (p - c)
    return np.einsum("bji,bnj->bni", rotation, points[None] - centre[:, None])


def project_keypoints(keypoints, cameras, size=512):
    """Pinhole projection of world points into each camera's image.

    Args:
        keypoints: ``[N, 3]`` world points (the 18 OpenPose keypoints of a Body).
        cameras: Cameras of batch B.
        size: image size, int or ``(H, W)``.

    Returns:
        (uv, visible): ``uv`` ``[B, N, 2]`` float64 pixel coordinates (see the module
        docstring; NaN-free, meaningless where not visible), ``visible`` ``[B, N]`` bool:
        in front of the camera and inside the image.
    """
    h, w = image_size(size)
    cam = world_to_camera(keypoints, cameras)
    depth = -cam[..., 2]
    in_front = depth > _NEAR
    safe = np.where(in_front, depth, 1.0)
    focal = (h / 2) / np.tan(np.radians(cameras.fovy_deg) / 2)
    u = w / 2 + focal[:, None] * cam[..., 0] / safe
    v = h / 2 - focal[:, None] * cam[..., 1] / safe
    uv = np.stack([u, v], axis=-1)
    visible = in_front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    return uv, visible


def segment_hits_before(origins, targets, triangles, margin):
    """Whether each segment origin -> target hits a triangle more than ``margin`` before target.

    Vectorised Moller-Trumbore over every (segment, triangle) pair.

    Args:
        origins, targets: ``[R, 3]`` segment ends.
        triangles: ``[F, 3, 3]`` triangle corners.
        margin: distance (world units) before the target within which hits are ignored.

    Returns:
        ``[R]`` bool.
    """
    origins, targets = np.asarray(origins, np.float64), np.asarray(targets, np.float64)
    v0 = triangles[:, 0]
    e1, e2 = triangles[:, 1] - v0, triangles[:, 2] - v0
    hit = np.zeros(len(origins), dtype=bool)
    step = max(1, _PAIRS_PER_CHUNK // max(len(triangles), 1))
    for start in range(0, len(origins), step):
        o, t_end = origins[start:start + step], targets[start:start + step]
        direction = t_end - o  # t = 1 at the target
        length = np.linalg.norm(direction, axis=-1)
        p = np.cross(direction[:, None], e2[None])
        det = np.einsum("fk,rfk->rf", e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = o[:, None] - v0[None]
        u = np.einsum("rfk,rfk->rf", s, p) * inv
        q = np.cross(s, e1[None])
        v = np.einsum("rk,rfk->rf", direction, q) * inv
        t = np.einsum("fk,rfk->rf", e2, q) * inv
        limit = (1.0 - margin / np.maximum(length, 1e-12))[:, None]
        inside = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & (t < limit)
        hit[start:start + step] = inside.any(axis=1)
    return hit


def cull_occluded_face_points(keypoints, vertices, faces, cameras, visible=None,
                              margin=OCCLUSION_MARGIN, indices=FACE_KEYPOINTS):  # fmt: skip
    """Mark face keypoints hidden by the body as invisible (DreamWaltz's occlusion test).

    A ray is cast from each camera centre to each face keypoint (nose, eyes, ears); the point
    is dropped when the mesh is hit more than ``margin`` before it. Seen from behind, the
    head hides the face points, which tells ControlNet the view is a back view.

    Args:
        keypoints: ``[18, 3]`` world keypoints.
        vertices: ``[V, 3]`` posed mesh vertices; faces: ``[F, 3]`` triangle indices.
        cameras: Cameras of batch B.
        visible: ``[B, 18]`` bool to start from (all True when None); not modified.
        margin: hit distance before the point that still counts as the point itself.
        indices: keypoints subject to the test.

    Returns:
        ``[B, 18]`` bool.
    """
    keypoints = np.asarray(keypoints, np.float64)
    b = len(cameras)
    visible = np.ones((b, len(keypoints)), bool) if visible is None else np.array(visible, dtype=bool)
    if visible.shape != (b, len(keypoints)):
        raise ValueError(f"visible: expected shape [{b}, {len(keypoints)}], got {list(visible.shape)}")
    indices = np.asarray(indices, np.int64)
    triangles = np.asarray(vertices, np.float64)[np.asarray(faces, np.int64)]
    origins = np.repeat(cameras.centers, len(indices), axis=0)
    targets = np.tile(keypoints[indices], (b, 1))
    hidden = segment_hits_before(origins, targets, triangles, margin).reshape(b, len(indices))
    visible[:, indices] &= ~hidden
    return visible


def skeleton_keypoints(body, cameras, size=512, cull_face=True):
    """Pixel keypoints and visibility of a Body in each camera (projection + occlusion).

    Returns:
        (uv ``[B, 18, 2]``, visible ``[B, 18]``), as :func:`project_keypoints`.
    """
    uv, visible = project_keypoints(body.keypoints, cameras, size)
    if cull_face:
        visible = cull_occluded_face_points(body.keypoints, body.vertices, body.faces, cameras, visible)
    return uv, visible


def draw_conditions(body, cameras, size=512, cull_face=True):
    """OpenPose skeleton condition images of a Body seen from each camera.

    Black canvas, keypoints and limbs drawn by controlnet_aux's ``draw_bodypose`` (the
    ControlNet-openpose annotator: its colours, limb list and stick width 4).

    Args:
        body: a posed Body.
        cameras: Cameras of batch B.
        size: int or ``(H, W)``; 512 matches ControlNet's training resolution.
        cull_face: drop face points hidden by the mesh.

    Returns:
        ``[B, H, W, 3]`` uint8 RGB.

    Raises:
        ImportError: controlnet_aux is not installed (with the install command).
    """
    util = load_openpose_drawing()
    h, w = image_size(size)
    uv, visible = skeleton_keypoints(body, cameras, (h, w), cull_face)
    images = np.zeros((len(cameras), h, w, 3), dtype=np.uint8)
    for b in range(len(cameras)):
        points = [util.Keypoint(float(u) / w, float(v) / h) if ok else None
                  for (u, v), ok in zip(uv[b], visible[b])]  # fmt: skip
        util.draw_bodypose(images[b], points)
    return images
