"""Generation metrics: textgen against hand-computed values, and eval.json carrying them for sft and causal_lm."""

import json

import pytest

from tunesmith import api
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.eval.textgen import generation_metrics

ALL = ["rouge", "bleu", "chrf", "exact_match"]


def test_identical_texts_score_perfectly():
    preds = ["The cat sat on the mat.", "Rain is expected across Scotland on Friday."]
    m = generation_metrics(preds, list(preds), ALL)
    assert m == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "bleu": 100.0, "chrf": 100.0, "exact_match": 1.0})


def test_disjoint_texts_score_zero():
    m = generation_metrics(["abba cab bad"], ["xyz zyx wry"], ALL)  # no shared word, nor character
    assert m == pytest.approx({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "bleu": 0.0, "chrf": 0.0, "exact_match": 0.0})


def test_partial_overlap_matches_hand_computed_rouge():
    # unigrams: 2 shared of 3 predicted and 4 reference -> P 2/3, R 1/2, F 4/7
    # bigrams: 'the cat' shared of 2 predicted, 3 reference -> P 1/2, R 1/3, F 2/5
    # longest common subsequence 'the cat' -> as ROUGE-1, 4/7
    m = generation_metrics(["the cat sat"], ["the cat ran away"], ["rouge"])
    assert m == pytest.approx({"rouge1": 4 / 7, "rouge2": 2 / 5, "rougeL": 4 / 7})


def test_rouge_averages_over_examples_and_stems():
    m = generation_metrics(["the cats are running", "x y"], ["the cat is running", "p q"], ["rouge1"])
    assert m == pytest.approx({"rouge1": (3 / 4) / 2})  # 'cats'/'cat' and 'running' stem alike; 'are'/'is' do not


def test_exact_match_strips_whitespace_and_casefolds():
    m = generation_metrics(["  Paris\n", "Lyon", "new york"], ["paris", "Marseille", "New York"], ["exact_match"])
    assert m == {"exact_match": pytest.approx(2 / 3)}


def test_multiple_references_take_the_best():
    preds = ["the cat sat", "a dog barked loudly"]
    refs = [["a dog barked", "the cat sat"], "a dog barked loudly"]  # a list of references, then a single one
    m = generation_metrics(preds, refs, ALL)
    assert m == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "bleu": 100.0, "chrf": 100.0, "exact_match": 1.0})
    single = generation_metrics(["the cat sat"], ["a dog barked"], ["rouge1", "exact_match"])
    assert single == {"rouge1": 0.0, "exact_match": 0.0}  # the same prediction, without its matching reference


def test_names_select_metrics_and_mistakes_are_errors():
    assert set(generation_metrics(["a b"], ["a b"], ["rougeL", "chrf"])) == {"rougeL", "chrf"}
    assert generation_metrics([], [], ALL) == {}
    with pytest.raises(ValueError, match="meteor"):
        generation_metrics(["a"], ["a"], ["meteor"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        generation_metrics(["a", "b"], ["a"], ["rouge"])


def test_config_accepts_known_metric_names_only(tiny_llama, qa_file, make_config):
    cfg = load_config(make_config(tiny_llama, qa_file, "sft", eval={"generation_metrics": ["rouge", "chrf"]}))
    assert cfg.eval.generation_metrics == ["rouge", "chrf"] and cfg.eval.max_generate == 100
    with pytest.raises(TunesmithError, match="eval.generation_metrics"):
        load_config(make_config(tiny_llama, qa_file, "sft", eval={"generation_metrics": ["meteor"]}))


def test_sft_eval_json_carries_generation_metrics(tiny_llama, qa_file, make_config, tmp_path):
    cfg = make_config(tiny_llama, qa_file, "sft", data={"template": "Q: {question}\nA: {answer}"},
                      train={"eval_strategy": "steps", "eval_steps": 2},
                      eval={"generation_metrics": ["rouge", "exact_match"], "max_generate": 5},
                      report={"html": True, "plots": False})
    run = api.train(cfg, out=tmp_path / "run")
    ev = json.loads((run.dir / "eval.json").read_text())
    for side in ("base", "tuned"):
        for key in ("rouge1", "rouge2", "rougeL", "exact_match"):
            assert 0.0 <= ev[side][key] <= 1.0, (side, key)
        assert "bleu" not in ev[side] and ev[side]["generated_examples"] == 5
        assert len(ev[side]["samples"]) == 2  # eval.num_samples, as before
    # The Trainer's evaluation during training measures loss only: no generation there.
    logs = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in logs)
    assert not any(k.endswith(("rouge1", "exact_match")) for r in logs for k in r)
    html = (run.dir / "report.html").read_text()
    assert "<td>rougeL</td>" in html and "generated_examples" not in html


def test_causal_lm_scores_continuations(tiny_llama, text_file, make_config, tmp_path):
    cfg = make_config(tiny_llama, text_file, "causal_lm", eval={"generation_metrics": ["chrf"], "max_generate": 3, "num_samples": 0})
    run = api.train(cfg, out=tmp_path / "run")
    for side in ("base", "tuned"):
        assert 0.0 <= run.results[side]["chrf"] <= 100.0
        assert run.results[side]["generated_examples"] == 3 and "rouge1" not in run.results[side]


def test_no_generation_metrics_by_default(tiny_llama, qa_file, make_config, tmp_path):
    run = api.train(make_config(tiny_llama, qa_file, "sft"), out=tmp_path / "run")
    assert "generated_examples" not in run.results["base"] and "rouge1" not in run.results["tuned"]
