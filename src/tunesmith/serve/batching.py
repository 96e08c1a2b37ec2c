"""Continuous batching for `tunesmith serve`: one queue and one thread per loaded model.

A request becomes a `Job` of `Row`s (one row per prompt x sample). When the model is idle, its `Batcher` thread
takes the job at the head of its queue, waits a short window (`--batch-window-ms`) if it is alone, then takes every
later job that may share its batch (same batch key: every adapter of a LoRA base shares one, other models batch per
served name) while the rows fit `--max-batch`. It then steps them together, one token per row per step
(continuous.py), each row with its own sampling options, stop strings, max_tokens and seed; between two steps it
admits the rows of jobs that arrived meanwhile (same key, arrival order, while the batch holds fewer than
`--max-batch` rows), and a row that ends leaves the batch at once, its caller answered. The batch (one entry of
`history`) ends when no row is left. A model the loop cannot step (continuous.supports) gets static batches
instead: the gathered rows in one `generate` call (decode.py). `--max-batch 1` is the server before batching: one
sequence at a time, in arrival order.

Back-pressure: at most `--max-queue` jobs wait; one more is refused (QueueFull: HTTP 429 with Retry-After). A job
the client gave up on (a closed stream, `--request-timeout`) is cancelled: skipped if still queued, its rows
stopped at their next token if running.

The batch thread only schedules: the model work (a session's prefill and steps, a static batch) runs on the
server's compute thread (`compute`, registry.py), the one thread of the process that runs torch, so that PyTorch's
OpenMP keeps a single pool of worker threads (why: registry.py). Nothing here imports torch.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Callable

DEFAULT_MAX_BATCH = 8
DEFAULT_BATCH_WINDOW_MS = 10.0
DEFAULT_MAX_QUEUE = 64
DEFAULT_REQUEST_TIMEOUT = 600.0


@dataclass(frozen=True)
class Batching:
    """How requests share the model (`tunesmith serve --max-batch --batch-window-ms --max-queue --request-timeout`)."""

    max_batch: int = DEFAULT_MAX_BATCH  # most sequences generated together; 1: one request at a time
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS  # how long a request that finds the model idle waits for company
    max_queue: int = DEFAULT_MAX_QUEUE  # most requests waiting per model; one more is a 429
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT  # seconds from arrival to answer; None or 0: no limit

    def __post_init__(self):
        for name in ("max_batch", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        if self.batch_window_ms < 0:
            raise ValueError(f"--batch-window-ms must be 0 or more, got {self.batch_window_ms!r}")
        if self.request_timeout is not None and self.request_timeout < 0:
            raise ValueError(f"--request-timeout must be 0 (no limit) or more seconds, got {self.request_timeout!r}")

    @property
    def timeout(self) -> float | None:
        return self.request_timeout or None


class QueueFull(Exception):
    """The model's queue holds --max-queue requests already; `retry_after`: seconds worth waiting."""

    def __init__(self, queued: int, retry_after: int):
        super().__init__(f"{queued} requests are waiting for this model, the most this server queues (--max-queue); "
                         f"retry in {retry_after} s, or start the server with a higher --max-queue")
        self.retry_after = retry_after


@dataclass
class Row:
    """One sequence: a prompt's ids and the options of its sample."""

    ids: list[int]
    index: int  # the completion's place in its request's answer
    prompt: int = 0
    sample: int = 0
    max_new_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    logprobs: int | None = None  # None: none; k >= 0: the chosen token's logprob and the k most likely
    job: Any = None


