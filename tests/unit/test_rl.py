"""The rl objective on a tiny random Llama: grpo, rloo and ppo each train a few steps with lora, full (and ia3,
dora) against a rule-based reward and log reward and KL; the base and tuned metrics; a real reward-model run as the
reward; and every bad reward (missing, untrusted, failing, not a reward model) is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import write_jsonl
from tunesmith import api
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.objectives.feedback import rewards

BUILTIN = "tunesmith.objectives.feedback.rewards:length"


@pytest.fixture
def one_thread():
    """Matrices this small run several times faster on one thread when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rl_config(model: str, source: str, algorithm: str = "grpo", method: dict | None = None, **objective) -> dict:
    """Review openings (the first 5 words of rotten_tomatoes texts) continued for 4 tokens, 2 steps of 4 completions."""
    return {"model": {"name": model}, "data": {"source": source, "eval_size": 4, "max_length": 32, "columns": {"prompt": "text"}},
            "method": method or {"name": "lora", "r": 4, "lora_alpha": 8},
            "objective": {"name": "rl", "algorithm": algorithm, "max_new_tokens": 4, "num_generations": 2, "prompt_words": 5,
                          "reward": {"function": BUILTIN}, **objective},
            "train": {"max_steps": 2, "learning_rate": 5e-3, "per_device_train_batch_size": 4, "eval_strategy": "no",
                      "logging_steps": 1},
            "eval": {"num_samples": 2, "max_new_tokens": 4}, "report": {"html": False}}


@pytest.mark.parametrize("algorithm,method", [
    ("grpo", "lora"), ("rloo", "lora"), ("ppo", "lora"), ("grpo", "full"), ("rloo", "full"), ("ppo", "full"),
    ("grpo", "ia3"), ("ppo", "dora"),
])
def test_rl_trains_and_logs_reward_and_kl(tiny_llama, sentiment_file, tmp_path, one_thread, algorithm, method):
    options = {"lora": {"name": "lora", "r": 4, "lora_alpha": 8}, "dora": {"name": "dora", "r": 4, "lora_alpha": 8}}
    cfg = rl_config(tiny_llama, sentiment_file, algorithm, options.get(method, {"name": method}))
    if method == "full":  # chat prompts: the tokenizer's chat template with the generation prompt
        cfg["data"]["format"] = "chat"
    if method == "dora":  # tunesmith's PPO calls the trainer callbacks too (here a tracker's)
        cfg["train"]["report_to"] = ["tensorboard"]
    run = api.train(cfg, out=tmp_path / "run")
    logged = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "reward" in r]
    assert len(steps) == 2 and all("kl" in r for r in steps) and run.manifest["train_steps"] == 2
    base, tuned = run.results["base"], run.results["tuned"]
    assert base["kl"] == 0.0 and tuned["kl"] != 0.0  # the base is its own reference; training moved the policy
    assert set(tuned) == {"reward", "reward_std", "kl", "length", "samples"} and 0 < tuned["length"] <= 4
    assert run.results["directions"] == {"reward": "max", "reward_std": "neither", "kl": "min", "length": "neither"}
    assert len(tuned["samples"]) == 2 and {"prompt", "generation", "reward"} <= set(tuned["samples"][0])
    assert len(tuned["samples"][0]["prompt"].split()) == 5
    saved = run.dir / run.manifest["saved"]
    assert not (saved / "ref").exists()  # TRL's reference adapter is not saved with the trained one
    if method == "lora":
        assert api.load_run(run.dir).generate("A film about", max_new_tokens=3)
    if method == "dora":
        assert any((run.dir / "tensorboard").glob("events.out.tfevents.*"))


def test_validate_an_rl_config(tiny_llama, sentiment_file):
    info = api.validate(rl_config(tiny_llama, sentiment_file, "ppo"))
    assert info["config"].objective.algorithm == "ppo" and info["config"].objective.kl_coef == 0.05
    assert info["stats"]["train"]["max"] <= 32 and info["splits"]["eval"] == 4


