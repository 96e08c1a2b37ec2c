"""causal_lm: self-supervised next-token prediction on raw text (domain or style adaptation)."""

from __future__ import annotations

from typing import Literal

from tunesmith.data.roles import Role, check_columns, plain_text_only
from tunesmith.data.templates import fields, text_of
from tunesmith.data.tokenize import tokenize_causal_lm
from tunesmith.generation import generate
from tunesmith.objectives import lm
from tunesmith.objectives.spec import Objective
from tunesmith.schema import Section


class CausalLMConfig(Section):
    """Raw text in, next-token loss on every token."""

    name: Literal["causal_lm"]
    sample_prompt_tokens: int = 24  # samples continue the first N tokens of held-out texts


ROLES = (Role("text", templated=True, help="the raw text to learn (or data.template over several columns)"),)


def check_config(cfg) -> list[str]:
    return check_columns(cfg, ROLES) + plain_text_only(cfg)


def check(cfg, dd, tokenizer) -> list[str]:
    d = cfg.data
    needed = fields(d.template) if d.template else [d.column("text")]
    return [f"data.{'template' if d.template else 'columns.text'}: column {c!r} is not in the {split} data of {d.source!r}; columns are {ds.column_names}"
            for split, ds in dd.items() for c in needed if c not in ds.column_names]


def tokenize(ds, tokenizer, cfg, task):
    return tokenize_causal_lm(ds, tokenizer, cfg.data)


def continuations(rows, tokenizer, cfg) -> tuple[list[list[int]], list[str]]:
    """Each text's first objective.sample_prompt_tokens tokens, and the eval.max_new_tokens that follow them."""
    n = cfg.objective.sample_prompt_tokens
    prompts, refs = [], []
    for row in rows:
        ids = tokenizer(text_of(row, cfg.data))["input_ids"]
        prompts.append(ids[:n])
        refs.append(tokenizer.decode(ids[n : n + cfg.eval.max_new_tokens], skip_special_tokens=True))
    return prompts, refs


def evaluate(model, tokenizer, raw, features, cfg, task) -> dict:
    prompts, refs = continuations(raw.select(range(min(cfg.eval.num_samples, len(raw)))), tokenizer, cfg)
    gen_prompts, gen_refs = continuations(lm.generation_rows(raw, cfg), tokenizer, cfg)
    kept = [i for i, r in enumerate(gen_refs) if r.strip()]  # a text too short to continue has nothing to score
    return lm.evaluate(model, tokenizer, features, cfg, prompts, refs,
                       [gen_prompts[i] for i in kept], [gen_refs[i] for i in kept])


def probe(model, tokenizer, texts, cfg, task, **options) -> list[str]:
    return generate(model, tokenizer, [tokenizer(t)["input_ids"] for t in texts], cfg.eval.max_new_tokens, **options)


OBJECTIVE = Objective(
    name="causal_lm", config_cls=CausalLMConfig, model_kind="causal_lm", metric_names=lm.METRICS,
    roles=ROLES, check_config=check_config,
    best_metric="eval_loss", check=check, setup=lambda cfg, dd: {}, tokenize=tokenize,
    collator=lm.collator, evaluate=evaluate, probe=probe,
    summary="raw text, next-token prediction (loss, perplexity)",
    metric_directions=lm.DIRECTIONS,
)
