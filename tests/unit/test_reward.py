"""The reward objective on tiny random models: pairs (TRL's RewardTrainer, Bradley-Terry) and ratings (regression,
thumbs), with lora and full; the score hook and `tunesmith score`; a saved reward model loads with plain
transformers + peft and gives the same scores; every bad input is a clear error before training."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from tunesmith import api
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
WORDS = "the a film plot cast ending score script story acting scene music was felt quite rather very".split()


def _filler(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> str:
    """Trivially separable pairs: chosen says 'good', rejected 'bad', amid random filler words."""
    rng = random.Random(0)
    rows = [{"prompt": f"What about the {rng.choice(WORDS)}?", "chosen": f"{_filler(rng, 3)} good {_filler(rng, 3)}",
             "rejected": f"{_filler(rng, 3)} bad {_filler(rng, 3)}"} for _ in range(96)]
    return str(write_jsonl(tmp_path_factory.mktemp("reward") / "pairs.jsonl", rows))


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory) -> str:
    """1-5 stars given by one word of the response (awful ... great) amid random filler words."""
    rng = random.Random(1)
    scale = ["awful", "bad", "okay", "good", "great"]
    rows = []
    for _ in range(112):
        stars = rng.randint(1, 5)
        rows.append({"response": f"{_filler(rng, 1)} {scale[stars - 1]} {_filler(rng, 1)}", "stars": stars})
    return str(write_jsonl(tmp_path_factory.mktemp("reward") / "ratings.jsonl", rows))


@pytest.fixture(scope="module")
def thumbs_file(tmp_path_factory) -> str:
    rng = random.Random(2)
    rows = [{"text": f"{_filler(rng, 3)} {word} {_filler(rng, 3)}", "label": "fresh" if word == "good" else "rotten"}
            for word in (rng.choice(["good", "bad"]) for _ in range(96))]
    return str(write_jsonl(tmp_path_factory.mktemp("reward") / "thumbs.jsonl", rows))


def reward_config(model: str, source: str, method: dict | None = None, train: dict | None = None, **objective) -> dict:
    return {"model": {"name": model}, "data": {"source": source, "eval_size": 16, "max_length": 32},
            "method": method or {"name": "lora", "r": 4, "lora_alpha": 8}, "objective": {"name": "reward", **objective},
            "train": {"max_steps": 4, "learning_rate": 5e-3, "per_device_train_batch_size": 8, "eval_strategy": "no",
                      "logging_steps": 1, **(train or {})},
            "report": {"html": False}}


FULL = {"name": "full"}


def test_pairs_reach_accuracy_one_on_a_separable_set(tiny_bert, pairs_file, tmp_path):
    run = api.train(reward_config(tiny_bert, pairs_file, FULL, {"max_steps": 24, "learning_rate": 2e-3}), out=tmp_path / "run")
    base, tuned = run.results["base"], run.results["tuned"]
    assert run.manifest["task"] == {"shape": "pairs", "prompt": True, "margin": False}
    assert base["reward_accuracy"] < 1.0 and tuned["reward_accuracy"] == 1.0
    assert tuned["reward_margin"] > base["reward_margin"] and tuned["eval_loss"] < base["eval_loss"]
    assert run.results["directions"] == {"reward_accuracy": "max", "reward_margin": "max", "eval_loss": "min"}
    good, bad = api.load_run(run.dir).score([{"prompt": "What about the plot?", "response": "the plot was good"},
                                             {"prompt": "What about the plot?", "response": "the plot was bad"}])
    assert good > bad
    preview = json.loads((run.dir / "data_preview.json").read_text())  # what the board shows: the pair's two sides
    assert len(preview["examples"]) == 3 and all(ex["label"].startswith("chosen over: ") for ex in preview["examples"])


def test_pairs_with_lora_train_the_head_and_reload_with_plain_transformers_and_peft(tiny_bert, pairs_file, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = api.train(reward_config(tiny_bert, pairs_file), out=tmp_path / "run")
    assert run.manifest["train_steps"] == 4 and run.results["tuned"]["reward_margin"] != run.results["base"]["reward_margin"]
    rows = [{"prompt": "What about the cast?", "response": "the cast was good"}, {"prompt": None, "response": "bad"}]
    ours = api.load_run(run.dir).score(rows)

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=1)
    model = PeftModel.from_pretrained(base, str(run.dir / "adapter")).eval()
    tok = AutoTokenizer.from_pretrained(str(run.dir / "adapter"))
    with torch.no_grad():
        plain = [model(**tok("What about the cast?", "the cast was good", return_tensors="pt")).logits[0, 0].item(),
                 model(**tok("bad", return_tensors="pt")).logits[0, 0].item()]
    assert plain == pytest.approx(ours, abs=1e-5)


def test_pairs_read_a_margin_column_and_mapped_columns(tiny_bert, pairs_file, tmp_path):
    rows = [json.loads(line) for line in Path(pairs_file).read_text().splitlines()]
    path = write_jsonl(tmp_path / "m.jsonl", [{"q": r["prompt"], "good": r["chosen"], "bad": r["rejected"], "margin": 0.5} for r in rows])
    cfg = reward_config(tiny_bert, str(path), FULL, {"max_steps": 2})
    cfg["data"]["columns"] = {"prompt": "q", "chosen": "good", "rejected": "bad"}
    run = api.train(cfg, out=tmp_path / "run")
    assert run.manifest["task"] == {"shape": "pairs", "prompt": True, "margin": True}


def test_ratings_regression_correlates_with_the_rating(tiny_bert, ratings_file, tmp_path):
    cfg = reward_config(tiny_bert, ratings_file, FULL, {"max_steps": 40, "learning_rate": 2e-3})
    cfg["data"]["columns"] = {"rating": "stars"}
    run = api.train(cfg, out=tmp_path / "run")
    task, base, tuned = run.manifest["task"], run.results["base"], run.results["tuned"]
    assert task["shape"] == "ratings" and task["rating"] == "numeric" and 2.5 < task["mean"] < 3.5 and task["std"] > 1
    assert tuned["pearson"] > 0.8 and tuned["spearman"] > 0.8 and tuned["pearson"] > base["pearson"]
    assert "accuracy" not in tuned and set(run.results["directions"]) == {"pearson", "spearman", "eval_loss"}
    great, awful = api.load_run(run.dir).score([{"response": "the film was great"}, {"response": "the film was awful"}])
    assert great > awful


def test_thumbs_with_a_named_positive_value_train_with_lora(tiny_bert, thumbs_file, tmp_path):
    cfg = reward_config(tiny_bert, thumbs_file, train={"max_steps": 3}, positive="fresh")
    cfg["data"]["columns"] = {"response": "text", "rating": "label"}
    run = api.train(cfg, out=tmp_path / "run")
    assert run.manifest["task"]["rating"] == "thumbs" and run.manifest["task"]["positive"] == "fresh"
    assert {"pearson", "spearman", "accuracy", "eval_loss"} <= set(run.results["tuned"])
    again = api.load_run(run.dir).evaluate()  # `tunesmith eval`: the base (same seed, same head) and the tuned model
    for side in ("base", "tuned"):
        assert again[side] == pytest.approx(run.results[side], abs=1e-4)


def test_a_decoder_reward_model_scores_its_last_token(tiny_llama, pairs_file, tmp_path):
    run = api.train(reward_config(tiny_llama, pairs_file, {"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
                                  {"max_steps": 2}), out=tmp_path / "run")
    assert "score" in json.loads((run.dir / "adapter" / "adapter_config.json").read_text())["modules_to_save"]
    again = api.load_run(run.dir)
    rows = [{"prompt": "What about the film?", "response": "good"}, {"prompt": "What about the film?", "response": "it was bad, really"}]
    assert again.score(rows) == pytest.approx(run.score(rows), abs=1e-5)


def test_chat_format_ratings_train_through_the_chat_template(tiny_llama, ratings_file, tmp_path):
    cfg = reward_config(tiny_llama, ratings_file, FULL, {"max_steps": 2})
    cfg["data"].update(columns={"rating": "stars"}, format="chat")
    run = api.train(cfg, out=tmp_path / "run")
    assert run.manifest["task"]["rating"] == "numeric" and len(run.score([{"prompt": "Review?", "response": "good"}])) == 1


# ---------------------------------------------------------------------------------------------
# The score command and hook


def test_score_command_prints_a_reward_per_text_and_refuses_other_runs(tiny_bert, pairs_file, sentiment_file, tmp_path):
    run = api.train(reward_config(tiny_bert, pairs_file, train={"max_steps": 1}), out=tmp_path / "run")
    out = _cli("score", str(run.dir), "--prompt", "What about the plot?", "it was good", "it was bad")
    assert out.exit_code == 0, out.output
    assert "it was good" in out.output and "it was bad" in out.output and "reward" in out.output
    expected = run.score([{"prompt": "What about the plot?", "response": t} for t in ("it was good", "it was bad")])
    assert f"{expected[0]:+.4f}" in out.output
    as_json = json.loads(_cli("score", str(run.dir), "--json", "it was good").stdout)
    assert as_json == [{"prompt": None, "response": "it was good", "reward": pytest.approx(run.score([{"response": "it was good"}])[0], abs=1e-6)}]
    with pytest.raises(TunesmithError, match="row 1 has no response"):
        run.score([{"prompt": "hi"}])

    other = api.train({**reward_config(tiny_bert, sentiment_file, train={"max_steps": 1}), "objective": {"name": "classify"}},
                      out=tmp_path / "classify")
    out = _cli("score", str(other.dir), "some text")
    assert out.exit_code == 2 and "scores nothing" in out.output and "Traceback" not in out.output


def _cli(*args: str):
    """The command in this process; exit code 2 with a SystemExit (not another exception) means no traceback."""
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


# ---------------------------------------------------------------------------------------------
# Bad inputs: `tunesmith validate` names each, exit 2, no traceback


BAD = [
    ([{"prompt": "q", "chosen": "a", "wrong": "b"}] * 20, {"data_shape": "pairs"}, "data.columns.rejected: column 'rejected' is not in"),
    ([{"prompt": "q", "response": "a", "score": 1}] * 20, {}, "reads pairs (columns chosen, rejected"),
    ([{"chosen": "same", "rejected": "same"}] + [{"chosen": "a", "rejected": "b"}] * 30, {}, "are the same text on 1 row"),
    ([{"chosen": "  ", "rejected": "b"}] + [{"chosen": "a", "rejected": "b"}] * 30, {}, "column 'chosen' (chosen) is empty on 1 row"),
    ([{"response": "x", "rating": r} for r in ["1", "2", "three", "4"] * 8], {}, "must hold numbers, and 8 rows, the first \"three\""),
    ([{"response": "x", "rating": 3}] * 30, {}, "has one value, '3', on every row"),
    ([{"response": "", "rating": r} for r in [1, 2] * 15], {}, "column 'response' (response) is empty on"),
    ([{"response": "x", "rating": r} for r in ["fresh", "rotten"] * 15], {}, "say which one is thumbs up"),
    ([{"chosen": "a", "rejected": "b", "margin": m} for m in ["1", "big"] * 15], {}, "column 'margin' (margin) must hold numbers"),
]


@pytest.mark.parametrize("rows,objective,message", BAD)
def test_bad_data_is_reported_by_validate(tiny_bert, tmp_path, rows, objective, message):
    cfg = reward_config(tiny_bert, str(write_jsonl(tmp_path / "data.jsonl", rows)), **objective)
    # The whole data goes to train so that every row is checked in the same split.
    cfg["data"]["eval_size"] = 1
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    out = _cli("validate", str(tmp_path / "c.yaml"))
    assert out.exit_code == 2 and message in out.output, out.output
    assert "Traceback" not in out.output


def test_config_mistakes_are_reported_before_the_data_is_read(tiny_bert):
    cfg = reward_config(tiny_bert, "nowhere.jsonl", positive="up", data_shape="pairs")
    with pytest.raises(TunesmithError, match="objective.positive"):
        load_config(cfg)
    with pytest.raises(TunesmithError, match="'features' fits a scikit-learn classifier"):
        load_config(reward_config(tiny_bert, "nowhere.jsonl", {"name": "features"}))
    with pytest.raises(TunesmithError, match="data.columns.chosn"):
        load_config({**reward_config(tiny_bert, "x.jsonl"), "data": {"source": "x.jsonl", "columns": {"chosn": "a"}}})


def test_a_metric_of_the_other_shape_is_refused(tiny_bert, pairs_file):
    cfg = reward_config(tiny_bert, pairs_file, train={"eval_strategy": "epoch", "load_best_model_at_end": True,
                                                      "metric_for_best_model": "pearson"})
    with pytest.raises(TunesmithError, match="'pearson' is measured on ratings"):
        api.validate(cfg)


@pytest.mark.parametrize("name", ["reward-pairs", "reward-ratings"])
def test_shipped_configs_validate(name):
    out = _cli("validate", str(ROOT / "configs" / f"{name}.yaml"))
    assert out.exit_code == 0, out.output
    assert "reward" in out.output


@pytest.mark.parametrize("method", [{"name": "dora", "r": 4}, {"name": "ia3"}, {"name": "prompt", "num_virtual_tokens": 4},
                                    {"name": "prefix", "num_virtual_tokens": 4}, {"name": "head"}, {"name": "adapter"}])
def test_other_methods_train_a_pairs_reward_model(tiny_bert, pairs_file, tmp_path, method):
    run = api.train(reward_config(tiny_bert, pairs_file, method, {"max_steps": 1}), out=tmp_path / "run")
    rows = [{"prompt": "What about the plot?", "response": "good"}]
    assert api.load_run(run.dir).score(rows) == pytest.approx(run.score(rows), abs=1e-5)


def test_compare_reads_a_reward_run(tiny_bert, pairs_file, tmp_path):
    """compare trains each variant with `tunesmith train` (tested in test_compare.py); its table reads eval.json."""
    from tunesmith.experiments.compare import primary_metric, row

    run = api.train(reward_config(tiny_bert, pairs_file, train={"max_steps": 1}), out=tmp_path / "run")
    rows = [row("lora", run.dir, None)]
    assert rows[0]["status"] == "ok" and primary_metric(rows) == "reward_accuracy"
    assert rows[0]["directions"]["reward_accuracy"] == "max" and rows[0]["directions"]["eval_loss"] == "min"


@pytest.mark.parametrize("values,options,expected", [
    ([True, False, True], {}, {"rating": "thumbs", "positive": "true", "negative": "false"}),
    ([0, 1, 1.0], {}, {"rating": "thumbs", "positive": "1", "negative": "0"}),
    (["Up", "down", "up"], {}, {"rating": "thumbs", "positive": "up", "negative": "down"}),
    (["fresh", "rotten"], {"positive": "fresh"}, {"rating": "thumbs", "positive": "fresh", "negative": "rotten"}),
    ([1, 5, 5, 1], {"rating_kind": "numeric"}, {"rating": "numeric", "mean": 3.0, "std": 2.0}),
    (["1", "2", "3"], {}, {"rating": "numeric", "mean": 2.0, "std": pytest.approx(0.8165, abs=1e-4)}),
])
def test_the_rating_scale_is_read_from_the_values(values, options, expected):
    from tunesmith.objectives.feedback.reward_data import rating_scale

    cfg = load_config(reward_config("minilm-l6", "x.jsonl", **options))
    assert rating_scale(cfg, values, "x.jsonl") == (expected, [])


# ---------------------------------------------------------------------------------------------
# Ratings that cannot train, a declared scale, and what validate shows of the ratings


def _ratings(n: int = 40, **bad) -> list[dict]:
    """n rows rated 1-5; bad: {row number (from 1): rating} replaces those rows' ratings."""
    rows = [{"response": f"answer {i}", "rating": 1 + i % 5} for i in range(n)]
    for row, rating in bad.items():
        rows[int(row.removeprefix("row")) - 1]["rating"] = rating
    return rows


