"""The studio's database, study, queue and export, without a server or a model: responses are written straight
into the database (`make_study`, used by the other studio tests too)."""

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app as cli_app
from tunesmith.errors import TunesmithError
from tunesmith.studio import db, export, queue
from tunesmith.studio.study import build_tasks, init_study, summary


def make_study(root, prompts=4, models=("base", "tuned"), samples=1, rate="thumbs", compare=True, text=None):
    """A studio with `prompts` prompts and a response per (prompt, model, sample) written directly (no model runs);
    text(i, model, s) gives each response's text. Returns (studio folder, owner token)."""
    studio = root / "studio"
    info = init_study(studio, [f"Question {i}?" for i in range(prompts)], "test", [(m, "model", m) for m in models],
                      rate=rate, compare=compare, samples=samples)
    text = text or (lambda i, m, s: f"{m} answers question {i}, sample {s}.")
    conn = db.open_studio(studio)
    with db.transaction(conn):
        ids = {row["text"]: row["id"] for row in conn.execute("SELECT id, text FROM prompts")}
        for m in models:
            model_id = conn.execute("SELECT id FROM models WHERE name = ?", (m,)).fetchone()[0]
            for i in range(prompts):
                for s in range(samples):
                    conn.execute("INSERT INTO responses (prompt_id, model_id, sample, text, created_at) VALUES (?, ?, ?, ?, 0)",
                                 (ids[f"Question {i}?"], model_id, s, text(i, m, s)))
    build_tasks(conn)
    conn.close()
    return studio, info["owner_token"]


def rater_row(studio, name):
    token = queue.add_rater(studio, name)
    conn = db.open_studio(studio)
    return conn, queue.rater_for(conn, token), token


