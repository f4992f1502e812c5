"""Quiet third-party output in the avatar commands: library warnings, logs and bars.

diffusers, transformers and huggingface_hub print their own warnings ("... requires
torchvision", "should be kept in float32") and progress bars ("Loading weights", "Writing
model shards"); the avatar commands hide them unless ``--verbose`` is given. Our own bars
(``progress_bar``) draw only on a terminal: redirected output gets no cursor codes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings

THIRD_PARTY = ("diffusers", "transformers", "huggingface_hub", "accelerate", "controlnet_aux", "timm")


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal (bars may move the cursor there)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress_bar(*args, disable: bool = False, **kwargs):
    """``tqdm`` that is disabled when stderr is not a terminal (no ``\\x1b[A`` in log files)."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(*args, disable=disable or not stderr_is_terminal(), **kwargs)


def _set_library_quiet(quiet: bool):
    """Errors only and no bars for the hub libraries (their own switches), or their defaults back."""
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)
    with contextlib.suppress(ImportError):
        import huggingface_hub.utils as hub_utils  # noqa: PLC0415

        (hub_utils.disable_progress_bars if quiet else hub_utils.enable_progress_bars)()
    for module in ("diffusers.utils.logging", "transformers.utils.logging"):
        with contextlib.suppress(ImportError):
            lib = __import__(module, fromlist=["set_verbosity_error"])
            if quiet:
                lib.set_verbosity_error()
                lib.disable_progress_bar()
            else:
                lib.set_verbosity_warning()
                lib.enable_progress_bar()


@contextlib.contextmanager
def quiet_third_party(verbose: bool = False):
    """Within the block third-party warnings, info logs and bars are hidden (unless ``verbose``)."""
    if verbose:
        yield
        return
    _set_library_quiet(True)
    with warnings.catch_warnings():
        for name in THIRD_PARTY:
            warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
        try:
            yield
        finally:
            _set_library_quiet(False)
