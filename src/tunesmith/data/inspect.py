"""What the model will see: formatted examples, their tokens, which tokens carry loss, length statistics."""

from __future__ import annotations

import numpy as np

from tunesmith.data.tokenize import IGNORE
from tunesmith.data.turns import ROLES


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
        **(conversation_stats(features) if "turns" in features.column_names else {}),
    }


def conversation_stats(features) -> dict:
    """Conversations (sft on chat data): how many, their messages and trained assistant turns, the tokens that carry
    loss, and how many conversations truncation cut, with which assistant turns it cut (turn number -> count)."""
    cut: dict[int, int] = {}
    for turns in features["turns_cut"][:]:
        for turn in turns:
            cut[turn] = cut.get(turn, 0) + 1
    return {
        "conversations": len(features),
        "messages": int(sum(features["messages"][:])),
        "turns": int(sum(features["turns"][:])),
        "trained_tokens": int(sum(sum(t != IGNORE for t in labels) for labels in features["labels"][:])),
        "truncated_conversations": int(sum(bool(t) for t in features["turns_cut"][:])),
        "turns_cut": dict(sorted(cut.items())),
    }


def token_roles(spans: list[list[int]], length: int) -> list[str]:
    """Each token's role from [first token, role code] spans (tokens before the first span: 'other')."""
    roles = ["other"] * length
    for k, (start, code) in enumerate(spans):
        end = min(spans[k + 1][0] if k + 1 < len(spans) else length, length)
        roles[start:end] = [ROLES[code]] * max(0, end - start)
    return roles


def describe_example(features, index: int, tokenizer, label_names: list[str] | None = None) -> dict:
    """One tokenized example: its text, each token with whether it carries loss, and its label; a conversation also
    each token's role (system, user, assistant, tool; `roles`), its messages and trained turns, and the turns cut."""
    ex = features[index]
    if "chosen_ids" in ex:  # a reward model's pair: the chosen text, the rejected one as its label
        tokens = tokenizer.convert_ids_to_tokens(ex["chosen_ids"])
        return {"text": tokenizer.decode(ex["chosen_ids"]), "tokens": [(t, False) for t in tokens],
                "label": f"chosen over: {tokenizer.decode(ex['rejected_ids'])}", "length": len(ex["chosen_ids"]),
                "full_length": ex["full_length"]}
    ids = ex["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    labels = ex["labels"]
    if isinstance(labels, int):  # classification: one label for the whole sequence
        return {"text": tokenizer.decode(ids), "tokens": [(t, False) for t in tokens],
                "label": label_names[labels] if label_names else labels, "length": len(ids),
                "full_length": ex["full_length"]}
    out = {"text": tokenizer.decode(ids), "tokens": [(t, lab != IGNORE) for t, lab in zip(tokens, labels)],
           "segments": segments(ids, [lab != IGNORE for lab in labels], tokenizer),
           "loss_tokens": sum(lab != IGNORE for lab in labels), "length": len(ids), "full_length": ex["full_length"]}
    if ex.get("spans") is not None:  # a conversation: each token's role, its turns and what truncation cut
        out.update(roles=token_roles(ex["spans"], len(ids)), messages=ex["messages"], turns=ex["turns"],
                   turns_cut=ex["turns_cut"])
    return out


def segments(ids: list[int], trained: list[bool], tokenizer) -> list[tuple[str, bool]]:
    """The text in runs of tokens that do or do not carry loss: [(text, carries loss), ...], each run decoded."""
    out, start = [], 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or trained[k] != trained[start]:
            out.append((tokenizer.decode(ids[start:k]), trained[start]))
            start = k
    return out
