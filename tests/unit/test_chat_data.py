"""Chat data as people have it (issue 24): OpenAI messages, ShareGPT and Alpaca rows read into one conversation;
every assistant turn trained with the loss exactly on its tokens and end of turn (the real SmolLM2 tokenizer, and a
tokenizer without a template given each named template); a template that renders turns inconsistently reported per
row; data.chat_template saved with the run's tokenizer and used after reload."""

import json
import shutil
from pathlib import Path

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_config, write_jsonl
from tunesmith import api
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.data.chat import NAMED_TEMPLATES, conversation_of, detect, named_template
from tunesmith.data.tokenize import IGNORE, tokenize_sft
from tunesmith.errors import TunesmithError

runner = CliRunner()

SYSTEM = "You answer in one sentence."
TURNS = [("What is the capital of France?", "Paris is the capital of France."),
         ("And of Italy?", "Rome is the capital of Italy."),
         ("Thanks!", "You are welcome.")]


def openai_row(turns=TURNS, system=SYSTEM) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    for user, answer in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def sharegpt_row(turns=TURNS, system=SYSTEM) -> dict:
    conv = [{"from": "system", "value": system}] if system else []
    for user, answer in turns:
        conv += [{"from": "human", "value": user}, {"from": "gpt", "value": answer}]
    return {"conversations": conv}


def data_cfg(**data):
    cfg = tiny_config("unused-model", "unused.jsonl", "sft")
    cfg["data"].pop("columns")
    cfg["data"].update({"format": "chat", "max_length": 512, **data})
    return load_config(cfg).data


def encode(rows: list[dict], tokenizer, **data):
    return tokenize_sft(datasets.Dataset.from_list(rows), tokenizer, data_cfg(**data))


def trained_runs(tokenizer, ex) -> list[str]:
    """The decoded runs of consecutive tokens that carry loss (one per trained turn)."""
    runs, current = [], []
    for tok, lab in zip(ex["input_ids"], ex["labels"]):
        if lab != IGNORE:
            assert lab == tok
            current.append(tok)
        elif current:
            runs, current = runs + [current], []
    runs += [current] if current else []
    return [tokenizer.decode(r) for r in runs]


@pytest.fixture(scope="module")
def bare_tokenizer(smollm_tokenizer):
    """The SmolLM2 tokenizer without its chat template (a base model's)."""
    import copy

    tok = copy.deepcopy(smollm_tokenizer)
    tok.chat_template = None
    return tok


@pytest.fixture(scope="module")
def base_model(tiny_llama, bare_tokenizer, tmp_path_factory) -> str:
    """The tiny random Llama saved with a tokenizer that has no chat template."""
    path = tmp_path_factory.mktemp("tiny-base") / "model"
    shutil.copytree(tiny_llama, path)
    for name in ("chat_template.jinja", "chat_template.json"):
        (path / name).unlink(missing_ok=True)
    bare_tokenizer.save_pretrained(path)
    assert not (path / "chat_template.jinja").exists()
    return str(path)


# ----------------------------------------------------------------------------------------------- formats


def test_formats_are_detected_and_read_into_one_conversation():
    d = data_cfg()
    alpaca = {"instruction": "Name a colour.", "input": "", "output": "Blue.", "system": SYSTEM}
    assert detect(openai_row(), d) == "messages" and detect(sharegpt_row(), d) == "sharegpt"
    assert detect(alpaca, d) == "alpaca" and detect({"prompt": "a", "response": "b"}, d) == "prompt/response"
    assert conversation_of(sharegpt_row(), d) == openai_row()["messages"]
    assert conversation_of(alpaca, d) == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a colour."},
                                         {"role": "assistant", "content": "Blue."}]
    with_input = conversation_of({"instruction": "Translate.", "input": "chat", "output": "cat"}, d)
    assert with_input[0] == {"role": "user", "content": "Translate.\n\nchat"}
    tool = conversation_of({"conversations": [{"from": "human", "value": "2+2?"}, {"from": "observation", "value": "4"},
                                              {"from": "gpt", "value": "4."}]}, d)
    assert [m["role"] for m in tool] == ["user", "tool", "assistant"]
    # data.system_prompt for rows without one; a row's own system message wins
    d_sys = data_cfg(system_prompt="Be kind.")
    assert conversation_of(openai_row(system=None), d_sys)[0] == {"role": "system", "content": "Be kind."}
    assert conversation_of(openai_row(), d_sys)[0]["content"] == SYSTEM
    assert conversation_of({**openai_row(system=None), "system": "From the column."}, d_sys)[0]["content"] == "From the column."


