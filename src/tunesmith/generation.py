"""Text generation as a shared service: greedy and sampled decoding, stop strings, n samples per prompt,
left-padded batches, streaming through a callback, chat prompts, and a per-call adapter of a PEFT model.

`generate` returns texts (what eval, probes and samples use); `complete` returns `Completion`s with token ids
and why each one ended (what RL and a server need). torch is imported inside functions, so that
`import tunesmith.config` stays free of it.

Adapters: PEFT keeps one active adapter per model, so `using_adapter(model, name)` holds a lock of that model
(an `RLock` kept in a `WeakKeyDictionary` keyed by the model) while it switches, runs the caller's block and
switches back; requires_grad flags are restored too. Every call on a PEFT model takes that lock, so threads that
share one base each get their own adapter's output (they run one at a time on that model). PEFT's per-batch
`adapter_names` is not used: it registers forward hooks on the shared layers, which two threads would mix.

Sampling draws from a private `torch.Generator` per completion, seeded from (seed, prompt index, sample index):
the global RNG is never read or moved, a row's randomness does not depend on the other rows of its batch, and
concurrent calls cannot disturb each other. After transformers' own temperature / top-k / top-p warpers, each row
takes the token where its cumulative probability first exceeds one uniform number (inverse-CDF sampling: exact, one
random number per row and step, all drawn before decoding starts). `sampler="gumbel"`, the method before 2026-12
(argmax over the scores plus Gumbel noise: one random number per vocabulary entry, row and step), gives the samples
that seeds gave then. Greedy decoding never draws anything.

Speed (docs/performance.md): `precision="auto"` decodes with a bf16 copy of the model where the CPU or GPU computes
bf16 natively (hardware.native_bf16; on an AVX2-only CPU bf16 is emulated and far slower, so fp32 stays there);
`"fp32"` (the default) decodes with the model as it is, so greedy output is exactly transformers' own.
"""

from __future__ import annotations

import copy
import logging
import secrets
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")
SAMPLERS = ("cdf", "gumbel")
PRECISIONS = ("fp32", "auto", "bf16")
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class Completion:
    """One generated continuation. `text` is the new text only: special tokens dropped, cut before the first stop
    string, not stripped. `token_ids` are the generated ids, up to and including EOS or the token that completed a
    stop string. `finish_reason` is "stop" (EOS or a stop string) or "length" (max_new_tokens reached)."""

    prompt: int
    sample: int
    text: str
    token_ids: list[int]
    finish_reason: str


def _is_peft(model) -> bool:
    peft = sys.modules.get("peft")  # a model cannot be a PeftModel before peft is imported
    return peft is not None and isinstance(model, peft.PeftModel)


def model_lock(model) -> threading.RLock:
    """The lock that guards which adapter of `model` is active (one per model object, reentrant)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def using_adapter(model, adapter: str | None = None):
    """Run the block with `adapter` active on a PEFT model, holding the model's lock; the adapter that was active
    and every parameter's requires_grad come back afterwards. `adapter=None` keeps the active adapter (still under
    the lock, so no other thread switches it meanwhile). A model without PEFT adapters passes through unlocked."""
    if not _is_peft(model):
        if adapter is not None:
            raise TunesmithError(f"adapter={adapter!r}: this {type(model).__name__} has no PEFT adapters; "
                                 "load a PeftModel with several adapters, or leave adapter out")
        yield model
        return
    if adapter is not None and adapter not in model.peft_config:
        raise TunesmithError(f"adapter {adapter!r} is not loaded on this model; loaded: {list(model.peft_config)}")
    with model_lock(model):
        before = model.active_adapter
        if adapter is None or adapter == before:
            yield model
            return
        grads = [(p, p.requires_grad) for p in model.parameters()]
        model.set_adapter(adapter)
        try:
            yield model
        finally:
            model.set_adapter(before)
            for p, wanted in grads:
                p.requires_grad_(wanted)


def chat_prompt(tokenizer, messages: list[dict], **template_kwargs) -> list[int]:
    """Token ids of a conversation through the tokenizer's chat template, ending with the generation prompt (the
    assistant's turn), as `sft` with data.format: chat formats its prompts."""
    if not getattr(tokenizer, "chat_template", None):
        raise TunesmithError(f"chat prompts need a tokenizer with a chat template; {getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} "
                             "has none: pass prompts as text or token ids")
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False, **template_kwargs))


