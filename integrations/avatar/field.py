"""The latent radiance field: density and 4 Stable-Diffusion latent channels in a box.

A multi-resolution tri-plane (three axis-aligned feature planes per resolution, sampled
bilinearly and summed over the planes, concatenated over the resolutions) followed by a
small MLP, as latent-NeRF / DreamWaltz render 64x64 latents instead of RGB. Pure PyTorch:
``grid_sample`` and ``nn.Linear``; no CUDA extension.

The field lives in an axis-aligned box ``[center - half_extent, center + half_extent]``
(world units, the body's frame); outside the box the density is zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

LATENT_CHANNELS = 4


@dataclass(frozen=True)
class FieldConfig:
    """Shape of the field.

    Attributes:
        resolutions: side of the feature planes at each level (coarse to fine).
        features: feature channels per plane and level.
        hidden: width of the MLP's hidden layers.
        layers: number of hidden layers (>= 1).
        density_bias: added to the raw density before ``exp`` (negative: the field
            starts nearly empty; ``body_init`` then makes it person-shaped).
    """

    resolutions: tuple = (32, 128)
    features: int = 8
    hidden: int = 64
    layers: int = 2
    density_bias: float = -1.0

    def __post_init__(self):
        res = tuple(self.resolutions)
        if not res or any(not isinstance(r, int) or isinstance(r, bool) or r < 2 for r in res):
            raise ValueError(f"resolutions: expected a non-empty sequence of integers >= 2, got {self.resolutions!r}")
        object.__setattr__(self, "resolutions", res)
        for name in ("features", "hidden", "layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")


class LatentField(nn.Module):
    """Density + latent field on a bounded box.

    Args:
        center: box centre, 3 floats (world units).
        half_extent: box half-size per axis, 3 positive floats.
        config: ``FieldConfig``.
        generator: optional ``torch.Generator`` for the initial weights (default: the
            global torch RNG).

    Call ``field(points)`` with ``points`` float ``[..., 3]`` in world units; returns
    ``(sigma [...], latent [..., 4])``: ``sigma >= 0`` (``exp`` of the raw density; zero outside the box), ``latent``
    unbounded (SD latents scaled by 0.18215 have roughly unit spread).
    """

    def __init__(self, center, half_extent, config: FieldConfig = FieldConfig(), generator=None):
        super().__init__()
        center = torch.as_tensor(center, dtype=torch.float32).reshape(-1)
        half_extent = torch.as_tensor(half_extent, dtype=torch.float32).reshape(-1)
        if center.numel() != 3 or half_extent.numel() != 3:
            raise ValueError(f"center/half_extent: expected 3 values each, got {center.numel()} and {half_extent.numel()}")
        if not bool(torch.all(half_extent > 0)) or not bool(torch.all(torch.isfinite(center))):
            raise ValueError(f"half_extent: expected 3 positive finite values, got {half_extent.tolist()} (center {center.tolist()})")
        self.config = config
        self.register_buffer("center", center)
        self.register_buffer("half_extent", half_extent)
        self.planes = nn.ParameterList(
            nn.Parameter(0.1 * torch.randn(3, config.features, r, r, generator=generator)) for r in config.resolutions
        )
        width = config.features * len(config.resolutions)
        layers = []
        for _ in range(config.layers):
            layers += [nn.Linear(width, config.hidden), nn.SiLU()]
            width = config.hidden
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1 + LATENT_CHANNELS)
        self.background = nn.Parameter(torch.zeros(LATENT_CHANNELS))
        if generator is not None:
            self._reset_linear(generator)

    def _reset_linear(self, generator):
        """``nn.Linear``'s default init, drawn from ``generator`` (reproducible per seed)."""
        for module in [*self.mlp, self.head]:
            if isinstance(module, nn.Linear):
                bound = 1.0 / module.in_features**0.5
                with torch.no_grad():
                    module.weight.uniform_(-bound, bound, generator=generator)
                    module.bias.uniform_(-bound, bound, generator=generator)

    def normalize(self, points):
        """World points ``[..., 3]`` to box coordinates in ``[-1, 1]`` (outside: beyond)."""
        return (points - self.center.to(points.dtype)) / self.half_extent.to(points.dtype)

    def features(self, unit):
        """Tri-plane features at box coordinates ``unit [N, 3]``: ``[N, features * levels]``."""
        # planes xy, xz, yz; grid_sample takes (x, y) = (width, height) coordinates
        coords = torch.stack([unit[:, [0, 1]], unit[:, [0, 2]], unit[:, [1, 2]]])  # [3, N, 2]
        grid = coords.unsqueeze(1)  # [3, 1, N, 2]
        out = []
        for plane in self.planes:
            sampled = F.grid_sample(plane.to(grid.dtype), grid, mode="bilinear", padding_mode="border", align_corners=True)
            out.append(sampled[:, :, 0, :].sum(0).t())  # [N, C]
        return torch.cat(out, dim=-1)

    def forward(self, points):
        shape = points.shape[:-1]
        unit = self.normalize(points.reshape(-1, 3))
        inside = (unit.abs() <= 1).all(dim=-1)
        raw = self.head(self.mlp(self.features(unit.clamp(-1, 1))))
        # exp (latent-NeRF's activation) reaches the large densities of an opaque body
        # quickly; the clamp bounds it at e^15 so fp16 features cannot overflow it
        sigma = torch.exp((raw[:, 0].float() + self.config.density_bias).clamp(max=15.0)) * inside
        latent = raw[:, 1:]
        return sigma.reshape(shape), latent.reshape(*shape, LATENT_CHANNELS)
