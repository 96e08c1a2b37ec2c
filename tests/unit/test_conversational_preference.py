"""Preference data in conversational form (TRL's documented format: `prompt` a list of messages, `chosen` /
`rejected` / `completion` lists of assistant messages) for reward, dpo and kto; and one chat predicate
(data/chat.is_chat) for every data.format that renders through a chat template. Tiny random Llama (2 layers,
hidden 32) with the real SmolLM2 tokenizer and chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith import api
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError

TRAIN = {"max_steps": 2, "learning_rate": 5e-3, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
         "eval_strategy": "no", "logging_steps": 1, "bf16": False}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def _prompt(i: int) -> list[dict]:
    """Every third prompt is multi-turn: an earlier exchange, then the question."""
    ask = user(f"Can you help with task {i}?")
    return [user("Hello"), assistant("Hi! How can I help?"), ask] if i % 3 == 0 else [ask]


@pytest.fixture(scope="module")
def conv_pairs(tmp_path_factory) -> str:
    rows = [{"prompt": _prompt(i), "chosen": [assistant("Yes, gladly.")], "rejected": [assistant("No, never.")]}
            for i in range(40)]
    return str(write_jsonl(tmp_path_factory.mktemp("conv") / "pairs.jsonl", rows))


@pytest.fixture(scope="module")
def conv_single(tmp_path_factory) -> str:
    rows = [{"prompt": _prompt(i), "completion": [assistant("Yes, gladly." if i % 2 else "No, never.")],
             "label": bool(i % 2)} for i in range(40)]
    return str(write_jsonl(tmp_path_factory.mktemp("conv") / "single.jsonl", rows))


def config(model: str, source: str, objective: dict, fmt: str = "chat", **data) -> dict:
    return {"model": {"name": model}, "data": {"source": source, "eval_size": 8, "max_length": 64, "format": fmt, **data},
            "method": {"name": "lora", "r": 4, "lora_alpha": 8}, "objective": objective, "train": dict(TRAIN),
            "eval": {"num_samples": 1, "max_new_tokens": 3}, "report": {"html": False}}


# ---------------------------------------------------------------------------------------------
# Reading: a text or a list of turns (OpenAI or ShareGPT) as messages


def test_messages_of_reads_texts_openai_and_sharegpt_turns():
    from tunesmith.data.chat import is_chat, messages_of, text_of

    d = load_config(config("m", "x.jsonl", {"name": "dpo"}, system_prompt="Be brief.")).data
    openai = [user("Hi"), assistant("Hello"), user("Bye?")]
    sharegpt = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Bye?"}]
    assert messages_of(openai, d) == messages_of(sharegpt, d) == [{"role": "system", "content": "Be brief."}, *openai]
    assert messages_of("Bye?", d) == [{"role": "system", "content": "Be brief."}, user("Bye?")]
    assert messages_of("Bye.", d, "assistant") == [assistant("Bye.")]  # a response gets no system prompt
    assert text_of(openai) == "Hi\nHello\nBye?" and text_of("x") == "x"
    for fmt, chat in [("text", False), ("chat", True), ("messages", True), ("sharegpt", True), ("alpaca", True)]:
        assert is_chat(load_config(config("m", "x.jsonl", {"name": "dpo"}, fmt)).data) is chat, fmt


@pytest.mark.parametrize("fmt", ["chat", "messages", "sharegpt"])
def test_every_chat_format_renders_preference_prompts_through_the_template(fmt, tiny_llama, smollm_tokenizer):
    """Before the predicate, data.format messages / sharegpt were read as text by dpo, kto, reward and rl."""
    from tunesmith.objectives.feedback import preference as pref

    d = load_config(config(tiny_llama, "x.jsonl", {"name": "dpo"}, fmt)).data
    assert pref.prompt_value(d, "Hi?") == [user("Hi?")]
    assert pref.response_value(d, "Hello.") == [assistant("Hello.")]
    expected = smollm_tokenizer.apply_chat_template([user("Hi?")], add_generation_prompt=True, return_dict=False)
    assert pref.prompt_ids(smollm_tokenizer, d, "Hi?") == list(expected)


def test_context_distill_reads_every_chat_format_as_chat(tiny_llama, smollm_tokenizer):
    from tunesmith.objectives.distill import context_teacher

    objective = {"name": "context_distill", "context": "Answer in French.", "placement": "system"}
    cfg = load_config(config(tiny_llama, "x.jsonl", objective, "messages"))  # placement system needs a chat format
    ids = context_teacher.prompt_ids(smollm_tokenizer, cfg, "Hi?", with_context=True)
    messages = [{"role": "system", "content": "Answer in French."}, user("Hi?")]
    assert ids == list(smollm_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))
    with pytest.raises(TunesmithError, match="objective.placement: 'system' .* needs data.format: chat"):
        load_config(config(tiny_llama, "x.jsonl", objective, "text"))


# ---------------------------------------------------------------------------------------------
# Training: dpo, kto and reward on conversational rows


def test_dpo_on_conversational_pairs_tokenizes_as_trl_and_trains(tiny_llama, conv_pairs, tmp_path, smollm_tokenizer):
    from tunesmith.modeling import load_model

    cfg = load_config(config(tiny_llama, conv_pairs, {"name": "dpo", "beta": 0.5}))
    prep = api.Prepared(cfg)
    trainer = prep.objective.build_trainer(load_model(cfg.model, "causal_lm"), prep.tokenizer, prep, cfg, tmp_path, [])
    ours = prep.objective.tokenize(prep.data["train"], prep.tokenizer, cfg, {})
    raw = prep.data["train"]
    for i in range(6):  # multi-turn and single-turn prompts alike
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert ours[i][key] == trainer.train_dataset[i][key], key
        full = smollm_tokenizer.apply_chat_template(raw[i]["prompt"] + raw[i]["chosen"], return_dict=False)
        assert ours[i]["prompt_ids"] + ours[i]["chosen_ids"] == list(full)  # the whole conversation, template and all
    assert any(len(raw[i]["prompt"]) == 3 for i in range(6))
    del trainer

    run = api.train(cfg, out=tmp_path / "run")
    base, tuned = run.results["base"], run.results["tuned"]
    assert tuned["logp_margin"] > base["logp_margin"]
    assert tuned["samples"][0]["reference"] == "Yes, gladly."  # shown as text in the report
    assert isinstance(tuned["samples"][0]["prompt"], str)


def test_kto_on_conversational_rows_trains(tiny_llama, conv_single, tmp_path):
    run = api.train(config(tiny_llama, conv_single, {"name": "kto", "beta": 0.5}, "messages"), out=tmp_path / "run")
    assert run.manifest["train_steps"] == 2
    assert {"ranking_accuracy", "eval_loss"} <= set(run.results["tuned"])


def test_reward_on_conversational_pairs_renders_the_whole_conversation(tiny_llama, conv_pairs, tmp_path, smollm_tokenizer):
    from tunesmith.objectives.feedback import reward_data

    cfg = load_config(config(tiny_llama, conv_pairs, {"name": "reward"}))
    prompt = _prompt(0)
    ids = reward_data.encode(smollm_tokenizer, cfg.data, prompt, [assistant("Yes, gladly.")])["input_ids"]
    assert ids == list(smollm_tokenizer.apply_chat_template(prompt + [assistant("Yes, gladly.")], return_dict=False))
    assert ids == reward_data.encode(smollm_tokenizer, cfg.data, prompt, "Yes, gladly.")["input_ids"]
    run = api.train(cfg, out=tmp_path / "run")
    assert run.manifest["train_steps"] == 2 and "reward_accuracy" in run.results["tuned"]
    assert len(run.score([{"prompt": prompt, "response": [assistant("Yes.")]}, {"prompt": "Hi?", "response": "No."}])) == 2


# ---------------------------------------------------------------------------------------------
# Errors


def _problems(cfg) -> str:
    with pytest.raises(TunesmithError) as err:
        api.validate(cfg)
    return str(err.value)


def test_conversational_rows_with_format_text_are_named(tiny_llama, conv_pairs, conv_single, tmp_path):
    for source, objective, column in [(conv_pairs, "dpo", "prompt"), (conv_single, "kto", "completion"),
                                      (conv_pairs, "reward", "chosen")]:
        text = _problems(config(tiny_llama, source, {"name": objective}, "text"))
        assert f"column {column!r} holds lists where text is expected" in text, objective
        assert "set data.format: chat to read them through the chat template" in text, objective
    from tunesmith.objectives.feedback import checks

    cfg = load_config(config(tiny_llama, conv_pairs, {"name": "dpo"}, "text"))
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": _prompt(0), "chosen": "Yes.", "rejected": "No."}])
    problem = checks.conversation_problems(cfg, ds, "train", {"prompt": "prompt", "chosen": "chosen"})
    assert len(problem) == 1 and "column 'prompt' (prompt) holds chat messages on 1 rows" in problem[0]


def test_a_response_that_does_not_end_with_the_assistant_is_named(tiny_llama, tmp_path):
    rows = [{"prompt": [user(f"Q{i}?")], "chosen": [assistant("Yes.")], "rejected": [assistant("No.")]} for i in range(12)]
    rows[3]["rejected"] = [assistant("No."), user("Really?")]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    cfg = config(tiny_llama, str(path), {"name": "dpo"}, eval_size=2)
    text = _problems(cfg)
    assert "column 'rejected' (rejected) is a response" in text and "its last message is a 'user' message" in text
    cfg_path = tmp_path / "dpo.yaml"
    cfg_path.write_text(json.dumps(cfg))
    result = CliRunner().invoke(app, ["validate", str(cfg_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_identical_conversational_pairs_are_named(tiny_llama, tmp_path):
    rows = [{"prompt": [user(f"Q{i}?")], "chosen": [assistant("Yes.")], "rejected": [assistant("No.")]} for i in range(12)]
    rows[5]["rejected"] = [assistant("Yes.")]
    path = write_jsonl(tmp_path / "same.jsonl", rows)
    assert "are the same text on" in _problems(config(tiny_llama, str(path), {"name": "dpo"}, eval_size=2))
