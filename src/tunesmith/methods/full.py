"""full: every parameter is trained."""

from __future__ import annotations

from typing import Literal

from tunesmith.methods.spec import Method
from tunesmith.schema import Section


class FullConfig(Section):
    """Full fine-tuning: all parameters trainable. Costs the most memory; the reference point."""

    name: Literal["full"]


def apply(model, cfg: FullConfig):
    for param in model.parameters():
        param.requires_grad_(True)
    return model


METHOD = Method(name="full", config_cls=FullConfig, apply=apply, saves="model", summary="all parameters", learning_rate=5e-5)
