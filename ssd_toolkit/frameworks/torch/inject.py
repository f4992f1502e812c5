"""The autograd function behind ``ssd_toolkit.inject_gradient`` and ``sds_loss``.

Defined at import (not on first call) so that a first call inside ``torch.compile`` finds a
class Dynamo can trace, not a class statement it cannot.
"""

from __future__ import annotations

import torch


class InjectGradient(torch.autograd.Function):
    """``forward(x, grad, value) -> value``; ``backward: dL/dx = grad * upstream``."""

    @staticmethod
    def forward(ctx, x, grad, value):
        ctx.save_for_backward(grad)
        return value.detach().clone()

    @staticmethod
    def backward(ctx, upstream):
        (grad,) = ctx.saved_tensors
        return grad * upstream.to(grad.dtype), None, None
