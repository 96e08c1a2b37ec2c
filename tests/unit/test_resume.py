"""Never lose a run: complete checkpoints, and `--resume` after a SIGKILL gives what an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from tunesmith import api
from tunesmith.cli import app
from tunesmith.errors import TunesmithError
from tunesmith.runs.resume import COMPLETE, last_checkpoint, stopped_run

runner = CliRunner()
STEPS = 24


def config(tiny_bert, sentiment_file, make_config):
    return make_config(tiny_bert, sentiment_file, "classify",
                       train={"max_steps": STEPS, "save_steps": 4, "per_device_train_batch_size": 4})


def weights(run_dir):
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def kill_when_checkpointed(cmd, run_dir, at_least: int = 8) -> None:
    """Start `tunesmith train` in its own process and SIGKILL it once it has written a checkpoint at step >= 8."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = last_checkpoint(run_dir)
        if found is not None and int(found.name.split("-")[1]) >= at_least:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_run_resumes_to_the_same_weights_and_metrics(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = config(tiny_bert, sentiment_file, make_config)
    whole = api.train(cfg, out=tmp_path / "whole")
    assert not (whole.dir / "checkpoints").exists() and not (whole.dir / "base.json").exists()

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "killed"
    kill_when_checkpointed([sys.executable, "-m", "tunesmith.cli", "train", str(path), "--out", str(run_dir)], run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running" and (run_dir / "base.json").exists()

    result = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    resumed = api.load_run(run_dir)
    assert resumed.manifest["status"] == "finished" and resumed.manifest["resumed"][0]["from"].startswith("checkpoint-")
    assert resumed.manifest["train_steps"] == STEPS
    a, b = weights(whole.dir), weights(run_dir)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert resumed.results["tuned"]["accuracy"] == whole.results["tuned"]["accuracy"]
    assert resumed.results["base"] == whole.results["base"]  # measured once, before the kill
    steps = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == sorted(set(steps))  # no step logged twice across the resume


def test_a_half_written_checkpoint_is_skipped(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = config(tiny_bert, sentiment_file, make_config)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "killed"
    kill_when_checkpointed([sys.executable, "-m", "tunesmith.cli", "train", str(path), "--out", str(run_dir)], run_dir)
    good = last_checkpoint(run_dir)
    broken = run_dir / "checkpoints" / "checkpoint-999"  # what a kill while writing leaves: no completion marker
    broken.mkdir()
    (broken / "trainer_state.json").write_text("{")
    assert stopped_run(run_dir) == (run_dir, good)
    (good / COMPLETE).unlink()
    assert last_checkpoint(run_dir) != good


def test_resume_says_what_is_wrong(tiny_bert, sentiment_file, make_config, tmp_path):
    finished = api.train(make_config(tiny_bert, sentiment_file, "classify"), out=tmp_path / "done")
    with pytest.raises(TunesmithError, match="the run finished; there is nothing to resume"):
        api.train(resume=finished.dir)
    with pytest.raises(TunesmithError, match="no stopped tunesmith run there"):
        api.train(resume=tmp_path / "nothing")
    manifest = json.loads((finished.dir / "manifest.json").read_text())
    (finished.dir / "manifest.json").write_text(json.dumps({**manifest, "status": "running", "pid": 999999}))
    with pytest.raises(TunesmithError, match="no complete checkpoint.*train.save_steps"):
        api.train(resume=finished.dir)
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2 and "--resume RUN_DIR" in result.output


def test_save_steps_with_best_model_must_fall_on_evaluations(tiny_bert, sentiment_file, make_config):
    from tunesmith.config import load_config

    with pytest.raises(TunesmithError, match="train.save_steps: with load_best_model_at_end"):
        load_config(make_config(tiny_bert, sentiment_file, "classify",
                                train={"save_steps": 4, "load_best_model_at_end": True, "eval_strategy": "epoch"}))


def test_a_stopped_run_names_resume_and_refuses_an_edited_config(tiny_bert, sentiment_file, make_config, tmp_path):
    """Issue 22: commands that need a finished run name `--resume` and its checkpoint's step; `--resume` refuses a
    config.yaml edited since the run started (the checkpoint's tensors would not fit), before loading anything."""
    from tunesmith.runs.resume import STARTED_CONFIG, config_changes

    cfg = config(tiny_bert, sentiment_file, make_config)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "killed"
    kill_when_checkpointed([sys.executable, "-m", "tunesmith.cli", "train", str(path), "--out", str(run_dir)], run_dir)
    step = int(last_checkpoint(run_dir).name.split("-")[1])
    resume = f"`tunesmith train --resume {run_dir}`"
    for args in (["predict", str(run_dir), "A fine film."], ["eval", str(run_dir)], ["train", str(path), "--out", str(run_dir)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert resume in result.output and f"(step {step})" in result.output, result.output

    config_file = run_dir / "config.yaml"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest[STARTED_CONFIG] == yaml.safe_load(config_file.read_text())  # the copy kept when it started
    started = config_file.read_text()
    config_file.write_text(started.replace("  r: 4\n", "  r: 8\n"))
    result = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "method.r: 4 when it started, 8 now" in result.output and "Put the values back" in result.output
    assert f"tunesmith train {config_file} --out OTHER_FOLDER" in result.output
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "running"  # not marked failed
    config_file.write_text(started)
    assert stopped_run(run_dir) == (run_dir, last_checkpoint(run_dir))
    # a run started before the manifest kept the config: nothing to compare, resume as before
    assert config_changes(run_dir, {k: v for k, v in manifest.items() if k != STARTED_CONFIG}) == []
