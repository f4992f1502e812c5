"""Unit tests of the avatar run's parts: field, renderer, body init, config, checkpoints."""

import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from ssd_toolkit.integrations.avatar import atomic, checkpoint, config
from ssd_toolkit.integrations.avatar.body_init import fit_body_density, inside_body, vertex_normals
from ssd_toolkit.integrations.avatar.cameras import look_at
from ssd_toolkit.integrations.avatar.field import FieldConfig, LatentField
from ssd_toolkit.integrations.avatar.render import camera_rays, composite, intersect_box, render_latents


class ConstantField(nn.Module):
    """Density ``sigma`` and latent ``value`` inside a box, zero outside."""

    def __init__(self, sigma, value, half=0.5):
        super().__init__()
        self.register_buffer("center", torch.zeros(3))
        self.register_buffer("half_extent", torch.full((3,), half))
        self.background = nn.Parameter(torch.tensor([0.5, -0.5, 0.25, 0.0]))
        self.sigma, self.value = sigma, torch.tensor(value)

    def forward(self, points):
        inside = ((points - self.center).abs() <= self.half_extent).all(-1)
        sigma = self.sigma * inside.float()
        return sigma, self.value.expand(*points.shape[:-1], 4)


def front_camera(distance=2.0, fovy=30.0):
    return torch.as_tensor(look_at([0.0, 0.0, distance], [0.0, 0.0, 0.0]), dtype=torch.float32)[None], fovy


def uv_sphere(radius=0.4, n=24):
    """A closed, outward-wound UV sphere (vertices, faces)."""
    verts = [[0, radius, 0]]
    for i in range(1, n):
        th = math.pi * i / n
        for j in range(2 * n):
            ph = 2 * math.pi * j / (2 * n)
            verts.append([radius * math.sin(th) * math.sin(ph), radius * math.cos(th), radius * math.sin(th) * math.cos(ph)])
    verts.append([0, -radius, 0])
    ring = lambda i, j: 1 + (i - 1) * 2 * n + j % (2 * n)  # noqa: E731
    faces = []
    for j in range(2 * n):
        faces.append([0, ring(1, j), ring(1, j + 1)])
        faces.append([len(verts) - 1, ring(n - 1, j + 1), ring(n - 1, j)])
    for i in range(1, n - 1):
        for j in range(2 * n):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, c, b], [b, c, d]]
    return np.array(verts, np.float32), np.array(faces, np.int64)


# ------------------------------------------------------------------------- renderer


def test_rays_point_along_minus_z_of_the_camera():
    c2w, fovy = front_camera()
    origins, dirs = camera_rays(c2w, fovy, 4)
    assert origins.shape == dirs.shape == (1, 16, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(1, 16))
    assert torch.all(dirs[..., 2] < 0)  # camera on +z looks towards -z
    # top-left pixel looks up-left (x < 0, y > 0); rays are symmetric about the axis
    assert dirs[0, 0, 0] < 0 and dirs[0, 0, 1] > 0
    torch.testing.assert_close(dirs[0].mean(0)[:2], torch.zeros(2), atol=1e-6, rtol=0)


def test_empty_field_renders_zero_opacity_and_the_background():
    field = ConstantField(0.0, [1.0, 1.0, 1.0, 1.0])
    c2w, fovy = front_camera()
    out = render_latents(field, c2w, fovy, 8, 16, generator=torch.Generator().manual_seed(0))
    assert out.latents.shape == (1, 4, 8, 8) and out.opacity.shape == (1, 1, 8, 8)
    assert torch.all(out.opacity == 0)
    torch.testing.assert_close(out.latents, field.background.detach().view(1, 4, 1, 1).expand(1, 4, 8, 8))


