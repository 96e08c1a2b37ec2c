"""Where examples come from: files, saved `datasets` folders, the offline catalog or the hub; then the split."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import datasets

from tunesmith.assets import hub_access, is_catalog_dataset, load_catalog_dataset, looks_like_path
from tunesmith.data.clean import short_value as _short
from tunesmith.data.clean import usable_splits
from tunesmith.errors import TunesmithError, raise_if

log = logging.getLogger("tunesmith")

FILE_KINDS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
BIG_FILE_BYTES = 20_000_000  # reading a bigger file is logged (it can take a while)


def _encoding_fix(path: Path) -> str:
    return (f"the file has another encoding, e.g. Latin-1: re-encode it (iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}) "
            "or set data.encoding: latin-1")


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text (a UTF-8 byte-order mark dropped); an undecodable byte is named by line and offset."""
    data = path.read_bytes()
    if len(data) > BIG_FILE_BYTES:
        log.info("Reading %s (%.0f MB)", path, len(data) / 1e6)
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise TunesmithError(f"{path} line {line} (byte {err.start}): not valid {encoding} text (byte 0x{data[err.start]:02x}); "
                             + _encoding_fix(path)) from None


_KINDS = {str: "a string", int: "a number", float: "a number", bool: "true/false", list: "a list", dict: "an object"}


def mixed_types(path: Path, records: list[dict], places: list[str]) -> list[str]:
    """A problem per column whose values have more than one JSON type (pyarrow cannot make one column of them)."""
    first: dict[str, dict[str, tuple[str, object]]] = {}
    for record, place in zip(records, places):
        for key, value in record.items():
            kind = _KINDS.get(type(value))
            seen = first.setdefault(key, {})
            if kind and kind not in seen:
                seen[kind] = (place, value)
    problems = []
    for column, seen in first.items():
        if len(seen) > 1:
            (a, (pa_, va)), (b, (pb, vb)) = list(seen.items())[:2]
            fix = ('write them all as strings ("1" instead of 1) or all as numbers' if {a, b} == {"a number", "a string"}
                   else _flag_fix(a, pa_, va, b, pb, vb) if {a, b} == {"true/false", "a string"}
                   else "give every row the same type (one string per row: join the parts of a list)")
            problems.append(f"{path} column {column!r}: mixed types, {a} on {pa_} ({_short(va)}) and {b} on {pb} ({_short(vb)}); "
                            f"a column holds one type: {fix}")
    return problems


def _flag_fix(a: str, pa_: str, va, b: str, pb: str, vb) -> str:
    """true/false mixed with words (a label such as KTO's, with "maybe" among true and false): one kind of label."""
    place, word = (pa_, va) if a == "a string" else (pb, vb)
    return (f"write every label as true/false (the {_short(word)} on {place} as true or false if it means one, and a "
            "row that is neither decided or removed), or every label as a word of one pair such as "
            '"desirable"/"undesirable"')


def from_records(path: Path, records: list[dict], places: list[str]) -> datasets.Dataset:
    import pyarrow as pa

    if not records:
        raise TunesmithError(f"{path}: no examples (the file is empty)")
    raise_if(mixed_types(path, records, places))
    columns = dict.fromkeys(key for record in records for key in record)  # every record's keys (from_list takes the first's)
    try:
        return datasets.Dataset.from_dict({c: [record.get(c) for record in records] for c in columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
        raise TunesmithError(f"{path}: the records do not make one table ({err}); give each column one type in every record") from None


def _jsonl_records(path: Path, text: str) -> tuple[list[dict], list[str]]:
    records, places = [], []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TunesmithError(f"{path} line {lineno}: not valid JSON ({err.msg}); each line must be one JSON object") from None
        if not isinstance(record, dict):
            raise TunesmithError(f"{path} line {lineno}: expected a JSON object like {{\"text\": ...}}, found {type(record).__name__}")
        records.append(record)
        places.append(f"line {lineno}")
    return records, places


def read_jsonl(path: Path, encoding: str = "utf-8") -> datasets.Dataset:
    """JSON Lines, with errors that name the line."""
    return from_records(path, *_jsonl_records(path, read_text(path, encoding)))


def read_json(path: Path, encoding: str = "utf-8") -> datasets.Dataset:
    """A JSON array of records, an object of equal-length columns, or JSON Lines under a .json name."""
    text = read_text(path, encoding)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg != "Extra data":  # "Extra data" after the first value: JSON Lines
            raise TunesmithError(f"{path} line {err.lineno} column {err.colno}: not valid JSON ({err.msg}); a .json file holds "
                                 "a JSON array of records, or JSON Lines (one object per line)") from None
        return from_records(path, *_jsonl_records(path, text))
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()) and len({len(v) for v in data.values()}) == 1:
        data = [dict(zip(data, values)) for values in zip(*data.values())]  # columns -> records
    if isinstance(data, dict):
        nested = next((k for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)), None)
        hint = f"; the records seem to sit under {nested!r}: extract them, e.g. jq '.{nested}' {path.name} > records.json" if nested else ""
        raise TunesmithError(f"{path}: holds one JSON object (keys {list(data)[:8]}), not records; expected a JSON array of records "
                             f"([{{\"text\": ..., \"label\": ...}}, ...]) or JSON Lines (one object per line){hint}")
    if not isinstance(data, list):
        raise TunesmithError(f"{path}: holds {_KINDS.get(type(data), type(data).__name__)}; expected a JSON array of records or JSON Lines")
    bad = next((i for i, r in enumerate(data) if not isinstance(r, dict)), None)
    if bad is not None:
        raise TunesmithError(f"{path} record {bad + 1}: expected a JSON object like {{\"text\": ...}}, found {_short(data[bad])}")
    return from_records(path, data, [f"record {i + 1}" for i in range(len(data))])


