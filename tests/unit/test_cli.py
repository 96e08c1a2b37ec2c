"""Every CLI command runs, on a tiny model and real data."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["predict"], ["generate"], ["validate"], ["data", "preview"], ["assets"], ["export"], ["bench"]])
def test_help(command):
    assert runner.invoke(app, command + ["--help"]).exit_code == 0


def test_classify_commands(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = make_config(tiny_bert, sentiment_file, "classify", eval={"probes": ["Great."]}, report={"html": True})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    for args in (["validate", str(path)], ["data", "preview", str(path), "-n", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", str(path), "train.max_steps=2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {"config.yaml", "manifest.json", "metrics.jsonl", "eval.json", "adapter", "report.html"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("versions", "seed", "data_fingerprint", "trainable_params", "total_params", "train_seconds", "tokens_seen", "tokens_per_second", "peak_memory"):
        assert key in manifest
    assert "data:image/png;base64" in (out / "report.html").read_text()
    assert runner.invoke(app, ["train", str(path), "--out", str(out)]).exit_code == 2  # no clobbering
    result = runner.invoke(app, ["eval", str(out), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout[result.stdout.index("{"):])
    assert set(scores) == {"base", "tuned"} and "accuracy" in scores["tuned"]
    assert runner.invoke(app, ["eval", str(out), "--data", sentiment_file]).exit_code == 0
    result = runner.invoke(app, ["predict", str(out), "A fine film."])
    assert result.exit_code == 0 and ("fresh" in result.output or "rotten" in result.output)


def test_generate_command(tiny_llama, qa_file, make_config, tmp_path):
    from tunesmith import api

    run = api.train(make_config(tiny_llama, qa_file, "sft", data={"format": "chat"}), out=tmp_path / "run")
    result = runner.invoke(app, ["generate", str(run.dir), "What is AI?", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    assert "What is AI?" in result.output
    sampled = ["generate", str(run.dir), "What is AI?", "--max-new-tokens", "4", "--temperature", "1.5", "--n", "3", "--seed", "7"]
    first, again = runner.invoke(app, sampled), runner.invoke(app, sampled)
    assert first.exit_code == 0, first.output
    assert "(3) " in first.output and first.output == again.output  # n samples, reproducible with a seed
    assert run.generate("What is AI?", max_new_tokens=4, temperature=1.5, n=3, seed=7) == \
        run.generate(["What is AI?"], max_new_tokens=4, temperature=1.5, n=3, seed=7)


def test_assets_lists_catalog():
    result = runner.invoke(app, ["assets"])
    assert result.exit_code == 0 and "minilm-l6" in result.output and "rotten_tomatoes" in result.output


def test_predict_with_several_adapters_and_export(tiny_bert, sentiment_file, make_config, tmp_path):
    from tunesmith import api

    a = api.train(make_config(tiny_bert, sentiment_file, "classify"), out=tmp_path / "first")
    b = api.train(make_config(tiny_bert, sentiment_file, "classify", train={"learning_rate": 5e-2}), out=tmp_path / "second")
    result = runner.invoke(app, ["predict", str(a.dir), "A fine film.", "--adapter", str(b.dir), "--json"])
    assert result.exit_code == 0, result.output
    preds = json.loads(result.stdout[result.stdout.index("{"):])
    assert set(preds) == {"first", "second"} and preds["first"][0]["label"] in ("fresh", "rotten")
    result = runner.invoke(app, ["export", str(a.dir), "--out", str(tmp_path / "merged"), "--merge"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "merged" / "config.json").exists()
    assert runner.invoke(app, ["export", str(a.dir), "--out", str(tmp_path / "merged"), "--merge"]).exit_code == 2


def test_bench_command_on_a_model(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["bench", tiny_llama, "--tasks", "openbookqa,boolq", "--limit", "3", "--shots", "1"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / f"bench-{Path(tiny_llama).name}.json").read_text())
    assert set(scores) == {"model"} and set(scores["model"]) == {"openbookqa", "boolq"}
    assert scores["model"]["boolq"]["n"] == 3 and {"acc", "acc_norm"} <= set(scores["model"]["boolq"])
    result = runner.invoke(app, ["bench", tiny_llama, "--tasks", "no-such-file.jsonl"])
    assert result.exit_code == 2 and "no-such-file.jsonl" in result.output