@pytest.mark.parametrize("sigma", [0.5, 3.0])
def test_constant_density_gives_the_analytic_transmittance(sigma):
    """Rays through a box of constant density: opacity = 1 - exp(-sigma * chord)."""
    field = ConstantField(sigma, [2.0, 0.0, -1.0, 0.5])
    c2w, fovy = front_camera(fovy=20.0)
    size = 6
    out = render_latents(field, c2w, fovy, size, 7, generator=torch.Generator().manual_seed(1))
    origins, dirs = camera_rays(c2w, fovy, size)
    near, far = intersect_box(origins[0], dirs[0], -field.half_extent, field.half_extent)
    expected = 1 - torch.exp(-sigma * (far - near))
    assert torch.all(far - near > 0.99)  # every ray crosses the whole box
    torch.testing.assert_close(out.opacity.reshape(-1), expected, rtol=1e-5, atol=1e-6)
    expected_latent = expected[:, None] * field.value + (1 - expected)[:, None] * field.background.detach()
    torch.testing.assert_close(out.latents[0].permute(1, 2, 0).reshape(-1, 4), expected_latent, rtol=1e-5, atol=1e-6)


def test_composite_matches_a_literal_loop():
    g = torch.Generator().manual_seed(3)
    sigma = torch.rand(5, 9, generator=g) * 4
    values = torch.randn(5, 9, 4, generator=g)
    deltas = torch.rand(5, 9, generator=g) * 0.3
    color, opacity, weights = composite(sigma, values, deltas)
    for r in range(5):
        T, acc = 1.0, torch.zeros(4)
        for i in range(9):
            a = 1 - math.exp(-float(sigma[r, i] * deltas[r, i]))
            acc += T * a * values[r, i]
            T *= 1 - a
        torch.testing.assert_close(color[r], acc, rtol=1e-5, atol=1e-6)
        assert abs(float(opacity[r]) - (1 - T)) < 1e-5


def test_rays_missing_the_box_are_empty():
    field = ConstantField(5.0, [1.0, 1.0, 1.0, 1.0], half=0.05)
    c2w = torch.as_tensor(look_at([3.0, 0.0, 2.0], [3.0, 0.0, 0.0]), dtype=torch.float32)[None]
    out = render_latents(field, c2w, 20.0, 4, 8)
    assert torch.all(out.opacity == 0) and torch.all(out.depth == 0)


def test_render_is_chunk_invariant_and_differentiable():
    field = LatentField([0, 0, 0], [0.5, 0.8, 0.4], FieldConfig((8, 16), 4, 16), generator=torch.Generator().manual_seed(0))
    c2w, fovy = front_camera()
    a = render_latents(field, c2w, fovy, 6, 5, generator=torch.Generator().manual_seed(2))
    b = render_latents(field, c2w, fovy, 6, 5, generator=torch.Generator().manual_seed(2), chunk_rays=7)
    torch.testing.assert_close(a.latents, b.latents, rtol=1e-6, atol=1e-7)
    a.latents.sum().backward()
    assert all(p.grad is not None for p in field.planes)


def test_render_rejects_bad_arguments():
    field = ConstantField(1.0, [0.0] * 4)
    with pytest.raises(ValueError, match=r"cam2world: expected shape \[B, 4, 4\], got \[4, 4\]"):
        render_latents(field, torch.eye(4), 40.0, 4, 4)
    with pytest.raises(ValueError, match="num_samples: expected a positive integer, got 0"):
        render_latents(field, torch.eye(4)[None], 40.0, 4, 0)
    with pytest.raises(ValueError, match="fovy_deg: expected degrees in"):
        render_latents(field, torch.eye(4)[None], 190.0, 4, 4)


