"""Metrics that compare generated text with references: ROUGE, BLEU, chrF and exact match. Pure functions.

A reference is a string or a list of strings (several acceptable answers). With several references, ROUGE takes
the best-matching one per example, BLEU and chrF get one reference stream per position (the shorter lists padded
with None, which sacrebleu skips), and exact match counts a hit on any of them.

Scales follow the libraries: ROUGE F-measures and exact match in [0, 1], BLEU and chrF in [0, 100].
"""

from __future__ import annotations

from typing import Callable, Sequence

References = Sequence[str | Sequence[str]]


def as_lists(references: References) -> list[list[str]]:
    """Every reference as a non-empty list of strings ('a' -> ['a'], [] -> [''])."""
    out = []
    for ref in references:
        refs = [ref] if isinstance(ref, str) else [str(r) for r in ref]
        out.append(refs or [""])
    return out


def rouge(predictions: list[str], references: list[list[str]]) -> dict:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measure (Porter stemming), best reference per example."""
    from rouge_score import rouge_scorer

    types = ["rouge1", "rouge2", "rougeL"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=True)
    totals = dict.fromkeys(types, 0.0)
    for pred, refs in zip(predictions, references):
        scores = scorer.score_multi(refs, pred)
        for t in types:
            totals[t] += scores[t].fmeasure
    return {t: totals[t] / len(predictions) for t in types}


def _streams(references: list[list[str]]) -> list[list[str | None]]:
    """Per-example reference lists -> sacrebleu's reference streams, padded with None."""
    width = max(len(refs) for refs in references)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]


def bleu(predictions: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU (sacrebleu defaults: 13a tokenization, 4-grams, exponential smoothing), 0-100."""
    import sacrebleu

    return {"bleu": float(sacrebleu.corpus_bleu(predictions, _streams(references)).score)}


def chrf(predictions: list[str], references: list[list[str]]) -> dict:
    """Corpus chrF (character 6-grams, beta 2), 0-100."""
    import sacrebleu

    return {"chrf": float(sacrebleu.corpus_chrf(predictions, _streams(references)).score)}


def _normalize(text: str) -> str:
    return text.strip().casefold()


def exact_match(predictions: list[str], references: list[list[str]]) -> dict:
    """Share of predictions equal to any reference after stripping whitespace and case-folding."""
    hits = sum(any(_normalize(p) == _normalize(r) for r in refs) for p, refs in zip(predictions, references))
    return {"exact_match": hits / len(predictions)}


METRICS: dict[str, Callable[[list[str], list[list[str]]], dict]] = {
    "rouge": rouge, "bleu": bleu, "chrf": chrf, "exact_match": exact_match,
}
ALIASES = {"rouge1": "rouge", "rouge2": "rouge", "rougeL": "rouge"}  # one ROUGE pass gives all three


def generation_metrics(predictions: Sequence[str], references: References, names: Sequence[str]) -> dict:
    """The named metrics of predictions against references: names from METRICS ('rouge' gives rouge1, rouge2,
    rougeL) or a single ROUGE variant. Empty inputs give {}."""
    unknown = [n for n in names if n not in METRICS and n not in ALIASES]
    if unknown:
        raise ValueError(f"unknown generation metric(s) {unknown}; expected some of {sorted(METRICS) + sorted(ALIASES)}")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; expected one reference (or list) per prediction")
    if not predictions or not names:
        return {}
    predictions, refs = [str(p) for p in predictions], as_lists(references)
    out: dict = {}
    for family in dict.fromkeys(ALIASES.get(n, n) for n in names):
        out.update(METRICS[family](predictions, refs))
    return {k: v for k, v in out.items() if k not in ALIASES or "rouge" in names or k in names}
