"""DreamWaltz-G's own guidance ``__call__``, as its trainer calls it, before and after the swap.

Needs their checkout (``DREAMWALTZ_G_DIR``) and an environment where their guidance modules
import (their pin, diffusers 0.24); skips otherwise, so CI (no checkout) skips it. Their
code runs unmodified; stood in: the tiny random SD 1.5 / SDXL pipelines under their hub ids
in a scratch Hugging Face cache, an empty torchvision, an unreachable hub (dwg_standins).
See docs/integrations/dreamwaltz-g.md for the commands and the numbers.
"""

from __future__ import annotations

import os
import sys

import pytest

import dwg_standins as S

DWG = S.dreamwaltz_g_dir()
pytestmark = pytest.mark.skipif(DWG is None, reason="DREAMWALTZ_G_DIR: a DreamWaltz-G checkout (not in CI)")
torch = pytest.importorskip("torch")

SIZE = {False: 64, True: 96}  # latent side their prepare_latents accepts: SD 1.5, SDXL
T_PAIRS = {1: [[120], [700]], 2: [[120, 700], [450, 60]]}


@pytest.fixture(scope="module")
def up(dwg_env):
    """Their modules, imported from the checkout with the stand-ins in place (conftest)."""
    import configs  # noqa: PLC0415
    import core.guidance.controlnet as controlnet  # noqa: PLC0415
    import core.guidance.stable_diffusion as stable_diffusion  # noqa: PLC0415

    import ssd_toolkit.integrations.dreamwaltz_g as ours  # noqa: PLC0415

    return {"configs": configs, "controlnet": controlnet, "sd": stable_diffusion, "ours": ours}


_GUIDES = {}


def guide(up, theirs, sdxl, controlnet, **fields):
    """Their class (``theirs``) or ours, built as their trainer's ``init_diffusion`` does."""
    name = ("ControlNetScoreDistillation" if controlnet else "ScoreDistillation") + ("XL" if sdxl else "")
    cls = getattr(up["controlnet"] if controlnet else up["sd"], name) if theirs else getattr(up["ours"], name)
    cfg = S.guide_config(up["configs"], sdxl=sdxl, text="a robot", input_interpolate=False, **fields)
    g = cls(cfg=cfg, device=torch.device("cpu"))
    key = (sdxl, controlnet)
    if key not in _GUIDES:
        _GUIDES[key] = text_embeds(g, cfg)
    return g, _GUIDES[key]


def text_embeds(g, cfg):
    """Their trainer's ``init_text_embeddings`` (null, pos, neg; text = pos)."""
    pos, null, pos_kwargs, _ = g.get_text_embeds(prompt=["a robot"], negative_prompt=[cfg.null_text])
    _, neg, _, _ = g.get_text_embeds(prompt=["a robot"], negative_prompt=[cfg.negative_text], **pos_kwargs)
    return {"null": null, "pos": pos, "neg": neg, "viewed": [], "text": pos}


def condition():
    from PIL import Image  # noqa: PLC0415

    rng = torch.Generator().manual_seed(5)
    return [Image.fromarray((torch.rand(64, 64, 3, generator=rng) * 255).byte().numpy())]


def step(g, emb, B, t, controlnet, sdxl, seed=0, rgb=False):
    """``self.diffusion(**sd_kwargs)`` as trainer.py builds sd_kwargs; t pinned via their
    ``timestep`` keyword (``preprocess`` pops it). Returns (outputs, inputs, captured)."""
    torch.manual_seed(seed)
    side = SIZE[sdxl] * (8 if rgb else 1)
    inputs = (torch.rand if rgb else torch.randn)(B, 3 if rgb else 4, side, side).requires_grad_(True)
    captured = {}
    calc = g.calc_gradients

    def spy(**kwargs):
        captured.update(kwargs)
        return calc(**kwargs)

    g.calc_gradients = spy
    sd_kwargs = {"inputs": inputs, "text_embeds_dict": emb, "train_step": 10, "max_iteration": 100,
                 "grad_viz": False, "scaler": torch.cuda.amp.GradScaler(enabled=False), "timestep": torch.tensor(t)}
    if controlnet:
        sd_kwargs["cond_inputs"] = condition()
    out = g(**sd_kwargs)
    out["diffusion_loss"].backward()
    return out, inputs, captured


