"""Tokenization per objective. Every function returns input_ids, attention_mask and labels, plus
`full_length` (tokens before truncation) so that previews can say how many examples truncation cut.

- classify: one label id per example.
- causal_lm: labels = input_ids (the model shifts them); optional packing into max_length blocks.
- sft: labels are -100 on the prompt, so the loss covers only the response and its EOS; a conversation (every
  data.format but text) is trained on each assistant turn (or the last: data.train_on), through data/turns.py.
  Its bookkeeping columns say which tokens belong to which role (`spans`), how many messages and trained turns it has,
  and which turns truncation cut (`turns_cut`), for `data preview`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset

from tunesmith.data.chat import conversation_of, is_chat
from tunesmith.data.templates import prompt_and_response, text_of
from tunesmith.data.turns import IGNORE, TurnMismatch, cut, encode_conversation
from tunesmith.errors import TunesmithError, raise_if

log = logging.getLogger("tunesmith")
EXTRA_COLUMNS = ["full_length", "spans", "messages", "turns", "turns_cut", "problem"]  # never reach the model
PROGRESS_ROWS = 5000  # tokenizing more rows than this shows a progress bar even where the CLI hides datasets' bars


@contextmanager
def progress(rows: int):
    """datasets' progress bars on for long work (the CLI turns them off so that small runs stay quiet)."""
    import datasets

    if rows <= PROGRESS_ROWS or datasets.is_progress_bar_enabled():
        yield
        return
    datasets.enable_progress_bars()
    try:
        yield
    finally:
        datasets.disable_progress_bars()


def _map(ds: Dataset, encode, batched: bool = False, features=None) -> Dataset:
    with progress(len(ds)):
        return ds.map(encode, batched=batched, remove_columns=ds.column_names, desc=f"tokenize {len(ds):,} examples",
                      features=features)


def chat_features():
    """The column types of tokenized conversations (given, so that empty lists never make a column untyped)."""
    from datasets import Features, List, Value

    ints = List(Value("int64"))
    return Features({"input_ids": ints, "attention_mask": ints, "labels": ints, "full_length": Value("int64"),
                     "spans": List(ints), "messages": Value("int64"), "turns": Value("int64"), "turns_cut": ints,
                     "problem": Value("string")})


def _rows(batch: dict) -> list[dict]:
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def truncate(ids: list[int], max_length: int, side: str) -> list[int]:
    if len(ids) <= max_length:
        return ids
    return ids[:max_length] if side == "right" else ids[-max_length:]


def encode_classify(rows: list[dict], tokenizer, data_cfg, label_id) -> dict[str, list]:
    """Rows -> columns of model inputs, labels and full lengths (label_id maps a label column value to its id)."""
    tokenizer.truncation_side = data_cfg.truncation_side
    texts = [text_of(row, data_cfg) for row in rows]
    pair = data_cfg.column("text_pair")
    pairs = [str(row[pair]) for row in rows] if pair else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=data_cfg.max_length)
    full = [len(ids) for ids in enc["input_ids"]]
    cut = [i for i, n in enumerate(full) if n >= data_cfg.max_length]  # only these may have been truncated
    if cut:
        whole = tokenizer([texts[i] for i in cut], [pairs[i] for i in cut] if pairs else None)["input_ids"]
        for i, ids in zip(cut, whole):
            full[i] = len(ids)
    return {**enc, "labels": [label_id(row[data_cfg.column("label")]) for row in rows], "full_length": full}


def tokenize_classify(ds: Dataset, tokenizer, data_cfg, label_id) -> Dataset:
    """label_id maps a label column value to its id."""
    return _map(ds, lambda batch: encode_classify(_rows(batch), tokenizer, data_cfg, label_id), batched=True)


def tokenize_causal_lm(ds: Dataset, tokenizer, data_cfg) -> Dataset:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def encode(batch):
        out = {"input_ids": [], "attention_mask": [], "labels": [], "full_length": []}
        for ids in tokenizer([text_of(row, data_cfg) for row in _rows(batch)])["input_ids"]:
            ids = ids + eos
            kept = ids if data_cfg.packing else truncate(ids, data_cfg.max_length, data_cfg.truncation_side)
            for key, value in zip(out, (kept, [1] * len(kept), list(kept), len(ids))):
                out[key].append(value)
        return out

    out = _map(ds, encode, batched=True)
    return pack(out, data_cfg.max_length) if data_cfg.packing else out


def pack(ds: Dataset, block: int) -> Dataset:
    """Concatenate every example and cut into blocks of `block` tokens (the last, shorter one is kept)."""
    stream = [t for ids in ds["input_ids"][:] for t in ids]
    blocks = [stream[i : i + block] for i in range(0, len(stream), block)]
    if len(blocks) > 1 and len(blocks[-1]) < block // 4:
        blocks = blocks[:-1]
    from datasets import Dataset

    return Dataset.from_dict({
        "input_ids": blocks,
        "attention_mask": [[1] * len(b) for b in blocks],
        "labels": [list(b) for b in blocks],
        "full_length": [len(b) for b in blocks],
    })


