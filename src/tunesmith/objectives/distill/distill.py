"""distill and distill_lm: knowledge distillation. A student learns a teacher's output distribution (soft labels):

    loss = alpha * T^2 * KL(teacher || student, both softened by temperature T) + (1 - alpha) * the task loss

- `distill`: classification. The student is a sequence classifier whose head gets the teacher's labels; the KL is on
  the class logits; the task loss is the cross-entropy on the label where a row has one. Rows without a label (a
  null label, or training data with no label column at all) train on the teacher alone (alpha 1 for them), so
  unlabelled text is welcome. Metrics: accuracy, precision, recall, F1, `agreement` (the share of held-out rows
  where student and teacher predict the same label) and the teacher's own `teacher_accuracy` / `teacher_f1`.
- `distill_lm`: causal LM (`objective.task: causal_lm`, every next token) or sft (`task: sft`, the response tokens
  only), the data read and tokenized exactly as those objectives do; `task: auto` (the default) takes the teacher
  run's objective (sft or causal_lm), and causal_lm for a teacher given by model name. Per-token KL on the teacher's
  top_k tokens plus one bucket for the rest (distill_teacher explains). Metrics: those of causal_lm / sft (eval_loss,
  perplexity, samples, generation metrics), `agreement` (share of labelled held-out tokens where the student's most
  likely next token is the teacher's) and the teacher's own `teacher_eval_loss` / `teacher_perplexity`.

Two objective names, not one with a task switch, because an objective has one model kind (a sequence classifier or
a causal LM) that every command reads from it (Objective.model_kind).

The teacher (`objective.teacher`): a finished run folder or a model name/folder, with the student's tokenizer. Its
outputs are computed once per example and cached on disk (distill_teacher). The training loop is a small Trainer
subclass (distill_loss), not TRL's DistillationTrainer or GKDTrainer: both run the teacher live at every step.

`objective.exclude_teacher_rows: true` drops from the student's training split every row whose text the teacher run
trained on (its training split is rebuilt from its config.yaml, as `tunesmith train` built it, and matched by the
text columns it read), so a student learns the teacher's soft labels on text the teacher never saw.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Literal

from pydantic import Field

from tunesmith.data.roles import Role, check_columns, no_packing, plain_text_only
from tunesmith.data.templates import fields
from tunesmith.data.tokenize import IGNORE, model_inputs, tokenize_classify
from tunesmith.errors import TunesmithError
from tunesmith.objectives import causal_lm, classify, lm, sft
from tunesmith.objectives.distill import loss as distill_loss
from tunesmith.objectives.distill import teacher as teachers
from tunesmith.objectives.spec import Objective
from tunesmith.schema import Section

log = logging.getLogger("tunesmith")


class DistillOptions(Section):
    """What both distillation objectives share."""

    name: str
    teacher: str | None = Field(
        None, description="A finished run folder (its tuned model) or a model name/folder, with the student's tokenizer.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KL to the teacher; 1 - alpha weighs the task loss "
                         "(rows without a label: alpha 1).")
    temperature: float = Field(2.0, gt=0, description="Softens both distributions; the KL term is scaled by T^2.")
    kl: Literal["forward", "reverse", "jsd"] = Field(
        "forward", description="forward KL(teacher || student), reverse KL(student || teacher), or jsd: GKD's "
        "generalized Jensen-Shannon divergence with beta.")
    beta: float = Field(0.5, ge=0, le=1, description="jsd only: GKD's interpolation (0: forward KL, 1: reverse KL).")
    exclude_teacher_rows: bool = Field(
        False, description="Drop the training rows the teacher run trained on (matched by text): soft labels on text "
        "the teacher never saw.")
    labels_only_on_teacher_rows: bool = Field(
        False, description="Keep the labels of the rows the teacher run trained on and drop every other row's label "
        "(self-training: the labelled data stays the teacher's, the rest is unlabelled text).")
    cache: bool = Field(True, description="Cache the teacher's outputs under the tunesmith cache folder and re-use them.")


class DistillConfig(DistillOptions):
    """Classification distillation: the student's class logits learn the teacher's."""

    name: Literal["distill"]


class DistillLMConfig(DistillOptions):
    """Causal LM / sft distillation: per-token KL over the vocabulary (the teacher's top_k tokens + the rest)."""

    name: Literal["distill_lm"]
    task: Literal["auto", "causal_lm", "sft"] = Field(
        "auto", description="causal_lm (every next token) or sft (response tokens only); auto: the teacher run's "
        "objective, causal_lm for a teacher given by model name.")
    temperature: float = Field(1.0, gt=0, description="Softens both distributions; the KL term is scaled by T^2.")
    top_k: int = Field(64, gt=0, description="Teacher logits cached per token (the rest of its mass is one bucket).")
    sample_prompt_tokens: int = Field(24, gt=0, description="task causal_lm: samples continue the first N tokens.")


ROLES = (
    Role("text", templated=True, help="the text to classify (or data.template over several columns)"),
    Role("text_pair", optional=True, help="a second text read with the first"),
    Role("label", kind="optional_label", help="the class where known; rows without one learn from the teacher alone"),
)
LM_ROLES = causal_lm.ROLES + sft.ROLES  # task causal_lm reads text; task sft prompt and response
LM_BASE = {"causal_lm": causal_lm, "sft": sft}


def lm_task(cfg) -> str:
    """distill_lm's task: objective.task, else the teacher run's (sft or causal_lm), else causal_lm."""
    o = cfg.objective
    if o.task != "auto":
        return o.task
    if o.teacher and teachers.is_run(o.teacher):
        from pathlib import Path

        from tunesmith.config import load_config

        try:
            tcfg = load_config(Path(o.teacher).expanduser() / "config.yaml")
        except TunesmithError:
            return "causal_lm"  # the teacher's checks say what is wrong with it
        name = tcfg.objective.name
        return lm_task(tcfg) if name == "distill_lm" else name if name in LM_BASE else "causal_lm"
    return "causal_lm"


def check_config(cfg) -> list[str]:
    return check_columns(cfg, ROLES) + plain_text_only(cfg) + no_packing(cfg)


def check_config_lm(cfg) -> list[str]:
    return LM_BASE[lm_task(cfg)].check_config(cfg)


# ---------------------------------------------------------------------------------------------
# Data: the teacher, the columns, and the rows the teacher trained on


def teacher_ready(cfg) -> bool:
    """Whether the teacher can be checked here. validate accepts one that does not exist yet (trained first, as a
    reward run is for rl) and leaves hub ids to training; training needs it, here or on a reachable hub."""
    from tunesmith.assets import hub_reachable, looks_like_path
    from tunesmith.trust import trust_decided

    teacher = cfg.objective.teacher
    if teachers.present(teacher):
        return True
    if trust_decided() is None:
        log.info("%s: %s is not here yet; it is checked when it is (train the teacher first)", teachers.KEY, teacher)
        return False
    if not looks_like_path(teacher) and hub_reachable():
        return True
    raise TunesmithError(f"{teachers.KEY}: {teacher!r} is not a folder here (a run folder: train the teacher first, "
                         "e.g. tunesmith train <its config>) nor an offline catalog model; fix the path or train it")


def teacher_problems(cfg, tokenizer, kind: str) -> list[str]:
    teacher = cfg.objective.teacher
    if not teacher:
        return [f"{teachers.KEY}: name the teacher: a finished run folder (e.g. runs/distill-teacher-sentiment) or "
                "a model name or folder with the student's tokenizer"]
    if not teacher_ready(cfg):
        return []
    return teachers.location_problems(teacher, kind) or teachers.tokenizer_problems(cfg, tokenizer)


def check(cfg, dd, tokenizer) -> list[str]:
    d = cfg.data
    label = d.column("label")
    problems = teacher_problems(cfg, tokenizer, "classify")
    text_columns = fields(d.template) if d.template else [d.column("text")] + ([d.column("text_pair")] if d.column("text_pair") else [])
    for split, ds in dd.items():
        problems += [f"data.{'template' if d.template else 'columns.text'}: column {c!r} is not in the {split} data of "
                     f"{d.source!r}; columns are {ds.column_names}" for c in text_columns if c not in ds.column_names]
    evalset = dd["eval"]
    if label not in evalset.column_names:
        problems.append(f"data.columns.label: the eval data has no column {label!r}; accuracy and agreement are "
                        "measured on labelled held-out rows: give the eval split labels (data.eval_split)")
    elif any(_no_label(v) for v in evalset[label][:]):
        n = sum(_no_label(v) for v in evalset[label][:])
        problems.append(f"data.columns.label: {n} of {len(evalset)} eval rows have no label; the eval set is "
                        "measured against labels: label them or evaluate on a labelled split (data.eval_split)")
    return problems


def check_lm(cfg, dd, tokenizer) -> list[str]:
    return teacher_problems(cfg, tokenizer, "causal_lm") + LM_BASE[lm_task(cfg)].check(cfg, dd, tokenizer)


def _no_label(value) -> bool:
    return value is None or value == -1 or (isinstance(value, float) and math.isnan(value))


def _teacher_rows(cfg, train, option: str) -> list[bool]:
    """For each row of `train`: whether the teacher run trained on it (matched by the text columns it read)."""
    from pathlib import Path

    from tunesmith.data.sources import fingerprint, load_splits
    from tunesmith.data.templates import reads
    from tunesmith.runs import Run

    teacher = cfg.objective.teacher
    if not teachers.is_run(teacher):
        raise TunesmithError(f"objective.{option}: {teacher!r} is not a run folder, so which rows it "
                             "trained on is unknown; remove the option or name the teacher's run folder")
    run = Run(Path(teacher).expanduser())
    seen_rows = load_splits(run.config.data, run.config.train.seed, reads(run.config))["train"]
    if fingerprint(seen_rows) != (run.manifest.get("data_fingerprint") or {}).get("train"):
        log.warning("objective.%s: the teacher's training rows rebuilt from %s/config.yaml differ from those it "
                    "trained on (its data changed since?); matching the rebuilt ones", option, teacher)
    columns = sorted(reads(run.config).text)
    lacking = [c for c in columns if c not in train.column_names]
    if lacking:
        raise TunesmithError(f"objective.{option}: the teacher read the columns {columns}, and the "
                             f"student's training data lacks {lacking}; rows cannot be matched")
    seen = {json.dumps(row, sort_keys=True, default=str) for row in seen_rows.select_columns(columns)}
    return [json.dumps(row, sort_keys=True, default=str) in seen for row in train.select_columns(columns)]


def drop_teacher_rows(cfg, dd) -> int:
    """objective.exclude_teacher_rows: remove from dd['train'] the rows the teacher run trained on; their count."""
    teacher = cfg.objective.teacher
    if not cfg.objective.exclude_teacher_rows or not teacher or not teachers.present(teacher):
        return 0
    train = dd["train"]
    keep = [i for i, seen in enumerate(_teacher_rows(cfg, train, "exclude_teacher_rows")) if not seen]
    if not keep:
        raise TunesmithError(f"objective.exclude_teacher_rows: every one of the {len(train)} training rows is a row "
                             "the teacher trained on; give the student other text (e.g. no data.train_size)")
    dd["train"] = train.select(keep)
    log.info("objective.exclude_teacher_rows: dropped %d training rows the teacher trained on; %d remain",
             len(train) - len(keep), len(keep))
    return len(train) - len(keep)


def unlabel_other_rows(cfg, dd) -> int:
    """objective.labels_only_on_teacher_rows: drop the label of every training row the teacher did not train on (they
    learn from the teacher alone); the number of labels kept."""
    teacher, column = cfg.objective.teacher, cfg.data.column("label")
    if not getattr(cfg.objective, "labels_only_on_teacher_rows", False) or not teacher or not teachers.present(teacher):
        return -1
    train = dd["train"]
    if column not in train.column_names:
        return 0
    labelled = _teacher_rows(cfg, train, "labels_only_on_teacher_rows")
    if not any(labelled):
        raise TunesmithError("objective.labels_only_on_teacher_rows: none of the student's training rows is a row the "
                             "teacher trained on, so no label would be left; train the teacher on this data, or drop the option")
    feature = train.features[column]
    missing = -1 if type(feature).__name__ == "ClassLabel" or "int" in str(getattr(feature, "dtype", "")) else None
    dd["train"] = train.map(lambda row, i: {column: row[column] if labelled[i] else missing}, with_indices=True)
    log.info("objective.labels_only_on_teacher_rows: %d labelled rows (the teacher's), %d rows learn from the teacher alone",
             sum(labelled), len(labelled) - sum(labelled))
    return sum(labelled)


def setup(cfg, dd) -> dict:
    """The teacher's labels (the student's head gets them; before the teacher exists, validate reads the data's),
    after dropping the rows the teacher trained on (exclude_teacher_rows: dd['train'] changes here, before anything
    is tokenized, so the run's counts and data fingerprint describe what the student saw)."""
    dropped = drop_teacher_rows(cfg, dd)
    ready = cfg.objective.teacher and teacher_ready(cfg)
    names = teachers.labels(cfg) if ready else classify.setup(cfg, dd)["labels"]
    kept = unlabel_other_rows(cfg, dd)
    return {"labels": names, "excluded_teacher_rows": dropped, **({"labelled_rows": kept} if kept >= 0 else {})}


def setup_lm(cfg, dd) -> dict:
    return {"task": lm_task(cfg), "excluded_teacher_rows": drop_teacher_rows(cfg, dd)}


def tokenize(ds, tokenizer, cfg, task):
    """As classify tokenizes, with -100 (no label: the teacher alone) for a row without one."""
    ids = {name: i for i, name in enumerate(task["labels"])}
    column = cfg.data.column("label")
    if column not in ds.column_names:  # unlabelled text
        ds = ds.add_column(column, [None] * len(ds))
    names = getattr(ds.features.get(column), "names", None)

    def label_id(value):
        if _no_label(value):
            return IGNORE
        name = names[value] if names else str(int(value) if isinstance(value, float) and value.is_integer() else value)
        if name not in ids:
            raise TunesmithError(f"{cfg.data.source}: column {column!r} has the label {name!r}, which the teacher does "
                                 f"not know; its labels are {task['labels']}. Rename the labels in the data")
        return ids[name]

    return tokenize_classify(ds, tokenizer, cfg.data, label_id)


# ---------------------------------------------------------------------------------------------
# Evaluation: the task's metrics, agreement with the teacher, and the teacher's own


def evaluate(model, tokenizer, raw, features, cfg, task) -> dict:
    from tunesmith.eval.metrics import classification_metrics

    probs = classify.probabilities(model, tokenizer, features, cfg.train.per_device_eval_batch_size)
    tutor = teachers.outputs(cfg, model_inputs(features), "classify", tokenizer)["logits"]
    labels, preds, tutor_preds = features["labels"][:], probs.argmax(-1), tutor.argmax(-1)
    metrics = classification_metrics(labels, preds.tolist(), task["labels"])
    theirs = classification_metrics(labels, tutor_preds.tolist(), task["labels"])
    return {**metrics, "agreement": float((preds == tutor_preds).float().mean()),
            "teacher_accuracy": theirs["accuracy"], "teacher_f1": theirs["f1"]}


def evaluate_lm(model, tokenizer, raw, features, cfg, task) -> dict:
    metrics = LM_BASE[task["task"]].evaluate(model, tokenizer, raw, features, cfg, task)
    cached = teachers.outputs(cfg, model_inputs(features), "lm", tokenizer)
    loss = float((cached["lse"] - cached["label_logit"]).mean()) if len(cached["lse"]) else float("nan")
    return {**metrics, "agreement": lm_agreement(model, tokenizer, features, cached, cfg),
            "teacher_eval_loss": loss, "teacher_perplexity": math.exp(min(loss, 50))}


def lm_agreement(model, tokenizer, features, cached: dict, cfg) -> float:
    """Share of labelled positions where the student's most likely next token is the teacher's."""
    import torch

    from tunesmith.eval.metrics import batches

    model.eval()
    device = next(model.parameters()).device
    same = []
    for batch in batches(model_inputs(features), cfg.train.per_device_eval_batch_size, lm.collator(tokenizer)):
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        best = logits[:, -labels.size(1):][:, :-1].argmax(-1).cpu()
        same.append(best[labels[:, 1:] != IGNORE])
    same = torch.cat(same) if same else torch.zeros(0, dtype=torch.long)
    return float((same == cached["indices"][:, 0].long()).float().mean()) if len(same) else float("nan")


# ---------------------------------------------------------------------------------------------
# Training


def build_trainer(model, tokenizer, prep, cfg, run_dir, callbacks=()):
    """distill_loss's Trainer on the training rows, each with its row of the teacher's cached outputs."""
    from tunesmith.objectives.trainer import training_arguments

    kind = "classify" if prep.objective.model_kind == "classify" else "lm"
    train = model_inputs(prep.features["train"])
    cached = teachers.outputs(cfg, train, kind, tokenizer)
    train = train.add_column("teacher_row", list(range(len(train))))
    ours = {"remove_unused_columns": False}  # teacher_row reaches the collator
    args = training_arguments(cfg, run_dir, prep.objective, **{k: v for k, v in ours.items() if k not in cfg.train.extra})
    use_eval = cfg.train.eval_strategy != "no"
    compute_metrics = prep.objective.compute_metrics(prep.task) if prep.objective.compute_metrics else None
    return distill_loss.trainer(
        cfg.objective, kind, model=model, args=args, train_dataset=train,
        eval_dataset=model_inputs(prep.features["eval"]) if use_eval else None,
        data_collator=distill_loss.TeacherCollator(prep.objective.collator(tokenizer), cached),
        processing_class=tokenizer, compute_metrics=compute_metrics, callbacks=list(callbacks))


def probe_lm(model, tokenizer, texts, cfg, task, **options) -> list[str]:
    return LM_BASE[task.get("task", lm_task(cfg))].probe(model, tokenizer, texts, cfg, task, **options)


TEACHER_DIRECTIONS = {"agreement": "max", "teacher_accuracy": "neither", "teacher_f1": "neither",
                      "teacher_eval_loss": "neither", "teacher_perplexity": "neither"}

OBJECTIVE = Objective(
    name="distill", config_cls=DistillConfig, model_kind="classify", roles=ROLES, check_config=check_config,
    metric_names=classify.OBJECTIVE.metric_names | {"agreement", "teacher_accuracy", "teacher_f1"},
    best_metric="accuracy", check=check, setup=setup, tokenize=tokenize, collator=classify.collator,
    evaluate=evaluate, probe=classify.probe, model_kwargs=classify.model_kwargs,
    compute_metrics=classify.OBJECTIVE.compute_metrics, build_trainer=build_trainer, predict=classify.predict,
    summary="a classifier learns a teacher's soft labels (+ labels where known): accuracy, agreement with the teacher",
    metric_directions={**classify.OBJECTIVE.metric_directions, **TEACHER_DIRECTIONS},
)

OBJECTIVE_LM = Objective(
    name="distill_lm", config_cls=DistillLMConfig, model_kind="causal_lm", roles=LM_ROLES, check_config=check_config_lm,
    metric_names=lm.METRICS | {"agreement", "teacher_eval_loss", "teacher_perplexity"}, best_metric="eval_loss",
    check=check_lm, setup=setup_lm, tokenize=lambda ds, tok, cfg, task: LM_BASE[task["task"]].tokenize(ds, tok, cfg, task),
    collator=lm.collator, evaluate=evaluate_lm, probe=probe_lm, build_trainer=build_trainer,
    summary="a causal LM learns a teacher's next-token distributions (causal_lm or sft): perplexity, agreement",
    metric_directions={**lm.DIRECTIONS, **TEACHER_DIRECTIONS},
)
