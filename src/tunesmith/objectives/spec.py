"""What an objective is: how it reads data, tokenizes it, trains, evaluates and probes. One module each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Objective:
    name: str
    config_cls: type
    model_kind: str  # "classify" (sequence classification model) or "causal_lm"
    metric_names: frozenset  # the metrics its eval.json holds
    best_metric: str  # what load_best_model_at_end watches unless train.metric_for_best_model says
    check: Callable[..., list[str]]  # (cfg, DatasetDict, tokenizer) -> problems with the data, each naming the field
    setup: Callable[..., dict]  # (cfg, DatasetDict) -> task facts (label names...), stored in manifest.json
    tokenize: Callable[..., Any]  # (Dataset, tokenizer, cfg, task) -> features
    collator: Callable[..., Any]  # (tokenizer) -> data collator
    evaluate: Callable[..., dict]  # (model, tokenizer, raw eval, features, cfg, task) -> metrics (+ samples)
    probe: Callable[..., list[str]]  # (model, tokenizer, texts, cfg, task, **generation options) -> readable outputs
    model_kwargs: Callable[[dict], dict] = field(default=lambda task: {})
    compute_metrics: Callable[[dict], Any] | None = None  # (task) -> Trainer compute_metrics
    summary: str = ""
    # The seams for objectives that train differently (TRL's trainers), each with today's behaviour as default:
    # (model, tokenizer, prepared, cfg, run_dir, callbacks) -> an object with .train(), .state and .model, such as a
    # transformers.Trainer or a TRL trainer. `prepared.data` holds the raw splits, `prepared.features` the tokenized
    # ones (tokenized on first use), so a trainer that tokenizes for itself can take the raw text.
    build_trainer: Callable[..., Any] = field(default=lambda *args: _default_trainer(*args))
    # The TrainingArguments class its trainer takes (a TRL objective: its config class, e.g. trl.RewardConfig);
    # `train` is turned into it, and train.extra is checked against its fields. Imported only when needed.
    args_class: Callable[[], type] = field(default=lambda: _training_arguments())
    # Which way each of its metrics is better ("max" or "min"); read by best-model selection, reports, compare and
    # the CLI through eval.json. Metrics it does not list follow tunesmith.eval.metrics.DIRECTIONS.
    metric_directions: dict[str, str] = field(default_factory=dict)
    # What a finished run of this objective answers: predict(model, tokenizer, texts, cfg, task) -> one result per
    # text (labels and probabilities, generations); score(model, tokenizer, rows, cfg, task) -> one float per row
    # (a reward model's score). None: the objective answers no such question, and Run says so.
    predict: Callable[..., list] | None = None
    score: Callable[..., list[float]] | None = None
    # Splits `train` tokenizes as soon as the data is read, before the model loads and the base is measured: its
    # trainer reads them tokenized anyway, and a row that cannot be tokenized (sft's conversation the chat template
    # cannot split into turns) then fails the run at once rather than after the base model's evaluation.
    tokenize_first: tuple = ()
    # The columns it reads, as tunesmith.data.roles.Role declarations (text, label, prompt, response...);
    # data.columns maps each role to a column, which defaults to the role's name (an optional role's to none).
    roles: tuple = ()
    # (cfg) -> problems with the config that only this objective knows of (unknown roles in data.columns, options it
    # does not support), each naming the key; config_checks.cross_checks collects them the way it collects Method.check's.
    check_config: Callable[[Any], list[str]] = field(default=lambda cfg: [])
    # Whether its trainer splits batches across processes (a transformers or TRL Trainer does), so that
    # `train --nproc N` trains one model on N processes; an objective with its own training loop says False.
    distributed: bool = True

    def direction(self, metric: str) -> str:
        """'max' or 'min': which way `metric` (with or without the eval_ prefix) is better for this objective."""
        from tunesmith.eval.metrics import direction

        return direction(metric, self.metric_directions)


def _default_trainer(*args):
    from tunesmith.objectives.trainer import build_trainer

    return build_trainer(*args)


def _training_arguments() -> type:
    from transformers import TrainingArguments

    return TrainingArguments
