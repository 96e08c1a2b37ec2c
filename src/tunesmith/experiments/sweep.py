"""Hyperparameter sweeps with Optuna: the config's `sweep:` section names keys and their ranges or choices; each
trial is an ordinary run (its own `tunesmith train` process) under <out>/trials/<number>.

The study lives in <out>/sweep.db (SQLite), so a sweep that was stopped continues where it was: finished trials
count toward the number asked for, and a trial that a stopped sweep left running is marked failed and its
parameters are tried again as a new trial (sweep_study). With `pruning: true` the sweep reads each trial's
metrics.jsonl while it trains (metrics_tail) and stops a trial whose eval metric is worse than the median of
earlier trials at the same step. sweep.json and sweep.html are made from the study and the run folders
(sweep_report). The section itself and its checks are in tunesmith.sweep_config.

`workers`: N trials train at once on this machine (threads in this process, each waiting on its trial's process;
the cores are split between them through OMP_NUM_THREADS). `storage`: the study in shared storage (a journal file
or an RDB URL, sweep_study.study_storage), so that sweeps started on several machines with the same --storage and
sweep folder name join one study; a worker never asks for a trial the study does not need (finished plus training
trials reach the number asked for), and one that lost a race for the last trial gives it back unrun ("surplus"). The trials do the training; this
process loads no model (it reads the data once, to check that a continued sweep's trials trained on today's data).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError
from tunesmith.experiments.metrics_tail import EvalLines
from tunesmith.experiments.sweep_report import write_reports
from tunesmith.experiments.sweep_study import check_trial_data, counted, final_value, open_study, recover
from tunesmith.experiments.train_process import run_train
from tunesmith.procs import error_line
from tunesmith.runs.folder import check_command_folder
from tunesmith.sweep_config import SweepConfig, SweepParameter, label, resolve_metric

log = logging.getLogger("tunesmith")

POLL_SECONDS = 1.0  # how often a training trial's metrics.jsonl is read
MAX_FAILURES_IN_A_ROW = 3  # then the sweep stops: the config, not the parameters, is likely at fault
SWEEP_ENTRIES = {"configs", "trials", "logs", "plots", "sweep.db", "sweep.db-journal", "sweep.json", "sweep.html",
                 "sweep.journal", "sweep.journal.lock"}


def sweep(config, *, out: str | Path | None = None, trials: int | None = None, progress=None,
          trust_remote_code: bool = False, workers: int = 1, storage: str | None = None) -> dict:
    """Run trials until `trials` (else sweep.trials) have finished, `workers` at a time, then write sweep.json and
    sweep.html. `storage`: a journal file or RDB URL that workers on other machines share (see the module)."""
    from tunesmith.config import load_config, read_yaml

    raw = read_yaml(config) if isinstance(config, (str, Path)) else copy.deepcopy(config)
    cfg = load_config(raw)
    if cfg.sweep is None:
        raise TunesmithError("sweep: the config has no sweep: section; add one naming the keys to search, e.g. "
                             "sweep: {parameters: {train.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}}, trials: 8} "
                             "(see configs/sweep-sentiment-lora.yaml)")
    if workers < 1:
        raise TunesmithError(f"--workers {workers}: give 1 or more trials to train at once")
    s, wanted = cfg.sweep, trials or cfg.sweep.trials
    out = Path(out) if out else default_folder(config)
    check_command_folder(out, "sweep", entries=SWEEP_ENTRIES, example="runs/sweep-mine")
    for sub in ("configs", "trials", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    metric, direction = resolve_metric(cfg)
    study = open_study(out, cfg, metric, direction, wanted, base=cfg.model_dump(mode="json", exclude={"sweep", "compare"}),
                       storage=storage)
    fingerprints: dict = {}  # the data's, by config: read once however many trials share it
    recover(study, out, metric, trust_remote_code, fingerprints, shared=storage is not None)
    if len(counted(study)) < wanted:
        check_trial_data(study, out, trust_remote_code, fingerprints)
    base = {k: v for k, v in raw.items() if k not in ("sweep", "compare")}
    pool = Pool(study, wanted, shared=storage is not None, recover=lambda: recover(
        study, out, metric, trust_remote_code, fingerprints, shared=True))
    run = lambda: work(pool, base, s, out, metric, trust_remote_code, progress)  # noqa: E731
    if workers == 1:
        run()
    else:
        in_parallel(run, workers, pool)
    if pool.error:
        write_reports(study, out, cfg, metric, direction, wanted, config)
        raise TunesmithError(pool.error)
    return write_reports(study, out, cfg, metric, direction, wanted, config)


class Stopped(Exception):
    """The sweep is stopping (Ctrl-C, or trials failing one after the other): a worker's trial ends unfinished."""