def _validate_cli(tiny_bert, tmp_path, rows: list[dict], **objective):
    cfg = reward_config(tiny_bert, str(write_jsonl(tmp_path / "data.jsonl", rows)), **objective)
    cfg["data"]["eval_size"] = 4
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    return _cli("validate", str(tmp_path / "c.yaml"))


def test_ratings_that_cannot_train_are_named_with_their_rows(tiny_bert, tmp_path):
    """1e308 (its square overflows), JSON NaN and Infinity, and null: one error naming each kind and the source rows
    (the issue: an OverflowError traceback, and 'rating is empty on 2 rows' without the rows or the NaN)."""
    out = _validate_cli(tiny_bert, tmp_path, _ratings(row7=1e308, row12=float("nan"), row30=float("nan"),
                                                      row21=float("inf"), row25=None))
    assert out.exit_code == 2 and "Traceback" not in out.output and "OverflowError" not in out.output, out.output
    text = " ".join(out.output.split())
    assert "too large (beyond +-3.4e+38, the largest 32-bit float" in text and "source row 7 (1e+308)" in text
    assert "NaN (not a number: no rating) on source rows 12, 30" in text or (
        "NaN (not a number: no rating) on source row 12" in text and "NaN (not a number: no rating) on source row 30" in text)
    assert "infinite on source row 21" in text and "empty (null or missing) on source row 25" in text
    assert "give those rows a rating, or remove them" in text


