"""Context distillation (objective context_distill): the student's inputs never hold the context while the
teacher's do, the student without the context moves toward the teacher with it (the divergence on held-out prompts
falls), the teacher's responses and outputs are cached and re-used, and the errors name the key. Tiny random Llama
(hidden 32) with the real SmolLM2 tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith import api, generation
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.objectives.distill import context_teacher as teacher

CONFIGS = Path(__file__).parents[2] / "configs"
CONTEXT = "Rules: answer in one short sentence, all lowercase, and end with the words 'over and out'."


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder and no results kept from earlier tests; counts the teacher's generation calls."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(teacher, "_MEMO", {})
    calls = {"complete": 0}
    real = generation.complete

    def counting(*args, **kwargs):
        calls["complete"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "complete", counting)
    return calls


@pytest.fixture(scope="module")
def sharp_llama(tmp_path_factory, tiny_llama) -> str:
    """tiny_llama's shape with weights drawn 5x wider: its next-token distributions are peaked and depend on what
    it reads, so a context changes them (tiny_llama's are nearly uniform whatever the prompt)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    path = tmp_path_factory.mktemp("sharp-llama")
    config = AutoConfig.from_pretrained(tiny_llama)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(path)
    return str(path)


def cd_config(make_config, model, source, **objective):
    cfg = make_config(model, source, "context_distill", method={"name": "lora", "r": 8, "lora_alpha": 16},
                      data={"columns": {"prompt": "question"}, "format": "chat", "max_length": 128, "eval_size": 8},
                      eval={"num_samples": 2, "max_new_tokens": 4})
    cfg["objective"] = {"name": "context_distill", "context": CONTEXT, "max_new_tokens": 8, "top_k": 16,
                        "check": {"name": "ends_with", "value": "over and out."}, **objective}
    return cfg


def contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i:i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def test_the_student_reads_no_context_and_the_teacher_does(tiny_llama, qa_file, make_config, tmp_path, cache):
    from tunesmith.methods.registry import apply_method
    from tunesmith.modeling import load_model
    from tunesmith.objectives.distill.context import OBJECTIVE

    marker = " zebra-umbrella-quartz"  # tokens that occur nowhere else
    for placement in ("system", "prefix"):
        cfg = load_config(cd_config(make_config, tiny_llama, qa_file, context=CONTEXT + marker, placement=placement))
        prep = api.Prepared(cfg)
        part = prep.tokenizer(marker, add_special_tokens=False)["input_ids"]
        feats = prep.features["train"]
        assert all(contains(t, part) and not contains(s, part) for s, t in zip(feats["input_ids"], feats["teacher_input_ids"]))
    model = apply_method(load_model(cfg.model, "causal_lm"), cfg.method)
    trainer = OBJECTIVE.build_trainer(model, prep.tokenizer, prep, cfg, tmp_path / "run")
    rows = trainer.train_dataset
    assert len(rows) == len(feats) and not any(contains(ids, part) for ids in rows["input_ids"])
    tutor = teacher.outputs(model, prep.tokenizer, feats, cfg, cfg.objective.temperature)  # kept: no new generation
    assert cache["complete"] == 1
    for ids, labels, prompt, answer in zip(rows["input_ids"], rows["labels"], feats["input_ids"], teacher.responses(tutor)):
        assert ids == prompt + answer and labels == [-100] * len(prompt) + answer  # loss on the teacher's answer only
    batch = trainer.data_collator([dict(r) for r in rows.select(range(3))])
    assert batch["teacher_values"].size(0) == int((batch["labels"][:, 1:] != -100).sum())


def test_the_student_moves_toward_the_teacher_and_the_teacher_is_cached(sharp_llama, qa_file, make_config, tmp_path, cache):
    cfg = cd_config(make_config, sharp_llama, qa_file, placement="prefix")  # the whole context: a clear change
    cfg["method"] = {"name": "full"}  # a tiny random model: LoRA moves it too little in a few steps to show
    cfg["train"].update(max_steps=60, learning_rate=1e-2)
    run = api.train(cfg, out=tmp_path / "run")
    base, tuned = run.results["base"], run.results["tuned"]
    # held-out prompts, which a tiny random model generalises to poorly: 1.90 -> 1.28 here (2026-11-27)
    assert tuned["kl_to_teacher"] < 0.8 * base["kl_to_teacher"], (base, tuned)
    assert 0 <= tuned["agreement"] <= 1 and tuned["eval_tokens"] > 0
    assert base["teacher_check_rate"] == tuned["teacher_check_rate"] and 0 <= tuned["check_rate"] <= 1
    assert tuned["context_tokens"] > 0 and run.results["directions"]["kl_to_teacher"] == "min"
    assert cache["complete"] == 4  # the teacher: eval (greedy) and train (sampled); the base and tuned answers
    assert len(list((tmp_path / "cache" / "context_distill").glob("*.pt"))) == 2
    assert run.generate("What is AI?", max_new_tokens=3) is not None

    teacher._MEMO.clear()  # a new process: only the disk cache is left
    cfg["train"]["max_steps"] = 1
    before = cache["complete"]
    again = api.train(cfg, out=tmp_path / "again")
    assert cache["complete"] == before + 2  # only the two models' own answers: the teacher's came from the cache
    assert again.results["base"]["kl_to_teacher"] == pytest.approx(base["kl_to_teacher"])


def test_errors_name_the_key(tiny_llama, tiny_bert, qa_file, make_config, tmp_path):
    def problem(match, model=tiny_llama, **changes):
        cfg = cd_config(make_config, model, qa_file)
        for section, values in changes.items():
            cfg[section] = values if section == "method" else {**cfg[section], **values}
        with pytest.raises(TunesmithError, match=match):
            api.validate(cfg)

    problem("objective.context: the context is empty", objective={"context": "  \n"})
    problem("objective.context: give the context", objective={"context": None})
    problem("objective.context: give the context", objective={"context_file": "rules.txt"})
    problem(r"objective.context_file: .*missing.txt' is not a file", objective={"context": None, "context_file": str(tmp_path / "missing.txt")})
    (tmp_path / "empty.txt").write_text("")
    problem("objective.context_file: .* is empty", objective={"context": None, "context_file": str(tmp_path / "empty.txt")})
    problem("objective.placement: 'system' .* needs data.format: chat", data={"format": "text"})
    problem("objective.check.value: 'max_words' needs a whole number", objective={"check": {"name": "max_words", "value": "ten"}})
    problem("method.name: 'adapter' adds modules that cannot be switched off", method={"name": "adapter"})
    problem("model.name: .* is not a causal language model", model=tiny_bert)
    (tmp_path / "rules.txt").write_text(CONTEXT)
    api.validate(cd_config(make_config, tiny_llama, qa_file, context=None, context_file=str(tmp_path / "rules.txt")))

    bad = tmp_path / "bad.yaml"
    import yaml

    bad.write_text(yaml.safe_dump(cd_config(make_config, tiny_llama, qa_file, context="")))
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2 and "objective.context" in result.output


def test_checkers():
    from types import SimpleNamespace as Check

    assert teacher.passes(Check(name="max_words", value=3), " one two three ")
    assert not teacher.passes(Check(name="max_words", value=2), "one two three")
    assert teacher.passes(Check(name="lowercase", value=None), "all small.") and not teacher.passes(Check(name="lowercase", value=None), "No")
    assert teacher.passes(Check(name="ends_with", value="over and out."), "fine, over and out.\n")
    assert teacher.passes(Check(name="json_object", value=None), '{"a": 1}') and not teacher.passes(Check(name="json_object", value=None), "[1]")


def test_shipped_config_validates():
    result = CliRunner().invoke(app, ["validate", str(CONFIGS / "context-distill.yaml")])
    assert result.exit_code == 0, result.output