def test_schema_is_versioned_in_wal_mode_and_migrations_run(tmp_path, monkeypatch):
    studio, _ = make_study(tmp_path)
    conn = db.open_studio(studio)
    assert db.version(conn) == db.SCHEMA_VERSION == 1
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    monkeypatch.setattr(db, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(db, "MIGRATIONS", {1: "ALTER TABLE raters ADD COLUMN email TEXT NOT NULL DEFAULT '';"})
    conn = db.open_studio(studio)
    assert db.version(conn) == 2 and "email" in [r[1] for r in conn.execute("PRAGMA table_info(raters)")]
    assert conn.execute("SELECT count(*) FROM responses").fetchone()[0] == 8  # the data came along
    conn.close()
    monkeypatch.setattr(db, "SCHEMA_VERSION", 1)
    with pytest.raises(TunesmithError, match="schema version 2, newer than this tunesmith's 1"):
        db.open_studio(studio)


def test_a_foreign_sqlite_file_or_folder_is_not_touched(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(TunesmithError, match="holds other files"):
        init_study(tmp_path / "mine", ["Hi?"], "x", [("m", "model", "m")])
    (tmp_path / "other").mkdir()
    sqlite3.connect(tmp_path / "other" / db.DB_NAME).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(TunesmithError, match="did not write"):
        db.open_studio(tmp_path / "other")
    with pytest.raises(TunesmithError, match="is not a studio"):
        db.open_studio(tmp_path / "nowhere")


def test_tasks_and_a_second_init(tmp_path):
    studio, token = make_study(tmp_path, prompts=3, samples=2)
    assert token and len(token) >= 32
    counts = summary(db.open_studio(studio))
    assert counts["single_tasks"] == 12 and counts["pair_tasks"] == 6  # 3 prompts x 2 models x 2; 3 x 2 samples
    again = init_study(studio, ["Question 0?", "A new question?"], "more", [("base", "model", "base")])
    assert again["owner_token"] is None and again["added_prompts"] == 1 and again["added_models"] == []
    with pytest.raises(TunesmithError, match="cannot change how the study asks"):
        init_study(studio, [], "", [], rate="stars")
    with pytest.raises(TunesmithError, match="already names"):
        init_study(studio, [], "", [("base", "model", "other-model")])
    with pytest.raises(TunesmithError, match="K can only grow"):
        init_study(studio, [], "", [], samples=1)
    one, _ = make_study(tmp_path / "one", prompts=2, models=("solo",), samples=3)
    assert summary(db.open_studio(one))["pair_tasks"] == 6  # each two of 3 samples, per prompt


def test_queue_order_is_per_rater_stable_and_answers_are_idempotent(tmp_path):
    studio, _ = make_study(tmp_path, prompts=6)
    conn, ann, _ = rater_row(studio, "ann")
    _, bob, _ = rater_row(studio, "bob")
    first = queue.next_task(conn, ann)
    assert queue.next_task(conn, ann) == first  # the same task until it is answered
    order = lambda r: sorted(range(1, 19), key=lambda t: queue._key(r["salt"], t))  # noqa: E731
    assert order(ann) != order(bob)
    assert queue.record(conn, ann, first["id"], **answer_for(first)) is True
    assert queue.record(conn, ann, first["id"], **answer_for(first)) is False  # a double submit changes nothing
    assert queue.progress(conn, ann) == (1, 18)
    assert queue.next_task(conn, ann)["id"] != first["id"]
    assert queue.undo(conn, ann) == first["id"] and queue.next_task(conn, ann)["id"] == first["id"]
    assert queue.undo(conn, ann) is None


def answer_for(task, verdict="left", rating=1, comment=""):
    if task["kind"] == "single":
        return {"rating": rating, "comment": comment}
    return {"verdict": verdict, "left_response": task["left"]["id"], "comment": comment}


def test_bad_answers_are_refused(tmp_path):
    studio, _ = make_study(tmp_path, rate="stars")
    conn, ann, _ = rater_row(studio, "ann")
    single = conn.execute("SELECT id FROM tasks WHERE kind = 'single'").fetchone()[0]
    pair = conn.execute("SELECT id, response_a FROM tasks WHERE kind = 'pair'").fetchone()
    for task_id, kwargs, message in [
        (single, {"rating": 6}, r"one of \[1, 2, 3, 4, 5\]"), (single, {"rating": 0}, "rating"),
        (single, {"verdict": "left"}, "rates one response"), (pair[0], {"verdict": "better"}, "verdict"),
        (pair[0], {"verdict": "left", "left_response": 999}, "left_response"), (999, {"rating": 1}, "does not exist"),
        (single, {"rating": 3, "comment": "x" * 5001}, "at most 5000"),
    ]:
        with pytest.raises(queue.AnswerError, match=message):
            queue.record(conn, ann, task_id, **kwargs)
    assert conn.execute("SELECT count(*) FROM answers").fetchone()[0] == 0


def test_export_maps_sides_to_chosen_and_rejected(tmp_path):
    studio, _ = make_study(tmp_path, prompts=4)
    conn, ann, _ = rater_row(studio, "ann")
    _, bob, _ = rater_row(studio, "bob")
    pairs = conn.execute("SELECT id FROM tasks WHERE kind = 'pair' ORDER BY id").fetchall()
    verdicts = ["left", "right", "tie", "both_bad"]
    shown = {}
    for (task_id,), verdict in zip(pairs, verdicts):
        view = queue.task_view(conn, ann, task_id)
        shown[task_id] = view
        queue.record(conn, ann, task_id, verdict=verdict, left_response=view["left"]["id"], comment=f"c{task_id}")
        queue.record(conn, bob, task_id, verdict="left", left_response=view["left"]["id"])  # bob: left side as ann saw it
    for i, (task_id,) in enumerate(conn.execute("SELECT id FROM tasks WHERE kind = 'single' ORDER BY id").fetchall()):
        queue.record(conn, ann, task_id, rating=i % 2)
    rows, skipped = export.export_rows(studio, "pairs")
    ann_rows = [r for r in rows if r["rater"] == "ann"]
    assert [(r["chosen"], r["rejected"]) for r in ann_rows] == [
        (shown[pairs[0][0]]["left"]["text"], shown[pairs[0][0]]["right"]["text"]),
        (shown[pairs[1][0]]["right"]["text"], shown[pairs[1][0]]["left"]["text"])]
    assert skipped == {"tie": 1, "both bad": 1} and len(rows) == 6
    assert ann_rows[0]["comment"] == f"c{pairs[0][0]}" and ann_rows[0]["prompt"].startswith("Question")
    assert {r["chosen_model"] for r in rows} <= {"base", "tuned"}
    majority, why = export.export_rows(studio, "pairs", majority=True)
    # votes per pair: 2-0 (both left), 1-1 (ann right, bob left), 1-0 twice (ann's tie and both bad count for neither)
    assert len(majority) == 3 and why == {"no majority": 1}
    ratings, _ = export.export_rows(studio, "ratings")
    assert [r["rating"] for r in ratings] == [0, 1, 0, 1, 0, 1, 0, 1]
    kto, why = export.export_rows(studio, "kto")
    assert why == {"tie": 1}
    # 8 thumbs + ann: left (2 rows), right (2), both bad (2 false); bob: 4 x left (8)
    assert len(kto) == 8 + 6 + 8 and sum(r["label"] is False for r in kto) == 4 + 2 + 2 + 4
    assert {type(r["label"]) for r in kto} == {bool}


def test_export_skips_identical_and_empty_responses(tmp_path):
    studio, _ = make_study(tmp_path, prompts=2, text=lambda i, m, s: "" if i == 1 else "Same text.")
    conn, ann, _ = rater_row(studio, "ann")
    for (task_id,) in conn.execute("SELECT id FROM tasks").fetchall():
        view = queue.task_view(conn, ann, task_id)
        queue.record(conn, ann, task_id, **answer_for(view))
    assert export.export_rows(studio, "pairs") == ([], {"two identical responses": 1, "an empty response": 1})
    rows, why = export.export_rows(studio, "ratings")
    assert len(rows) == 2 and why == {"an empty response": 2}


def test_cli_rater_and_export(tmp_path):
    studio, _ = make_study(tmp_path)
    runner = CliRunner()
    out = runner.invoke(cli_app, ["studio", "rater", str(studio), "ann"])
    assert out.exit_code == 0 and "http://127.0.0.1:8765/r/" in out.output
    token = out.output.strip().rsplit("/r/", 1)[1]
    conn = db.open_studio(studio)
    stored = conn.execute("SELECT token_hash FROM raters").fetchone()[0]
    assert token not in stored and stored == db.hash_token(token)  # only the hash is kept
    again = runner.invoke(cli_app, ["studio", "rater", str(studio), "ann"])
    assert again.exit_code == 2 and "--new-link" in again.output
    assert runner.invoke(cli_app, ["studio", "export", str(studio), "--format", "pairs", "--out", str(tmp_path / "p.jsonl")]).exit_code == 2
    ann = queue.rater_for(conn, token)
    task = queue.next_task(conn, ann)
    while task is not None and task["kind"] != "pair":
        queue.record(conn, ann, task["id"], rating=1)
        task = queue.next_task(conn, ann)
    queue.record(conn, ann, task["id"], verdict="right", left_response=task["left"]["id"])
    out = runner.invoke(cli_app, ["studio", "export", str(studio), "--format", "pairs", "--out", str(tmp_path / "p.jsonl")])
    assert out.exit_code == 0 and "wrote 1 pairs rows" in out.output
    row = json.loads((tmp_path / "p.jsonl").read_text())
    assert (row["chosen"], row["rejected"]) == (task["right"]["text"], task["left"]["text"])
    refused = runner.invoke(cli_app, ["studio", "export", str(studio), "--format", "pairs", "--out", str(tmp_path / "p.jsonl")])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
