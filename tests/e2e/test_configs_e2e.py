"""The shipped configs, end to end on the real offline assets, with small step counts."""

import pytest

from tunesmith import api
from tunesmith.report.runlog import read_metrics

pytestmark = pytest.mark.e2e


def test_sentiment_lora_learns(tmp_path):
    run = api.train("configs/sentiment-lora.yaml", out=tmp_path / "run",
                    overrides=["train.max_steps=60", "train.learning_rate=1e-3", "train.eval_strategy=no", "train.load_best_model_at_end=false",
                               "train.metric_for_best_model=null", "data.eval_size=200"])
    res = run.results
    assert res["tuned"]["accuracy"] > res["base"]["accuracy"] + 0.05
    losses = [r["loss"] for r in read_metrics(run.dir) if "loss" in r]
    assert sum(losses[-3:]) < sum(losses[:3])
    assert len(res["probes"]["tuned"]) == 5
    assert run.predict("A moving, beautifully acted film.")[0]["label"] in ("fresh", "rotten")


def test_chat_sft_lowers_eval_loss(tmp_path):
    run = api.train("configs/chat-sft-lora.yaml", out=tmp_path / "run",
                    overrides=["train.max_steps=6", "train.per_device_train_batch_size=4", "train.eval_strategy=no", "eval.max_examples=16",
                               "eval.num_samples=1", "eval.max_new_tokens=8", "eval.probes=[]"])
    res = run.results
    assert res["tuned"]["eval_loss"] < res["base"]["eval_loss"]
    assert res["tuned"]["samples"][0]["generation"] is not None


def test_style_causal_lm_lowers_perplexity(tmp_path):
    run = api.train("configs/style-causal-lm.yaml", out=tmp_path / "run",
                    overrides=["train.max_steps=4", "train.per_device_train_batch_size=4", "train.eval_strategy=no", "train.learning_rate=1e-3",
                               "eval.max_examples=8", "eval.num_samples=1", "eval.max_new_tokens=8", "eval.probes=[]"])
    res = run.results
    assert res["tuned"]["perplexity"] < res["base"]["perplexity"]


def test_summarize_sft_reports_generation_metrics(tmp_path):
    # Two steps (the first is warmup at lr 0), shorter articles and summaries: the config's generation-metric path
    # end to end, affordable in fp32 on a CPU without native bf16.
    run = api.train("configs/summarize-sft.yaml", out=tmp_path / "run",
                    overrides=["train.max_steps=2", "train.per_device_train_batch_size=2", "data.max_length=192",
                               "eval.max_examples=4", "eval.max_generate=4", "eval.num_samples=1", "eval.max_new_tokens=16"])
    res = run.results
    for side in ("base", "tuned"):
        assert res[side]["generated_examples"] == 4
        for key in ("rouge1", "rouge2", "rougeL"):
            assert 0.0 <= res[side][key] <= 1.0, (side, key)
        assert 0.0 <= res[side]["bleu"] <= 100.0 and 0.0 <= res[side]["chrf"] <= 100.0
        assert res[side]["rouge1"] > 0  # a real summary of a real article shares words with the reference
