"""Progress where a user waits: the rules for showing a bar, the hub's download bars under the CLI's logging, and
the bars of benchmarks, generation metrics and constitution generation (what they count, never how fast)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tunesmith import progress


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv(progress.ENV, "1")


def drawn(capsys) -> str:
    return capsys.readouterr().err


def test_a_bar_shows_on_a_terminal_for_long_work_or_when_forced(monkeypatch, capsys):
    monkeypatch.delenv(progress.ENV, raising=False)
    with progress.bar(total=3, desc="quiet") as b:  # pytest's stderr is no terminal
        b.update(3)
    assert "quiet" not in drawn(capsys)
    with progress.bar(total=3, desc="long job", long=True) as b:
        b.update(3)
    assert "long job" in drawn(capsys) and progress.shown(long=True) and not progress.shown()
    monkeypatch.setenv(progress.ENV, "0")
    with progress.bar(total=3, desc="silenced", long=True) as b:
        b.update(3)
    assert "silenced" not in drawn(capsys)
    monkeypatch.setenv(progress.ENV, "1")
    list(progress.bar(range(4), desc="forced"))
    assert "forced" in (err := drawn(capsys)) and "4/4" in err


def test_a_terminal_shows_bars(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(progress.sys, "stderr", SimpleNamespace(isatty=lambda: True, write=lambda s: None,
                                                                flush=lambda: None))
    assert progress.shown()


@pytest.fixture
def restore_bars():
    import huggingface_hub.utils as hub
    import transformers

    hub_off, tf_on = hub.are_progress_bars_disabled(), transformers.utils.logging.is_progress_bar_enabled()
    yield
    (hub.disable_progress_bars if hub_off else hub.enable_progress_bars)()
    (transformers.utils.logging.enable_progress_bar if tf_on else transformers.utils.logging.disable_progress_bar)()
    if not hub_off:
        hub.enable_progress_bars()


def test_cli_logging_keeps_weight_loading_bars_off_but_hub_downloads_on(monkeypatch, restore_bars, forced):
    import huggingface_hub.utils as hub
    import transformers

    from tunesmith.cli.common import setup_logging

    setup_logging()
    assert not transformers.utils.logging.is_progress_bar_enabled()  # "Loading weights" stays quiet
    assert not hub.are_progress_bars_disabled()  # model and dataset downloads draw the hub's bars
    monkeypatch.setenv(progress.ENV, "0")
    setup_logging()
    assert hub.are_progress_bars_disabled()


@pytest.fixture(scope="module")
def llama(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


def test_benchmarks_count_the_scored_choices_per_task(llama, forced, capsys):
    from tunesmith.eval import benchmarks as bm

    model, tok = llama
    task = bm.Task("mini", [{"context": f"Question {i}?", "choices": ["yes", "no", "maybe"], "gold": 0} for i in range(4)])
    result = bm.run_benchmarks(model, tok, [task], batch_size=5, what="tuned model")
    assert result["mini"]["n"] == 4
    err = drawn(capsys)
    assert "tuned model: mini (1/1)" in err and "12/12" in err and "choice" in err


def test_generation_metrics_bar_keeps_the_outputs(llama, forced, capsys):
    from tunesmith.generation import generate
    from tunesmith.objectives.lm import generation_scores

    model, tok = llama
    prompts = [tok(f"Say {w}:").input_ids for w in ("one", "two", "three", "four", "five")]
    cfg = SimpleNamespace(eval=SimpleNamespace(generation_metrics=["exact_match"], max_new_tokens=4),
                          train=SimpleNamespace(per_device_eval_batch_size=2))
    whole = generate(model, tok, prompts, 4, 2)
    scores = generation_scores(model, tok, prompts, whole, cfg)  # the references are the unbatched outputs
    assert scores == {"exact_match": 1.0, "generated_examples": 5}
    err = drawn(capsys)
    assert "generation metrics" in err and "5/5" in err


def test_constitution_replies_count_and_sample_as_before(llama, forced, capsys):
    from tunesmith.experiments.constitution.data import _reply, whole_sentences
    from tunesmith.generation import chat_prompt, generate

    model, tok = llama
    talks = [[{"role": "user", "content": f"Question {i}"}] for i in range(5)]
    g = SimpleNamespace(max_new_tokens=4, batch_size=2, temperature=1.0, top_p=1.0, seed=3)
    replies = _reply(model, tok, talks, SimpleNamespace(generation=g), salt=1, what="answers")
    err = drawn(capsys)
    assert "constitution: answers" in err and "5/5" in err
    plain = generate(model, tok, [chat_prompt(tok, t) for t in talks], 4, batch_size=2, temperature=1.0, top_p=1.0,
                     seed=3001)
    assert replies == [whole_sentences(t) for t in plain]  # streaming for the bar leaves the samples unchanged


def test_ppo_counts_its_rollout_steps(forced, capsys):
    import torch
    from transformers import TrainerControl, TrainerState

    from tunesmith.objectives.feedback.ppo import PPOTrainer

    trainer = object.__new__(PPOTrainer)  # the loop alone: each step is a stand-in rollout + update
    trainer.max_steps, trainer.callbacks, trainer.state, trainer.control, trainer.args = 3, [], TrainerState(), TrainerControl(), None
    trainer.model, trainer.t, trainer.per_batch, trainer.prompts = torch.nn.Linear(1, 1), SimpleNamespace(logging_steps=1), 1, [[1]]
    trainer._next_prompts = lambda: [0]
    trainer.step = lambda indices, step: {"loss": 0.5, "reward": 0.25}
    assert trainer.train().global_step == 3
    err = drawn(capsys)
    assert "ppo rollouts" in err and "3/3" in err and "reward=0.250" in err
