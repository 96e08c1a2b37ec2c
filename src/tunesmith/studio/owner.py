"""What the owner page shows, read from the database: progress per rater, agreement between raters, win rates with
Wilson intervals and Bradley-Terry strengths from the side-by-side answers, rating distributions per model from the
single-sided ones, the latest comments, and generation progress; plus the two plots as embedded PNGs.

Agreement compares labels about the responses, not the screen: a side-by-side answer counts as "response_a
better", "response_b better", tie or both bad whichever side each rater saw it on. Stars are compared both exactly
(Cohen's kappa) and as ordered labels (quadratic-weighted kappa).
"""

from __future__ import annotations

import base64
import io
import math

from tunesmith.studio import stats
from tunesmith.studio.generate import status as generation_status
from tunesmith.studio.queue import SCALES
from tunesmith.studio.study import settings, summary

BT_PRIOR = 0.5  # virtual wins each way per pair of models that met: a clean sweep keeps a finite strength

PAIRS = """
SELECT a.task_id, r.name AS rater, a.verdict, a.left_response, t.response_a, lm.name AS left_model, rm.name AS right_model
FROM answers a JOIN tasks t ON t.id = a.task_id JOIN raters r ON r.id = a.rater_id
JOIN responses lr ON lr.id = a.left_response JOIN responses rr ON rr.id = a.right_response
JOIN models lm ON lm.id = lr.model_id JOIN models rm ON rm.id = rr.model_id WHERE t.kind = 'pair'"""

SINGLES = """
SELECT a.task_id, r.name AS rater, a.rating, m.name AS model
FROM answers a JOIN tasks t ON t.id = a.task_id JOIN raters r ON r.id = a.rater_id
JOIN responses x ON x.id = t.response_a JOIN models m ON m.id = x.model_id WHERE t.kind = 'single'"""


def _verdict_about_responses(row) -> str:
    """'a' / 'b' (task.response_a / response_b better), 'tie' or 'both_bad', whatever side each was shown on."""
    if row["verdict"] in ("tie", "both_bad"):
        return row["verdict"]
    left_is_a = row["left_response"] == row["response_a"]
    return "a" if (row["verdict"] == "left") == left_is_a else "b"


def owner_data(conn) -> dict:
    s = settings(conn)
    counts = summary(conn)
    total = counts["single_tasks"] + counts["pair_tasks"]
    raters = [dict(r) | {"total": total} for r in conn.execute(
        "SELECT r.name, count(a.id) AS answered, max(a.created_at) AS last FROM raters r "
        "LEFT JOIN answers a ON a.rater_id = r.id GROUP BY r.id ORDER BY r.name").fetchall()]
    pairs = conn.execute(PAIRS).fetchall()
    outcomes = [(p["left_model"], p["right_model"], {"left": "a", "right": "b"}.get(p["verdict"], p["verdict"]))
                for p in pairs]
    singles = conn.execute(SINGLES).fetchall()
    scale = SCALES.get(s.rate, ())
    by_model: dict[str, list[int]] = {}
    for row in singles:
        by_model.setdefault(row["model"], []).append(row["rating"])
    pair_labels: dict[int, dict] = {}
    for p in pairs:
        pair_labels.setdefault(p["task_id"], {})[p["rater"]] = _verdict_about_responses(p)
    single_labels: dict[int, dict] = {}
    for row in singles:
        single_labels.setdefault(row["task_id"], {})[row["rater"]] = row["rating"]
    agreement = {"pairs": stats.agreement(pair_labels, ["a", "b", "tie", "both_bad"])}
    if scale:
        agreement["ratings"] = stats.agreement(single_labels, scale)
        if s.rate == "stars":
            agreement["ratings_weighted"] = stats.agreement(single_labels, scale, weights="quadratic")
    bt = stats.bradley_terry(outcomes, prior=BT_PRIOR)
    comments = [dict(r) for r in conn.execute(
        "SELECT r.name AS rater, a.task_id, a.comment, a.created_at FROM answers a JOIN raters r ON r.id = a.rater_id "
        "WHERE a.comment != '' ORDER BY a.id DESC LIMIT 20").fetchall()]
    return {"settings": s, "summary": counts, "raters": raters, "generation": generation_status(conn),
            "win_rates": stats.win_rates(outcomes), "bradley_terry": bt, "bt_prior": BT_PRIOR,
            "ratings": stats.distribution(by_model, scale) if scale else {}, "scale": scale,
            "agreement": agreement, "comments": comments}


def plots(data: dict) -> list[tuple[str, str]]:
    """(title, base64 PNG) for the win rates and the rating distributions that have data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    wins = data["win_rates"]
    if wins:
        names = list(wins)
        fig, ax = plt.subplots(figsize=(6, 0.6 * len(names) + 1.4))
        rates = [wins[n]["rate"] for n in names]
        errors = [[r - wins[n]["low"] for n, r in zip(names, rates)], [wins[n]["high"] - r for n, r in zip(names, rates)]]
        ax.barh(names, rates, xerr=errors, color="#4c78a8", capsize=4)
        ax.axvline(0.5, color="#888", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("win rate (ties and both-bad count half), 95% Wilson interval")
        out.append(("win rates", _png(fig, plt)))
    ratings = data["ratings"]
    if ratings and any(r["n"] for r in ratings.values()):
        names, scale = list(ratings), data["scale"]
        fig, ax = plt.subplots(figsize=(6, 0.6 * len(names) + 1.4))
        left = [0.0] * len(names)
        colours = plt.get_cmap("RdYlGn")([i / max(1, len(scale) - 1) for i in range(len(scale))])
        for value, colour in zip(scale, colours):
            share = [ratings[n]["counts"][value] / ratings[n]["n"] if ratings[n]["n"] else 0 for n in names]
            label = {0: "thumbs down", 1: "thumbs up"}[value] if tuple(scale) == (0, 1) else f"{value} stars"
            ax.barh(names, share, left=left, color=colour, label=label)
            left = [a + b for a, b in zip(left, share)]
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of ratings")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(scale), fontsize=8, frameon=False)
        out.append(("rating distributions", _png(fig, plt)))
    return out


def _png(fig, plt) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def fmt(value, digits: int = 3) -> str:
    """A number for a table: NaN and infinities as 'n/a' (kappa undefined, a model that never won)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def json_ready(data: dict) -> dict:
    """owner_data as JSON can carry it (NaN and infinities as null, settings as a dict, tuples as lists)."""
    from dataclasses import asdict

    def clean(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean({**data, "settings": asdict(data["settings"])})
