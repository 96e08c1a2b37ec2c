"""Sweeps: each trial a run folder trained in its own process, the study in sweep.db (a second run trains nothing
new; a killed sweep continues, its unfinished trial marked failed and trained again), pruning stops a trial,
config mistakes are reported by `tunesmith validate`, and a folder the sweep did not write is refused."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.errors import TunesmithError
from tunesmith.experiments import sweep as sweep_module
from tunesmith.experiments.sweep import sweep


def sweep_config(make_config, tiny_bert, sentiment_file, **sweep_section):
    cfg = make_config(tiny_bert, sentiment_file, "classify", train={"max_steps": 3})
    cfg["sweep"] = {"parameters": {
        "train.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
        "method.r": {"low": 2, "high": 4},
        "method.target_modules": {"choices": [["query"], ["query", "value"]]},
    }, "trials": 3, "seed": 0, **sweep_section}
    return cfg


def write(tmp_path, cfg, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_sweep_writes_trials_report_and_resumes_without_training_again(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = sweep_config(make_config, tiny_bert, sentiment_file)
    cfg["report"] = {"html": True}
    path, out = write(tmp_path, cfg), tmp_path / "sw"
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "sweep on accuracy" in result.output and "complete" in result.output
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["metric"] == "accuracy" and summary["direction"] == "maximize"
    assert [t["state"] for t in summary["trials"]] == ["complete"] * 3
    for t in summary["trials"]:
        trial_cfg = yaml.safe_load((out / "configs" / f"{t['number']}.yaml").read_text())
        assert trial_cfg["train"]["learning_rate"] == t["params"]["train.learning_rate"]
        assert trial_cfg["method"]["target_modules"] == t["params"]["method.target_modules"]  # a list, as given
        assert 2 <= trial_cfg["method"]["r"] <= 4 and "sweep" not in trial_cfg
        assert json.loads((out / "trials" / str(t["number"]) / "manifest.json").read_text())["status"] == "finished"
        assert t["value"] == json.loads((out / "trials" / str(t["number"]) / "eval.json").read_text())["tuned"]["accuracy"]
        assert t["train_seconds"] > 0
    best = summary["best"]
    assert best["value"] == max(t["value"] for t in summary["trials"])
    assert set(summary["importances"]) == set(cfg["sweep"]["parameters"])
    html = (out / "sweep.html").read_text()
    assert f"Trial <b>{best['number']}</b>" in html and f'href="trials/{best["number"]}/report.html"' in html
    assert html.count("data:image/png;base64") == 3 and "Parameter importances" in html  # one plot per parameter
    assert "<script" not in html and "http" not in html

    stamps = {p: p.stat().st_mtime for p in (out / "trials").glob("*/eval.json")}
    again = sweep(path, out=out)  # resumed from sweep.db: 3 trials done, none trained
    assert len(again["trials"]) == 3 and {p: p.stat().st_mtime for p in stamps} == stamps
    changed = {**cfg, "train": {**cfg["train"], "max_steps": 5}}  # other trials than the sweep's so far
    with pytest.raises(TunesmithError, match=r"another search; changed since it began: config.train.max_steps \(3 -> 5\)"):
        sweep(changed, out=out)
    cfg["sweep"]["parameters"]["method.r"] = {"choices": [2, 8]}
    with pytest.raises(TunesmithError, match=r"parameters.method.r.choices \(unset -> \[2, 8\]\)"):
        sweep(cfg, out=out)


def test_killed_sweep_continues_and_retrains_the_unfinished_trial(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = sweep_config(make_config, tiny_bert, sentiment_file, trials=2)
    path, out = write(tmp_path, cfg), tmp_path / "sw"
    command = "from tunesmith.cli import main; main()"  # the `tunesmith` command
    proc = subprocess.Popen([sys.executable, "-c", command, "sweep", str(path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    log = out / "logs" / "0.log"
    # wait for the trial's process to write (not merely for its log to be opened, just before the fork): CPython drops
    # a KeyboardInterrupt raised in the fork's at-fork hooks ("Exception ignored in _releaseLock"), so a Ctrl-C landing
    # on the fork itself is lost; the test is about a Ctrl-C while a trial trains
    while not (log.exists() and log.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)  # trial 0's process has started: it needs seconds to load before it trains
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    summary = sweep(path, out=out)
    states = {t["number"]: t for t in summary["trials"]}
    assert states[0]["state"] == "fail" and "interrupted" in states[0]["error"]
    assert [states[n]["state"] for n in (1, 2)] == ["complete", "complete"] and summary["trials_counted"] == 2
    assert states[1]["params"] == states[0]["params"]  # the unfinished trial's parameters, trained again
    manifest = out / "trials" / "0" / "manifest.json"  # trial 0's own process ended with the sweep (never finished)
    assert not manifest.exists() or json.loads(manifest.read_text())["status"] != "finished"


def test_pruning_stops_a_trial_and_marks_it_pruned(tiny_bert, sentiment_file, make_config, tmp_path, monkeypatch):
    import optuna

    cfg = sweep_config(make_config, tiny_bert, sentiment_file, trials=1, pruning=True)
    cfg["train"].update({"max_steps": 2000, "eval_strategy": "steps", "eval_steps": 2})
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    monkeypatch.setattr(sweep_module, "POLL_SECONDS", 0.2)
    start = time.time()
    summary = sweep(cfg, out=tmp_path / "sw")
    (trial,) = summary["trials"]
    assert trial["state"] == "pruned" and trial["intermediate"] and trial["value"] == list(trial["intermediate"].values())[-1]
    manifest = json.loads((tmp_path / "sw" / "trials" / "0" / "manifest.json").read_text())
    assert manifest["status"] == "running"  # stopped mid-training, not finished
    assert summary["best"] is None and "needs at least 2 completed trials" in summary["importances_note"]
    assert "No trial completed yet" in (tmp_path / "sw" / "sweep.html").read_text()
    assert time.time() - start < 120


@pytest.mark.parametrize("change, message", [
    ({"parameters": {"train.learnig_rate": {"choices": [1e-3, 1e-2]}}},
     "sweep.parameters.train.learnig_rate: train.learnig_rate: unknown key; did you mean 'learning_rate'?"),
    ({"parameters": {"train.learning_rate": {"low": 1e-2, "high": 1e-4}}}, "sweep.parameters.train.learning_rate: low (0.01) is not below high (0.0001); swap them"),
    ({"parameters": {"method.target_modules": {"choices": []}}}, "sweep.parameters.method.target_modules: choices is empty"),
    ({"parameters": {"method.r": {"low": 0, "high": 8}}}, "sweep.parameters.method.r: method.r:"),
    ({"direction": "up"}, "sweep.direction: input should be 'max', 'min', 'maximize' or 'minimize', found 'up'"),
    ({"metric": "acuracy"}, "sweep.metric: 'acuracy' is not a metric objective 'classify' reports; did you mean 'accuracy'?"),
    ({"pruning": True}, "sweep.pruning: needs evaluation during training"),
])
def test_config_mistakes_are_reported_by_validate(change, message, tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = make_config(tiny_bert, sentiment_file, "classify")
    cfg["sweep"] = {"parameters": {"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}, **change}
    result = CliRunner().invoke(app, ["validate", str(write(tmp_path, cfg))])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_folder_the_sweep_did_not_write_is_refused(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = sweep_config(make_config, tiny_bert, sentiment_file)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    with pytest.raises(TunesmithError, match=r"holds files that `tunesmith sweep` did not write \(\['notes.txt'\]\)"):
        sweep(cfg, out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my notes"
    no_section = make_config(tiny_bert, sentiment_file, "classify")
    with pytest.raises(TunesmithError, match="the config has no sweep: section"):
        sweep(no_section, out=tmp_path / "new")


def test_ctrl_c_says_the_trial_is_retried_and_how_to_continue(tiny_bert, sentiment_file, make_config, tmp_path):
    import optuna

    cfg = sweep_config(make_config, tiny_bert, sentiment_file, trials=2)
    path, out = write(tmp_path, cfg), tmp_path / "sw"
    command = "from tunesmith.cli import main; main()"  # the `tunesmith` command
    # started as a shell starts a job with `&` (SIGINT ignored): tunesmith answers Ctrl-C all the same
    proc = subprocess.Popen([sys.executable, "-c", command, "sweep", str(path), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    log = out / "logs" / "0.log"
    # wait for the trial's process to write (not merely for its log to be opened, just before the fork): CPython drops
    # a KeyboardInterrupt raised in the fork's at-fork hooks ("Exception ignored in _releaseLock"), so a Ctrl-C landing
    # on the fork itself is lost; the test is about a Ctrl-C while a trial trains
    while not (log.exists() and log.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    said = " ".join(stderr.split())
    assert "sweep interrupted; the trial in flight will be retried: run the same command to continue" in said
    assert "Traceback" not in stderr and "Aborted" not in stderr
    study = optuna.load_study(study_name="tunesmith-sweep", storage=f"sqlite:///{out / 'sweep.db'}")
    interrupted, queued = study.get_trials()
    assert interrupted.state == optuna.trial.TrialState.FAIL and interrupted.user_attrs["interrupted"]
    assert queued.state == optuna.trial.TrialState.WAITING  # its parameters, for the next run of the command


def test_a_continued_sweep_refuses_trials_trained_on_other_data(tiny_bert, sentiment_file, make_config, tmp_path):
    data = tmp_path / "sentiment.jsonl"
    data.write_text(open(sentiment_file).read())
    cfg = sweep_config(make_config, tiny_bert, str(data), trials=1)
    out = tmp_path / "sw"
    sweep(cfg, out=out)
    assert len(sweep(cfg, out=out)["trials"]) == 1  # unchanged: continued, nothing trained
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-5]))
    assert len(sweep(cfg, out=out)["trials"]) == 1  # nothing to train: the report is made from what was trained
    with pytest.raises(TunesmithError, match=r"trial 0 of this sweep trained on other data than its config reads now "
                                             r"\(its data changed: .*sentiment.jsonl now gives other .*Undo the change"):
        sweep(cfg, out=out, trials=2)
