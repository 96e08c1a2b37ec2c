"""Bottleneck adapters: a no-op when inserted, the closed-form parameter count, only adapters (and a new head)
train, and a saved adapter reloads into a fresh base with identical outputs."""

import json

import pytest
import torch

from tunesmith import api
from tunesmith.config import ModelConfig
from tunesmith.errors import TunesmithError
from tunesmith.methods import adapter
from tunesmith.methods.registry import METHODS
from tunesmith.modeling import load_model

D = 32  # hidden size of both tiny models


def base(path, kind, seed=0):
    torch.manual_seed(seed)  # the new classification head is random: the seed picks it
    return load_model(ModelConfig(name=path), kind, num_labels=2).eval()


def cfg(**kw):
    return adapter.AdapterConfig(name="adapter", **{"bottleneck": 8, **kw})


def inputs(model):
    torch.manual_seed(1)
    return {"input_ids": torch.randint(0, model.config.vocab_size, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}


def step(model, n=3):
    """n AdamW steps on a loss that involves every output; returns the model in eval mode."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(n):
        model(**inputs(model)).logits.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(params=["bert", "llama"])
def case(request, tiny_bert, tiny_llama):
    return (tiny_bert, "classify") if request.param == "bert" else (tiny_llama, "causal_lm")


def test_fresh_adapter_computes_exactly_the_base(case):
    path, kind = case
    model = base(path, kind)
    x = inputs(model)
    with torch.no_grad():
        before = model(**x).logits
        after = adapter.apply(model, cfg()).eval()(**x).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("after", [["attention", "ffn"], ["attention"], ["ffn"]])
def test_trainable_count_matches_closed_form_and_only_adapters_train(case, after):
    path, kind = case
    model = adapter.apply(base(path, kind), cfg(after=after))
    b, head = 8, (D * 2 + 2 if kind == "classify" else 0)  # classify: the new classifier, Linear(32, 2)
    per_adapter = D * b + b + b * D + D  # down weight + bias, up weight + bias
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == 2 * len(after) * per_adapter + head  # 2 layers x len(after) insertions
    modules = adapter.layout(model)["modules"]
    assert sorted(m["after"] for m in modules.values()) == sorted(after * 2)
    assert all(("attention." in n or "self_attn." in n) == (m["after"] == "attention") for n, m in modules.items())
    for name in trainable:
        if not name.startswith("classifier."):
            module, part, _ = name.rsplit(".", 2)
            assert part in ("down", "up") and module in modules, name


def test_training_changes_adapters_and_nothing_else(case):
    path, kind = case
    model = adapter.apply(base(path, kind), cfg())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step(model)
    for name, p in model.named_parameters():
        assert torch.equal(before[name], p) != p.requires_grad, f"{name}: trainable={p.requires_grad}"


def test_saved_adapter_reloads_into_a_fresh_base(case, tmp_path):
    path, kind = case
    model = step(adapter.apply(base(path, kind), cfg(activation="gelu")))
    adapter.save(model, tmp_path / "adapter")
    info = json.loads((tmp_path / "adapter" / adapter.CONFIG_FILE).read_text())
    assert info["format"] == "tunesmith-bottleneck-adapter" and info["activation"] == "gelu"
    assert all(m["hidden_size"] == D for m in info["modules"].values())
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter" / adapter.WEIGHTS_FILE))
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    fresh = base(path, kind, seed=123)  # a different random head: the saved one must replace it
    reloaded = adapter.load(fresh, tmp_path / "adapter")
    assert not reloaded.training
    x = inputs(model)
    with torch.no_grad():
        assert torch.equal(model(**x).logits, reloaded(**x).logits)


def test_load_is_strict_about_the_tensors(tiny_bert, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter.save(adapter.apply(base(tiny_bert, "classify"), cfg()), tmp_path)
    tensors = load_file(str(tmp_path / adapter.WEIGHTS_FILE))
    tensors.pop(next(n for n in tensors if n.endswith(".up.weight")))
    tensors["stray.weight"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / adapter.WEIGHTS_FILE))
    with pytest.raises(TunesmithError, match=r"adapter_model.safetensors: does not match .*missing \['.*up.weight'\], unexpected \['stray.weight'\]"):
        adapter.load(base(tiny_bert, "classify"), tmp_path)


def test_bad_target_lists_linear_modules(tiny_bert):
    with pytest.raises(TunesmithError, match=r"method.target_modules: no attention .*\['q_proj'\].*'query'"):
        adapter.apply(base(tiny_bert, "classify"), cfg(target_modules={"attention": ["q_proj"]}))


def test_model_without_known_projections_needs_target_modules():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    with pytest.raises(TunesmithError, match=r"(?s)2 problems.*no attention.*no ffn.*'attn.c_proj', .*'mlp.c_proj'"):
        adapter.apply(model, cfg())
    model = adapter.apply(model, cfg(target_modules={"attention": "attn.c_proj", "ffn": ["mlp.c_proj"]}))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4 * (2 * 16 * 8 + 8 + 16)


needs_registry = pytest.mark.skipif("adapter" not in METHODS, reason="the adapter method is not registered yet")


@needs_registry
@pytest.mark.parametrize("objective", ["classify", "sft"])
def test_api_train_and_reload(objective, tiny_bert, tiny_llama, sentiment_file, qa_file, make_config, tmp_path):
    model_path, data = (tiny_bert, sentiment_file) if objective == "classify" else (tiny_llama, qa_file)
    run = api.train(make_config(model_path, data, objective, {"name": "adapter", "bottleneck": 8}), out=tmp_path / "run")
    assert (run.dir / "adapter" / adapter.CONFIG_FILE).exists()
    assert run.manifest["trainable_params"] == 4 * (2 * D * 8 + 8 + D) + (D * 2 + 2 if objective == "classify" else 0)
    reloaded = api.load_run(run.dir)
    if objective == "classify":
        a, b = run.predict(["What a film.", "Dull."]), reloaded.predict(["What a film.", "Dull."])
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert all(abs(x["score"] - y["score"]) < 1e-6 for x, y in zip(a, b))
    else:
        assert run.generate(["Why?"], max_new_tokens=4) == reloaded.generate(["Why?"], max_new_tokens=4)
    assert any(n.endswith(".up.weight") and p.abs().sum() > 0 for n, p in reloaded.model.named_parameters())
