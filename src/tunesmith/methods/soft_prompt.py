"""prompt and prefix: soft prompts through PEFT. The whole model stays frozen; only virtual tokens train.

- prompt: prompt tuning (Lester et al., 2021): `num_virtual_tokens` trainable embeddings prepended to the
  input, initialized randomly or from the embeddings of a text.
- prefix: prefix tuning (Li & Liang, 2021): trainable key/value prefixes in every attention layer.
"""

from __future__ import annotations

import inspect
from typing import Literal

from pydantic import Field, model_validator

from tunesmith.errors import TunesmithError
from tunesmith.methods.peft_common import is_classifier, modules_to_save, task_type, wrap
from tunesmith.methods.spec import Method
from tunesmith.schema import Section


class PromptConfig(Section):
    """Prompt tuning: trainable virtual-token embeddings in front of every input."""

    name: Literal["prompt"]
    num_virtual_tokens: int = Field(20, gt=0, description="Soft-prompt length in tokens.")
    init_text: str | None = Field(
        None, description="Initialize the soft prompt from this text's token embeddings (repeated or cut to length); "
        "None: random initialization.",
    )
    modules_to_save: list[str] | None = Field(None, description="Modules trained in full too (a classifier's new head is added automatically).")


class PrefixConfig(Section):
    """Prefix tuning: trainable key/value vectors prepended in every attention layer."""

    name: Literal["prefix"]
    num_virtual_tokens: int = Field(20, gt=0, description="Prefix length in tokens.")
    prefix_projection: bool = Field(False, description="Reparameterize the prefix through a 2-layer MLP (more stable, more parameters).")
    encoder_hidden_size: int | None = Field(None, gt=0, description="Hidden size of that MLP (default: the model's).")
    modules_to_save: list[str] | None = Field(None, description="Modules trained in full too (a classifier's new head is added automatically).")

    @model_validator(mode="after")
    def _projection(self):
        if self.encoder_hidden_size and not self.prefix_projection:
            raise ValueError("encoder_hidden_size applies only with prefix_projection: true")
        return self


def apply_prompt(model, cfg: PromptConfig):
    import peft

    init = {"prompt_tuning_init": "RANDOM"}
    if cfg.init_text:
        init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": cfg.init_text,
                "tokenizer_name_or_path": model.name_or_path}
    config = peft.PromptTuningConfig(task_type=task_type(model), num_virtual_tokens=cfg.num_virtual_tokens,
                                     modules_to_save=modules_to_save(model, cfg.modules_to_save), **init)
    return wrap(model, config)


def _takes_past_key_values(model) -> bool:
    """PEFT feeds the prefixes in as `past_key_values`; an encoder whose forward lost that argument
    (BERT in transformers 5.24 calls it `cache`) would fail at the first batch, so say so now."""
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), model)
    return any("past_key_values" in inspect.signature(m.forward).parameters for m in (model, backbone))


def apply_prefix(model, cfg: PrefixConfig):
    import peft
    import transformers

    if is_classifier(model) and not _takes_past_key_values(model):
        raise TunesmithError(
            f"method: prefix tuning needs a model whose forward takes past_key_values, and {type(model).__name__} "
            f"under transformers {transformers.__version__} does not (PEFT {peft.__version__} passes the prefixes "
            f"that way); use method.name: prompt or lora, or install transformers<5.24 as pyproject.toml pins"
        )
    config = peft.PrefixTuningConfig(task_type=task_type(model), num_virtual_tokens=cfg.num_virtual_tokens,
                                     prefix_projection=cfg.prefix_projection,
                                     modules_to_save=modules_to_save(model, cfg.modules_to_save),
                                     **({"encoder_hidden_size": cfg.encoder_hidden_size} if cfg.encoder_hidden_size else {}))
    return wrap(model, config)


PROMPT = Method(name="prompt", config_cls=PromptConfig, apply=apply_prompt, saves="adapter", peft=True,
                summary="soft prompt: trainable virtual tokens (PEFT prompt tuning)", learning_rate=1e-2)
PREFIX = Method(name="prefix", config_cls=PrefixConfig, apply=apply_prefix, saves="adapter", peft=True,
                summary="trainable key/value prefixes in every layer (PEFT prefix tuning)", learning_rate=1e-2)
