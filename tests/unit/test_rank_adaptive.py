"""Rank-adaptive LoRA: adalora (PEFT AdaLoRA, rank pruned by importance during training) and dylora (one adapter
for every rank in [r_min, r_max], cut to rank k on export). Training, trainable sets and reload for the support
table are in test_methods.py; here: parameter counts, the rank budget, the nested truncation, export --rank."""

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from tunesmith import api
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.methods.dylora import run_at_rank
from tunesmith.methods.registry import apply_method
from tunesmith.modeling import load_model
from tunesmith.runs.adapters import export

TEXTS = ["What a film.", "Dull.", "A fine, warm story with a weak end."]
DYLORA = {"name": "dylora", "r_min": 1, "r_max": 4, "eval_rank": 3, "lora_alpha": 8}
ADALORA = {"name": "adalora", "init_r": 4, "target_r": 2}


def applied(model_path, data, method):
    cfg = load_config(tiny_config(model_path, data, "classify", method))
    return apply_method(load_model(cfg.model, "classify", num_labels=2), cfg.method)


@pytest.fixture(scope="module")
def dylora_run(tiny_bert, sentiment_file, tmp_path_factory):
    """4 steps of DyLoRA r 1..4, evaluated (and reloaded) at rank 3."""
    return api.train(tiny_config(tiny_bert, sentiment_file, "classify", DYLORA), out=tmp_path_factory.mktemp("dy") / "run")


@pytest.fixture(scope="module")
def adalora_run(tiny_bert, sentiment_file, tmp_path_factory):
    """8 steps of AdaLoRA: rank 4 on the 4 default matrices (query, value x 2 layers), pruned to 2 on average."""
    cfg = tiny_config(tiny_bert, sentiment_file, "classify", ADALORA, train={"max_steps": 8})
    return api.train(cfg, out=tmp_path_factory.mktemp("ada") / "run")


def plain_peft(tiny_bert, folder):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    return PeftModel.from_pretrained(base, str(folder)).eval()


