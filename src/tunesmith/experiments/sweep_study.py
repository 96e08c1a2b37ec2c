"""A sweep's Optuna study in <out>/sweep.db (or in shared storage: `--storage` a journal file on a filesystem several
machines see, or an RDB URL; workers on each machine join the study named after the sweep folder): made on first use, refused when it was made for another search or its
trials trained on other data than the config reads now, and continued after a stop (a trial that a stopped sweep
left running gets its result if its run finished, else it is marked failed and its parameters queued again)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.experiments.reuse import data_change
from tunesmith.procs import alive
from tunesmith.runs.folder import finished_run

log = logging.getLogger("tunesmith")

STUDY = "tunesmith-sweep"  # one study per sweep folder
PRUNER_STARTUP_TRIALS = 2  # trials that always run to the end, so the median has something to stand on


def study_storage(out: Path, storage: str | None):
    """(storage, study name): <out>/sweep.db by default; `storage` a URL of an RDB Optuna supports (sqlite:///,
    postgresql://, mysql://) or a journal file (a path, or journal:///path; Optuna's JournalFileBackend, which locks
    safely on a shared filesystem such as NFS). A shared study is named after the sweep folder (sweep-<stem>)."""
    if storage is None:
        return f"sqlite:///{(out / 'sweep.db').resolve()}", STUDY
    name = f"{STUDY}:{Path(out).name}"
    if "://" in storage and not storage.startswith("journal://"):
        return storage, name
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(storage.removeprefix("journal://")).expanduser()
    if not path.parent.is_dir():
        raise TunesmithError(f"--storage {storage}: the folder {path.parent} does not exist; give a journal file in an "
                             "existing folder (on a filesystem every worker sees), or an RDB URL such as "
                             "postgresql://user@host/db")
    return JournalStorage(JournalFileBackend(str(path))), name


def open_study(out: Path, cfg, metric: str, direction: str, wanted: int, base: dict, storage: str | None = None):
    """The study in <out>/sweep.db, created on first use; one made for another search (other parameters, metric,
    direction, or a change to the rest of the config, which would make its trials incomparable) is refused. The
    sampler is seeded with the seed plus the trials so far, so a resumed sweep does not draw the same points again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep logs its own line per trial
    s = cfg.sweep
    search = {"parameters": {k: p.model_dump(exclude_none=True) for k, p in s.parameters.items()}, "metric": metric,
              "direction": direction, "config": base}
    where, name = study_storage(out, storage)
    try:
        study = optuna.create_study(storage=where, study_name=name, direction=direction, load_if_exists=True)
    except Exception as err:  # a URL Optuna or SQLAlchemy cannot use: no driver, no server, a bad scheme
        if storage is None:
            raise
        raise TunesmithError(f"--storage {storage}: Optuna cannot open it ({type(err).__name__}: {err}); give a journal "
                             "file path or an RDB URL (sqlite:///path.db, postgresql://..., mysql://...)") from None
    before = study.user_attrs.get("search")
    if before is None:
        study.set_user_attr("search", search)
    elif json.loads(json.dumps(before)) != json.loads(json.dumps(search)):
        was, now = _flat(before), _flat(json.loads(json.dumps(search)))
        changed = [f"{k} ({was.get(k, 'unset')} -> {now.get(k, 'unset')})" for k in sorted(set(was) | set(now))
                   if was.get(k) != now.get(k)]
        raise TunesmithError(f"--out {out}: its sweep.db holds a sweep of another search; changed since it began: "
                             f"{'; '.join(changed[:6])}. Undo the change to continue it, or choose a new --out")
    seed = sampler_seed(cfg.train.seed if s.seed is None else s.seed, len(study.trials), shared=storage is not None)
    if s.sampler == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=seed)
    else:  # TPE models the results after a third of the trials (2 to 10), random before
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, wanted // 3)))
    study.pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS) if s.pruning
                    else optuna.pruners.NopPruner())
    return study


def sampler_seed(seed: int, trials_so_far: int, shared: bool) -> int:
    """The sampler's seed: the config's seed and the trials so far (a resumed sweep draws new points, and the same
    ones on every rerun). Workers sharing a study also mix in their host and process, hashed rather than added: with
    seed + trials + pid, a worker that joined one trial later with a pid one lower drew the very same points."""
    if not shared:
        return seed + trials_so_far
    key = f"{seed}:{trials_so_far}:{socket.gethostname()}:{os.getpid()}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


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


def recover(study, out: Path, metric: str, trust_remote_code: bool = False, cache: dict | None = None,
            shared: bool = False) -> None:
    """Trials a stopped sweep left RUNNING: one whose run finished, on the data its config reads now, gets its
    result; the others are marked failed and their parameters queued, so the next trial trains them again. In shared
    storage, a trial another live worker trains is its own (on this machine: its process is alive; on another
    machine: always, as this one cannot tell; that machine recovers it when its sweep is started again; a trial just
    asked for, not yet marked with its worker's host and process, too)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid, here = t.user_attrs.get("pid"), t.user_attrs.get("host") == socket.gethostname()
        if shared and (pid == os.getpid() or "host" not in t.user_attrs or not here or alive(pid)):
            continue
        if here and alive(pid):
            raise TunesmithError(f"--out {out}: another sweep (process {pid}) is training trial {t.number} in this "
                                 "folder; wait for it to end, or stop it, and run again")
        run_dir = out / "trials" / str(t.number)
        value = final_value(run_dir, metric)
        change = None if value is None else data_change(run_dir, out / "configs" / f"{t.number}.yaml",
                                                        trust_remote_code, cache)
        if value is not None and change is None:
            study.tell(t.number, value)
            log.info("sweep: trial %d had finished when the sweep stopped; recorded %s = %.4f", t.number, metric, value)
            continue
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params)
        log.warning("sweep: trial %d %s; marked failed, its parameters are trained again as a new trial", t.number,
                    f"finished after the sweep stopped, but {change}" if change else
                    "was still training when the sweep stopped")


def check_trial_data(study, out: Path, trust_remote_code: bool = False, cache: dict | None = None) -> None:
    """Before more trials train: the completed ones trained on the data their configs read now (the fingerprints
    in their manifest.json); else new trials would not be comparable with them, and the sweep is refused."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_dir, config = out / "trials" / str(t.number), out / "configs" / f"{t.number}.yaml"
        if not finished_run(run_dir) or not config.is_file():
            continue
        change = data_change(run_dir, config, trust_remote_code, cache)
        if change:
            raise TunesmithError(f"--out {out}: trial {t.number} of this sweep trained on other data than its config "
                                 f"reads now ({change}); new trials would not be comparable with it. Undo the change "
                                 "to the data to continue the sweep, or choose a new --out")


def final_value(run_dir: Path, metric: str) -> float | None:
    """The metric in a finished run's eval.json (tuned), else None."""
    if not finished_run(run_dir):
        return None
    tuned = json.loads((run_dir / "eval.json").read_text()).get("tuned", {})
    for name in (metric, metric.removeprefix("eval_"), "eval_" + metric):
        if isinstance(tuned.get(name), (int, float)):
            return float(tuned[name])
    return None
