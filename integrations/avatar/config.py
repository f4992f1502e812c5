"""Settings of an ``ssd-toolkit avatar`` run: defaults, config files, validation, resume rules.

Precedence, lowest first: the defaults below, the ``--tiny`` defaults (when ``tiny``),
the run's saved ``config.json`` (with ``--resume``), a ``--config`` file (JSON, or YAML
when PyYAML is installed), then flags given on the command line. The resolved settings
are written back as ``<out>/config.json``; ``--config <out>/config.json`` repeats a run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ssd_toolkit import checks
from ssd_toolkit.integrations.guidance.cfg_schedule import GUIDANCE_ADJUSTS
from ssd_toolkit.integrations.guidance.models import DEFAULT_CONTROLNET, DEFAULT_SD_MODEL

from .atomic import atomic_write_bytes

CONFIG_NAME = "config.json"
MODEL_TYPES = ("smpl", "smplx")
DEVICES = ("auto", "cpu", "cuda")
SCALE_TAKERS = ("sds", "ism", "sds-bridge")  # the estimators guidance_scale reaches (NFSD keeps its 7.5)
PRECISIONS = ("auto", "fp16", "fp32")
SEED_LIMIT = 2**63 - 8  # the run seeds torch with seed + 0..2
# 64x the default; a view's field query grows linearly with it (16.7M points at 64x64 latents)
MAX_SAMPLES_PER_RAY = 4096


@dataclass
class AvatarConfig:
    """Every setting of one canonical-avatar run (see ``describe()`` for the help texts)."""

    prompt: str = ""
    body: str = ""
    model_type: str | None = None
    gender: str = "neutral"
    sd_model: str = DEFAULT_SD_MODEL
    controlnet: str = DEFAULT_CONTROLNET
    estimator: str = "ssd"
    M: float = 200.0
    guidance_scale: float = 50.0
    weighting: str = "sjc"
    t_sampler: str = "uniform"
    negative_prompt: str = ""
    source_prompt: str = ""
    guidance_adjust: str = "constant"
    grad_latent_clip: bool = False
    grad_latent_clip_scale: float = 1.0
    grad_latent_norm: bool = False
    grad_latent_nan_to_num: bool = False
    steps: int = 30000
    batch: int = 1
    lr: float = 1e-3
    seed: int = 0
    out: str = "runs/avatar"
    latent_size: int = 64
    samples_per_ray: int = 64
    field_resolutions: list = field(default_factory=lambda: [32, 128])
    field_features: int = 8
    field_hidden: int = 64
    box_margin: float = 0.15
    body_init_steps: int = 300
    body_init_batch: int = 8192
    lambda_sparsity: float = 5e-4
    lambda_entropy: float = 1e-3
    preview_every: int = 500
    checkpoint_every: int = 1000
    turntable_frames: int = 60
    turntable_fps: int = 20
    turntable_overlay: bool = True
    device: str = "auto"
    precision: str = "auto"
    tiny: bool = False


HELP = {
    "prompt": "text prompt, e.g. 'a wooden robot' (view words are added per camera)",
    "body": "SMPL/SMPL-X model directory (<dir>/smpl/SMPL_NEUTRAL.pkl) or file (.pkl/.npz)",
    "model_type": f"body model type {MODEL_TYPES}; default: from the file name",
    "gender": "body model gender (neutral, male, female)",
    "sd_model": "Stable Diffusion hub id or local diffusers directory",
    "controlnet": "openpose ControlNet hub id or local directory",
    "estimator": "score-distillation estimator (ssd_toolkit.list_estimators())",
    "M": "SSD threshold M (timesteps t <= M take the variance-reduced branch)",
    "guidance_scale": "CFG scale (SDS, ISM and SDS-Bridge's first stage; SSD/CSD do not use it)",
    "weighting": "w(t) (ssd_toolkit.list_weightings(); sjc = 1 is DreamWaltz's default)",
    "t_sampler": "timestep sampler (ssd_toolkit.list_samplers())",
    "negative_prompt": "unconditional text (DreamWaltz: empty)",
    "source_prompt": "SDS-Bridge's source prompt (empty: the prompt + its failure-mode modifier)",
    "guidance_adjust": "CFG-scale schedule: constant, uniform, linear, linear_reverse (DreamWaltz-G)",
    "grad_latent_clip": "clamp the latent gradient to grad_latent_clip_scale x its RMS (DreamWaltz-G)",
    "grad_latent_clip_scale": "multiplier of the RMS for grad_latent_clip",
    "grad_latent_norm": "unit L2 norm per sample of the latent gradient (DreamWaltz-G)",
    "grad_latent_nan_to_num": "non-finite latent-gradient entries to finite values (DreamWaltz-G)",
    "steps": "training steps (DreamWaltz: 30000 for a canonical avatar)",
    "batch": "cameras per step",
    "lr": "Adam learning rate",
    "seed": "seed of every random stream of the run",
    "out": "output directory",
    "latent_size": "rendered latent side (64 for SD 1.5 at 512x512)",
    "samples_per_ray": "density samples per ray",
    "field_resolutions": "tri-plane resolutions, coarse to fine",
    "field_features": "features per plane and level",
    "field_hidden": "MLP hidden width",
    "box_margin": "padding of the field's box around the body (world units)",
    "body_init_steps": "steps fitting the density to the body's occupancy before training",
    "body_init_batch": "labelled points per body-init step",
    "lambda_sparsity": "weight of the mean-opacity (sparsity) regulariser",
    "lambda_entropy": "weight of the opacity binary-entropy regulariser",
    "preview_every": "write a preview image every N steps (0: never)",
    "checkpoint_every": "write a checkpoint every N steps (and at the end)",
    "turntable_frames": "frames of the final turntable",
    "turntable_fps": "turntable frames per second",
    "turntable_overlay": "draw the skeleton over the turntable frames",
    "device": f"one of {DEVICES}",
    "precision": f"one of {PRECISIONS}; auto = fp16 autocast + GradScaler on CUDA, fp32 on CPU",
    "tiny": "smoke run: random tiny models + synthetic body, images are meaningless",
}

# Defaults that --tiny replaces (unless set explicitly): CPU-sized everything.
TINY_DEFAULTS = {
    "prompt": "a wooden robot",
    "sd_model": "",  # empty: built by run.prepare_tiny_assets into <out>/tiny_assets
    "controlnet": "",
    "body": "",
    "steps": 12,
    "batch": 2,
    "latent_size": 8,
    "samples_per_ray": 16,
    "field_resolutions": [8, 16],
    "field_features": 4,
    "field_hidden": 16,
    "body_init_steps": 40,
    "body_init_batch": 1024,
    "preview_every": 5,
    "checkpoint_every": 4,
    "turntable_frames": 8,
    "turntable_fps": 8,
    "lr": 1e-2,
    "out": "runs/tiny",
}

# Changing these on --resume would change the trajectory: refused.
RESUME_FIXED = (
    "prompt body model_type gender sd_model controlnet estimator M guidance_scale weighting t_sampler "
    "negative_prompt source_prompt guidance_adjust grad_latent_clip grad_latent_clip_scale grad_latent_norm "
    "grad_latent_nan_to_num batch lr seed latent_size samples_per_ray field_resolutions field_features "
    "field_hidden box_margin body_init_steps body_init_batch lambda_sparsity lambda_entropy precision tiny"
).split()

FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(AvatarConfig)}


def field_names():
    return [f.name for f in dataclasses.fields(AvatarConfig)]


def _check_value(name, value):
    """``value`` coerced to ``name``'s type; errors name the key, expected and received."""
    kind = FIELD_TYPES[name]
    if kind == "str | None":
        if value is None or isinstance(value, str):
            return value
        raise TypeError(f"{name}: expected a string or null, got {type(value).__name__} {value!r}")
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(f"{name}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"{name}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if kind == "int":
        return checks.integer(name, value)
    if kind == "float":  # finiteness is validate()'s, with the other range checks
        return checks.real(name, value, finite=False)
    if kind == "list":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name}: expected a list of integers, got {value!r}")
        return list(value)
    raise AssertionError(f"unhandled config type {kind} for {name}")  # pragma: no cover


