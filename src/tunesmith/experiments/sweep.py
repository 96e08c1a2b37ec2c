"""Hyperparameter sweeps with Optuna: the config's `sweep:` section names keys and their ranges or choices; each
trial is an ordinary run (its own `tunesmith train` process) under <out>/trials/<number>.

The study lives in <out>/sweep.db (SQLite), so a sweep that was stopped continues where it was: finished trials
count toward the number asked for, and a trial that a stopped sweep left running is marked failed and its
parameters are tried again as a new trial (sweep_study). With `pruning: true` the sweep reads each trial's
metrics.jsonl while it trains (metrics_tail) and stops a trial whose eval metric is worse than the median of
earlier trials at the same step. sweep.json and sweep.html are made from the study and the run folders
(sweep_report). The section itself and its checks are in tunesmith.sweep_config. The trials do the training; this
process loads no model (it reads the data once, to check that a continued sweep's trials trained on today's data).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
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
SWEEP_ENTRIES = {"configs", "trials", "logs", "plots", "sweep.db", "sweep.db-journal", "sweep.json", "sweep.html"}


def sweep(config, *, out: str | Path | None = None, trials: int | None = None, progress=None,
          trust_remote_code: bool = False) -> dict:
    """Run trials until `trials` (else sweep.trials) have finished, then write sweep.json and sweep.html."""
    from tunesmith.config import load_config, read_yaml

    raw = read_yaml(config) if isinstance(config, (str, Path)) else copy.deepcopy(config)
    cfg = load_config(raw)
    if cfg.sweep is None:
        raise TunesmithError("sweep: the config has no sweep: section; add one naming the keys to search, e.g. "
                             "sweep: {parameters: {train.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}}, trials: 8} "
                             "(see configs/sweep-sentiment-lora.yaml)")
    s, wanted = cfg.sweep, trials or cfg.sweep.trials
    out = Path(out) if out else default_folder(config)
    check_command_folder(out, "sweep", entries=SWEEP_ENTRIES, example="runs/sweep-mine")
    for sub in ("configs", "trials", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    metric, direction = resolve_metric(cfg)
    study = open_study(out, cfg, metric, direction, wanted, base=cfg.model_dump(mode="json", exclude={"sweep", "compare"}))
    fingerprints: dict = {}  # the data's, by config: read once however many trials share it
    recover(study, out, metric, trust_remote_code, fingerprints)
    if len(counted(study)) < wanted:
        check_trial_data(study, out, trust_remote_code, fingerprints)
    base = {k: v for k, v in raw.items() if k not in ("sweep", "compare")}
    failed_in_a_row = []
    while (done := len(counted(study))) < wanted:
        trial = study.ask()
        if progress:
            progress(done, wanted, trial.number)
        error = run_trial(study, trial, base, s, out, metric, trust_remote_code)
        failed_in_a_row = [*failed_in_a_row, (trial.number, error)] if error else []
        if len(failed_in_a_row) >= MAX_FAILURES_IN_A_ROW:
            write_reports(study, out, cfg, metric, direction, wanted, config)
            numbers = ", ".join(str(n) for n, _ in failed_in_a_row)
            raise TunesmithError(f"sweep: trials {numbers} failed one after the other; the last: {error}. See "
                                 f"{out / 'logs'}/<trial>.log, fix the config and run the sweep again (finished trials are kept)")
    return write_reports(study, out, cfg, metric, direction, wanted, config)


def default_folder(config) -> Path:
    """runs/sweep-<config stem> (runs/<stem> when the stem already starts with sweep)."""
    stem = Path(config).stem if isinstance(config, (str, Path)) else "run"
    return Path("runs") / (stem if stem.startswith("sweep") else f"sweep-{stem}")


def run_trial(study, trial, base: dict, s: SweepConfig, out: Path, metric: str, trust_remote_code: bool) -> str | None:
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
            state, error = train_trial(trial, config_path, run_dir, log_path, metric, s.pruning, trust_remote_code)
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
                trust_remote_code: bool) -> tuple[str, str | None]:
    """Run `tunesmith train` for one trial in its own process; while it trains, report its eval metric to the
    trial and stop it when the pruner says so. Returns ('complete' | 'pruned' | 'fail', error)."""
    # A run written over an existing folder is written beside it first (tunesmith.runs.folder.plan_output).
    written = run_dir.with_name(run_dir.name + ".partial") if run_dir.is_dir() and any(run_dir.iterdir()) else run_dir
    evals = EvalLines(written / "metrics.jsonl", "eval_" + metric.removeprefix("eval_"))

    def prune() -> bool:  # each new evaluation goes to the trial; the pruner may stop it
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
