"""Dynamic batching in `tunesmith serve`: requests for two LoRA adapters and their base share one batch (PEFT's
adapter_names) and get the answers they get alone, each with its own options; a stream that ends early in a batch;
--max-batch 1; the bounded queue (429 + Retry-After) and --request-timeout. One tiny Llama with two random LoRA
adapters built here (no run is trained): each test serves it with its own Batching."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from typer.testing import CliRunner

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from tunesmith.cli import app as cli_app  # noqa: E402
from tunesmith.generation import model_lock  # noqa: E402
from tunesmith.serve.app import create_app  # noqa: E402
from tunesmith.serve.batching import Batching  # noqa: E402
from tunesmith.web import background  # noqa: E402

PROMPTS = ["What is AI?", "Do you like pizza?", "Tell me a joke."]
NAMES = ["ada", "bob", "base"]


@pytest.fixture(scope="module")
def lora(lora_pair):
    """A PeftModel with LoRA adapters 'ada' and 'bob' on the tiny Llama (conftest.lora_pair), and its tokenizer."""
    return lora_pair


def make_registry(lora, batching: Batching):
    from tunesmith.serve.registry import Registry, Served, _batchers

    model, tok = lora
    worker = ThreadPoolExecutor(max_workers=1)
    served = [Served("ada", "adapter", model, tok, worker, adapter="ada", parent="base"),
              Served("bob", "adapter", model, tok, worker, adapter="bob", parent="base"),
              Served("base", "base", model, tok, worker)]
    _batchers(served, batching)
    return Registry(served)


@pytest.fixture
def serve(lora):
    """serve(Batching(...)) -> (base URL, registry); closed after the test."""
    opened = []

    def start(batching: Batching):
        registry = make_registry(lora, batching)
        context = background(create_app(registry))
        url, _ = context.__enter__()
        opened.append((context, registry))
        return url, registry

    yield start
    for context, registry in opened:
        context.__exit__(None, None, None)
        registry.close()


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat(c, model, prompt, **options):
    options = {"max_tokens": 8, "temperature": 0, **options}
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **options)


def together(calls):
    """Run the calls at once, each on its own thread; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


REQUESTS = [  # (model, prompt, options): greedy, a short max_tokens, a stop string, seeded sampling, n=2
    ("ada", PROMPTS[0], {}), ("bob", PROMPTS[0], {}), ("base", PROMPTS[0], {}),
    ("ada", PROMPTS[1], {"max_tokens": 3}), ("bob", PROMPTS[2], {"temperature": 1.0, "seed": 7, "n": 2}),
    ("base", PROMPTS[2], {"max_tokens": 12, "stop": ["e"]}),
]


def test_mixed_adapters_in_one_batch_answer_as_alone(serve):
    url, registry = serve(Batching(max_batch=7, batch_window_ms=1000))
    c = client(url)
    alone = []
    for model, prompt, options in REQUESTS:  # one by one: each waits out the window alone
        alone.append([x.message.content for x in chat(c, model, prompt, **options).choices])
    assert len({a[0] for a in alone[:3]}) == 3, "the adapters answer alike: the test proves nothing"
    assert len(alone[3][0]) < len(alone[0][0]) and len(alone[4]) == 2 and "e" not in alone[5][0]
    batcher = registry.get("ada").batcher
    assert all(jobs == 1 for jobs, *_ in batcher.history)
    got = together([lambda m=m, p=p, o=o: [x.message.content for x in chat(c, m, p, **o).choices]
                    for m, p, o in REQUESTS])
    assert got == alone
    wait_for(lambda: len(batcher.history) == 7)  # recorded just after the answers
    jobs, rows, steps, _ = batcher.history[-1]
    assert (jobs, rows) == (6, 7) and 8 <= steps <= 12  # one batch: 3 models, 7 sequences, as long as its longest


