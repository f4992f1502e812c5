"""Start the latent field as a person-shaped blob: fit its density to the body's occupancy.

DreamWaltz pretrains its NeRF on the SMPL silhouette; here the density is fitted directly
to the 3D occupancy of the posed body mesh, which constrains every view at once and needs
no rasteriser. Inside/outside labels come from the nearest mesh vertex: a point is inside
when it lies behind that vertex's (area-weighted) normal. The fit is a few hundred Adam
steps of binary cross-entropy between the label and the occupancy
``1 - exp(-sigma * cell)`` the density gives over one cell length, on fresh points each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .quiet import progress_bar


@dataclass
class BodyFit:
    """Result of ``fit_body_density``.

    Attributes:
        loss: final binary cross-entropy.
        accuracy: fraction of labelled points whose predicted occupancy (> 0.5) matches.
        inside_fraction: fraction of labelled points inside the body.
    """

    loss: float
    accuracy: float
    inside_fraction: float


def body_box(vertices, margin: float):
    """Centre and half-extent of the body's bounding box padded by ``margin`` per side.

    Args:
        vertices: ``[V, 3]`` posed body vertices (NumPy or torch).
        margin: padding in world units, >= 0.

    Returns:
        ``(center [3], half_extent [3])`` float32 NumPy arrays.
    """
    v = np.asarray(_numpy(vertices), dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] == 0:
        raise ValueError(f"vertices: expected shape [V, 3] with V > 0, got {list(v.shape)}")
    lo, hi = v.min(0), v.max(0)
    return ((lo + hi) / 2).astype(np.float32), ((hi - lo) / 2 + margin).astype(np.float32)


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def vertex_normals(vertices, faces):
    """Area-weighted unit vertex normals ``[V, 3]`` (float32 tensors in, float32 out)."""
    tri = vertices[faces]  # [F, 3, 3]
    face_n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    normals = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), face_n.repeat_interleave(3, dim=0))
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def inside_body(points, vertices, normals, chunk: int = 4096):
    """Whether each point is behind the normal of its nearest vertex: bool ``[N]``."""
    out = []
    for start in range(0, points.shape[0], chunk):
        p = points[start : start + chunk]
        nearest = torch.cdist(p, vertices).argmin(dim=1)
        out.append(((p - vertices[nearest]) * normals[nearest]).sum(-1) < 0)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=points.device)


def body_normals(vertices, faces, center, half_extent):
    """Outward vertex normals: the face winding is checked against the box corners (which
    are outside); if most corners come out inside, the normals are flipped."""
    normals = vertex_normals(vertices, faces)
    corners = center + half_extent * torch.tensor(
        [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=torch.float32, device=vertices.device
    )
    return -normals if inside_body(corners, vertices, normals).float().mean() > 0.5 else normals


def occupancy_samples(vertices, normals, center, half_extent, num_points: int, generator):
    """Fresh labelled points: half uniform in the box, half within ~2 cm of the surface.

    Returns:
        ``(points [N, 3], inside [N] float32)`` on ``vertices.device``.
    """
    device = vertices.device
    n_uniform = num_points // 2
    uniform = center + half_extent * (2 * torch.rand((n_uniform, 3), generator=generator, device=device) - 1)
    pick = torch.randint(0, vertices.shape[0], (num_points - n_uniform,), generator=generator, device=device)
    near = vertices[pick] + 0.02 * torch.randn((num_points - n_uniform, 3), generator=generator, device=device)
    points = torch.cat([uniform, near])
    return points, inside_body(points, vertices, normals).float()


def fit_body_density(field, body, steps: int, generator, batch: int = 8192, eval_points: int = 1 << 15,
                     lr: float = 1e-2, progress: bool = True) -> BodyFit:
    """Fit ``field``'s density to the occupancy of ``body`` (in place).

    Every step draws fresh labelled points (so the whole box is constrained, not a fixed
    sample of it); the result is measured on another fresh sample.

    Args:
        field: ``LatentField`` whose box contains the body.
        body: object with ``vertices [V, 3]`` and ``faces [F, 3]`` (NumPy or torch).
        steps: Adam steps (0: only measure).
        generator: ``torch.Generator`` on the field's device (all sampled points).
        batch: labelled points per step.
        eval_points: labelled points of the final measurement.
        lr: Adam learning rate of this fit (a separate optimizer; the training run
            starts its own).
        progress: show a tqdm bar.

    Returns:
        ``BodyFit`` measured after the fit.
    """
    device = field.center.device
    vertices = torch.as_tensor(_numpy(body.vertices), dtype=torch.float32, device=device)
    faces = torch.as_tensor(_numpy(body.faces).astype(np.int64), device=device)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"body: expected vertices [V, 3] and faces [F, 3], got {list(vertices.shape)} and {list(faces.shape)}")
    normals = body_normals(vertices, faces, field.center, field.half_extent)
    cell = float(2 * field.half_extent.max()) / 64

    def bce(points, inside):
        sigma, _ = field(points)
        occupancy = (1 - torch.exp(-sigma * cell)).clamp(1e-5, 1 - 1e-5)
        return F.binary_cross_entropy(occupancy, inside), occupancy

    optimizer = torch.optim.Adam(field.parameters(), lr=lr)
    bar = progress_bar(range(steps), desc="body init", disable=not progress, leave=False)
    for _ in bar:
        loss, _ = bce(*occupancy_samples(vertices, normals, field.center, field.half_extent, batch, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(bce=f"{loss.item():.4f}")
    with torch.no_grad():
        points, inside = occupancy_samples(vertices, normals, field.center, field.half_extent, eval_points, generator)
        loss, occupancy = bce(points, inside)
        accuracy = float(((occupancy > 0.5).float() == inside).float().mean())
    return BodyFit(float(loss), accuracy, float(inside.mean()))