def _check(prompts, max_new_tokens, temperature, top_p, top_k, n, batch_size, sampler="cdf",
           precision="fp32") -> list[str]:
    problems = [f"{key} must be one of {', '.join(allowed)}, got {value!r}" for key, value, allowed in
                (("sampler", sampler, SAMPLERS), ("precision", precision, PRECISIONS)) if value not in allowed]
    if max_new_tokens < 1:
        problems.append(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        problems.append(f"temperature must be 0 (greedy) or more, got {temperature}")
    if not 0 < top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        problems.append(f"top_k must be 0 (off) or more, got {top_k}")
    if n < 1 or batch_size < 1:
        problems.append(f"n and batch_size must be at least 1, got n={n}, batch_size={batch_size}")
    problems += [f"prompt {i} is empty" for i, p in enumerate(prompts) if not p]
    return problems


def _seeds(base_seed: int, chunk) -> list[int]:
    return [hash((base_seed, p, s)) & (2**63 - 1) for p, s in chunk]


def _gumbel_sampler(warpers, seeds: list[int], device):
    """The sampler before 2026-12: transformers' warpers, then Gumbel noise over the whole vocabulary from one private
    generator per row, so that greedy argmax over its output samples from the warped distribution."""
    import torch

    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def process(input_ids, scores):
        for warp in warpers:
            scores = warp(input_ids, scores)
        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=device) for g in generators])
        return scores - torch.log(-torch.log(u.clamp_(min=1e-20)))

    return process


def draw(scores, uniforms):
    """Inverse-CDF sampling, one token per row: the first token whose cumulative probability (softmax of the warped
    `scores`, float64) exceeds uniforms[row] (in [0, 1)) times the row's total. A token of probability 0 (masked by
    top-k / top-p) is never drawn. Returns a (rows, 1) tensor of token ids."""
    import torch

    cdf = torch.softmax(scores.double(), dim=-1).cumsum(-1)
    total = cdf[:, -1:]
    pick = torch.searchsorted(cdf, uniforms.to(cdf).unsqueeze(-1) * total, right=True)
    return torch.minimum(pick, (cdf < total).sum(-1, keepdim=True))  # rounding at the very top: the last live token


