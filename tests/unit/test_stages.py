"""`tunesmith pipeline`: stages in order, a later one starting from an earlier one's run, finished stages skipped."""

from __future__ import annotations

import json

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
