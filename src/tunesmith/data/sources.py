"""Where examples come from: files, saved `datasets` folders, the offline catalog or the hub; then the split."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import datasets

from tunesmith.assets import _looks_like_path, is_catalog_dataset, load_catalog_dataset
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

FILE_KINDS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def read_jsonl(path: Path) -> datasets.Dataset:
    """JSON Lines, with errors that name the line."""
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TunesmithError(f"{path} line {lineno}: not valid JSON ({err.msg}); each line must be one JSON object") from None
            if not isinstance(record, dict):
                raise TunesmithError(f"{path} line {lineno}: expected a JSON object like {{\"text\": ...}}, found {type(record).__name__}")
            records.append(record)
    if not records:
        raise TunesmithError(f"{path}: no examples (the file is empty)")
    return datasets.Dataset.from_list(records)


def read_file(path: Path) -> datasets.Dataset:
    import pandas as pd

    kind = FILE_KINDS.get(path.suffix.lower())
    if kind is None and path.name.endswith((".csv.bz2", ".csv.gz")):
        kind = "csv"
    if kind == "jsonl":
        return read_jsonl(path)
    try:
        if kind in ("csv", "tsv"):
            df = pd.read_csv(path, sep="\t" if kind == "tsv" else ",")
            return datasets.Dataset.from_pandas(df, preserve_index=False)
        if kind == "json":
            try:
                return read_jsonl(path)
            except TunesmithError:
                return datasets.Dataset.from_pandas(pd.read_json(path), preserve_index=False)
        if kind == "parquet":
            return datasets.Dataset.from_parquet(str(path))
    except (ValueError, pd.errors.ParserError) as err:
        raise TunesmithError(f"{path}: could not read it as {kind} ({err})") from None
    raise TunesmithError(
        f"data.source: {path} has an unknown file type {path.suffix!r}; expected one of {sorted(FILE_KINDS)} "
        "or a folder saved with Dataset.save_to_disk"
    )


def load_source(source: str, subset: str | None = None) -> datasets.DatasetDict:
    """Any source -> DatasetDict of the splits it has (a single file or catalog set becomes 'train')."""
    if is_catalog_dataset(source):
        return datasets.DatasetDict({"train": load_catalog_dataset(source)})
    path = Path(source).expanduser()
    if path.is_dir():
        if not any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
            raise TunesmithError(f"data.source: folder {path} is not a saved dataset (no dataset_dict.json or state.json); save it with Dataset.save_to_disk, or point at a file")
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    if path.is_file():
        return datasets.DatasetDict({"train": read_file(path)})
    if _looks_like_path(source) or Path(source).suffix.lower() in FILE_KINDS:
        raise TunesmithError(f"data.source: file {source!r} does not exist; check the path (relative paths start from the current directory)")
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

    groups = sorted(set(ds[group_column]))
    random.Random(seed).shuffle(groups)
    want = size if isinstance(size, int) else int(round(size * len(ds)))
    chosen, count = set(), 0
    counts: dict = {}
    for value in ds[group_column]:
        counts[value] = counts.get(value, 0) + 1
    for g in groups:
        if count >= want:
            break
        chosen.add(g)
        count += counts[g]
    column = ds[group_column]
    eval_idx = [i for i, v in enumerate(column) if v in chosen]
    train_idx = [i for i, v in enumerate(column) if v not in chosen]
    return ds.select(train_idx), ds.select(eval_idx)


def load_splits(data_cfg, seed: int) -> datasets.DatasetDict:
    """The config's data -> DatasetDict with 'train' and 'eval'."""
    dd = load_source(data_cfg.source, data_cfg.subset)
    if data_cfg.train_split not in dd:
        raise TunesmithError(f"data.train_split: {data_cfg.train_split!r} is not a split of {data_cfg.source!r}; it has {list(dd)}")
    train = dd[data_cfg.train_split]
    eval_name = data_cfg.eval_split
    if eval_name is not None and eval_name not in dd:
        raise TunesmithError(f"data.eval_split: {eval_name!r} is not a split of {data_cfg.source!r}; it has {list(dd)} (remove the key for a held-out split)")
    if eval_name is None:
        eval_name = next((s for s in ("validation", "test") if s in dd and s != data_cfg.train_split), None)
        if eval_name:
            log.info("Evaluating on the source's %r split", eval_name)
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
    """The task's columns that the config reads (text, label, prompt, response, template fields)."""
    from tunesmith.data.templates import fields

    named = {data_cfg.text_column, data_cfg.text_pair_column, data_cfg.label_column, data_cfg.prompt_column,
             data_cfg.response_column, "messages", *(fields(data_cfg.template) if data_cfg.template else [])}
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
