"""The run config: one pydantic model per section, YAML in, dotted overrides, every problem reported at once.

A config has seven sections: ``model``, ``data``, ``method``, ``objective``, ``train``, ``eval``, ``report``.
``method`` and ``objective`` are chosen by their ``name`` key; their options come from the registries in
``tunesmith.methods`` and ``tunesmith.objectives``, so adding a method never touches this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from tunesmith.config_checks import cross_checks
from tunesmith.config_errors import describe_errors
from tunesmith.config_io import apply_overrides, parse_override, read_yaml, suggest, switches  # noqa: F401 (re-exported)
from tunesmith.data.roles import OLD_COLUMN_KEYS, move_old_column_keys
from tunesmith.errors import TunesmithError
from tunesmith.registries import methods, objectives
from tunesmith.schema import Section
from tunesmith.sweep_config import SweepConfig


class ModelConfig(Section):
    name: str = Field(description="Offline catalog name (see `tunesmith assets`), local folder, or hub id.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype when loading. float32 trains safely everywhere; auto: bfloat16 on a "
        "CUDA GPU that computes bf16 natively, float32 elsewhere (the choice is logged)."
    )
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] | None = Field(
        None, description="The attention kernel (transformers' attn_implementation); none: transformers' default "
        "for the model. flash_attention_2 needs a CUDA GPU and the flash_attn package.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    trust_remote_code: bool = False
    keep_layers: list[int] | None = Field(
        None, description="Keep only these transformer blocks of the base (0-based, ascending), e.g. [0, 2, 4]: a "
        "smaller student, as DistilBERT kept every other layer of BERT. Any objective.")
    num_layers: int | None = Field(
        None, gt=0, description="Keep this many blocks, evenly spaced from the first (6 -> 3 keeps [0, 2, 4]).")

    @field_validator("keep_layers")
    @classmethod
    def _ascending_layers(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) < 0 or value != sorted(set(value))):
            raise ValueError("list the blocks to keep as distinct indices from 0 in ascending order, e.g. [0, 2, 4]")
        return value

    @model_validator(mode="after")
    def _one_way_to_cut(self):
        if self.keep_layers is not None and self.num_layers is not None:
            raise ValueError("model.keep_layers and model.num_layers both choose the blocks to keep; set one of them")
        return self


class MixSource(Section):
    """Extra training data mixed into the task's (e.g. general instructions, against forgetting)."""

    source: str = Field(description="Any data source, as data.source.")
    subset: str | None = None
    split: str = "train"
    ratio: float = Field(gt=0, description="Examples of this source per task training example (0.5: half as many).")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Rename its columns to the task's, e.g. {question: prompt, answer: response}."
    )


