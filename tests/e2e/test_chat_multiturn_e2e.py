"""configs/chat-sft-multiturn.yaml end to end: SmolLM2-135M-Instruct, LoRA, every assistant turn of ChatterBot's
conversations trained; the eval loss on the held-out assistant turns falls below the base's."""

import time

import pytest

from tunesmith import api

pytestmark = pytest.mark.e2e


def test_multiturn_chat_sft_lowers_assistant_eval_loss(tmp_path):
    start = time.perf_counter()
    run = api.train("configs/chat-sft-multiturn.yaml", out=tmp_path / "run",
                    overrides=["train.max_steps=10", "train.per_device_train_batch_size=4", "train.eval_strategy=no",
                               "eval.max_examples=32", "eval.num_samples=1", "eval.max_new_tokens=8", "eval.probes=[]"])
    res = run.results
    print(f"\nchat-sft-multiturn (cut down): base eval_loss {res['base']['eval_loss']:.3f}, tuned "
          f"{res['tuned']['eval_loss']:.3f}, {time.perf_counter() - start:.0f} s")
    assert res["tuned"]["eval_loss"] < res["base"]["eval_loss"]
    assert res["tuned"]["samples"][0]["generation"] is not None
