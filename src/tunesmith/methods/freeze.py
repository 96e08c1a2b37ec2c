"""freeze: selective tuning. Train only the top k transformer blocks and/or parameters named by pattern
(layer norms, biases, ...); everything else stays frozen. A classifier's new head always trains."""

from __future__ import annotations

import fnmatch
import logging
from typing import Any, Literal

from pydantic import Field, model_validator

from tunesmith.errors import TunesmithError
from tunesmith.methods.peft_common import is_classifier
from tunesmith.methods.spec import Method
from tunesmith.modeling import new_modules
from tunesmith.schema import Section

log = logging.getLogger("tunesmith")


class FreezeConfig(Section):
    """Selective tuning: unfreeze the top `top_k_layers` blocks and the parameters matching `patterns`."""

    name: Literal["freeze"]
    top_k_layers: int | None = Field(None, ge=0, description="Train the last k transformer blocks (closest to the output).")
    patterns: list[str] = Field(
        default_factory=list,
        description="Glob patterns over parameter names trained too, e.g. ['*LayerNorm*', '*.bias'] (BitFit) or '*norm*'.",
    )
    train_head: bool = Field(True, description="Train a classifier's newly initialized head.")

    @model_validator(mode="after")
    def _something_to_train(self):
        if not self.top_k_layers and not self.patterns:
            raise ValueError("set method.top_k_layers (e.g. 2) and/or method.patterns (e.g. ['*.bias']); nothing would train")
        return self


def blocks(model) -> tuple[str, Any]:
    """The model's stack of transformer blocks: the ModuleList holding the most parameters."""
    import torch

    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise TunesmithError(f"method.top_k_layers: {type(model).__name__} has no list of transformer blocks; use method.patterns")
    return max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def apply(model, cfg: FreezeConfig):
    names = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    if cfg.top_k_layers:
        prefix, stack = blocks(model)
        if cfg.top_k_layers > len(stack):
            raise TunesmithError(f"method.top_k_layers: {cfg.top_k_layers} is more than the {len(stack)} blocks of "
                                 f"{type(model).__name__} ({prefix}); use at most {len(stack)}, or method: full")
        first = len(stack) - cfg.top_k_layers
        wanted = tuple(f"{prefix}.{i}." for i in range(first, len(stack)))
        chosen |= {n for n in names if n.startswith(wanted)}
    for pattern in cfg.patterns:
        hits = {n for n in names if fnmatch.fnmatchcase(n, pattern)}
        if not hits:
            raise TunesmithError(f"method.patterns: {pattern!r} matches no parameter; parameter names look like "
                                 f"{names[:3] + names[-2:]} (glob syntax: '*LayerNorm*', '*.bias')")
        chosen |= hits
    if cfg.train_head and is_classifier(model):
        heads = tuple(m + "." for m in new_modules(model))
        chosen |= {n for n in names if heads and n.startswith(heads)}
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    log.info("freeze: training %d of %d parameter tensors", len(chosen), len(names))
    return model


METHOD = Method(name="freeze", config_cls=FreezeConfig, apply=apply, saves="model",
                summary="top-k blocks and/or named parameters (layer norms, biases)", learning_rate=1e-4)
