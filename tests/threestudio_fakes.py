"""Stand-ins for what threestudio hands its guidance, written from its documented behaviour
(threestudio commit 28d9d80): the prompt processor's output and a random-camera batch."""

import torch

DIRECTIONS = ("side", "front", "back", "overhead")  # threestudio's order; a later match wins


def shift_azimuth(azimuth):
    return (azimuth + 180) % 360 - 180


class PromptOutput:
    """threestudio's ``PromptProcessorOutput``: ``get_text_embeddings`` returns ``[cond; uncond]``
    (cond first), "uncond" being the negative prompt; view-dependent prompts ``"<prompt>, <view> view"``
    chosen by front/back 45 degree sectors and elevation > 60 for overhead."""

    def __init__(self, encode, prompt="a hamburger", negative_prompt="", use_perp_neg=False):
        self.prompts_vd = [f"{prompt}, {d} view" for d in DIRECTIONS]
        self.text_embeddings = encode([prompt])
        self.uncond_text_embeddings = encode([negative_prompt])
        self.text_embeddings_vd = encode(self.prompts_vd)
        self.uncond_text_embeddings_vd = encode([negative_prompt] * len(DIRECTIONS))
        self.use_perp_neg = use_perp_neg

    def direction_index(self, elevation, azimuth):
        a = shift_azimuth(azimuth)
        idx = torch.zeros_like(elevation, dtype=torch.long)
        idx[(a > -45) & (a < 45)] = 1
        idx[(a > 135) | (a < -135)] = 2
        idx[elevation > 60] = 3
        return idx

    def get_text_embeddings(self, elevation, azimuth, camera_distances, view_dependent_prompting=True):
        B = elevation.shape[0]
        if view_dependent_prompting:
            idx = self.direction_index(elevation, azimuth)
            cond, uncond = self.text_embeddings_vd[idx], self.uncond_text_embeddings_vd[idx]
        else:
            cond = self.text_embeddings.expand(B, -1, -1)
            uncond = self.uncond_text_embeddings.expand(B, -1, -1)
        return torch.cat([cond, uncond], dim=0)


def camera_batch(B, side=64, seed=0):
    """The keys threestudio's random-camera datamodule yields (systems pass them as ``**batch``)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "index": torch.arange(B),
        "rays_o": torch.randn(B, side, side, 3, generator=g),
        "rays_d": torch.randn(B, side, side, 3, generator=g),
        "mvp_mtx": torch.eye(4).expand(B, 4, 4),
        "camera_positions": torch.randn(B, 3, generator=g),
        "c2w": torch.eye(4)[:3].expand(B, 3, 4),
        "light_positions": torch.randn(B, 3, generator=g),
        "elevation": torch.rand(B, generator=g) * 55 - 10,
        "azimuth": torch.rand(B, generator=g) * 360 - 180,
        "camera_distances": torch.rand(B, generator=g) * 0.5 + 1.5,
        "height": side,
        "width": side,
        "fovy": torch.full((B,), 0.9),
    }
