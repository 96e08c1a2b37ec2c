"""Continuous batching for `tunesmith serve` (iteration-level scheduling): the rows at work on one model are stepped
together, one token each per forward pass, over one KV cache (transformers' DynamicCache). Between two steps the
Batcher (batching.py) may admit waiting rows: they are prefilled together (left-padded) and join the batch, their
cache padded on the left to the batch's width; a row that ends (EOS, a stop string, max_tokens, its client gone)
leaves the batch at that step and its caller is answered at once. Each row keeps its own attention mask and
position ids, so it computes what it computes alone: left padding is masked, positions count its own tokens only.

The preamble: every chat prompt of a served name starts with the same tokens (what its chat template writes before
the user's message: SmolLM2's default system prompt, a run's data.system_prompt, a BOS; `preamble`). Their keys and
values are computed once per model and adapter and kept; a prompt that starts with them prefills only its own tokens
after them (the rows' masks are then 1 over the preamble, 0 over the padding, 1 over their own tokens). The same
path serves a request alone and in a batch, so what a row computes still does not depend on its company.

Sampling, log-probabilities, stop strings and streaming are decode.py's (one `Track` per row). Rows of different
adapters of one LoRA base share a forward pass through PEFT's per-sample `adapter_names` ("__base__" for the base),
under the model's lock; other models step a batch of one served name with its adapter switched on (Served.active)
for each step, so classify and score requests on the compute thread (registry.py) can run between two steps.

A model steps this way only if transformers' plain DynamicCache serves it: a decoder-only model whose forward takes
`past_key_values`, `attention_mask` and `position_ids`, whose cache layers are all full-attention `DynamicLayer`s
(no sliding window, no linear attention), whose generation_config adds no logits processor to greedy decoding, and
not a PEFT prompt-learning model (prompt, prefix, P-tuning adapters put virtual tokens in front). Anything else is
served by decode.py's static batches. The check runs once per model, with a two-step probe of the cache.
"""

from __future__ import annotations

import weakref
from contextlib import nullcontext

from tunesmith.generation import model_lock
from tunesmith.serve.decode import BASE, Track, choose

_SUPPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PREAMBLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(adapter, ids): keys and values}
MIN_PREAMBLE = 8  # tokens: a shorter preamble is not worth its own forward pass

# generation_config fields that add a logits processor to greedy decoding in `generate`, at their neutral value
_NEUTRAL = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
            "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "min_length": 0, "min_new_tokens": None,
            "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
            "forced_eos_token_id": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
            "renormalize_logits": False, "guidance_scale": None, "watermarking_config": None}


def open_session(served) -> Session | None:
    """A continuous batch for `served`'s model (its rows of served.batch_key), or None: batch it statically."""
    model = served.model
    if model not in _SUPPORTED:
        with model_lock(model):
            _SUPPORTED[model] = supports(model, served.tokenizer)
    return Session(served) if _SUPPORTED[model] else None


def preamble(served) -> list[int]:
    """The tokens every chat prompt of `served` starts with: what its chat template writes before the user's message
    (a default system prompt, the run's data.system_prompt, a BOS), found once per served name as the common start of
    two one-message conversations; [] when shorter than MIN_PREAMBLE or when `served` formats no chat."""
    found = getattr(served, "preamble", None)
    if found is None:
        try:
            a, b = (served.chat_ids([{"role": "user", "content": text}]) for text in ("a", "b"))
        except Exception:  # noqa: BLE001 (a model that takes no chat: nothing to share)
            a = b = []
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        found = served.preamble = a[:n] if n >= MIN_PREAMBLE else []
    return found


def supports(model, tokenizer) -> bool:
    """Whether `model` can be stepped here (see the module's docstring)."""
    import inspect

    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if any(getattr(c, "is_prompt_learning", False) for c in (getattr(model, "peft_config", None) or {}).values()):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    if not {"past_key_values", "attention_mask", "position_ids"} <= set(inspect.signature(base.forward).parameters):
        return False
    if not all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers):
        return False
    generation = getattr(base, "generation_config", None)
    if generation is not None and any(getattr(generation, k, v) not in (v, None) for k, v in _NEUTRAL.items()):
        return False
    try:
        return _probe(base, tokenizer)
    except Exception:  # noqa: BLE001 (a model this loop cannot drive: the static batches serve it)
        return False


def _probe(model, tokenizer) -> bool:
    """Two tokens, then one more over the cache: the model must fill our DynamicCache with full-attention layers."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    token = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    device = next(model.parameters()).device
    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=torch.tensor([[token, token]], device=device), attention_mask=torch.ones(1, 2, dtype=torch.long, device=device),
              position_ids=torch.tensor([[0, 1]], device=device), past_key_values=cache, use_cache=True)
        model(input_ids=torch.tensor([[token]], device=device), attention_mask=torch.ones(1, 3, dtype=torch.long, device=device),
              position_ids=torch.tensor([[2]], device=device), past_key_values=cache, use_cache=True)
    return bool(cache.layers) and all(type(layer) is DynamicLayer and layer.is_initialized and layer.keys.shape[-2] == 3
                                      for layer in cache.layers)


def _left_pad(tensor, width: int, dim: int):
    """`tensor` padded with zeros on the left of dimension `dim` (-1 for a mask, -2 for keys and values) to `width`."""
    import torch.nn.functional as F

    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    return F.pad(tensor, (missing, 0) if dim == -1 else (0, 0, missing, 0))


class _Batch:
    """Rows stepped together: their KV cache (batch x heads x width x dim per layer), attention mask (batch x width,
    0 on the left padding), each row's last token (the next step's input), Track and adapter name."""

    def __init__(self, cache, mask, last, tracks: list[Track], names: list[str]):
        self.cache, self.mask, self.last, self.tracks, self.names = cache, mask, last, tracks, names

    def keep_going(self) -> _Batch | None:
        """The batch without its rows that ended (None when none is left), trimmed of left columns none of the
        remaining rows uses."""
        import torch

        keep = [r for r, t in enumerate(self.tracks) if not t.done]
        if not keep:
            return None
        if len(keep) == len(self.tracks):
            return self
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        start = int(mask.any(0).nonzero()[0])
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]
        return _Batch(self.cache, mask[:, start:], self.last[index], [self.tracks[r] for r in keep],
                      [self.names[r] for r in keep])

    def join(self, other: _Batch) -> _Batch:
        """This batch and `other` as one: the narrower one's cache and mask padded on the left."""
        import torch

        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width, -2), _left_pad(theirs.keys, width, -2)])
            mine.values = torch.cat([_left_pad(mine.values, width, -2), _left_pad(theirs.values, width, -2)])
        mask = torch.cat([_left_pad(self.mask, width, -1), _left_pad(other.mask, width, -1)])
        return _Batch(self.cache, mask, torch.cat([self.last, other.last]), self.tracks + other.tracks,
                      self.names + other.names)


