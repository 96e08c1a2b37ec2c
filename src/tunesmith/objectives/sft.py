"""sft: supervised fine-tuning on prompt -> response pairs, or on conversations (every data.format but text: OpenAI
messages, ShareGPT, Alpaca, or prompt/response columns through a chat template); the loss covers only what the
model should write: the response, or every assistant turn (data.train_on), each with its end of turn."""

from __future__ import annotations

import logging
from typing import Literal

from tunesmith.data.chat import NAMED_TEMPLATES, column_problems, conversation_of, describe, is_chat
from tunesmith.data.roles import Role, check_columns, no_packing
from tunesmith.data.templates import fields, probe_row, prompt_and_response, sft_template
from tunesmith.data.tokenize import sft_prompt_ids, tokenize_sft
from tunesmith.generation import generate
from tunesmith.objectives import lm
from tunesmith.objectives.spec import Objective
from tunesmith.schema import Section

log = logging.getLogger("tunesmith")


class SFTConfig(Section):
    """Instruction / supervised tuning through a prompt template or the tokenizer's chat template."""

    name: Literal["sft"]


ROLES = (  # conversations (data.format other than text) may come in other columns instead: data/chat.py
    Role("prompt", templated=True, help="what the model is given (or data.template's part before the response)"),
    Role("response", templated=True, lists=True, help="what it learns to answer; a list of strings: several "
         "reference answers (generation metrics score against each)"),
)


def check_config(cfg) -> list[str]:
    """Roles, no packing, and a data.template that ends with the response placeholder (what precedes it is the prompt)."""
    d = cfg.data
    problems = check_columns(cfg, ROLES) + no_packing(cfg)
    placeholder = "{" + d.column("response") + "}"
    if d.template and placeholder not in d.template:
        problems.append(f"data.template: for sft it must contain the response placeholder {placeholder} "
                        f"(the column of data.columns.response); found {d.template!r}")
    elif d.template and not d.template.rstrip().endswith(placeholder):
        problems.append(f"data.template: for sft the response placeholder {placeholder} must come last, so that "
                        "everything before it is the prompt")
    return problems


def check(cfg, dd, tokenizer) -> list[str]:
    d = cfg.data
    problems = []
    if is_chat(d) and not getattr(tokenizer, "chat_template", None):
        problems.append(f"data.format: {d.format!r} renders conversations through a chat template, and {cfg.model.name!r} "
                        f"has none (a base model); set data.chat_template ({', '.join(NAMED_TEMPLATES)}, or a Jinja "
                        "file), or use data.format: text with a data.template")
    for split, ds in dd.items():
        if is_chat(d):
            problems += column_problems(ds, d, f"the {split} data of {d.source!r}")[1]
            continue
        needed = fields(sft_template(d))
        for c in needed:
            if c not in ds.column_names:
                key = "data.template" if d.template else ("data.columns.prompt" if c == d.column("prompt") else "data.columns.response")
                problems.append(f"{key}: column {c!r} is not in the {split} data of {d.source!r}; columns are {ds.column_names}")
    return problems


def setup(cfg, dd) -> dict:
    """Conversations: how the rows are read (the detected format), logged and kept in the task (manifest, preview)."""
    if not is_chat(cfg.data):
        return {}
    fmt, _ = column_problems(dd["train"], cfg.data, "train")
    if fmt is None:
        return {}
    chat = describe(fmt, dd["train"], cfg.data)
    log.info("Conversations: %s", chat)
    return {"chat": chat}


def tokenize(ds, tokenizer, cfg, task):
    return tokenize_sft(ds, tokenizer, cfg.data)


def evaluate(model, tokenizer, raw, features, cfg, task) -> dict:
    rows = raw.select(range(min(cfg.eval.num_samples, len(raw))))
    prompts = [sft_prompt_ids(tokenizer, cfg.data, row) for row in rows]
    refs = [reference(row, cfg) for row in rows]
    gen = lm.generation_rows(raw, cfg)
    gen_prompts = lm.fit_prompts([sft_prompt_ids(tokenizer, cfg.data, row) for row in gen], cfg)
    return lm.evaluate(model, tokenizer, features, cfg, prompts, refs, gen_prompts, [references(row, cfg) for row in gen])


def reference(row, cfg) -> str:
    """The answer a prompt is scored against: the response, or a conversation's last assistant turn."""
    if is_chat(cfg.data):
        answers = [m["content"] for m in conversation_of(row, cfg.data) if m["role"] == "assistant"]
        return str(answers[-1]) if answers else ""
    return prompt_and_response(row, cfg.data)[1]


def references(row, cfg) -> str | list[str]:
    """What generation metrics score against: the reference, or every answer of a list-valued response column."""
    value = row.get(cfg.data.column("response"))
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return reference(row, cfg)


def probe(model, tokenizer, texts, cfg, task, **options) -> list[str]:
    prompts = [sft_prompt_ids(tokenizer, cfg.data, probe_row(t, cfg.data)) for t in texts]
    return generate(model, tokenizer, prompts, cfg.eval.max_new_tokens, **options)


def build_trainer(*args, **kwargs):
    """Packed batches and logits at the response only (lm_speed, imported here: reading a config imports no torch)."""
    from tunesmith.objectives import lm_speed

    return lm_speed.build_trainer(*args, **kwargs)


OBJECTIVE = Objective(
    name="sft", config_cls=SFTConfig, model_kind="causal_lm", metric_names=lm.METRICS,
    roles=ROLES, check_config=check_config,
    best_metric="eval_loss", check=check, setup=setup, tokenize=tokenize,
    collator=lm.collator, evaluate=evaluate, probe=probe,
    build_trainer=build_trainer, tokenize_first=("train", "eval"),
    summary="prompt -> response or conversations, loss on the response / assistant turns (loss, perplexity, samples)",
    metric_directions=lm.DIRECTIONS,
)
