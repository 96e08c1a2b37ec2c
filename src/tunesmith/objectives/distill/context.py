"""context_distill: context distillation. The teacher is the model itself reading a context the student will not see
(a long system prompt, rules, a few examples); the student, the same model without the context, learns the
teacher's next-token distributions on the teacher's own responses, so the behaviour stays without the prompt and
without its cost at every request.

    loss = alpha * D(teacher with the context || student without it) + (1 - alpha) * CE(the teacher's tokens)

per response token, D on the teacher's top_k tokens plus one bucket for the rest (distill_loss, distill_teacher),
temperature 1. The teacher answers every training prompt once (sampled at objective.temperature, seeded), and its
outputs at the response tokens are cached with the responses (context_distill_teacher), so training runs the student
alone: one model in memory and no teacher pass per step.

Why not TRL's experimental SDFTTrainer (prompt + privileged_context, under LoRA the base with adapters disabled): it
is on-policy: it samples num_generations completions from the student every few steps and runs the teacher on
them live, which on CPU costs a generation pass per step, and it neither caches the teacher's outputs nor measures
the behaviour the context asks for. Here the teacher's responses are generated once (off-policy, the teacher's own
answers, as in Askell et al. 2021 / Snell et al. 2022) and the loss is distill_loss's, shared with distill_lm.

Metrics on the held-out prompts (eval.json): `check_rate` (share of the model's greedy answers without the context
that pass objective.check), `teacher_check_rate` (the base model's greedy answers with the context: the same value
for base and tuned), `kl_to_teacher` and `agreement` (on the teacher's greedy answers: KL(teacher || model) per
token, and the share of tokens where both predict the same next token), `eval_loss` (the model's cross-entropy on
those answers without the context) and `context_tokens`: the prompt tokens the context adds per request, which the
tuned student saves.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Literal

from pydantic import Field

from tunesmith.data.chat import is_chat
from tunesmith.data.roles import Role, check_columns, no_packing
from tunesmith.errors import TunesmithError
from tunesmith.objectives import lm
from tunesmith.objectives.distill import context_teacher as teacher
from tunesmith.objectives.spec import Objective
from tunesmith.schema import Section

log = logging.getLogger("tunesmith")


class Check(Section):
    """A rule an answer must follow, checked on the text (surrounding whitespace stripped)."""

    name: Literal[tuple(teacher.CHECKS)] = Field(description="max_words, min_words, starts_with, ends_with, contains, "
                                                 "regex (re.search), lowercase, json_object")
    value: int | str | None = Field(None, description="The number of words or the text; none for lowercase and json_object.")


class ContextDistillConfig(Section):
    """The model with a context teaches itself without it."""

    name: Literal["context_distill"]
    context: str | None = Field(None, description="The text the teacher reads and the student does not (rules, a long "
                                "system prompt, a few examples).")
    context_file: str | None = Field(None, description="A file holding the context instead (relative to the working folder).")
    placement: Literal["system", "prefix"] = Field(
        "system", description="system: the context is the system message (after data.system_prompt; data.format chat); "
        "prefix: it comes before the prompt, a blank line between.")
    max_new_tokens: int = Field(64, gt=0, description="Longest teacher response (and evaluation answer), in tokens.")
    temperature: float = Field(1.0, ge=0, description="The teacher samples its training responses at this temperature "
                               "(0: greedy); evaluation answers are always greedy.")
    alpha: float = Field(1.0, ge=0, le=1, description="Weight of the divergence to the teacher; 1 - alpha weighs the "
                         "cross-entropy on the teacher's tokens.")
    kl: Literal["forward", "reverse", "jsd"] = Field(
        "forward", description="forward KL(teacher || student), reverse KL(student || teacher), or GKD's jsd with beta.")
    beta: float = Field(0.5, ge=0, le=1, description="jsd only: 0 is forward KL, 1 reverse KL.")
    top_k: int = Field(64, gt=0, description="Teacher logits kept per token (the rest of its mass is one bucket).")
    cache: bool = Field(True, description="Cache the teacher's responses and outputs on disk and re-use them.")
    check: Check | None = Field(None, description="The rule the context asks for, measured on held-out answers "
                                "(check_rate); none: only the divergence to the teacher is measured.")


ROLES = (Role("prompt", help="what the model is asked; the teacher answers it with the context, the student without"),)


def check_config(cfg) -> list[str]:
    from tunesmith.methods.registry import METHODS

    o, d = cfg.objective, cfg.data
    problems = check_columns(cfg, ROLES) + no_packing(cfg) + teacher.check_problems(o.check)
    if (o.context is None) == (o.context_file is None):
        problems.append("objective.context: give the context the teacher reads, either as objective.context (the text) "
                        "or as objective.context_file (a file), one of them")
    elif o.context is not None and not o.context.strip():
        problems.append("objective.context: the context is empty; the teacher would read what the student reads. "
                        "Write the rules or examples the student should learn to follow without them")
    elif o.context_file is not None:
        problems += teacher.context_file_problems(o.context_file)
    if o.placement == "system" and not is_chat(d):
        problems.append("objective.placement: 'system' puts the context in the chat template's system message, which "
                        "needs data.format: chat; set data.format: chat or objective.placement: prefix")
    if d.template:
        problems.append("data.template: context_distill reads the prompt column as it is (data.columns.prompt); remove "
                        "data.template")
    method = METHODS[cfg.method.name]
    if not method.peft and (method.saves != "model" or method.fit is not None):
        problems.append(f"method.name: {cfg.method.name!r} adds modules that cannot be switched off, and the teacher "
                        "is the base model (a PEFT adapter is switched off for the teacher's pass; full and freeze "
                        "are asked before training). Use lora (or another PEFT method), full or freeze")
    return problems


def check(cfg, dd, tokenizer) -> list[str]:
    d = cfg.data
    column = d.column("prompt")
    problems = [f"data.columns.prompt: column {column!r} is not in the {split} data of {d.source!r}; columns are "
                f"{ds.column_names}" for split, ds in dd.items() if column not in ds.column_names]
    if is_chat(d) and not getattr(tokenizer, "chat_template", None):
        problems.append(f"data.format: {d.format!r} renders prompts through a chat template, and {cfg.model.name!r} has "
                        "none; set data.chat_template (chatml, llama-3, or a Jinja file), or use data.format: text with "
                        "objective.placement: prefix")
    return problems + causal_lm_problems(cfg)


def causal_lm_problems(cfg) -> list[str]:
    """The teacher generates its answers: the model must be a causal (decoder) language model."""
    from transformers import AutoConfig

    from tunesmith.modeling import model_path

    config = AutoConfig.from_pretrained(model_path(cfg.model), revision=cfg.model.revision)
    names = list(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False) or not any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return [f"model.name: {cfg.model.name!r} is not a causal language model (architectures {names or '?'}); "
                "context distillation generates the teacher's answers. Use a decoder model such as smollm2-135m-instruct"]
    return []


def setup(cfg, dd) -> dict:
    return {"placement": cfg.objective.placement}


def tokenize(ds, tokenizer, cfg, task):
    """Each prompt as the student reads it (`input_ids`, no loss: the answer is the teacher's, added when training)
    and as the teacher does (`teacher_input_ids`); prompts whose teacher version leaves fewer than max_new_tokens
    within data.max_length are dropped (the teacher must read all of it)."""
    import datasets

    column, limit = cfg.data.column("prompt"), cfg.data.max_length - cfg.objective.max_new_tokens
    rows = {"input_ids": [], "labels": [], "teacher_input_ids": [], "full_length": []}
    for text in ds[column]:
        mine, theirs = (teacher.prompt_ids(tokenizer, cfg, text, c) for c in (False, True))
        if len(theirs) <= limit:
            rows["input_ids"].append(mine)
            rows["labels"].append([-100] * len(mine))
            rows["teacher_input_ids"].append(theirs)
            rows["full_length"].append(len(theirs) + cfg.objective.max_new_tokens)
    dropped = len(ds) - len(rows["input_ids"])
    if dropped and dropped == len(ds):
        raise TunesmithError(f"data.max_length: every prompt with the context is longer than data.max_length "
                             f"({cfg.data.max_length}) - objective.max_new_tokens ({cfg.objective.max_new_tokens}); "
                             "raise data.max_length or shorten the context")
    if dropped:
        log.warning("context_distill: dropped %d of %d prompts: with the context they leave fewer than "
                    "objective.max_new_tokens tokens within data.max_length (%d)", dropped, len(ds), cfg.data.max_length)
    return datasets.Dataset.from_dict(rows)


def loss_options(o) -> SimpleNamespace:
    """What distill_loss.lm_loss reads: the divergence at temperature 1 (objective.temperature is the sampling one)."""
    return SimpleNamespace(alpha=o.alpha, temperature=1.0, kl=o.kl, beta=o.beta)


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate(model, tokenizer, raw, features, cfg, task) -> dict:
    """The model's greedy answers without the context against the checker, and its divergence to the teacher's
    greedy answers with the context; the teacher's own check rate; the context's length in tokens."""
    from tunesmith.generation import generate

    o, n = cfg.objective, len(features)
    mine = [list(p) for p in features["input_ids"]]
    tutor = teacher.outputs(model, tokenizer, features, cfg, temperature=0.0)
    answers = generate(model, tokenizer, mine, o.max_new_tokens, cfg.train.per_device_eval_batch_size)
    theirs = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in teacher.responses(tutor)]
    extra = [len(t) - len(s) for s, t in zip(mine, features["teacher_input_ids"])]
    metrics = {"context_tokens": sum(extra) / n if n else 0.0, "eval_prompts": n,
               **divergence(model, tokenizer, teacher.pairs(mine, teacher.responses(tutor)), tutor, cfg)}
    if o.check is not None and n:
        metrics["check_rate"] = sum(teacher.passes(o.check, a) for a in answers) / n
        metrics["teacher_check_rate"] = sum(teacher.passes(o.check, a) for a in theirs) / n
    metrics["samples"] = [{"prompt": tokenizer.decode(p, skip_special_tokens=True), "reference": t, "generation": a}
                          for p, t, a in list(zip(mine, theirs, answers))[: cfg.eval.num_samples]]
    return metrics


def divergence(model, tokenizer, pairs, tutor: dict, cfg) -> dict:
    """Per response token of the teacher's answers, read without the context: forward KL(teacher || model) on the
    teacher's top_k + rest, agreement of the most likely next tokens, and the cross-entropy of the teacher's tokens."""
    import torch
    import torch.nn.functional as F

    from tunesmith.eval.metrics import batches
    from tunesmith.objectives.distill.loss import coarse
    from tunesmith.objectives.distill.loss import divergence as terms

    model.eval()
    device = next(model.parameters()).device
    at, kl, ce, same = 0, 0.0, 0.0, 0
    for batch in batches(pairs, cfg.train.per_device_eval_batch_size, lm.collator(tokenizer)):
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        logits = logits[:, -labels.size(1):][:, :-1].float().cpu()
        targets = labels[:, 1:]
        s = logits[targets != -100]
        k = slice(at, at + s.size(0))
        at += s.size(0)
        indices = tutor["indices"][k].long()
        student = coarse(s.gather(1, indices), s.logsumexp(-1))
        kl += float(terms(coarse(tutor["values"][k].float(), tutor["lse"][k].float()), student).sum())
        ce += float(F.cross_entropy(s, targets[targets != -100], reduction="sum"))
        same += int((s.argmax(-1) == indices[:, 0]).sum())
    if not at:
        return {}
    return {"kl_to_teacher": kl / at, "agreement": same / at, "eval_loss": ce / at, "eval_tokens": at}


def probe(model, tokenizer, texts, cfg, task, **options) -> list[str]:
    """Probes are answered without the context: what the student does on its own."""
    from tunesmith.generation import generate

    prompts = [teacher.prompt_ids(tokenizer, cfg, t, False) for t in texts]
    return generate(model, tokenizer, prompts, cfg.eval.max_new_tokens, **options)


# ---------------------------------------------------------------------------------------------
# Training


def build_trainer(model, tokenizer, prep, cfg, run_dir, callbacks=()):
    """distill_loss's Trainer on prompt (no context) + the teacher's response, each row with the teacher's cached
    outputs at its response tokens; evaluation rows (eval_strategy) score the teacher's greedy held-out answers."""
    from tunesmith.objectives.distill import loss as distill_loss
    from tunesmith.objectives.trainer import training_arguments

    o, feats = cfg.objective, prep.features["train"]
    tutor = teacher.outputs(model, tokenizer, feats, cfg, temperature=o.temperature)
    train = teacher.pairs([list(p) for p in feats["input_ids"]], teacher.responses(tutor))
    train = train.add_column("teacher_row", list(range(len(train))))
    evalset = None
    if cfg.train.eval_strategy != "no":
        held = prep.features["eval"]
        answers = teacher.responses(teacher.outputs(model, tokenizer, held, cfg, temperature=0.0))
        evalset = teacher.pairs([list(p) for p in held["input_ids"]], answers)
    ours = {"remove_unused_columns": False}  # teacher_row reaches the collator
    args = training_arguments(cfg, run_dir, prep.objective, **{k: v for k, v in ours.items() if k not in cfg.train.extra})
    return distill_loss.trainer(
        loss_options(o), "lm", model=model, args=args, train_dataset=train, eval_dataset=evalset,
        data_collator=distill_loss.TeacherCollator(lm.collator(tokenizer), tutor), processing_class=tokenizer,
        callbacks=list(callbacks))


OBJECTIVE = Objective(
    name="context_distill", config_cls=ContextDistillConfig, model_kind="causal_lm", roles=ROLES,
    check_config=check_config,
    metric_names=frozenset({"check_rate", "teacher_check_rate", "kl_to_teacher", "agreement", "eval_loss",
                            "context_tokens", "eval_prompts", "eval_tokens"}),
    best_metric="eval_loss", check=check, setup=setup, tokenize=tokenize,
    collator=lm.collator, evaluate=evaluate, probe=probe, build_trainer=build_trainer,
    summary="the model with a context (rules, a system prompt, examples) teaches itself without it: check rate, KL",
    metric_directions={"check_rate": "max", "teacher_check_rate": "neither", "kl_to_teacher": "min", "agreement": "max",
                       "eval_loss": "min", "context_tokens": "neither", "eval_prompts": "neither", "eval_tokens": "neither"},
)

