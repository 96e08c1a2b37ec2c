"""Answers -> training data, in the column names the `reward`, `dpo` and `kto` objectives read by default.

- pairs (reward, dpo): prompt, chosen, rejected; one row per "left better" / "right better" answer (the response
  the rater picked is chosen, whichever side it was shown on). "tie" and "both bad" say neither is preferred, so
  they make no pair and are counted as skipped. `majority=True` gives one row per pair of responses instead: the
  response with more votes is chosen, an equal count (or only ties and both-bad votes) makes no row.
- ratings (reward): prompt, response, rating; one row per single-sided answer: stars 1-5, thumbs 1 (up) / 0 (down).
- kto: prompt, completion, label (true: desirable); from single answers (thumbs up true, down false; stars 4-5
  true, 1-2 false, 3 skipped as neutral) and from side-by-side answers (the picked response true and the other
  false; "both bad": both false; "tie": skipped, since it says nothing about either response alone).

Every format skips rows whose responses are empty, and pairs whose two texts are the same (the objectives refuse
them). Rows also carry model names, the rater and the comment, which the objectives do not read.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.studio.db import open_studio

FORMATS = ("pairs", "ratings", "kto")
COLUMNS = {"pairs": "prompt, chosen, rejected: reward, dpo", "ratings": "prompt, response, rating: reward",
           "kto": "prompt, completion, label: kto"}  # what each format holds and which objectives read it

PAIR_ANSWERS = """
SELECT a.id, a.verdict, a.comment, r.name AS rater, p.text AS prompt, t.id AS task,
       lr.text AS left_text, rr.text AS right_text, lm.name AS left_model, rm.name AS right_model,
       a.left_response, a.right_response