class DataConfig(Section):
    source: str = Field(description="JSONL/CSV/Parquet file, saved `datasets` folder, catalog name, or hub name.")
    subset: str | None = Field(None, description="Hub dataset configuration name, e.g. 'sst2' of 'glue'.")
    train_split: str = "train"
    eval_split: str | None = Field(
        None, description="Split to evaluate on. Absent, or missing from the source: a seeded held-out split."
    )
    eval_size: float | int = Field(
        0.1, description="Held-out size (fraction or count) when no eval split exists; else a cap on it."
    )
    train_size: int | None = Field(None, description="Cap on training examples (seeded sample).")
    group_column: str | None = Field(
        None, description="Keep rows sharing this column's value on one side of the held-out split."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="The column of each role the objective reads, {role: column}, e.g. {prompt: question, response: "
        "answer}. A role's column defaults to the role's name; an optional role (text_pair) has none unless set. "
        "Roles: classify text, text_pair, label; causal_lm text; sft prompt, response.",
    )
    labels: list[str] | None = Field(None, description="Label names in id order. Default: sorted names found.")
    template: str | None = Field(
        None,
        description="Format string over column names. For sft it must end with the response placeholder, "
        "e.g. 'Q: {question}\\nA: {answer}' with columns: {response: answer}.",
    )
    format: Literal["text", "chat", "messages", "sharegpt", "alpaca"] = Field(
        "text", description="text: prompt/response (or data.template) as plain text. chat: conversations through the "
        "tokenizer's chat template, their format detected from the columns: OpenAI `messages` ({role, content}), "
        "ShareGPT `conversations` ({from, value}), Alpaca `instruction`/`input`/`output`, or prompt/response columns. "
        "messages, sharegpt, alpaca: that format, forced.",
    )
    train_on: Literal["all_assistant", "last_assistant"] = Field(
        "all_assistant", description="Conversations (data.format other than text): the loss covers every assistant "
        "turn and its end-of-turn token, or only the last one; never system, user or tool text.",
    )
    chat_template: str | None = Field(
        None, description="A chat template for the run's tokenizer (saved with it): chatml, llama-3, model (the "
        "tokenizer's own), or the path of a Jinja file. Needed for conversations on a base model without a template.",
    )
    system_prompt: str | None = Field(None, description="System message for every conversation that has none of "
                                      "its own (a `system` column, where the data has one, comes first).")
    max_length: int = Field(256, gt=0, description="Tokens per example after truncation.")
    truncation_side: Literal["right", "left"] = "right"
    packing: bool = Field(False, description="causal_lm: concatenate texts and cut into max_length blocks.")
    mix: list[MixSource] = Field(
        default_factory=list, description="Other sources mixed into the training split only (multitask mixing); eval stays the task's."
    )
    encoding: str = Field("utf-8", description="Text encoding of a JSONL/JSON/CSV/TSV source, e.g. latin-1 or cp1252.")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError("not a text encoding Python knows; expected e.g. utf-8, latin-1, cp1252") from None
        return value

    _roles: tuple | None = PrivateAttr(None)  # the objective's Role declarations, set when a RunConfig is validated

    @property
    def roles(self) -> tuple:
        """The Role declarations of the config's objective (tunesmith.data.roles.Role)."""
        return self._roles or ()

    def column(self, role: str) -> str | None:
        """The column that holds `role`: data.columns[role], else the role's own name; None for an optional role
        that data.columns does not name."""
        if role in self.columns:
            return self.columns[role]
        roles = self._roles if self._roles is not None else [r for o in objectives().values() for r in o.roles]
        return None if any(r.name == role and r.optional for r in roles) else role

    def role_columns(self) -> dict[str, str]:
        """{role: column} for every role of the objective that has a column."""
        return {r.name: c for r in self.roles if (c := self.column(r.name)) is not None}


