"""dpo and kto on the real StereoSet data and smollm2-135m-instruct, with small step counts: the shipped configs run
end to end, move the implicit reward the right way, and write their metrics, samples and report."""

import pytest

from tunesmith import api

pytestmark = pytest.mark.e2e
SMALL = ["data.train_size=48", "data.eval_size=32", "train.max_steps=6", "eval.num_samples=1", "eval.max_new_tokens=8",
         "eval.probes=[]"]


def test_dpo_stereoset_moves_the_reward_toward_the_anti_stereotype(tmp_path):
    run = api.train("configs/dpo-stereoset.yaml", out=tmp_path / "run", overrides=SMALL)
    base, tuned = run.results["base"], run.results["tuned"]
    assert tuned["reward_margin"] > 0 and tuned["reward_accuracy"] > 0.5
    assert tuned["logp_margin"] > base["logp_margin"]
    assert 0 <= tuned["chosen_over_unrelated"] <= 1 and (run.dir / "report.html").exists()


def test_kto_stereoset_trains_on_single_sided_labels(tmp_path):
    run = api.train("configs/kto-stereoset.yaml", out=tmp_path / "run", overrides=SMALL)
    tuned = run.results["tuned"]
    assert tuned["reward_margin"] > 0 and {"ranking_accuracy", "logp_gap", "eval_loss"} <= set(tuned)
