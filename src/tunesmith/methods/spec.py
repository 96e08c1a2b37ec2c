"""What a method is: a config class, a function that sets the trainable parameters, and a registry entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type
    apply: Callable[[Any, Any], Any]  # (model, method_config) -> model with its trainable parameters set
    saves: Literal["adapter", "model"]  # what the run folder holds: a PEFT adapter or a whole model
    summary: str
    unsupported: dict[str, str] = field(default_factory=dict)  # objective -> why it does not apply