def test_field_is_zero_outside_its_box_and_seeded():
    cfg = FieldConfig((4, 8), 2, 8)
    f1 = LatentField([0, 0, 0], [1, 1, 1], cfg, generator=torch.Generator().manual_seed(5))
    f2 = LatentField([0, 0, 0], [1, 1, 1], cfg, generator=torch.Generator().manual_seed(5))
    pts = torch.tensor([[0.2, 0.1, -0.3], [1.5, 0.0, 0.0], [0.0, -2.0, 0.0]])
    s1, l1 = f1(pts)
    s2, l2 = f2(pts)
    assert torch.equal(s1, s2) and torch.equal(l1, l2)
    assert s1[0] > 0 and s1[1] == 0 and s1[2] == 0
    with pytest.raises(ValueError, match="half_extent: expected 3 positive finite values"):
        LatentField([0, 0, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="resolutions: expected a non-empty sequence"):
        FieldConfig((1,))


# ------------------------------------------------------------------------- body init


def test_inside_test_and_body_fit_on_a_sphere():
    verts, faces = uv_sphere()
    v, f = torch.from_numpy(verts), torch.from_numpy(faces)
    normals = vertex_normals(v, f)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, -0.45]])
    assert inside_body(pts, v, normals).tolist() == [True, True, False, False]
    inward = vertex_normals(v, f[:, [0, 2, 1]])  # reversed winding: the fit must detect and flip

    from types import SimpleNamespace

    sphere = SimpleNamespace(vertices=verts, faces=faces[:, [0, 2, 1]])

    assert inside_body(pts, v, inward).tolist() == [False, False, True, True]
    torch.manual_seed(0)
    field = LatentField([0, 0, 0], [0.55] * 3, FieldConfig((8, 16), 4, 16), generator=torch.Generator().manual_seed(0))
    before = fit_body_density(field, sphere, 0, torch.Generator().manual_seed(1), batch=1024, eval_points=2048, progress=False)
    after = fit_body_density(field, sphere, 150, torch.Generator().manual_seed(1), batch=1024, eval_points=2048, progress=False)
    assert 0.1 < after.inside_fraction < 0.6
    assert after.loss < 0.5 * before.loss and after.accuracy > 0.9


# ------------------------------------------------------------------------- config


def test_config_precedence_file_then_flags(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"prompt": "a robot", "body": "x", "steps": 7, "batch": 3, "sd-model": "dir"}))
    cfg = config.resolve({"batch": 2}, f)
    assert (cfg.steps, cfg.batch, cfg.sd_model, cfg.prompt) == (7, 2, "dir", "a robot")
    tiny = config.resolve({"tiny": True, "steps": 3})
    assert tiny.steps == 3 and tiny.latent_size == config.TINY_DEFAULTS["latent_size"]


def test_config_yaml_and_round_trip(tmp_path):
    pytest.importorskip("yaml")
    f = tmp_path / "c.yaml"
    f.write_text("prompt: a knight\nbody: b\nfield_resolutions: [4, 8]\nturntable_overlay: false\n")
    cfg = config.resolve({}, f)
    assert cfg.field_resolutions == [4, 8] and cfg.turntable_overlay is False
    written = config.write_config(cfg, tmp_path / "out")
    assert config.resolve({}, written) == cfg