def read_csv(path: Path, kind: str, encoding: str = "utf-8") -> datasets.Dataset:
    """CSV/TSV; only empty cells are null ('NA' or 'null' stay text)."""
    import io

    import pandas as pd

    compressed = path.suffix.lower() in (".gz", ".bz2")
    try:
        df = pd.read_csv(path if compressed else io.StringIO(read_text(path, encoding)), sep="\t" if kind == "tsv" else ",",
                         encoding=encoding if compressed else None, keep_default_na=False, na_values=[""])
    except UnicodeDecodeError as err:
        raise TunesmithError(f"{path}: not valid {encoding} text ({err.reason} at byte {err.start} of a chunk); " + _encoding_fix(path)) from None
    except (ValueError, pd.errors.ParserError) as err:
        raise TunesmithError(f"{path}: could not read it as {kind} ({err})") from None
    if kind == "csv" and len(df.columns) == 1 and "\t" in str(df.columns[0]):
        raise TunesmithError(f"{path}: looks tab-separated: its header {str(df.columns[0])!r} has tabs and no commas, so it reads "
                             f"as one column; rename it to {path.name.split('.')[0]}.tsv")
    return datasets.Dataset.from_pandas(df, preserve_index=False)


def read_file(path: Path, encoding: str = "utf-8") -> datasets.Dataset:
    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None and path.name.endswith((".csv.bz2", ".csv.gz")):
        kind = "csv"
    if kind == "jsonl":
        return read_jsonl(path, encoding)
    if kind == "json":
        return read_json(path, encoding)
    if kind in ("csv", "tsv"):
        return read_csv(path, kind, encoding)
    if kind == "parquet":
        try:
            return datasets.Dataset.from_parquet(str(path))
        except Exception as err:  # pyarrow raises several kinds for a damaged file
            raise TunesmithError(f"{path}: could not read it as parquet ({type(err).__name__}: {err})") from None
    raise TunesmithError(
        f"data.source: {path} has an unknown file type {path.suffix!r}; expected one of {sorted(FILE_KINDS)} "
        "or a folder saved with Dataset.save_to_disk"
    )


def load_source(source: str, subset: str | None = None, encoding: str = "utf-8") -> datasets.DatasetDict:
    """Any source -> DatasetDict of the splits it has (a single file or catalog set becomes 'train').
    `encoding` applies to text files (JSON Lines, JSON, CSV, TSV)."""
    if is_catalog_dataset(source):
        return datasets.DatasetDict({"train": load_catalog_dataset(source)})
    path = Path(source).expanduser()
    if path.is_dir():
        if not any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
            raise TunesmithError(f"data.source: folder {path} is not a saved dataset (no dataset_dict.json or state.json); save it with Dataset.save_to_disk, or point at a file")
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    if path.is_file():
        return datasets.DatasetDict({"train": read_file(path, encoding)})
    if looks_like_path(source) or Path(source).suffix.lower() in FILE_KINDS:
        raise TunesmithError(f"data.source: file {source!r} does not exist; check the path (relative paths start from the current directory)")
    hub_access(source, repo_type="dataset", key="data.source")  # fails at once when the hub is out of reach
    try:
        loaded = datasets.load_dataset(source, subset)
    except Exception as err:  # the hub raises many kinds; all mean the same to the user
        raise TunesmithError(
            f"data.source: {source!r} is neither a file, a catalog dataset (see `tunesmith assets`) nor a loadable hub dataset ({type(err).__name__}: {err})"
        ) from None
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def held_out(ds: datasets.Dataset, size: float | int, seed: int, group_column: str | None):
    """Seeded split into (train, eval); rows that share group_column's value stay together."""
    if size >= len(ds):
        raise TunesmithError(f"data.eval_size: {size} leaves no training examples out of {len(ds)}; lower it")
    if not group_column:
        parts = ds.train_test_split(test_size=size, seed=seed)
        return parts["train"], parts["test"]
    import random

    column = ds[group_column][:]  # [:] reads the column at once, not row by row
    groups = sorted(set(column))
    random.Random(seed).shuffle(groups)
    want = size if isinstance(size, int) else int(round(size * len(ds)))
    chosen, count = set(), 0
    counts: dict = {}
    for value in column:
        counts[value] = counts.get(value, 0) + 1
    for g in groups:
        if count >= want:
            break
        chosen.add(g)
        count += counts[g]
    eval_idx = [i for i, v in enumerate(column) if v in chosen]
    train_idx = [i for i, v in enumerate(column) if v not in chosen]
    return ds.select(train_idx), ds.select(eval_idx)


