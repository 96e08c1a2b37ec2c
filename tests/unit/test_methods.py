"""Every method x objective of the foundation trains: intended parameters change, frozen ones do not,
and a saved run reloads and predicts the same."""

import pytest
import torch

from tunesmith import api
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.methods.registry import METHODS, apply_method
from tunesmith.modeling import load_model

CASES = [(m, o) for m in ("full", "head", "lora") for o in ("classify", "causal_lm", "sft") if o not in METHODS[m].unsupported]


def data_for(objective, sentiment_file, qa_file, text_file):
    return {"classify": sentiment_file, "sft": qa_file, "causal_lm": text_file}[objective]


@pytest.mark.parametrize("method,objective", CASES)
def test_method_trains_intended_parameters(method, objective, tiny_bert, tiny_llama, sentiment_file, qa_file, text_file, make_config, tmp_path, monkeypatch):
    model_path = tiny_bert if objective == "classify" else tiny_llama
    cfg = make_config(model_path, data_for(objective, sentiment_file, qa_file, text_file), objective, {"name": method})
    seen = {}

    def spy(model, method_cfg):  # snapshot the very model that api.train is about to train
        model = apply_method(model, method_cfg)
        seen["before"] = {n: p.detach().clone().cpu() for n, p in model.named_parameters()}
        seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        return model

    monkeypatch.setattr(api, "apply_method", spy)
    run = api.train(cfg, out=tmp_path / "run")
    after = {n: p.detach().cpu() for n, p in run._model.named_parameters()}
    trainable, before = seen["trainable"], seen["before"]
    assert trainable, "nothing to train"
    if method == "head":
        assert all("classifier" in n for n in trainable)
    if method == "lora":
        assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    for name, old in before.items():
        if name not in trainable:
            assert torch.equal(old, after[name]), f"frozen parameter {name} changed"
    changed = [n for n in trainable if not torch.equal(before[n], after[n])]
    assert changed, "no trainable parameter changed"


@pytest.mark.parametrize("objective", ["classify", "sft"])
def test_saved_run_reloads_and_predicts_the_same(objective, tiny_bert, tiny_llama, sentiment_file, qa_file, text_file, make_config, tmp_path):
    model_path = tiny_bert if objective == "classify" else tiny_llama
    cfg = make_config(model_path, data_for(objective, sentiment_file, qa_file, text_file), objective,
                      eval={"probes": ["What a film.", "Why?"], "max_new_tokens": 4})
    run = api.train(cfg, out=tmp_path / "run")
    reloaded = api.load_run(run.dir)
    if objective == "classify":
        a, b = run.predict(["What a film.", "Dull."]), reloaded.predict(["What a film.", "Dull."])
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert all(abs(x["score"] - y["score"]) < 1e-5 for x, y in zip(a, b))
    else:
        assert run.generate(["Why?"], max_new_tokens=4) == reloaded.generate(["Why?"], max_new_tokens=4)
    assert reloaded.results["tuned"] == run.results["tuned"]


def test_adapter_loads_with_plain_peft(tiny_bert, sentiment_file, make_config, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = api.train(make_config(tiny_bert, sentiment_file, "classify"), out=tmp_path / "run")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    model = PeftModel.from_pretrained(base, str(run.dir / "adapter")).eval()
    tok = AutoTokenizer.from_pretrained(str(run.dir / "adapter"))
    probs = torch.softmax(model(**tok(["What a film."], return_tensors="pt")).logits, -1)[0]
    assert abs(float(probs.max()) - run.predict("What a film.")[0]["score"]) < 1e-5


def test_lora_target_that_matches_nothing_lists_linear_modules(tiny_bert, sentiment_file, make_config):
    cfg = load_config(make_config(tiny_bert, sentiment_file, "classify", {"name": "lora", "target_modules": ["q_proj"]}))
    model = load_model(cfg.model, "classify", num_labels=2)
    with pytest.raises(TunesmithError, match=r"\['q_proj'\] match no linear module.*'query'"):
        apply_method(model, cfg.method)


def test_lora_trainable_count_matches_closed_form(tiny_bert, sentiment_file, make_config):
    cfg = load_config(make_config(tiny_bert, sentiment_file, "classify", {"name": "lora", "r": 4, "target_modules": ["query", "value"]}))
    model = apply_method(load_model(cfg.model, "classify", num_labels=2), cfg.method)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora == 2 * 2 * 4 * (32 + 32)  # 2 layers x 2 matrices x r x (d_in + d_out)


def test_run_folder_is_never_clobbered(tiny_bert, sentiment_file, make_config, tmp_path):
    out = tmp_path / "run"
    api.train(make_config(tiny_bert, sentiment_file, "classify"), out=out)
    with pytest.raises(TunesmithError, match="already exists; pass --overwrite"):
        api.train(make_config(tiny_bert, sentiment_file, "classify"), out=out)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(TunesmithError, match="not a tunesmith run folder"):
        api.train(make_config(tiny_bert, sentiment_file, "classify"), out=mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "precious"
