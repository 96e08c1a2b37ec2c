"""The comparison lab: every variant runs (a failing one is reported, the others complete), finished runs are
skipped on a re-run, compare.json / compare.html hold the table and the plots."""

import json
import logging
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.experiments.compare import compare
from tunesmith.report.plots import pareto_front


def test_pareto_front():
    points = [(10, 0.7), (100, 0.8), (50, 0.6), (1000, 0.79), (5, 0.5)]
    assert pareto_front(points, higher_is_better=True) == [(5, 0.5), (10, 0.7), (100, 0.8)]
    assert pareto_front([(1, 3.0), (2, 2.0), (3, 2.5)], higher_is_better=False) == [(1, 3.0), (2, 2.0)]


def test_compare_runs_each_method_reports_failures_and_skips_finished(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = make_config(tiny_bert, sentiment_file, "classify", report={"html": True})
    cfg["compare"] = [
        {"name": "lora-r4", "method": {"name": "lora", "r": 4}},
        {"name": "head", "method": {"name": "head"}, "overrides": {"train.learning_rate": 1e-2}},
        {"name": "broken", "method": {"name": "freeze", "top_k_layers": 9}},  # the tiny model has 2 blocks
        {"name": "invalid", "method": {"name": "lora", "rank": 4}},  # not a lora option
    ]
    out = tmp_path / "cmp"
    summary = compare(cfg, out=out)
    rows = {r["name"]: r for r in summary["rows"]}
    assert summary["metric"] == "accuracy"
    assert rows["lora-r4"]["status"] == rows["head"]["status"] == "ok"
    assert rows["lora-r4"]["trainable_params"] > rows["head"]["trainable_params"] > 0
    assert rows["broken"]["status"] == "failed" and "top_k_layers: 9 is more than the 2 blocks" in rows["broken"]["error"]
    assert rows["invalid"]["status"] == "failed" and "method.rank: unknown key" in rows["invalid"]["error"]
    saved = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in saved["rows"]] == ["lora-r4", "head", "broken", "invalid"]
    html = (out / "compare.html").read_text()
    assert html.count("data:image/png;base64") >= 4 and "failed: " in html and 'class="best"' in html
    assert "<script" not in html and "http" not in html  # works offline
    machine = json.loads((out / "runs" / "head" / "manifest.json").read_text())["machine"]
    assert machine["cpu_capability"] and machine["threads"] >= 1 and machine["precision"]
    assert f"Measured on: <b>{machine['summary']}</b>" in html and rows["head"]["machine"] == machine["summary"]
    stamp = (out / "runs" / "head" / "eval.json").stat().st_mtime
    again = compare(cfg, out=out)  # finished runs are skipped
    assert (out / "runs" / "head" / "eval.json").stat().st_mtime == stamp
    assert [r["status"] for r in again["rows"]] == ["ok", "ok", "failed", "failed"]


def test_compare_command_with_methods(tiny_bert, sentiment_file, make_config, tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(make_config(tiny_bert, sentiment_file, "classify")))
    result = CliRunner().invoke(app, ["compare", str(path), "--methods", "lora,ia3", "--out", str(tmp_path / "cmp"), "train.max_steps=2"])
    assert result.exit_code == 0, result.output
    assert "lora" in result.output and "ia3" in result.output
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    ia3 = yaml.safe_load((tmp_path / "cmp" / "configs" / "ia3.yaml").read_text())
    assert ia3["train"]["learning_rate"] == 5e-3 and ia3["train"]["max_steps"] == 2  # the method's usual rate, shared budget


def test_a_finished_variant_trains_again_when_its_data_or_config_changed(tiny_bert, sentiment_file, make_config,
                                                                         tmp_path, caplog):
    data = tmp_path / "sentiment.jsonl"
    data.write_text(Path(sentiment_file).read_text())
    cfg = make_config(tiny_bert, str(data), "classify", train={"max_steps": 2})
    out, manifest = tmp_path / "cmp", tmp_path / "cmp" / "runs" / "lora" / "manifest.json"
    compare(cfg, ["lora"], out=out)
    stamp = manifest.stat().st_mtime
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        compare(cfg, ["lora"], out=out)
    assert manifest.stat().st_mtime == stamp and "lora finished before with the same config and data" in caplog.text

    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-4]))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        summary = compare(cfg, ["lora"], out=out)
    assert manifest.stat().st_mtime != stamp and summary["rows"][0]["status"] == "ok"
    assert f"training lora (its data changed: {data} now gives other" in caplog.text
    assert json.loads(manifest.read_text())["train_examples"] == 96 - 4 - 16

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        compare(cfg, ["lora"], out=out, overrides=["train.max_steps=3"])
    assert "training lora (its config changed)" in caplog.text
    assert json.loads(manifest.read_text())["train_steps"] == 3


def test_a_folder_compare_did_not_write_is_refused(tiny_bert, sentiment_file, make_config, tmp_path):
    import pytest

    from tunesmith.errors import TunesmithError

    cfg = make_config(tiny_bert, sentiment_file, "classify")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(TunesmithError, match=r"holds files that `tunesmith compare` did not write \(\['notes.txt'\]\)"):
        compare(cfg, ["lora"], out=tmp_path / "mine")
    (tmp_path / "file").write_text("mine")
    with pytest.raises(TunesmithError, match="is an existing file, not a folder; choose a folder, e.g. --out runs/"):
        compare(cfg, ["lora"], out=tmp_path / "file")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine" and (tmp_path / "file").read_text() == "mine"