def test_the_cli_validates_an_rl_config(tiny_llama, sentiment_file, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from tunesmith.cli import app

    path = tmp_path / "rl.yaml"
    path.write_text(yaml.safe_dump(rl_config(tiny_llama, sentiment_file)))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok ") and "rl on" in " ".join(result.output.split())


def test_defaults_keep_a_kl_penalty():
    cfg = load_config({"model": {"name": "smollm2-135m-instruct"}, "data": {"source": "rotten_tomatoes"},
                       "method": {"name": "lora"}, "objective": {"name": "rl", "reward": {"function": BUILTIN}}})
    assert cfg.objective.algorithm == "grpo" and cfg.objective.kl_coef > 0  # TRL's GRPO alone has beta=0


@pytest.mark.parametrize("change,message", [
    ({"objective.reward.function": None}, "objective.reward: name a reward"),
    ({"objective.reward.function": "no_colon"}, "is not 'module:function'"),
    ({"objective.reward.function": "tunesmith.objectives.feedback.rewards:lenght"}, "its rewards are"),
    ({"objective.num_generations": 1}, "needs at least 2"),
    ({"objective.num_generations": 3}, "must be a multiple of objective.num_generations"),
    ({"objective.ppo.epochs": 2}, "objective.ppo: options of algorithm ppo"),
    ({"method": {"name": "prompt"}}, "method.name: rl needs a reference model"),
    ({"objective.algorithm": "ppo", "train.extra": {"beta": 0.1}}, "algorithm ppo is tunesmith's own loop"),
    ({"objective.algorithm": "ppo", "train.save_steps": 10}, "writes no checkpoints to resume from"),
    ({"objective.algorithm": "rloo", "train.extra": {"use_vllm": True, "epsilon_high": 0.3, "top_entropy_quantile": 0.5}},
     "train.extra.top_entropy_quantile: not a trl.RLOOConfig field"),
])
def test_config_mistakes_are_named(change, message):
    raw = rl_config("smollm2-135m-instruct", "rotten_tomatoes")
    with pytest.raises(TunesmithError, match=message):
        load_config(raw, change)


# ---------------------------------------------------------------------------------------------
# Reward functions: trust, import problems, bad return values


@pytest.fixture
def reward_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(
        "def short(prompts, completions):\n    return [-len(c) / 10 for c in completions]\n\n"
        "def broken(prompts, completions):\n    return [1 / 0 for c in completions]\n\n"
        "def too_few(prompts, completions):\n    return [1.0]\n\n"
        "def words(prompts, completions):\n    return ['high' for c in completions]\n")
    (tmp_path / "needs_numpyy.py").write_text("import numpyy\n\ndef score(prompts, completions):\n    return []\n")
    return tmp_path / "my_rewards.py"


def test_a_function_of_ones_own_needs_trust_and_then_trains(tiny_llama, sentiment_file, reward_file, tmp_path, one_thread):
    cfg = rl_config(tiny_llama, sentiment_file, "ppo", reward={"function": "my_rewards:short"})
    assert api.validate(cfg)["config"]  # validate finds it without running it
    with pytest.raises(TunesmithError, match="pass --trust-remote-code") as err:
        api.train(cfg, out=tmp_path / "untrusted")
    assert "tunesmith.objectives.feedback.rewards:length" in str(err.value)
    assert not (tmp_path / "untrusted").exists()  # refused before the run folder is written
    run = api.train({**cfg, "train": {**cfg["train"], "max_steps": 1}}, out=tmp_path / "trusted", trust_remote_code=True)
    assert run.results["base"]["reward"] < 0
    with pytest.raises(TunesmithError, match="pass --trust-remote-code"):  # `tunesmith eval` asks for the flag too
        api.load_run(run.dir).evaluate()
    again = api.load_run(run.dir, trust_remote_code=True).evaluate()
    assert again["base"]["reward"] == run.results["base"]["reward"] and again["tuned"]["kl"] != 0
    file_cfg = rl_config(tiny_llama, sentiment_file, reward={"function": f"{reward_file}:short"})
    assert api.validate(file_cfg)["config"]  # a .py path works too


@pytest.mark.parametrize("function,message", [
    ("missing_module:score", "cannot find module 'missing_module'"),
    ("my_rewards:absent", "defines no 'absent' at its top level"),
])
def test_a_function_that_cannot_be_found_fails_validate(tiny_llama, sentiment_file, reward_file, function, message):
    with pytest.raises(TunesmithError, match=message):
        api.validate(rl_config(tiny_llama, sentiment_file, reward={"function": function}))


def test_a_module_that_fails_to_import_fails_before_training(tiny_llama, sentiment_file, reward_file, tmp_path):
    with pytest.raises(TunesmithError, match=r"importing 'needs_numpyy' failed: ModuleNotFoundError.*needs_numpyy.py:1"):
        api.train(rl_config(tiny_llama, sentiment_file, reward={"function": "needs_numpyy:score"}),
                  out=tmp_path / "run", trust_remote_code=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name,message", [
    ("broken", r"my_rewards:broken\): broken raised ZeroDivisionError: division by zero \(my_rewards.py:5\)"),
    ("too_few", "too_few returned 1 values for 3 completions"),
    ("words", "not a list of numbers"),
])
def test_a_function_that_misbehaves_is_named(reward_file, name, message):
    reward = rewards.build_reward(load_config(rl_config("m", "d.jsonl", reward={"function": f"my_rewards:{name}"})).objective.reward,
                                  trusted_code=True)
    with pytest.raises(TunesmithError, match=message) as err:
        reward(["p"] * 3, ["a", "b", "c"])
    assert "objective.reward.function" in str(err.value)


