"""Metrics with scikit-learn, and the loss/perplexity loop shared by causal_lm and sft."""

from __future__ import annotations

import math

import numpy as np

# Which way a metric is better, for every metric tunesmith's objectives report; an objective adds its own in
# Objective.metric_directions, and eval.json records the directions of the metrics a run wrote. "neither" marks a
# metric that describes rather than grades (rl's completion length, the reward's spread): no side of it is better.
DIRECTIONS = {"loss": "min", "eval_loss": "min", "perplexity": "min", "rouge1": "max", "rouge2": "max", "rougeL": "max", "bleu": "max", "chrf": "max",
              "exact_match": "max", "acc": "max", "acc_norm": "max", "reward": "max", "reward_accuracy": "max"}


def direction(metric: str, directions: dict | None = None) -> str:
    """'max', 'min' or 'neither' for `metric` (an eval_ prefix is ignored): `directions` first (an objective's or a
    run's), then DIRECTIONS; a metric nobody lists counts as higher-is-better."""
    for name in (metric, metric.removeprefix("eval_")):
        for table in (directions or {}, DIRECTIONS):
            if name in table:
                return table[name]
    return "max"


def classification_metrics(labels, preds, names: list[str]) -> dict:
    """accuracy, macro precision/recall/F1, and the confusion matrix (rows: true, columns: predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(names)))
    p, r, f1, _ = precision_recall_fscore_support(labels, preds, labels=ids, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "precision": float(p),
        "recall": float(r),
        "f1": float(f1),
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
        "labels": list(names),
    }


def trainer_classification_metrics(names: list[str]):
    """compute_metrics for transformers.Trainer (scalars only)."""

    def compute(eval_pred):
        logits, labels = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        m = classification_metrics(labels, np.argmax(logits, axis=-1), names)
        return {k: v for k, v in m.items() if isinstance(v, float)}

    return compute


def batches(features, batch_size: int, collator):
    for start in range(0, len(features), batch_size):
        yield collator([features[i] for i in range(start, min(start + batch_size, len(features)))])


def lm_loss(model, features, collator, batch_size: int) -> dict:
    """Token-weighted mean loss over every label that is not -100, and its perplexity."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches(features, batch_size, collator):
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits.float()
        logits = logits[:, -labels.size(1):]  # a soft prompt prepends virtual tokens: keep the input positions
        shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
        mask = shift_labels != -100
        loss = torch.nn.functional.cross_entropy(shift_logits[mask], shift_labels[mask], reduction="sum")
        total += loss.item()
        count += int(mask.sum())
    mean = total / max(count, 1)
    return {"eval_loss": mean, "perplexity": math.exp(min(mean, 50)), "eval_tokens": count}
