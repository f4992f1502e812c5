"""The environment DreamWaltz-G's own code runs in for the upstream tests (dwg_standins)."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

import dwg_standins as S

# huggingface_hub and diffusers read the cache location once, at import: set it before this
# folder's test modules import them (run this folder on its own with DREAMWALTZ_G_DIR)
HF_ROOT = None
if S.dreamwaltz_g_dir() is not None:
    HF_ROOT = Path(tempfile.mkdtemp(prefix="dwg_hf_"))
    os.environ.update(S.offline_env(HF_ROOT))


@pytest.fixture(scope="session")
def dwg_env(tmp_path_factory):
    """Their checkout on ``sys.path`` with every stand-in in place; skips without a checkout or
    where their guidance does not import (they pin diffusers 0.24). Yields the checkout."""
    repo = S.dreamwaltz_g_dir()
    if repo is None:
        pytest.skip("DREAMWALTZ_G_DIR: a DreamWaltz-G checkout (not in CI)")
    torch = pytest.importorskip("torch")
    import huggingface_hub.constants  # noqa: PLC0415

    if Path(huggingface_hub.constants.HF_HUB_CACHE) != HF_ROOT / "hub":
        pytest.skip("huggingface_hub was imported before this folder's conftest set its cache: run "
                    "tests/integrations/dreamwaltz_g on its own")
    with pytest.MonkeyPatch.context() as mp:
        S.hub_cache(HF_ROOT)
        import diffusers  # noqa: F401 - before the torchvision stub (both probe for it)
        import transformers  # noqa: F401

        S.stub_torchvision()
        for name, module in S.trainer_import_stubs().items():
            mp.setitem(sys.modules, name, module)
        mp.syspath_prepend(str(repo))
        mp.chdir(tmp_path_factory.mktemp("run"))
        try:
            import core.guidance.controlnet  # noqa: F401
        except ImportError as exc:
            pytest.skip(f"DreamWaltz-G's guidance does not import here ({exc}); it pins diffusers 0.24")
        S.offline_pipelines()
        import ssd_toolkit.integrations.dreamwaltz_g as ours

        ours.register_guide_fields()
        torch.set_num_threads(1)
        yield repo
