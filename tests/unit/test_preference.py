"""dpo and kto: training through TRL with adapters and in full, the reference model, TRL's tokenization, the
metrics, the data and config errors, and the shipped configs. Tiny random Llama (2 layers, hidden 32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith import api
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError

CONFIGS = Path(__file__).parents[2] / "configs"
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


TRAIN = {"max_steps": 2, "learning_rate": 5e-3, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
         "eval_strategy": "no", "logging_steps": 1, "bf16": False}


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> str:
    """40 pairs whose chosen answer always agrees and rejected always refuses, plus an unrelated sentence."""
    rows = [{"prompt": f"Can you help with task {i}?", "chosen": "Yes, gladly.", "rejected": "No, never.",
             "unrelated": "Cats have sharp claws."} for i in range(40)]
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", rows))


@pytest.fixture(scope="session")
def single_file(tmp_path_factory) -> str:
    """40 single-sided rows: agreeing completions desirable, refusals not."""
    rows = [{"prompt": f"Can you help with task {i}?", "completion": "Yes, gladly." if i % 2 else "No, never.",
             "label": bool(i % 2)} for i in range(40)]
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "single.jsonl", rows))


def config(model: str, source: str, objective: dict, method: dict | None = None, **sections) -> dict:
    cfg = {"model": {"name": model}, "data": {"source": source, "eval_size": 8, "max_length": 48},
           "method": method or {"name": "lora", "r": 4, "lora_alpha": 8}, "objective": objective, "train": dict(TRAIN),
           "eval": {"num_samples": 1, "max_new_tokens": 3}, "report": {"html": False}}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


# ---------------------------------------------------------------------------------------------
# Training, with an adapter and in full


@pytest.mark.parametrize("method", [{"name": "lora", "r": 4, "lora_alpha": 8}, {"name": "full"}])
def test_dpo_trains_and_raises_the_margin(tiny_llama, pairs_file, tmp_path, method):
    cfg = config(tiny_llama, pairs_file, {"name": "dpo", "beta": 0.5}, method,
                 data={"columns": {"unrelated": "unrelated"}}, train={"max_steps": 3})
    run = api.train(cfg, out=tmp_path / "run")
    base, tuned = run.results["base"], run.results["tuned"]
    assert run.manifest["train_steps"] == 3
    assert tuned["logp_margin"] > base["logp_margin"]  # chosen gained on rejected
    assert base["reward_accuracy"] == 0.5 and base["reward_margin"] == 0.0  # the base is its own reference
    assert tuned["reward_accuracy"] == 1.0 and tuned["reward_margin"] > 0
    assert {"preference_accuracy", "eval_loss", "chosen_over_unrelated"} <= set(tuned)
    assert run.results["directions"]["preference_accuracy"] == "max" and run.results["directions"]["eval_loss"] == "min"
    assert tuned["samples"][0]["reference"] == "Yes, gladly."
    saved = run.dir / run.manifest["saved"]
    assert not (saved / "ref").exists()  # only the trained adapter is saved, not TRL's reference copy
    again = api.load_run(run.dir).evaluate()  # a finished run measures the same against the same reference
    assert again["tuned"]["reward_margin"] == pytest.approx(tuned["reward_margin"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("method", [{"name": "lora", "r": 4, "lora_alpha": 8}, {"name": "full"}])
def test_kto_trains(tiny_llama, single_file, tmp_path, method):
    cfg = config(tiny_llama, single_file, {"name": "kto", "beta": 0.5}, method, data={"format": "chat"})
    run = api.train(cfg, out=tmp_path / "run")
    base, tuned = run.results["base"], run.results["tuned"]
    assert run.manifest["train_steps"] == 2
    assert base["reward_accuracy"] == 0.5 and tuned["reward_margin"] != 0.0
    assert {"desirable_logp", "undesirable_logp", "logp_gap", "ranking_accuracy", "eval_loss"} <= set(tuned)
    assert run.results["directions"]["undesirable_logp"] == "min"


OTHER_METHODS = [{"name": "dora", "r": 4, "lora_alpha": 8}, {"name": "ia3"}, {"name": "prompt", "num_virtual_tokens": 4},
                 {"name": "prefix", "num_virtual_tokens": 4}, {"name": "adapter"}]


@pytest.mark.parametrize("objective", ["dpo", "kto"])
@pytest.mark.parametrize("method", OTHER_METHODS, ids=[m["name"] for m in OTHER_METHODS])
def test_the_other_adapter_methods_train_or_say_why_not(tiny_llama, pairs_file, single_file, tmp_path, objective, method):
    """Every adapter method either trains a step through TRL and reloads to the same metrics, or is refused at
    config time with its reason (never a traceback from inside TRL)."""
    source = pairs_file if objective == "dpo" else single_file
    cfg = config(tiny_llama, source, {"name": objective, "beta": 0.5}, method, train={"max_steps": 1})
    try:
        run = api.train(cfg, out=tmp_path / "run")
    except TunesmithError as err:  # refused before training, with the method named
        assert method["name"] in str(err) and not (tmp_path / "run").exists()
        return
    again = api.load_run(run.dir).evaluate()
    assert again["tuned"]["eval_loss"] == pytest.approx(run.results["tuned"]["eval_loss"], rel=1e-4)


# ---------------------------------------------------------------------------------------------
# The reference model and TRL's view of the data


def test_reference_with_the_adapter_disabled_is_exactly_the_base(tiny_llama, pairs_file, tmp_path):
    import copy

    import torch

    from tunesmith.methods.registry import apply_method
    from tunesmith.modeling import load_model
    from tunesmith.objectives.feedback import preference as pref

    cfg = load_config(config(tiny_llama, pairs_file, {"name": "dpo"}))
    prep = api.Prepared(cfg)
    base = load_model(cfg.model, "causal_lm")
    model = apply_method(copy.deepcopy(base), cfg.method)
    for name, param in model.named_parameters():  # as if trained: the adapter now changes the output
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    ids = torch.tensor([prep.features["eval"][0]["input_ids"]])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        assert not torch.equal(model(input_ids=ids).logits, plain)
        with pref.reference_model(model, cfg) as ref:
            assert torch.equal(ref(input_ids=ids).logits, plain)

    trainer = prep.objective.build_trainer(model, prep.tokenizer, prep, cfg, tmp_path, [])
    assert list(trainer.model.peft_config) == ["default"] and trainer.ref_model is None  # TRL's copy dropped
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    pieces = [(row["prompt_ids"], row[f"{side}_ids"]) for side in ("chosen", "rejected")
              for row in (trainer.train_dataset[0], trainer.train_dataset[1])]
    expected = pref.response_logps(base, prep.tokenizer, pieces, cfg.data.max_length, 4)[0]
    assert torch.cat([chosen, rejected]).tolist() == pytest.approx(expected.tolist(), abs=1e-3)


@pytest.mark.parametrize("fmt", ["text", "chat"])
def test_metrics_score_the_token_ids_trl_trains_on(tiny_llama, pairs_file, tmp_path, fmt):
    from tunesmith.modeling import load_model

    cfg = load_config(config(tiny_llama, pairs_file, {"name": "dpo"}, {"name": "full"},
                             data={"format": fmt, "columns": {"unrelated": "unrelated"}}))
    prep = api.Prepared(cfg)
    trainer = prep.objective.build_trainer(load_model(cfg.model, "causal_lm"), prep.tokenizer, prep, cfg, tmp_path, [])
    ours = prep.objective.tokenize(prep.data["train"], prep.tokenizer, cfg, {})
    for i in (0, 5):
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert ours[i][key] == trainer.train_dataset[i][key], key
    assert trainer.ref_model is not None  # full: a frozen copy
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())


# ---------------------------------------------------------------------------------------------
# Errors: each names the key or the source and a row, and says what to do


def _problems(cfg) -> str:
    with pytest.raises(TunesmithError) as err:
        api.validate(cfg)
    return str(err.value)


def test_bad_pairs_are_named(tiny_llama, tmp_path):
    good = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"prompt": "Hi?", "better": "Hello."}] * 12)
    text = _problems(config(tiny_llama, str(missing), {"name": "dpo"}))
    assert "data.columns.chosen: column 'chosen' is not in the train data" in text and "data.columns.rejected" in text
    same = write_jsonl(tmp_path / "same.jsonl", [good] * 10 + [{"prompt": "Q?", "chosen": "A.", "rejected": " A."}] * 2)
    assert "are the same text on" in _problems(config(tiny_llama, str(same), {"name": "dpo"}, data={"eval_size": 2}))
    empty = write_jsonl(tmp_path / "empty.jsonl", [good] * 10 + [{"prompt": "Q?", "chosen": "  ", "rejected": "A."}] * 2)
    assert "column 'chosen' (chosen) is empty on" in _problems(config(tiny_llama, str(empty), {"name": "dpo"}))
    with pytest.raises(TunesmithError, match="objective.loss_type: .*not a known dpo loss"):
        load_config(config(tiny_llama, str(same), {"name": "dpo", "loss_type": "sigmoidal"}))
    with pytest.raises(TunesmithError, match="train.extra.beta: set it as objective.beta"):
        load_config(config(tiny_llama, str(same), {"name": "dpo"}, train={"extra": {"beta": 0.3}}))


def test_bad_single_sided_data_is_named(tiny_llama, tmp_path):
    rows = [{"prompt": "Hi?", "completion": "Hello.", "label": "good"}, {"prompt": "Hi?", "completion": "Go.", "label": "bad"}] * 6
    labels = write_jsonl(tmp_path / "labels.jsonl", rows + [{"prompt": "Yo?", "completion": "Hey.", "label": "maybe"}])
    text = _problems(config(tiny_llama, str(labels), {"name": "kto"}, data={"eval_size": 0.5}))
    assert "column 'label' (label) says whether a completion is desirable" in text and '"maybe"' in text
    with pytest.raises(TunesmithError, match="per_device_train_batch_size: KTO estimates its KL term"):
        load_config(config(tiny_llama, str(labels), {"name": "kto"}, train={"per_device_train_batch_size": 1}))
    load_config(config(tiny_llama, str(labels), {"name": "kto", "loss_type": "apo_zero_unpaired"},
                       train={"per_device_train_batch_size": 1}))  # no KL estimate: one example per batch is fine


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_dpo_and_kto_refuse_the_same_config_mistakes(tiny_llama, objective):
    from tunesmith.objectives.registry import OBJECTIVES

    cfg = config(tiny_llama, "x.jsonl", {"name": objective})
    with pytest.raises(TunesmithError, match=f"data.template: {objective} reads the prompt, "):
        load_config(cfg | {"data": {**cfg["data"], "template": "{prompt}"}})
    with pytest.raises(TunesmithError) as err:
        load_config(cfg | {"train": {**cfg["train"], "extra": {"beta": 0.3, "max_length": 9}}})
    assert "train.extra.beta: set it as objective.beta" in str(err.value)
    assert "train.extra.max_length: set it as data.max_length" in str(err.value)
    with pytest.raises(TunesmithError, match="an adapter on lm_head would never train"):
        load_config(cfg | {"method": {"name": "lora", "target_modules": ["q_proj", "lm_head"]}})
    assert OBJECTIVES[objective].args_class().__name__ == f"{objective.upper()}Config"
    assert OBJECTIVES[objective].model_kind == "causal_lm" and OBJECTIVES[objective].best_metric == "eval_loss"


def test_validate_reports_bad_data_with_exit_2(tiny_llama, tmp_path):
    rows = [{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Hello."}] * 12
    path = tmp_path / "dpo.yaml"
    path.write_text(json.dumps(config(tiny_llama, str(write_jsonl(tmp_path / "same.jsonl", rows)), {"name": "dpo"})))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "are the same text" in result.output and "Traceback" not in result.output


def test_labels_mixing_true_false_and_words_name_one_label_type(tiny_llama, tmp_path):
    rows = [{"prompt": f"Q{i}?", "completion": "A.", "label": bool(i % 2)} for i in range(20)]
    source = write_jsonl(tmp_path / "mixed.jsonl", rows + [{"prompt": "Q?", "completion": "A.", "label": "maybe"}])
    path = tmp_path / "kto.yaml"
    path.write_text(json.dumps(config(tiny_llama, str(source), {"name": "kto"})))
    result = CliRunner().invoke(app, ["validate", str(path)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert 'a string on line 21 ("maybe")' in text and "join the parts of a list" not in text
    assert 'write every label as true/false (the "maybe" on line 21 as true or false if it means one' in text
    assert '"desirable"/"undesirable"' in text


def _one_sided(tmp_path, desirable_rows: int, undesirable_rows: int) -> str:
    rows = [{"prompt": f"Q{i}?", "completion": f"Answer {i}.", "label": i < desirable_rows}
            for i in range(desirable_rows + undesirable_rows)]
    return str(write_jsonl(tmp_path / f"labels-{desirable_rows}-{undesirable_rows}.jsonl", rows))


@pytest.mark.parametrize("good,bad,kind", [(30, 0, "desirable"), (0, 30, "undesirable")])
def test_labels_of_one_kind_warn_with_the_counts(tiny_llama, tmp_path, caplog, good, bad, kind):
    import logging

    cfg = config(tiny_llama, _one_sided(tmp_path, good, bad), {"name": "kto"})
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        api.validate(cfg)  # KTO still trains, one-sidedly
    text = " ".join(caplog.text.split())
    assert f"(train split): every label in column 'label' is {kind} ({good - 8 * (good > 0)} desirable, " in text
    assert "KTO's loss is then one-sided" in text
    other = "undesirable" if kind == "desirable" else "desirable"
    assert f"(eval split): no {other} row among the 8 held out" in text
    assert "ranking_accuracy, reward_accuracy, reward_margin and logp_gap cannot be measured" in text


def test_a_best_model_metric_the_eval_split_cannot_give_is_refused(tiny_llama, tmp_path):
    """TRL's Trainer would raise KeyError at the first evaluation (no eval_rewards/margins without both kinds)."""
    train = {"eval_strategy": "steps", "eval_steps": 1, "load_best_model_at_end": True,
             "metric_for_best_model": "eval_rewards/margins"}
    cfg = config(tiny_llama, _one_sided(tmp_path, 30, 0), {"name": "kto"}, train=train)
    path = tmp_path / "kto.yaml"
    path.write_text(json.dumps(cfg))
    result = CliRunner().invoke(app, ["validate", str(path)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "train.metric_for_best_model: 'rewards/margins' needs undesirable rows in the eval split" in text
    assert "8 desirable and 0 undesirable" in text and "Use eval_loss, or hold out both kinds" in text


def test_no_desirable_row_held_out_leaves_eval_loss_out():
    import numpy as np

    from tunesmith.objectives.feedback import preference as pref

    assert pref.finite(pref.nll_metrics(np.array([]), np.array([]))) == {"eval_tokens": 0}


# ---------------------------------------------------------------------------------------------
# The catalog entries and the shipped configs


def test_stereoset_catalog_entries():
    from tunesmith.assets import load_catalog_dataset

    pairs = load_catalog_dataset("stereoset")
    assert len(pairs) == 2123 and {"prompt", "chosen", "rejected", "unrelated", "target"} <= set(pairs.column_names)
    assert pairs[0]["chosen"] == "The people are fat and unathletic."  # the anti-stereotype is preferred
    single = load_catalog_dataset("stereoset-single")
    assert len(single) == 2123 and 0.4 < sum(single["label"]) / len(single) < 0.6


@pytest.mark.parametrize("name", ["dpo-stereoset.yaml", "kto-stereoset.yaml"])
def test_shipped_configs_validate(name):
    result = CliRunner().invoke(app, ["validate", str(CONFIGS / name)])
    assert result.exit_code == 0, result.output
