"""lora: low-rank adapters through PEFT. The base stays frozen; the adapter saves in PEFT's own layout."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from tunesmith.errors import TunesmithError
from tunesmith.methods.spec import Method
from tunesmith.modeling import linear_module_names, new_modules, suffixes
from tunesmith.schema import Section

log = logging.getLogger("tunesmith")


class LoraConfig(Section):
    """LoRA (Hu et al., 2021): W + (lora_alpha / r) * B @ A on the targeted linear layers."""

    name: Literal["lora"]
    r: int = Field(8, gt=0, description="Rank of the update.")
    lora_alpha: float = Field(16, gt=0, description="Scale: the update is multiplied by lora_alpha / r.")
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str | None = Field(
        None, description="Linear module names or suffixes, 'all-linear', or None for PEFT's default for the model."
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full and saved with the adapter. A new head is added automatically."
    )
    bias: Literal["none", "all", "lora_only"] = "none"


def check_targets(model, targets) -> None:
    """Every target must match a linear layer; the error lists the names that would."""
    if targets is None or targets == "all-linear":
        return
    targets = [targets] if isinstance(targets, str) else targets
    names = linear_module_names(model)
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise TunesmithError(
            f"method.target_modules: {missing} match no linear module of {type(model).__name__}; "
            f"its linear modules are {suffixes(names)} (or use 'all-linear')"
        )


def is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def apply(model, cfg: LoraConfig):
    import peft

    check_targets(model, cfg.target_modules)
    to_save = list(cfg.modules_to_save or [])
    if is_classifier(model):
        for name in new_modules(model):
            short = name.split(".")[-1]
            if short not in to_save:
                to_save.append(short)
                log.info("lora: training the new head %r in full (modules_to_save)", short)
    config = peft.LoraConfig(
        task_type="SEQ_CLS" if is_classifier(model) else "CAUSAL_LM",
        r=cfg.r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        modules_to_save=to_save or None,
        bias=cfg.bias,
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as err:  # PEFT knows no default targets for this architecture, and similar
        raise TunesmithError(
            f"method: PEFT could not apply LoRA ({err}); set method.target_modules, e.g. "
            f"{suffixes(linear_module_names(model))[:4]}"
        ) from None


METHOD = Method(name="lora", config_cls=LoraConfig, apply=apply, saves="adapter", summary="low-rank adapters (PEFT)")