FROM answers a JOIN tasks t ON t.id = a.task_id JOIN raters r ON r.id = a.rater_id JOIN prompts p ON p.id = t.prompt_id
JOIN responses lr ON lr.id = a.left_response JOIN responses rr ON rr.id = a.right_response
JOIN models lm ON lm.id = lr.model_id JOIN models rm ON rm.id = rr.model_id
WHERE t.kind = 'pair' ORDER BY a.id"""

SINGLE_ANSWERS = """
SELECT a.id, a.rating, a.comment, r.name AS rater, p.text AS prompt, x.text AS response, m.name AS model
FROM answers a JOIN tasks t ON t.id = a.task_id JOIN raters r ON r.id = a.rater_id JOIN prompts p ON p.id = t.prompt_id
JOIN responses x ON x.id = t.response_a JOIN models m ON m.id = x.model_id
WHERE t.kind = 'single' ORDER BY a.id"""


def _picked(row) -> tuple[str, str, str, str] | None:
    """(chosen text, chosen model, rejected text, rejected model) of a left/right answer; None for tie, both bad."""
    if row["verdict"] == "left":
        return row["left_text"], row["left_model"], row["right_text"], row["right_model"]
    if row["verdict"] == "right":
        return row["right_text"], row["right_model"], row["left_text"], row["left_model"]
    return None


def _usable_pair(chosen: str, rejected: str, skipped: Counter) -> bool:
    if not chosen.strip() or not rejected.strip():
        skipped["an empty response"] += 1
        return False
    if chosen.strip() == rejected.strip():
        skipped["two identical responses"] += 1
        return False
    return True


def pair_rows(conn, majority: bool = False) -> tuple[list[dict], Counter]:
    rows, skipped = [], Counter()
    answers = conn.execute(PAIR_ANSWERS).fetchall()
    if majority:
        return _majority(answers)
    for a in answers:
        picked = _picked(a)
        if picked is None:
            skipped[a["verdict"].replace("_", " ")] += 1
            continue
        chosen, chosen_model, rejected, rejected_model = picked
        if _usable_pair(chosen, rejected, skipped):
            rows.append({"prompt": a["prompt"], "chosen": chosen, "rejected": rejected, "chosen_model": chosen_model,
                         "rejected_model": rejected_model, "rater": a["rater"], "comment": a["comment"]})
    return rows, skipped


def _majority(answers) -> tuple[list[dict], Counter]:
    """One row per task whose votes favour one response (ties and both-bad votes count for neither)."""
    tasks: dict[int, dict] = {}
    for a in answers:
        t = tasks.setdefault(a["task"], {"prompt": a["prompt"], "sides": {}, "votes": Counter()})
        t["sides"][a["left_response"]] = (a["left_text"], a["left_model"])
        t["sides"][a["right_response"]] = (a["right_text"], a["right_model"])
        if a["verdict"] in ("left", "right"):
            t["votes"][a["left_response"] if a["verdict"] == "left" else a["right_response"]] += 1
    rows, skipped = [], Counter()
    for t in tasks.values():
        (first, n1), (second, n2) = sorted(((rid, t["votes"][rid]) for rid in t["sides"]), key=lambda x: -x[1])
        if n1 == n2:
            skipped["no majority"] += 1
            continue
        (chosen, chosen_model), (rejected, rejected_model) = t["sides"][first], t["sides"][second]
        if _usable_pair(chosen, rejected, skipped):
            rows.append({"prompt": t["prompt"], "chosen": chosen, "rejected": rejected, "chosen_model": chosen_model,
                         "rejected_model": rejected_model, "votes": f"{n1}-{n2}"})
    return rows, skipped


def rating_rows(conn) -> tuple[list[dict], Counter]:
    rows, skipped = [], Counter()
    for a in conn.execute(SINGLE_ANSWERS).fetchall():
        if not a["response"].strip():
            skipped["an empty response"] += 1
            continue
        rows.append({"prompt": a["prompt"], "response": a["response"], "rating": a["rating"], "model": a["model"],
                     "rater": a["rater"], "comment": a["comment"]})
    return rows, skipped


def kto_rows(conn) -> tuple[list[dict], Counter]:
    from tunesmith.studio.study import settings

    stars = settings(conn).rate == "stars"
    rows, skipped = [], Counter()

    def add(prompt, text, label, model, a):
        if not text.strip():
            skipped["an empty response"] += 1
        else:
            rows.append({"prompt": prompt, "completion": text, "label": label, "model": model, "rater": a["rater"],
                         "comment": a["comment"]})

    for a in conn.execute(SINGLE_ANSWERS).fetchall():
        if stars and a["rating"] == 3:
            skipped["3 stars (neutral)"] += 1
            continue
        add(a["prompt"], a["response"], a["rating"] >= 4 if stars else a["rating"] == 1, a["model"], a)
    for a in conn.execute(PAIR_ANSWERS).fetchall():
        picked = _picked(a)
        if a["verdict"] == "tie":
            skipped["tie"] += 1
        elif a["verdict"] == "both_bad":
            add(a["prompt"], a["left_text"], False, a["left_model"], a)
            add(a["prompt"], a["right_text"], False, a["right_model"], a)
        else:
            add(a["prompt"], picked[0], True, picked[1], a)
            add(a["prompt"], picked[2], False, picked[3], a)
    return rows, skipped


def export_rows(studio_dir: str | Path, fmt: str, majority: bool = False) -> tuple[list[dict], Counter]:
    if fmt not in FORMATS:
        raise TunesmithError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if majority and fmt != "pairs":
        raise TunesmithError("--majority applies to --format pairs (one row per pair of responses)")
    conn = open_studio(studio_dir)
    try:
        return rows_for(conn, fmt, majority)
    finally:
        conn.close()


def rows_for(conn, fmt: str, majority: bool = False) -> tuple[list[dict], Counter]:
    """The rows of one of FORMATS (checked by the caller) from an open studio database."""
    if fmt == "pairs":
        return pair_rows(conn, majority)
    return rating_rows(conn) if fmt == "ratings" else kto_rows(conn)


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def export(studio_dir: str | Path, fmt: str, out: str | Path, overwrite: bool = False, majority: bool = False) -> dict:
    """Write the rows as JSON Lines to `out` (an existing file only with overwrite; written beside it and moved in
    when complete). Returns {"rows", "skipped": {why: count}, "out"}."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise TunesmithError(f"--out {out} exists; pass --overwrite to replace it, or give another file")
    if out.is_dir():
        raise TunesmithError(f"--out {out} is a folder; give a file name such as {out / (fmt + '.jsonl')}")
    rows, skipped = export_rows(studio_dir, fmt, majority)
    if not rows:
        raise TunesmithError(f"no {fmt} rows to export from {studio_dir} yet (skipped: {dict(skipped) or 'none'}); "
                             "raters' answers make them")
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    part.write_text(to_jsonl(rows), encoding="utf-8")
    os.replace(part, out)
    return {"rows": len(rows), "skipped": dict(skipped), "out": str(out)}
