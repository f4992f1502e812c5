"""View-dependent prompts: DreamWaltz's 90-degree azimuth sectors and polar caps."""

import numpy as np
import pytest

from ssd_toolkit.integrations.guidance.prompts import view_direction, view_prompts


@pytest.mark.parametrize(
    "azimuth, view",
    [
        (0, "front"), (44.9, "front"), (-44.9, "front"), (315, "front"), (359.9, "front"), (720, "front"),
        (45, "side"), (90, "side"), (134.9, "side"),
        (135, "backside"), (180, "backside"), (224.9, "backside"), (-180, "backside"),
        (225, "side"), (270, "side"), (314.9, "side"), (-90, "side"),
    ],
)
def test_azimuth_sectors_centred_on_front(azimuth, view):
    assert view_direction(90.0, azimuth) == [view]


@pytest.mark.parametrize(
    "polar, view",
    [(0, "overhead"), (30, "overhead"), (30.1, "backside"), (149.9, "backside"), (150, "bottom"), (180, "bottom")],
)
def test_polar_caps_override_the_azimuth(polar, view):
    assert view_direction(polar, 180.0) == [view]


def test_batch_broadcast_and_tensor_input():
    torch = pytest.importorskip("torch")
    views = view_direction(torch.tensor([90.0, 90.0, 10.0, 170.0]), torch.tensor([0.0, 180.0, 0.0, 0.0]))
    assert views == ["front", "backside", "overhead", "bottom"]
    assert view_direction(np.float64(90.0), [0, 90, 180, 270]) == ["front", "side", "backside", "side"]


def test_view_prompts_format():
    assert view_prompts("a wooden robot", [90, 90], [0, 180]) == [
        "front view of a wooden robot",
        "backside view of a wooden robot",
    ]


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="azimuth_deg: expected 3 values"):
        view_direction([90, 90, 90], [0, 90])
    with pytest.raises(ValueError, match="polar_deg: expected finite"):
        view_direction([float("nan")], [0])
    with pytest.raises(ValueError, match="azimuth_deg: expected a scalar or a 1-D"):
        view_direction(90, [[0, 1]])
    with pytest.raises(TypeError, match="text: expected a str, got list"):
        view_prompts(["a man"], 90, 0)