def load_splits(data_cfg, seed: int, reads=None, notes: list[str] | None = None) -> datasets.DatasetDict:
    """The config's data -> DatasetDict with 'train' and 'eval'. Given `reads` (what the objective reads from a
    row, templates.reads), the rows it cannot use are dropped first and each drop is described in `notes`."""
    dd = load_source(data_cfg.source, data_cfg.subset, data_cfg.encoding)
    if data_cfg.train_split not in dd:
        raise TunesmithError(f"data.train_split: {data_cfg.train_split!r} is not a split of {data_cfg.source!r}; it has {list(dd)}")
    eval_name = data_cfg.eval_split
    if eval_name is not None and eval_name not in dd:
        raise TunesmithError(f"data.eval_split: {eval_name!r} is not a split of {data_cfg.source!r}; it has {list(dd)} (remove the key for a held-out split)")
    if eval_name is None:
        eval_name = next((s for s in ("validation", "test") if s in dd and s != data_cfg.train_split), None)
        if eval_name:
            log.info("Evaluating on the source's %r split", eval_name)
    if reads is not None:
        dd = usable_splits(dd, data_cfg, [data_cfg.train_split, eval_name], reads, notes if notes is not None else [])
    train = dd[data_cfg.train_split]
    if data_cfg.group_column and data_cfg.group_column not in train.column_names:
        raise TunesmithError(f"data.group_column: {data_cfg.group_column!r} is not a column of {data_cfg.source!r}; columns are {train.column_names}")
    if eval_name:
        evalset = dd[eval_name]
        if isinstance(data_cfg.eval_size, int) and data_cfg.eval_size < len(evalset):
            evalset = evalset.shuffle(seed=seed).select(range(data_cfg.eval_size))
    else:
        train, evalset = held_out(train, data_cfg.eval_size, seed, data_cfg.group_column)
    if data_cfg.train_size is not None and data_cfg.train_size < len(train):
        train = train.shuffle(seed=seed).select(range(data_cfg.train_size))
    if data_cfg.mix:
        train = mix_in(train, data_cfg.mix, seed, used_columns(data_cfg, train.column_names))
    return datasets.DatasetDict({"train": train, "eval": evalset})


def used_columns(data_cfg, columns: list[str]) -> list[str]:
    """The task's columns that the config reads: its objective's roles (data.columns), template fields, messages."""
    from tunesmith.data.templates import fields

    named = {*data_cfg.role_columns().values(), "messages", *(fields(data_cfg.template) if data_cfg.template else [])}
    return [c for c in columns if c in named]


def mix_in(train: datasets.Dataset, mix: list, seed: int, needed: list[str]) -> datasets.Dataset:
    """Add ratio x len(train) seeded examples of each mix source (columns renamed to the task's), then shuffle.
    A mix source must have the columns the task reads; the task's other columns are left empty for its rows."""
    parts, problems = [train], []
    for i, m in enumerate(mix):
        dd = load_source(m.source, m.subset)
        if m.split not in dd:
            problems.append(f"data.mix[{i}].split: {m.split!r} is not a split of {m.source!r}; it has {list(dd)}")
            continue
        ds = dd[m.split].rename_columns({k: v for k, v in m.columns.items() if k in dd[m.split].column_names})
        missing = [c for c in needed if c not in ds.column_names]
        if missing:
            problems.append(f"data.mix[{i}]: {m.source!r} lacks the task's columns {missing} (it has {ds.column_names}); "
                            f"map them with data.mix[{i}].columns, e.g. {{{ds.column_names[0]}: {missing[0]}}}")
            continue
        want = int(round(m.ratio * len(train)))
        if want > len(ds):
            log.warning("data.mix[%d]: %s has %d examples, fewer than the %d asked for; using all", i, m.source, len(ds), want)
        ds = ds.shuffle(seed=seed).select(range(min(want, len(ds)))).select_columns(needed)
        for column in train.column_names:
            if column not in needed:
                ds = ds.add_column(column, [None] * len(ds))
        parts.append(ds.select_columns(train.column_names).cast(train.features))
        log.info("Mixing %d examples of %s into %d task examples", len(ds), m.source, len(train))
    if problems:
        raise TunesmithError(problems)
    return datasets.concatenate_datasets(parts).shuffle(seed=seed)


def fingerprint(ds: datasets.Dataset) -> str:
    """A content hash of a split (same rows in the same order -> same hash)."""
    h = hashlib.sha256()
    for batch in ds.with_format(None).iter(batch_size=4096):  # the split's rows (not the table under a selection)
        h.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Rows an objective cannot use: nulls and unlabeled rows are dropped and counted; wrong types are errors.
