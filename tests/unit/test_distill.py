"""Knowledge distillation (objectives distill and distill_lm) and model.keep_layers / model.num_layers: the loss is
0 when the student is its teacher, a cut student starts from exactly the kept blocks and reloads with plain
transformers, the teacher's outputs are cached and re-used, distill runs train (classify with unlabelled rows,
causal_lm, sft), and the errors name the key. Tiny random models (hidden 32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith import api
from tunesmith.cli import app
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.objectives.distill import loss as distill_loss
from tunesmith.objectives.distill import teacher as teachers

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.fixture(scope="module")
def bert4(tmp_path_factory, tiny_bert) -> str:
    """A random 4-block BERT (hidden 32) with the minilm-l6 tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("bert4")
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    torch.manual_seed(1)
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def partly_labelled(tmp_path_factory, sentiment_file) -> str:
    """The 96 sentiment rows as a saved dataset: 80 training rows, every third without a label (unlabelled text),
    and 16 labelled validation rows."""
    import datasets

    rows = [json.loads(line) for line in Path(sentiment_file).read_text().splitlines()]
    train = [{**row, "label": None if i % 3 == 0 else row["label"]} for i, row in enumerate(rows[:80])]
    path = tmp_path_factory.mktemp("data") / "partly"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(train),
                          "validation": datasets.Dataset.from_list(rows[80:])}).save_to_disk(str(path))
    return str(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh tunesmith cache folder, and a count of the teacher models loaded."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    calls = {"load": 0}
    real = teachers.load

    def counting(*args, **kwargs):
        calls["load"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(teachers, "load", counting)
    return calls


def distill_config(make_config, model, source, teacher, objective="distill", **objective_options):
    cfg = make_config(model, source, "classify" if objective == "distill" else "causal_lm", method={"name": "full"})
    cfg["objective"] = {"name": objective, "teacher": teacher, **objective_options}
    cfg["train"].update(max_steps=3, learning_rate=1e-3)
    return cfg


# ---------------------------------------------------------------------------------------------
# The loss


class Options:
    def __init__(self, **kw):
        self.alpha, self.temperature, self.kl, self.beta = kw.get("alpha", 1.0), kw.get("temperature", 2.0), kw.get("kl", "forward"), kw.get("beta", 0.5)


def test_the_loss_is_zero_when_the_student_is_the_teacher():
    import torch

    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 2, -100, 1, -100, 0])
    for kl in ("forward", "reverse"):
        assert distill_loss.classify_loss(logits, logits.clone(), labels, Options(kl=kl)) == 0
    assert abs(float(distill_loss.classify_loss(logits, logits.clone(), labels, Options(kl="jsd")))) < 1e-6
    assert distill_loss.classify_loss(logits, torch.randn(6, 3), labels, Options()) > 0
    # alpha < 1: the labelled rows add their cross-entropy, the unlabelled ones do not
    ce = torch.nn.functional.cross_entropy(logits, labels.clamp(min=0), reduction="none") * (labels != -100)
    assert torch.allclose(distill_loss.classify_loss(logits, logits.clone(), labels, Options(alpha=0.25)), 0.75 * ce.mean())

    # causal LM: the teacher's cached top-k view of the same logits
    lm_logits, lm_labels = torch.randn(2, 5, 40), torch.tensor([[-100, -100, 3, 4, 5], [-100, 7, 8, -100, -100]])
    chosen = lm_logits[:, :-1][lm_labels[:, 1:] != -100]
    top = chosen.topk(8, dim=-1)
    teacher = {"teacher_values": top.values, "teacher_indices": top.indices.int(), "teacher_lse": chosen.logsumexp(-1)}
    for kl in ("forward", "reverse"):
        assert distill_loss.lm_loss(lm_logits, lm_labels, teacher, Options(kl=kl, temperature=1.0)) == 0
    assert distill_loss.lm_loss(torch.randn(2, 5, 40), lm_labels, teacher, Options()) > 0


# ---------------------------------------------------------------------------------------------
# model.keep_layers / model.num_layers