def test_a_forced_format_that_the_data_is_not_in_is_an_error(tiny_llama, tmp_path):
    path = write_jsonl(tmp_path / "sg.jsonl", [sharegpt_row()] * 20)
    cfg = tiny_config(tiny_llama, str(path), "sft", data={"format": "alpaca"})
    cfg["data"].pop("columns")
    with pytest.raises(TunesmithError, match=r"data.format: 'alpaca' reads `instruction` and `output`"):
        api.validate(cfg)


# ----------------------------------------------------------------------------------------------- masks


def test_every_assistant_turn_is_trained_exactly_on_smollm2(smollm_tokenizer):
    for row in (openai_row(), sharegpt_row()):
        ex = encode([row], smollm_tokenizer)[0]
        assert trained_runs(smollm_tokenizer, ex) == [answer + "<|im_end|>" for _, answer in TURNS]
        assert ex["turns"] == 3 and ex["messages"] == 7
        assert smollm_tokenizer.decode(ex["input_ids"]) == smollm_tokenizer.apply_chat_template(row["messages"] if "messages" in row else
                                                                                                openai_row()["messages"], tokenize=False)
    last = encode([openai_row()], smollm_tokenizer, train_on="last_assistant")[0]
    assert trained_runs(smollm_tokenizer, last) == [TURNS[-1][1] + "<|im_end|>"]
    alpaca = encode([{"instruction": "Translate to French.", "input": "cat", "output": "chat", "system": SYSTEM}], smollm_tokenizer)[0]
    assert trained_runs(smollm_tokenizer, alpaca) == ["chat<|im_end|>"]
    assert "Translate to French.\n\ncat" in smollm_tokenizer.decode(alpaca["input_ids"])
    pair = encode([{"question": "Why?", "answer": "Because."}], smollm_tokenizer, columns={"prompt": "question", "response": "answer"})[0]
    assert trained_runs(smollm_tokenizer, pair) == ["Because.<|im_end|>"]


def test_the_same_conversation_in_every_format_gives_the_same_tokens(smollm_tokenizer):
    multi = [encode([r], smollm_tokenizer)[0] for r in (openai_row(), sharegpt_row())]
    assert multi[0]["input_ids"] == multi[1]["input_ids"] and multi[0]["labels"] == multi[1]["labels"]
    (user, answer), = TURNS[:1]
    single = [openai_row(TURNS[:1]), sharegpt_row(TURNS[:1]), {"instruction": user, "output": answer, "system": SYSTEM}]
    feats = [encode([r], smollm_tokenizer)[0] for r in single]
    feats.append(encode([{"question": user, "answer": answer}], smollm_tokenizer, system_prompt=SYSTEM,
                        columns={"prompt": "question", "response": "answer"})[0])
    for ex in feats[1:]:
        assert ex["input_ids"] == feats[0]["input_ids"] and ex["labels"] == feats[0]["labels"]


@pytest.mark.parametrize("name", sorted(NAMED_TEMPLATES))
def test_named_templates_on_a_tokenizer_without_one(bare_tokenizer, name):
    import copy

    tok = copy.deepcopy(bare_tokenizer)
    tok.chat_template = named_template(name, tok)
    ex = encode([sharegpt_row()], tok)[0]
    marker = NAMED_TEMPLATES[name][1]
    # the marker is a token of SmolLM2's vocabulary (chatml) or text pieces followed by EOS (llama-3)
    end = marker if marker in tok.get_vocab() else marker + tok.eos_token
    assert trained_runs(tok, ex) == [answer + end for _, answer in TURNS]
    assert ex["labels"][-1] == tok.eos_token_id or ex["labels"][-2] == tok.eos_token_id
    roles = [r for r, lab in zip(_roles(ex), ex["labels"]) if lab != IGNORE]
    assert set(roles) == {"assistant"}
    # the tokens before an answer are the prompt exactly as generation tokenizes it (llama-3's '\n\n' before the
    # answer is one token alone and two before a word in SmolLM2's tokenizer: the answer starts a new token)
    from tunesmith.data.tokenize import sft_prompt_ids

    one = encode([sharegpt_row(TURNS[:1])], tok)[0]
    prompt = sft_prompt_ids(tok, data_cfg(), sharegpt_row(TURNS[:1]))
    assert one["input_ids"][: len(prompt)] == prompt and one["labels"][len(prompt)] != IGNORE
    assert one["labels"][len(prompt) - 1] == IGNORE


