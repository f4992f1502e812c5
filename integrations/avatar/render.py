"""Volume rendering of a ``LatentField`` into ``[B, 4, H, W]`` latent images.

Cameras follow the NeRF/OpenGL convention of ``cameras.py``: ``cam2world`` maps camera
coordinates (x right, y up, looking down -z) to world coordinates. Each pixel's ray is
clipped to the field's box and cut into ``num_samples`` equal bins; the density is
sampled once per bin (at a uniformly jittered position when ``generator`` is given, at
the bin centre otherwise) and the bin width is the interval length, so a constant
density ``s`` over a chord of length ``L`` gives exactly ``opacity = 1 - exp(-s L)``.
Compositing runs in float32 whatever the field's dtype (autocast-safe).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RenderOutput:
    """What ``render_latents`` returns.

    Attributes:
        latents: float32 ``[B, 4, H, W]``: composited latents over the field's
            background latent.
        opacity: float32 ``[B, 1, H, W]`` in ``[0, 1]`` (accumulated alpha).
        depth: float32 ``[B, 1, H, W]``: expected ray distance of the composited
            samples (0 where the ray is empty).
    """

    latents: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor


def _as_tensor(value, device):
    return torch.as_tensor(value, dtype=torch.float32, device=device)


def camera_rays(cam2world, fovy_deg, size: int):
    """Pixel-centre rays of ``B`` pinhole cameras.

    Args:
        cam2world: ``[B, 4, 4]`` (NumPy or torch) camera-to-world matrices.
        fovy_deg: vertical field of view in degrees, a scalar or ``[B]``.
        size: image side ``H = W`` in pixels.

    Returns:
        ``(origins, directions)``, float32 ``[B, size*size, 3]`` each, row-major pixels
        (row 0 at the top); directions have unit length.

    Raises:
        ValueError: cam2world not ``[B, 4, 4]``, non-positive size, fov outside (0, 180).
    """
    device = cam2world.device if isinstance(cam2world, torch.Tensor) else "cpu"
    c2w = _as_tensor(cam2world, device)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"cam2world: expected shape [B, 4, 4], got {list(c2w.shape)}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive integer, got {size!r}")
    B = c2w.shape[0]
    fovy = _as_tensor(fovy_deg, device).reshape(-1).expand(B)
    if not bool(torch.all((fovy > 0) & (fovy < 180))):
        raise ValueError(f"fovy_deg: expected degrees in (0, 180), got {fovy.tolist()}")
    focal = 0.5 * size / torch.tan(torch.deg2rad(fovy) / 2)  # [B]
    pix = torch.arange(size, dtype=torch.float32, device=device) + 0.5 - size / 2
    yy, xx = torch.meshgrid(pix, pix, indexing="ij")
    x = xx.reshape(1, -1) / focal[:, None]
    y = -yy.reshape(1, -1) / focal[:, None]
    dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [B, P, 3]
    dirs = dirs_cam @ c2w[:, :3, :3].transpose(1, 2)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, :3, 3].expand_as(dirs)
    return origins, dirs


def intersect_box(origins, directions, lo, hi):
    """Slab test: where each ray enters and leaves an axis-aligned box.

    Args:
        origins, directions: ``[..., 3]``.
        lo, hi: ``[3]`` box corners.

    Returns:
        ``(near, far)`` ``[...]``, ``near >= 0``; ``far == near`` where a ray misses.
    """
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (lo - origins) / safe
    t1 = (hi - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    far = torch.maximum(far, near)
    return near, far


def composite(sigma, values, deltas):
    """Front-to-back alpha compositing along the last sample axis.

    Args:
        sigma: densities ``[R, S]`` (>= 0).
        values: per-sample values ``[R, S, C]``.
        deltas: interval lengths ``[R, S]``.

    Returns:
        ``(color [R, C], opacity [R], weights [R, S])`` with
        ``weights_i = (1 - exp(-sigma_i delta_i)) prod_{j<i} exp(-sigma_j delta_j)``.
    """
    tau = sigma * deltas
    alpha = 1 - torch.exp(-tau)
    # exclusive cumulative transmittance, from cumsum of optical depth (stable, no cumprod)
    trans = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))
    weights = alpha * trans
    color = (weights.unsqueeze(-1) * values).sum(dim=-2)
    return color, weights.sum(dim=-1), weights


def render_latents(field, cam2world, fovy_deg, size: int, num_samples: int, generator=None, chunk_rays: int = 1 << 16):
    """Render ``field`` from ``B`` cameras into ``[B, 4, size, size]`` latents.

    Args:
        field: a ``LatentField`` (or any module with ``center``, ``half_extent``,
            ``background [4]`` and ``forward(points [N, 3]) -> (sigma [N], latent [N, 4])``).
        cam2world: ``[B, 4, 4]`` camera-to-world (OpenGL convention).
        fovy_deg: scalar or ``[B]`` vertical field of view, degrees.
        size: latent image side (64 for SD 1.5 at 512x512).
        num_samples: samples per ray.
        generator: ``torch.Generator`` on the field's device for the jitter inside each
            bin; ``None`` samples bin centres (deterministic previews and turntables).
        chunk_rays: rays per field evaluation (bounds peak memory; results do not
            depend on it).

    Returns:
        ``RenderOutput`` on the field's device.

    Raises:
        ValueError: bad camera shapes, ``size`` or ``num_samples`` < 1.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive integer, got {num_samples!r}")
    device = field.center.device
    origins, dirs = camera_rays(_as_tensor(cam2world, device), _as_tensor(fovy_deg, device), size)
    B, P, _ = origins.shape
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    lo = field.center - field.half_extent
    hi = field.center + field.half_extent
    near, far = intersect_box(origins, dirs, lo, hi)
    bins = (far - near) / num_samples  # [R]
    offset = torch.full((origins.shape[0], num_samples), 0.5, device=device)
    if generator is not None:
        offset = torch.rand(offset.shape, generator=generator, device=device)
    steps = torch.arange(num_samples, device=device, dtype=torch.float32)
    t = near[:, None] + (steps[None] + offset) * bins[:, None]  # [R, S]
    deltas = bins[:, None].expand_as(t)
    colors, opacities, depths = [], [], []
    for start in range(0, origins.shape[0], chunk_rays):
        sl = slice(start, start + chunk_rays)
        points = origins[sl, None] + t[sl, :, None] * dirs[sl, None]
        sigma, latent = field(points)
        color, opacity, weights = composite(sigma.float(), latent.float(), deltas[sl])
        colors.append(color)
        opacities.append(opacity)
        depths.append((weights * t[sl]).sum(dim=-1))
    color = torch.cat(colors)
    opacity = torch.cat(opacities)
    color = color + (1 - opacity)[:, None] * field.background.float()
    to_image = lambda x: x.reshape(B, size, size, -1).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return RenderOutput(to_image(color), to_image(opacity[:, None]), to_image(torch.cat(depths)[:, None]))
