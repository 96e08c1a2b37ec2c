"""Generating the study's responses: only the (prompt, model, sample) rows that are missing, cached in the database.

Models load one at a time (a run as it was trained, with `Run.generate`; a plain model through its chat template
when it has one) and answer the prompts that lack samples in chunks: each chunk is one `generation.complete` call
with n = K samples per prompt, seeded from the study's seed, the model's name and the chunk's first prompt, and is
written in one transaction together with the tasks it makes. Stopping (Ctrl-C, or the server shutting down) loses
at most the chunk in flight, and the next `init` or `serve` carries on from there.

Progress is kept in the `generation` row (done, total, status), which the owner page shows and which keeps a second
process from generating the same rows at the same time. `GenerationJob` runs it all in a background thread.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.procs import alive
from tunesmith.studio.db import now, open_studio, transaction
from tunesmith.studio.study import build_tasks, settings

log = logging.getLogger("tunesmith")
STALE_SECONDS = 900  # a 'running' row not updated for this long belongs to a process that died


def missing(conn) -> dict[int, list[int]]:
    """{model id: [prompt ids that have fewer than K samples of it]}, prompts in order."""
    k = settings(conn).samples
    rows = conn.execute("SELECT m.id AS model, p.id AS prompt FROM models m CROSS JOIN prompts p "
                        "WHERE (SELECT count(*) FROM responses r WHERE r.model_id = m.id AND r.prompt_id = p.id) < ? "
                        "ORDER BY m.id, p.id", (k,)).fetchall()
    out: dict[int, list[int]] = {}
    for row in rows:
        out.setdefault(row["model"], []).append(row["prompt"])
    return out


def missing_rows(conn) -> int:
    k = settings(conn).samples
    have = conn.execute("SELECT count(*) FROM responses r JOIN prompts p ON p.id = r.prompt_id "
                        "JOIN models m ON m.id = r.model_id WHERE r.sample < ?", (k,)).fetchone()[0]
    return conn.execute("SELECT count(*) FROM models").fetchone()[0] * conn.execute(
        "SELECT count(*) FROM prompts").fetchone()[0] * k - have


def claim(conn, total: int) -> None:
    """Mark generation as running in this process, unless another live process is at it."""
    with transaction(conn):
        row = conn.execute("SELECT * FROM generation").fetchone()
        if (row is not None and row["status"] == "running" and row["pid"] != os.getpid() and alive(row["pid"])
                and now() - row["updated_at"] < STALE_SECONDS):
            raise TunesmithError(f"another process (pid {row['pid']}) is generating this study's responses "
                                 f"({row['done']} of {row['total']} done); wait for it, or stop it and run again")
        conn.execute("INSERT INTO generation (id, status, done, total, pid, message, updated_at) "
                     "VALUES (1, 'running', 0, ?, ?, '', ?) ON CONFLICT (id) DO UPDATE SET status = 'running', "
                     "done = 0, total = excluded.total, pid = excluded.pid, message = '', updated_at = excluded.updated_at",
                     (total, os.getpid(), now()))


def _finish(conn, status: str, message: str = "") -> None:
    with transaction(conn):
        conn.execute("UPDATE generation SET status = ?, message = ?, updated_at = ? WHERE id = 1 AND pid = ?",
                     (status, message[:2000], now(), os.getpid()))


def status(conn) -> dict | None:
    row = conn.execute("SELECT * FROM generation").fetchone()
    return dict(row) if row is not None else None


def load_answerer(kind: str, source: str, s, trust_remote_code: bool = False) -> Callable[[list[str], int], list[str]]:
    """fn(prompts, seed) -> K texts per prompt (prompt-major), for a run folder or a plain model."""
    options = {"n": s.samples, "temperature": s.temperature, "top_p": s.top_p}
    if kind == "run":
        from tunesmith.runs import Run

        run = Run(source, trust_remote_code=trust_remote_code)
        return lambda prompts, seed: run.generate(prompts, s.max_new_tokens, seed=seed, **options)
    from tunesmith.generation import chat_prompt, generate
    from tunesmith.modeling import load_causal_lm

    model, tokenizer = load_causal_lm(source, trust_remote_code)

    def answer(prompts, seed):
        if getattr(tokenizer, "chat_template", None):
            ids = [chat_prompt(tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        else:
            ids = [tokenizer(p)["input_ids"] for p in prompts]
        return generate(model, tokenizer, ids, s.max_new_tokens, seed=seed, **options)

    return answer


def chunk_seed(seed: int, model: str, prompt_id: int) -> int:
    return int(hashlib.sha256(f"{seed}:{model}:{prompt_id}".encode()).hexdigest()[:15], 16)


def generate_missing(studio_dir: str | Path, progress: Callable[[int, int, str], None] | None = None,
                     stop: threading.Event | None = None, chunk: int = 8, trust_remote_code: bool = False) -> dict:
    """Generate every missing response of the study; returns {"generated": rows, "stopped": bool}.
    progress(done, total, model name) is called after each chunk."""
    conn = open_studio(studio_dir)
    try:
        s, gaps, total = settings(conn), missing(conn), missing_rows(conn)
        if not gaps:
            build_tasks(conn)
            return {"generated": 0, "stopped": False}
        claim(conn, total)
        done = 0
        try:
            for model_id, prompt_ids in gaps.items():
                model = conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
                if progress:
                    progress(done, total, model["name"])
                log.info("Generating %d prompts x %d samples with %s", len(prompt_ids), s.samples, model["name"])
                answer = load_answerer(model["kind"], model["source"], s, trust_remote_code)
                for start in range(0, len(prompt_ids), chunk):
                    if stop is not None and stop.is_set():
                        _finish(conn, "stopped", f"stopped after {done} of {total}")
                        return {"generated": done, "stopped": True}
                    ids = prompt_ids[start : start + chunk]
                    texts = [conn.execute("SELECT text FROM prompts WHERE id = ?", (p,)).fetchone()[0] for p in ids]
                    outputs = answer(texts, chunk_seed(s.seed, model["name"], ids[0]))
                    done += _store(conn, model_id, ids, outputs, s.samples)
                    build_tasks(conn)
                    if progress:
                        progress(done, total, model["name"])
                del answer
                gc.collect()
        except BaseException as err:
            _finish(conn, "stopped" if isinstance(err, KeyboardInterrupt) else "failed", f"{type(err).__name__}: {err}")
            raise
        _finish(conn, "finished", f"generated {done} responses")
        return {"generated": done, "stopped": False}
    finally:
        conn.close()


def _store(conn, model_id: int, prompt_ids: list[int], outputs: list[str], k: int) -> int:
    """Insert the samples that are missing (INSERT OR IGNORE keeps those already there); returns how many."""
    with transaction(conn):
        before = conn.total_changes
        conn.executemany("INSERT OR IGNORE INTO responses (prompt_id, model_id, sample, text, created_at) "
                         "VALUES (?, ?, ?, ?, ?)",
                         [(p, model_id, i, outputs[n * k + i], now()) for n, p in enumerate(prompt_ids) for i in range(k)])
        added = conn.total_changes - before
        conn.execute("UPDATE generation SET done = done + ?, updated_at = ? WHERE id = 1", (added, now()))
    return added


class GenerationJob:
    """`generate_missing` in a daemon thread: `progress` holds (done, total, model), `error` what stopped it;
    `stop()` asks it to end after the chunk in flight and waits."""

    def __init__(self, studio_dir: str | Path, trust_remote_code: bool = False, chunk: int = 8):
        self.studio_dir, self.trust_remote_code, self.chunk = studio_dir, trust_remote_code, chunk
        self.progress: tuple[int, int, str] = (0, 0, "")
        self.error: BaseException | None = None
        self.result: dict | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True, name="studio-generation")

    def _work(self) -> None:
        try:
            self.result = generate_missing(self.studio_dir, self._report, self._stop, self.chunk, self.trust_remote_code)
        except BaseException as err:  # handed to whoever waits on the job
            self.error = err

    def _report(self, done: int, total: int, model: str) -> None:
        self.progress = (done, total, model)

    def start(self) -> GenerationJob:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)
