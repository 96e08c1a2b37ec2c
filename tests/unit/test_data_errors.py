"""Wrong or damaged data: each case gets a clear decision (rows dropped and counted) or one clear error (exit 2,
naming the file and line/row or the config key, no traceback), through `tunesmith validate` and `data preview`."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app

runner = CliRunner()


def rows(n: int = 16, **changes) -> list[dict]:
    """n reviews labelled neg/pos in turn; changes[i] replaces fields of row i (0-based), None deletes a key."""
    out = [{"text": f"review number {i} was {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"} for i in range(n)]
    for key, value in changes.items():
        out[int(key.removeprefix("r"))] = value
    return out


def write_jsonl(path, records: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def config(tmp_path, make_config, model, data_path, objective="classify", **data) -> str:
    cfg = make_config(model, str(data_path), objective, data={"eval_size": 4, **data})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def outputs(cfg: str, code: int) -> list[str]:
    """validate and data preview: both exit with `code`, without a traceback; their outputs."""
    texts = []
    for args in (["validate", cfg], ["data", "preview", cfg, "-n", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        texts.append(result.output)
    return texts


def fails(cfg: str, *needles: str) -> None:
    for out in outputs(cfg, 2):
        for needle in needles:
            assert needle in out, out


def drops(cfg: str, *needles: str) -> None:
    for out in outputs(cfg, 0):
        for needle in needles:
            assert needle in out, out


# ---------------------------------------------------------------------------------------------
# Decisions: rows the objective cannot use are dropped and counted


def test_null_or_missing_text_is_dropped_and_counted(tiny_bert, tmp_path, make_config):
    data = write_jsonl(tmp_path / "d.jsonl", rows(r3={"text": None, "label": "neg"}, r6={"label": "neg"}))
    drops(config(tmp_path, make_config, tiny_bert, data), "dropped 2 of 16 rows of", "null or missing text in column 'text': 2 (rows 4, 7)")


def test_null_label_is_dropped_not_a_class(tiny_bert, tmp_path, make_config):
    data = write_jsonl(tmp_path / "d.jsonl", rows(r0={"text": "no label"}, r9={"text": "null label", "label": None}))
    for out in outputs(config(tmp_path, make_config, tiny_bert, data), 0):
        assert "dropped 2 of 16 rows" in out and "null or missing label in column 'label': 2 (rows 1, 10)" in out
    result = runner.invoke(app, ["validate", config(tmp_path, make_config, tiny_bert, data)])
    assert "labels: ['neg', 'pos']" in result.output


def test_csv_empty_cells_are_dropped_and_integer_labels_stay_integers(tiny_bert, tmp_path, make_config):
    lines = ["text,label"] + [f"review {i},{i % 2}" for i in range(16)]
    lines[3], lines[5] = ",1", "NA,"  # row 3: empty text; row 5: empty label ('NA' is text, not null)
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    cfg = config(tmp_path, make_config, tiny_bert, tmp_path / "d.csv")
    drops(cfg, "dropped 2 of 16 rows", "null or missing text in column 'text': 1 (row 3)", "null or missing label in column 'label': 1 (row 5)")
    assert "labels: ['0', '1']" in runner.invoke(app, ["validate", cfg]).output


def test_label_minus_one_is_unlabeled_and_dropped(tiny_bert, tmp_path, make_config):
    records = [{"text": f"t {i}", "label": -1 if i in (2, 11) else i % 2} for i in range(16)]
    cfg = config(tmp_path, make_config, tiny_bert, write_jsonl(tmp_path / "d.jsonl", records))
    drops(cfg, "dropped 2 of 16 rows", "label -1 (unlabeled) in column 'label': 2 (rows 3, 12)")
    assert "labels: ['0', '1']" in runner.invoke(app, ["validate", cfg]).output


def test_integer_labels_must_be_class_ids(tiny_bert, tmp_path, make_config):
    records = [{"text": f"t {i}", "label": 7 if i == 4 else i % 2} for i in range(16)]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    fails(config(tmp_path, make_config, tiny_bert, data), "d.jsonl", "column 'label'", "7 (1 row, first row 5)", "data.labels")
    validated, _ = outputs(config(tmp_path, make_config, tiny_bert, data, labels=["0", "1", "7"]), 0)
    assert "labels: ['0', '1', '7']" in validated


def test_a_split_with_no_usable_rows_is_an_error(tiny_bert, tmp_path, make_config):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": None, "label": "pos"} for _ in range(16)])
    fails(config(tmp_path, make_config, tiny_bert, data), "d.jsonl", "none of its 16 rows is usable", "column 'text'")


def test_classlabel_minus_one_is_dropped(tmp_path):
    import datasets

    from tunesmith.config import load_config
    from tunesmith.data.sources import load_splits
    from tunesmith.data.templates import reads

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(12)], "label": [-1, 1] + [i % 2 for i in range(10)]}, features=features)
    ds.save_to_disk(str(tmp_path / "saved"))
    cfg = load_config({"model": {"name": "x"}, "method": {"name": "lora"}, "objective": {"name": "classify"},
                       "data": {"source": str(tmp_path / "saved"), "eval_size": 2}})
    notes: list[str] = []
    dd = load_splits(cfg.data, 0, reads(cfg), notes)
    assert len(dd["train"]) + len(dd["eval"]) == 11 and -1 not in list(dd["train"]["label"]) + list(dd["eval"]["label"])
    assert notes == [f"dropped 1 of 12 rows of {tmp_path / 'saved'}: label -1 (unlabeled) in column 'label': 1 (row 1)"]


def test_sft_drops_rows_without_a_prompt_or_response(qa_file, tmp_path):
    from tunesmith.config import load_config
    from tunesmith.data.sources import load_splits
    from tunesmith.data.templates import reads

    records = [{"question": f"q{i}?", "answer": None if i == 5 else f"a{i}", "category": None} for i in range(12)]
    records[8].pop("question")
    data = write_jsonl(tmp_path / "qa.jsonl", records)
    cfg = load_config({"model": {"name": "x"}, "method": {"name": "lora"}, "objective": {"name": "sft"},
                       "data": {"source": str(data), "columns": {"prompt": "question", "response": "answer"}, "eval_size": 2}})
    notes: list[str] = []
    dd = load_splits(cfg.data, 0, reads(cfg), notes)
    assert len(dd["train"]) + len(dd["eval"]) == 10  # the null category is not read, so it drops nothing
    assert "null or missing text in column 'question': 1 (row 9)" in notes[0] and "column 'answer': 1 (row 6)" in notes[0]


# ---------------------------------------------------------------------------------------------
# Errors: exit 2, naming the file and line/row or the key, and the fix


@pytest.mark.parametrize("first,second", [(1, "pos"), ("0", 0)])
def test_mixed_label_types_name_the_column_and_lines(tiny_bert, tmp_path, make_config, first, second):
    data = write_jsonl(tmp_path / "d.jsonl", rows(r0={"text": "a", "label": first}, r1={"text": "b", "label": second}))
    fails(config(tmp_path, make_config, tiny_bert, data), "d.jsonl column 'label': mixed types", "line 1", "line 2")


def test_text_that_is_a_list_names_the_column_and_row(tiny_bert, tmp_path, make_config):
    records = [{"text": ["part one", "part two"], "label": r["label"]} for r in rows()]
    fails(config(tmp_path, make_config, tiny_bert, write_jsonl(tmp_path / "d.jsonl", records)),
          "column 'text' holds lists where text is expected (row 1", "data.columns.text")
    mixed = rows(r3={"text": {"title": "x"}, "label": "pos"})
    fails(config(tmp_path, make_config, tiny_bert, write_jsonl(tmp_path / "m.jsonl", mixed)),
          "column 'text': mixed types", "an object on line 4")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_latin1_file_says_where_and_how_to_reencode(tiny_bert, tmp_path, make_config, suffix):
    records = rows(r5={"text": "un film très réussi", "label": "pos"})
    if suffix == ".jsonl":
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        body = "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in records)
    path = tmp_path / f"d{suffix}"
    path.write_bytes(body.encode("latin-1"))
    line = 6 if suffix == ".jsonl" else 7
    fails(config(tmp_path, make_config, tiny_bert, path), f"d{suffix} line {line}", "not valid utf-8", "iconv -f latin1 -t utf-8",
          "data.encoding: latin-1")
    drops(config(tmp_path, make_config, tiny_bert, path, encoding="latin-1"), "ok")


def test_unknown_encoding_names_the_key(tiny_bert, tmp_path, make_config):
    data = write_jsonl(tmp_path / "d.jsonl", rows())
    fails(config(tmp_path, make_config, tiny_bert, data, encoding="latin-42"), "data.encoding", "latin-1")


def test_eval_size_zero_names_the_key_and_range(tiny_bert, tmp_path, make_config):
    data = write_jsonl(tmp_path / "d.jsonl", rows())
    fails(config(tmp_path, make_config, tiny_bert, data, eval_size=0), "data.eval_size: found 0", "between 0 and 1", "at least 1")


def test_json_object_file_is_not_blamed_on_eval_size(tiny_bert, tmp_path, make_config):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"version": 2, "data": rows()}, indent=2))
    for out in outputs(config(tmp_path, make_config, tiny_bert, path), 2):
        assert "d.json: holds one JSON object" in out and "JSON array of records" in out and "jq '.data'" in out
        assert "eval_size" not in out
    path.write_text(json.dumps(rows()))  # an array of records reads
    drops(config(tmp_path, make_config, tiny_bert, path), "ok")


def test_tab_separated_csv_suggests_tsv(tiny_bert, tmp_path, make_config):
    path = tmp_path / "d.csv"
    path.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows()))
    fails(config(tmp_path, make_config, tiny_bert, path), "d.csv: looks tab-separated", "rename it to d.tsv")


def test_eval_on_data_with_other_labels_names_them(tiny_bert, sentiment_file, tmp_path, make_config):
    from tunesmith import api

    run = api.train(make_config(tiny_bert, sentiment_file, "classify", train={"max_steps": 1}), out=tmp_path / "run")
    other = write_jsonl(tmp_path / "other.jsonl", rows())
    result = runner.invoke(app, ["eval", str(run.dir), "--data", str(other)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in ("other.jsonl", "['neg', 'pos']", str(run.task["labels"])):
        assert needle in result.output


# ---------------------------------------------------------------------------------------------
# Progress on long data work


def test_long_tokenization_shows_progress_and_small_stays_quiet(tiny_bert, tmp_path, make_config, monkeypatch):
    import datasets

    from tunesmith.data import tokenize

    cfg = config(tmp_path, make_config, tiny_bert, write_jsonl(tmp_path / "d.jsonl", rows()))
    assert "tokenize 12 examples" not in runner.invoke(app, ["validate", cfg]).output
    monkeypatch.setattr(tokenize, "PROGRESS_ROWS", 5)
    result = runner.invoke(app, ["validate", cfg])
    assert result.exit_code == 0 and "tokenize 12 examples" in result.output
    assert not datasets.is_progress_bar_enabled()  # as the CLI left it