def normalize_keys(values: dict, source: str) -> dict:
    """Keys with '-' read as '_', values type-checked; unknown keys raise ValueError."""
    if not isinstance(values, dict):
        raise TypeError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    known = field_names()
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            hint = checks.did_you_mean(name, known)
            if hint:
                raise ValueError(f"{source}: unknown setting {key!r}{hint}")
            raise ValueError(f"{source}: unknown setting {key!r}; expected one of {', '.join(known)}")
        try:
            out[name] = _check_value(name, value)
        except (TypeError, ValueError) as exc:
            if source == "command line":  # 'name: ...', which the CLI turns into the flag
                raise
            raise type(exc)(f"{source}: key {exc}") from None  # a file's key, not the flag
    return out


def load_structured(path, name: str):
    """The data of a JSON (``.json``) or YAML (``.yaml``/``.yml``) file, or None for any
    other suffix; errors start with ``name:``.

    Raises:
        ValueError: unparsable file.
        ImportError: a YAML file without PyYAML (with the install command).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start:exc.start + 1].hex()
        raise ValueError(f"{name}: expected a UTF-8 text file, got {str(path)!r} (byte 0x{byte} at offset {exc.start} "
                         "is not UTF-8)") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: {str(path)!r} is not valid JSON: {exc}") from exc
    if suffix in (".yaml", ".yml"):
        try:
            import yaml  # noqa: PLC0415 - optional
        except ImportError as exc:
            raise ImportError(f"{name}: reading {str(path)!r} needs PyYAML: pip install pyyaml") from exc
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{name}: {str(path)!r} is not valid YAML: {exc}") from exc
    return None


def read_config_file(path) -> dict:
    """Settings from a JSON (``.json``) or YAML (``.yaml``/``.yml``) file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unparsable file, unknown keys, unsupported suffix.
        ImportError: a YAML file without PyYAML (with the install command).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: expected an existing JSON or YAML file, got {str(path)!r}")
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ValueError(f"config: expected a .json, .yaml or .yml file, got {str(path)!r}")
    data = load_structured(path, "config")
    if data is None and path.suffix.lower() != ".json":
        data = {}  # an empty YAML file
    return normalize_keys(data, f"config file {str(path)!r}")


