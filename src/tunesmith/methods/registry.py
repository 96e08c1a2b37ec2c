"""name -> Method. Add a method by writing one module with a config class and an apply function."""

from __future__ import annotations

from tunesmith.methods import full, head, lora
from tunesmith.methods.spec import Method

METHODS: dict[str, Method] = {m.name: m for m in (full.METHOD, head.METHOD, lora.METHOD)}


def apply_method(model, method_cfg):
    """Return `model` with exactly the parameters of `method_cfg` trainable."""
    return METHODS[method_cfg.name].apply(model, method_cfg)