def logits(model, tiny_bert):
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(tiny_bert)(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def test_trainable_counts_match_closed_forms(tiny_bert, sentiment_file):
    ada = applied(tiny_bert, sentiment_file, ADALORA)  # P (r x d_in), E (r), Q (d_out x r) per matrix
    dy = applied(tiny_bert, sentiment_file, DYLORA)  # plain LoRA at r_max
    count = lambda m: sum(p.numel() for n, p in m.named_parameters() if p.requires_grad and "lora_" in n)  # noqa: E731
    assert count(ada) == 2 * 2 * 4 * (32 + 1 + 32)
    assert count(dy) == 2 * 2 * 4 * (32 + 32)


def test_dylora_samples_a_rank_per_training_pass_and_uses_eval_rank_in_eval(tiny_bert, sentiment_file):
    model = applied(tiny_bert, sentiment_file, DYLORA)
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query.lora_A["default"]
    used = []
    layer.register_forward_hook(lambda m, i, out: used.append(int((out.abs().sum(dim=(0, 1)) > 0).sum())))
    batch = {"input_ids": torch.randint(5, 1000, (2, 6))}
    model.train()
    torch.manual_seed(0)
    for _ in range(30):
        model(**batch)
    assert set(used) == {1, 2, 3, 4}  # uniform over [r_min, r_max]: every rank appears in 30 passes
    used.clear()
    model.eval()
    for _ in range(3):
        model(**batch)
    assert used == [3, 3, 3]


def test_dylora_export_at_rank_k_is_the_first_k_components(dylora_run, tiny_bert, sentiment_file, tmp_path):
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    full = load_file(dylora_run.dir / "adapter" / "adapter_model.safetensors")
    for k in (1, 2, 4):
        out = export(dylora_run.dir, tmp_path / f"rank{k}", rank=k)
        assert json.loads((out / "adapter_config.json").read_text())["r"] == k
        exported = plain_peft(tiny_bert, out)  # plain PEFT, no tunesmith code
        # 1. each layer's update is (lora_alpha / k) * B[:, :k] @ A[:k] of the full adapter
        key = "base_model.model.bert.encoder.layer.1.attention.self.value.lora_{}.weight"
        A, B = full[key.format("A")], full[key.format("B")]
        delta = exported.base_model.model.bert.encoder.layer[1].attention.self.value.get_delta_weight("default")
        assert torch.allclose(delta, (8 / k) * B[:, :k] @ A[:k], atol=1e-6)
        # 2. the same outputs as the full rank-4 adapter evaluated with only its first k components (the hooks
        # that truncate in training, here at eval_rank k)
        truncating = applied(tiny_bert, sentiment_file, {**DYLORA, "eval_rank": k})
        set_peft_model_state_dict(truncating, full)
        assert torch.allclose(logits(exported, tiny_bert), logits(truncating.eval(), tiny_bert), atol=1e-5)


def test_dylora_reloads_at_its_eval_rank_and_cuts_to_any_rank(dylora_run):
    reloaded = api.load_run(dylora_run.dir)
    a, b = dylora_run.predict(TEXTS), reloaded.predict(TEXTS)
    assert [x["label"] for x in a] == [x["label"] for x in b]
    assert all(abs(x["score"] - y["score"]) < 1e-5 for x, y in zip(a, b))
    assert reloaded.evaluate()["tuned"]["accuracy"] == pytest.approx(dylora_run.results["tuned"]["accuracy"])
    at3 = run_at_rank(reloaded, 3).predict(TEXTS)
    assert all(abs(x["score"] - y["score"]) < 1e-6 for x, y in zip(at3, b))
    facts = json.loads((dylora_run.dir / "adapter" / "dylora.json").read_text())
    assert (facts["r_min"], facts["r_max"], facts["eval_rank"]) == (1, 4, 3)


def test_dylora_merged_export_at_rank_k_predicts_like_the_rank_k_adapter(dylora_run, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    adapter = plain_peft(tiny_bert, export(dylora_run.dir, tmp_path / "r2", rank=2))
    merged = AutoModelForSequenceClassification.from_pretrained(str(export(dylora_run.dir, tmp_path / "m2", rank=2, merge=True)))
    assert torch.allclose(logits(adapter, tiny_bert), logits(merged.eval(), tiny_bert), atol=1e-5)


def test_export_rank_outside_the_range_or_on_another_method_is_refused(dylora_run, adalora_run, tmp_path):
    for k in (0, 5):
        with pytest.raises(TunesmithError, match=rf"--rank {k}: this DyLoRA adapter was trained for ranks 1 to 4"):
            export(dylora_run.dir, tmp_path / "out", rank=k)
        assert not (tmp_path / "out").exists()
    with pytest.raises(TunesmithError, match="export --rank: a 'adalora' run is trained at one rank"):
        export(adalora_run.dir, tmp_path / "out", rank=2)
    result = CliRunner().invoke(app, ["export", str(dylora_run.dir), "--rank", "9", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2 and "trained for ranks 1 to 4" in result.output
    result = CliRunner().invoke(app, ["export", str(dylora_run.dir), "--rank", "2", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cli" / "adapter_config.json").read_text())["r"] == 2


def test_adalora_prunes_the_rank_budget_to_target_r(adalora_run):
    config = json.loads((adalora_run.dir / "adapter" / "adapter_config.json").read_text())
    assert (config["total_step"], config["tinit"], config["tfinal"]) == (8, 1, 2)  # derived from the run: 8 steps
    pattern = config["rank_pattern"]
    assert len(pattern) == 4 and all(len(kept) == 4 for kept in pattern.values())  # init_r everywhere at first
    assert sum(sum(kept) for kept in pattern.values()) == 2 * 4  # target_r x matrices, shared by importance
    from safetensors.torch import load_file

    weights = load_file(adalora_run.dir / "adapter" / "adapter_model.safetensors")
    for name, kept in pattern.items():  # the saved adapter keeps only the surviving triplets
        assert weights[f"base_model.model.{name}"].shape[0] == sum(kept)
    reloaded = api.load_run(adalora_run.dir)
    a, b = adalora_run.predict(TEXTS), reloaded.predict(TEXTS)
    assert all(abs(x["score"] - y["score"]) < 1e-5 for x, y in zip(a, b))


def test_adalora_merged_export_predicts_like_the_run(adalora_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    merged = AutoModelForSequenceClassification.from_pretrained(str(export(adalora_run.dir, tmp_path / "m", merge=True)))
    probs = torch.softmax(logits(merged.eval(), str(adalora_run.dir / "adapter")), -1)
    expected = torch.tensor([[p["probs"][n] for n in ("fresh", "rotten")] for p in adalora_run.predict(TEXTS)])
    assert torch.allclose(probs, expected, atol=1e-5)


def test_adalora_schedule_and_ranks_are_checked_with_the_config(tiny_bert, sentiment_file):
    with pytest.raises(TunesmithError, match="leave no step to prune the rank in a run of 4 optimizer steps"):
        load_config(tiny_config(tiny_bert, sentiment_file, "classify", {**ADALORA, "tinit": 3, "tfinal": 1}))
    with pytest.raises(TunesmithError, match=r"target_r \(8\) must not exceed init_r \(4\)"):
        load_config(tiny_config(tiny_bert, sentiment_file, "classify", {"name": "adalora", "init_r": 4, "target_r": 8}))
    with pytest.raises(TunesmithError, match=r"eval_rank \(5\) must lie in \[r_min, r_max\] = \[1, 4\]"):
        load_config(tiny_config(tiny_bert, sentiment_file, "classify", {**DYLORA, "eval_rank": 5}))
