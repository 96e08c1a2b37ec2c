"""`tunesmith validate`: data errors name the data file; every kind of file tunesmith reads is checked as what it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app

runner = CliRunner()


def test_single_class_names_the_data_file(tiny_bert, make_config, tmp_path):
    one_class = tmp_path / "one-class.jsonl"
    one_class.write_text("".join(f'{{"text": "t{i}", "label": "positive"}}\n' for i in range(30)))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(make_config(tiny_bert, str(one_class), "classify")))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "single class ['positive']" in result.output and repr(str(one_class)) in result.output  # the culprit
    assert "give data with both classes" in result.output  # the fix


ROOT = Path(__file__).parents[2]


def _write(tmp_path, raw: dict, name: str) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def constitution_config(tiny_llama, qa_file) -> dict:
    sft = {"data": {"source": "sft.jsonl", "columns": {"prompt": "prompt", "response": "response"}, "format": "chat",
                    "eval_size": 2, "max_length": 64},
           "method": {"name": "lora", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]},
           "objective": {"name": "sft"}, "train": {"max_steps": 2, "eval_strategy": "no"}}
    return {"policy": tiny_llama,
            "prompts": [{"source": qa_file, "column": "question", "reference": "answer", "kind": "ordinary",
                         "train": 6, "held_out": 4}],
            "stages": [{"name": "sft", "data": "sft", "config": {"model": {"name": tiny_llama}, **sft}}]}


def test_validate_checks_each_kind_of_file_as_what_it_is(tiny_llama, qa_file, tmp_path):
    """A constitution config is checked as one (issue 22: it was answered "a pipeline file has one key, stages");
    so is a constitution (its principles)."""
    path = _write(tmp_path, constitution_config(tiny_llama, qa_file), "cai.yaml")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "a constitution config" in text and f"`tunesmith constitution {path}` runs it" in text
    assert "6 training and 4 held-out prompts" in text and "stages sft (lora / sft)" in text

    result = runner.invoke(app, ["validate", str(ROOT / "src" / "tunesmith" / "constitutions" / "default.yaml")])
    assert result.exit_code == 0 and "a constitution of 5 principles" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("change,culprit", [
    (lambda c: c.pop("policy"), "policy: required but missing"),
    (lambda c: c["prompts"][0].update(train=500), "asks for 4 held-out + 500 training prompts"),
    (lambda c: c["stages"][0]["config"]["method"].update(r="eight"), "stage 'sft'"),
    (lambda c: c["stages"][0].update({"form": "x"}), "unknown key(s) ['form']"),
])
def test_a_constitution_config_mistake_is_named(change, culprit, tiny_llama, qa_file, tmp_path):
    raw = constitution_config(tiny_llama, qa_file)
    change(raw)
    result = runner.invoke(app, ["validate", str(_write(tmp_path, raw, "cai.yaml"))])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    text = " ".join(result.output.split())
    assert culprit in text and "a pipeline file has one key" not in text, text


def test_validate_reports_the_sweep_and_compare_sections(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = make_config(tiny_bert, sentiment_file, "classify")
    cfg["sweep"] = {"parameters": {"train.learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}, "trials": 3}
    cfg["compare"] = [{"name": "small", "method": {"name": "lora", "r": 2}}, {"name": "whole", "method": {"name": "full"}}]
    result = runner.invoke(app, ["validate", str(_write(tmp_path, cfg, "both.yaml"))])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "sweep: 3 trials over train.learning_rate" in text and "`tunesmith sweep" in text
    assert "compare: variants small (lora), whole (full) checked" in text
    cfg["compare"][1]["method"] = {"name": "full", "r": 8}  # a variant's mistake is the variant's
    result = runner.invoke(app, ["validate", str(_write(tmp_path, cfg, "both.yaml"))])
    assert result.exit_code == 2 and "method.r: unknown key" in result.output, result.output


def test_the_shipped_studio_pairs_config_validates_on_a_fresh_clone(monkeypatch):
    """configs/reward-studio-pairs.yaml reads a small real studio export shipped in configs/data (issue 22: it read a
    file only examples/studio_demo.py writes)."""
    import json

    from tunesmith.studio.export import to_jsonl

    monkeypatch.chdir(ROOT)  # where its relative data.source starts, as for every shipped config
    result = runner.invoke(app, ["validate", "configs/reward-studio-pairs.yaml"])
    assert result.exit_code == 0, result.output
    shipped = (ROOT / "configs" / "data" / "studio-pairs.jsonl").read_text()
    rows = [json.loads(line) for line in shipped.splitlines()]
    assert len(rows) >= 20 and to_jsonl(rows) == shipped  # the studio's export format, row for row
    assert all(r["chosen"] != r["rejected"] and r["rater"] for r in rows)
    assert "data.source=" in (ROOT / "configs" / "reward-studio-pairs.yaml").read_text()  # the documented override


def test_a_data_file_or_a_folder_is_named_as_what_it_is(tmp_path):
    """validate given a data file (it said 'not valid YAML') or a run folder (it said 'config file ... does not
    exist') says what it was given and the command that checks it."""
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    result = runner.invoke(app, ["validate", str(data)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{data} is a data file, not a config" in text and "not valid YAML" not in text
    assert f"`tunesmith validate CONFIG data.source={data}`" in text
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {name: x}\n")
    result = runner.invoke(app, ["validate", str(run)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{run} is a run folder; its config is {run / 'config.yaml'}: `tunesmith validate {run / 'config.yaml'}`" in text
    result = runner.invoke(app, ["validate", str(tmp_path / "nowhere.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output
