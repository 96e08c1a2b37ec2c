"""`tunesmith serve` through the official openai client against a real Uvicorn server on a loopback port: one tiny
Llama base with two chat-sft LoRA runs on it, and two tiny BERT classify runs (an adapter and a whole model)."""

import json
import math
import socket
import subprocess
import sys
import threading

import httpx
import pytest
from typer.testing import CliRunner

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from tunesmith.cli import app as cli_app  # noqa: E402
from tunesmith.serve.app import create_app  # noqa: E402
from tunesmith.serve.registry import load_registry, parse_specs, serve_dtype  # noqa: E402
from tunesmith.serve.server import background  # noqa: E402

PROMPTS = ["What is AI?", "Do you like pizza?", "Tell me a joke."]
TEXTS = ["A fine film.", "Dull and far too long."]


@pytest.fixture(scope="module")
def runs(tiny_llama, tiny_bert, qa_file, sentiment_file, tmp_path_factory):
    """Two chat-sft LoRA runs on one base (trained apart so they answer differently); on a tiny BERT, a classify
    LoRA run and a reward LoRA run (sharing their base) and a whole classify model. Trained once for the module: about
    50 s on an idle 2-core machine, most of it each run's fixed cost (load, evaluate base and tuned, save)."""
    from conftest import tiny_config, write_jsonl
    from tunesmith import api

    root = tmp_path_factory.mktemp("serve-runs")
    pairs = str(write_jsonl(root / "pairs.jsonl", [{"prompt": f"Review {i}?", "chosen": "A good film.", "rejected": "A bad one."}
                                                   for i in range(40)]))
    small = {"eval": {"num_samples": 1, "max_new_tokens": 2, "max_examples": 4}}
    chat = {"data": {"format": "chat"}, **small}
    short = {"max_steps": 2, "learning_rate": 5e-2}
    return {
        "chat-a": api.train(tiny_config(tiny_llama, qa_file, "sft", **chat, train={"learning_rate": 5e-2}), out=root / "chat-a"),
        "chat-b": api.train(tiny_config(tiny_llama, qa_file, "sft", **chat, train={"learning_rate": 1e-1, "seed": 1}),
                            out=root / "chat-b"),
        "sentiment": api.train(tiny_config(tiny_bert, sentiment_file, "classify", **small, train=short), out=root / "sentiment"),
        "sentiment-full": api.train(tiny_config(tiny_bert, sentiment_file, "classify", **small, train=short,
                                                method={"name": "full"}), out=root / "sentiment-full"),
        "reward": api.train({**tiny_config(tiny_bert, pairs, "classify", train=short), "objective": {"name": "reward"}},
                            out=root / "reward"),
    }


@pytest.fixture(scope="module")
def registry(runs):
    """Served as: chat-a, bee (chat-b renamed with NAME=RUN_DIR), their base, sentiment, sentiment-full, reward."""
    specs = parse_specs([str(runs["chat-a"].dir), f"bee={runs['chat-b'].dir}", str(runs["sentiment"].dir),
                         str(runs["sentiment-full"].dir), str(runs["reward"].dir)])
    registry = load_registry(specs)
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def server(registry):
    with background(create_app(registry)) as (url, _):
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat(client, model, prompt, **options):
    options = {"max_tokens": 8, "temperature": 0, **options}
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **options)


def base_name(tiny_llama):
    from pathlib import Path

    return Path(tiny_llama).name


def test_models_lists_the_base_and_its_adapters(client, tiny_llama, tiny_bert):
    models = {m.id: m for m in client.models.list().data}
    base = base_name(tiny_llama)
    assert set(models) == {"chat-a", "bee", base, "sentiment", "sentiment-full", "reward"}
    assert models["chat-a"].parent == base and models["bee"].parent == base and models[base].parent is None
    assert models["sentiment"].parent == models["reward"].parent == base_name(tiny_bert) and models["sentiment-full"].parent is None
    assert (models["bee"].kind, models[base].kind, models["sentiment-full"].kind) == ("adapter", "base", "model")
    assert client.models.retrieve("bee").objective == "sft"


