"""Images of the field during a run: decode rendered latents, label smoke runs, preview grids.

Nothing here draws random numbers: previews never change a run's trajectory.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .cameras import orbit_cameras
from .atomic import atomic_write_bytes
from .render import render_latents
from .body.skeleton import draw_conditions

SMOKE_LABEL = "SMOKE RUN: random tiny models, image meaningless"
PREVIEW_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)


def view_cameras(azimuths_deg, radius: float = 1.9, polar_deg: float = 90.0, fovy_deg: float = 55.0):
    """Fixed orbit cameras around the origin (DreamWaltz's look-at target) for previews."""
    return orbit_cameras(radius, polar_deg, np.asarray(azimuths_deg, dtype=np.float64), fovy_deg)


@torch.no_grad()
def decode_latents(guidance, latents):
    """RGB images of SD latents through the guidance's VAE.

    Args:
        guidance: ``ControlNetGuidance`` (its ``models.vae``).
        latents: ``[B, 4, h, w]`` scaled latents (``x * scaling_factor``).

    Returns:
        uint8 NumPy ``[B, 8h, 8w, 3]``.
    """
    vae = guidance.models.vae
    x = latents.to(device=guidance.device, dtype=guidance.dtype) / vae.config.scaling_factor
    rgb = vae.decode(x).sample.float()
    rgb = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def render_views(field, guidance, body, cameras, latent_size: int, samples_per_ray: int, amp: bool):
    """Decoded RGB and skeleton conditions of ``cameras`` (deterministic: bin centres).

    Returns:
        ``(rgb, skeleton)``, uint8 ``[B, H, W, 3]`` each at the decoded resolution.
    """
    device_type = field.center.device.type
    with torch.autocast(device_type, dtype=torch.float16, enabled=amp):
        out = render_latents(field, cameras.cam2world, cameras.fovy_deg, latent_size, samples_per_ray)
    rgb = decode_latents(guidance, out.latents.float())
    skeleton = draw_conditions(body, cameras, size=rgb.shape[1])
    return rgb, np.asarray(skeleton, dtype=np.uint8)


def label_strip(image, text: str, color=(255, 80, 80), top: bool = True):
    """``image`` (uint8 ``[H, W, 3]``) with a black strip holding ``text`` added above it
    (``top``) or below it: a new, taller image, so the label never covers the picture."""
    h, w = image.shape[:2]
    scale = max(0.3, w / 1400)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    strip = np.zeros((th + base + 4, w, 3), dtype=np.uint8)
    cv2.putText(strip, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return np.concatenate([strip, image] if top else [image, strip], axis=0)


def label_smoke(image):
    """``image`` with ``SMOKE_LABEL`` (just "SMOKE RUN" where it does not fit) in a strip above it."""
    w = image.shape[1]
    text = SMOKE_LABEL
    if cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, max(0.3, w / 1400), 1)[0][0] > w - 4:
        text = SMOKE_LABEL.split(":")[0]
    return label_strip(image, text)


def preview_grid(rgb, skeleton, smoke: bool):
    """Decoded views on the top row, their skeleton conditions below: uint8 ``[2H, B*W, 3]``
    (smoke runs: a label strip above)."""
    grid = np.concatenate([np.concatenate(list(rgb), axis=1), np.concatenate(list(skeleton), axis=1)], axis=0)
    grid = np.ascontiguousarray(grid)
    return label_smoke(grid) if smoke else grid


def write_png(path, image):
    """Atomic PNG write of an RGB uint8 image."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - cv2 failure
        raise RuntimeError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, data.tobytes())
