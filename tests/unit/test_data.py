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
                                "prompt_column": "question", "response_column": "answer"},
                       "method": {"name": "lora"}, "objective": {"name": "sft"}})
    a, b = load_splits(cfg.data, 1), load_splits(cfg.data, 1)
    assert a["eval"]["question"] == b["eval"]["question"]
    assert not set(a["train"]["question"]) & set(a["eval"]["question"])


def test_classify_data_errors(tiny_bert, sentiment_file, tmp_path, make_config):
    from tunesmith import api

    cfg = make_config(tiny_bert, sentiment_file, "classify", data={"text_column": "review"})
    with pytest.raises(TunesmithError, match=r"data.text_column: column 'review' is not in the train data"):
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
