"""DreamWaltz's CFG-scale schedule (``guide.guidance_adjust``), shared by every host, against
values worked out from DreamWaltz's definitions."""

import numpy as np
import pytest

from ssd_toolkit.integrations.guidance.cfg_schedule import guidance_scale_at


def test_guidance_adjust_modes():
    assert guidance_scale_at("constant", 50.0, 3, 10) == 50.0
    assert guidance_scale_at("linear", 50.0, 1, 11) == 50.0
    assert guidance_scale_at("linear", 50.0, 11, 11) == pytest.approx(7.5)
    assert guidance_scale_at("linear_rev", 50.0, 1, 11) == 7.5
    assert guidance_scale_at("linear_rev", 50.0, 11, 11) == pytest.approx(50.0)
    np.random.seed(9)
    s = guidance_scale_at("uniform", 50.0, 1, 10)
    np.random.seed(9)
    assert s == np.random.uniform(7.5, 50.0) and 7.5 <= s <= 50.0
    with pytest.raises(ValueError, match=r"guide.guidance_adjust: expected one of \('constant', 'uniform', 'linear'"):
        guidance_scale_at("cosine", 50.0, 1, 10)