def test_chat_equals_tunesmith_generate_for_base_and_adapters(client, runs, registry, tiny_llama):
    from transformers import AutoModelForCausalLM

    from tunesmith.data.templates import probe_row
    from tunesmith.data.tokenize import sft_prompt_ids
    from tunesmith.generation import chat_prompt, generate

    run = runs["chat-a"]
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    answers = {}
    for prompt in PROMPTS[:2]:
        for name, key in (("chat-a", "chat-a"), ("bee", "chat-b")):
            got = chat(client, name, prompt)
            assert got.choices[0].message.content.strip() == runs[key].generate(prompt, max_new_tokens=8)[0]
            assert got.usage.prompt_tokens == len(sft_prompt_ids(run.tokenizer, run.config.data, probe_row(prompt, run.config.data)))
            assert got.usage.completion_tokens == 8 and got.choices[0].finish_reason == "length"
            answers[name, prompt] = got.choices[0].message.content
        ids = chat_prompt(run.tokenizer, [{"role": "user", "content": prompt}])
        got = chat(client, base_name(tiny_llama), prompt)
        assert got.choices[0].message.content.strip() == generate(base, run.tokenizer, [ids], max_new_tokens=8)[0]
        answers["base", prompt] = got.choices[0].message.content
    assert len({answers[m, PROMPTS[0]] for m in ("chat-a", "bee", "base")}) == 3, "the models answer alike: the test proves nothing"


def test_streaming_gives_the_non_streaming_text(client):
    for model, options in (("chat-a", {}), ("bee", {"temperature": 1.2, "top_p": 0.9, "seed": 4, "n": 2, "max_tokens": 12})):
        whole = chat(client, model, PROMPTS[2], **options)
        pieces, finish, usage = {}, {}, None
        for chunk in chat(client, model, PROMPTS[2], stream=True, stream_options={"include_usage": True}, **options):
            for choice in chunk.choices:
                pieces.setdefault(choice.index, []).append(choice.delta.content or "")
                finish[choice.index] = choice.finish_reason or finish.get(choice.index)
            usage = chunk.usage or usage
        assert {i: "".join(p) for i, p in pieces.items()} == {c.index: c.message.content for c in whole.choices}
        assert finish == {c.index: c.finish_reason for c in whole.choices}
        assert usage.completion_tokens == whole.usage.completion_tokens and max(len(p) for p in pieces.values()) > 3