def _sampler(warpers, seeds: list[int], steps: int, device):
    """A logits processor: transformers' warpers, then `draw` with the row's uniform for this step (from one private
    generator per row, all `steps` drawn up front); it returns 0 for the drawn token and -inf elsewhere, so that
    greedy argmax takes it."""
    import torch

    uniforms = torch.stack([torch.rand(steps, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
                            for s in seeds]).to(device)
    step = iter(range(steps))

    def process(input_ids, scores):
        for warp in warpers:
            scores = warp(input_ids, scores)
        pick = draw(scores, uniforms[:, next(step)])
        return torch.full_like(scores, float("-inf")).scatter_(1, pick, 0.0)

    return process


@contextmanager
def decoding_model(model, precision: str = "fp32"):
    """The model to decode with: `model` itself (fp32, or weights already in 16 bits), or for "auto" / "bf16" a bf16
    copy made for this call where the hardware computes bf16 natively ("auto" keeps `model` elsewhere, and says
    why in the log; "bf16" there is an error)."""
    import torch

    first = next(model.parameters())
    if precision == "fp32" or first.dtype != torch.float32:
        yield model
        return
    from tunesmith.hardware import native_bf16

    native, why = native_bf16(use_cpu=first.device.type == "cpu")
    if not native:
        if precision == "bf16":
            raise TunesmithError(f"precision='bf16': {why}; use precision='auto' (bf16 only where native) or 'fp32'")
        log.debug("generation: fp32 (precision auto; %s)", why)
        yield model
        return
    fast = bf16_copy(model)
    try:
        yield fast
    finally:
        del fast


def bf16_copy(model):
    """A copy of `model` whose floating-point parameters are bf16 (buffers such as rotary frequencies stay as they
    are, so positions keep their precision), in eval mode, without an autocast wrapper accelerate may have put on
    the original's forward (the copy computes in bf16 by itself). `model` is not changed."""
    import torch

    with torch.no_grad():  # each parameter is cast once, straight into the copy (no fp32 copy of the weights first)
        memo = {id(p): torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
                for p in model.parameters() if p.is_floating_point()}
        fast = copy.deepcopy(model, memo)
        for name in ("forward", "_original_forward"):  # accelerate's mixed-precision wrapper, an instance attribute
            fast.__dict__.pop(name, None)
    head = fast.get_output_embeddings() if hasattr(fast, "get_output_embeddings") else None
    if head is not None:  # torch 2.13: a bf16 matmul of the strided last-position slice of a batch (the first step's
        # hidden states) takes a batched path that copies the head's weight once per row: 3.6 s for SmolLM2 at batch 16
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    return fast.eval().requires_grad_(False)


def _text(tokenizer, ids: list[int], stop: Sequence[str]) -> tuple[str, bool]:
    """Decoded new text cut before the first stop string, and whether one was found."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters could still turn out to begin a stop string, or are half a character."""
    body = text.rstrip("\ufffd")  # the replacement character of a multi-byte character not yet complete
    return len(text) - len(body) + max((k for s in stop for k in range(1, len(s)) if body.endswith(s[:k])), default=0)


def _watcher(tokenizer, width: int, eos: int | None, max_new_tokens: int, stop, on_text, indices: list[int]):
    """A stopping criterion called after every decoding step: it stops rows whose text reached a stop string
    (noting in `ends` how many tokens they had then) and hands each row's new, settled text to on_text(index, text)."""
    import torch

    sent = [0] * len(indices)
    done = [False] * len(indices)
    ends: list[int | None] = [None] * len(indices)

    def watch(input_ids, scores, **kwargs):
        stopped = []
        for r, row in enumerate(input_ids[:, width:].tolist()):
            if done[r]:
                stopped.append(True)
                continue
            ids = row[: row.index(eos) + 1] if eos in row else row
            text, hit = _text(tokenizer, ids, stop)
            done[r] = hit or eos in row or len(row) >= max_new_tokens
            ends[r] = len(ids) if hit else None
            stopped.append(hit)
            if on_text is not None:
                settled = len(text) if done[r] else len(text) - _held_back(text, stop)
                if settled > sent[r]:
                    on_text(indices[r], text[sent[r] : settled])
                    sent[r] = settled
        return torch.tensor(stopped, dtype=torch.bool, device=input_ids.device)

    return watch, ends


def complete(model, tokenizer, prompts: Sequence[list[int] | str], *, max_new_tokens: int = 48,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, stop: str | Sequence[str] = (),
             n: int = 1, seed: int | None = None, batch_size: int = 8, adapter: str | None = None,
             on_text: Callable[[int, str], None] | None = None, sampler: str = "cdf",
             precision: str = "fp32") -> list[Completion]:
    """n completions per prompt, prompt-major (prompt i's samples at i*n .. i*n+n-1).

    prompts: token-id lists (used as they are) or strings (tokenized with the tokenizer's special tokens); see
    `chat_prompt` for conversations. temperature 0 is greedy; above 0 samples, after top_k (0: off) and top_p
    (1: off). stop: strings that end a completion; its text is cut before the first one. seed: the same seed,
    prompts and options give the same samples (None: fresh randomness). adapter: the PEFT adapter this call uses
    (see `using_adapter`). on_text(index, new_text) streams: index is the completion's position in the result,
    the pieces of one index concatenate to its `text`; it works for any batch size and n, and holds back text
    that may still become a stop string or half a character. sampler: "cdf" (default) or "gumbel" (the samples
    seeds gave before 2026-12). precision: "fp32" (the model as it is), "auto" (a bf16 copy where bf16 is
    native), "bf16" (that copy, or an error where bf16 is not native); see `decoding_model`.
    """
    stop = [s for s in ([stop] if isinstance(stop, str) else stop) if s]
    ids = [tokenizer(p)["input_ids"] if isinstance(p, str) else list(p) for p in prompts]
    problems = _check(ids, max_new_tokens, temperature, top_p, top_k, n, batch_size, sampler, precision)
    if problems:
        raise TunesmithError("generate: " + "; ".join(problems))
    rows = [(p, s) for p in range(len(ids)) for s in range(n)]
    base_seed = secrets.randbits(63) if seed is None else seed
    make = _sampler if sampler == "cdf" else _gumbel_sampler
    steps = (max_new_tokens,) if sampler == "cdf" else ()

    def processors(chunk, device):
        if temperature <= 0:
            return []
        return [make(_warpers(temperature, top_k, top_p), _seeds(base_seed, chunk), *steps, device)]

    results = []
    with using_adapter(model, adapter):
        was_training = model.training
        if was_training:  # sampling inside training (RL): back to training mode afterwards
            model.eval()
        try:
            with decoding_model(model, precision) as decoder:
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start : start + batch_size]
                    results += _batch(decoder, tokenizer, ids, chunk, start, max_new_tokens, stop, on_text, processors)
        finally:
            if was_training:
                model.train()
    return results


