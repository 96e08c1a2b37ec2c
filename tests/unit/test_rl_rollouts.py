"""GRPO / RLOO rollouts sampled by a bf16 copy of the policy: made only where the run trains bf16 (so only where bf16
is native), refreshed from the policy's trainable weights before each generation, never changing the policy."""

from types import SimpleNamespace

import pytest
import torch

from tunesmith.objectives.feedback import rl


@pytest.fixture
def policy(tiny_llama):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))


def trainer(model, bf16=True):
    return SimpleNamespace(args=SimpleNamespace(bf16=bf16), accelerator=SimpleNamespace(unwrap_model=lambda m: m),
                           model_wrapped=model)


def test_the_copy_is_bf16_and_follows_the_trained_weights(policy, monkeypatch):
    monkeypatch.setattr(rl, "BF16_ROLLOUTS", True)  # the lever is off by default (no gain measured)
    t = trainer(policy)
    fast = rl._rollout_model(t)
    assert fast is not policy and {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in policy.parameters()} == {torch.float32}  # the policy keeps its fp32 weights
    lora = next(p for n, p in policy.named_parameters() if "lora_A" in n)
    with torch.no_grad():
        lora.add_(1.0)  # an optimizer step
    assert rl._rollout_model(t) is fast  # made once, refreshed after
    copied = next(p for n, p in fast.named_parameters() if "lora_A" in n)
    assert torch.equal(copied, lora.detach().to(torch.bfloat16))


@pytest.mark.parametrize("reason", ["train.bf16 off", "lever off", "16-bit policy"])
def test_no_copy_where_training_is_not_bf16(policy, monkeypatch, reason):
    t = trainer(policy, bf16=reason != "train.bf16 off")
    monkeypatch.setattr(rl, "BF16_ROLLOUTS", reason != "lever off")
    if reason == "16-bit policy":
        policy.to(torch.bfloat16)
    assert rl._rollout_model(t) is None
    assert rl._rollout_model(t) is None  # asked again: still none, nothing made
