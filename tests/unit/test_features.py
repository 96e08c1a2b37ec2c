"""features: the torch head reproduces the scikit-learn classifier, the backbone stays frozen, embeddings are
cached by token ids (not labels), and the saved head reloads (with and without tunesmith)."""

import json
import logging

import pytest
import torch

from tunesmith import api
from tunesmith.assets import cache_dir
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.methods import features, features_model
from tunesmith.methods.registry import METHODS
from tunesmith.modeling import load_model
from tunesmith.objectives.classify import probabilities

registered = pytest.mark.skipif("features" not in METHODS, reason="the features method is not registered yet")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def three_class_file(sentiment_file, tmp_path_factory):
    """The same texts as sentiment_file with another label set (short / medium / long)."""
    rows = [json.loads(line) for line in open(sentiment_file)]
    size = lambda n: "short" if n < 80 else "medium" if n < 140 else "long"  # noqa: E731
    path = tmp_path_factory.mktemp("data") / "length.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"], "label": size(len(r["text"]))}) + "\n" for r in rows))
    return str(path)


def setup(model_path, data_file, make_config, **method):
    """(cfg, prep, model) without the registry: the config validates with lora, then gets a FeaturesConfig."""
    cfg = load_config(make_config(model_path, data_file, "classify"))
    cfg = cfg.model_copy(update={"method": features.FeaturesConfig(name="features", **method)})
    prep = api.Prepared(cfg)
    model = load_model(cfg.model, "classify", **prep.objective.model_kwargs(prep.task))
    return cfg, prep, features.apply(model, cfg.method)


@pytest.mark.parametrize("classifier", ["logistic", "mlp"])
@pytest.mark.parametrize("labels", ["binary", "three"])
def test_head_reproduces_sklearn_probabilities(classifier, labels, tiny_bert, sentiment_file, three_class_file, make_config, tmp_path):
    data = sentiment_file if labels == "binary" else three_class_file
    cfg, prep, model = setup(tiny_bert, data, make_config, classifier=classifier, hidden_size=16, normalize=True)
    model, stats = features.fit(model, prep.tokenizer, prep, cfg, tmp_path)
    assert stats["train_steps"] > 0 and stats["tokens_seen"] > 0
    train = prep.features["train"]
    x = features_model.embed_all(model, prep.tokenizer, train, 8)
    clf = features.train_classifier(x.numpy(), torch.tensor(list(train["labels"])).numpy(), cfg.method, cfg.train.seed)
    expected = torch.tensor(clf.predict_proba(x.numpy())).double()
    assert expected.shape[1] == len(prep.task["labels"])
    with torch.no_grad():
        head = torch.softmax(model.head(x), -1).double()
    assert torch.allclose(head, expected, atol=1e-5)
    full = probabilities(model, prep.tokenizer, train, 8).double()  # the path classify.evaluate/predict take
    assert torch.allclose(full, expected, atol=1e-5)
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["cache_hit"] is False and 0 <= record["train_accuracy"] <= 1 and record["n_iter"] == stats["train_steps"]


def test_fit_keeps_backbone_and_reuses_cached_embeddings_for_other_labels(tiny_bert, sentiment_file, three_class_file, make_config, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tunesmith")
    cfg, prep, model = setup(tiny_bert, sentiment_file, make_config)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model, first = features.fit(model, prep.tokenizer, prep, cfg, tmp_path)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in before.items())
    assert any(p.abs().sum() > 0 for p in model.head.parameters())
    cached = list((cache_dir() / "features").glob("*.pt"))
    assert len(cached) == 1 and first["tokens_seen"] > 0
    assert f"features: cached embeddings at {cached[0]}" in caplog.text

    caplog.clear()
    cfg2, prep2, model2 = setup(tiny_bert, three_class_file, make_config)
    assert list(prep2.features["train"]["labels"]) != list(prep.features["train"]["labels"])
    calls = []
    model2.backbone.register_forward_hook(lambda *args: calls.append(1))
    model2, second = features.fit(model2, prep2.tokenizer, prep2, cfg2, tmp_path)
    assert calls == [] and second["tokens_seen"] == 0
    n = len(prep2.features["train"])
    assert f"features: re-using cached embeddings {cached[0]} ({n} examples)" in caplog.text
    assert "features: embedding" not in caplog.text
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["cache_hit"] is True

    cfg3, prep3, model3 = setup(tiny_bert, sentiment_file, make_config, pooling="cls")  # another pooling: new key
    features.fit(model3, prep3.tokenizer, prep3, cfg3, tmp_path)
    assert len(list((cache_dir() / "features").glob("*.pt"))) == 2