def _batch(model, tokenizer, ids, chunk, start, max_new_tokens, stop, on_text, processors) -> list[Completion]:
    """One left-padded `generate` call for the (prompt, sample) rows of `chunk` (result positions from `start`)."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    width = max(len(ids[p]) for p, _ in chunk)
    batch = torch.tensor([[pad] * (width - len(ids[p])) + ids[p] for p, _ in chunk], device=device)
    mask = torch.tensor([[0] * (width - len(ids[p])) + [1] * len(ids[p]) for p, _ in chunk], device=device)
    options, ends = {"logits_processor": processors(chunk, device)}, [None] * len(chunk)
    if stop or on_text is not None:
        watch, ends = _watcher(tokenizer, width, eos, max_new_tokens, stop, on_text,
                               list(range(start, start + len(chunk))))
        options["stopping_criteria"] = [watch]
    with torch.no_grad():
        out = model.generate(input_ids=batch, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=eos, **options)
    results = []
    for (p, s), end, row in zip(chunk, ends, out[:, width:].tolist()):
        row = row[: end or max_new_tokens]  # a row stopped by a stop string is padded after it
        new = row[: row.index(eos) + 1] if eos in row else row
        text, hit = _text(tokenizer, new, stop)
        ended = hit or (eos is not None and new[-1:] == [eos])
        results.append(Completion(p, s, text, new, "stop" if ended else "length"))
    return results


def _warpers(temperature: float, top_k: int, top_p: float) -> list:
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    return ([TemperatureLogitsWarper(temperature)] if temperature != 1 else []) + \
        ([TopKLogitsWarper(top_k)] if top_k else []) + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])


def generate(model, tokenizer, prompts: Sequence[list[int] | str], max_new_tokens: int = 48, batch_size: int = 8,
             **options) -> list[str]:
    """The text of each completion, stripped of surrounding whitespace, in `complete`'s order (n per prompt).
    Greedy by default; options are `complete`'s (temperature, top_p, top_k, stop, n, seed, adapter, on_text,
    sampler, precision)."""
    return [c.text.strip() for c in complete(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                             batch_size=batch_size, **options)]
