"""DreamWaltz's timestep schedule (``guide.time_sampling``), with DreamWaltz's meaning and draws.

Like DreamWaltz (``core/diffusion/time_prior.py``), the draws come from torch's global
random generator, which DreamWaltz's trainer seeds; so one seed gives the same timesteps as
DreamWaltz's own guidance. The CFG-scale schedule (``guide.guidance_adjust``) is shared by
every host: ``ssd_toolkit.integrations.guidance.cfg_schedule``.
"""

from __future__ import annotations

import bisect

TIME_SAMPLINGS = ("uniform", "constant", "linear", "annealed", "stage_<N>")
TIME_PRIORS = ("uniform",)


def _parse_stages(time_sampling):
    """``"stage_<N>"`` (DreamWaltz's spelling; ``"stage<N>"`` too) -> N (>= 1), else None."""
    if not time_sampling.startswith("stage"):
        return None
    digits = time_sampling[len("stage"):].lstrip("_")
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(f"guide.time_sampling: expected one of {TIME_SAMPLINGS} (N >= 1), got {time_sampling!r}")
    return int(digits)


class DreamWaltzTimesteps:
    """``get_timestep(batch_size, train_step, max_iteration)`` of DreamWaltz (the same draws).

    Args:
        time_sampling: "uniform" (``t ~ U{min, max}`` per sample), "constant" (the middle),
            "linear" (max -> min over the run, one t per step), "stage_<N>" (N equal
            intervals from high to low t, uniform inside the current stage's interval) or
            "annealed" (DreamTime-style: t where the reversed cumulative ``time_prior``
            weight reaches ``train_step / max_iteration``).
        min_timestep, max_timestep: fractions of ``num_train_timesteps`` (0.02, 0.98 in
            DreamWaltz); ``min_step = int(T * min_timestep)``, likewise max.
        time_prior: the annealed mode's weight over t; DreamWaltz defines "uniform" only.
        num_train_timesteps: T.
        device: where the timesteps are made.

    Raises:
        ValueError: an unknown mode or prior, or a range outside ``0 <= min <= max < T``;
            the message names the ``guide.*`` field.
    """

    def __init__(self, time_sampling="uniform", min_timestep=0.02, max_timestep=0.98, time_prior="uniform",
                 num_train_timesteps=1000, device="cpu"):
        import torch  # noqa: PLC0415 - the drop-in's dependency

        self.time_sampling = str(time_sampling)
        self.num_stages = _parse_stages(self.time_sampling)
        if self.num_stages is None and self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"guide.time_sampling: expected one of {TIME_SAMPLINGS}, got {time_sampling!r}")
        T = int(num_train_timesteps)
        self.min_step = int(T * float(min_timestep))
        self.max_step = int(T * float(max_timestep))
        if not 0 <= self.min_step <= self.max_step < T:
            raise ValueError(
                f"guide.min_timestep, guide.max_timestep: expected 0 <= min <= max < 1 (steps {self.min_step}.."
                f"{self.max_step} of {T}), got {min_timestep!r}, {max_timestep!r}"
            )
        self.num_train_timesteps = T
        self.device = device
        if self.time_sampling == "annealed":
            if time_prior not in TIME_PRIORS:
                raise ValueError(f"guide.time_prior: expected one of {TIME_PRIORS}, got {time_prior!r}")
            # float32 like DreamWaltz's weights, so the bisection lands on the same t
            weights = torch.ones(T, dtype=torch.float32)
            weights[: self.min_step] = 0.0
            weights[self.max_step + 1:] = 0.0
            self._weights_cumsum = (weights / weights.sum()).flip(0).cumsum(0).numpy()
        if self.num_stages is not None:
            width = (self.max_step - self.min_step) // self.num_stages
            self._stages = [
                (self.min_step + width * (i - 1), self.min_step + width * i) for i in range(self.num_stages, 0, -1)
            ]

    def __call__(self, batch_size, train_step, max_iteration):
        """Timesteps ``[batch_size]`` (int64) for the step ``train_step`` (1-based, as the
        trainer counts) of ``max_iteration``."""
        import torch  # noqa: PLC0415

        B, lo, hi = int(batch_size), self.min_step, self.max_step
        if self.time_sampling in ("uniform", "constant"):
            if self.time_sampling == "constant":  # still one draw, so the noise after it matches DreamWaltz's
                lo = hi = (lo + hi) // 2
            return torch.randint(lo, hi + 1, [B], dtype=torch.long, device=self.device)
        if self.time_sampling == "linear":
            delta = (hi - lo) / (max_iteration - 1) if max_iteration > 1 else 0.0
            t = int(hi - (train_step - 1) * delta)
        elif self.time_sampling == "annealed":
            t = self.num_train_timesteps - bisect.bisect_left(self._weights_cumsum, train_step / max_iteration)
            t = min(max(t, lo), hi)
        else:
            per_stage = max(int(max_iteration) // self.num_stages, 1)
            s_lo, s_hi = self._stages[min(int(train_step) // per_stage, self.num_stages - 1)]
            return torch.randint(s_lo, s_hi + 1, [B], dtype=torch.long, device=self.device)
        return torch.full([B], int(t), dtype=torch.long, device=self.device)
