"""logprobs / top_logprobs on chat and completions, echo with max_tokens 0 (a prompt's own token logprobs), checked
against a forward pass of the model; and lm-eval's local-completions scoring of a multiple-choice file through the
server, which gives `tunesmith bench`'s accuracy. A plain tiny Llama served with --model: no run is trained."""

import json

import httpx
import pytest
import torch
from typer.testing import CliRunner

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from conftest import write_jsonl  # noqa: E402
from tunesmith.cli import app as cli_app  # noqa: E402
from tunesmith.serve.app import create_app  # noqa: E402
from tunesmith.web import background  # noqa: E402


@pytest.fixture(scope="module")
def served(plain_registry):
    return next(iter(plain_registry.models.values()))


@pytest.fixture(scope="module")
def server(plain_registry):
    with background(create_app(plain_registry)) as (url, _):
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=60)


def forward_logprobs(served, ids: list[int]) -> torch.Tensor:
    """log p(next token | ids[:i+1]) for every position i: one forward pass over the whole sequence."""
    with torch.no_grad():
        return served.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)


def test_chat_logprobs_match_a_forward_pass(client, served):
    got = client.chat.completions.create(model=served.name, messages=[{"role": "user", "content": "What is AI?"}],
                                         max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = got.choices[0].logprobs.content
    assert len(content) == got.usage.completion_tokens == 6 and all(len(t.top_logprobs) == 3 for t in content)
    prompt = served.chat_ids([{"role": "user", "content": "What is AI?"}])
    generated = served.complete([prompt], max_new_tokens=6)[0].token_ids  # today's path: the same greedy tokens
    logp = forward_logprobs(served, prompt + generated)
    for i, entry in enumerate(content):
        row = logp[len(prompt) - 1 + i]
        assert entry.logprob == pytest.approx(float(row[generated[i]]), abs=1e-4)
        best = row.topk(3)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(best.values.tolist(), abs=1e-4)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the most likely one
        assert entry.bytes == list(entry.token.encode())
    assert "".join(t.token for t in content) == got.choices[0].message.content
    plain = client.chat.completions.create(model=served.name, messages=[{"role": "user", "content": "What is AI?"}],
                                           max_tokens=6, temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == got.choices[0].message.content


def test_completion_logprobs_and_echo_match_a_forward_pass(client, served):
    ids = served.text_ids("The cat sat on the")
    got = client.completions.create(model=served.name, prompt=ids, max_tokens=4, temperature=0, logprobs=2, echo=True)
    lp = got.choices[0].logprobs
    assert got.choices[0].text.startswith(served.tokenizer.decode(ids)) and len(lp.tokens) == len(ids) + 4
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing precedes the first token
    whole = ids + served.complete([ids], max_new_tokens=4)[0].token_ids
    logp = forward_logprobs(served, whole)
    for i in range(1, len(whole)):
        assert lp.token_logprobs[i] == pytest.approx(float(logp[i - 1, whole[i]]), abs=1e-4)
        assert lp.tokens[i] in lp.top_logprobs[i] and 2 <= len(lp.top_logprobs[i]) <= 3  # the k best and the chosen
        assert max(lp.top_logprobs[i].values()) == pytest.approx(float(logp[i - 1].max()), abs=1e-4)
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])
    scored = client.completions.create(model=served.name, prompt=ids, max_tokens=0, echo=True, logprobs=0)
    assert scored.choices[0].logprobs.token_logprobs == pytest.approx(lp.token_logprobs[: len(ids)], abs=1e-6)
    assert scored.usage.completion_tokens == 0 and scored.choices[0].text == served.tokenizer.decode(ids)
    assert scored.choices[0].logprobs.top_logprobs[1] == {lp.tokens[1]: lp.token_logprobs[1]}  # k=0: the chosen only