def _roles(ex):
    from tunesmith.data.inspect import token_roles

    return token_roles(ex["spans"], len(ex["input_ids"]))


def test_token_roles_follow_the_messages(smollm_tokenizer):
    ex = encode([openai_row()], smollm_tokenizer)[0]
    roles = _roles(ex)
    by_role = {}
    for tok, role in zip(ex["input_ids"], roles):
        by_role.setdefault(role, []).append(tok)
    assert SYSTEM in smollm_tokenizer.decode(by_role["system"]) and "capital of France?" in smollm_tokenizer.decode(by_role["user"])
    assert "capital of France?" not in smollm_tokenizer.decode(by_role["assistant"])


def test_truncation_reports_the_turns_it_cut(smollm_tokenizer):
    full = encode([openai_row()], smollm_tokenizer)[0]
    cut = encode([openai_row()], smollm_tokenizer, max_length=len(full["input_ids"]) - 12)[0]
    assert cut["turns_cut"] == [3] and trained_runs(smollm_tokenizer, cut)[:2] == trained_runs(smollm_tokenizer, full)[:2]
    trained = [i for i, lab in enumerate(full["labels"]) if lab != IGNORE]
    last_turn = trained[-len(smollm_tokenizer(TURNS[-1][1] + "<|im_end|>", add_special_tokens=False)["input_ids"])]
    left = encode([openai_row()], smollm_tokenizer, max_length=len(full["input_ids"]) - last_turn + 1, truncation_side="left")[0]
    assert left["turns_cut"] == [1, 2] and trained_runs(smollm_tokenizer, left)[-1] == TURNS[-1][1] + "<|im_end|>"


# ----------------------------------------------------------------------------------------------- templates