class Job:
    """One request's work: "generate" rows, or "score" (log-probabilities of the prompts' own tokens, for echo).
    `on_text(index, text, entries)` streams: a row's new settled text, with the log-probability entries of the
    tokens generated since its last piece (None when not asked for)."""

    def __init__(self, served, rows: list[Row], kind: str = "generate",
                 on_text: Callable[[int, str, list | None], None] | None = None):
        self.served, self.rows, self.kind, self.on_text = served, rows, kind, on_text
        for row in rows:
            row.job = self
        self.future: Future = Future()
        self.cancelled = threading.Event()
        self.arrived = time.monotonic()
        self.results: list = [None] * len(rows)
        self._left = len(rows)

    @classmethod
    def generate(cls, served, prompts: list[list[int]], options: dict, logprobs: int | None = None, on_text=None):
        """Rows of n samples per prompt (prompt-major), seeded as `generation.complete` seeds them."""
        n, seed = options.get("n", 1), options.get("seed")
        base = secrets.randbits(63) if seed is None else seed
        keep = {k: options[k] for k in ("max_new_tokens", "temperature", "top_p", "top_k") if k in options}
        rows = [Row(list(ids), p * n + s, p, s, stop=[x for x in options.get("stop") or [] if x],
                    seed=hash((base, p, s)) & (2**63 - 1), logprobs=logprobs, **keep)
                for p, ids in enumerate(prompts) for s in range(n)]
        return cls(served, rows, on_text=on_text)

    @property
    def key(self):
        return getattr(self.served, "batch_key", self.served.name)

    def done(self, index: int, result) -> None:
        """Row `index` has its answer; the job's future resolves once every row has one."""
        self.results[index] = result
        self._left -= 1
        if self._left == 0:
            self._settle(lambda: self.future.set_result(self.results))

    def fail(self, err: BaseException) -> None:
        self._settle(lambda: self.future.set_exception(err))

    def _settle(self, how) -> None:
        if not self.future.done():
            try:
                how()
            except InvalidStateError:  # cancelled meanwhile
                pass

    def cancel(self) -> None:
        self.cancelled.set()