def test_a_stream_that_ends_early_ends_its_own_sequence_only(serve):
    url, registry = serve(Batching(max_batch=2, batch_window_ms=1000))
    c = client(url)
    expected = chat(c, "bob", PROMPTS[1], max_tokens=6).choices[0].message.content
    first_piece = threading.Event()

    def leave_early():
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=60, json={
                "model": "ada", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 200,
                "temperature": 0, "stream": True}) as answer:
            for line in answer.iter_lines():
                if '"content": "' in line and '"content": ""' not in line:
                    first_piece.set()
                    return  # the client leaves: the connection closes

    def stay():
        return chat(c, "bob", PROMPTS[1], max_tokens=6).choices[0].message.content

    _, kept = together([leave_early, stay])
    assert first_piece.is_set() and kept == expected
    deadline = time.time() + 30
    while registry.get("ada").batcher.history[-1][0] != 2 and time.time() < deadline:
        time.sleep(0.05)
    jobs, rows, steps, _ = registry.get("ada").batcher.history[-1]
    assert (jobs, rows) == (2, 2) and steps < 200  # the batch ended long before the stream's max_tokens


def test_streams_in_a_batch_give_their_own_text_and_usage(serve):
    url, _ = serve(Batching(max_batch=4, batch_window_ms=500))
    c = client(url)
    alone = {m: chat(c, m, PROMPTS[2], max_tokens=3 + i).choices[0].message.content for i, m in enumerate(NAMES)}

    def streamed(i, model):
        pieces, usage = [], None
        for chunk in chat(c, model, PROMPTS[2], max_tokens=3 + i, stream=True, stream_options={"include_usage": True}):
            pieces += [x.delta.content or "" for x in chunk.choices]
            usage = chunk.usage or usage
        return "".join(pieces), usage.completion_tokens

    got = together([lambda i=i, m=m: streamed(i, m) for i, m in enumerate(NAMES)])
    assert [text for text, _ in got] == [alone[m] for m in NAMES] and [n for _, n in got] == [3, 4, 5]


def test_max_batch_one_runs_one_request_at_a_time(serve):
    url, registry = serve(Batching(max_batch=1))
    c = client(url)
    alone = [chat(c, m, PROMPTS[0]).choices[0].message.content for m in NAMES]
    assert together([lambda m=m: chat(c, m, PROMPTS[0]).choices[0].message.content for m in NAMES]) == alone
    wait_for(lambda: len(registry.get("ada").batcher.history) == 6)  # recorded just after the answers
    assert [jobs for jobs, *_ in registry.get("ada").batcher.history] == [1] * 6


def test_a_full_queue_is_a_429_with_retry_after(serve, lora):
    url, registry = serve(Batching(max_batch=1, max_queue=1))
    batcher, c = registry.get("ada").batcher, client(url)
    pool = ThreadPoolExecutor(2)
    with model_lock(lora[0]):  # the batch thread waits for the model
        running = pool.submit(chat, c, "ada", PROMPTS[0])
        wait_for(lambda: batcher.running)
        queued = pool.submit(chat, c, "bob", PROMPTS[0])
        wait_for(lambda: len(batcher.queue) == 1)
        answer = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "base", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
        error = answer.json()["error"]
        assert error["code"] == "queue_full" and "--max-queue" in error["message"]
        with pytest.raises(openai.RateLimitError):
            chat(c, "base", "Hi")
    assert running.result().choices[0].message.content and queued.result().choices[0].message.content
    pool.shutdown()


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_request_past_the_timeout_is_a_504_and_is_dropped(serve, lora):
    url, registry = serve(Batching(max_batch=4, request_timeout=0.5))
    c = client(url)
    with model_lock(lora[0]):
        started = time.time()
        answer = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "ada", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
        assert answer.status_code == 504 and time.time() - started < 30  # while the model is still held
        assert answer.json()["error"]["code"] == "timeout" and "--request-timeout" in answer.json()["error"]["message"]
        events = httpx.post(url + "/v1/completions", timeout=60, json={
            "model": "bob", "prompt": "Hi", "max_tokens": 2, "stream": True}).text
        assert "--request-timeout" in events and events.rstrip().endswith("data: [DONE]")
    assert chat(c, "base", "Hi", max_tokens=2).usage.completion_tokens == 2  # the server goes on


