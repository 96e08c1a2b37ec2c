"""The bottleneck adapter module (torch), kept apart from adapter.py so that reading a config never imports torch."""

from __future__ import annotations

import torch

ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "tanh": torch.nn.Tanh, "silu": torch.nn.SiLU}


class Bottleneck(torch.nn.Module):
    """A projection followed by a residual bottleneck adapter on its output."""

    def __init__(self, base: torch.nn.Module, hidden_size: int, bottleneck: int, activation: str, after: str):
        super().__init__()
        self.activation, self.after = activation, after  # what it is, so the saved layout is read off the model
        weight = next(base.parameters())
        kw = {"device": weight.device, "dtype": weight.dtype if weight.is_floating_point() else torch.float32}
        self.base = base
        self.down = torch.nn.Linear(hidden_size, bottleneck, **kw)
        self.act = ACTIVATIONS[activation]()
        self.up = torch.nn.Linear(bottleneck, hidden_size, **kw)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, x):
        h = self.base(x)
        return h + self.up(self.act(self.down(h)))
