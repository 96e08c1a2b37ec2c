"""Raters, their sessions and their queue: which task comes next, what a task shows, answering and undoing.

Every function here takes the rater it acts for, so a rater can only ever read or change their own answers. A
rater's queue is every task of the study in an order of their own (tasks sorted by a hash of the rater's salt and
the task id): raters meet tasks in different orders, and the order is the same after a restart, so the queue
resumes where it stopped. In a pair the side each response is shown on is decided the same way (per rater and
task, half of the pairs flipped), and the answer records both sides as shown. Models stay anonymous to raters.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.studio.db import hash_token, new_token, now, open_studio, transaction

VERDICTS = ("left", "right", "tie", "both_bad")
MAX_COMMENT = 5000  # characters
SCALES = {"thumbs": (0, 1), "stars": (1, 2, 3, 4, 5)}


class AnswerError(TunesmithError):
    """An answer the task cannot take (HTTP 400): a rating off the scale, a verdict it does not know..."""


# ---------------------------------------------------------------------------------------------
# Links: raters and the owner


def add_rater(studio_dir: str | Path, name: str, new_link: bool = False) -> str:
    """Create a rater (or, with new_link, give an existing rater a new link: the old one stops working); returns
    the token, which is shown once."""
    name = name.strip()
    if not name or len(name) > 100:
        raise TunesmithError(f"rater name {name!r}: give a name of 1 to 100 characters")
    token = new_token()
    conn = open_studio(studio_dir)
    try:
        with transaction(conn):
            row = conn.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()
            if row is not None and not new_link:
                raise TunesmithError(f"rater {name!r} exists in {studio_dir}; their link was printed when they were "
                                     "added: pass --new-link to replace it (the old link stops working)")
            if row is None:
                conn.execute("INSERT INTO raters (name, token_hash, salt, created_at) VALUES (?, ?, ?, ?)",
                             (name, hash_token(token), secrets.token_hex(8), now()))
            else:
                conn.execute("UPDATE raters SET token_hash = ? WHERE id = ?", (hash_token(token), row["id"]))
                conn.execute("DELETE FROM sessions WHERE rater_id = ?", (row["id"],))
    finally:
        conn.close()
    return token


def new_owner_token(studio_dir: str | Path) -> str:
    """Replace the owner token (the old owner link stops working); returns the new one."""
    token = new_token()
    conn = open_studio(studio_dir)
    try:
        with transaction(conn):
            conn.execute("UPDATE study SET owner_token_hash = ? WHERE id = 1", (hash_token(token),))
            conn.execute("DELETE FROM sessions WHERE rater_id IS NULL")
    finally:
        conn.close()
    return token


def rater_for(conn, token: str):
    """The rater whose link holds `token`, or None."""
    return conn.execute("SELECT * FROM raters WHERE token_hash = ?", (hash_token(token),)).fetchone()


def is_owner(conn, token: str) -> bool:
    row = conn.execute("SELECT owner_token_hash FROM study").fetchone()
    return row is not None and secrets.compare_digest(row[0], hash_token(token))


# ---------------------------------------------------------------------------------------------
# Sessions: a cookie per link, each with its CSRF token


def new_session(conn, rater_id: int | None) -> tuple[str, str]:
    """(session id for the cookie, CSRF token for the forms); the id is stored hashed."""
    session, csrf = new_token(), new_token()
    with transaction(conn):
        conn.execute("INSERT INTO sessions (id_hash, rater_id, csrf, created_at) VALUES (?, ?, ?, ?)",
                     (hash_token(session), rater_id, csrf, now()))
    return session, csrf


def session_csrf(conn, session: str | None, rater_id: int | None) -> str | None:
    """The CSRF token of this browser's session with this link; None when the cookie is absent or belongs to
    another link."""
    if not session:
        return None
    row = conn.execute("SELECT rater_id, csrf FROM sessions WHERE id_hash = ?", (hash_token(session),)).fetchone()
    return row["csrf"] if row is not None and row["rater_id"] == rater_id else None


# ---------------------------------------------------------------------------------------------
# The queue


def _key(salt: str, task_id: int, what: str = "order") -> str:
    return hashlib.sha256(f"{salt}:{what}:{task_id}".encode()).hexdigest()


def progress(conn, rater) -> tuple[int, int]:
    """(tasks this rater answered, tasks in the study)."""
    done = conn.execute("SELECT count(*) FROM answers WHERE rater_id = ?", (rater["id"],)).fetchone()[0]
    return done, conn.execute("SELECT count(*) FROM tasks").fetchone()[0]


def next_task(conn, rater) -> dict | None:
    """The rater's next unanswered task as `task_view` shows it, or None when none is left (yet)."""
    pending = conn.execute("SELECT id FROM tasks WHERE id NOT IN (SELECT task_id FROM answers WHERE rater_id = ?)",
                           (rater["id"],)).fetchall()
    if not pending:
        return None
    first = min((row["id"] for row in pending), key=lambda t: _key(rater["salt"], t))
    return task_view(conn, rater, first)


