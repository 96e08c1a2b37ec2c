"""data.columns: the column roles each objective declares, their defaults, the older *_column keys, and the
objective-specific config checks (Objective.check_config)."""

import json
import logging
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.data import roles as roles_module
from tunesmith.errors import TunesmithError
from tunesmith.objectives.registry import OBJECTIVES

runner = CliRunner()
OLD_KEYS = ("text_column", "text_pair_column", "label_column", "prompt_column", "response_column")


def raw(objective: str, **data) -> dict:
    return {"model": {"name": "x"}, "data": {"source": "d.jsonl", **data}, "method": {"name": "lora"},
            "objective": {"name": objective}}


@pytest.fixture
def fresh_notes(monkeypatch):
    """Each deprecation note is logged once per process: start these tests with none logged yet."""
    monkeypatch.setattr(roles_module, "_NOTED", set())


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tunesmith" and r.levelno >= logging.WARNING]


def test_each_objective_declares_its_roles():
    roles = {name: [(r.name, r.optional) for r in o.roles] for name, o in OBJECTIVES.items()}
    assert roles["classify"] == [("text", False), ("text_pair", True), ("label", False)]
    assert roles["causal_lm"] == [("text", False)]
    assert roles["sft"] == [("prompt", False), ("response", False)]
    required = {"rl": {"reward": {"function": "tunesmith.objectives.feedback.rewards:length"}},  # options with no default
                "context_distill": {"context": "Answer in one sentence.", "placement": "prefix"}}
    for name, o in OBJECTIVES.items():
        cfg = raw(name)
        cfg["objective"].update(required.get(name, {}))
        assert o.check_config(load_config(cfg)) == [], name


def test_a_role_defaults_to_its_name_and_an_optional_one_to_none():
    d = load_config(raw("classify")).data
    assert d.columns == {}
    assert (d.column("text"), d.column("label"), d.column("text_pair")) == ("text", "label", None)
    assert d.role_columns() == {"text": "text", "label": "label"}
    d = load_config(raw("classify", columns={"text": "premise", "text_pair": "hypothesis"})).data
    assert (d.column("text"), d.column("text_pair"), d.column("label")) == ("premise", "hypothesis", "label")
    d = load_config(raw("sft", columns={"prompt": "question"})).data
    assert (d.column("prompt"), d.column("response")) == ("question", "response")


def test_reads_follow_the_roles():
    from tunesmith.data.templates import reads

    r = reads(load_config(raw("classify", columns={"text": "premise", "text_pair": "hypothesis", "label": "y"})))
    assert r.text == {"premise": "data.columns.text", "hypothesis": "data.columns.text_pair"} and r.label == "y"
    r = reads(load_config(raw("sft", columns={"response": "answer"}, template="Q: {question}\nA: {answer}")))
    assert r.text == {"question": "data.template", "answer": "data.template"} and r.label is None
    assert r.lists == ("answer",)
    r = reads(load_config(raw("causal_lm")))
    assert r.text == {"text": "data.columns.text"} and r.label is None and r.lists == ()


def test_mixed_in_data_needs_only_the_columns_the_objective_reads():
    from tunesmith.data.sources import used_columns

    cfg = load_config(raw("causal_lm"))
    assert used_columns(cfg.data, ["text", "label", "prompt", "id"]) == ["text"]
    cfg = load_config(raw("sft", columns={"prompt": "q", "response": "a"}))
    assert used_columns(cfg.data, ["q", "a", "text", "messages"]) == ["q", "a", "messages"]


def test_old_keys_load_into_data_columns_with_one_note_per_key(fresh_notes, caplog):
    caplog.set_level(logging.INFO, logger="tunesmith")
    cfg = load_config(raw("sft", prompt_column="question", response_column="answer"))
    assert cfg.data.columns == {"prompt": "question", "response": "answer"}
    notes = warnings_of(caplog)
    assert len(notes) == 2 and all("deprecated" in n for n in notes)
    assert "data.prompt_column" in notes[0] and "data.columns.prompt" in notes[0] and "'question'" in notes[0]
    resolved = yaml.safe_load(cfg.to_yaml())["data"]
    assert resolved["columns"] == {"prompt": "question", "response": "answer"}
    assert not set(OLD_KEYS) & set(resolved)
    caplog.clear()  # again (compare validates the same raw config once per variant): no second note
    load_config(raw("sft", prompt_column="question", response_column="answer"))
    assert warnings_of(caplog) == []
    # An override in the old spelling still works, on a resolved config too
    cfg = load_config(load_config(raw("classify")), {"data.text_column": "review"})
    assert cfg.data.column("text") == "review"