def sft_prompt_ids(tokenizer, data_cfg, row: dict) -> list[int]:
    """Token ids of a row's prompt, exactly as the model sees it before the (last) response."""
    if is_chat(data_cfg):
        messages = conversation_of(row, data_cfg)
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
        return list(tokenizer.apply_chat_template(messages[:last], add_generation_prompt=True, return_dict=False))
    prompt, _ = prompt_and_response(row, data_cfg)
    return tokenizer(prompt)["input_ids"]


def sft_pair_ids(tokenizer, data_cfg, row: dict) -> tuple[list[int], list[int]]:
    """data.format text: (prompt ids, response ids); the response ends with EOS."""
    eos = tokenizer.eos_token_id
    prompt_ids = sft_prompt_ids(tokenizer, data_cfg, row)
    _, response = prompt_and_response(row, data_cfg)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if eos is not None and eos not in response_ids[-2:]:
        response_ids = response_ids + [eos]
    return prompt_ids, response_ids


def encode_text_sft(tokenizer, data_cfg, row: dict) -> dict:
    prompt_ids, response_ids = sft_pair_ids(tokenizer, data_cfg, row)
    ids = prompt_ids + response_ids
    labels = [IGNORE] * len(prompt_ids) + response_ids
    ids = truncate(ids, data_cfg.max_length, data_cfg.truncation_side)
    labels = truncate(labels, data_cfg.max_length, data_cfg.truncation_side)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "full_length": len(prompt_ids) + len(response_ids)}


def encode_chat_sft(tokenizer, data_cfg, row: dict) -> dict:
    """A conversation's ids and labels on its assistant turns, cut to data.max_length; a conversation the template
    cannot split into turns gets no tokens and a `problem`."""
    try:
        enc = encode_conversation(tokenizer, conversation_of(row, data_cfg), data_cfg.train_on)
    except (TurnMismatch, TunesmithError) as err:  # a template that cannot split it, a turn from an unknown role
        return {"input_ids": [], "attention_mask": [], "labels": [], "full_length": 0, "spans": [], "messages": 0,
                "turns": 0, "turns_cut": [], "problem": str(err)}
    ids, labels, spans, gone = cut(enc, data_cfg.max_length, data_cfg.truncation_side)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "full_length": len(enc.ids),
            "spans": spans, "messages": enc.messages, "turns": len(enc.turns), "turns_cut": gone, "problem": ""}


def source_rows(ds: Dataset) -> list[int] | None:
    """Each row's number in the table it was read from (datasets keeps selections and shuffles as an index
    mapping over it), or None where the rows are the table's own."""
    mapping = getattr(ds, "_indices", None)
    return None if mapping is None else mapping.column(0).to_pylist()


def row_problems(ds: Dataset, out: Dataset, data_cfg) -> list[str]:
    """One line per conversation the chat template cannot split into turns, naming its row in the source."""
    bad = [i for i, p in enumerate(out["problem"][:]) if p]
    if not bad:
        return []
    rows = source_rows(ds) if not data_cfg.mix else None
    problems = [f"{data_cfg.source} row {(rows[i] if rows else i) + 1}: {out[i]['problem']}" for i in bad[:10]]
    if len(bad) > 10:
        problems.append(f"... and {len(bad) - 10} more of its {len(ds)} rows")
    problems.append(f"{len(bad)} conversation(s) cannot be trained with a correct loss mask: fix or remove those rows, "
                    "or set data.chat_template to a template that renders each turn the same way whatever follows "
                    "(e.g. chatml), or data.train_on: last_assistant (only the last turn is split off)")
    return problems


def tokenize_sft(ds: Dataset, tokenizer, data_cfg) -> Dataset:
    chat = is_chat(data_cfg)
    out = _map(ds, lambda row: (encode_chat_sft if chat else encode_text_sft)(tokenizer, data_cfg, row),
               features=chat_features() if chat else None)
    if chat:
        raise_if(row_problems(ds, out, data_cfg), source="data")
        out = out.remove_columns(["problem"])
    keep = [i for i, labels in enumerate(out["labels"][:]) if any(t != IGNORE for t in labels)]
    if len(out) and not keep:
        raise TunesmithError(f"data.max_length: truncation to {data_cfg.max_length} tokens ({data_cfg.truncation_side}) "
                             f"cuts the whole response of all {len(out)} examples; raise data.max_length (their lengths "
                             f"start at {min(out['full_length'][:])} tokens) or set data.truncation_side: left")
    if len(keep) < len(out):
        log.warning("Dropped %d of %d examples: truncation to %d tokens cut their whole response (raise data.max_length or set data.truncation_side: left)",
                    len(out) - len(keep), len(out), data_cfg.max_length)
        out = out.select(keep)
    return out


def model_inputs(features: Dataset) -> Dataset:
    """Drop the bookkeeping columns before features reach the model (a Dataset, or a list of example dicts)."""
    if isinstance(features, list):
        return [{k: v for k, v in row.items() if k not in EXTRA_COLUMNS} for row in features]
    return features.remove_columns([c for c in EXTRA_COLUMNS if c in features.column_names])