def task_view(conn, rater, task_id: int) -> dict:
    """What the rater sees: the prompt and one response, or two with their sides (ids and text, no model names)."""
    task = conn.execute("SELECT t.id, t.kind, t.response_a, t.response_b, p.text AS prompt FROM tasks t "
                        "JOIN prompts p ON p.id = t.prompt_id WHERE t.id = ?", (task_id,)).fetchone()
    if task is None:
        raise AnswerError(f"task {task_id} does not exist in this study")
    text = lambda rid: conn.execute("SELECT text FROM responses WHERE id = ?", (rid,)).fetchone()[0]  # noqa: E731
    view = {"id": task["id"], "kind": task["kind"], "prompt": task["prompt"]}
    if task["kind"] == "single":
        return {**view, "response": {"id": task["response_a"], "text": text(task["response_a"])}}
    left, right = task["response_a"], task["response_b"]
    if int(_key(rater["salt"], task_id, "side")[-1], 16) % 2:
        left, right = right, left
    return {**view, "left": {"id": left, "text": text(left)}, "right": {"id": right, "text": text(right)}}


def record(conn, rater, task_id: int, *, rating=None, verdict: str | None = None, left_response: int | None = None,
           comment: str = "") -> bool:
    """Store an answer; False when this rater had already answered the task (a second submit changes nothing)."""
    from tunesmith.studio.study import settings

    comment = comment or ""
    if len(comment) > MAX_COMMENT:
        raise AnswerError(f"comment: at most {MAX_COMMENT} characters, got {len(comment)}")
    with transaction(conn):
        task = conn.execute("SELECT kind, response_a, response_b FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if task is None:
            raise AnswerError(f"task {task_id} does not exist in this study")
        right = None
        if task["kind"] == "single":
            scale = SCALES.get(settings(conn).rate, ())
            if verdict is not None or rating not in scale:
                raise AnswerError(f"task {task_id} rates one response: send rating, one of {list(scale)}")
        else:
            if rating is not None or verdict not in VERDICTS:
                raise AnswerError(f"task {task_id} compares two responses: send verdict, one of {list(VERDICTS)}")
            pair = (task["response_a"], task["response_b"])
            if left_response not in pair:
                raise AnswerError(f"task {task_id}: left_response must be the id of the response shown on the left, "
                                  f"one of {list(pair)}")
            right = pair[1] if left_response == pair[0] else pair[0]
        cursor = conn.execute(
            "INSERT INTO answers (rater_id, task_id, rating, verdict, left_response, right_response, comment, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rater_id, task_id) DO NOTHING",
            (rater["id"], task_id, rating, verdict, left_response if right is not None else None, right, comment, now()))
        return cursor.rowcount == 1


def undo(conn, rater) -> int | None:
    """Remove the rater's latest answer; returns its task id (the queue shows that task next), None if none."""
    with transaction(conn):
        row = conn.execute("SELECT id, task_id FROM answers WHERE rater_id = ? ORDER BY id DESC LIMIT 1",
                           (rater["id"],)).fetchone()
        if row is None:
            return None
        conn.execute("DELETE FROM answers WHERE id = ? AND rater_id = ?", (row["id"], rater["id"]))
        return row["task_id"]


def own_answers(conn, rater) -> list[dict]:
    """This rater's answers, oldest first (task, rating or verdict, sides, comment)."""
    rows = conn.execute("SELECT id, task_id, rating, verdict, left_response, right_response, comment, created_at "
                        "FROM answers WHERE rater_id = ? ORDER BY id", (rater["id"],)).fetchall()
    return [dict(row) for row in rows]