def test_logprob_options_that_make_no_sense_are_400s(server, served):
    def post(route, body):
        return httpx.post(f"{server}/v1/{route}", json={"model": served.name, **body}, timeout=60)

    got = post("completions", {"prompt": "Hi", "max_tokens": 0})
    assert got.status_code == 400 and got.json()["error"]["param"] == "max_tokens" and "echo" in got.json()["error"]["message"]
    got = post("chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 2})
    assert got.status_code == 400 and got.json()["error"]["param"] == "top_logprobs"
    got = post("chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "logprobs": True, "top_logprobs": 21})
    assert got.status_code == 400 and got.json()["error"]["param"] == "top_logprobs"
    got = post("completions", {"prompt": "Hi", "logprobs": 1, "echo": True, "stream": True})
    assert got.status_code == 400 and got.json()["error"]["param"] == "stream"


def test_streamed_logprobs_come_with_their_text(client, served):
    whole = client.completions.create(model=served.name, prompt="Once upon", max_tokens=5, temperature=0, logprobs=1)
    chunks = [c.choices[0] for c in client.completions.create(model=served.name, prompt="Once upon", max_tokens=5,
                                                              temperature=0, logprobs=1, stream=True) if c.choices]
    assert "".join(c.text for c in chunks) == whole.choices[0].text
    streamed = [v for c in chunks if c.logprobs for v in c.logprobs.token_logprobs]
    assert streamed == pytest.approx(whole.choices[0].logprobs.token_logprobs, abs=1e-6)
    assert [o for c in chunks if c.logprobs for o in c.logprobs.text_offset] == whole.choices[0].logprobs.text_offset
    assert sum(bool(c.logprobs and c.logprobs.tokens) for c in chunks) > 1  # not all in the last chunk
    messages = [{"role": "user", "content": "Hi"}]
    alone = client.chat.completions.create(model=served.name, messages=messages, max_tokens=5, temperature=0,
                                           logprobs=True, top_logprobs=2)
    pieces = [c.choices[0] for c in client.chat.completions.create(model=served.name, messages=messages, max_tokens=5,
                                                                   temperature=0, logprobs=True, top_logprobs=2,
                                                                   stream=True) if c.choices]
    tokens = [t for c in pieces if c.logprobs for t in c.logprobs.content]
    assert [(t.token, t.logprob) for t in tokens] == [(t.token, pytest.approx(t.logprob, abs=1e-6))
                                                      for t in alone.choices[0].logprobs.content]
    echoed = client.completions.create(model=served.name, prompt="Once upon", max_tokens=5, temperature=0, echo=True,
                                       stream=True)
    assert "".join(c.choices[0].text for c in echoed if c.choices) == "Once upon" + whole.choices[0].text


# --- lm-eval's local-completions, reproduced -------------------------------------------------------------------------


MC = [{"question": "What colour is the sky?", "choices": ["blue", "green", "red"], "answer": 0},
      {"question": "2 + 2 =", "choices": ["3", "4", "5", "22"], "answer": 1},
      {"question": "Cats say", "choices": ["woof", "meow"], "answer": 1},
      {"question": "The capital of France is", "choices": ["Berlin", "Madrid", "Paris"], "answer": 2},
      {"question": "Ice is", "choices": ["cold", "hot"], "answer": 0},
      {"question": "A week has how many days?", "choices": ["five", "seven", "ten"], "answer": 1}]


def lm_eval_requests(tokenizer, rows):
    """What lm-eval's local-completions model sends for loglikelihood requests: each (context, continuation) encoded
    as context + continuation token ids, ctxlen the context's tokens; echo, logprobs=1, temperature 0."""
    items = []
    for row in rows:
        for choice in row["choices"]:
            context, continuation = row["context"], f" {choice}"
            whole = tokenizer(context + continuation)["input_ids"]
            items.append((whole, len(tokenizer(context)["input_ids"])))
    return items


@pytest.mark.parametrize("max_tokens", [0, 1])  # the legacy harness sends 0; lm-eval 0.4 sends 1 and drops the last
def test_lm_eval_style_scoring_equals_tunesmith_bench(server, served, tiny_llama, tmp_path, max_tokens):
    from tunesmith.eval import benchmarks as bm

    source = str(write_jsonl(tmp_path / "mc.jsonl", MC))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli_app, ["bench", tiny_llama, "--tasks", source, "--out", str(out)])
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    bench = next(v for v in bench.values() if isinstance(v, dict) and source in v)[source]
    rows = bm.load_task(source).rows
    items = lm_eval_requests(served.tokenizer, rows)
    scores = []
    for start in range(0, len(items), 4):  # lm-eval batches prompts in one request
        batch = items[start : start + 4]
        answer = httpx.post(server + "/v1/completions", timeout=60, json={
            "model": served.name, "prompt": [ids for ids, _ in batch], "echo": True, "max_tokens": max_tokens,
            "logprobs": 1, "temperature": 0, "seed": 1234}).json()
        for choice, (_, ctxlen) in zip(sorted(answer["choices"], key=lambda c: c["index"]), batch):
            kept = choice["logprobs"]["token_logprobs"][ctxlen:]
            scores.append(sum(kept[:-1] if max_tokens else kept))
    pairs = [(r["context"], f" {c}") for r in rows for c in r["choices"]]
    assert scores == pytest.approx(bm.loglikelihoods(served.model, served.tokenizer, pairs), abs=1e-4)
    correct, normed, at = 0, 0, 0
    for row in rows:  # lm-eval's acc and acc_norm (per character of the choice)
        mine = scores[at : at + len(row["choices"])]
        norm = [v / len(c) for v, c in zip(mine, row["choices"])]
        correct += max(range(len(mine)), key=mine.__getitem__) == row["gold"]
        normed += max(range(len(norm)), key=norm.__getitem__) == row["gold"]
        at += len(row["choices"])
    assert (correct / len(rows), normed / len(rows)) == (bench["acc"], bench["acc_norm"]) and bench["n"] == len(rows)
