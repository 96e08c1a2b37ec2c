"""Hyperparameter sweeps with Optuna: the config's `sweep:` section names keys and their ranges or choices; each
trial is an ordinary run (its own `tunesmith train` process) under <out>/trials/<number>.

The study lives in <out>/sweep.db (SQLite), so a sweep that was stopped continues where it was: finished trials
count toward the number asked for, and a trial that a killed sweep left running is marked failed and its
parameters are tried again as a new trial. With `pruning: true` the sweep reads each trial's metrics.jsonl while
it trains and stops a trial whose eval metric is worse than the median of earlier trials at the same step.
sweep.json and sweep.html are made from the study and the run folders. The section itself and its checks are
in tunesmith.sweep_config. This process never imports torch: the trials do the training.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError
from tunesmith.sweep_config import SweepConfig, SweepParameter, label, resolve_metric

log = logging.getLogger("tunesmith")

STUDY = "tunesmith-sweep"  # one study per sweep folder
POLL_SECONDS = 1.0  # how often a training trial's metrics.jsonl is read
GRACE_SECONDS = 10.0  # a pruned trial's process gets this long to end after SIGTERM before SIGKILL
MAX_FAILURES_IN_A_ROW = 3  # then the sweep stops: the config, not the parameters, is likely at fault
PRUNER_STARTUP_TRIALS = 2  # trials that always run to the end, so the median has something to stand on
SWEEP_ENTRIES = {"configs", "trials", "logs", "plots", "sweep.db", "sweep.db-journal", "sweep.json", "sweep.html"}


# ---------------------------------------------------------------------------------------------
# The sweep


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
    check_sweep_folder(out)
    for sub in ("configs", "trials", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    metric, direction = resolve_metric(cfg)
    study = open_study(out, cfg, metric, direction, wanted, base=cfg.model_dump(mode="json", exclude={"sweep", "compare"}))
    recover(study, out, metric)
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


def check_sweep_folder(out: Path) -> None:
    """A sweep folder is new, empty, or one that sweep wrote (it continues the study in it); never a folder with
    other files."""
    if out.exists() and not out.is_dir():
        raise TunesmithError(f"--out {out}: is an existing file, not a folder; choose a folder, e.g. --out runs/sweep-mine")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in SWEEP_ENTRIES) if out.is_dir() else []
    if foreign:
        raise TunesmithError(f"--out {out}: holds files that `tunesmith sweep` did not write ({foreign[:8]}); it writes "
                             "configs/, trials/, logs/, sweep.db and sweep.* there, so choose a new or empty folder")


def open_study(out: Path, cfg, metric: str, direction: str, wanted: int, base: dict):
    """The study in <out>/sweep.db, created on first use; one made for another search (other parameters, metric,
    direction, or a change to the rest of the config, which would make its trials incomparable) is refused. The
    sampler is seeded with the seed plus the trials so far, so a resumed sweep does not draw the same points again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep logs its own line per trial
    s = cfg.sweep
    search = {"parameters": {k: p.model_dump(exclude_none=True) for k, p in s.parameters.items()}, "metric": metric,
              "direction": direction, "config": base}
    storage = f"sqlite:///{(out / 'sweep.db').resolve()}"
    study = optuna.create_study(storage=storage, study_name=STUDY, direction=direction, load_if_exists=True)
    before = study.user_attrs.get("search")
    if before is None:
        study.set_user_attr("search", search)
    elif json.loads(json.dumps(before)) != json.loads(json.dumps(search)):
        was, now = _flat(before), _flat(json.loads(json.dumps(search)))
        changed = [f"{k} ({was.get(k, 'unset')} -> {now.get(k, 'unset')})" for k in sorted(set(was) | set(now))
                   if was.get(k) != now.get(k)]
        raise TunesmithError(f"--out {out}: its sweep.db holds a sweep of another search; changed since it began: "
                             f"{'; '.join(changed[:6])}. Undo the change to continue it, or choose a new --out")
    seed = (cfg.train.seed if s.seed is None else s.seed) + len(study.trials)
    if s.sampler == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=seed)
    else:  # TPE models the results after a third of the trials (2 to 10), random before
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, wanted // 3)))
    study.pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS) if s.pruning
                    else optuna.pruners.NopPruner())
    return study


def _flat(tree: dict, prefix: str = "") -> dict:
    """{'config.train.learning_rate': 0.001, ...}: a nested dict's leaves under dotted keys (lists are leaves)."""
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return out


