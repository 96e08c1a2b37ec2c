"""Nothing a user owns is lost, no code runs from a file read off disk, and damaged run folders get clear errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith import api
from tunesmith.cli import app
from tunesmith.errors import TunesmithError
from tunesmith.training import train as pipeline

runner = CliRunner()


def invoke(args: list) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in output, output
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, " ".join(output.split())  # rich wraps long lines


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tiny_bert, sentiment_file, tmp_path_factory) -> Path:
    """One finished tiny classify run (LoRA adapter), copied by the tests that damage it."""
    from conftest import tiny_config

    folder = tmp_path_factory.mktemp("trained") / "run"
    api.train(tiny_config(tiny_bert, sentiment_file, "classify", train={"max_steps": 1}), out=folder)
    return folder


def copy_run(trained: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(trained, tmp_path / name))


def write_config(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------------------------------------
# 1-3: --overwrite never deletes what tunesmith did not write, and replaces a run only once the new one finished


def test_overwrite_refuses_a_project_folder_holding_the_config_and_data(tiny_bert, sentiment_file, make_config, tmp_path):
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    data = proj / "data" / "good.jsonl"
    shutil.copy(sentiment_file, data)
    (proj / "notes.md").write_text("my notes")
    config = write_config(proj / "config.yaml", make_config(tiny_bert, str(data), "classify"))
    before = tree(proj)
    code, out = invoke(["train", config, "--out", proj, "--overwrite"])
    assert code == 2 and "refusing" in out and str(proj) in out
    assert tree(proj) == before


def test_overwrite_refuses_a_run_folder_with_foreign_files(trained, tiny_bert, sentiment_file, make_config, tmp_path):
    run = copy_run(trained, tmp_path)
    (run / "notes.md").write_text("mine")
    config = write_config(tmp_path / "c.yaml", make_config(tiny_bert, sentiment_file, "classify"))
    code, out = invoke(["train", config, "--out", run, "--overwrite"])
    assert code == 2 and "notes.md" in out
    assert (run / "notes.md").read_text() == "mine"


def test_out_that_is_a_file_is_refused(tiny_bert, sentiment_file, make_config, tmp_path):
    config = write_config(tmp_path / "c.yaml", make_config(tiny_bert, sentiment_file, "classify"))
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    code, out = invoke(["train", config, "--out", target, "--overwrite"])
    assert code == 2 and "is an existing file" in out and target.read_text() == "keep me"


def test_export_into_the_run_itself_is_refused(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    before = tree(run)
    for target in (run / "adapter", run, run / "adapter" / "sub", tmp_path):
        code, out = invoke(["export", run, "--out", target, "--overwrite"])
        assert code == 2, (target, out)
        assert tree(run) == before


def test_export_replaces_only_its_own_exports(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    mine = tmp_path / "my-model"
    mine.mkdir()
    (mine / "config.json").write_text("{}")  # a user's model folder, not an export
    code, out = invoke(["export", run, "--out", mine, "--overwrite"])
    assert code == 2 and "not a folder tunesmith exported" in out and (mine / "config.json").read_text() == "{}"
    out_dir = tmp_path / "export"
    assert invoke(["export", run, "--out", out_dir])[0] == 0
    assert (out_dir / "adapter_config.json").exists() and (out_dir / "tunesmith-export.json").exists()
    assert invoke(["export", run, "--out", out_dir])[0] == 2  # exists: needs --overwrite
    assert invoke(["export", run, "--out", out_dir, "--overwrite"])[0] == 0


def test_a_failing_retrain_leaves_the_old_run_untouched(trained, tiny_bert, sentiment_file, make_config, tmp_path, monkeypatch):
    run = copy_run(trained, tmp_path)
    before = tree(run)

    def crash(*args, **kwargs):
        raise RuntimeError("boom in the middle of training")

    monkeypatch.setattr(pipeline, "_train_with_trainer", crash)
    with pytest.raises(RuntimeError, match="boom"):
        api.train(make_config(tiny_bert, sentiment_file, "classify"), out=run, overwrite=True)
    assert tree(run) == before
    assert not (tmp_path / "run.partial").exists()
    assert api.Run(run).predict("Fine.")[0]["label"] in ("fresh", "rotten")


def test_overwrite_swaps_in_the_new_run(trained, tiny_bert, sentiment_file, make_config, tmp_path):
    run = copy_run(trained, tmp_path)
    old = json.loads((run / "manifest.json").read_text())
    new = api.train(make_config(tiny_bert, sentiment_file, "classify", train={"max_steps": 2}), out=run, overwrite=True)
    manifest = json.loads((run / "manifest.json").read_text())
    assert new.dir == run and manifest["status"] == "finished" and manifest["train_steps"] == 2 != old["train_steps"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no stage or old folder left behind


# ---------------------------------------------------------------------------------------------
# 4: an unfinished run is reported as such everywhere; resuming is refused, never ignored


def test_a_failed_new_run_is_marked_and_reported(tiny_bert, sentiment_file, make_config, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "_train_with_trainer", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        api.train(make_config(tiny_bert, sentiment_file, "classify"), out=run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "boom" in manifest["error"]
    code, out = invoke(["eval", run])
    assert code == 2 and "did not finish" in out and "--overwrite" in out


@pytest.mark.parametrize("command", [["eval", "{run}"], ["predict", "{run}", "Fine."], ["generate", "{run}", "Hi"],
                                     ["export", "{run}", "--out", "{tmp}/exp"], ["bench", "{run}", "--tasks", "boolq"],
                                     ["predict", "{other}", "Fine.", "--adapter", "{run}"]])
def test_every_command_reports_an_unfinished_run(trained, tmp_path, command):
    run = copy_run(trained, tmp_path)
    other = copy_run(trained, tmp_path, "other")
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    args = [a.format(run=run, other=other, tmp=tmp_path) for a in command]
    code, out = invoke(args)
    assert code == 2 and "did not finish" in out and str(run) in out


def test_retraining_an_unfinished_run_needs_overwrite_and_says_why(trained, tiny_bert, sentiment_file, make_config, tmp_path):
    run = copy_run(trained, tmp_path)
    (run / "manifest.json").write_text(json.dumps({"format": "tunesmith-run", "version": 1, "status": "running"}))
    config = write_config(tmp_path / "c.yaml", make_config(tiny_bert, sentiment_file, "classify"))
    code, out = invoke(["train", config, "--out", run])
    assert code == 2 and "unfinished" in out
    assert invoke(["train", config, "--out", run, "--overwrite"])[0] == 0


def test_resume_from_checkpoint_is_refused(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = make_config(tiny_bert, sentiment_file, "classify", train={"extra": {"resume_from_checkpoint": "x/checkpoint-5"}})
    code, out = invoke(["validate", write_config(tmp_path / "c.yaml", cfg)])
    assert code == 2 and "train.extra.resume_from_checkpoint" in out


def test_a_killed_run_is_reported_as_unfinished(tiny_bert, sentiment_file, make_config, tmp_path):
    """SIGKILL in the middle of training: the run folder says so, and the commands say so."""
    cfg = make_config(tiny_bert, sentiment_file, "classify", train={"max_steps": 100000, "logging_steps": 1})
    config = write_config(tmp_path / "c.yaml", cfg)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "train", str(config), "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert (run / "metrics.jsonl").exists(), "training did not start"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    code, out = invoke(["predict", run, "Fine."])
    assert code == 2 and "did not finish" in out


# ---------------------------------------------------------------------------------------------
# 5: a config read off disk never makes tunesmith run a model's own code


@pytest.fixture
def evil_model(tiny_bert, tmp_path) -> tuple[Path, Path]:
    """A real (tiny) BERT folder whose config.json points auto_map at a Python file that leaves a mark if run."""
    folder = Path(shutil.copytree(tiny_bert, tmp_path / "evil-model"))
    mark = tmp_path / "code-ran"
    (folder / "evil.py").write_text(f"open({str(mark)!r}, 'w').write('ran')\nfrom transformers import BertConfig as EvilConfig\n"
                                    "from transformers import BertForSequenceClassification as EvilModel\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, mark


def test_remote_code_never_runs_from_a_run_config(trained, evil_model, tmp_path):
    folder, mark = evil_model
    run = copy_run(trained, tmp_path, "evil")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"].update(name=str(folder), trust_remote_code=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, out = invoke(["predict", run, "Fine."])
    assert code == 2 and "--trust-remote-code" in out and "model.trust_remote_code" in out
    assert invoke(["validate", run / "config.yaml"])[0] == 0  # checked without running the code
    assert invoke(["eval", run])[0] == 2
    assert not mark.exists(), "the model's own code ran"


def test_remote_code_off_loads_the_plain_architecture(trained, evil_model, tmp_path):
    folder, mark = evil_model
    run = copy_run(trained, tmp_path, "evil")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["name"] = str(folder)  # trust_remote_code stays false: the auto_map is ignored
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, out = invoke(["predict", run, "Fine."])
    assert code == 0, out
    assert not mark.exists()


# ---------------------------------------------------------------------------------------------
# Damaged run folders: one clear error naming the file, for every command that loads a run


def _truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "weights-truncated": lambda run: _truncate(run / "adapter" / "adapter_model.safetensors"),
    "weights-empty": lambda run: (run / "adapter" / "adapter_model.safetensors").write_bytes(b""),
    "weights-garbage": lambda run: (run / "adapter" / "adapter_model.safetensors").write_bytes(b"not a tensor file" * 50),
    "adapter-config-empty": lambda run: (run / "adapter" / "adapter_config.json").write_text(""),
    "adapter-config-truncated": lambda run: _truncate(run / "adapter" / "adapter_config.json"),
    "adapter-config-missing": lambda run: (run / "adapter" / "adapter_config.json").unlink(),
    "manifest-truncated": lambda run: _truncate(run / "manifest.json"),
    "adapter-deleted": lambda run: shutil.rmtree(run / "adapter"),
}
CULPRIT = {"weights": "adapter_model.safetensors", "adapter-config": "adapter_config.json", "manifest": "manifest.json",
           "adapter-deleted": "adapter"}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("command", ["predict", "eval", "export", "adapters"])
def test_damaged_run_folders_get_clear_errors(trained, tmp_path, damage, command):
    run = copy_run(trained, tmp_path)
    DAMAGE[damage](run)
    args = {"predict": ["predict", run, "Fine."], "eval": ["eval", run], "export": ["export", run, "--out", tmp_path / "exp"],
            "adapters": ["predict", copy_run(trained, tmp_path, "other"), "Fine.", "--adapter", run]}[command]
    code, out = invoke(args)
    culprit = next(v for k, v in CULPRIT.items() if damage.startswith(k))
    assert code == 2 and culprit in out and str(run) in out, out
    assert "Repo id" not in out and "model.name" not in out  # not blamed on the config
    assert not (tmp_path / "exp").exists()


def test_damaged_generate_run(tiny_llama, qa_file, make_config, tmp_path):
    run = api.train(make_config(tiny_llama, qa_file, "sft", train={"max_steps": 1}), out=tmp_path / "run").dir
    _truncate(run / "adapter" / "adapter_model.safetensors")
    code, out = invoke(["generate", run, "Hi"])
    assert code == 2 and "adapter_model.safetensors" in out and "damaged" in out


def test_load_adapters_api_raises_a_tunesmith_error(trained, tmp_path):
    from tunesmith.runs.adapters import load_adapters

    run = copy_run(trained, tmp_path)
    (run / "adapter" / "adapter_config.json").write_text("{")
    with pytest.raises(TunesmithError, match="adapter_config.json"):
        load_adapters([copy_run(trained, tmp_path, "other"), run])


# ---------------------------------------------------------------------------------------------
# A responsive CLI: mistakes are reported before torch and transformers load; an unreachable hub fails at once


def test_config_and_run_folder_errors_answer_before_heavy_imports(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", {"model": {"name": "minilm-l6"}, "data": {"source": "x.jsonl"},
                                               "method": {"name": "lora", "rank": 3}, "objective": {"name": "classify"}})
    probe = ("import sys; from typer.testing import CliRunner; from tunesmith.cli import app; "
             "r = CliRunner().invoke(app, sys.argv[1:]); "
             "print(r.exit_code, sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    for args in (["validate", bad], ["train", bad], ["predict", tmp_path / "no-run", "x"], ["eval", tmp_path]):
        out = subprocess.run([sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True, check=True)
        assert out.stdout.split("\n")[-2] == "2 []", (args, out.stdout, out.stderr)


def test_an_unreachable_hub_fails_at_once(sentiment_file, make_config, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = write_config(tmp_path / "c.yaml", make_config("some-org/not-cached-model", sentiment_file, "classify"))
    code, out = invoke(["validate", config])
    assert code == 2 and "model.name" in out and "some-org/not-cached-model" in out and "HF_HUB_OFFLINE" in out
    monkeypatch.delenv("HF_HUB_OFFLINE")
    from tunesmith.assets import hub

    monkeypatch.setattr(hub, "_can_connect", lambda endpoint: False)
    cfg = make_config("minilm-l6", "some-org/some-dataset", "classify")
    code, out = invoke(["validate", write_config(tmp_path / "d.yaml", cfg)])
    assert code == 2 and "data.source" in out and "cannot be reached" in out
