"""Chat data through the CLI as a new user meets it (issue 24): `validate` prints the detected format and the
conversation counts on stdout, as `data preview` does; `data preview` takes dotted overrides as `validate` does
(data.train_on, data.chat_template, data.system_prompt); a data.chat_template path that does not exist is named; a
base model's data.chat_template reaches the GGUF export and its Ollama Modelfile."""

import json

import test_chat_data
import yaml
from typer.testing import CliRunner

from conftest import tiny_config, write_jsonl
from tunesmith.cli import app

runner = CliRunner()
bare_tokenizer, base_model = test_chat_data.bare_tokenizer, test_chat_data.base_model  # fixtures: a template-less base

TURNS = [("What is the capital of France?", "Paris."), ("And of Italy?", "Rome."), ("Thanks!", "You are welcome.")]


def sharegpt_rows(n: int = 24) -> list[dict]:
    rows = []
    for i in range(n):
        conv = [{"from": "system", "value": "You answer in one sentence."}]
        for user, answer in TURNS:
            conv += [{"from": "human", "value": f"{user} #{i}"}, {"from": "gpt", "value": answer}]
        rows.append({"conversations": conv})
    return rows


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def config_file(model: str, tmp_path, rows: list[dict], **data) -> str:
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    cfg = tiny_config(model, str(path), "sft", data={"format": "chat", "max_length": 256, "eval_size": 4, **data})
    cfg["data"].pop("columns")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    return str(cfg_file)


def test_validate_prints_the_detected_format_and_conversation_counts(tiny_llama, tmp_path):
    result = runner.invoke(app, ["validate", config_file(tiny_llama, tmp_path, sharegpt_rows())])
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)  # not only the log line on stderr
    assert "conversations: ShareGPT conversations" in out and "detected from the columns" in out, out
    assert "│ train │ 20 │ 140 │ 60 │" in out, out  # the conversations table: conversations, messages, assistant turns
    alpaca = [{"instruction": f"Name a colour #{i}.", "output": "Blue.", "system": "One word."} for i in range(24)]
    result = runner.invoke(app, ["validate", config_file(tiny_llama, tmp_path, alpaca)])
    assert result.exit_code == 0, result.output
    assert "conversations: Alpaca" in flat(result.stdout) and "`system` column" in flat(result.stdout), result.stdout


def test_data_preview_takes_overrides(tiny_llama, tmp_path):
    cfg = config_file(tiny_llama, tmp_path, sharegpt_rows())
    result = runner.invoke(app, ["data", "preview", cfg, "-n", "1"])
    assert result.exit_code == 0, result.output
    assert "3 assistant turns trained" in flat(result.stdout)
    result = runner.invoke(app, ["data", "preview", cfg, "data.train_on=last_assistant", "-n", "1"])
    assert result.exit_code == 0, result.output
    assert "1 assistant turns trained" in flat(result.stdout) and "trained on last assistant turns" in flat(result.stdout)
    result = runner.invoke(app, ["data", "preview", cfg, "data.train_on=last", "-n", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "data.train_on" in flat(result.output) and "'last_assistant'" in flat(result.output), result.output


def test_a_chat_template_file_that_does_not_exist_is_named(tiny_llama, tmp_path):
    cfg = config_file(tiny_llama, tmp_path, sharegpt_rows(), chat_template="no-such-dir/mine.jinja")
    for args in (["validate", cfg], ["data", "preview", cfg, "-n", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "'no-such-dir/mine.jinja' is neither a named template (chatml, llama-3, model) nor a Jinja file that exists. Give a name" in flat(result.output), result.output


def test_a_base_models_chat_template_travels_into_the_gguf_export(base_model, tmp_path, monkeypatch):
    """A base model (no template) trained with data.chat_template: llama-3: the export's merged folder carries the
    template to the converter and the Ollama Modelfile's TEMPLATE is that template's."""
    from test_gguf import FAKE

    from tunesmith import api
    from tunesmith.runs import gguf

    path = write_jsonl(tmp_path / "chats.jsonl", sharegpt_rows())
    cfg = tiny_config(base_model, str(path), "sft", data={"format": "chat", "chat_template": "llama-3", "max_length": 200},
                      train={"max_steps": 1}, eval={"num_samples": 0})
    cfg["data"].pop("columns")
    run = api.train(cfg, out=tmp_path / "run")
    (tmp_path / "llama.cpp").mkdir()
    (tmp_path / "llama.cpp" / gguf.CONVERTER).write_text(FAKE)
    monkeypatch.setenv(gguf.ENV, str(tmp_path / "llama.cpp"))
    result = runner.invoke(app, ["export", str(run.dir), "--gguf", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out" / "out-f16.gguf").read_text())["template"]  # the merged folder had one
    modelfile = (tmp_path / "out" / "Modelfile").read_text()
    assert "<|start_header_id|>" in modelfile and "<|im_start|>" not in modelfile, modelfile


def test_what_the_template_adds_before_the_first_message_is_no_role_of_the_row(smollm_tokenizer, bare_tokenizer):
    """SmolLM2's template adds its own system prompt to a conversation without one, and llama-3 a BOS: those tokens
    are role 'other' in the preview, not the first message's (they were shown as [user])."""
    import copy

    from tunesmith.data.chat import named_template

    ex = test_chat_data.encode([{"instruction": "Translate to French.", "input": "cat", "output": "chat"}], smollm_tokenizer)[0]
    by_role = {}
    for tok, role in zip(ex["input_ids"], test_chat_data._roles(ex)):
        by_role.setdefault(role, []).append(tok)
    assert "named SmolLM" in smollm_tokenizer.decode(by_role["other"]) and "SmolLM" not in smollm_tokenizer.decode(by_role["user"])
    assert smollm_tokenizer.decode(by_role["user"]).startswith("<|im_start|>user\nTranslate to French.")
    with_system = test_chat_data.encode([test_chat_data.openai_row()], smollm_tokenizer)[0]
    assert test_chat_data._roles(with_system)[0] == "system"  # a row's own system message is its own
    tok = copy.deepcopy(bare_tokenizer)
    tok.chat_template = named_template("chatml", tok).replace("{% for", "{{ 'PREAMBLE ' }}{% for", 1)
    ex = test_chat_data.encode([test_chat_data.sharegpt_row(system=None)], tok)[0]
    roles = test_chat_data._roles(ex)
    assert tok.decode(ex["input_ids"][: roles.index("user")]) == "PREAMBLE " and "other" not in roles[roles.index("user"):]
