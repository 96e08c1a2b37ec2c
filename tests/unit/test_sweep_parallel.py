"""Parallel sweeps: `--workers N` trains N trials at once; `--storage` keeps the study in a journal file that a
second `tunesmith sweep` joins. No trial trains twice, the finished trials are the number asked for, and a worker
killed with SIGKILL leaves a study that the next run continues (its trials failed and trained again)."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from test_sweep import sweep_config, write

from tunesmith.errors import TunesmithError
from tunesmith.experiments.sweep import sweep

COMMAND = "from tunesmith.cli import main; main()"  # the `tunesmith` command


def _study(out, journal):
    from tunesmith.experiments.sweep_study import study_storage

    storage, name = study_storage(out, str(journal))
    return optuna.load_study(study_name=name, storage=storage)


def _sweep(path, out, journal, *more):
    return subprocess.Popen([sys.executable, "-c", COMMAND, "sweep", str(path), "--out", str(out), "--storage",
                             str(journal), *more], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_sweeps_on_one_journal_share_the_trials(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = sweep_config(make_config, tiny_bert, sentiment_file, trials=4)
    path, out = write(tmp_path, cfg), tmp_path / "sw"
    out.mkdir()
    journal = out / "sweep.journal"
    first = _sweep(path, out, journal, "--workers", "2")
    second = _sweep(path, out, journal)
    outputs = [p.communicate(timeout=240) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    study = _study(out, journal)
    ran = [t for t in study.get_trials() if not t.user_attrs.get("surplus")]
    assert [t.state for t in ran] == [optuna.trial.TrialState.COMPLETE] * 4  # the number asked for, none twice
    assert sorted(t.number for t in ran) == sorted(int(p.stem) for p in (out / "logs").glob("*.log"))
    assert {t.user_attrs["pid"] for t in ran} == {first.pid, second.pid}  # both workers trained trials
    for t in ran:
        assert json.loads((out / "trials" / str(t.number) / "manifest.json").read_text())["status"] == "finished"
    assert len({json.dumps(t.params, sort_keys=True) for t in ran}) == 4  # no point drawn twice
    assert "2 workers, 1 threads each" in outputs[0][1]
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["trials_counted"] == 4 and all(t["state"] == "complete" for t in summary["trials"])
    assert not (out / "sweep.db").exists()


def test_a_killed_worker_leaves_a_study_the_next_run_continues(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = sweep_config(make_config, tiny_bert, sentiment_file, trials=3)
    path, out = write(tmp_path, cfg), tmp_path / "sw"
    journal = tmp_path / "shared.journal"
    proc = _sweep(path, out, journal, "--workers", "2")
    deadline = time.time() + 120
    while not all((out / "logs" / f"{n}.log").exists() for n in (0, 1)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    summary = sweep(path, out=out, storage=str(journal))  # the next run, on this machine: recovers both trials
    states = {t["number"]: t for t in summary["trials"]}
    assert [states[n]["state"] for n in (0, 1)] == ["fail", "fail"]
    assert "interrupted" in states[0]["error"] and "interrupted" in states[1]["error"]
    complete = [t for t in summary["trials"] if t["state"] == "complete"]
    assert len(complete) == 3 and summary["trials_counted"] == 3
    retrained = [json.dumps(t["params"], sort_keys=True) for t in complete]
    for n in (0, 1):  # the killed trials' parameters, trained again; their own folders never finished
        assert json.dumps(states[n]["params"], sort_keys=True) in retrained
        manifest = out / "trials" / str(n) / "manifest.json"
        assert not manifest.exists() or json.loads(manifest.read_text())["status"] != "finished"


def test_storage_mistakes_are_clear(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = sweep_config(make_config, tiny_bert, sentiment_file)
    with pytest.raises(TunesmithError, match="--storage .*the folder .*nowhere does not exist"):
        sweep(cfg, out=tmp_path / "a", storage=str(tmp_path / "nowhere" / "s.journal"))
    with pytest.raises(TunesmithError, match="--storage bogus://x: Optuna cannot open it"):
        sweep(cfg, out=tmp_path / "b", storage="bogus://x")
    with pytest.raises(TunesmithError, match="--workers 0: give 1 or more"):
        sweep(cfg, out=tmp_path / "c", workers=0)


def test_workers_that_join_a_shared_study_at_different_moments_draw_different_points(monkeypatch):
    """The CI failure that made this test: worker B (pid p+1) opened the study with 0 trials, worker A (pid p) with 1;
    seed + trials + pid gave both the same seed, and their first trials the same parameters."""
    from tunesmith.experiments import sweep_study

    seeds = set()
    for pid, trials_so_far in ((12418, 1), (12419, 0), (12420, 2), (12417, 3)):
        monkeypatch.setattr(sweep_study.os, "getpid", lambda pid=pid: pid)
        seeds.add(sweep_study.sampler_seed(42, trials_so_far, shared=True))
    assert len(seeds) == 4
    assert sweep_study.sampler_seed(42, 3, shared=False) == 45  # one machine: reproducible, new points on resume
