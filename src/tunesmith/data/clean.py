"""Which rows an objective can use: rows with a null text or label (or label -1, "unlabeled") are dropped and counted
per column; wrong types (a list where text is expected) and integer labels that are not class ids are errors that
name the column and rows."""

from __future__ import annotations

import json
import logging

import datasets

from tunesmith.errors import TunesmithError, raise_if

log = logging.getLogger("tunesmith")





def short_value(value) -> str:
    """A cell's value as it reads in a message, cut to 40 characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _rows(idx: list[int]) -> str:
    shown = ", ".join(str(i + 1) for i in idx[:5]) + (", ..." if len(idx) > 5 else "")
    return f"row {shown}" if len(idx) == 1 else f"rows {shown}"


def name_rows(ds: datasets.Dataset, idx: list[int]) -> str:
    """'row 21' or 'rows 3, 8, ...' for positions in a split, numbered (from 1) as the rows stand in the source the
    split was drawn from (a held-out split, sampling and dropped rows keep them in datasets' index map), in order."""
    mapping = getattr(ds, "_indices", None)
    if mapping is not None:
        idx = mapping.column(0).take(idx).to_pylist()
    return _rows(sorted(idx))


def _arrow(ds: datasets.Dataset, column: str):
    return ds.with_format("arrow")[column]


def _type_problem(ds, where: str, column: str, expected: str, fix: str, lists_ok: bool = False,
                  turns_ok: bool = False) -> str | None:
    """A column holding lists or objects where `expected` (text, a label) is: the first such row. `turns_ok`: a list
    of objects (chat messages) is fine too."""
    import pyarrow.compute as pc

    feature = ds.features[column]
    if isinstance(feature, (datasets.Value, datasets.ClassLabel)):
        return None
    if lists_ok and isinstance(feature, datasets.List) and getattr(feature.feature, "dtype", "") in ("string", "large_string"):
        return None
    if turns_ok and isinstance(feature, datasets.List) and isinstance(feature.feature, dict):
        return None
    valid = pc.indices_nonzero(pc.is_valid(_arrow(ds, column))).to_pylist()
    row = valid[0] if valid else 0
    value = ds[row][column]
    kind = "lists" if isinstance(value, list) else "objects"
    return f"{where} column {column!r} holds {kind} where {expected} is expected (row {row + 1}: {short_value(value)}); {fix}"


def _null_rows(ds, column: str) -> list[int]:
    import pyarrow.compute as pc

    return pc.indices_nonzero(pc.is_null(_arrow(ds, column), nan_is_null=True)).to_pylist()


def _whole_numbers(ds, column: str) -> list | None:
    """An integer label column's values (a float column of whole numbers, as a CSV with empty cells gives, counts)."""
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return _arrow(ds, column).to_pylist()
    dtype = getattr(feature, "dtype", "")
    if not dtype.startswith(("int", "uint", "float")):
        return None
    values = _arrow(ds, column).to_pylist()
    if dtype.startswith("float") and not all(v is None or v != v or float(v).is_integer() for v in values):
        return None
    return [None if v is None or v != v else int(v) for v in values]


def _label_ids(where: str, column: str, values: list, skip: set[int]) -> list[str]:
    """Integer labels without names are class ids 0..K-1: a value outside is a problem (its count and first row)."""
    counts: dict[int, list[int]] = {}
    for i, v in enumerate(values):
        if v is not None and i not in skip:
            counts.setdefault(v, []).append(i)
    k = len(counts)
    bad = [f"{v} ({len(rows)} row{'s' if len(rows) > 1 else ''}, first row {rows[0] + 1})"
           for v, rows in sorted(counts.items()) if not 0 <= v < k]
    if not bad:
        return []
    names = [str(v) for v in sorted(counts)]
    return [f"{where} column {column!r}: integer labels are class ids 0..{k - 1} ({k} distinct values), so {', '.join(bad)} "
            f"{'is' if len(bad) == 1 else 'are'} no class; fix the data, or name the classes by value in data.labels, e.g. "
            f"data.labels: {names}"]


def _text_fix(column: str, reads) -> str:
    fix = f"give it one string per row (join the parts), or point {reads.text[column]} at a text column"
    if column in reads.turns and not reads.chat:
        fix = ("if it holds chat messages (a list of {role, content} per row), set data.format: chat to read them "
               f"through the chat template; else {fix}")
    return fix


def usable(ds: datasets.Dataset, where: str, reads, labels: list[str] | None) -> tuple[datasets.Dataset, str | None]:
    """Drop the rows the objective cannot use and say which: a null (or missing) value in a column it reads, or an
    integer label -1 (the datasets convention for unlabeled) unless data.labels names it. A list or object where
    text or a label is expected, and an integer label that is no class id, are errors."""
    text = [c for c in reads.text if c in ds.column_names]
    label = reads.label if reads.label in ds.column_names else None
    problems = [_type_problem(ds, where, c, "text", _text_fix(c, reads), c in reads.lists, c in reads.turns and reads.chat)
                for c in text]
    if label:
        problems.append(_type_problem(ds, where, label, "one label", "give each row one label (classify picks one class per example)"))
    raise_if([p for p in problems if p])
    drop: set[int] = set()
    notes = []
    for column in text + ([label] if label else []):
        idx = _null_rows(ds, column)
        if idx:
            notes.append(f"null or missing {'label' if column == label else 'text'} in column {column!r}: {len(idx)} ({_rows(idx)})")
            drop.update(idx)
    ids = _whole_numbers(ds, label) if label else None
    if ids is not None:
        unlabeled = [] if labels and "-1" in labels else [i for i, v in enumerate(ids) if v == -1]
        if unlabeled:
            notes.append(f"label -1 (unlabeled) in column {label!r}: {len(unlabeled)} ({_rows(unlabeled)})")
            drop.update(unlabeled)
        if not labels and not isinstance(ds.features[label], datasets.ClassLabel):
            raise_if(_label_ids(where, label, ids, drop))
    if drop and len(drop) == len(ds):
        raise TunesmithError(f"{where}: none of its {len(ds)} rows is usable ({'; '.join(notes)}); fix the data, or point the config at other columns or splits")
    note = f"dropped {len(drop)} of {len(ds)} rows of {where}: " + "; ".join(notes) if drop else None
    if drop:
        ds = ds.select([i for i in range(len(ds)) if i not in drop])
    if ids is not None and getattr(ds.features[label], "dtype", "").startswith("float"):
        ds = ds.cast_column(label, datasets.Value("int64"))  # 1.0 -> 1, so that the label reads '1'
    return ds, note


def usable_splits(dd: datasets.DatasetDict, data_cfg, names: list[str | None], reads, notes: list[str]) -> datasets.DatasetDict:
    """`usable` on each named split of the source (once each); the notes say what was dropped where."""
    out = datasets.DatasetDict(dd)
    for name in dict.fromkeys(n for n in names if n):
        where = data_cfg.source if len(dd) == 1 else f"{data_cfg.source} split {name!r}"
        out[name], note = usable(dd[name], where, reads, data_cfg.labels)
        if note:
            notes.append(note)
    return out