def counted(study) -> list:
    """The trials that count toward the number asked for: completed, pruned, or failed while training (a trial
    that was interrupted does not count: its parameters are tried again)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and "error" in t.user_attrs)]


def recover(study, out: Path, metric: str) -> None:
    """Trials a stopped sweep left RUNNING: one whose run finished gets its result; the others are marked failed
    and their parameters queued, so the next trial trains them again."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == socket.gethostname() and pid != os.getpid() and _alive(pid):
            raise TunesmithError(f"--out {out}: another sweep (process {pid}) is training trial {t.number} in this "
                                 "folder; wait for it to end, or stop it, and run again")
        value = final_value(out / "trials" / str(t.number), metric)
        if value is not None:
            study.tell(t.number, value)
            log.info("sweep: trial %d had finished when the sweep stopped; recorded %s = %.4f", t.number, metric, value)
            continue
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params)
        log.warning("sweep: trial %d was still training when the sweep stopped; marked failed, its parameters are "
                    "trained again as a new trial", t.number)


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    cmd = [sys.executable, "-m", "tunesmith.cli", "train", str(config_path), "--out", str(run_dir), "--overwrite"]
    cmd += ["--trust-remote-code"] if trust_remote_code else []
    # A run written over an existing folder is written beside it first (tunesmith.runs.folder.plan_output).
    written = run_dir.with_name(run_dir.name + ".partial") if run_dir.is_dir() and any(run_dir.iterdir()) else run_dir
    evals = EvalLines(written / "metrics.jsonl", "eval_" + metric.removeprefix("eval_"))
    with log_path.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            while True:
                try:
                    proc.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                for step, value in evals.new():
                    trial.report(value, step)
                    if pruning and trial.should_prune():
                        stop(proc)
                        return "pruned", None
        except BaseException:
            stop(proc)
            raise
    for step, value in evals.new():  # the last evaluation, for the record
        trial.report(value, step)
    if proc.returncode == 0:
        return "complete", None
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return "fail", (errors[-1] if errors else lines[-1] if lines else f"exit status {proc.returncode}").strip()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the process has not ended after GRACE_SECONDS."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _die_with_parent() -> None:
    """Runs in the trial's process before it starts: on Linux, ask for SIGTERM when the sweep's process dies, so
    that a killed sweep does not leave a trial training on (and writing into its folder) unseen."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class EvalLines:
    """The new values of one eval metric in a metrics.jsonl that a training process is appending to."""

    def __init__(self, path: Path, key: str):
        self.path, self.key, self.offset = path, key, 0

    def new(self) -> list[tuple[int, float]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1  # only whole lines: the last one may still be being written
        self.offset += end
        found = []
        for line in chunk[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get(self.key), (int, float)):
                found.append((int(record.get("step", 0)), float(record[self.key])))
        return found


def final_value(run_dir: Path, metric: str) -> float | None:
    """The metric in a finished run's eval.json (tuned), else None."""
    from tunesmith.runs.folder import is_finished, run_marker

    manifest = run_marker(run_dir)
    if manifest is None or not is_finished(manifest) or not (run_dir / "eval.json").is_file():
        return None
    tuned = json.loads((run_dir / "eval.json").read_text()).get("tuned", {})
    for name in (metric, metric.removeprefix("eval_"), "eval_" + metric):
        if isinstance(tuned.get(name), (int, float)):
            return float(tuned[name])
    return None


# ---------------------------------------------------------------------------------------------
# sweep.json and sweep.html


def write_reports(study, out: Path, cfg, metric: str, direction: str, wanted: int, config) -> dict:
    from tunesmith.report.sweep_html import write_sweep_report

    summary = summarize(study, out, cfg, metric, direction, wanted, config)
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_sweep_report(out)
    return summary


def summarize(study, out: Path, cfg, metric: str, direction: str, wanted: int, config) -> dict:
    """Every trial (number, params, state, value, run folder, seconds), the best, and the parameter importances."""
    import optuna
    from optuna.trial import TrialState

    parameters = cfg.sweep.parameters
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_dir = out / "trials" / str(t.number)
        manifest = _read(run_dir / "manifest.json")
        error = t.user_attrs.get("error") or (
            "interrupted: the sweep stopped while it trained (its parameters were queued again)"
            if t.state == TrialState.FAIL else None)
        rows.append({
            "number": t.number, "state": t.state.name.lower(),
            "params": {k: parameters[k].labels().get(v, v) if k in parameters else v for k, v in t.params.items()},
            "labels": {k: label(v) for k, v in t.params.items()}, "value": t.value,
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "run_dir": str(run_dir) if run_dir.exists() else None,
            "train_seconds": manifest.get("train_seconds") if t.state == TrialState.COMPLETE else None,
            "seconds": t.user_attrs.get("seconds"), "error": error})
    complete = [r for r in rows if r["state"] == "complete"]
    best = (max if direction == "maximize" else min)(complete, key=lambda r: r["value"]) if complete else None
    importances, note = None, None
    if len(complete) < 2:
        note = f"needs at least 2 completed trials; this sweep has {len(complete)}"
    else:
        import warnings

        try:
            with warnings.catch_warnings(record=True) as caught:  # e.g. too few trials to tell the parameters apart
                warnings.simplefilter("always")
                importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
            note = "; ".join(sorted({str(w.message) for w in caught})) or None
        except (RuntimeError, ValueError, ZeroDivisionError) as err:
            note = f"could not be computed from these trials ({err})"
    return {"config": str(config) if isinstance(config, (str, Path)) else None, "folder": str(out), "metric": metric,
            "direction": direction, "trials_wanted": wanted, "trials_counted": len(counted(study)),
            "pruning": cfg.sweep.pruning, "sampler": cfg.sweep.sampler,
            "parameters": {k: p.model_dump(exclude_none=True) for k, p in parameters.items()},
            "best": best, "importances": importances, "importances_note": note, "trials": rows,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