THINKING = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
            "{{ '<|im_start|>assistant\\n' + m['content'].split('</think>')[-1] + '<|im_end|>\\n' }}"
            "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_an_inconsistent_template_is_reported_per_row_not_trained(base_model, tmp_path, monkeypatch):
    """A template that drops reasoning from earlier turns (as Qwen3's does): turn 1 renders one way as the last
    message and another way once turn 2 follows. validate exits 2 naming the row; last_assistant trains."""
    template = tmp_path / "thinking.jinja"
    template.write_text(THINKING)
    rows = [openai_row() for _ in range(20)]
    rows[6] = openai_row([("Why?", "<think>hmm</think>Because."), ("Sure?", "Yes.")])
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    cfg = tiny_config(base_model, str(path), "sft", data={"format": "messages", "chat_template": str(template), "max_length": 200})
    cfg["data"].pop("columns")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    for args in (["validate", str(cfg_file)], ["data", "preview", str(cfg_file), "-n", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and "row 7:" in result.output, result.output
        assert "data.chat_template" in result.output and "data.train_on: last_assistant" in result.output
        assert "Because" in result.output  # what differs is shown
    info = api.validate({**cfg, "data": {**cfg["data"], "train_on": "last_assistant"}})
    assert info["stats"]["train"]["turns"] == info["stats"]["train"]["conversations"] == 4

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the conversations were checked")

    monkeypatch.setattr("tunesmith.training.train.load_model", no_model)  # train names the row before loading it
    result = runner.invoke(app, ["train", str(cfg_file), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "row 7:" in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_a_base_model_needs_data_chat_template(base_model, tmp_path):
    path = write_jsonl(tmp_path / "chats.jsonl", [sharegpt_row()] * 20)
    cfg = tiny_config(base_model, str(path), "sft", data={"format": "chat"})
    cfg["data"].pop("columns")
    with pytest.raises(TunesmithError, match=r"has none \(a base model\); set data.chat_template \(chatml, llama-3"):
        api.validate(cfg)
    with pytest.raises(TunesmithError, match=r"'chatmll' is neither a named template .* did you mean 'chatml'"):
        api.validate({**cfg, "data": {**cfg["data"], "chat_template": "chatmll"}})
    with pytest.raises(TunesmithError, match=r"'model' asks for the tokenizer's own template"):
        api.validate({**cfg, "data": {**cfg["data"], "chat_template": "model"}})
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m['content'] }")
    with pytest.raises(TunesmithError, match=r"does not render a user/assistant exchange"):
        api.validate({**cfg, "data": {**cfg["data"], "chat_template": str(bad)}})
    assert api.validate({**cfg, "data": {**cfg["data"], "chat_template": "chatml"}})["task"]["chat"].startswith("ShareGPT")


def test_the_template_is_saved_with_the_run_and_used_after_reload(base_model, tmp_path):
    from tunesmith.data.templates import probe_row
    from tunesmith.data.tokenize import sft_prompt_ids
    from tunesmith.runs import load_run
    from tunesmith.serve.registry import Served

    path = write_jsonl(tmp_path / "chats.jsonl", [sharegpt_row()] * 24)
    cfg = tiny_config(base_model, str(path), "sft", data={"format": "chat", "chat_template": "llama-3", "max_length": 48},
                      train={"max_steps": 1}, eval={"num_samples": 0, "max_new_tokens": 2})
    with pytest.raises(TunesmithError, match=r"data.max_length: truncation to 48 tokens \(right\) cuts the whole response"):
        api.validate(cfg)
    cfg["data"]["max_length"] = 200
    cfg["data"].pop("columns")
    run = api.train(cfg, out=tmp_path / "run")
    saved = load_run(run.dir)  # the tokenizer read back from the run folder
    assert "<|start_header_id|>" in saved.tokenizer.chat_template
    ids = sft_prompt_ids(saved.tokenizer, saved.config.data, probe_row("Hello?", saved.config.data))
    assert saved.tokenizer.decode(ids).endswith("<|start_header_id|>user<|end_header_id|>\n\nHello?<|eot_id|>"
                                                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert len(saved.generate("Hello?", max_new_tokens=2)) == 1
    # `tunesmith serve` formats a conversation with the saved template too
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    served = Served("run", "model", None, saved.tokenizer, None, run=saved).chat_ids(chat)
    assert saved.tokenizer.decode(served).startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi")
    result = runner.invoke(app, ["generate", str(run.dir), "Hello?", "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((Path(run.dir) / "manifest.json").read_text())
    assert manifest["task"]["chat"].startswith("ShareGPT")


# ----------------------------------------------------------------------------------------------- preview


def test_preview_shows_roles_and_conversation_counts(tiny_llama, smollm_tokenizer, tmp_path):
    rows = [sharegpt_row() for _ in range(20)]
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    length = len(encode(rows[:1], smollm_tokenizer)[0]["input_ids"])  # the last turn does not fit in length - 12
    cfg = tiny_config(tiny_llama, str(path), "sft", data={"format": "chat", "max_length": length - 12})
    cfg["data"].pop("columns")
    info = api.preview(cfg, n=1)
    ex = info["examples"][0]
    assert {"system", "user", "assistant"} <= set(ex["roles"]) and ex["turns"] == 3
    assert all(role == "assistant" for role, (_, loss) in zip(ex["roles"], ex["tokens"]) if loss)
    stats = info["stats"]["train"]
    assert stats["conversations"] == 4 and stats["turns"] == 12 and stats["truncated_conversations"] == 4
    assert stats["turns_cut"] == {3: 4} and stats["trained_tokens"] > 0
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["data", "preview", str(cfg_file), "-n", "1"])
    assert result.exit_code == 0, result.output
    for text in ("ShareGPT", "[user]", "[assistant]", "3 assistant turns trained", "turn 3: 4", "conversations"):
        assert text in result.output, text


def test_a_conversation_without_an_answer_is_reported(smollm_tokenizer):
    row = {"messages": [{"role": "user", "content": "Hello?"}]}
    with pytest.raises(TunesmithError, match=r"row 2: no assistant message"):
        encode([openai_row(), row], smollm_tokenizer)


def test_a_turn_from_an_unknown_role_names_its_row(smollm_tokenizer):
    row = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "Beep."}]}
    with pytest.raises(TunesmithError, match=r"row 3: data: a ShareGPT turn is from 'robot'"):
        encode([sharegpt_row(), sharegpt_row(), row], smollm_tokenizer)