def test_an_old_run_folders_config_loads_silently(fresh_notes, caplog, tmp_path):
    """Run folders written before data.columns hold all five keys at their defaults."""
    caplog.set_level(logging.INFO, logger="tunesmith")
    old = raw("classify", text_column="text", text_pair_column=None, label_column="label", prompt_column="prompt",
              response_column="response")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    for objective in ("classify", "causal_lm", "sft"):
        cfg = load_config(path, [f"objective.name={objective}"])
        assert cfg.data.columns == {}
        assert not set(OLD_KEYS) & set(yaml.safe_load(cfg.to_yaml())["data"])
    assert warnings_of(caplog) == []


def test_an_old_key_the_objective_never_read_is_dropped_with_a_note(fresh_notes, caplog):
    caplog.set_level(logging.INFO, logger="tunesmith")
    cfg = load_config(raw("causal_lm", label_column="sentiment"))  # it was ignored before data.columns
    assert cfg.data.columns == {}
    assert any("data.label_column" in n and "ignored" in n for n in warnings_of(caplog))


def test_an_old_key_that_contradicts_data_columns_is_an_error_reported_with_the_others():
    with pytest.raises(TunesmithError) as err:
        load_config({**raw("classify", text_column="review", columns={"text": "body"}), "train": {"learning_rate": -1}})
    assert "data.text_column: 'review' and data.columns.text: 'body' name different columns" in str(err.value)
    assert "train.learning_rate" in str(err.value)
    assert load_config(raw("classify", text_column="review", columns={"text": "review"})).data.columns == {"text": "review"}


def test_an_unknown_role_names_the_key_the_roles_and_a_guess():
    with pytest.raises(TunesmithError) as err:
        load_config(raw("sft", columns={"promt": "question", "response": "answer"}))
    message = str(err.value)
    assert "data.columns.promt" in message and "prompt, response" in message and "did you mean 'prompt'?" in message
    with pytest.raises(TunesmithError, match=r"data.columns.label: 'label' is not a role of objective 'causal_lm'"):
        load_config(raw("causal_lm", columns={"label": "y"}))


def test_objective_checks_live_in_the_objectives():
    def problems(objective, **data):
        with pytest.raises(TunesmithError) as err:
            load_config(raw(objective, **data))
        return str(err.value)

    assert "data.format: 'chat'" in problems("classify", format="chat")
    assert "data.format: 'chat'" in problems("causal_lm", format="chat")
    assert "data.packing" in problems("sft", packing=True)
    assert "data.packing" in problems("classify", packing=True)
    assert "must come last" in problems("sft", columns={"response": "answer"}, template="{answer} after {question}")
    assert "placeholder {response}" in problems("sft", template="Q: {question}\nA: {answer}")
    load_config(raw("sft", format="chat"))
    load_config(raw("causal_lm", packing=True))
    load_config(raw("sft", columns={"response": "answer"}, template="Q: {question}\nA: {answer}"))


def test_validate_names_an_unknown_role(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw("classify", columns={"txt": "review"})))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "data.columns.txt" in result.output and "did you mean 'text'?" in result.output
    assert "Traceback" not in result.output


def fake_run(folder: Path, cfg: dict) -> Path:
    """A finished run folder as far as `tunesmith eval` checks before loading a model."""
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "adapter").mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": "tunesmith-run", "status": "finished", "saved": "adapter"}))
    return folder


def test_eval_column_takes_the_roles_of_the_runs_objective(tmp_path):
    run = fake_run(tmp_path / "run", raw("sft", columns={"prompt": "question", "response": "answer"}))
    result = runner.invoke(app, ["eval", str(run), "--column", "text=review", "--column", "respons=a"])
    assert result.exit_code == 2, result.output
    assert "--column 'text=review': 'text' is not a role of the run's objective" in result.output
    assert "objective 'sft' reads the roles prompt, response" in result.output
    assert "did you mean 'response'?" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["eval", str(run), "--column", "prompt"])
    assert result.exit_code == 2 and "expected ROLE=COLUMN" in result.output, result.output


def test_shipped_configs_use_data_columns():
    for path in Path(__file__).parents[2].joinpath("configs").glob("*.yaml"):
        data = yaml.safe_load(path.read_text()).get("data", {})
        assert not set(OLD_KEYS) & set(data), path
