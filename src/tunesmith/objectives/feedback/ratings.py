"""The values of the reward objective's ratings column: the rating scale (numbers, or thumbs up/down), the values that
can never train (missing, NaN, infinite, beyond the largest 32-bit float) and those outside objective.rating_range,
each named with its source rows; and for `validate` the distribution of the ratings and the values far outside the rest.

A value far outside the rest lies more than FAR x the spread beyond the quartiles of the training ratings (Tukey's
far-out fences), the spread being the interquartile range, or half the range of the middle 90 % where that is wider
(a scale that many rows rate at one end; taken without a lowest or highest value no other row shares); no value is
flagged when nearly all rows share one. Such values are flagged, not refused: a declared objective.rating_range
decides (values outside it are errors, and nothing inside is flagged).
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger("tunesmith")
FLOAT32_MAX = 3.4028234663852886e38  # training computes in 32-bit floats at most: a larger number overflows
FAR = 3.0  # Tukey's far-out fences
FEW_VALUES = 12  # up to this many distinct values, validate counts the rows of each
# Thumbs-up words recognised without objective.positive (compared lowercased); two numbers: the higher is up.
POSITIVE_WORDS = ("true", "yes", "up", "good", "positive", "pos", "like", "liked", "thumbs_up", "thumbs up")
WHY = {"empty": "empty (null or missing)", "NaN": "NaN (not a number: no rating)", "infinite": "infinite",
       "too large": f"too large (beyond +-{FLOAT32_MAX:.2g}, the largest 32-bit float, which training computes in)"}


def as_number(value) -> float | None:
    """A rating or margin as a float (numbers, and strings that read as numbers); None if it is not one, or not a
    finite one that training can compute with (see fault)."""
    number = _float(value)
    return None if number is None or fault(number) else number


def fault(value) -> str | None:
    """Why a value can never be a rating ('empty', 'NaN', 'infinite', 'too large'), or None. Text that is no number is
    not a fault here: it may be a thumbs value."""
    if value is None:
        return "empty"
    number = _float(value)
    if number is None:
        return None
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "infinite"
    return "too large" if abs(number) > FLOAT32_MAX else None


def _float(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def value_key(value) -> str:
    """One spelling per rating value, so that 1, 1.0 and '1' agree and 'Fresh' matches 'fresh'."""
    if isinstance(value, bool):
        return str(value).lower()
    number = as_number(value)
    if number is not None:
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value).strip().lower()


def positions(idx: list[int]) -> str:
    """Rows named by their position (from 1) in the list of values, when no source rows are known."""
    shown = ", ".join(str(i + 1) for i in idx[:5]) + (", ..." if len(idx) > 5 else "")
    return f"row {shown}" if len(idx) == 1 else f"rows {shown}"


# ---------------------------------------------------------------------------------------------
# Problems: each names the column, the values and their rows (rows(positions) -> 'source rows 3, 8')


def faults(values: list, where: str, column: str, rows=positions) -> list[str]:
    """One problem naming every value that can never train, by kind, with its rows."""
    found: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        kind = fault(v)
        if kind:
            found.setdefault(kind, []).append(i)
    if not found:
        return []
    parts = [f"{WHY[kind]} on {rows(idx)} ({_short(values[idx[0]])})" for kind, idx in found.items()]
    return [f"{where}: column {column!r} (rating) must hold a finite number (or one of two thumbs values) on every row, "
            f"and it is {'; '.join(parts)}; give those rows a rating, or remove them"]


def not_numbers(values: list, where: str, column: str, rows=positions, role: str = "rating",
                fix: str = "fix the data, or for thumbs up/down keep two values") -> list[str]:
    bad = [i for i, v in enumerate(values) if as_number(v) is None]
    if not bad:
        return []
    return [f"{where}: column {column!r} ({role}) must hold numbers, and {len(bad)} row{'s' if len(bad) > 1 else ''}, "
            f"the first {_short(values[bad[0]])}, hold no finite one ({rows(bad)}); {fix}"]


def outside_range(values: list, span, where: str, column: str, rows=positions) -> list[str]:
    """objective.rating_range: the rows whose number lies outside it."""
    lo, hi = span
    numbers = [as_number(v) for v in values]
    out = [i for i, n in enumerate(numbers) if n is not None and not lo <= n <= hi]
    if not out:
        return []
    return [f"{where}: column {column!r} (rating) holds values outside objective.rating_range [{_fmt(lo)}, {_fmt(hi)}]: "
            f"{_by_value(numbers, out, rows)}; fix or remove those rows, or widen objective.rating_range"]


def unknown_thumbs(values: list, scale: dict, where: str, column: str, rows=positions) -> list[str]:
    known = {scale["positive"], scale["negative"]}
    bad = [i for i, v in enumerate(values) if value_key(v) not in known]
    if not bad:
        return []
    return [f"{where}: column {column!r} (rating) holds values other than the training data's thumbs {sorted(known)} on "
            f"{rows(bad)}, the first {_short(values[bad[0]])}; fix the data"]


def check_values(cfg, values: list, scale: dict, where: str, column: str, rows=positions) -> list[str]:
    """Ratings of another split (or other data) against the training data's scale."""
    if scale.get("rating") == "thumbs":
        return faults(values, where, column, rows) or unknown_thumbs(values, scale, where, column, rows)
    span = cfg.objective.rating_range
    return (faults(values, where, column, rows) or not_numbers(values, where, column, rows)
            or (outside_range(values, span, where, column, rows) if span else []))


