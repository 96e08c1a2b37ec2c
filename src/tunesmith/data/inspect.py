"""What the model will see: formatted examples, their tokens, which tokens carry loss, length statistics."""

from __future__ import annotations

import numpy as np

from tunesmith.data.tokenize import IGNORE


def length_stats(features, max_length: int) -> dict:
    """Token lengths before truncation, and how many examples truncation cuts."""
    lengths = np.array(features["full_length"][:]) if len(features) else np.array([0])
    return {
        "examples": len(features),
        "min": int(lengths.min()),
        "mean": round(float(lengths.mean()), 1),
        "p50": int(np.percentile(lengths, 50)),
        "p95": int(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
        "max_length": max_length,
        "truncated": int((lengths > max_length).sum()),
    }


def describe_example(features, index: int, tokenizer, label_names: list[str] | None = None) -> dict:
    """One tokenized example: its text, each token with whether it carries loss, and its label."""
    ex = features[index]
    ids = ex["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    labels = ex["labels"]
    if isinstance(labels, int):  # classification: one label for the whole sequence
        return {"text": tokenizer.decode(ids), "tokens": [(t, False) for t in tokens],
                "label": label_names[labels] if label_names else labels, "length": len(ids),
                "full_length": ex["full_length"]}
    return {"text": tokenizer.decode(ids), "tokens": [(t, lab != IGNORE) for t, lab in zip(tokens, labels)],
            "loss_tokens": sum(lab != IGNORE for lab in labels), "length": len(ids), "full_length": ex["full_length"]}
