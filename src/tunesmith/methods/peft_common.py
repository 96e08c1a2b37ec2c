"""What every PEFT-backed method shares: the task type, training the new head in full, clear errors."""

from __future__ import annotations

import logging

from pydantic import Field

from tunesmith.errors import TunesmithError
from tunesmith.modeling import linear_module_names, new_modules, suffixes
from tunesmith.schema import Section

log = logging.getLogger("tunesmith")


class LoraFamilySection(Section):
    """The fields every LoRA-family config (lora, dora, qlora, adalora, dylora) shares, declared once. `name` comes
    first in every method section; each config narrows it to its own Literal."""

    name: str
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str | None = Field(
        None, description="Linear module names or suffixes, 'all-linear', or None for PEFT's default for the model."
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full and saved with the adapter. A new head is added automatically."
    )


def is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


LABELS_FILE = "labels.json"


def save_labels(model, folder) -> None:
    """A classifier adapter's label names, beside it as {"id2label", "label2id"} (config.json's shape): passed to
    `AutoModelForSequenceClassification.from_pretrained(BASE, id2label=..., label2id=...)` before
    `PeftModel.from_pretrained`, they give label names, not class indices, without tunesmith. (A config.json in the
    adapter folder would make transformers take that folder for a whole model.)"""
    import json
    from pathlib import Path

    config = getattr(model, "config", None)
    if not is_classifier(getattr(model, "get_base_model", lambda: model)()) or not getattr(config, "id2label", None):
        return
    id2label = {str(i): str(label) for i, label in sorted(config.id2label.items(), key=lambda kv: int(kv[0]))}
    labels = {"id2label": id2label, "label2id": {label: int(i) for i, label in id2label.items()}}
    (Path(folder) / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n")


def task_type(model) -> str:
    return "SEQ_CLS" if is_classifier(model) else "CAUSAL_LM"


def modules_to_save(model, requested: list[str] | None) -> list[str] | None:
    """The user's modules_to_save plus, for a classifier, the new randomly initialized head."""
    out = list(requested or [])
    if is_classifier(model):
        for name in new_modules(model):
            short = name.split(".")[-1]
            if short not in out:
                out.append(short)
                log.info("%s: training the new head %r in full (modules_to_save)", type(model).__name__, short)
    return out or None


def lora_family_options(model, cfg: LoraFamilySection) -> dict:
    """The PEFT config keywords every LoRA-family method passes alike (task type, dropout, targets, modules trained
    in full), after checking the targets against the model."""
    check_targets(model, cfg.target_modules)
    return {"task_type": task_type(model), "lora_dropout": cfg.lora_dropout, "target_modules": cfg.target_modules,
            "modules_to_save": modules_to_save(model, cfg.modules_to_save)}


def check_targets(model, targets, key: str = "method.target_modules") -> None:
    """Every target must match a linear layer; the error lists the names that would."""
    if targets is None or targets == "all-linear":
        return
    targets = [targets] if isinstance(targets, str) else targets
    names = linear_module_names(model)
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise TunesmithError(
            f"{key}: {missing} match no linear module of {type(model).__name__}; "
            f"its linear modules are {suffixes(names)} (or use 'all-linear')"
        )


def wrap(model, config):
    """peft.get_peft_model with PEFT's ValueErrors turned into a TunesmithError that says what to set."""
    import peft

    try:
        return peft.get_peft_model(model, config)
    except (ValueError, TypeError) as err:  # no default targets for this architecture, and similar
        raise TunesmithError(
            f"method: PEFT could not apply {type(config).__name__} ({err}); set method.target_modules, e.g. "
            f"{suffixes(linear_module_names(model))[:4]}"
        ) from None