def validate(cfg: AvatarConfig) -> AvatarConfig:
    """Range and choice checks that need no files or models.

    Raises:
        ValueError: the first invalid setting, naming it, the expected and received value.
    """
    import ssd_toolkit  # noqa: PLC0415 - light import

    if not cfg.prompt.strip():
        hint = "" if cfg.tiny else " (or --tiny for a smoke run)"  # --tiny has a default prompt, not an empty one
        raise ValueError(f"prompt: expected a non-empty text prompt{hint}, got {cfg.prompt!r}")
    if not cfg.tiny and not cfg.body:
        raise ValueError("body: expected an SMPL/SMPL-X model directory or file (or --tiny), got ''")
    if cfg.model_type is not None and cfg.model_type not in MODEL_TYPES:
        raise ValueError(f"model_type: expected one of {MODEL_TYPES}, got {cfg.model_type!r}")
    for name, names in (("estimator", ssd_toolkit.list_estimators()), ("weighting", ssd_toolkit.list_weightings()),
                        ("t_sampler", ssd_toolkit.list_samplers())):  # fmt: skip
        if getattr(cfg, name).lower().replace("_", "-") not in names:
            raise ValueError(f"{name}: expected one of {', '.join(names)}, got {getattr(cfg, name)!r}")
    if not 0 <= cfg.seed < SEED_LIMIT:
        raise ValueError(f"seed: expected an integer in [0, 2**63 - 8), got {cfg.seed}")
    for name, kind in FIELD_TYPES.items():
        if kind == "float" and not math.isfinite(getattr(cfg, name)):
            raise ValueError(f"{name}: expected a finite number, got {getattr(cfg, name)}")
    for name in ("steps", "batch", "body_init_batch", "latent_size", "samples_per_ray", "field_features", "field_hidden", "turntable_frames", "turntable_fps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {getattr(cfg, name)}")
    if cfg.samples_per_ray > MAX_SAMPLES_PER_RAY:
        raise ValueError(f"samples_per_ray: expected an integer in [1, {MAX_SAMPLES_PER_RAY}], got {cfg.samples_per_ray}")
    for name in ("body_init_steps", "preview_every", "checkpoint_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name}: expected an integer >= 0, got {getattr(cfg, name)}")
    if cfg.guidance_adjust not in GUIDANCE_ADJUSTS:
        raise ValueError(f"guidance_adjust: expected one of {', '.join(GUIDANCE_ADJUSTS)}, got {cfg.guidance_adjust!r}")
    for name in ("lr", "guidance_scale", "grad_latent_clip_scale"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name}: expected a number > 0, got {getattr(cfg, name)}")
    for name in ("lambda_sparsity", "lambda_entropy", "box_margin"):
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name}: expected a number >= 0, got {getattr(cfg, name)}")
    if not cfg.field_resolutions or min(cfg.field_resolutions) < 2:
        raise ValueError(f"field_resolutions: expected a non-empty list of integers >= 2, got {cfg.field_resolutions}")
    if cfg.device not in DEVICES:
        raise ValueError(f"device: expected one of {DEVICES}, got {cfg.device!r}")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {cfg.precision!r}")
    return cfg


