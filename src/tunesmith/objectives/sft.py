"""sft: supervised fine-tuning on prompt -> response pairs; the loss covers only the response and its EOS."""

from __future__ import annotations

from typing import Literal

from tunesmith.data.roles import Role, check_columns, no_packing
from tunesmith.data.templates import fields, probe_row, prompt_and_response, sft_template
from tunesmith.data.tokenize import sft_prompt_ids, tokenize_sft
from tunesmith.generation import generate
from tunesmith.objectives import lm
from tunesmith.objectives.spec import Objective
from tunesmith.schema import Section


class SFTConfig(Section):
    """Instruction / supervised tuning through a prompt template or the tokenizer's chat template."""

    name: Literal["sft"]


ROLES = (  # data.format: chat also reads a row's own `messages` column (a list of {role, content}) when it has one
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
    if d.format == "chat" and not getattr(tokenizer, "chat_template", None):
        problems.append(f"data.format: 'chat' needs a tokenizer with a chat template, and {cfg.model.name!r} has none; use data.format: text with a data.template")
    for split, ds in dd.items():
        if "messages" in ds.column_names and d.format == "chat" and not d.template:
            continue
        needed = fields(sft_template(d))
        for c in needed:
            if c not in ds.column_names:
                key = "data.template" if d.template else ("data.columns.prompt" if c == d.column("prompt") else "data.columns.response")
                problems.append(f"{key}: column {c!r} is not in the {split} data of {d.source!r}; columns are {ds.column_names}")
    return problems


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
    if "messages" in row and row.get("messages"):
        return row["messages"][-1]["content"]
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
    best_metric="eval_loss", check=check, setup=lambda cfg, dd: {}, tokenize=tokenize,
    collator=lm.collator, evaluate=evaluate, probe=probe,
    build_trainer=build_trainer,
    summary="prompt -> response, loss on the response (loss, perplexity, samples)",
    metric_directions=lm.DIRECTIONS,
)
