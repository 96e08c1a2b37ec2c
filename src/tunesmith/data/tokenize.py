"""Tokenization per objective. Every function returns input_ids, attention_mask and labels, plus
`full_length` (tokens before truncation) so that previews can say how many examples truncation cut.

- classify: one label id per example.
- causal_lm: labels = input_ids (the model shifts them); optional packing into max_length blocks.
- sft: labels are -100 on the prompt, so the loss covers only the response and its EOS.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset

from tunesmith.data.templates import messages_of, prompt_and_response, text_of

log = logging.getLogger("tunesmith")
IGNORE = -100
EXTRA_COLUMNS = ["full_length"]
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


def _map(ds: Dataset, encode, batched: bool = False) -> Dataset:
    with progress(len(ds)):
        return ds.map(encode, batched=batched, remove_columns=ds.column_names, desc=f"tokenize {len(ds):,} examples")


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
    """Token ids of a row's prompt, exactly as the model sees it before the response."""
    if data_cfg.format == "chat":
        return list(tokenizer.apply_chat_template(messages_of(row, data_cfg)[:-1], add_generation_prompt=True, return_dict=False))
    prompt, _ = prompt_and_response(row, data_cfg)
    return tokenizer(prompt)["input_ids"]


def sft_pair_ids(tokenizer, data_cfg, row: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids); the response ends with EOS."""
    eos = tokenizer.eos_token_id
    prompt_ids = sft_prompt_ids(tokenizer, data_cfg, row)
    if data_cfg.format == "chat":
        full = list(tokenizer.apply_chat_template(messages_of(row, data_cfg), return_dict=False))
        if full[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the chat template renders the prompt differently with and without the answer")
        response_ids = full[len(prompt_ids) :]
    else:
        _, response = prompt_and_response(row, data_cfg)
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if eos is not None and eos not in response_ids[-2:]:
        response_ids = response_ids + [eos]
    return prompt_ids, response_ids


def tokenize_sft(ds: Dataset, tokenizer, data_cfg) -> Dataset:
    def encode(row):
        prompt_ids, response_ids = sft_pair_ids(tokenizer, data_cfg, row)
        ids = prompt_ids + response_ids
        labels = [IGNORE] * len(prompt_ids) + response_ids
        ids = truncate(ids, data_cfg.max_length, data_cfg.truncation_side)
        labels = truncate(labels, data_cfg.max_length, data_cfg.truncation_side)
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "full_length": len(prompt_ids) + len(response_ids)}

    out = _map(ds, encode)
    keep = [i for i, labels in enumerate(out["labels"][:]) if any(t != IGNORE for t in labels)]
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
