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
    probe: Callable[..., list[str]]  # (model, tokenizer, texts, cfg, task) -> readable outputs
    model_kwargs: Callable[[dict], dict] = field(default=lambda task: {})
    compute_metrics: Callable[[dict], Any] | None = None  # (task) -> Trainer compute_metrics
    summary: str = ""
