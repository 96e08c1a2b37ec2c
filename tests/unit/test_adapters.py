"""Several adapters on one base, switched per call; export with and without merging."""

import json

import pytest
import torch

import tunesmith
from tunesmith import api
from tunesmith.errors import TunesmithError


def three_label_file(sentiment_file, tmp_path):
    """The same texts with a made-up 3-class label (by length), a second task for the same base."""
    rows = [json.loads(line) for line in open(sentiment_file)]
    for r in rows:
        r["label"] = ["short", "medium", "long"][min(len(r["text"]) // 80, 2)]
    path = tmp_path / "length.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_adapters_of_two_tasks_share_one_base(tiny_bert, sentiment_file, make_config, tmp_path, monkeypatch):
    a = api.train(make_config(tiny_bert, sentiment_file, "classify"), out=tmp_path / "sentiment")
    b = api.train(make_config(tiny_bert, three_label_file(sentiment_file, tmp_path), "classify"), out=tmp_path / "length")
    texts = ["What a film.", "Dull."]
    expected = {"sentiment": api.load_run(a.dir).predict(texts), "length": api.load_run(b.dir).predict(texts)}

    loads = []
    from tunesmith import modeling

    real = modeling.load_model
    monkeypatch.setattr(modeling, "load_model", lambda *args, **kw: loads.append(1) or real(*args, **kw))
    adapters = tunesmith.load_adapters([a.dir, b.dir])
    for name in ("length", "sentiment", "length"):  # switch back and forth
        got = adapters.predict(texts, adapter=name)
        assert [g["label"] for g in got] == [e["label"] for e in expected[name]]
        assert all(abs(g["score"] - e["score"]) < 1e-5 for g, e in zip(got, expected[name]))
    assert set(expected["length"][0]["probs"]) == {"long", "medium", "short"}
    assert len(loads) == 1, "the base model was loaded more than once"
    with pytest.raises(TunesmithError, match="not loaded; loaded: \\['sentiment', 'length'\\]"):
        adapters.predict(texts, adapter="topic")


def test_adapters_switch_for_generation(tiny_llama, qa_file, make_config, tmp_path):
    a = api.train(make_config(tiny_llama, qa_file, "sft"), out=tmp_path / "one")
    b = api.train(make_config(tiny_llama, qa_file, "sft", train={"learning_rate": 5e-2, "max_steps": 6}), out=tmp_path / "two")
    adapters = tunesmith.load_adapters([a.dir, b.dir])
    for run in (a, b):
        assert adapters.generate(["Why?"], adapter=run.dir.name, max_new_tokens=4) == api.load_run(run.dir).generate(["Why?"], max_new_tokens=4)


def test_adapters_refuse_a_run_without_an_adapter(tiny_bert, sentiment_file, make_config, tmp_path):
    a = api.train(make_config(tiny_bert, sentiment_file, "classify"), out=tmp_path / "a")
    b = api.train(make_config(tiny_bert, sentiment_file, "classify", {"name": "head"}), out=tmp_path / "b")
    with pytest.raises(TunesmithError, match="'head' run has no PEFT adapter"):
        tunesmith.load_adapters([a.dir, b.dir])


@pytest.mark.parametrize("method", [{"name": "lora"}, {"name": "dora"}, {"name": "ia3"}])
def test_merged_export_predicts_like_the_adapter(method, tiny_bert, sentiment_file, make_config, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = api.train(make_config(tiny_bert, sentiment_file, "classify", method, train={"learning_rate": 5e-2}), out=tmp_path / "run")
    out = tunesmith.export(run.dir, tmp_path / "merged", merge=True)
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()  # plain transformers, no PEFT
    assert model.config.id2label == {0: "fresh", 1: "rotten"}
    tok = AutoTokenizer.from_pretrained(out)
    texts = ["What a film.", "Dull and far too long."]
    with torch.no_grad():
        merged = torch.softmax(model(**tok(texts, return_tensors="pt", padding=True)).logits, -1)
    unmerged = torch.tensor([[p["probs"][n] for n in ("fresh", "rotten")] for p in run.predict(texts)])
    assert torch.allclose(merged, unmerged, atol=1e-4)


def test_export_refuses_what_cannot_merge_and_never_clobbers(tiny_bert, sentiment_file, make_config, tmp_path):
    run = api.train(make_config(tiny_bert, sentiment_file, "classify", {"name": "prompt", "num_virtual_tokens": 2}), out=tmp_path / "run")
    with pytest.raises(TunesmithError, match="'prompt' adapter cannot be folded"):
        tunesmith.export(run.dir, tmp_path / "merged", merge=True)
    out = tunesmith.export(run.dir, tmp_path / "copy")
    assert (out / "adapter_config.json").exists()
    with pytest.raises(TunesmithError, match="already exists; pass --overwrite"):
        tunesmith.export(run.dir, tmp_path / "copy")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(TunesmithError, match="refusing to replace it"):
        tunesmith.export(run.dir, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "precious"


def test_a_classifier_adapter_carries_its_label_names_for_plain_transformers_and_peft(
        tiny_bert, sentiment_file, make_config, tmp_path):
    """The README's snippet, run in a fresh Python without tunesmith imported, prints label names."""
    import json
    import subprocess
    import sys

    run = api.train(make_config(tiny_bert, sentiment_file, "classify"), out=tmp_path / "run")
    labels = json.loads((run.dir / "adapter" / "labels.json").read_text())
    assert labels == {"id2label": {"0": "fresh", "1": "rotten"}, "label2id": {"fresh": 0, "rotten": 1}}
    snippet = f"""
import json, sys
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
adapter = {str(run.dir / "adapter")!r}
labels = json.load(open(adapter + "/labels.json"))
id2label = {{int(i): name for i, name in labels["id2label"].items()}}  # JSON keys are strings
base = AutoModelForSequenceClassification.from_pretrained({tiny_bert!r}, id2label=id2label, label2id=labels["label2id"])
model = PeftModel.from_pretrained(base, adapter).eval()
tok = AutoTokenizer.from_pretrained(adapter)
with torch.no_grad():
    probs = model(**tok("A fine film.", return_tensors="pt")).logits.softmax(-1)[0]
print(model.config.id2label[int(probs.argmax())], float(probs.max()))
assert "tunesmith" not in sys.modules
"""
    out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    out = out.stdout.split()
    expected = run.predict("A fine film.")[0]
    assert out[0] == expected["label"] and abs(float(out[1]) - expected["score"]) < 1e-5