def test_config_errors_name_the_setting(tmp_path):
    with pytest.raises(ValueError, match=r"estimator: expected one of .*\bssd\b.*, got 'nope'"):
        config.resolve({"prompt": "p", "body": "b", "estimator": "nope"})
    with pytest.raises(ValueError, match=r"t_sampler: expected one of .*\bdreamtime\b.*, got 'dreamy'"):
        config.resolve({"prompt": "p", "body": "b", "t_sampler": "dreamy"})
    with pytest.raises(ValueError, match=r"weighting: expected one of .*\bsjc\b.*, got 'sjd'"):
        config.resolve({"prompt": "p", "body": "b", "weighting": "sjd"})
    with pytest.raises(ValueError, match=r"seed: expected an integer in \[0, 2\*\*63 - 8\), got -1"):
        config.resolve({"prompt": "p", "body": "b", "seed": -1})
    for name in ("lr", "box_margin", "M", "guidance_scale", "lambda_entropy"):  # what a JSON "Infinity" gives
        with pytest.raises(ValueError, match=rf"^{name}: expected .*got inf"):
            config.resolve({"prompt": "p", "body": "b", name: float("inf")})
    with pytest.raises(ValueError, match=r"samples_per_ray: expected an integer in \[1, 4096\], got 10000000000"):
        config.resolve({"prompt": "p", "body": "b", "samples_per_ray": 10**10})  # not a traceback at render time
    with pytest.raises(ValueError, match="unknown setting 'stepz'"):
        config.resolve({"prompt": "p", "body": "b", "stepz": 3})
    with pytest.raises(TypeError, match="steps: expected an integer, got str '3'"):
        config.resolve({"prompt": "p", "body": "b", "steps": "3"})
    with pytest.raises(ValueError, match=r"model_type: expected one of \('smpl', 'smplx'\), got 'smplh'"):
        config.resolve({"prompt": "p", "body": "b", "model_type": "smplh"})
    with pytest.raises(ValueError, match="body: expected an SMPL/SMPL-X model directory or file"):
        config.resolve({"prompt": "p"})
    with pytest.raises(FileNotFoundError, match="--resume: expected a previous run's config.json"):
        config.resolve({"prompt": "p", "body": "b", "out": str(tmp_path / "none")}, resume=True)


def test_resume_refuses_changed_trajectory_settings(tmp_path):
    cfg = config.resolve({"prompt": "p", "body": "b", "out": str(tmp_path)})
    config.write_config(cfg, tmp_path)
    again = config.resolve({"out": str(tmp_path), "steps": 99}, resume=True)
    assert again.prompt == "p" and again.steps == 99
    with pytest.raises(ValueError, match="--resume: these settings must match.*batch: saved 1, given 4"):
        config.resolve({"out": str(tmp_path), "batch": 4}, resume=True)


# ------------------------------------------------------------------------- checkpoints


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic.atomic_write_bytes(path, b"old")

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left


def test_rng_state_round_trip(tmp_path):
    np_gen, t_gen = np.random.default_rng(1), torch.Generator().manual_seed(2)
    random.seed(3)
    torch.manual_seed(4)
    state = checkpoint.capture_rng({"a": np_gen}, {"b": t_gen})
    checkpoint.save_checkpoint(tmp_path / "c.pt", {"rng": state})
    first = (np_gen.random(3), torch.rand(3, generator=t_gen), random.random(), torch.rand(2))
    loaded = checkpoint.load_checkpoint(tmp_path / "c.pt")
    checkpoint.restore_rng(loaded["rng"], {"a": np_gen}, {"b": t_gen})
    second = (np_gen.random(3), torch.rand(3, generator=t_gen), random.random(), torch.rand(2))
    assert np.array_equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[2] == second[2] and torch.equal(first[3], second[3])
    with pytest.raises(FileNotFoundError, match="--resume: expected a checkpoint at"):
        checkpoint.load_checkpoint(tmp_path / "missing.pt")


def test_turntable_labels_sit_in_strips_outside_the_render():
    """The SMOKE RUN banner goes above the frame and the azimuth below it: every rendered
    pixel is kept, and consecutive frames still differ (their azimuth text) on a flat render."""
    from ssd_toolkit.integrations.avatar.preview import label_smoke
    from ssd_toolkit.integrations.avatar.turntable import azimuth_label

    frame = np.full((64, 64, 3), 128, dtype=np.uint8)
    smoke = label_smoke(frame)
    top = smoke.shape[0] - 64
    assert top > 0 and np.array_equal(smoke[top:], frame) and smoke[:top].any()
    a, b = azimuth_label(smoke, 0.0), azimuth_label(smoke, 45.0)
    assert np.array_equal(a[: smoke.shape[0]], smoke) and a.shape[0] > smoke.shape[0]
    assert not np.array_equal(a, b)
    assert not (a[-3:] == 255).all(axis=-1).any()  # no white progress bar along the bottom edge
