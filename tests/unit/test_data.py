"""Data: sources, splits, templates, and which tokens carry loss."""

import pytest

from tunesmith.config import load_config
from tunesmith.data.sources import load_source, load_splits
from tunesmith.data.tokenize import IGNORE, tokenize_sft
from tunesmith.errors import TunesmithError


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{not json}\n')
    with pytest.raises(TunesmithError, match=r"line 2: not valid JSON"):
        load_source(str(path))


def test_missing_file_is_named():
    with pytest.raises(TunesmithError, match=r"data.source: file './nope.csv' does not exist"):
        load_source("./nope.csv")


def test_csv_and_saved_folder(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,y\n")
    ds = load_source(str(tmp_path / "d.csv"))["train"]
    ds.save_to_disk(str(tmp_path / "saved"))
    assert load_source(str(tmp_path / "saved"))["train"].to_list() == ds.to_list()


def test_held_out_split_is_seeded_and_groups_stay_together():
    cfg = load_config({"model": {"name": "smollm2-135m-instruct"},
                       "data": {"source": "chatterbot-qa", "group_column": "question", "eval_size": 0.2,
                                "columns": {"prompt": "question", "response": "answer"}},
                       "method": {"name": "lora"}, "objective": {"name": "sft"}})
    a, b = load_splits(cfg.data, 1), load_splits(cfg.data, 1)
    assert a["eval"]["question"] == b["eval"]["question"]
    assert not set(a["train"]["question"]) & set(a["eval"]["question"])


def test_chatterbot_catalog_drops_the_corpus_repeats():
    """The YAML corpus repeats pairs (one tech-support pair 121 times); they would dominate training and eval."""
    from tunesmith.assets import load_catalog_dataset

    ds = load_catalog_dataset("chatterbot-qa")
    pairs = list(zip(ds["question"], ds["answer"]))
    assert len(pairs) == len(set(pairs)) == 1243


def test_classify_data_errors(tiny_bert, sentiment_file, tmp_path, make_config):
    from tunesmith import api

    cfg = make_config(tiny_bert, sentiment_file, "classify", data={"columns": {"text": "review"}})
    with pytest.raises(TunesmithError, match=r"data.columns.text: column 'review' is not in the train data"):
        api.validate(cfg)
    one_class = tmp_path / "one.jsonl"
    one_class.write_text("".join(f'{{"text": "t{i}", "label": "pos"}}\n' for i in range(30)))
    with pytest.raises(TunesmithError, match="single class"):
        api.validate(make_config(tiny_bert, str(one_class), "classify"))


def test_sft_loss_covers_only_response_and_eos(smollm_tokenizer, qa_file, tiny_llama, make_config):
    import datasets

    for fmt in ("text", "chat"):
        cfg = load_config(make_config(tiny_llama, qa_file, "sft", data={"format": fmt, "max_length": 256}))
        row = {"question": "What is AI?", "answer": "A field of study."}
        feats = tokenize_sft(datasets.Dataset.from_list([row]), smollm_tokenizer, cfg.data)[0]
        trained = [t for t, lab in zip(feats["input_ids"], feats["labels"]) if lab != IGNORE]
        text = smollm_tokenizer.decode(trained)
        assert "A field of study." in text and "What is AI?" not in text
        assert smollm_tokenizer.eos_token_id in trained


def test_template_split_for_sft(smollm_tokenizer, qa_file, tiny_llama, make_config):
    import datasets

    template = "Please answer the following question:\nQ: {question}\nA: {answer}"
    cfg = load_config(make_config(tiny_llama, qa_file, "sft", data={"template": template, "max_length": 256}))
    feats = tokenize_sft(datasets.Dataset.from_list([{"question": "Why?", "answer": "Because."}]), smollm_tokenizer, cfg.data)[0]
    prompt = [t for t, lab in zip(feats["input_ids"], feats["labels"]) if lab == IGNORE]
    assert smollm_tokenizer.decode(prompt).endswith("A: ")


def test_mix_adds_renamed_sources_to_training_only(qa_file, tmp_path):
    import json

    from tunesmith.config import load_config
    from tunesmith.data.sources import load_splits

    other = tmp_path / "general.jsonl"
    other.write_text("".join(json.dumps({"q": f"general {i}?", "a": f"answer {i}", "extra": i}) + "\n" for i in range(100)))
    cfg = load_config({"model": {"name": "x"}, "method": {"name": "lora"}, "objective": {"name": "sft"},
                       "data": {"source": qa_file, "columns": {"prompt": "question", "response": "answer"}, "eval_size": 8,
                                "mix": [{"source": str(other), "ratio": 0.5, "columns": {"q": "question", "a": "answer"}}]}})
    plain = load_splits(load_config(cfg, {"data.mix": []}).data, 42)
    dd = load_splits(cfg.data, 42)
    n = len(plain["train"])
    assert len(dd["train"]) == n + round(0.5 * n)
    assert sum(q.startswith("general") for q in dd["train"]["question"]) == round(0.5 * n)
    assert dd["eval"]["question"] == plain["eval"]["question"]  # eval stays the task's
    assert dd["train"].column_names == plain["train"].column_names
    bad = load_config(cfg, {"data.mix": [{"source": str(other), "ratio": 1.0}]})
    with pytest.raises(TunesmithError, match=r"data.mix\[0\]: .* lacks the task's columns"):
        load_splits(bad.data, 42)


def test_fingerprint_is_of_the_split_not_the_source(sentiment_file):
    from tunesmith.config import load_config
    from tunesmith.data.sources import fingerprint

    cfg = load_config({"model": {"name": "x"}, "method": {"name": "lora"}, "objective": {"name": "classify"},
                       "data": {"source": sentiment_file, "eval_size": 16}})
    dd = load_splits(cfg.data, 42)
    assert fingerprint(dd["train"]) != fingerprint(dd["eval"])
    assert fingerprint(dd["eval"]) == fingerprint(load_splits(cfg.data, 42)["eval"])
