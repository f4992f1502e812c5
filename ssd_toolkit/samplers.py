"""Timestep samplers: which diffusion timesteps t a training step draws, per sample.

``get_sampler(name, seed=None, **params)`` returns an object with

- ``t_range(step) -> (t_min, t_max)``: the inclusive integer range at training step
  ``step`` (counted from 0);
- ``sample(batch_size, step=0, device=None) -> int64 [batch_size]``: one t per sample,
  uniform on ``t_range(step)`` (the DreamTime sampler is deterministic: every sample gets
  t(step)). Without ``device`` a NumPy array; with ``device`` (``"cpu"``, ``"cuda"``, a
  ``torch.device``) a torch tensor on it, drawn there (diffusers'
  ``scheduler.add_noise(x, noise, t)`` takes it as it is).

Each sampler owns a ``numpy.random.Generator`` seeded with ``seed`` and, per torch device,
a ``torch.Generator`` seeded with the same ``seed``: two samplers built with the same seed
and called with the same arguments return the same timesteps. ``seed=None`` draws fresh OS
entropy.

Names:

- ``"uniform"``: ``[t_min, t_max]``, default ``[20, 980]`` (threestudio's and DreamWaltz's
  0.02..0.98 of 1000).
- ``"paper"`` / ``"ssd"``: the SSD paper's schedule (Sec. 5.1): ``[20, 980]`` while
  ``step < anneal_step = 5000``, then ``[20, t_max_annealed = 500]``.
- ``"piecewise-linear"`` / ``"threestudio"``: threestudio's ``min_step_percent`` /
  ``max_step_percent``, each a float or a ``[start_step, start_value, end_value,
  end_step]`` rule (a 3-element rule means ``start_step = 0``), times
  ``num_train_timesteps`` and truncated with ``int()`` as threestudio does. Steps are
  integers (threestudio's epoch-based rules, a float ``end_step``, are not supported).
- ``"dreamtime"``: DreamTime-style time-prioritised annealing (see ``DreamTimeSampler``).
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np

from . import checks
from .checks import lookup
from .schedules import stable_diffusion_schedule


def _check_range(t_min, t_max, what=""):
    t_min = checks.integer(f"{what}t_min", t_min, minimum=0)
    t_max = checks.integer(f"{what}t_max", t_max, minimum=0)
    if t_max < t_min:
        raise ValueError(f"{what}t_max: expected >= t_min = {t_min}, got {t_max}")
    return t_min, t_max


class _RangeSampler:
    """Uniform integer t on ``t_range(step)``, which each subclass defines."""

    name = ""

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._torch_generators = {}

    @property
    def rng(self) -> np.random.Generator:
        """The NumPy Generator that draws t. Save and restore ``rng.bit_generator.state``
        with a checkpoint to resume a run with the same timesteps."""
        return self._rng

    def torch_generator(self, device):
        """The ``torch.Generator`` that draws t on ``device`` (seeded with ``seed``, or from
        the NumPy generator when ``seed`` is None). Save and restore its ``get_state()``
        with a checkpoint to resume a run with the same timesteps."""
        import torch  # noqa: PLC0415 - only for device draws; import ssd_toolkit stays torch-free

        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        generator = self._torch_generators.get(device)
        if generator is None:
            seed = self.seed if self.seed is not None else int(self._rng.integers(2**63 - 1))
            generator = self._torch_generators[device] = torch.Generator(device=device).manual_seed(int(seed))
        return generator

    def sample(self, batch_size: int, step: int = 0, device=None):
        """``batch_size`` timesteps, int64, uniform on the inclusive ``t_range(step)``: a NumPy
        array, or with ``device`` a torch tensor drawn on that device.

        Raises:
            TypeError / ValueError: batch_size or step not a non-negative integer, a bad device.
        """
        batch_size = checks.integer("batch_size", batch_size, minimum=0)
        lo, hi = self.t_range(step)
        if device is None:
            return self._rng.integers(lo, hi + 1, size=batch_size, dtype=np.int64)
        import torch  # noqa: PLC0415

        generator = self.torch_generator(device)
        return torch.randint(lo, hi + 1, (batch_size,), generator=generator, device=generator.device, dtype=torch.int64)


class UniformSampler(_RangeSampler):
    """t ~ U{t_min, ..., t_max} at every step."""

    name = "uniform"

    def __init__(self, t_min=20, t_max=980, seed=None):
        super().__init__(seed)
        self.t_min, self.t_max = _check_range(t_min, t_max)

    def t_range(self, step: int = 0):
        checks.integer("step", step, minimum=0)
        return self.t_min, self.t_max


class PaperSampler(_RangeSampler):
    """The SSD paper's schedule: ``[t_min, t_max]`` for ``step < anneal_step``, then
    ``[t_min, t_max_annealed]`` (defaults 20, 980, 5000, 500)."""

    name = "paper"

    def __init__(self, t_min=20, t_max=980, anneal_step=5000, t_max_annealed=500, seed=None):
        super().__init__(seed)
        self.t_min, self.t_max = _check_range(t_min, t_max)
        _, self.t_max_annealed = _check_range(t_min, t_max_annealed, "annealed ")
        self.anneal_step = checks.integer("anneal_step", anneal_step, minimum=0)

    def t_range(self, step: int = 0):
        step = checks.integer("step", step, minimum=0)
        return (self.t_min, self.t_max) if step < self.anneal_step else (self.t_min, self.t_max_annealed)


def _check_rule(name, rule):
    """A float or a threestudio ``[start_step, start_value, end_value, end_step]`` rule."""
    if isinstance(rule, numbers.Real) and not isinstance(rule, bool):
        rule = [0, float(rule), float(rule), 1]
    try:
        rule = list(rule)
    except TypeError:
        raise TypeError(f"{name}: expected a float or [start_step, start_value, end_value, end_step], got {rule!r}") from None
    if len(rule) == 3:
        rule = [0, *rule]
    if len(rule) != 4:
        raise ValueError(f"{name}: expected a float or a 3/4-element rule [start_step, start_value, end_value, end_step], got {rule!r}")
    start_step, start_value, end_value, end_step = rule
    start_step = checks.integer(f"{name} start_step", start_step, minimum=0)
    end_step = checks.integer(f"{name} end_step", end_step, minimum=0)
    if end_step <= start_step:
        raise ValueError(f"{name}: expected end_step > start_step = {start_step}, got {end_step}")
    for label, v in (("start_value", start_value), ("end_value", end_value)):
        if not isinstance(v, numbers.Real) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} {label}: expected a fraction in [0, 1], got {v!r}")
    return start_step, float(start_value), float(end_value), end_step


def _rule_value(rule, step):
    start_step, start_value, end_value, end_step = rule
    frac = min(1.0, max(0.0, (step - start_step) / (end_step - start_step)))
    return start_value + (end_value - start_value) * frac


class PiecewiseLinearSampler(_RangeSampler):
    """threestudio's scheduled range: ``t_min = int(T * C(min_step_percent, step))`` and
    likewise ``t_max``, where ``C`` interpolates a rule linearly between its start and end
    steps and holds the end values outside.

    Args:
        min_step_percent: a float in [0, 1] or ``[start_step, start, end, end_step]``
            (default 0.02).
        max_step_percent: same (default 0.98; e.g. ``[0, 0.98, 0.5, 5000]``).
        num_train_timesteps: T (default 1000).
    """

    name = "piecewise-linear"

    def __init__(self, min_step_percent=0.02, max_step_percent=0.98, num_train_timesteps=1000, seed=None):
        super().__init__(seed)
        self.min_rule = _check_rule("min_step_percent", min_step_percent)
        self.max_rule = _check_rule("max_step_percent", max_step_percent)
        self.num_train_timesteps = checks.integer("num_train_timesteps", num_train_timesteps, minimum=1)

    def t_range(self, step: int = 0):
        step = checks.integer("step", step, minimum=0)
        T = self.num_train_timesteps
        lo = int(T * _rule_value(self.min_rule, step))
        hi = int(T * _rule_value(self.max_rule, step))
        hi = min(hi, T - 1)
        if hi < lo:
            raise ValueError(f"min_step_percent/max_step_percent: at step {step} the range is empty (t_min {lo} > t_max {hi})")
        return lo, hi


class DreamTimeSampler(_RangeSampler):
    """DreamTime-style time-prioritised annealing: a monotone decreasing t(step).

    The prior over integer t in ``[t_min, t_max]`` is ``p(t) ∝ W_d(t) W_p(t)``:

    - ``W_d(t) = sqrt((1 - abar_t) / abar_t)``, the diffusion weight (1 / sqrt(SNR)),
      which favours large t;
    - ``W_p(t) = exp(-(t - mean)^2 / (2 std^2))``, a Gaussian bump (defaults mean 500,
      std 125, DreamTime's choice) that concentrates training in the middle of the range.

    ``t(step)`` is the largest t whose upper tail mass ``sum_{t' >= t} p(t')`` reaches
    ``step / total_steps``: step 0 gives ``t_max``, the tail fills as training proceeds, and
    steps at or after ``total_steps`` give ``t_min``. Every sample of a batch gets the same
    t (the sampler is deterministic; ``seed`` is accepted for interface uniformity).

    Args:
        total_steps: number of training steps over which t anneals (required).
        t_min, t_max: the inclusive range (default 20, 980).
        mean, std: the Gaussian bump (default 500, 125).
        alphas_cumprod: ``abar`` ``[T]`` (default: Stable Diffusion's 1000-step schedule).
    """

    name = "dreamtime"

    def __init__(self, total_steps=None, t_min=20, t_max=980, mean=500.0, std=125.0, alphas_cumprod=None, seed=None):
        super().__init__(seed)
        if total_steps is None:
            raise TypeError("total_steps: expected an integer >= 1, the run's number of training steps over which "
                            "dreamtime anneals t (get_sampler('dreamtime', total_steps=...)), got None")
        self.total_steps = checks.integer("total_steps", total_steps, minimum=1)
        self.t_min, self.t_max = _check_range(t_min, t_max)
        if not (isinstance(std, numbers.Real) and std > 0):
            raise ValueError(f"std: expected a positive number, got {std!r}")
        if not (isinstance(mean, numbers.Real) and np.isfinite(mean)):
            raise ValueError(f"mean: expected a finite number, got {mean!r}")
        abar = stable_diffusion_schedule().alphas_cumprod if alphas_cumprod is None else np.asarray(alphas_cumprod, dtype=np.float64)
        if abar.ndim != 1 or abar.shape[0] <= self.t_max:
            raise ValueError(f"alphas_cumprod: expected shape [T] with T > t_max = {self.t_max}, got {list(abar.shape)}")
        ts = np.arange(self.t_min, self.t_max + 1)
        a = abar[ts]
        if not np.all((a > 0) & (a <= 1)):
            raise ValueError("alphas_cumprod: expected values in (0, 1] on [t_min, t_max]")
        weight = np.sqrt((1.0 - a) / a) * np.exp(-((ts - float(mean)) ** 2) / (2.0 * float(std) ** 2))
        if not np.isfinite(weight).all() or weight.sum() <= 0:
            raise ValueError(f"mean/std: the prior vanishes on [t_min, t_max] = [{self.t_min}, {self.t_max}]")
        self.timesteps = ts
        self.prior = weight / weight.sum()
        self._tail = np.cumsum(self.prior[::-1])[::-1]  # tail[i] = sum_{j >= i} prior[j]

    def t_at(self, step: int) -> int:
        """The annealed timestep at ``step``."""
        step = checks.integer("step", step, minimum=0)
        frac = min(1.0, step / self.total_steps)
        # largest i with tail[i] >= frac; tail is decreasing in i, tail[0] = 1.
        i = int(np.searchsorted(-self._tail, -frac, side="right")) - 1
        return int(self.timesteps[max(i, 0)])

    def t_range(self, step: int = 0):
        t = self.t_at(step)
        return t, t

    def sample(self, batch_size: int, step: int = 0, device=None):
        """``batch_size`` copies of ``t_at(step)`` (int64): a NumPy array, or with ``device``
        a torch tensor on it."""
        batch_size = checks.integer("batch_size", batch_size, minimum=0)
        if device is None:
            return np.full(batch_size, self.t_at(step), dtype=np.int64)
        import torch  # noqa: PLC0415

        return torch.full((batch_size,), self.t_at(step), dtype=torch.int64, device=device)


SAMPLERS = {
    "uniform": UniformSampler,
    "paper": PaperSampler,
    "ssd": PaperSampler,
    "piecewise-linear": PiecewiseLinearSampler,
    "threestudio": PiecewiseLinearSampler,
    "dreamtime": DreamTimeSampler,
}


def list_samplers():
    """Names (and aliases) accepted by ``get_sampler``."""
    return sorted(SAMPLERS)


def get_sampler(name: str, seed=None, **params):
    """A timestep sampler by name, e.g. ``get_sampler("paper", seed=0)``.

    Raises:
        ValueError: unknown name (the message lists the known ones), bad parameter values.
        TypeError: a parameter the sampler does not take (the message names it, the ones it
            takes and the closest).
    """
    cls = lookup(SAMPLERS, name)
    taken = [p for p in inspect.signature(cls).parameters if p != "seed"]
    for key in params:
        if key not in taken:
            raise TypeError(f"{key}: not a parameter of the {cls.name!r} sampler (it takes {', '.join(taken)})"
                            f"{checks.did_you_mean(key, taken)}")
    return cls(seed=seed, **params)
