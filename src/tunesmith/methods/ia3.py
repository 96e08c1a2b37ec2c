"""ia3: learned rescaling vectors on keys, values and feed-forward activations (Liu et al., 2022), via PEFT."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunesmith.methods.peft_common import check_targets, modules_to_save, task_type, wrap
from tunesmith.methods.spec import Method
from tunesmith.schema import Section


class IA3Config(Section):
    """IA3: multiply the outputs of the targeted layers by trainable vectors (initialized to 1)."""

    name: Literal["ia3"]
    target_modules: list[str] | None = Field(None, description="Layers to rescale; None: PEFT's default (keys, values, FFN output).")
    feedforward_modules: list[str] | None = Field(
        None, description="Which of target_modules are feed-forward (rescaled on their input); must be a subset.",
    )
    modules_to_save: list[str] | None = Field(None, description="Modules trained in full too (a classifier's new head is added automatically).")

    @model_validator(mode="after")
    def _subset(self):
        if self.feedforward_modules and not self.target_modules:
            raise ValueError("feedforward_modules needs target_modules too (it must be a subset of them)")
        if self.feedforward_modules and not set(self.feedforward_modules) <= set(self.target_modules or []):
            raise ValueError(f"feedforward_modules {self.feedforward_modules} must be a subset of target_modules {self.target_modules}")
        return self


def apply(model, cfg: IA3Config):
    import peft

    check_targets(model, cfg.target_modules)
    config = peft.IA3Config(task_type=task_type(model), target_modules=cfg.target_modules,
                            feedforward_modules=cfg.feedforward_modules,
                            modules_to_save=modules_to_save(model, cfg.modules_to_save))
    return wrap(model, config)


METHOD = Method(name="ia3", config_cls=IA3Config, apply=apply, saves="adapter", peft=True, mergeable=True,
                summary="learned rescaling of keys, values and FFN (PEFT IA3)", learning_rate=5e-3)