def test_a_declared_rating_range_refuses_the_rows_outside_it(tiny_bert, tmp_path):
    out = _validate_cli(tiny_bert, tmp_path, _ratings(row21=99, row33=-5), rating_range=[1, 5])
    text = " ".join(out.output.split())
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert "outside objective.rating_range [1, 5]" in text and "99 on source row 21" in text and "-5 on source row 33" in text
    assert "fix or remove those rows, or widen objective.rating_range" in text
    with pytest.raises(TunesmithError, match="objective.rating_range: .*no range"):
        load_config(reward_config(tiny_bert, "x.jsonl", rating_range=[5, 1]))
    with pytest.raises(TunesmithError, match="objective.rating_range: the scale of numeric ratings; remove it for pairs"):
        load_config(reward_config(tiny_bert, "x.jsonl", rating_range=[1, 5], data_shape="pairs"))


def test_validate_reports_the_rating_distribution_and_flags_outliers(tiny_bert, tmp_path, caplog):
    import logging

    source = str(write_jsonl(tmp_path / "data.jsonl", _ratings(row21=99, row33=-5)))
    cfg = reward_config(tiny_bert, source)
    cfg["data"]["eval_size"] = 4
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        info = api.validate(cfg)  # outliers are flagged, not refused
    assert info["task"]["rating"] == "numeric"
    text = " ".join(caplog.text.split())
    assert "ratings in column 'rating' (train split, 36 rows): min " in text and "(eval split, 4 rows)" in text
    assert "max 99, mean " in text and "rows per value: " in text and ", 99: 1" in text
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "far outside the other ratings [1, 5]" in warning and "99 on source row 21" in warning
    assert "-5 on source row 33" in warning and "set objective.rating_range: [1, 5]" in warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        api.validate(cfg | {"data": {**cfg["data"], "source": str(write_jsonl(tmp_path / "ok.jsonl", _ratings()))}})
    assert "ratings in column 'rating'" in caplog.text and not [r for r in caplog.records if r.levelname == "WARNING"]


def test_one_far_value_does_not_hide_another_and_a_scales_end_is_not_flagged():
    from tunesmith.objectives.feedback.ratings import fences

    low, high = fences([1, 2, 3, 4, 5, 3, 4, 2, 5, 1, 3, 4, 2, 3, 99, -5])  # 16 ratings: both far values outside
    assert high < 99 and low > -5 and low < 1 and high > 5
    low, high = fences([5] * 30 + [4] * 3 + [1] * 3 + [99])  # many rows at the top, three at the bottom: only 99
    assert low < 1 and 5 < high < 99
    assert fences([3] * 20) is None


def test_a_declared_range_reads_two_distinct_values_as_numbers():
    from tunesmith.objectives.feedback.ratings import rating_scale

    cfg = load_config(reward_config("minilm-l6", "x.jsonl", rating_range=[1, 5]))
    assert rating_scale(cfg, [1, 5, 5, 1], "x.jsonl") == ({"rating": "numeric", "mean": 3.0, "std": 2.0}, [])