def test_saved_head_reloads_with_and_without_tunesmith(tiny_bert, sentiment_file, make_config, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModel

    cfg, prep, model = setup(tiny_bert, sentiment_file, make_config, classifier="mlp", hidden_size=16)
    model, _ = features.fit(model, prep.tokenizer, prep, cfg, tmp_path)
    features.save(model, tmp_path / "features")
    meta = json.loads((tmp_path / "features" / "features_config.json").read_text())
    assert meta["format"] == "tunesmith-features" and meta["labels"] == prep.task["labels"]
    assert meta["layers"] == {"0.weight": [16, 32], "0.bias": [16], "2.weight": [2, 16], "2.bias": [2]}

    base = load_model(cfg.model, "classify", **prep.objective.model_kwargs(prep.task))
    reloaded = features.load(base, tmp_path / "features")
    evalset = prep.features["eval"]
    expected = probabilities(model, prep.tokenizer, evalset)
    assert torch.equal(probabilities(reloaded, prep.tokenizer, evalset), expected)

    # the recipe of the module docstring, with transformers and safetensors only
    texts = prep.data["eval"]["text"][:4]
    enc = prep.tokenizer(texts, padding=True, truncation=True, max_length=cfg.data.max_length, return_tensors="pt")
    with torch.no_grad():
        h = AutoModel.from_pretrained(tiny_bert).eval()(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    x = (h * mask).sum(1) / mask.sum(1)
    w = load_file(str(tmp_path / "features" / "head.safetensors"))
    logits = torch.relu(x @ w["0.weight"].T + w["0.bias"]) @ w["2.weight"].T + w["2.bias"]
    assert torch.allclose(torch.softmax(logits, -1), expected[:4], atol=1e-5)


def test_load_without_saved_files_is_a_clear_error(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg, prep, model = setup(tiny_bert, sentiment_file, make_config)
    with pytest.raises(TunesmithError, match=r"features_config.json', 'head.safetensors'\] are missing"):
        features.load(load_model(cfg.model, "classify", num_labels=2), tmp_path)


def test_apply_on_a_causal_lm_is_a_tunesmith_error(tiny_llama, text_file, make_config):
    cfg = load_config(make_config(tiny_llama, text_file, "causal_lm"))
    model = load_model(cfg.model, "causal_lm")
    with pytest.raises(TunesmithError, match="needs|sequence-classification model; got LlamaForCausalLM"):
        features.apply(model, features.FeaturesConfig(name="features"))
    assert set(features.METHOD.unsupported) == {"causal_lm", "sft"}


@registered
def test_train_classify_with_features_evaluates_and_reloads(tiny_bert, sentiment_file, make_config, tmp_path):
    cfg = make_config(tiny_bert, sentiment_file, "classify", {"name": "features", "classifier": "logistic"})
    run = api.train(cfg, out=tmp_path / "run")
    results = json.loads((run.dir / "eval.json").read_text())
    for which in ("base", "tuned"):
        assert {"accuracy", "f1"} <= set(results[which])
    assert (run.dir / "features" / "head.safetensors").exists() and run.manifest["train_steps"] > 0
    assert run.manifest["trainable_params"] == 32 * 2 + 2
    texts = ["What a film.", "Dull.", "A quiet, moving story."]
    reloaded = api.load_run(run.dir)
    a, b = run.predict(texts), reloaded.predict(texts)
    assert [x["label"] for x in a] == [x["label"] for x in b]
    assert all(abs(x["score"] - y["score"]) < 1e-6 for x, y in zip(a, b))


@registered
def test_features_config_rejects_generation_objectives(tiny_llama, qa_file, make_config):
    with pytest.raises(TunesmithError, match="nothing to generate"):
        load_config(make_config(tiny_llama, qa_file, "sft", {"name": "features"}))
