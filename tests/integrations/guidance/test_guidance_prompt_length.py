"""Prompts longer than CLIP's context warn once with the token count (issue 24)."""

import io
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance  # noqa: E402
from ssd_toolkit.integrations.guidance.prompts import (  # noqa: E402
    PromptTruncatedWarning,
    one_line_prompt_warnings,
)


def test_long_prompt_warns_once_with_count_and_limit(models):
    g = ControlNetGuidance(models)
    tok = models.tokenizer
    long_prompt = "a wooden robot " * 20
    first = f"front view of {long_prompt}"
    count = len(tok(first, truncation=False, verbose=False).input_ids)
    assert count > tok.model_max_length == 77
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g.encode_prompts(["short"])
        assert not [w for w in caught if issubclass(w.category, PromptTruncatedWarning)]
        g.encode_prompts([first, f"side view of {long_prompt}"])
        g.encode_prompts([f"backside view of {long_prompt}"])
    hits = [str(w.message) for w in caught if issubclass(w.category, PromptTruncatedWarning)]
    assert len(hits) == 1
    assert hits[0] == f"prompt: {count} tokens, CLIP keeps the first 77; the rest is ignored"


def test_prompt_at_the_limit_does_not_warn(models):
    g = ControlNetGuidance(models)
    prompt = "x" * 75  # + start and end tokens = 77
    assert len(models.tokenizer(prompt, truncation=False, verbose=False).input_ids) == 77
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        g.encode_prompts([prompt])


def test_cli_form_is_one_stderr_line():
    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with one_line_prompt_warnings("ssd-toolkit avatar", stream):
            warnings.warn("prompt: 612 tokens, CLIP keeps the first 77; the rest is ignored", PromptTruncatedWarning)
    assert stream.getvalue() == "ssd-toolkit avatar: warning: prompt: 612 tokens, CLIP keeps the first 77; the rest is ignored\n"
