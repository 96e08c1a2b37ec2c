"""The owner page's statistics, as plain functions of plain data (no database, no numpy needed).

- Agreement between raters on the items two or more of them answered: percent agreement and Cohen's kappa per
  pair of raters, (po - pe) / (1 - pe), where pe is the agreement expected from each rater's own label frequencies;
  weighted kappa (linear or quadratic weights) for ordered labels such as stars; the overall figure is the mean over
  rater pairs weighted by the items each pair shares.
- Win rates per model from side-by-side verdicts: (wins + half of ties and "both bad") / comparisons, with a
  Wilson score interval, which stays inside [0, 1] and behaves at 0 or n successes where the normal one does not.
- Bradley-Terry strengths: P(i beats j) = p_i / (p_i + p_j), fitted by maximum likelihood with Hunter's (2004) MM
  updates p_i <- W_i / sum_j n_ij / (p_i + p_j); a tie is half a win each way. Reported as log-strengths with mean 0,
  so that exp(theta_i - theta_j) is the odds that i beats j. `prior` adds that many virtual wins each way to every
  pair of models that met, which keeps a clean sweep finite.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from itertools import combinations

Z95 = 1.959963984540054


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (successes may be fractional: half-counted ties); (0, 1) at n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # p inside despite rounding


def mean_ci(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high): the normal interval of a mean, mean ± z·s/√n (the sample standard deviation)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, mean - z * sd / math.sqrt(n), mean + z * sd / math.sqrt(n)


def percent_agreement(a: Sequence, b: Sequence) -> float:
    if len(a) != len(b) or not a:
        raise ValueError("percent_agreement needs two equally long, non-empty label lists")
    return sum(x == y for x, y in zip(a, b)) / len(a)


def cohen_kappa(a: Sequence, b: Sequence, categories: Sequence | None = None, weights: str | None = None) -> float:
    """Cohen's kappa of two raters' labels on the same items; NaN when chance agreement is total (both raters used
    one and the same label throughout: kappa is undefined). weights: None, 'linear' or 'quadratic' (then the
    categories are ordered, given or sorted)."""
    if len(a) != len(b) or not a:
        raise ValueError("cohen_kappa needs two equally long, non-empty label lists")
    cats = list(categories) if categories is not None else sorted(set(a) | set(b))
    index = {c: i for i, c in enumerate(cats)}
    k, n = len(cats), len(a)
    if k < 2:
        return math.nan
    if weights is None:
        w = lambda i, j: 0.0 if i == j else 1.0  # noqa: E731
    elif weights in ("linear", "quadratic"):
        power = 1 if weights == "linear" else 2
        w = lambda i, j: (abs(i - j) / (k - 1)) ** power  # noqa: E731
    else:
        raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    ca, cb = Counter(index[x] for x in a), Counter(index[y] for y in b)
    observed = sum(w(index[x], index[y]) for x, y in zip(a, b)) / n
    expected = sum(w(i, j) * ca[i] * cb[j] for i in range(k) for j in range(k)) / (n * n)
    if expected == 0:
        return math.nan
    return 1 - observed / expected


def agreement(labels: dict[Hashable, dict[Hashable, Hashable]], categories: Sequence | None = None,
              weights: str | None = None) -> dict:
    """labels: {item: {rater: label}}. Per pair of raters on the items both answered: items, percent agreement,
    kappa; overall: the item-weighted means (kappa over the pairs where it is defined) and how many items two or
    more raters answered."""
    shared: dict[tuple, list[tuple]] = defaultdict(list)
    for by_rater in labels.values():
        for r1, r2 in combinations(sorted(by_rater, key=str), 2):
            shared[(r1, r2)].append((by_rater[r1], by_rater[r2]))
    pairs = []
    for (r1, r2), both in sorted(shared.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        a, b = [x for x, _ in both], [y for _, y in both]
        pairs.append({"raters": (r1, r2), "items": len(both), "agreement": percent_agreement(a, b),
                      "kappa": cohen_kappa(a, b, categories, weights)})

    def weighted(key):
        usable = [p for p in pairs if not math.isnan(p[key])]
        total = sum(p["items"] for p in usable)
        return sum(p[key] * p["items"] for p in usable) / total if total else math.nan

    return {"pairs": pairs, "items": sum(len(v) >= 2 for v in labels.values()),
            "agreement": weighted("agreement"), "kappa": weighted("kappa")}


def win_rates(outcomes: Sequence[tuple[str, str, str]]) -> dict[str, dict]:
    """outcomes: (model_a, model_b, result) with result 'a', 'b', 'tie' or 'both_bad'; comparisons of a model with
    itself are left out. Per model: wins, losses, ties, both_bad, n, rate and its Wilson interval (low, high)."""
    table: dict[str, Counter] = defaultdict(Counter)
    for a, b, result in outcomes:
        if a == b:
            continue
        if result not in ("a", "b", "tie", "both_bad"):
            raise ValueError(f"result must be 'a', 'b', 'tie' or 'both_bad', got {result!r}")
        for me, mine in ((a, "a"), (b, "b")):
            table[me]["wins" if result == mine else "ties" if result == "tie" else "both_bad" if result == "both_bad"
                      else "losses"] += 1
    out = {}
    for model, c in sorted(table.items()):
        n = c["wins"] + c["losses"] + c["ties"] + c["both_bad"]
        score = c["wins"] + 0.5 * (c["ties"] + c["both_bad"])
        low, high = wilson(score, n)
        out[model] = {"wins": c["wins"], "losses": c["losses"], "ties": c["ties"], "both_bad": c["both_bad"], "n": n,
                      "rate": score / n, "low": low, "high": high}
    return out


def bradley_terry(outcomes: Sequence[tuple[str, str, str]], prior: float = 0.0, iterations: int = 10_000,
                  tol: float = 1e-12) -> dict[str, float]:
    """Log-strengths (mean 0) of the models in `outcomes` (as in `win_rates`; a tie or 'both bad' is half a win
    each way). A model without a single (virtual) win has no finite strength: -inf."""
    wins: dict[tuple[str, str], float] = defaultdict(float)
    models: set[str] = set()
    for a, b, result in outcomes:
        if a == b:
            continue
        models |= {a, b}
        share = {"a": 1.0, "b": 0.0}.get(result, 0.5)
        wins[(a, b)] += share
        wins[(b, a)] += 1 - share
    if prior:
        for a, b in {tuple(sorted(pair)) for pair in wins}:
            wins[(a, b)] += prior
            wins[(b, a)] += prior
    names = sorted(models)
    if not names:
        return {}
    games = {(i, j): wins[(i, j)] + wins[(j, i)] for i in names for j in names if i != j}
    total = {i: sum(wins[(i, j)] for j in names if j != i) for i in names}
    p = {i: 1.0 for i in names}
    for _ in range(iterations):
        new = {}
        for i in names:
            denom = sum(games[(i, j)] / (p[i] + p[j]) for j in names if j != i and games[(i, j)])
            new[i] = total[i] / denom if denom else p[i]
        positive = [v for v in new.values() if v > 0]
        scale = math.exp(sum(math.log(v) for v in positive) / len(positive)) if positive else 1.0
        new = {i: v / scale for i, v in new.items()}
        change = max(abs(new[i] - p[i]) for i in names)
        p = new
        if change < tol:
            break
    logs = {i: math.log(v) if v > 0 else -math.inf for i, v in p.items()}
    finite = [v for v in logs.values() if math.isfinite(v)]
    centre = sum(finite) / len(finite) if finite else 0.0
    return {i: v - centre for i, v in logs.items()}


def distribution(ratings: dict[str, Sequence[int]], scale: Sequence[int]) -> dict[str, dict]:
    """Per model: counts per scale value, n, the mean and its interval (stars), or the thumbs-up share with its
    Wilson interval (a scale of (0, 1))."""
    out = {}
    for model, values in sorted(ratings.items()):
        counts = Counter(values)
        row = {"counts": {v: counts.get(v, 0) for v in scale}, "n": len(values)}
        if tuple(scale) == (0, 1):
            up = counts.get(1, 0)
            low, high = wilson(up, len(values))
            row.update(mean=up / len(values) if values else math.nan, low=low, high=high)
        else:
            row["mean"], row["low"], row["high"] = mean_ci(list(values))
        out[model] = row
    return out
