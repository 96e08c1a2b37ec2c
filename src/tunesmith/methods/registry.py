"""name -> Method. Add a method by writing one module with a config class and an apply function."""

from __future__ import annotations

from tunesmith.methods import adalora, adapter, dylora, features, freeze, full, head, ia3, lora, soft_prompt
from tunesmith.methods.spec import Method

METHODS: dict[str, Method] = {m.name: m for m in (
    full.METHOD, freeze.METHOD, head.METHOD, lora.LORA, lora.DORA, lora.QLORA, adalora.METHOD, dylora.METHOD,
    soft_prompt.PROMPT, soft_prompt.PREFIX, ia3.METHOD, adapter.METHOD,
    features.METHOD,
)}


def apply_method(model, method_cfg):
    """Return `model` with exactly the parameters of `method_cfg` trainable."""
    return METHODS[method_cfg.name].apply(model, method_cfg)
