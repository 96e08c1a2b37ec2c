"""`tunesmith pipeline`: stages in order, a later one starting from an earlier one's run, finished stages skipped."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.errors import TunesmithError
from tunesmith.experiments.stages import read_stages, run_pipeline

runner = CliRunner()


def write(tmp_path, stages, name="chain.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return path


@pytest.fixture
def two_stages(tiny_llama, qa_file, make_config, tmp_path):
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(make_config(tiny_llama, qa_file, "sft")))
    return [{"name": "sft", "config": "sft.yaml"},
            {"name": "again", "from": "sft", "config": make_config("placeholder", qa_file, "sft"),
             "overrides": {"train.max_steps": 2}}]


def test_stages_run_in_order_skip_when_finished_and_retrain_what_changed(two_stages, tmp_path):
    out = tmp_path / "out"
    summary = run_pipeline(write(tmp_path, two_stages), out=out)
    assert [(s["stage"], s["skipped"]) for s in summary["stages"]] == [("sft", False), ("again", False)]
    second = yaml.safe_load((out / "again" / "config.yaml").read_text())
    assert second["model"]["name"] == str(out / "sft")  # from: sft
    assert (out / "report.html").exists() and "again: what it bought" in (out / "report.html").read_text()
    assert json.loads((out / "pipeline.json").read_text())["stages"][1]["objective"] == "sft"

    summary = run_pipeline(write(tmp_path, two_stages), out=out)
    assert [s["skipped"] for s in summary["stages"]] == [True, True]

    two_stages[0]["overrides"] = {"train.seed": 3}  # the first stage changes: it and the stage built on it retrain
    summary = run_pipeline(write(tmp_path, two_stages), out=out)
    assert [s["skipped"] for s in summary["stages"]] == [False, False]

    two_stages[1]["overrides"] = {"train.max_steps": 3}  # only the last stage changes
    summary = run_pipeline(write(tmp_path, two_stages), out=out)
    assert [s["skipped"] for s in summary["stages"]] == [True, False]


@pytest.mark.parametrize("change,message", [
    (lambda s: s[1].update({"from": "nope"}), r"stages\[1\] \(again\).from: 'nope' is not an earlier stage \(the stages before it are \['sft'\]\)"),
    (lambda s: s[0].update({"runs": {"objective.reward.run": "again"}}), r"runs.objective.reward.run: 'again' is not an earlier stage \(it is the first stage\)"),
    (lambda s: s[1].update({"name": "sft"}), r"'sft' is used twice"),
    (lambda s: s[1].update({"form": "sft"}), r"unknown key\(s\) \['form'\]"),
    (lambda s: s[0].update({"config": "missing.yaml"}), r"stages\[0\] \(sft\).config: 'missing.yaml' is not a file"),
    (lambda s: s[1]["overrides"].update({"train.max_stepz": 2}), r"stage 'again': .*max_stepz"),
])
def test_mistakes_are_named_and_nothing_is_written(two_stages, tmp_path, change, message):
    change(two_stages)
    with pytest.raises(TunesmithError, match=message):
        run_pipeline(write(tmp_path, two_stages), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli_reports_mistakes_before_loading_anything(two_stages, tmp_path):
    two_stages[1]["from"] = "nope"
    result = runner.invoke(app, ["pipeline", str(write(tmp_path, two_stages)), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "not an earlier stage" in result.output and "Traceback" not in result.output
    assert read_stages(write(tmp_path, [{"name": "a", "config": {"model": {"name": "x"}}}]))[0]["name"] == "a"


def test_a_folder_the_pipeline_did_not_write_is_refused(two_stages, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(TunesmithError, match="did not write"):
        run_pipeline(write(tmp_path, two_stages), out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_a_stage_trains_again_when_its_data_or_an_input_changed_and_says_why(tiny_llama, qa_file, make_config,
                                                                             tmp_path, caplog):
    data = tmp_path / "qa-again.jsonl"
    data.write_text(Path(qa_file).read_text())
    stages = [{"name": "sft", "config": make_config(tiny_llama, qa_file, "sft")},
              {"name": "again", "from": "sft", "config": make_config("placeholder", str(data), "sft"),
               "overrides": {"train.max_steps": 2}}]
    path, out = write(tmp_path, stages), tmp_path / "out"
    run_pipeline(path, out=out)
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        summary = run_pipeline(path, out=out)  # nothing changed: both skipped, their data read and compared
    assert [s["skipped"] for s in summary["stages"]] == [True, True]
    assert "again finished before with the same config, data and inputs; skipping it" in caplog.text

    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-3]))  # the second stage's data changes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        summary = run_pipeline(path, out=out)
    assert [s["skipped"] for s in summary["stages"]] == [True, False]
    assert re.search(rf"training again \(its data changed: {re.escape(str(data))} now gives other (eval and )?train "
                     r"rows \(fingerprints .*train [0-9a-f]{16} -> [0-9a-f]{16}\)\)", caplog.text), caplog.text
    manifest = json.loads((out / "again" / "manifest.json").read_text())
    assert manifest["train_examples"] == 64 - 3 - 16  # the new adapter, trained on the edited data

    sft = out / "sft" / "manifest.json"  # sft trained again by an earlier invocation whose next stage then failed
    sft.write_text(json.dumps({**json.loads(sft.read_text()), "finished": "later"}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        summary = run_pipeline(path, out=out)
    assert [s["skipped"] for s in summary["stages"]] == [True, False]
    assert "training again (sft was trained again since it ran)" in caplog.text