def test_completions_raw_prompts_stop_and_stream(client):
    whole = client.completions.create(model="chat-a", prompt=["Once upon", "The cat"], max_tokens=6, temperature=0)
    assert [c.index for c in whole.choices] == [0, 1] and whole.usage.completion_tokens == 12
    stop = whole.choices[0].text[3:6]
    cut = client.completions.create(model="chat-a", prompt="Once upon", max_tokens=6, temperature=0, stop=[stop])
    assert cut.choices[0].text == whole.choices[0].text[: whole.choices[0].text.find(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="chat-a", prompt="Once upon", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == whole.choices[0].text


def test_sampling_with_a_seed_is_reproducible(client):
    first = chat(client, "bee", PROMPTS[0], temperature=1.0, seed=11, n=3, max_tokens=6)
    again = chat(client, "bee", PROMPTS[0], temperature=1.0, seed=11, n=3, max_tokens=6)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1


def test_a_conversation_goes_through_the_chat_template(client, registry, runs):
    from tunesmith.generation import chat_prompt

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": [{"type": "text", "text": "What is AI?"}]}]
    got = client.chat.completions.create(model="chat-a", messages=messages, max_tokens=4, temperature=0)
    flat = [{**m, "content": "What is AI?"} if isinstance(m["content"], list) else m for m in messages]
    assert got.usage.prompt_tokens == len(chat_prompt(runs["chat-a"].tokenizer, flat))


def test_classify_equals_tunesmith_predict(server, runs):
    for name in ("sentiment", "sentiment-full"):
        result = CliRunner().invoke(cli_app, ["predict", str(runs[name].dir), *TEXTS, "--json"])
        assert result.exit_code == 0, result.output
        expected = json.loads(result.stdout[result.stdout.index("["):])
        got = httpx.post(server + "/v1/classify", json={"model": name, "input": TEXTS}).json()
        assert [{k: d[k] for k in ("label", "score", "probs")} for d in got["data"]] == expected
        assert [d["index"] for d in got["data"]] == [0, 1]


def test_score_equals_the_reward_runs_score(server, runs):
    rows = [{"prompt": "Review 1?", "response": "A good film."}, {"response": "A bad one."}]
    got = httpx.post(server + "/v1/score", json={"model": "reward", "input": rows}).json()
    assert [d["score"] for d in got["data"]] == runs["reward"].score(rows)
    assert httpx.post(server + "/v1/classify", json={"model": "sentiment", "input": TEXTS}).json()["data"][0]["label"]
    bad = httpx.post(server + "/v1/score", json={"model": "reward", "input": [{"prompt": "no response"}]})
    assert bad.status_code == 400 and "row 1 has no response text" in bad.json()["error"]["message"]


def test_every_models_work_runs_on_the_one_compute_thread(client, server, registry):
    """Generation (continuous and streamed), classify and score all run on the server's compute thread: a second
    thread running torch beside it would give PyTorch's OpenMP a second pool, and every operator a wake-up."""
    import threading

    models = {id(s.model): s.model for s in registry.models.values()}.values()
    assert len({id(s.worker) for s in registry.models.values()}) == 1
    seen: set[str] = set()
    hooks = [m.register_forward_pre_hook(lambda *_: seen.add(threading.current_thread().name)) for m in models]
    try:
        chat(client, "chat-a", PROMPTS[0])
        list(chat(client, "bee", PROMPTS[1], stream=True))
        assert httpx.post(server + "/v1/classify", json={"model": "sentiment", "input": TEXTS}).status_code == 200
        assert httpx.post(server + "/v1/score", json={"model": "reward", "input": [{"response": "Fine."}]}).status_code == 200
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and all(name.startswith("serve-compute") for name in seen), seen


def test_concurrent_clients_on_two_adapters_and_the_base_get_their_own_answers(server, tiny_llama):
    """16 clients x 10 requests, each client alternating chat-a, bee and the base, greedy: every answer is the one
    the same request gets alone."""
    names = ["chat-a", "bee", base_name(tiny_llama)]
    solo_client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    solo = {(m, p): chat(solo_client, m, p, max_tokens=6).choices[0].message.content for m in names for p in PROMPTS}
    assert len({solo[m, PROMPTS[0]] for m in names}) == 3
    got, errors = [], []

    def client_loop(i):
        c = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)
        try:
            for j in range(10):
                model, prompt = names[(i + j) % 3], PROMPTS[(i + 2 * j) % 3]
                got.append((model, prompt, chat(c, model, prompt, max_tokens=6).choices[0].message.content))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 160
    assert all(text == solo[model, prompt] for model, prompt, text in got)


def test_errors_in_openai_shape(client, server, registry):
    with pytest.raises(openai.NotFoundError) as err:
        chat(client, "nope", "Hi")
    assert err.value.body["code"] == "model_not_found" and "chat-a, bee" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, "chat-a", "Hi", temperature=3)
    assert err.value.body["param"] == "temperature" and "less than or equal to 2" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, "chat-a", "Hi", extra_body={"temprature": 0.5})
    assert err.value.body["message"] == "Unrecognized request argument supplied: temprature"
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, "chat-a", "Hi", frequency_penalty=0.5)  # logprobs is served now (test_serve_logprobs.py)
    assert err.value.body["param"] == "frequency_penalty"
    with pytest.raises(openai.BadRequestError) as err:  # the tiny Llama's context is 256 tokens
        chat(client, "chat-a", "word " * 300)
    assert err.value.body["code"] == "context_length_exceeded" and "maximum context length is 256" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        chat(client, "chat-a", "Hi", max_tokens=250)
    with pytest.raises(openai.BadRequestError, match="generates no text; send it to /v1/classify"):
        chat(client, "sentiment", "Hi")
    for route, name in (("classify", "chat-a"), ("score", "sentiment")):
        answer = httpx.post(f"{server}/v1/{route}", json={"model": name, "input": TEXTS if route == "classify" else [{"text": "x"}]})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "model"
    assert httpx.post(server + "/v1/chat/completions", content=b"{not json").status_code == 400
    with pytest.raises(openai.BadRequestError, match="outside 'chat-a'"):
        client.completions.create(model="chat-a", prompt=[1, 2, 10**9], max_tokens=2)


def test_api_key(registry):
    with background(create_app(registry, api_key="sekret")) as (url, _):
        assert httpx.get(url + "/health").json()["status"] == "ok"  # no key needed for the health check
        missing = httpx.get(url + "/v1/models")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        wrong = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            wrong.models.list()
        with pytest.raises(openai.AuthenticationError):  # the key is checked before the request's options
            wrong.chat.completions.create(model="nope", messages=[], temperature=9)
        good = openai.OpenAI(base_url=url + "/v1", api_key="sekret", max_retries=0)
        assert len(good.models.list().data) == 6
        assert "".join(c.choices[0].delta.content or "" for c in chat(good, "chat-a", "Hi", stream=True) if c.choices) == \
            chat(good, "chat-a", "Hi").choices[0].message.content


def test_shutdown_finishes_the_requests_in_flight(registry):
    with background(create_app(registry)) as (url, _):
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        expected = c.completions.create(model="bee", prompt="Once", max_tokens=120, temperature=0).choices[0].text
        started, pieces = threading.Event(), []

        def consume():
            for chunk in c.completions.create(model="bee", prompt="Once", max_tokens=120, temperature=0, stream=True):
                pieces.append(chunk.choices[0].text if chunk.choices else "")
                started.set()

        reader = threading.Thread(target=consume)
        reader.start()
        assert started.wait(30)
    reader.join(30)  # leaving `background` shut the server down while the stream was being written
    assert "".join(pieces) == expected
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health")