def _short(value) -> str:
    from tunesmith.data.clean import short_value

    return "null" if value is None else "NaN" if isinstance(value, float) and math.isnan(value) else short_value(value)


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e15 else f"{number:.4g}"


def _by_value(numbers: list, idx: list[int], rows) -> str:
    """'99 on source row 21; -5 on source rows 42, 50': the rows of each value (the six most frequent values)."""
    groups: dict[float, list[int]] = {}
    for i in idx:
        groups.setdefault(numbers[i], []).append(i)
    shown = sorted(groups.items(), key=lambda item: -len(item[1]))
    return "; ".join(f"{_fmt(n)} on {rows(at)}" for n, at in shown[:6]) + ("; ..." if len(shown) > 6 else "")


# ---------------------------------------------------------------------------------------------
# The rating scale: numbers (regression on the normalized rating) or thumbs (two values, one of them up)


def rating_scale(cfg, values: list, where: str, rows=positions) -> tuple[dict, list[str]]:
    """The task facts of a ratings column: {"rating": "numeric", "mean", "std"} (the training ratings' normalization)
    or {"rating": "thumbs", "positive", "negative"}; and the problems that stop either. A declared
    objective.rating_range means numbers, however few distinct values the data has."""
    o = cfg.objective
    column = cfg.data.column("rating")
    problems = faults(values, where, column, rows)
    if problems:
        return {}, problems
    distinct = sorted({value_key(v) for v in values})
    if len(distinct) < 2:
        return {}, [f"{where}: column {column!r} (rating) has one value, {distinct[0] if distinct else 'none'!r}, on every row; "
                    "a reward model learns from differences: the ratings must differ"]
    numbers = [as_number(v) for v in values]
    kind = o.rating_kind if o.rating_kind != "auto" else ("thumbs" if len(distinct) == 2 and not o.rating_range else "numeric")
    if kind == "numeric":
        problems = not_numbers(values, where, column, rows)
        if problems:
            return {}, problems
        if o.rating_range:
            problems = outside_range(values, o.rating_range, where, column, rows)
        mean = sum(numbers) / len(numbers)
        std = math.sqrt(sum((n - mean) ** 2 for n in numbers) / len(numbers))
        return {"rating": "numeric", "mean": mean, "std": std}, problems
    if len(distinct) != 2:
        return {}, [f"objective.rating_kind: 'thumbs' needs two distinct ratings, and column {column!r} has "
                    f"{len(distinct)} ({distinct[:6]}); use rating_kind: numeric"]
    positive = _positive(o.positive, distinct, numbers)
    if positive is None:
        return {}, [f"objective.positive: column {column!r} holds the thumbs values {distinct}; say which one is thumbs up, "
                    f"e.g. objective: {{name: reward, positive: {distinct[0]}}}"]
    if positive not in distinct:
        return {}, [f"objective.positive: {o.positive!r} is not a value of column {column!r}, which holds {distinct}"]
    negative = next(k for k in distinct if k != positive)
    return {"rating": "thumbs", "positive": positive, "negative": negative}, []


