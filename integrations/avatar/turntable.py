"""The end-of-run turntable: the avatar seen from ``frames`` evenly spaced azimuths.

Written as a GIF always and as an MP4 when an FFmpeg encoder is available
(``imageio-ffmpeg``: ``pip install imageio-ffmpeg``). Each frame has a strip below the
rendered image with its azimuth (which also keeps consecutive frames distinct, so GIF
writers never merge them and the frame count is exactly ``frames``); a smoke run's frames
have a "SMOKE RUN" strip above. Neither strip covers the render.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .preview import label_smoke, label_strip, render_views, view_cameras
from .quiet import progress_bar

OVERLAY_ALPHA = 0.7


@dataclass
class Turntable:
    """What ``write_turntable`` wrote.

    Attributes:
        frames: number of frames.
        gif: path of the GIF.
        mp4: path of the MP4, or None when no encoder is installed.
        mp4_skipped: why there is no MP4 (None when there is one).
        frame_dir: directory of the individual PNG frames.
    """

    frames: int
    gif: Path
    mp4: Path | None
    mp4_skipped: str | None = None
    frame_dir: Path | None = None


def overlay_skeleton(rgb, skeleton, alpha: float = OVERLAY_ALPHA):
    """Blend the non-black skeleton pixels over ``rgb`` (uint8 ``[H, W, 3]`` each)."""
    mask = skeleton.max(axis=-1, keepdims=True) > 0
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * skeleton.astype(np.float32)
    return np.where(mask, blended.round().astype(np.uint8), rgb)


def azimuth_label(image, azimuth_deg: float):
    """``image`` with its azimuth written in a strip below it (outside the rendered frame)."""
    return label_strip(image, f"az {azimuth_deg:.0f}", color=(200, 200, 200), top=False)


def turntable_frames(field_, guidance, body, frames: int, latent_size: int, samples_per_ray: int, amp: bool,
                     overlay: bool, smoke: bool, progress: bool = True):
    """The turntable's frames, uint8 ``[frames, H + strips, W, 3]`` (azimuth ``360 k / frames``)."""
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames: expected an integer >= 1, got {frames!r}")
    azimuths = np.arange(frames) * (360.0 / frames)
    out = []
    for k in progress_bar(range(frames), desc="turntable", disable=not progress, leave=False):
        rgb, skeleton = render_views(field_, guidance, body, view_cameras([azimuths[k]]), latent_size, samples_per_ray, amp)
        frame = overlay_skeleton(rgb[0], skeleton[0]) if overlay else rgb[0].copy()
        frame = azimuth_label(label_smoke(frame) if smoke else frame, azimuths[k])
        out.append(frame)
    return np.stack(out)


def _mp4_writer_available():
    """None when an MP4 can be written, else the reason (shown in the run's log)."""
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        return "imageio-ffmpeg is not installed (pip install imageio-ffmpeg); wrote the GIF and PNG frames only"
    return None


def write_turntable(frames_rgb, directory, fps: int) -> Turntable:
    """Write ``turntable.gif``, ``turntable.mp4`` (when possible) and ``turntable/NNN.png``.

    Args:
        frames_rgb: uint8 ``[N, H, W, 3]``.
        directory: output directory.
        fps: frames per second.
    """
    import imageio.v3 as iio  # noqa: PLC0415

    from .preview import write_png  # noqa: PLC0415

    directory = Path(directory)
    frame_dir = directory / "turntable"
    for k, frame in enumerate(frames_rgb):
        write_png(frame_dir / f"{k:03d}.png", frame)
    gif = directory / "turntable.gif"
    buffer = io.BytesIO()
    iio.imwrite(buffer, frames_rgb, extension=".gif", duration=1000.0 / fps, loop=0)
    atomic_write_bytes(gif, buffer.getvalue())
    skipped = _mp4_writer_available()
    mp4 = None
    if skipped is None:
        mp4 = directory / "turntable.mp4"
        tmp = directory / ".turntable.tmp.mp4"
        # even sides for yuv420p; macro_block_size=1 stops imageio from resizing odd frames
        h, w = frames_rgb.shape[1:3]
        padded = np.pad(frames_rgb, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        iio.imwrite(tmp, padded, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1,
                    pixelformat="yuv420p")
        tmp.replace(mp4)
    return Turntable(len(frames_rgb), gif, mp4, skipped, frame_dir)


@torch.no_grad()
def make_turntable(field_, guidance, body, directory, frames: int, fps: int, latent_size: int, samples_per_ray: int,
                   amp: bool, overlay: bool, smoke: bool, progress: bool = True) -> Turntable:
    """Render and write the turntable (see ``turntable_frames`` and ``write_turntable``)."""
    images = turntable_frames(field_, guidance, body, frames, latent_size, samples_per_ray, amp, overlay, smoke, progress)
    return write_turntable(images, directory, fps)
