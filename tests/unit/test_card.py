"""Model cards: every finished run and every export carries a README.md the Hub reads (metadata that validates,
model-index equal to eval.json), with the run's own figures and a snippet that runs without tunesmith."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

TEXTS = ["A fine, moving film.", "Dull and far too long.", "The actors seem bored."]


@pytest.fixture(scope="module")
def classifier_run(tiny_bert, tmp_path_factory):
    """A tiny LoRA classifier trained on the catalog's rotten_tomatoes (a dataset with a known hub origin)."""
    from conftest import tiny_config
    from tunesmith import api

    cfg = tiny_config(tiny_bert, "rotten_tomatoes", "classify", data={"train_size": 64})
    return api.train(cfg, out=tmp_path_factory.mktemp("card") / "sentiment-lora")


def _card(folder: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def _snippet(card) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", card.content, re.S)
    return code


def _run_snippet(code: str, tmp_path: Path) -> str:
    """The card's snippet in a fresh Python that cannot import tunesmith (PYTHONPATH cleared, run from elsewhere)."""
    code = re.sub(r"texts = \[.*\]", f"texts = {TEXTS!r}", code)
    assert "tunesmith" not in code
    script = tmp_path / "snippet.py"
    script.write_text("import sys\nsys.modules['tunesmith'] = None  # must not be needed\n" + code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def test_a_finished_run_has_a_card_the_hub_reads(classifier_run, tmp_path):
    from huggingface_hub.repocard_data import eval_results_to_model_index

    run = classifier_run
    card = _card(run.dir / "adapter")
    data = card.data
    assert "More Information Needed" not in card.content  # PEFT's empty template is gone
    assert data.library_name == "peft" and data.pipeline_tag == "text-classification"
    assert {"tunesmith", "lora", "classify"} <= set(data.tags)
    assert data.datasets == ["cornell-movie-review-data/rotten_tomatoes"]
    assert data.base_model is None  # a local folder is no hub id
    assert data.model_name == "sentiment-lora"
    # model-index: every numeric metric of eval.json, tuned and base, on the evaluation split
    results = json.loads((run.dir / "eval.json").read_text())
    got = {(r.metric_name, r.metric_value) for r in data.eval_results}
    for metric in ("accuracy", "precision", "recall", "f1"):
        assert (metric, results["tuned"][metric]) in got
        assert (f"{metric} (base model, before tuning)", results["base"][metric]) in got
    assert {r.dataset_split for r in data.eval_results} == {"held out from train"}
    assert eval_results_to_model_index(data.model_name, data.eval_results)  # the card data classes accept it
    # the run's own figures
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert f"{manifest['trainable_params']:,} of {manifest['total_params']:,}" in card.content
    assert manifest["machine"]["summary"] in card.content and f"{manifest['tokens_per_second']} tokens/s" in card.content
    # the usage snippet, in a fresh Python, predicts what tunesmith predicts
    labels = [p["label"] for p in run.predict(TEXTS)]
    assert _run_snippet(_snippet(card), tmp_path) == repr(labels)


def test_an_export_has_its_own_card(classifier_run, tmp_path):
    from tunesmith.cli import app

    run = classifier_run
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", str(run.dir), "--out", str(out), "--merge"])
    assert result.exit_code == 0, result.output
    card = _card(out)
    assert card.data.library_name == "transformers" and "merged" in card.data.tags
    assert "PeftModel" not in card.content and "folded into the base weights" in card.content
    labels = [p["label"] for p in run.predict(TEXTS)]
    assert _run_snippet(_snippet(card), tmp_path) == repr(labels)
    plain = tmp_path / "plain"
    assert CliRunner().invoke(app, ["export", str(run.dir), "--out", str(plain)]).exit_code == 0
    assert _card(plain).data.library_name == "peft" and str(plain.resolve()) in _card(plain).content


def test_the_base_license_comes_from_its_card_and_catalog_assets_name_their_origin(tmp_path):
    from tunesmith.report.card import _base_origin, _datasets

    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# a base model\n")
    assert _base_origin(str(tmp_path)) == (None, "mit")
    assert _base_origin("minilm-l6") == ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0")
    assert _datasets({"data": {"source": "/somewhere/private/reviews.jsonl", "mix": [{"source": "boolq"}]}}) == [
        ("reviews.jsonl", None), ("boolq", "google/boolq")]  # a local path is named by its file only


def test_a_full_sft_run_card_loads_with_plain_transformers(tiny_llama, qa_file, make_config, tmp_path):
    from tunesmith import api

    cfg = make_config(tiny_llama, qa_file, "sft", method={"name": "full"}, eval={"probes": ["What is a mirror?"]})
    run = api.train(cfg, out=tmp_path / "chat-full")
    card = _card(run.dir / "model")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert {"full", "sft"} <= set(card.data.tags)
    results = json.loads((run.dir / "eval.json").read_text())
    assert ("eval_loss", results["tuned"]["eval_loss"]) in {(r.metric_name, r.metric_value) for r in card.data.eval_results}
    code = _snippet(card)
    assert "AutoModelForCausalLM.from_pretrained(model_id)" in code and '"What is a mirror?"' in code
    script = tmp_path / "snippet.py"
    script.write_text("import sys\nsys.modules['tunesmith'] = None\n" + code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


def test_forgetting_is_on_the_card_where_measured(classifier_run, tmp_path):
    import shutil

    from tunesmith.report.card import build_card

    run_dir = tmp_path / "copy"
    shutil.copytree(classifier_run.dir, run_dir)
    results = json.loads((run_dir / "eval.json").read_text())
    results["forgetting"] = {"boolq": {"base": 0.6, "tuned": 0.55, "change": -0.05, "base_acc": 0.6, "tuned_acc": 0.5, "n": 40}}
    (run_dir / "eval.json").write_text(json.dumps(results))
    content = build_card(run_dir, run_dir / "adapter").content
    assert "## Forgetting" in content and "| boolq | 40 | 0.6 | 0.55 | -0.05 |" in content
    assert "## Forgetting" not in _card(classifier_run.dir / "adapter").content  # not measured there


def test_a_method_of_tunesmiths_own_format_says_how_to_load_it(tiny_bert, sentiment_file, make_config, tmp_path):
    from tunesmith import api

    run = api.train(make_config(tiny_bert, sentiment_file, "classify", method={"name": "features"}), out=tmp_path / "feat")
    card = _card(run.dir / "features")
    assert card.data.library_name is None and card.data.pipeline_tag == "text-classification"
    assert f'tunesmith.load_run("{run.dir.resolve()}")' in card.content and "```python" not in card.content