class TrainConfig(Section):
    """A subset of transformers.TrainingArguments under the same names; `extra` passes any other."""

    num_train_epochs: float = 3.0
    max_steps: int = Field(-1, description="Overrides num_train_epochs when > 0.")
    learning_rate: float = Field(2e-4, gt=0)
    per_device_train_batch_size: int = Field(8, gt=0)
    per_device_eval_batch_size: int = Field(32, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    weight_decay: float = 0.0
    warmup_steps: float = Field(0.0, ge=0, description="Below 1: a fraction of the total steps.")
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = 1.0
    seed: int = 42
    eval_strategy: Literal["no", "epoch", "steps"] = "epoch"
    eval_steps: int | None = None
    logging_steps: int = Field(10, gt=0)
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = Field(None, description="e.g. 'accuracy' or 'eval_loss'.")
    bf16: bool | Literal["auto"] = Field(
        "auto", description="bfloat16 autocast. auto: on where the hardware computes bf16 natively (a CUDA GPU with "
        "bf16, a CPU with AVX-512 BF16 or AMX), fp32 elsewhere; the choice is logged. true on hardware without native "
        "bf16 (e.g. an AVX2-only CPU, where it is emulated, ~40x slower) is an error in validate and train, not a fallback.",
    )
    gradient_checkpointing: bool = False
    pack_batches: bool = Field(True, description="sft: pack each batch's examples into rows of up to data.max_length "
                               "tokens, attention kept within each example (same loss, no padding work); a model "
                               "that cannot keep them apart gets length-grouped batches (objectives/lm_speed.py).")
    logits_at_labels: bool = Field(True, description="sft: compute the output layer and the loss only at the response "
                                   "positions, not at every position (same loss, less work).")
    group_by_length: bool = Field(False, description="classify: batches of rows of similar length (transformers' "
                                  "train_sampling_strategy: group_by_length, for training and the evaluations), so "
                                  "less padding is computed; every row is still seen once per epoch. Off by default: "
                                  "it trains faster but scored 0.010-0.015 lower on two sentiment recipes (one seed each).")
    bf16_frozen_weights: bool = Field(True, description="With bf16 autocast on fp32 weights (a CPU): the frozen "
                                      "weights of linear layers are cast to bf16 once when training starts, not at "
                                      "every step (autocast would cast them to the same values), and restored to "
                                      "fp32 when it ends (same results; objectives/classify_speed.py).")
    use_cpu: bool = False
    use_liger_kernel: bool = Field(False, description="Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU, cross "
                                   "entropy) through the Trainer's use_liger_kernel; needs a CUDA GPU and the "
                                   "liger-kernel package.")
    save_steps: int | None = Field(
        None, gt=0, description="Write a checkpoint every N optimizer steps (model or adapter, optimizer, scheduler, "
        "RNG, data position), so that `tunesmith train --resume RUN_DIR` continues a stopped run from it.")
    report_to: list[str] = Field(
        default_factory=list, description="Experiment trackers: any the installed transformers supports (tensorboard, "
        "mlflow, wandb, trackio, comet_ml, ...; all: every one installed). tensorboard/ and mlruns/ are written into "
        "the run folder; the run's config and eval.json are added when it ends (tunesmith.report.tracking).")
    distributed: Literal["ddp", "fsdp", "zero2", "zero3"] = Field(
        "ddp", description="How the processes of `train --nproc N` share the work: ddp (each holds the whole model, "
        "gradients averaged), fsdp (PyTorch FSDP2: parameters, gradients and optimizer state sharded), zero2/zero3 "
        "(DeepSpeed ZeRO stage 2/3; needs the deepspeed package and CUDA GPUs). Through accelerate, as the Trainer does.")
    distributed_options: dict[str, Any] = Field(
        default_factory=dict, description="Merged into the fsdp_config (fsdp) or the DeepSpeed config (zero2/zero3), "
        "e.g. {cpu_offload: true} or {zero_optimization: {offload_optimizer: {device: cpu}}}.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Any other TrainingArguments field.")

    @field_validator("eval_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value):  # YAML 1.1 reads a bare `no` as False
        return "no" if value is False else value

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker(cls, value):  # `report_to: wandb` as transformers takes it; `none` for none
        return [] if value in (None, "none") else [value] if isinstance(value, str) else value

    @field_validator("bf16", mode="before")
    @classmethod
    def _bf16_choice(cls, value):  # one clear message instead of one per member of the union
        if isinstance(value, str) and value.strip().lower() in ("auto", "true", "false"):
            value = {"auto": "auto", "true": True, "false": False}[value.strip().lower()]
        if value == "auto" or isinstance(value, bool):
            return value
        raise ValueError("expected true, false or auto")


class EvalConfig(Section):
    probes: list[str] = Field(default_factory=list, description="Inputs shown before and after tuning.")
    max_new_tokens: int = Field(48, gt=0, description="Generation length for probes and samples.")
    num_samples: int = Field(4, ge=0, description="Held-out examples whose generations are shown.")
    max_examples: int | None = Field(None, description="Cap on eval examples (seeded), None for all.")
    generation_metrics: list[Literal["rouge", "bleu", "chrf", "exact_match"]] = Field(
        default_factory=list,
        description="causal_lm / sft: generate for held-out examples and score against the references: "
        "'rouge' (rouge1, rouge2, rougeL F-measure, 0-1), 'bleu' and 'chrf' (sacrebleu, 0-100), 'exact_match' (0-1).",
    )
    max_generate: int | None = Field(
        100, gt=0, description="How many held-out examples (the first N of the seeded eval set) are generated "
        "for generation_metrics, greedy, eval.max_new_tokens each; None for all.",
    )
    forgetting: list[str] = Field(
        default_factory=list,
        description="causal_lm / sft: multiple-choice benchmarks scored by log-likelihood on the base model before "
        "tuning and the tuned model after (what tuning cost elsewhere): boolq, openbookqa, commonsenseqa, mmlu, or a "
        "file/dataset with question, choices, answer (or MMLU-style question, A, B, C, D, answer).",
    )
    forgetting_limit: int | None = Field(
        200, gt=0, description="Questions per forgetting benchmark (the same seeded sample for base and tuned); None for all."
    )
    forgetting_shots: int = Field(0, ge=0, description="Solved examples of the same task before each forgetting question (k-shot).")


class ReportConfig(Section):
    html: bool = True
    plots: bool = True


class CompareVariant(Section):
    """One entry of `compare:`: a method variant run on the same data, seed and budget as the others."""

    name: str = Field(description="Label, and the run folder's name under the comparison folder.")
    method: dict[str, Any] = Field(description="A method block, e.g. {name: lora, r: 16}.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Dotted keys for this variant only, e.g. {train.learning_rate: 1.0e-3}."
    )


def _tagged_union(registry: dict) -> Any:
    classes = tuple(entry.config_cls for entry in registry.values())
    return Annotated[Union[classes], Field(discriminator="name")]  # noqa: UP007


class RunConfig(Section):
    model: ModelConfig
    data: DataConfig
    method: _tagged_union(methods())  # type: ignore[valid-type]
    objective: _tagged_union(objectives())  # type: ignore[valid-type]
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    compare: list[CompareVariant] = Field(
        default_factory=list, description="Method variants that `tunesmith compare` runs side by side."
    )
    sweep: SweepConfig | None = Field(None, description="What `tunesmith sweep` searches (tunesmith.experiments.sweep).")

    @model_validator(mode="before")
    @classmethod
    def _old_column_keys(cls, raw: Any) -> Any:
        """data.text_column etc. (before data.columns) still load, into data.columns (objectives.roles)."""
        data = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(data, dict) or not any(key in data for key in OLD_COLUMN_KEYS):
            return raw
        name = raw["objective"].get("name") if isinstance(raw.get("objective"), dict) else None
        name = name if isinstance(name, str) else None
        return {**raw, "data": move_old_column_keys(data, name, objectives()[name].roles if name in objectives() else None)}

    @model_validator(mode="after")
    def _objective_roles(self) -> RunConfig:
        self.data._roles = objectives()[self.objective.name].roles  # so that data.column(role) knows optional roles
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def refresh_schema() -> None:
    """Rebuild RunConfig's method and objective unions after a registry gained an entry (objectives.registry.register)."""
    RunConfig.model_fields["method"].annotation = _tagged_union(methods())
    RunConfig.model_fields["objective"].annotation = _tagged_union(objectives())
    RunConfig.model_rebuild(force=True)


# ---------------------------------------------------------------------------------------------
# Loading: YAML + overrides -> RunConfig, with every problem in one error.


def load_config(
    config: str | Path | dict | RunConfig, overrides: dict[str, Any] | list[str] | None = None
) -> RunConfig:
    """Read and validate a config (path, dict or RunConfig) plus overrides. Raises one TunesmithError."""
    if isinstance(config, RunConfig):
        if not overrides:
            return config
        config = config.model_dump(mode="json")
    source = None
    if isinstance(config, (str, Path)):
        source = str(config)
        raw = read_yaml(config)
    else:
        raw = dict(config)
    switched = switches(raw, overrides)
    raw = apply_overrides(raw, overrides)
    for section, (old, new) in switched.items():
        _drop_options_of(raw, section, old, new, overrides)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as err:
        raise TunesmithError(describe_errors(err, raw, RunConfig), source=source) from None
    problems = cross_checks(cfg, load_config)
    if problems:
        raise TunesmithError(problems, source=source)
    return cfg


def _drop_options_of(raw: dict, section: str, old: str, new: str, overrides) -> None:
    """`method.name=full` on a LoRA config: the LoRA options the config gave do not apply to the new method; drop
    them (not the ones the overrides set) and say so in one line."""
    import logging

    from tunesmith.config_io import override_items

    registry = methods() if section == "method" else objectives()
    if new not in registry:
        return  # the unknown name gets its own error from validation
    known = set(registry[new].config_cls.model_fields)
    given = {parts[1] for parts, _ in override_items(overrides) if parts[0] == section and len(parts) > 1}
    dropped = [k for k in raw[section] if k not in known and k not in given]
    for key in dropped:
        del raw[section][key]
    if dropped:
        logging.getLogger("tunesmith").warning("%s.name: %s replaces %s; dropped the %s options %s, which %s does not have",
                                               section, new, old, old, ", ".join(dropped), new)


def with_max_new_tokens(cfg: RunConfig, max_new_tokens: int | None) -> RunConfig:
    """The config with eval.max_new_tokens replaced (a generation length asked for at the command line)."""
    if not max_new_tokens:
        return cfg
    return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_new_tokens": max_new_tokens})})
