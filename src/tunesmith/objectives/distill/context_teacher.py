"""context_distill's teacher: the prompts with and without the context, the checkers of answer form, and the
teacher's responses and next-token outputs, computed once and cached on disk.

The teacher is the run's own base model reading the context; the student is the same model without it. Under a PEFT
method the teacher pass runs with the adapter switched off (`model.disable_adapter()`), so one model is in memory; a
method without an adapter (full, freeze) is asked before it has trained (when the trainer is built, and when the
base model is measured), so the model then is still the base. The teacher's outputs never change during training
(the base does not move), so they are computed once: its responses (generated with the context) and, at every
response token, its top_k logits, log-sum-exp and the sampled token's logit, in distill_teacher's format, so that
distill_loss's loss and collator apply unchanged.

Cache: `cache_dir()/context_distill/<key>.pt`, keyed by the base model (path, revision, dtype, cut layers, weights
digest, quantization), the teacher's prompt token ids (so the context, its placement and the prompts), the
generation settings (max_new_tokens, temperature, seed) and top_k. Within one process the result is also kept in a
dict, so the tuned model's evaluation finds what the base model's computed even with `cache: false`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from contextlib import contextmanager
from pathlib import Path

import tunesmith.tensor_cache as tensor_cache
from tunesmith.data.chat import is_chat
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")
_MEMO: dict[str, dict] = {}  # cache key -> teacher outputs, for this process (cache: false still computes once)


# ---------------------------------------------------------------------------------------------
# The context and the prompts


def context_file_problems(name: str) -> list[str]:
    """objective.context_file: a file that exists and holds some text (relative paths: from the working folder)."""
    path = Path(name).expanduser()
    if not path.is_file():
        return [f"objective.context_file: {name!r} is not a file (looked at {path.resolve()}); fix the path, or give "
                "the text itself as objective.context"]
    if not path.read_text(encoding="utf-8").strip():
        return [f"objective.context_file: {name!r} is empty; write the context in it"]
    return []


def context_text(o) -> str:
    """objective.context, or the text of objective.context_file."""
    if o.context is not None:
        return o.context
    problems = context_file_problems(o.context_file)
    if problems:
        raise TunesmithError(problems[0])
    return Path(o.context_file).expanduser().read_text(encoding="utf-8")


def prompt_ids(tokenizer, cfg, text: str, with_context: bool) -> list[int]:
    """Token ids of one prompt as the student (no context) or the teacher (with it) reads it. data.format chat: the
    tokenizer's chat template, the context in the system message (placement system, after data.system_prompt) or
    before the question in the user message (placement prefix); text: the context, a blank line, the prompt."""
    from tunesmith.generation import chat_prompt

    d, o = cfg.data, cfg.objective
    context = context_text(o).strip() if with_context else None
    user, system = str(text), d.system_prompt
    if context and o.placement == "prefix":
        user = f"{context}\n\n{user}"
    if not is_chat(d):
        return list(tokenizer(user)["input_ids"])
    if context and o.placement == "system":
        system = f"{system}\n\n{context}" if system else context
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return chat_prompt(tokenizer, messages)


# ---------------------------------------------------------------------------------------------
# Checkers: does an answer have the form the context asks for? (text, value) -> bool


def _json_object(text: str, value) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


CHECKS = {  # name -> (the value it needs: int, str or None, the test)
    "max_words": (int, lambda text, v: len(text.split()) <= v),
    "min_words": (int, lambda text, v: len(text.split()) >= v),
    "starts_with": (str, lambda text, v: text.startswith(v)),
    "ends_with": (str, lambda text, v: text.endswith(v)),
    "contains": (str, lambda text, v: v.lower() in text.lower()),
    "regex": (str, lambda text, v: re.search(v, text) is not None),
    "lowercase": (None, lambda text, v: text == text.lower() and any(c.isalpha() for c in text)),
    "json_object": (None, _json_object),
}


def check_problems(check) -> list[str]:
    """objective.check: a value of the kind its checker needs (no torch)."""
    if check is None:
        return []
    kind, _ = CHECKS[check.name]
    if kind is None and check.value is not None:
        return [f"objective.check.value: the {check.name!r} check takes no value; remove it"]
    if kind is int and (not isinstance(check.value, int) or isinstance(check.value, bool) or check.value < 1):
        return [f"objective.check.value: {check.name!r} needs a whole number of words (e.g. value: 10), got {check.value!r}"]
    if kind is str and (not isinstance(check.value, str) or not check.value):
        return [f"objective.check.value: {check.name!r} needs a text (e.g. value: 'Indeed'), got {check.value!r}"]
    if check.name == "regex":
        try:
            re.compile(check.value)
        except re.error as err:
            return [f"objective.check.value: {check.value!r} is not a regular expression ({err})"]
    return []


def passes(check, text: str) -> bool:
    return CHECKS[check.name][1](text.strip(), check.value)


# ---------------------------------------------------------------------------------------------
# The teacher's responses and outputs


@contextmanager
def as_teacher(model):
    """The block runs the base model in eval mode: a PEFT model with its adapter switched off (under the model's
    adapter lock, see generation.using_adapter); any other model as it is (asked only before it trains)."""
    from tunesmith.generation import _is_peft, using_adapter

    training = model.training
    model.eval()
    try:
        if _is_peft(model):
            with using_adapter(model), model.disable_adapter():
                yield model
        else:
            yield model
    finally:
        model.train(training)


def model_identity(cfg) -> dict:
    """What the base model's outputs depend on (the teacher is the base)."""
    from tunesmith.methods.registry import METHODS
    from tunesmith.modeling import model_path
    from tunesmith.objectives.distill.teacher import files_digest

    path = model_path(cfg.model)
    weights = files_digest(Path(path)) if Path(path).is_dir() else None
    load = METHODS[cfg.method.name].load_kwargs(cfg.method)
    return {"model": cfg.model.model_dump(mode="json"), "path": path, "weights": weights,
            "load": json.dumps(load, sort_keys=True, default=str)}


