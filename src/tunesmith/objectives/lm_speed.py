"""sft's training batches, built to skip work that does not change the loss (tests/unit/test_sft_speed.py checks):

- train.logits_at_labels: the output layer (vocabulary x hidden: 49,152 x 576 for SmolLM2, a fifth of the model)
  and the cross-entropy run only at the positions whose next token carries loss (the response), not at prompt and
  padding positions. The collator passes transformers' own `logits_to_keep` (a boolean mask: the body's hidden
  states are gathered there before the output layer) and `shift_labels` (the targets of exactly those positions),
  so any model whose forward takes them, bare or under a PEFT wrapper, computes the same loss with less work.
- train.pack_batches: the examples of each batch are packed into rows of up to data.max_length tokens (first fit,
  longest first) instead of being padded to the longest one. Position ids restart at 0 for every example and the
  batch has no attention_mask, so transformers' masking (masking_utils.find_packed_sequence_indices) builds a
  block-diagonal causal mask (as long as no cache is built: the batch says use_cache false): no token attends
  across examples, and each example's loss is what it is unpacked.
  A batch holds the same examples as before, so the optimizer sees the same steps.

Both are probed once on the model the Trainer gets (two short sequences, no gradient, no random numbers drawn):
a model or PEFT method that does not honour them (prefix tuning's cache, prompt tuning's virtual tokens, a model
without `logits_to_keep`) gets the plain padded batch instead, said in the log; a batch that cannot be packed is
grouped by length (transformers' train_sampling_strategy: group_by_length) unless train.extra says otherwise.
"""

from __future__ import annotations

import inspect
import logging

from tunesmith.data.tokenize import IGNORE

log = logging.getLogger("tunesmith")


def build_trainer(model, tokenizer, prep, cfg, out_dir, callbacks=()):
    """sft's Objective.build_trainer: the default Trainer with the speed collator (see the module docstring)."""
    from tunesmith.objectives.trainer import build_trainer as default_trainer

    t = cfg.train
    packs, keeps = probe(model) if (t.pack_batches or t.logits_at_labels) else (False, False)
    pack, keep = t.pack_batches and packs, t.logits_at_labels and keeps
    more = {}
    if t.pack_batches and not pack and "train_sampling_strategy" not in t.extra:
        more["train_sampling_strategy"] = "group_by_length"  # less padding where packing is not possible
    log.info("sft batches: %s; logits %s", f"packed into rows of up to {cfg.data.max_length} tokens" if pack else
             "padded" + (", grouped by length (this model does not keep packed examples apart)" if more else ""),
             "at the response positions only" if keep else "at every position")
    collator = SpeedCollator(tokenizer, cfg.data.max_length if pack else None, keep)
    return default_trainer(model, tokenizer, prep, cfg, out_dir, callbacks, collator=collator, **more)


class SpeedCollator:
    """Features (input_ids, labels) -> a padded or packed batch, with `logits_to_keep` and `shift_labels` when
    logits are computed at the loss positions only."""

    def __init__(self, tokenizer, row_length: int | None = None, logits_at_labels: bool = False):
        from tunesmith.objectives.lm import collator

        self.padded = collator(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.row_length = row_length  # None: pad, don't pack
        self.logits_at_labels = logits_at_labels

    def __call__(self, features):
        batch = pack(features, self.row_length, self.pad_id) if self.row_length else self.padded(features)
        if self.logits_at_labels:
            batch.update(loss_positions(batch["labels"]))
        return batch


def loss_positions(labels) -> dict:
    """{"logits_to_keep": where the next token is a target, "shift_labels": those targets}: what a transformers
    causal LM (5.x) needs to compute logits and loss only there (modeling_utils.slice_logits_to_keep, ForCausalLMLoss)."""
    import torch

    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)
    keep = shifted != IGNORE
    return {"logits_to_keep": keep, "shift_labels": shifted[keep]}


def pack(features: list[dict], row_length: int, pad_id: int) -> dict:
    """Examples -> rows of up to row_length tokens (first fit, longest first), position ids restarting per example,
    no attention_mask. A row shorter than the longest is filled with pad tokens that form their own sequence (they
    see only each other) and carry no loss. Each example's first label is dropped, as unpacked (nothing predicts it)."""
    import torch

    lengths = [len(f["input_ids"]) for f in features]
    capacity = max(row_length, *lengths)
    rows: list[list[int]] = []
    for i in sorted(range(len(features)), key=lambda i: -lengths[i]):
        row = next((r for r in rows if sum(lengths[j] for j in r) + lengths[i] <= capacity), None)
        if row is None:
            rows.append([i])
        else:
            row.append(i)
    width = max(sum(lengths[j] for j in r) for r in rows)
    ids, labels, positions = [], [], []
    for row in rows:
        row_ids, row_labels, row_positions = [], [], []
        for j in row:
            row_ids += list(features[j]["input_ids"])
            row_labels += [IGNORE] + list(features[j]["labels"][1:])
            row_positions += list(range(lengths[j]))
        fill = width - len(row_ids)
        ids.append(row_ids + [pad_id] * fill)
        labels.append(row_labels + [IGNORE] * fill)
        positions.append(row_positions + list(range(fill)))
    # use_cache false: with a cache (the model config's default outside the Trainer) transformers skips the packed mask
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "position_ids": torch.tensor(positions),
            "use_cache": False}


def probe(model) -> tuple[bool, bool]:
    """(packing keeps examples apart, logits_to_keep gives the same logits) on this model as it will train: two
    short sequences through it packed and alone, and one with a mask of positions to keep, in eval mode without
    gradient, with no cache (the Trainer trains with use_cache false; a cache would switch the packed mask off).
    Anything that fails or differs turns that lever off for the run."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    takes_mask = "logits_to_keep" in inspect.signature(base.forward).parameters
    param = next(model.parameters())
    tol = 1e-4 if param.dtype == torch.float32 else 2e-2
    vocab = base.get_output_embeddings().weight.shape[0] if base.get_output_embeddings() is not None else 100
    a = (torch.arange(6, device=param.device) * 7 + 3) % vocab
    b = (torch.arange(4, device=param.device) * 5 + 11) % vocab
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = [model(input_ids=s[None], use_cache=False).logits[0].float() for s in (a, b)]
            positions = torch.cat([torch.arange(len(a)), torch.arange(len(b))]).to(param.device)[None]
            packed = model(input_ids=torch.cat([a, b])[None], position_ids=positions, use_cache=False).logits[0].float()
            packs = (torch.allclose(packed[: len(a)], alone[0], atol=tol, rtol=tol)
                     and torch.allclose(packed[len(a):], alone[1], atol=tol, rtol=tol))
            keeps = False
            if takes_mask:
                mask = torch.zeros(1, len(a), dtype=torch.bool, device=param.device)
                mask[0, [1, 4]] = True
                kept = model(input_ids=a[None], logits_to_keep=mask, use_cache=False).logits.float()
                keeps = kept.shape == (2, alone[0].shape[-1]) and torch.allclose(kept, alone[0][[1, 4]], atol=tol, rtol=tol)
    except Exception as err:  # noqa: BLE001 - a model that cannot take either input trains the plain way
        log.info("sft batches: this model does not take packed or masked-logits inputs (%s: %s)", type(err).__name__, err)
        return False, False
    finally:
        model.train(was_training)
    return bool(packs), bool(keeps)