def _positive(option, distinct: list[str], numbers: list) -> str | None:
    if option is not None:
        return value_key(option)
    found = [k for k in distinct if k in POSITIVE_WORDS]
    if len(found) == 1:
        return found[0]
    if all(n is not None for n in numbers):
        return max(distinct, key=float)
    return None


# ---------------------------------------------------------------------------------------------
# What validate shows: the distribution, and values far outside the rest


def fences(numbers: list[float]) -> tuple[float, float] | None:
    """The far-out fences of the training ratings (module docstring); None when nearly all rows share one value."""
    import numpy as np

    values = np.sort(np.asarray(numbers, dtype=float))
    q1, q3 = np.quantile(values, [0.25, 0.75])
    # the middle 90 % without a lowest or highest value that no other row shares: on a few rows the 5 % quantiles
    # reach the very values in question (16 ratings of 1-5 with one 99 and one -5: the -5 hid inside fences widened
    # by the 99), while a scale's end that several rows rate stays in
    start = 1 if len(values) >= 8 and values[0] != values[1] else 0
    stop = len(values) - 1 if len(values) >= 8 and values[-1] != values[-2] else len(values)
    q05, q95 = np.quantile(values[start:stop], [0.05, 0.95])
    spread = max(q3 - q1, (q95 - q05) / 2)
    return None if spread == 0 else (float(q1 - FAR * spread), float(q3 + FAR * spread))


def distribution(numbers: list[float]) -> str:
    """min, quartiles, max and mean, and the rows of each value when there are few distinct values."""
    import numpy as np

    a = np.asarray(numbers, dtype=float)
    q1, q2, q3 = np.quantile(a, [0.25, 0.5, 0.75])
    text = (f"min {_fmt(a.min())}, p25 {_fmt(q1)}, median {_fmt(q2)}, p75 {_fmt(q3)}, max {_fmt(a.max())}, "
            f"mean {a.mean():.4g}")
    values, counts = np.unique(a, return_counts=True)
    if len(values) <= FEW_VALUES:
        text += "; rows per value: " + ", ".join(f"{_fmt(v)}: {c:,}" for v, c in zip(values, counts))
    return text


def report(cfg, splits: dict[str, list], scale: dict, column: str, rows: dict) -> None:
    """Log what validate shows of the ratings: per split, the rows of thumbs up and down, or the distribution of the
    numbers and (no objective.rating_range declared) the values far outside the training ratings, with their rows.
    splits: {split: values}; rows: {split: positions -> text}."""
    if scale["rating"] == "thumbs":
        for split, values in splits.items():
            up = sum(value_key(v) == scale["positive"] for v in values)
            log.info("ratings in column %r (%s split): %s (thumbs up) on %s rows, %s on %s", column, split,
                     scale["positive"], f"{up:,}", scale["negative"], f"{len(values) - up:,}")
        return
    numbers = {split: [as_number(v) for v in values] for split, values in splits.items()}
    for split, values in numbers.items():
        log.info("ratings in column %r (%s split, %s rows): %s", column, split, f"{len(values):,}", distribution(values))
    span = fences(numbers["train"])
    if cfg.objective.rating_range is not None or span is None:
        return
    lo, hi = span
    rest = [n for n in numbers["train"] if lo <= n <= hi]
    scale_text = f"[{_fmt(min(rest))}, {_fmt(max(rest))}]"
    for split, values in numbers.items():
        far = [i for i, n in enumerate(values) if not lo <= n <= hi]
        if far:
            log.warning("%s (%s split): column %r (rating) holds values far outside the other ratings %s (beyond %s "
                        "and %s, %g x the spread past the quartiles): %s. If the scale is %s, set objective.rating_range: "
                        "%s to refuse such values; else fix or remove those rows (or declare the wider range they need)",
                        cfg.data.source, split, column, scale_text, _fmt(lo), _fmt(hi), FAR,
                        _by_value(values, far, rows[split]), scale_text, scale_text)
