"""Continuous batching in `tunesmith serve` (serve/continuous.py): a request that joins a running batch between two
steps decodes the tokens it decodes alone (greedy, seeded sampling, log-probabilities; prompts shorter and longer
than the batch's), and equal to `generation.complete`; rows of two LoRA adapters and the base share the steps; a row
that ends leaves at once (its caller answered while the others go on); models the loop cannot step are batched
statically. A tiny random Llama; the sessions are stepped by hand, then once through the HTTP server."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("fastapi")

from tunesmith.generation import complete  # noqa: E402
from tunesmith.serve import continuous  # noqa: E402
from tunesmith.serve.batching import Batching, Job  # noqa: E402
from tunesmith.serve.continuous import open_session, supports  # noqa: E402
from tunesmith.serve.registry import Registry, Served, _batchers  # noqa: E402

SHORT = "Hi"
LONG = "Tell me, in a few careful sentences, how an airplane wing makes lift and why planes can fly upside down."


@pytest.fixture(scope="module")
def plain(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    return Served("tiny", "model", model, AutoTokenizer.from_pretrained(tiny_llama), ThreadPoolExecutor(1))


@pytest.fixture(scope="module")
def lora(lora_pair):
    """Served names 'ada', 'bob' (random LoRA adapters that change the answers) and 'base' on one PeftModel."""
    model, tok = lora_pair
    worker = ThreadPoolExecutor(1)
    served = [Served("ada", "adapter", model.eval(), tok, worker, adapter="ada", parent="base"),
              Served("bob", "adapter", model, tok, worker, adapter="bob", parent="base"),
              Served("base", "base", model, tok, worker)]
    for s in served:
        s.batch_key = "lora"
    return {s.name: s for s in served}


def job(served, text, logprobs=None, **options):
    options = {"max_new_tokens": 12, "temperature": 0.0, **options}
    return Job.generate(served, [served.text_ids(text)], options, logprobs)


def run(session, joining=(), after: int = 0):
    """Step `session` until it is empty; the jobs in `joining` are admitted after `after` steps. Returns, per job
    (by id), the number of steps the session had taken when it was answered."""
    answered, steps, jobs = {}, 0, [r.job for r in session.rows()] + list(joining)
    while session.active or steps < after:
        if steps == after:
            for j in joining:
                session.admit(j.rows)
        if session.active:
            session.step()
        steps += 1
        for j in jobs:
            if j.future.done() and id(j) not in answered:
                answered[id(j)] = steps
    return answered


def alone(served, j):
    session = open_session(served)
    session.admit(j.rows)
    run(session)
    return j.future.result()


def test_a_request_joining_mid_flight_decodes_as_alone(plain):
    assert supports(plain.model, plain.tokenizer)
    for first, second in ((SHORT, LONG), (LONG, SHORT)):  # the newcomer wider than the batch, then narrower
        running, joining = job(plain, first, 0, max_new_tokens=20), job(plain, second, 0, max_new_tokens=6)
        session = open_session(plain)
        session.admit(running.rows)
        answered = run(session, [joining], after=4)
        assert answered[id(joining)] < answered[id(running)]  # answered when its own row ended, not the batch
        for j, text, n in ((running, first, 20), (joining, second, 6)):
            together = j.future.result()[0]
            solo = alone(plain, job(plain, text, 0, max_new_tokens=n))[0]
            generated = complete(plain.model, plain.tokenizer, [plain.text_ids(text)], max_new_tokens=n)[0]
            assert together.token_ids == solo.token_ids == generated.token_ids and together.text == generated.text
            assert together.finish_reason == generated.finish_reason
            assert [lp for _, lp, _ in together.logprobs] == pytest.approx([lp for _, lp, _ in solo.logprobs], abs=1e-5)


def test_seeded_sampling_and_logprobs_are_the_same_in_a_batch(plain):
    sampled = {"temperature": 1.0, "top_k": 50, "top_p": 0.9, "seed": 7, "max_new_tokens": 10}
    solo = [alone(plain, job(plain, LONG, logprobs=3, **sampled))[0], alone(plain, job(plain, SHORT, n=2, **sampled))]
    session = open_session(plain)
    first = job(plain, SHORT, n=2, **sampled)
    session.admit(first.rows)
    later = job(plain, LONG, logprobs=3, **sampled)
    run(session, [later], after=3)
    together = later.future.result()[0]
    assert together.token_ids == solo[0].token_ids
    for (token, logprob, top), (token_, logprob_, top_) in zip(together.logprobs, solo[0].logprobs, strict=True):
        assert token == token_ and logprob == pytest.approx(logprob_, abs=1e-4)
        assert [t for t, _ in top] == [t for t, _ in top_]
    assert [c.token_ids for c in first.future.result()] == [c.token_ids for c in solo[1]]
    assert len({tuple(c.token_ids) for c in solo[1]}) == 2  # two samples of one prompt differ


def test_two_adapters_and_the_base_share_the_steps(lora):
    expected = {name: complete(s.model, s.tokenizer, [s.text_ids(LONG)], max_new_tokens=8,
                               adapter=s.adapter)[0].token_ids if s.adapter else None for name, s in lora.items()}
    with lora["base"].model.disable_adapter():
        expected["base"] = complete(lora["base"].model, lora["base"].tokenizer, [lora["base"].text_ids(LONG)],
                                    max_new_tokens=8)[0].token_ids
    assert len({tuple(t) for t in expected.values()}) == 3, "the adapters answer alike: the test proves nothing"
    session = open_session(lora["ada"])
    first = job(lora["ada"], LONG, max_new_tokens=8)
    session.admit(first.rows)
    others = [job(lora["bob"], LONG, max_new_tokens=8), job(lora["base"], LONG, max_new_tokens=8)]
    run(session, others, after=2)
    assert [j.future.result()[0].token_ids for j in [first, *others]] == [expected[n] for n in ("ada", "bob", "base")]


def test_chat_prompts_prefill_after_their_preamble_computed_once_and_decode_as_generate(lora):
    """A chat prompt starts with what its template writes before the user's message (SmolLM2's default system prompt:
    24 tokens). Its keys and values are computed once per adapter; each prompt then prefills only its own tokens.
    The tokens equal a full prefill's (generation.complete) for two adapters and the base, with a raw prompt (no
    preamble) admitted in the same call."""
    def chat(served, text):
        return served.chat_ids([{"role": "user", "content": text}])

    start = continuous.preamble(lora["ada"])
    assert len(start) == 24 and chat(lora["bob"], LONG)[:24] == start and len(chat(lora["bob"], LONG)) > 40
    expected = {}
    for name, s in lora.items():
        if s.adapter:
            expected[name] = complete(s.model, s.tokenizer, [chat(s, LONG)], max_new_tokens=8, adapter=s.adapter)[0]
        else:
            with s.model.disable_adapter():
                expected[name] = complete(s.model, s.tokenizer, [chat(s, LONG)], max_new_tokens=8)[0]
    assert len({tuple(c.token_ids) for c in expected.values()}) == 3, "the adapters answer alike: the test proves nothing"
    raw = complete(lora["ada"].model, lora["ada"].tokenizer, [lora["ada"].text_ids(SHORT)], max_new_tokens=8,
                   adapter="ada")[0]
    continuous._PREAMBLES.pop(lora["ada"].model, None)
    session = open_session(lora["ada"])
    chats = [Job.generate(s, [chat(s, LONG)], {"max_new_tokens": 8, "temperature": 0.0}) for s in lora.values()]
    plain_text = job(lora["ada"], SHORT, max_new_tokens=8)
    session.admit([r for j in [*chats, plain_text] for r in j.rows])
    run(session)
    assert [j.future.result()[0].token_ids for j in chats] == [expected[n].token_ids for n in lora]
    assert plain_text.future.result()[0].token_ids == raw.token_ids
    assert set(continuous._PREAMBLES[lora["ada"].model]) == {(n, tuple(start)) for n in ("ada", "bob", "__base__")}


def test_models_the_loop_cannot_step_are_batched_statically(tiny_llama, plain):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    prompt = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                            PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert not supports(prompt, plain.tokenizer)
    penalized = AutoModelForCausalLM.from_pretrained(tiny_llama)
    penalized.generation_config.repetition_penalty = 1.3  # generate would apply it: the loop would not
    assert not supports(penalized, plain.tokenizer)
    served = Served("penalized", "model", penalized.eval(), plain.tokenizer, ThreadPoolExecutor(1))
    _batchers([served], Batching(max_batch=4, batch_window_ms=0))
    try:
        got = served.batcher.submit(job(served, LONG, max_new_tokens=8)).future.result(timeout=60)[0]
        assert got.token_ids == complete(penalized, plain.tokenizer, [served.text_ids(LONG)], max_new_tokens=8)[0].token_ids
    finally:
        Registry([served]).close()


def test_through_the_server_a_short_request_is_answered_while_a_long_one_streams(plain, monkeypatch):
    from tunesmith.serve.app import create_app
    from tunesmith.web import background

    step = continuous.Session.step
    monkeypatch.setattr(continuous.Session, "step", lambda self: (time.sleep(0.01), step(self))[1])
    served = Served("tiny", "model", plain.model, plain.tokenizer, ThreadPoolExecutor(1))
    _batchers([served], Batching(max_batch=4, batch_window_ms=0))
    registry = Registry([served])
    body = {"model": "tiny", "max_tokens": 150, "temperature": 0}
    try:
        with background(create_app(registry)) as (url, _):
            solo = httpx.post(url + "/v1/completions", json={**body, "prompt": LONG}, timeout=60).json()
            started, ended, short = threading.Event(), {}, {}

            def long_stream():
                pieces = []
                with httpx.stream("POST", url + "/v1/completions", json={**body, "prompt": LONG, "stream": True},
                                  timeout=60) as answer:
                    for line in answer.iter_lines():
                        if line.startswith("data: {"):
                            started.set()
                            pieces.append(line)
                ended["long"] = time.monotonic()
                return pieces

            with ThreadPoolExecutor(1) as pool:
                streaming = pool.submit(long_stream)
                assert started.wait(30)
                short["answer"] = httpx.post(url + "/v1/completions", timeout=60,
                                             json={**body, "prompt": SHORT, "max_tokens": 3}).json()
                short["at"] = time.monotonic()
                pieces = streaming.result()
            assert short["answer"]["usage"]["completion_tokens"] == 3 and short["at"] < ended["long"]
            text = "".join(json.loads(p[6:])["choices"][0]["text"] for p in pieces if '"choices": [{' in p)
            assert text == solo["choices"][0]["text"]
            assert registry.get("tiny").batcher.history[-1][:2] == (2, 2)  # one batch: the short one joined it
    finally:
        registry.close()


def test_more_samples_than_max_batch_wait_for_room_and_sample_as_in_one_batch(plain):
    sampled = {"temperature": 1.0, "seed": 3, "n": 3, "max_new_tokens": 6}
    answers = []
    for max_batch in (2, 8):
        served = Served("tiny", "model", plain.model, plain.tokenizer, ThreadPoolExecutor(1))
        _batchers([served], Batching(max_batch=max_batch, batch_window_ms=0))
        try:
            answers.append(served.batcher.submit(job(served, LONG, **sampled)).future.result(timeout=60))
        finally:
            Registry([served]).close()
    assert [c.token_ids for c in answers[0]] == [c.token_ids for c in answers[1]]
    assert [c.sample for c in answers[0]] == [0, 1, 2]