class Batcher:
    """The queue and thread of one loaded model. `open_session(served)` starts a continuous batch for the model
    (continuous.Session: `admit(rows)`, `step()`, `active`), or gives None for a model it cannot step; then, and for
    "score" jobs, `run(jobs, chunk)` does the work of one static batch (decode.run_jobs) and returns its steps.
    `compute` (an Executor, or None: this thread) runs each of those calls."""

    def __init__(self, name: str, run: Callable[[list[Job], int], None], config: Batching | None = None,
                 open_session: Callable[[Any], Any] | None = None, compute: Executor | None = None):
        self.name, self.run, self.config, self.open_session = name, run, config or Batching(), open_session
        self.compute = compute
        self.queue: deque[Job] = deque()
        self.cond = threading.Condition()
        self.closed = False
        self.running: list[Job] = []  # the jobs of the batch at work now
        self.history: deque[tuple[int, int, int, float]] = deque(maxlen=200)  # recent batches: (jobs, rows, steps, s)
        self.thread = threading.Thread(target=self._loop, daemon=True, name=f"serve-batch-{name}")
        self.thread.start()

    def submit(self, job: Job) -> Job:
        with self.cond:
            if self.closed:
                raise RuntimeError(f"the server is shutting down; {self.name!r} takes no new requests")
            for gone in [j for j in self.queue if j.cancelled.is_set()]:  # given up on: they hold no place
                self._drop(gone)
            if len(self.queue) >= self.config.max_queue:
                raise QueueFull(len(self.queue), self.retry_after())
            self.queue.append(job)
            self.cond.notify()
        return job

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved: the recent seconds per row (a batch's time over its rows) x the
        rows queued, at least 1."""
        recent = list(self.history)[-20:]
        rows = sum(r for _, r, *_ in recent)
        per_row = sum(s for *_, s in recent) / rows if rows else 1.0 / self.config.max_batch
        return max(1, math.ceil(per_row * max(sum(len(j.rows) for j in self.queue), self.config.max_batch)))

    def close(self) -> None:
        """No new jobs; the queued ones are still answered; returns when the thread is done."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join()

    def _loop(self) -> None:
        while (jobs := self._gather()) is not None:
            if not jobs:
                continue
            start, steps = time.monotonic(), 0
            self.running = jobs
            try:
                opens = self.open_session and jobs[0].kind == "generate"
                session = self._call(self.open_session, jobs[0].served) if opens else None
                if session is None:
                    steps = self._call(self.run, jobs, max(self.config.max_batch, 8)) or 0
                else:
                    steps = self._continuous(session, jobs)
            except BaseException as err:  # noqa: BLE001 (answered to each waiting client)
                for job in self.running:
                    job.fail(err)
            finally:
                for job in self.running:
                    if not job.future.done():
                        job.fail(RuntimeError("the batch ended without answering this request"))
                self.history.append((len(self.running), sum(len(j.rows) for j in self.running), steps,
                                     time.monotonic() - start))
                self.running = []

    def _continuous(self, session, jobs: list[Job]) -> int:
        """Step `jobs` and the jobs that join them until the batch is empty; returns the steps (each admission's prefill
        counts one: it gives the admitted rows their first token). Between two steps, waiting rows of the same batch
        key are admitted while the batch has room (`max_batch` rows), in arrival order: a job for another key (or a
        score job) at the head of the queue stops admissions, so the batch drains and that job goes next."""
        pending, key, steps = deque(r for j in jobs for r in j.rows), jobs[0].key, 0
        while True:
            room = self.config.max_batch - session.active
            if len(pending) < room:
                pending.extend(r for j in self._more(key, room - len(pending)) for r in j.rows)
            rows = [pending.popleft() for _ in range(min(room, len(pending)))]
            for job in {id(r.job): r.job for r in rows if r.job.cancelled.is_set()}.values():
                job.future.cancel()  # its client left before its rows started: nothing to answer
            rows = [r for r in rows if not r.job.cancelled.is_set()]
            if rows:
                self._call(session.admit, rows)
                steps += 1
            if session.active:
                self._call(session.step)
                steps += 1
            if not session.active and not pending:  # the batch is empty: this batch ends (its figures recorded)
                return steps

    def _call(self, fn, *args):
        """fn(*args) on the compute thread (here if there is none), waited for."""
        return fn(*args) if self.compute is None else self.compute.submit(fn, *args).result()

    def _more(self, key, rows: int) -> list[Job]:
        """Jobs from the head of the queue for batch key `key` (at least `rows` rows if there are), without waiting."""
        taken: list[Job] = []
        with self.cond:
            while self.queue and rows > 0:
                job = self.queue[0]
                if job.cancelled.is_set():
                    self._drop(job)
                    continue
                if job.kind != "generate" or job.key != key:
                    break
                taken.append(self.queue.popleft())
                rows -= len(job.rows)
        self.running = self.running + taken
        return taken

    def _gather(self) -> list[Job] | None:
        """Wait for a job; if the batch is not full yet, give others `batch_window_ms` to arrive; take the batch."""
        window = self.config.batch_window_ms / 1000
        with self.cond:
            while not self.queue and not self.closed:
                self.cond.wait()
            if not self.queue:
                return None
            while not self.closed and sum(len(j.rows) for j in self.queue) < self.config.max_batch:
                left = self.queue[0].arrived + window - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return self._take()

    def _drop(self, job: Job) -> None:
        """A job its client gave up on leaves the queue unanswered."""
        self.queue.remove(job)
        job.future.cancel()

    def _take(self) -> list[Job]:
        """The head job, then (FIFO) every later job that shares its batch key and fits `max_batch` rows."""
        first = self.queue[0]
        if first.cancelled.is_set():
            self._drop(first)
            return []
        self.queue.popleft()
        taken, rows = [first], len(first.rows)
        if first.kind != "generate":
            return taken
        for job in list(self.queue):
            if rows >= self.config.max_batch:
                break
            if job.cancelled.is_set():
                self._drop(job)
            elif job.kind == "generate" and job.key == first.key and rows + len(job.rows) <= self.config.max_batch:
                self.queue.remove(job)
                taken.append(job)
                rows += len(job.rows)
        return taken
