"""The generation service: greedy and sampled decoding, stop strings, n samples, streaming, chat prompts, and a
per-call adapter of a shared PEFT model that stays right under concurrent threads."""

import threading

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.generation import chat_prompt, complete, generate, using_adapter

PROMPTS = ["Hello there", "Why is the sky blue? Tell me", "The quick brown fox jumps over the lazy dog and"]


@pytest.fixture(scope="module")
def llama(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def two_adapters(tiny_llama):
    """One base with two random LoRA adapters ("one" active) that change what it generates."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), config, adapter_name="one")
    torch.manual_seed(2)
    model.add_adapter("two", config)
    model.set_adapter("one")
    return model.eval()


def test_greedy_is_transformers_greedy_per_prompt_and_temperature_zero(llama):
    model, tok = llama
    batched = generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=8)  # left-padded together
    for prompt, text in zip(PROMPTS, batched):
        ids = tok(prompt, return_tensors="pt")
        alone = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        assert text == tok.decode(alone[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert generate(model, tok, PROMPTS, max_new_tokens=8, temperature=0) == batched
    assert generate(model, tok, [tok(p)["input_ids"] for p in PROMPTS], max_new_tokens=8) == batched  # ids or text
    # sampling restricted to the single best token is greedy
    assert generate(model, tok, PROMPTS, max_new_tokens=8, temperature=1.0, top_k=1, seed=3) == batched


def test_sampling_is_reproducible_by_seed_and_leaves_the_global_rng_alone(llama):
    model, tok = llama
    state = torch.get_rng_state()
    first = generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, seed=7)
    assert torch.equal(torch.get_rng_state(), state), "sampling moved the caller's global RNG"
    assert generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, seed=7) == first
    assert generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, seed=8) != first
    assert generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=50, seed=7) != first
    assert first != generate(model, tok, PROMPTS, max_new_tokens=10)  # not greedy


def test_n_samples_per_prompt_in_prompt_order(llama):
    model, tok = llama
    got = complete(model, tok, PROMPTS[:2], max_new_tokens=6, temperature=1.0, n=3, seed=0, batch_size=4)
    assert [(c.prompt, c.sample) for c in got] == [(p, s) for p in range(2) for s in range(3)]
    assert len({c.text for c in got[:3]}) > 1, "three samples of one prompt were all the same"
    assert all(c.finish_reason == "length" and len(c.token_ids) == 6 for c in got)
    assert len(generate(model, tok, PROMPTS, max_new_tokens=2, n=2)) == 6


def test_stop_strings_cut_the_text_and_end_generation(llama):
    model, tok = llama
    full = complete(model, tok, PROMPTS, max_new_tokens=16)
    stops = [c.text[4:7] for c in full]  # a piece of each greedy text, so it does occur
    for c, s in zip(full, stops):
        got = complete(model, tok, [PROMPTS[c.prompt]], max_new_tokens=16, stop=[s, "never appears"])[0]
        assert got.text == c.text[: c.text.find(s)]
        assert got.finish_reason == "stop" and len(got.token_ids) < 16
        assert got.token_ids == c.token_ids[: len(got.token_ids)]
    batched = complete(model, tok, PROMPTS, max_new_tokens=16, stop=stops[0])  # rows stop independently
    assert [b.text for b in batched] == [c.text[: c.text.find(stops[0])] if stops[0] in c.text else c.text for c in full]


def test_streamed_pieces_concatenate_to_the_returned_text(llama):
    model, tok = llama
    for options in ({"batch_size": 1}, {"temperature": 1.0, "seed": 4, "n": 2, "stop": ["e", "xyz"], "batch_size": 3}):
        pieces: dict[int, list[str]] = {}
        got = complete(model, tok, PROMPTS, max_new_tokens=12,
                       on_text=lambda i, t, pieces=pieces: pieces.setdefault(i, []).append(t), **options)
        assert {i: "".join(p) for i, p in pieces.items()} == {i: c.text for i, c in enumerate(got) if c.text}
        assert max(len(p) for p in pieces.values()) > 1, "the text came in one piece, not streamed"


def test_chat_prompt_uses_the_template_with_the_generation_prompt(llama):
    model, tok = llama
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a fox?"}]
    ids = chat_prompt(tok, messages)
    text = tok.decode(ids)
    assert "What is a fox?" in text and text.endswith("<|im_start|>assistant\n")
    assert ids == tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    assert len(generate(model, tok, [ids], max_new_tokens=3)) == 1
    plain = type(tok).from_pretrained(tok.name_or_path)
    plain.chat_template = None
    with pytest.raises(TunesmithError, match="chat template"):
        chat_prompt(plain, messages)


def test_bad_options_and_adapters_are_errors(llama, two_adapters):
    model, tok = llama
    with pytest.raises(TunesmithError, match="temperature .* top_p .* prompt 1 is empty"):
        generate(model, tok, ["Hi", []], temperature=-1, top_p=0)
    with pytest.raises(TunesmithError, match="no PEFT adapters"):
        generate(model, tok, ["Hi"], adapter="one")
    with pytest.raises(TunesmithError, match="'three' is not loaded on this model; loaded: \\['one', 'two'\\]"):
        generate(two_adapters, tok, ["Hi"], adapter="three")


def test_adapter_per_call_restores_the_model(two_adapters, llama):
    _, tok = llama
    model = two_adapters
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    texts = {name: generate(model, tok, PROMPTS, max_new_tokens=8, adapter=name) for name in ("one", "two")}
    assert model.training and model.active_adapter == "one"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    model.eval()
    assert texts["one"] != texts["two"], "the two adapters generate alike: the test would prove nothing"
    assert generate(model, tok, PROMPTS, max_new_tokens=8) == texts["one"]  # no adapter: the active one
    with model.disable_adapter():
        assert generate(model, tok, PROMPTS, max_new_tokens=8) not in (texts["one"], texts["two"])


def test_threads_with_different_adapters_get_their_own_outputs(two_adapters, llama):
    _, tok = llama
    model = two_adapters
    ids = tok(PROMPTS, return_tensors="pt", padding=True)

    def work(name):
        text = generate(model, tok, PROMPTS, max_new_tokens=8, adapter=name)
        sample = generate(model, tok, PROMPTS, max_new_tokens=8, adapter=name, temperature=1.0, seed=5)
        with using_adapter(model, name), torch.no_grad():  # what classification prediction does
            logits = model(**ids).logits
        return text, sample, logits

    expected = {name: work(name) for name in ("one", "two")}
    results, errors = {"one": [], "two": []}, []

    def loop(name):
        try:
            for _ in range(5):
                results[name].append(work(name))
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=loop, args=(name,)) for name in ("one", "two", "one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name, runs in results.items():
        assert len(runs) == 10
        for text, sample, logits in runs:
            assert text == expected[name][0] and sample == expected[name][1]
            assert torch.equal(logits, expected[name][2])
    assert model.active_adapter == "one"