def resolve(cli: dict, config_file=None, resume: bool = False) -> AvatarConfig:
    """The run's settings from flags, an optional config file and (on resume) the saved run.

    Args:
        cli: settings given explicitly on the command line (names as in ``AvatarConfig``).
        config_file: path of a JSON/YAML settings file, or None.
        resume: merge the saved ``<out>/config.json`` under the file and flags, and refuse
            changes to the settings in ``RESUME_FIXED``.

    Raises:
        FileNotFoundError: ``resume`` without a saved config in the output directory.
        ValueError / TypeError: invalid settings (see ``validate``), or a fixed setting
            changed on resume.
    """
    cli = normalize_keys(cli, "command line")
    from_file = read_config_file(config_file) if config_file else {}
    explicit = {**from_file, **cli}
    tiny = explicit.get("tiny", False)
    values = dataclasses.asdict(AvatarConfig())
    if tiny:
        values.update(TINY_DEFAULTS)
    if resume:
        out = Path(explicit.get("out", values["out"]))
        saved_path = out / CONFIG_NAME
        if not saved_path.is_file():
            raise FileNotFoundError(
                f"--resume: expected a previous run's {CONFIG_NAME} in {str(out)!r}, got none; start without --resume"
            )
        saved = normalize_keys(load_structured(saved_path, "--resume"), f"saved config {str(saved_path)!r}")
        changed = [k for k in RESUME_FIXED if k in explicit and explicit[k] != saved.get(k)]
        if changed:
            details = ", ".join(f"{k}: saved {saved.get(k)!r}, given {explicit[k]!r}" for k in changed)
            raise ValueError(f"--resume: these settings must match the saved run to continue it exactly: {details}")
        values.update(saved)
    values.update(explicit)
    try:
        return validate(AvatarConfig(**values))
    except ValueError as exc:
        name = str(exc).partition(":")[0]
        if name in from_file and name not in cli:  # the file's key, not a flag the user did not type
            raise ValueError(f"config file {str(config_file)!r}: key {exc}") from None
        raise


def write_config(cfg: AvatarConfig, directory) -> Path:
    """Write ``<directory>/config.json`` atomically; returns its path."""
    path = Path(directory) / CONFIG_NAME
    atomic_write_bytes(path, (json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True) + "\n").encode())
    return path