def their_branches(g, captured, keys, B):
    """The branch predictions recomputed with their own ``_predict`` at the captured x_t."""
    x = captured["latents_noisy"]
    emb = {k: (tuple(e.expand(B, *e.shape[1:]) for e in v) if isinstance(v, tuple) else v.expand(B, -1, -1))
           for k, v in captured["text_embeds_dict"].items() if k in keys}
    text = g.prepare_text_embeddings(text_embeds_dict=emb, text_keys=keys)
    saved = g.timestep
    g.timestep = saved if B == 1 else saved.repeat(len(keys))
    kwargs = {"cond_inputs": captured["cond_inputs"]} if "cond_inputs" in captured else {}
    with torch.no_grad():
        pred = g._predict(torch.cat([x] * len(keys)), text, **kwargs)
    g.timestep = saved
    return pred.chunk(len(keys))


# -- their loss types: the same numbers before and after the swap ---------------------------
@pytest.mark.parametrize("controlnet", [True, False])
@pytest.mark.parametrize("loss_type", ["sds", "sjc", "sjc-red", "custom", "csd", "nfsd", "z0"])
@pytest.mark.parametrize("t", T_PAIRS[1])
def test_their_loss_types_unchanged_at_batch_1(up, controlnet, loss_type, t):
    results = []
    for theirs in (True, False):
        g, emb = guide(up, theirs, False, controlnet, sds_loss_type=loss_type, sds_weight_type="dreamfusion")
        out, inputs, _ = step(g, emb, 1, t, controlnet, False)
        results.append((out["gradients"], inputs.grad))
    (g_theirs, x_theirs), (g_ours, x_ours) = results
    assert torch.equal(g_theirs, g_ours) and torch.equal(x_theirs, x_ours)


@pytest.mark.parametrize("loss_type", ["sds", "ssd"])
def test_rgb_input_through_their_vae_and_rgb_hook(up, loss_type):
    results = []
    for theirs in (True, False) if loss_type == "sds" else (False,):
        g, emb = guide(up, theirs, False, True, sds_loss_type=loss_type, grad_rgb_clip=True, grad_rgb_clip_scale=0.5)
        out, inputs, _ = step(g, emb, 1, [500], True, False, rgb=True)
        results.append(inputs.grad)
    assert results[0].abs().max() > 0 and all(torch.equal(results[0], r) for r in results)


@pytest.mark.parametrize("theirs", [True, False])
def test_their_pgc_hook_raises_unbound_local_error(up, theirs):
    g, emb = guide(up, theirs, False, True, sds_loss_type="sds", pgc_clip_rgb=0.1)
    with pytest.raises(UnboundLocalError):  # pgc.py's hook assigns clip_value it also reads
        step(g, emb, 1, [500], True, False, rgb=True)


# -- ssd, nfsd and ism inside their __call__ ------------------------------------------------
@pytest.mark.parametrize(("sdxl", "controlnet"), [(False, True), (False, False), (True, True), (True, False)])
@pytest.mark.parametrize("B", [1, 2])
def test_ssd_inside_their_call(up, sdxl, controlnet, B):
    import ssd_toolkit  # noqa: PLC0415

    g, emb = guide(up, False, sdxl, controlnet, sds_loss_type="ssd", ssd_M=300, sds_weight_type="latent-nerf")
    for t in T_PAIRS[B]:
        out, inputs, captured = step(g, emb, B, t, controlnet, sdxl)
        u, c = their_branches(g, captured, ("neg", "text"), B)
        tt = torch.tensor(t)
        w = ssd_toolkit.get_weighting("latent-nerf")(tt, g.alphas_cumprod).reshape(-1, 1, 1, 1)
        expected = ssd_toolkit.get_estimator("ssd", M=300)(c, u, captured["noise"], tt) * w
        assert torch.equal(out["gradients"], expected)
        assert list(g.last_stats["mode_seeking"]) == [ti <= 300 for ti in t]
        assert inputs.grad.shape == inputs.shape and torch.isfinite(inputs.grad).all()


def test_ssd_above_M_is_their_custom_h(up):
    g, emb = guide(up, False, False, True, sds_loss_type="ssd", ssd_M=200)
    out, _, captured = step(g, emb, 1, [700], True, False)
    g.loss_type = "custom"  # their own calc_gradients on the same x_t: h = eps_text - eps_neg
    theirs, _, _ = up["sd"].BasicScoreDistillation.calc_gradients(g, **captured)
    assert torch.equal(out["gradients"], theirs)


