"""The reward configs end to end on the real offline assets (minilm-l6), with small step counts."""

import pytest

from tunesmith import api

pytestmark = pytest.mark.e2e


def test_reward_pairs_learns_and_its_model_loads_with_plain_transformers(tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = api.train("configs/reward-pairs.yaml", out=tmp_path / "run", overrides=["train.max_steps=25"])
    base, tuned = run.results["base"], run.results["tuned"]
    assert tuned["reward_margin"] > base["reward_margin"] and tuned["eval_loss"] < base["eval_loss"]
    article = "the council said on monday that the bridge will reopen in june after repairs."
    ours = api.load_run(run.dir).score([{"prompt": article, "response": "the bridge will reopen in june."}])
    import json

    base_name = json.loads((run.dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    base_model = AutoModelForSequenceClassification.from_pretrained(base_name, num_labels=1)
    model = PeftModel.from_pretrained(base_model, str(run.dir / "adapter")).eval()  # method lora: base + adapter
    tok = AutoTokenizer.from_pretrained(str(run.dir / "adapter"))
    with torch.no_grad():
        plain = model(**tok(article, "the bridge will reopen in june.", return_tensors="pt")).logits[0, 0].item()
    assert plain == pytest.approx(ours[0], abs=1e-4)


def test_reward_ratings_thumbs_learn_sentiment(tmp_path):
    run = api.train("configs/reward-ratings.yaml", out=tmp_path / "run",
                    overrides=["data.train_size=320", "data.eval_size=100", "train.max_steps=20", "train.learning_rate=1e-3"])
    base, tuned = run.results["base"], run.results["tuned"]
    assert run.manifest["task"]["positive"] == "fresh" and tuned["pearson"] > base["pearson"]
    good, bad = run.score([{"response": "A warm, funny and moving film."}, {"response": "A dull, lifeless mess."}])
    assert good > bad