def test_builtin_rewards():
    completions = ["a great and charming film.", "dull dull dull", ""]
    assert rewards.positive([], completions) == [1.0, -1.0, 0.0]
    assert rewards.distinct([], completions) == [1.0, 1 / 3, 0.0]
    assert rewards.sentence_end([], completions) == [1.0, 0.0, 0.0]
    assert rewards.length([], completions) == [5 / 32, 3 / 32, 0.0]


# ---------------------------------------------------------------------------------------------
# A reward-model run as the reward


@pytest.fixture(scope="module")
def reward_run(tiny_bert, tmp_path_factory) -> Path:
    """A tiny reward model trained 2 steps on pairs (chosen: 'good', rejected: 'bad')."""
    folder = tmp_path_factory.mktemp("reward")
    data = write_jsonl(folder / "pairs.jsonl", [{"chosen": f"a good film {i}", "rejected": f"a bad film {i}"} for i in range(40)])
    run = api.train({"model": {"name": tiny_bert}, "data": {"source": str(data), "eval_size": 8, "max_length": 16},
                     "method": {"name": "full"}, "objective": {"name": "reward"},
                     "train": {"max_steps": 2, "per_device_train_batch_size": 8, "eval_strategy": "no"},
                     "report": {"html": False}}, out=folder / "run")
    return run.dir


def test_a_reward_run_and_a_function_summed(tiny_llama, sentiment_file, reward_run, tmp_path, one_thread):
    cfg = rl_config(tiny_llama, sentiment_file, "rloo", reward={"run": str(reward_run), "function": BUILTIN,
                                                                "weights": {"run": 1.0, "function": 0.5}})
    run = api.train({**cfg, "train": {**cfg["train"], "max_steps": 1}}, out=tmp_path / "run")
    logged = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert "rewards/reward_run/mean" in logged[0] and "rewards/length/mean" in logged[0]
    reward = rewards.build_reward(run.config.objective.reward, trusted_code=False)
    direct = api.load_run(reward_run).score([{"prompt": "p", "response": "a good film"}])[0]
    assert reward(["p", "p"], ["a good film", ""]) == pytest.approx([direct + 0.5 * 3 / 32, min([direct])])


def test_a_run_that_is_not_a_reward_model_is_refused(tiny_llama, sentiment_file, qa_file, make_config, tmp_path):
    import yaml

    sft = tmp_path / "sft"  # what validate reads of a run: its config.yaml names the objective
    sft.mkdir()
    (sft / "config.yaml").write_text(yaml.safe_dump(make_config(tiny_llama, qa_file, "sft")))
    with pytest.raises(TunesmithError, match="is a 'sft' run, not a reward model"):
        api.validate(rl_config(tiny_llama, sentiment_file, reward={"run": str(sft)}))
    with pytest.raises(TunesmithError, match="is not a run folder; train the reward model first"):
        api.validate(rl_config(tiny_llama, sentiment_file, reward={"run": str(tmp_path / "nothing")}))