def test_cli(runs, monkeypatch, tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli_app, ["serve", "--help"]).exit_code == 0
    assert runner.invoke(cli_app, ["serve"]).exit_code == 2
    result = runner.invoke(cli_app, ["serve", str(tmp_path)])
    assert result.exit_code == 2 and "not a tunesmith run folder" in result.output
    result = runner.invoke(cli_app, ["serve", f"x={runs['chat-a'].dir}", f"x={runs['chat-b'].dir}"])
    assert result.exit_code == 2 and "share the name" in result.output
    calls = []
    monkeypatch.setattr("tunesmith.serve.server.serve", lambda specs, models, **kw: calls.append((specs, models, kw)))
    monkeypatch.setattr("tunesmith.web.bind", lambda host, port: socket.socket())  # port 8000 may be in use here
    monkeypatch.setenv("TUNESMITH_API_KEY", "from-env")
    assert runner.invoke(cli_app, ["serve", f"a={runs['chat-a'].dir}", "--model", "smollm2-135m-instruct"]).exit_code == 0
    (specs, models, options), = calls
    assert specs == [("a", runs["chat-a"].dir)] and models == ["smollm2-135m-instruct"]
    assert options["host"] == "127.0.0.1" and options["port"] == 8000 and options["api_key"] == "from-env"
    assert options["dtype"] is None  # each model as its run loads it
    result = runner.invoke(cli_app, ["serve", str(runs["chat-a"].dir), "--dtype", "int8"])
    assert result.exit_code == 2 and "--dtype 'int8': use one of auto, float32, bfloat16, float16" in result.output


def test_dtype_resolves_before_loading_and_refuses_emulated_bf16(monkeypatch):
    from tunesmith.errors import TunesmithError

    monkeypatch.setattr("tunesmith.hardware.native_bf16", lambda use_cpu=False: (False, "CPU X has AVX2 only"))
    with pytest.raises(TunesmithError, match="--dtype bfloat16: CPU X has AVX2 only; use --dtype auto"):
        serve_dtype("bfloat16")
    assert serve_dtype("auto") == "float32" and serve_dtype(None) is None and serve_dtype("float16") == "float16"
    monkeypatch.setattr("tunesmith.hardware.native_bf16", lambda use_cpu=False: (True, "native"))
    assert serve_dtype("auto") == serve_dtype("bfloat16") == "bfloat16"


def test_a_batching_server_on_a_native_bf16_cpu_names_dtype_auto(monkeypatch):
    from tunesmith.cli.serve import _bf16_hint

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("tunesmith.hardware.native_bf16", lambda use_cpu=False: (True, "native"))
    assert "--dtype auto measured ~1.4x" in _bf16_hint(None, 8) and "differ from the same request alone" in _bf16_hint(None, 8)
    assert _bf16_hint("float32", 8) is None and _bf16_hint(None, 1) is None  # chosen already; nothing to batch
    monkeypatch.setattr("tunesmith.hardware.native_bf16", lambda use_cpu=False: (False, "AVX2 only"))
    assert _bf16_hint(None, 8) is None


def test_dtype_casts_every_model_once_and_it_still_answers(runs):
    import torch

    specs = parse_specs([str(runs["chat-a"].dir), f"bee={runs['chat-b'].dir}", str(runs["sentiment"].dir)])
    from tunesmith.hardware import native_bf16

    dtype = "bfloat16" if native_bf16()[0] else "float16"  # never bf16 where this CPU would emulate it
    registry = load_registry(specs, dtype=dtype)
    try:
        assert {p.dtype for s in registry.models.values() for p in s.model.parameters()} == {getattr(torch, dtype)}
        with background(create_app(registry)) as (url, _):
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
            for name in ("chat-a", "bee"):
                answer = chat(client, name, PROMPTS[0], max_tokens=4, logprobs=True)
                assert answer.choices[0].message.content and answer.usage.completion_tokens >= 1
                assert all(math.isfinite(e.logprob) for e in answer.choices[0].logprobs.content)
            labels = httpx.post(url + "/v1/classify", json={"model": "sentiment", "input": TEXTS}, timeout=60).json()
            assert len(labels["data"]) == 2
    finally:
        registry.close()


def test_importing_the_cli_imports_no_web_framework():
    code = "import sys, tunesmith.cli, tunesmith.serve.registry; print([m for m in ('fastapi', 'uvicorn') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    # `python -m tunesmith.cli` has the commands cli_more.py adds too (the benchmark starts servers that way)
    assert subprocess.run([sys.executable, "-m", "tunesmith.cli", "serve", "--help"], capture_output=True).returncode == 0