def test_a_cut_student_starts_from_the_kept_blocks_and_reloads_with_plain_transformers(bert4, tiny_llama, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from tunesmith.modeling import load_model

    def model_cfg(name, **cut):
        return load_config({"model": {"name": name, **cut}, "data": {"source": "x.jsonl"}, "method": {"name": "full"},
                            "objective": {"name": "classify"}}).model

    whole = load_model(model_cfg(bert4), "classify", num_labels=2)
    cut = load_model(model_cfg(bert4, keep_layers=[0, 2, 3]), "classify", num_labels=2)
    assert cut.config.num_hidden_layers == 3 and len(cut.bert.encoder.layer) == 3
    for new, old in enumerate([0, 2, 3]):
        ours, theirs = cut.bert.encoder.layer[new].state_dict(), whole.bert.encoder.layer[old].state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert torch.equal(cut.bert.embeddings.word_embeddings.weight, whole.bert.embeddings.word_embeddings.weight)
    cut.save_pretrained(tmp_path / "bert")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "bert").eval()
    ids = torch.tensor([[101, 2023, 2003, 102]])
    assert torch.allclose(again(input_ids=ids).logits, cut.eval()(input_ids=ids).logits)
    evenly = load_model(model_cfg(bert4, num_layers=2), "classify", num_labels=2)
    assert torch.equal(evenly.bert.encoder.layer[1].output.dense.weight, whole.bert.encoder.layer[2].output.dense.weight)

    llama = load_model(model_cfg(tiny_llama, keep_layers=[1]), "causal_lm")  # blocks renumbered for the KV cache
    assert llama.config.num_hidden_layers == 1 and llama.model.layers[0].self_attn.layer_idx == 0
    llama.save_pretrained(tmp_path / "llama")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "llama")
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    out = reloaded.generate(**tok("Hello there", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 2


def test_keep_layers_errors_name_the_key(bert4, make_config, sentiment_file, tmp_path):
    from tunesmith.modeling import load_model

    def cut(**options):
        cfg = make_config(bert4, sentiment_file, "classify", method={"name": "full"})
        cfg["model"].update(options)
        return cfg

    with pytest.raises(TunesmithError, match=r"model.keep_layers: \[7\] out of range: .* has 4 transformer blocks"):
        load_model(load_config(cut(keep_layers=[0, 7])).model, "classify")
    with pytest.raises(TunesmithError, match="model.num_layers: 9 is more than the 4"):
        api.train(cut(num_layers=9), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(TunesmithError, match="model.keep_layers"):
        load_config(cut(keep_layers=[2, 0]))
    with pytest.raises(TunesmithError, match="set one of them"):
        load_config(cut(keep_layers=[0], num_layers=1))


# ---------------------------------------------------------------------------------------------
# Distillation runs


def test_classify_distillation_trains_on_unlabelled_rows_and_caches_the_teacher(
        bert4, partly_labelled, make_config, tmp_path, cache):
    teacher_cfg = make_config(bert4, partly_labelled, "classify", method={"name": "full"})  # drops the unlabelled rows
    teacher = api.train(teacher_cfg, out=tmp_path / "teacher")
    cfg = distill_config(make_config, bert4, partly_labelled, str(teacher.dir), alpha=0.5)
    cfg["model"]["keep_layers"] = [0, 2]
    cfg["train"].update(eval_strategy="epoch", load_best_model_at_end=True)  # as the shipped config
    run = api.train(cfg, out=tmp_path / "student")
    assert cache["load"] == 2  # train rows and eval rows, each once; the tuned model's eval re-used the cache
    results = run.results
    assert {"accuracy", "f1", "agreement", "teacher_accuracy"} <= set(results["tuned"])
    assert results["tuned"]["teacher_accuracy"] == teacher.results["tuned"]["accuracy"]
    assert results["directions"]["agreement"] == "max" and results["directions"]["teacher_accuracy"] == "neither"
    assert run.manifest["task"]["labels"] == teacher.task["labels"] and run.manifest["train_steps"] == 3
    assert (run.dir / "model" / "config.json").is_file() and "eval_accuracy" in (run.dir / "metrics.jsonl").read_text()
    assert len(api.load_run(run.dir).predict(["a fine film", "dull"])) == 2
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(run.dir / "model").config.num_hidden_layers == 2

    again = api.train(cfg, out=tmp_path / "student-2")  # same teacher, same data: no teacher model loaded at all
    assert cache["load"] == 2 and again.results["tuned"]["teacher_accuracy"] == results["tuned"]["teacher_accuracy"]
    assert len(list((tmp_path / "cache" / "distill").glob("*.pt"))) == 2


def test_exclude_teacher_rows_drops_what_the_teacher_trained_on(bert4, sentiment_file, make_config, tmp_path, cache):
    teacher_cfg = make_config(bert4, sentiment_file, "classify", method={"name": "full"}, data={"train_size": 40})
    teacher = api.train({**teacher_cfg, "train": {"max_steps": 1, "eval_strategy": "no"}}, out=tmp_path / "teacher")
    cfg = distill_config(make_config, bert4, sentiment_file, str(teacher.dir), exclude_teacher_rows=True)
    prep = api.Prepared(load_config(cfg))
    seen = set(api.Prepared(teacher.config).data["train"]["text"])
    assert prep.task["excluded_teacher_rows"] == teacher.manifest["train_examples"] == len(seen) == 40
    assert len(prep.data["train"]) == 80 - 40 and not seen & set(prep.data["train"]["text"])


def test_labels_only_on_teacher_rows_keeps_the_teachers_labels_alone(bert4, sentiment_file, make_config, tmp_path, cache):
    """Self-training: the student keeps the labels of the rows its teacher learned from, every other row learns from
    the teacher alone (its label dropped, not its text)."""
    teacher_cfg = make_config(bert4, sentiment_file, "classify", method={"name": "full"}, data={"train_size": 40})
    teacher = api.train({**teacher_cfg, "train": {"max_steps": 1, "eval_strategy": "no"}}, out=tmp_path / "teacher")
    cfg = distill_config(make_config, bert4, sentiment_file, str(teacher.dir), labels_only_on_teacher_rows=True)
    prep = api.Prepared(load_config(cfg))
    seen = set(api.Prepared(teacher.config).data["train"]["text"])
    train = prep.data["train"]
    assert len(train) == 80 and prep.task["labelled_rows"] == 40
    assert all((label is not None and label != -1) == (text in seen) for text, label in zip(train["text"], train["label"]))
    labels = [row["labels"] for row in prep.features["train"]]
    assert sum(label != -100 for label in labels) == 40


def test_causal_lm_and_sft_distillation_train(tiny_llama, text_file, qa_file, make_config, tmp_path, cache):
    cfg = distill_config(make_config, tiny_llama, text_file, tiny_llama, "distill_lm", top_k=8)
    cfg["model"]["keep_layers"] = [1]
    run = api.train(cfg, out=tmp_path / "lm")
    tuned = run.results["tuned"]
    assert run.manifest["task"]["task"] == "causal_lm" and {"eval_loss", "perplexity", "agreement", "teacher_eval_loss"} <= set(tuned)
    assert run.results["base"]["teacher_eval_loss"] == tuned["teacher_eval_loss"] and 0 <= tuned["agreement"] <= 1
    assert run.results["directions"]["teacher_perplexity"] == "neither"
    assert run.generate("To be", max_new_tokens=3)

    sft = make_config(tiny_llama, qa_file, "sft", method={"name": "lora", "r": 4, "lora_alpha": 8})
    sft["objective"] = {"name": "distill_lm", "task": "sft", "teacher": tiny_llama, "kl": "jsd", "top_k": 8}
    run = api.train(sft, out=tmp_path / "sft")
    assert run.manifest["task"]["task"] == "sft" and run.results["tuned"]["eval_tokens"] > 0


# ---------------------------------------------------------------------------------------------
# Errors and the shipped configs


def test_teacher_errors_name_the_key(tiny_bert, tiny_llama, sentiment_file, make_config, tmp_path):
    with pytest.raises(TunesmithError, match="objective.teacher: the teacher .* use different tokenizers"):
        api.validate(distill_config(make_config, tiny_bert, sentiment_file, tiny_llama))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a run")
    with pytest.raises(TunesmithError, match="objective.teacher: .* is neither a tunesmith run folder"):
        api.validate(distill_config(make_config, tiny_bert, sentiment_file, str(tmp_path / "notes")))
    with pytest.raises(TunesmithError, match="objective.teacher: name the teacher"):
        api.validate(distill_config(make_config, tiny_bert, sentiment_file, None))
    with pytest.raises(TunesmithError, match="objective.teacher: .* not a folder here"):
        api.train(distill_config(make_config, tiny_bert, sentiment_file, str(tmp_path / "runs" / "teacher")),
                  out=tmp_path / "student")


@pytest.mark.parametrize("name", ["distill-teacher-sentiment", "distill-sentiment", "distill-sentiment-labels-only"])
def test_shipped_configs_validate(name):
    result = CliRunner().invoke(app, ["validate", str(CONFIGS / f"{name}.yaml")])
    assert result.exit_code == 0, result.output