class Pool:
    """What the workers of one sweep share: the study, the count asked for, the failures in a row, the stop flag."""

    def __init__(self, study, wanted: int, shared: bool, recover):
        self.study, self.wanted, self.shared, self.recover = study, wanted, shared, recover
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.failed_in_a_row: list = []
        self.error: str | None = None

    def next_trial(self):
        """A new trial while the study needs one (finished plus training trials below the number asked for); None
        once enough have finished or the sweep stops. Waits while the trials in flight may be the last ones."""
        from optuna.trial import TrialState

        while not self.stop.is_set():
            with self.lock:
                done = len(counted(self.study))
                if done >= self.wanted:
                    return None
                running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if done + len(running) < self.wanted:
                    trial = self.study.ask()
                    ahead = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                             if t.number < trial.number]
                    if len(counted(self.study)) + len(ahead) < self.wanted:
                        return trial
                    # a worker elsewhere asked at the same moment for the last trial needed: give this one back unrun
                    trial.set_user_attr("surplus", True)
                    self.study.tell(trial, state=TrialState.FAIL)
                    if "fixed_params" in trial.system_attrs:
                        self.study.enqueue_trial(trial.params)
                elif self.shared:
                    self.recover()  # a worker on this machine that was killed: its trial is trained again
            self.stop.wait(POLL_SECONDS)
        return None

    def ended(self, number: int, error: str | None, log_dir: Path) -> None:
        with self.lock:
            self.failed_in_a_row = [*self.failed_in_a_row, (number, error)] if error else []
            if len(self.failed_in_a_row) >= MAX_FAILURES_IN_A_ROW and not self.error:
                numbers = ", ".join(str(n) for n, _ in self.failed_in_a_row)
                self.error = (f"sweep: trials {numbers} failed one after the other; the last: {error}. See "
                              f"{log_dir}/<trial>.log, fix the config and run the sweep again (finished trials are kept)")
                self.stop.set()


def work(pool: Pool, base: dict, s: SweepConfig, out: Path, metric: str, trust_remote_code: bool, progress) -> None:
    """One worker: trials one after the other, while the study needs them."""
    while (trial := pool.next_trial()) is not None:
        if progress:
            progress(len(counted(pool.study)), pool.wanted, trial.number)
        error = run_trial(pool.study, trial, base, s, out, metric, trust_remote_code, pool.stop)
        pool.ended(trial.number, error, out / "logs")


