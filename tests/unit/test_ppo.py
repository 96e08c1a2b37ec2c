"""tunesmith's PPO (objectives/ppo.py): generalized advantage estimation by hand, the adaptive KL controller's
direction, the log-probability alignment of packed rows, and a toy task whose optimal policy is known (a tiny Llama
over a 10-word vocabulary learns to start every completion with the word "c")."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.config import load_config
from tunesmith.objectives.feedback.ppo import AdaptiveKLController, PPOTrainer, forward, gae, pack

WORDS = ["<pad>", "<eos>", "<unk>", "a", "b", "c", "d", "e", "f", "g"]


def test_gae_by_hand():
    # one completion of 3 tokens (positions 1..3 of 5), reward 1 at its last token, V = 0.5 everywhere
    mask = torch.tensor([[0.0, 1, 1, 1, 0]])
    rewards = torch.tensor([[0.0, 0, 0, 1, 0]])
    values = torch.full((1, 5), 0.5)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(advantages, torch.tensor([[0.0, 0.5, 0.5, 0.5, 0]]))  # return 1 everywhere, minus V
    assert torch.allclose(returns, torch.tensor([[0.0, 1, 1, 1, 0]]))
    advantages, _ = gae(rewards, values, mask, gamma=1.0, lam=0.0)  # one-step TD errors
    assert torch.allclose(advantages, torch.tensor([[0.0, 0.0, 0.0, 0.5, 0]]))


def test_adaptive_kl_controller_moves_toward_the_target():
    above = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    above.update(12.0, n_steps=1000)  # KL twice the target: the error is clipped to +0.2
    assert above.value == pytest.approx(0.1 * (1 + 0.2 * 1000 / 10000))
    below = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    below.update(3.0, n_steps=1000)
    assert below.value < 0.1
    on_target = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    on_target.update(6.0, n_steps=1000)
    assert on_target.value == pytest.approx(0.1)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory) -> str:
    """A random 2-layer Llama over WORDS with a word-level tokenizer (every completion token is a word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("toy-llama")
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         bos_token_id=None, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def toy_config(model: str, **ppo) -> object:
    return load_config({
        "model": {"name": model}, "data": {"source": "prompts.jsonl"}, "method": {"name": "full"},
        "objective": {"name": "rl", "algorithm": "ppo", "num_generations": 4, "max_new_tokens": 2,
                      "reward": {"function": "tunesmith.objectives.feedback.rewards:length"}, "ppo": ppo},
        "train": {"max_steps": 30, "learning_rate": 1e-2, "per_device_train_batch_size": 16, "logging_steps": 1},
    })


def starts_with_c(prompts, completions):
    return [1.0 if c.split()[:1] == ["c"] else 0.0 for c in completions]


def test_packed_rows_score_the_completion_tokens(toy_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(toy_model).eval()
    ids, attention, mask = pack([[3, 4], [5]], [[6, 7], [8, 1, 9]], pad=0, device="cpu")
    with torch.no_grad():
        logprobs, _ = forward(model, ids, attention, temperature=1.0)
        alone = model(torch.tensor([[5, 8, 1, 9]])).logits.log_softmax(-1)[0]
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]  # position t predicts token t + 1
    by_hand = [alone[0, 8], alone[1, 1], alone[2, 9]]  # row 2's completion, scored alone
    assert torch.allclose(logprobs[1, :3], torch.stack(by_hand), atol=1e-5)


@pytest.fixture
def one_thread():
    """Matrices this small run several times faster on one thread when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_ppo_learns_the_known_optimal_policy(toy_model, one_thread):
    """Reward 1 when a completion starts with "c" (about 1 in 10 at first): the mean reward rises to near 1, greedy
    decoding then starts every prompt's completion with "c", the KL to the reference stays finite, and kl_coef falls
    (the KL stays below the 6-nat target). About 3 s on one core; seeds 1-3 reach the same rewards."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.generation import generate

    tok = AutoTokenizer.from_pretrained(toy_model)
    model = AutoModelForCausalLM.from_pretrained(toy_model)
    texts = ["a b", "b d", "d e", "e f", "f g", "g a", "a d", "b e"]
    prompts = [tok(t)["input_ids"] for t in texts]
    before = {n: p.clone() for n, p in model.named_parameters()}
    trainer = PPOTrainer(model, tok, prompts, texts, starts_with_c, toy_config(toy_model))
    result = trainer.train()
    history = [h for h in trainer.state.log_history if "reward" in h]
    assert result.global_step == 30 and trainer.state.global_step == 30 and len(history) == 30
    first, last = sum(h["reward"] for h in history[:5]) / 5, sum(h["reward"] for h in history[-5:]) / 5
    assert first < 0.4 and last > 0.85, (first, last)
    assert [g.split()[:1] for g in generate(model, tok, prompts, max_new_tokens=1)] == [["c"]] * len(prompts)
    assert all(math.isfinite(h["kl"]) for h in history) and history[-1]["kl"] > 0
    assert history[-1]["kl_coef"] < history[0]["kl_coef"] == 0.05
    assert {"policy_loss", "value_loss", "clipfrac", "approx_kl", "length"} <= set(history[-1])
    assert any(not torch.equal(p, model.get_parameter(n)) for n, p in before.items())
    assert trainer.model is model and trainer.state.num_input_tokens_seen > 0