class Session:
    """The continuous batch of one model (and one batch key): `admit(rows)` between steps, `step()` one token for
    every row at work; `active` rows are at work. Runs on the model's Batcher thread only."""

    def __init__(self, served):
        import inspect

        self.served, self.model, self.tokenizer = served, served.model, served.tokenizer
        self.mixed = getattr(served, "batch_key", None) == "lora"
        self.eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else (self.eos if self.eos is not None else 0)
        self.device = next(self.model.parameters()).device
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
        self.batch: _Batch | None = None

    @property
    def active(self) -> int:
        return len(self.batch.tracks) if self.batch is not None else 0

    def admit(self, rows) -> None:
        """Prefill `rows` (left-padded; those whose prompt starts with their served name's preamble over its cached
        keys and values, one forward per preamble): each takes its first token, and those not ended by it join the
        batch."""
        groups: dict[tuple, list] = {}
        for r in rows:
            start = preamble(r.job.served)
            groups.setdefault(tuple(start) if len(r.ids) > len(start) and r.ids[: len(start)] == start else (),
                              []).append(r)
        for start, part in groups.items():
            self._admit(part, list(start))

    def _admit(self, rows, start: list[int]) -> None:
        import torch
        from transformers import DynamicCache

        shared = len(start)
        width = max(len(r.ids) for r in rows) - shared
        ids = torch.tensor([[self.pad] * (width + shared - len(r.ids)) + r.ids[shared:] for r in rows], device=self.device)
        mask = torch.tensor([[1] * shared + [0] * (width + shared - len(r.ids)) + [1] * (len(r.ids) - shared)
                             for r in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp_(min=0)[:, shared:]
        tracks, names = [Track(r, self.device) for r in rows], [r.job.served.adapter or BASE for r in rows]
        cache = DynamicCache()
        if shared:
            per_row = [self._preamble_kv(start, name) for name in names]
            for layer in range(len(per_row[0])):
                cache.update(torch.cat([kv[layer][0] for kv in per_row]), torch.cat([kv[layer][1] for kv in per_row]),
                             layer)
        scores = self._forward(ids, mask, positions, cache, names)
        tokens = choose(tracks, scores, self.tokenizer, self.eos)
        new = _Batch(cache, mask, torch.tensor(tokens, device=self.device), tracks, names).keep_going()
        if new is not None:
            self.batch = new if self.batch is None else self.batch.join(new)

    def _preamble_kv(self, start: list[int], name: str) -> list[tuple]:
        """The keys and values (per layer, one row) of `start` under `name`'s adapter, computed once per model."""
        import torch
        from transformers import DynamicCache

        store = _PREAMBLES.setdefault(self.model, {})
        key = (name, tuple(start))
        if key not in store:
            cache = DynamicCache()
            ids = torch.tensor([start], device=self.device)
            self._forward(ids, torch.ones_like(ids), torch.arange(len(start), device=self.device)[None], cache, [name])
            store[key] = [(layer.keys, layer.values) for layer in cache.layers]
        return store[key]

    def step(self) -> None:
        """One token for every row at work; rows that end leave the batch (their callers are answered)."""
        import torch

        batch = self.batch
        ones = torch.ones(batch.mask.shape[0], 1, dtype=batch.mask.dtype, device=self.device)
        positions = batch.mask.sum(-1, keepdim=True)  # the row's own tokens so far: the next one's position
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        scores = self._forward(batch.last[:, None], batch.mask, positions, batch.cache, batch.names)
        batch.last = torch.tensor(choose(batch.tracks, scores, self.tokenizer, self.eos), device=self.device)
        self.batch = batch.keep_going()

    def rows(self) -> list:
        """The rows at work."""
        return [t.row for t in self.batch.tracks] if self.batch is not None else []

    def _forward(self, ids, mask, positions, cache, names):
        import torch

        extra = {**self.extra, "adapter_names": names} if self.mixed else self.extra
        with torch.no_grad(), self._held():
            was_training = self.model.training
            if was_training:  # a model shared with training: no dropout here, its mode back afterwards
                self.model.eval()
            try:
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                                 use_cache=True, **extra)
            finally:
                if was_training:
                    self.model.train()
        return out.logits[:, -1].float()

    def _held(self):
        """A mixed LoRA batch: the model's lock (adapter_names picks each row's adapter); else the served name's
        adapter switched on (a base: adapters off), under the lock."""
        if self.mixed:
            return model_lock(self.model)
        return self.served.active() if hasattr(self.served, "active") else nullcontext()
