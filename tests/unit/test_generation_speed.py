"""The faster generation path: greedy token ids exactly transformers' own (batch 1 and a left-padded batch),
inverse-CDF sampling reproducible by seed and exact, the old Gumbel sampler still reachable, and the bf16 lever
switching off cleanly where the hardware has no native bf16."""

import copy

import pytest
import torch

from tunesmith import hardware
from tunesmith.errors import TunesmithError
from tunesmith.generation import bf16_copy, complete, decoding_model, draw

PROMPTS = ["Hello there", "Why is the sky blue? Tell me", "The quick brown fox jumps over the lazy dog and"]


@pytest.fixture(scope="module")
def llama(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


def _left_padded_greedy(model, tok, prompts, n):
    """transformers' own greedy decoding of `prompts` as one left-padded batch: the new token ids of each row."""
    tok = copy.copy(tok)
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    rows = out[:, batch["input_ids"].shape[1]:].tolist()
    return [row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row for row in rows]


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_greedy_token_ids_are_transformers_own_alone_and_left_padded(llama, precision, monkeypatch):
    model, tok = llama
    monkeypatch.setattr(hardware, "native_bf16", lambda use_cpu=False: (False, "CPU test has AVX2 only"))
    alone = [complete(model, tok, [p], max_new_tokens=12, batch_size=1, precision=precision)[0].token_ids
             for p in PROMPTS]
    assert alone == [_left_padded_greedy(model, tok, [p], 12)[0] for p in PROMPTS]
    batched = complete(model, tok, PROMPTS, max_new_tokens=12, batch_size=8, precision=precision)
    assert [c.token_ids for c in batched] == _left_padded_greedy(model, tok, PROMPTS, 12)
    # the sampler is not involved in greedy decoding: either one gives the same ids
    assert [c.token_ids for c in complete(model, tok, PROMPTS, max_new_tokens=12, sampler="gumbel")] == \
        [c.token_ids for c in batched]


def test_bf16_decodes_with_a_bf16_copy_and_leaves_the_model_alone(llama, monkeypatch):
    model, tok = llama
    monkeypatch.setattr(hardware, "native_bf16", lambda use_cpu=False: (True, "CPU test has AMX"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = complete(model, tok, PROMPTS, max_new_tokens=8, batch_size=8, precision="auto")
    half = bf16_copy(model)
    assert [c.token_ids for c in got] == _left_padded_greedy(half, tok, PROMPTS, 8)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert all(b.dtype == torch.float32 for b in half.buffers() if b.is_floating_point())  # rotary frequencies
    assert all(v.dtype == torch.float32 and torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with decoding_model(model, "auto") as decoder:
        assert decoder is not model and next(decoder.parameters()).dtype == torch.bfloat16


def test_levers_switch_off_where_bf16_is_not_native(llama, monkeypatch):
    model, tok = llama
    monkeypatch.setattr(hardware, "native_bf16", lambda use_cpu=False: (False, "CPU X has AVX2 only"))
    with decoding_model(model, "auto") as decoder:
        assert decoder is model  # no copy, fp32 as it is
    with pytest.raises(TunesmithError, match=r"AVX2 only.*precision='auto'"):
        complete(model, tok, PROMPTS[:1], max_new_tokens=2, precision="bf16")
    with pytest.raises(TunesmithError, match="sampler must be one of cdf, gumbel.*precision must be one of"):
        complete(model, tok, PROMPTS[:1], max_new_tokens=2, sampler="fast", precision="half")


def test_sampling_is_reproducible_and_a_row_does_not_depend_on_its_batch(llama):
    model, tok = llama
    first = complete(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, n=2, seed=5, batch_size=8)
    again = complete(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, n=2, seed=5, batch_size=8)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.token_ids for c in complete(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, n=2, seed=6)] != \
        [c.token_ids for c in first]
    one_by_one = complete(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, n=2, seed=5, batch_size=1)
    same = sum(a.token_ids == b.token_ids for a, b in zip(first, one_by_one))
    assert same >= len(first) - 1  # padding may move a borderline draw in the last float bits, nothing more
    old = complete(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, n=2, seed=5, sampler="gumbel")
    assert old == complete(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, n=2, seed=5, sampler="gumbel")
    assert [c.token_ids for c in old] != [c.token_ids for c in first]


def test_draw_is_inverse_cdf_sampling_and_never_draws_a_masked_token():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0])
    scores = probs.log().expand(4, -1)  # log 0 = -inf: masked, as top-k / top-p leave it
    assert draw(scores, torch.tensor([0.0, 0.0999, 0.1001, 0.95])).flatten().tolist() == [0, 0, 2, 3]
    assert draw(scores[:1], torch.tensor([1 - 2**-53])).item() == 3  # the very top: the last live token, never 4
    u = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draw(probs.log().expand(len(u), -1), u).flatten(), minlength=5) / len(u)
    assert torch.allclose(counts, probs, atol=0.015)