def in_parallel(run, workers: int, pool: Pool) -> None:
    """`run` on `workers` threads, the cores split between their trials' processes; Ctrl-C stops every trial in
    flight (each is marked interrupted and its parameters queued, as with one worker) and is raised here."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = before or str(threads)
    log.info("sweep: %d workers, %s threads each (OMP_NUM_THREADS)", workers, os.environ["OMP_NUM_THREADS"])

    def guarded():
        try:
            run()
        except Stopped:
            pass

    pending = [threading.Thread(target=guarded, name=f"sweep-worker-{i}", daemon=True) for i in range(workers)]
    try:
        for i, thread in enumerate(pending):
            thread.start()
            if i < workers - 1:
                time.sleep(0.2)  # the first asks first: trial numbers follow the order the workers start
        while any(t.is_alive() for t in pending):
            for thread in pending:
                thread.join(timeout=0.2)
    except BaseException:
        pool.stop.set()
        for thread in pending:
            thread.join()
        raise
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def default_folder(config) -> Path:
    """runs/sweep-<config stem> (runs/<stem> when the stem already starts with sweep)."""
    stem = Path(config).stem if isinstance(config, (str, Path)) else "run"
    return Path("runs") / (stem if stem.startswith("sweep") else f"sweep-{stem}")


def run_trial(study, trial, base: dict, s: SweepConfig, out: Path, metric: str, trust_remote_code: bool,
              stop: threading.Event | None = None) -> str | None:
    """Sample the trial's parameters, write its config, train it in its own process and tell the study how it
    went. Returns the error of a failed trial, else None."""
    from optuna.trial import TrialState

    from tunesmith.config import load_config

    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("host", socket.gethostname())
    params = {key: suggest(trial, key, p) for key, p in s.parameters.items()}
    number, run_dir = trial.number, out / "trials" / str(trial.number)
    log_path, start = out / "logs" / f"{number}.log", time.time()
    try:
        cfg = load_config(base, params)
    except TunesmithError as err:  # a combination that no single parameter's check saw
        state, error = "fail", f"not a valid config: {err}"
    else:
        config_path = out / "configs" / f"{number}.yaml"
        config_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"sweep", "compare"}),
                                              sort_keys=False, allow_unicode=True))
        try:
            state, error = train_trial(trial, config_path, run_dir, log_path, metric, s.pruning, trust_remote_code, stop)
        except BaseException:  # Ctrl-C: the trial's process is stopped; the next sweep trains its parameters again
            trial.set_user_attr("interrupted", True)
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params)
            raise
    trial.set_user_attr("seconds", round(time.time() - start, 1))
    value = final_value(run_dir, metric) if state == "complete" else None
    if state == "complete" and value is None:
        state, error = "fail", f"its eval.json has no tuned {metric!r}"
    if state == "complete":
        study.tell(trial, value)
    elif state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.FAIL)
    shown = {k: label(v) for k, v in params.items()}
    log.info("sweep: trial %d %s%s in %.0f s: %s", number, state, f" ({metric} {value:.4f})" if value is not None else
             f": {error}" if error else "", time.time() - start, shown)
    return error


def suggest(trial, key: str, p: SweepParameter):
    if p.kind == "choices":
        labels = p.labels()
        return labels[trial.suggest_categorical(key, list(labels))]
    if p.kind == "int":
        return trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(key, float(p.low), float(p.high), log=p.log)


def train_trial(trial, config_path: Path, run_dir: Path, log_path: Path, metric: str, pruning: bool,
                trust_remote_code: bool, stop: threading.Event | None = None) -> tuple[str, str | None]:
    """Run `tunesmith train` for one trial in its own process; while it trains, report its eval metric to the
    trial and stop it when the pruner says so. Returns ('complete' | 'pruned' | 'fail', error)."""
    # A run written over an existing folder is written beside it first (tunesmith.runs.folder.plan_output).
    written = run_dir.with_name(run_dir.name + ".partial") if run_dir.is_dir() and any(run_dir.iterdir()) else run_dir
    evals = EvalLines(written / "metrics.jsonl", "eval_" + metric.removeprefix("eval_"))

    def prune() -> bool:  # each new evaluation goes to the trial; the pruner may stop it
        if stop is not None and stop.is_set():
            raise Stopped  # the trial's process is stopped; run_trial marks it interrupted
        for step, value in evals.new():
            trial.report(value, step)
            if pruning and trial.should_prune():
                return True
        return False

    code = run_train(config_path, run_dir, log_path, trust_remote_code, watch=prune, poll_seconds=POLL_SECONDS)
    if code is None:
        return "pruned", None
    for step, value in evals.new():  # the last evaluation, for the record
        trial.report(value, step)
    return ("complete", None) if code == 0 else ("fail", error_line(log_path, code))
