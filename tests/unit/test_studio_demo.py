"""examples/studio_demo.py's closed loop on tiny random models: two rounds of a study answered by the simulated raters
through the HTTP API, the pairs export, a reward run and a DPO run trained on it, the reward model checked on round 2,
and a second call that reuses everything. Marked e2e: it trains three tiny runs (about a minute on two free cores)."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
ROOT = Path(__file__).resolve().parents[2]


def load_demo():
    spec = importlib.util.spec_from_file_location("studio_demo", ROOT / "examples" / "studio_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simulated_rater_rule():
    demo = load_demo()
    # against "Paris": precision 1/4, recall 1 -> 0.4; against "It is Paris, of course": 2/4 and 2/5 -> 0.444 (the best)
    assert demo.f1("The capital is Paris.", ["Paris", "It is Paris, of course"]) == pytest.approx(2 * 0.5 * 0.4 / 0.9)
    assert demo.f1("", ["Paris"]) == 0
    rater = demo.SimulatedRater("x", 0, {"Q?": ["the answer is paris"]})
    rater.rng.random = lambda: 0.5  # no lapse
    rater.rng.gauss = lambda mu, sd: 0.0  # no noise
    pair = {"id": 1, "kind": "pair", "prompt": "Q?", "left": {"id": 7, "text": "no idea"}, "right": {"id": 8, "text": "paris"}}
    assert rater.judge(pair) == {"task_id": 1, "verdict": "right", "left_response": 7}
    assert rater.judge({**pair, "right": {"id": 8, "text": "nope"}})["verdict"] == "both_bad"
    assert rater.judge({"id": 2, "kind": "single", "prompt": "Q?", "response": {"id": 8, "text": "paris"}})["rating"] == 1


def test_the_concise_rule_prefers_the_shorter_answer():
    demo = load_demo()
    assert demo.concise("one two three four five", []) == pytest.approx(1 / 1.5) and demo.concise("...", []) == 0
    rater = demo.SimulatedRater("x", 0, {"Q?": ["unused"]}, rule="concise")
    rater.rng.random = lambda: 0.5
    rater.rng.gauss = lambda mu, sd: 0.0
    long, short = " ".join(["word"] * 45), "Paris, I think."  # 1/5.5 = 0.18 (under the 0.2 floor) and 1/1.3 = 0.77
    pair = {"id": 1, "kind": "pair", "prompt": "Q?", "left": {"id": 7, "text": short}, "right": {"id": 8, "text": long}}
    assert rater.judge(pair)["verdict"] == "left"
    assert rater.judge({**pair, "left": {"id": 7, "text": long}})["verdict"] == "both_bad"
    single = {"id": 2, "kind": "single", "prompt": "Q?", "response": {"id": 8, "text": " ".join(["w"] * 16)}}
    assert rater.judge(single)["rating"] == 0 and rater.judge({**single, "response": {"id": 8, "text": short}})["rating"] == 1


def test_a_folder_rated_by_one_rule_refuses_another(tmp_path):
    demo = load_demo()
    demo.check_rule(tmp_path / "demo", "concise")
    demo.check_rule(tmp_path / "demo", "concise")  # the same rule carries on
    with pytest.raises(SystemExit, match="--rule concise; give another --out"):
        demo.check_rule(tmp_path / "demo", "f1")
    (tmp_path / "old" / "round1").mkdir(parents=True)  # rated before --rule existed: by f1
    with pytest.raises(SystemExit, match="--rule f1"):
        demo.check_rule(tmp_path / "old", "concise")


@pytest.mark.e2e
def test_the_closed_loop_runs_on_tiny_models(tiny_llama, tiny_bert, qa_file, tmp_path):
    from conftest import tiny_config
    from tunesmith import api

    demo = load_demo()
    sft = api.train(tiny_config(tiny_llama, qa_file, "sft", data={"format": "chat"},
                                eval={"num_samples": 1, "max_new_tokens": 2, "max_examples": 4}), out=tmp_path / "sft")
    small = ["train.max_steps=2", "data.eval_size=2", "report.html=false"]
    options = dict(base=tiny_llama, prompts=4, round2_prompts=3, samples=2, max_new_tokens=6, dpo_epochs=1,
                   reward_overrides=[f"model.name={tiny_bert}", "method.name=full", *small],
                   dpo_overrides=[*small, "method.r=4", "method.lora_alpha=8", "eval.max_examples=2",
                                  "eval.num_samples=1", "eval.max_new_tokens=2"])
    summary = demo.run_demo(tmp_path / "demo", sft.dir, **options)
    assert summary["round1"]["answers"] == {"ann": 24, "bob": 24, "cy": 24}  # 16 single + 8 side-by-side tasks each
    assert summary["round1"]["generated"] == 16 and summary["round2"]["generated"] == 12
    assert set(summary["round2"]["win_rates"]) == {"base", "dpo"} and summary["pairs"]["rows"] > 0
    assert set(summary["round2"]["mean_f1_with_reference"]) == {"base", "dpo"}
    assert 0 <= summary["reward_on_round2"]["prefers_dpo"] <= 1 and summary["reward_on_round2"]["pairs"] == 6
    assert json.loads((tmp_path / "demo" / "summary.json").read_text())["raters"].startswith("SIMULATED")
    again = demo.run_demo(tmp_path / "demo", sft.dir, **options)  # cached: nothing generated, nothing answered anew
    assert again["round1"]["generated"] == 0 and again["round1"]["answers"] == {"ann": 0, "bob": 0, "cy": 0}