def test_batching_options_are_checked_and_come_from_the_cli(monkeypatch):
    for bad in ({"max_batch": 0}, {"max_queue": 0}, {"batch_window_ms": -1}, {"request_timeout": -2}):
        with pytest.raises(ValueError, match="--" + next(iter(bad)).replace("_", "-")):
            Batching(**bad)
    assert Batching(request_timeout=0).timeout is None
    calls = []
    monkeypatch.setattr("tunesmith.serve.server.serve", lambda specs, models, **kw: calls.append(kw))
    argv = ["serve", "--model", "m", "--port", "0", "--max-batch", "4", "--batch-window-ms", "5", "--max-queue", "3",
            "--request-timeout", "9"]
    assert CliRunner().invoke(cli_app, argv).exit_code == 0
    assert calls[0]["batching"] == Batching(4, 5, 3, 9)
    result = CliRunner().invoke(cli_app, ["serve", "--model", "m", "--max-batch", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_ia3_and_dora_adapters_batch_per_adapter(tiny_llama):
    """PEFT mixes LoRA adapters only (no DoRA) in one batch: IA3 requests share a batch only with requests for the
    same adapter, switched on for the batch, and still answer as alone."""
    import torch
    from peft import IA3Config, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.serve.registry import Registry, Served, _batchers, _mixable

    dora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(r=2, use_dora=True))
    assert not _mixable(dora)
    torch.manual_seed(0)
    config = {"target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), IA3Config(**config), adapter_name="xa")
    model.add_adapter("xb", IA3Config(**config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ia3_l" in name:  # scales far from 1, so that each adapter answers its own way
                p.copy_(torch.randn_like(p) * 8)
    assert not _mixable(model)
    tok, worker = AutoTokenizer.from_pretrained(tiny_llama), ThreadPoolExecutor(max_workers=1)
    served = [Served("xa", "adapter", model.eval(), tok, worker, adapter="xa", parent="base"),
              Served("xb", "adapter", model, tok, worker, adapter="xb", parent="base"), Served("base", "base", model, tok, worker)]
    _batchers(served, Batching(max_batch=8, batch_window_ms=1000))
    registry = Registry(served)
    try:
        with background(create_app(registry)) as (url, _):
            c = client(url)
            alone = [chat(c, m, PROMPTS[0]).choices[0].message.content for m in ("xa", "xb", "base")]
            assert len(set(alone)) == 3
            calls = [lambda m=m: chat(c, m, PROMPTS[0]).choices[0].message.content for m in ("xa", "xb", "base", "xa")]
            assert together(calls) == alone + alone[:1]
            wait_for(lambda: sum(jobs for jobs, *_ in registry.get("xa").batcher.history) == 7)
            assert sorted(jobs for jobs, *_ in list(registry.get("xa").batcher.history)[3:]) == [1, 1, 2]
    finally:
        registry.close()


def test_the_compute_thread_runs_calls_in_order_and_never_holds_the_process_at_exit():
    """Calls run one at a time in submission order, an error reaches its caller; a call still running (a model
    loading when Ctrl-C comes) does not keep the process alive: the thread is a daemon."""
    import subprocess
    import sys

    from tunesmith.serve.registry import ComputeThread

    compute, seen = ComputeThread(), []
    futures = [compute.submit(seen.append, i) for i in range(5)]
    assert [f.result(timeout=10) for f in futures] == [None] * 5 and seen == [0, 1, 2, 3, 4]
    with pytest.raises(ZeroDivisionError):
        compute.submit(lambda: 1 / 0).result(timeout=10)
    assert compute.submit(threading.current_thread).result(timeout=10).name == "serve-compute"
    compute.shutdown()
    with pytest.raises(RuntimeError, match="shutting down"):
        compute.submit(seen.append, 5)
    script = ("import time; from tunesmith.serve.registry import ComputeThread; "
              "ComputeThread().submit(time.sleep, 120); print('submitted', flush=True)")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "submitted" in done.stdout and time.monotonic() - start < 60