@pytest.mark.parametrize("sdxl", [False, True])
@pytest.mark.parametrize("B", [1, 2])
def test_nfsd_any_batch(up, sdxl, B):
    import ssd_toolkit  # noqa: PLC0415

    g, emb = guide(up, False, sdxl, True, sds_loss_type="nfsd")
    for t in T_PAIRS[B]:
        out, _, captured = step(g, emb, B, t, True, sdxl)
        u, c, neg = their_branches(g, captured, ("null", "text", "neg"), B)
        est = ssd_toolkit.get_estimator("nfsd", guidance_scale=50.0)
        assert torch.equal(out["gradients"], est(c, u, captured["noise"], torch.tensor(t), eps_negative=neg))


def test_their_nfsd_fails_at_batch_2(up):
    g, emb = guide(up, True, False, True, sds_loss_type="nfsd")
    with pytest.raises(RuntimeError):
        step(g, emb, 2, [120, 700], True, False)


def test_their_ism_raises_unbound_local_error(up):
    g, emb = guide(up, True, False, True, sds_loss_type="ism")
    with pytest.raises(UnboundLocalError):
        step(g, emb, 1, [300], True, False)


@pytest.mark.parametrize("sdxl", [False, True])
@pytest.mark.parametrize("B", [1, 2])
def test_ism_inside_their_call(up, sdxl, B):
    import ssd_toolkit  # noqa: PLC0415
    from ssd_toolkit.estimators import at_step  # noqa: PLC0415

    g, emb = guide(up, False, sdxl, True, sds_loss_type="ism", sds_weight_type="ism", guidance_scale=7.5)
    for t in T_PAIRS[B]:
        out, inputs, captured = step(g, emb, B, t, True, sdxl, seed=4)
        u, c = their_branches(g, captured, ("neg", "text"), B)
        tt = torch.tensor(t)
        w = ssd_toolkit.get_weighting("ism")(tt, g.alphas_cumprod).reshape(-1, 1, 1, 1)
        assert torch.equal(out["gradients"], (u + 7.5 * (c - u) - captured["noise"]) * w)
        # x_t and the target: ssd_toolkit's inversion with their plain UNet on the null text
        torch.manual_seed(4)
        latents = torch.randn(B, 4, SIZE[sdxl], SIZE[sdxl])
        null = tuple(e.expand(B, *e.shape[1:]) for e in emb["null"]) if sdxl else emb["null"].expand(B, -1, -1)
        plain = (up["sd"].ScoreDistillationXL if sdxl else up["sd"].ScoreDistillation)._predict

        def eps_uncond(x, ts, g=g, null=null, plain=plain):
            saved, g.timestep = g.timestep, ts
            try:
                return plain(g, x, null)
            finally:
                g.timestep = saved

        est = at_step(ssd_toolkit.get_estimator("ism", guidance_scale=7.5), 10, 100)
        with torch.no_grad():
            x_t, target, calls = est.noisy_input(eps_uncond, latents, torch.randn_like(latents), tt, g.alphas_cumprod)
        assert calls == g.last_unet_calls
        assert torch.equal(captured["latents_noisy"], x_t) and torch.equal(captured["noise"], target)


def test_their_sdxl_sds_fails_off_the_euler_grid(up):
    g, emb = guide(up, True, True, True, sds_loss_type="sds")
    with pytest.raises(IndexError):  # EulerDiscreteScheduler.scale_model_input: t=700 is not one of its 50
        step(g, emb, 1, [700], True, True)


def test_ssd_M_on_their_guide_config(up):
    cfg = up["configs"].GuideConfig(sds_loss_type="ssd", ssd_M=450)
    assert cfg.ssd_M == 450 and up["configs"].GuideConfig().ssd_M == 200.0
    assert os.environ.get("HF_HUB_OFFLINE") == "1" and "core.guidance.basic" in sys.modules


def test_ssd_with_their_grad_viz(up):
    g, emb = guide(up, False, False, True, sds_loss_type="ssd")
    torch.manual_seed(0)
    out = g(inputs=torch.randn(1, 4, 64, 64, requires_grad=True), text_embeds_dict=emb, train_step=1, max_iteration=2,
            grad_viz=True, scaler=None, cond_inputs=condition(), timestep=torch.tensor([700]))  # fmt: skip
    assert out["latents_final"].shape == (1, 4, 64, 64) and torch.isfinite(out["latents_final"]).all()
