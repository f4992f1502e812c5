"""threestudio's dreamfusion and latentnerf training steps, replayed in a real Lightning fit.

Each system (threestudio commit 28d9d80, systems/dreamfusion.py and latentnerf.py) calls
``guidance(out["comp_rgb"], prompt_utils, **batch, rgb_as_latents=...)``, logs the returned
keys with ``self.log(f"train/{name}", value)`` (dreamfusion skips tensors with more than one
element, latentnerf logs everything) and adds ``value * lambda_<name>`` for ``loss_*`` keys;
its ``on_train_batch_start`` runs the guidance's ``update_step(epoch, global_step)``.
"""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pl = pytest.importorskip(
    "pytorch_lightning", reason="pip install pytorch_lightning (the test extra) for the Lightning contract"
)

from threestudio_fakes import PromptOutput, camera_batch  # noqa: E402

from ssd_toolkit.integrations.threestudio.adapter import ThreestudioGuidance  # noqa: E402

STEPS = 4
SCHEDULE = [1, 0.98, 0.5, 3]  # max_step_percent: 0.98 until step 1, 0.5 from step 3
EXPECTED_MAX_STEP = [980, 980, 740, 500]


class Batches(torch.utils.data.IterableDataset):
    def __init__(self, B):
        self.B = B

    def __iter__(self):
        step = 0
        while True:
            yield camera_batch(self.B, seed=step)
            step += 1


class ReplaySystem(pl.LightningModule):
    """The guidance part of threestudio's training_step; a learnable image/latent stands in
    for the NeRF render."""

    def __init__(self, guidance, prompt_utils, B, system):
        super().__init__()
        self.guidance, self.prompt_utils, self.system = guidance, prompt_utils, system
        self.latent = system == "latentnerf"
        self.render = torch.nn.Parameter(torch.zeros(B, 64, 64, 4 if self.latent else 3))
        self.lambdas = {"lambda_sds": 1.0}

    def on_train_batch_start(self, batch, batch_idx):
        self.guidance.update_step(self.current_epoch, self.global_step)

    def training_step(self, batch, batch_idx):
        comp_rgb = self.render if self.latent else torch.sigmoid(self.render)
        guidance_out = self.guidance(comp_rgb, self.prompt_utils, **batch, rgb_as_latents=self.latent)
        loss = 0.0
        for name, value in guidance_out.items():
            if self.latent or not (type(value) is torch.Tensor and value.numel() > 1):
                self.log(f"train/{name}", value)
            if name.startswith("loss_"):
                loss = loss + value * self.lambdas[name.replace("loss_", "lambda_")]
        return {"loss": loss}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


class Record(pl.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.rows.append((metrics, module.guidance.last_t.clone(), dict(module.guidance.last_diagnostics)))


@pytest.mark.parametrize("system", ["dreamfusion", "latentnerf"])
@pytest.mark.parametrize("B", [1, 2])
def test_system_fit_logs_every_key_and_follows_the_schedule(tiny_dir, system, B):
    torch.manual_seed(0)
    guidance = ThreestudioGuidance(
        {
            "pretrained_model_name_or_path": str(tiny_dir),
            "half_precision_weights": False,
            "max_step_percent": SCHEDULE,
            "weighting_strategy": "sds",
        }
    )
    module = ReplaySystem(guidance, PromptOutput(guidance.guidance.encode_prompts), B, system)
    before = module.render.detach().clone()
    record = Record()
    trainer = pl.Trainer(
        max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[record],
    )
    loader = torch.utils.data.DataLoader(Batches(B), batch_size=None)
    trainer.fit(module, loader)

    assert len(record.rows) == STEPS
    for step, (metrics, t, diagnostics) in enumerate(record.rows):
        assert set(metrics) == {"train/loss_sds", "train/grad_norm", "train/min_step", "train/max_step"}
        assert (metrics["train/min_step"], metrics["train/max_step"]) == (20, EXPECTED_MAX_STEP[step])
        assert t.shape == (B,) and int(t.min()) >= 20 and int(t.max()) <= EXPECTED_MAX_STEP[step]
        assert torch.isfinite(torch.tensor(metrics["train/loss_sds"])) and metrics["train/grad_norm"] > 0
        assert diagnostics["max_step"] == EXPECTED_MAX_STEP[step] and "frac_mode_seeking" in diagnostics
    assert not torch.equal(module.render.detach(), before)  # the guidance gradient reached the render