def cache_key(cfg, teacher_prompts: list[list[int]], temperature: float) -> str:
    import numpy as np

    o = cfg.objective
    tokens = hashlib.sha256()
    for ids in teacher_prompts:  # length-prefixed, so prompts cannot run into each other
        tokens.update(np.int64(len(ids)).tobytes() + np.asarray(ids, dtype=np.int64).tobytes())
    parts = {"format": 1, "model": model_identity(cfg), "prompts": tokens.hexdigest(), "temperature": temperature,
             "max_new_tokens": o.max_new_tokens, "seed": cfg.train.seed, "top_k": o.top_k}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def pairs(prompts: list[list[int]], responses: list[list[int]]):
    """Features prompt + response with labels on the response only (what the loss and the teacher pass read)."""
    import datasets

    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for prompt, response in zip(prompts, responses):
        rows["input_ids"].append(list(prompt) + list(response))
        rows["attention_mask"].append([1] * (len(prompt) + len(response)))
        rows["labels"].append([-100] * len(prompt) + list(response))
    return datasets.Dataset.from_dict(rows)


def responses(outputs: dict) -> list[list[int]]:
    """The teacher's response token ids, one list per prompt."""
    ids, offsets = outputs["response_ids"].tolist(), outputs["response_offsets"].tolist()
    return [ids[a:b] for a, b in zip(offsets, offsets[1:])]


def outputs(model, tokenizer, features, cfg, temperature: float) -> dict:
    """The teacher's responses to features' teacher prompts (greedy at temperature 0, else sampled, seeded by
    train.seed) and its outputs at every response token; from this process, the disk cache, or computed now."""
    import torch

    from tunesmith.assets import cache_dir
    from tunesmith.generation import complete
    from tunesmith.objectives.distill.teacher import lm_outputs

    o = cfg.objective
    prompts = [list(p) for p in features["teacher_input_ids"]]
    key = cache_key(cfg, prompts, temperature)
    if key in _MEMO:
        return _MEMO[key]
    path = cache_dir() / "context_distill" / f"{key}.pt"
    cached = tensor_cache.read(path) if o.cache else None
    if isinstance(cached, dict) and len(cached.get("response_offsets", ())) == len(prompts) + 1:
        log.info("context_distill: re-using the teacher's cached responses and outputs %s (%d prompts)", path, len(prompts))
        _MEMO[key] = cached
        return cached
    if cached is not None:
        log.warning("context_distill: ignoring an unreadable cache file %s (%s); running the teacher again", path, cached)
    log.info("context_distill: the teacher (the base model with the context) answers %d prompts", len(prompts))
    with as_teacher(model):
        done = complete(model, tokenizer, prompts, max_new_tokens=o.max_new_tokens, temperature=temperature,
                        seed=cfg.train.seed, batch_size=cfg.train.per_device_eval_batch_size)
        answers = [c.token_ids for c in done]
        computed = lm_outputs(model, pairs(prompts, answers), cfg, tokenizer)
    computed["response_ids"] = torch.tensor([t for a in answers for t in a], dtype=torch.int32)
    computed["response_offsets"] = torch.tensor([0] + [len(a) for a in answers]).cumsum(0)
    if o.cache:
        tensor_cache.write(path, computed)
        log.info("context_distill: cached the teacher's outputs at %s (%.1f MB)", path, path.stat().st_size / 1e6)
    _MEMO[key] = computed
    return computed
