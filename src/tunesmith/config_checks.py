"""The config's cross-checks: conflicts between sections that no single field can see (a method that does not
apply to the objective, evaluation settings, the scheduler's name, train.extra against the objective's arguments
class, the sweep section). `tunesmith.config.load_config` runs them after the schema has validated each section."""

from __future__ import annotations

from tunesmith.config_io import suggest
from tunesmith.registries import methods, objectives
from tunesmith.sweep_config import sweep_problems


def cross_checks(cfg, load_config) -> list[str]:
    """Conflicts between sections that no single field can see. `load_config` (tunesmith.config's) checks the
    values a sweep would try."""
    problems = []
    objective = objectives()[cfg.objective.name]
    method = methods()[cfg.method.name]
    reason = method.unsupported.get(cfg.objective.name)
    if reason:
        problems.append(f"method.name: {cfg.method.name!r} does not apply to objective {cfg.objective.name!r}: {reason}")
    problems += method.check(cfg)
    problems += objective.check_config(cfg)  # data.columns roles, data options only some objectives support
    if cfg.eval.generation_metrics and objective.model_kind != "causal_lm":
        problems.append(f"eval.generation_metrics: scores generated text; objective {cfg.objective.name!r} generates none. "
                        "Remove eval.generation_metrics (classification reports accuracy, precision, recall, F1)")
    if cfg.eval.forgetting and objective.model_kind != "causal_lm":
        problems.append(f"eval.forgetting: benchmarks score a causal LM's log-likelihood; objective {cfg.objective.name!r} "
                        "trains a classifier. Remove eval.forgetting, or use objective causal_lm or sft")
    t = cfg.train
    if t.load_best_model_at_end and t.eval_strategy == "no":
        problems.append("train.load_best_model_at_end: needs evaluation during training; set train.eval_strategy to 'epoch' or 'steps'")
    if t.eval_strategy == "steps" and not t.eval_steps:
        problems.append("train.eval_steps: required when train.eval_strategy is 'steps'; set e.g. train.eval_steps=100")
    if t.save_steps and t.load_best_model_at_end and (t.eval_strategy != "steps" or not t.eval_steps
                                                       or t.save_steps % t.eval_steps):
        problems.append(f"train.save_steps: with load_best_model_at_end, checkpoints must fall on evaluations; set "
                        f"train.eval_strategy: steps and train.eval_steps to a divisor of {t.save_steps}")
    if t.metric_for_best_model:
        known = objective.metric_names
        name = t.metric_for_best_model.removeprefix("eval_")
        if name not in known:
            problems.append(f"train.metric_for_best_model: {t.metric_for_best_model!r} is not a metric of objective {cfg.objective.name!r}; expected one of {sorted(known)}")
    if t.max_steps <= 0 and t.num_train_epochs <= 0:
        problems.append("train: both num_train_epochs and max_steps are 0; set train.num_train_epochs=1 or train.max_steps=100")
    d = cfg.data
    if (not 0 < d.eval_size < 1) if isinstance(d.eval_size, float) else d.eval_size < 1:
        problems.append(f"data.eval_size: found {d.eval_size}; expected a fraction between 0 and 1 (exclusive) like 0.1, "
                        "or a count of at least 1 like 1000")
    if t.lr_scheduler_type not in KNOWN_SCHEDULERS:  # only an unusual name pays for importing transformers
        from transformers import SchedulerType

        schedulers = [s.value for s in SchedulerType]
        if t.lr_scheduler_type not in schedulers:
            problems.append(f"train.lr_scheduler_type: {t.lr_scheduler_type!r} is not a transformers scheduler "
                            f"(expected one of {schedulers}){suggest(t.lr_scheduler_type, schedulers)}")
    problems += _extra_problems(t, objectives()[cfg.objective.name].args_class)
    problems += sweep_problems(cfg, load_config) if cfg.sweep else []
    return problems


# transformers.SchedulerType values (5.23); a name outside this list is checked against the installed transformers.
KNOWN_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                    "warmup_stable_decay")


def _extra_problems(t, args_class) -> list[str]:
    """train.extra keys must be fields of the objective's arguments class (transformers.TrainingArguments, or a TRL
    objective's config class) that TrainConfig does not already name."""
    if not t.extra:
        return []
    import inspect

    cls = args_class()
    problems = []
    accepted = set(inspect.signature(cls).parameters)
    for key in t.extra:
        if key not in accepted:
            hint = suggest(key, accepted)
            problems.append(f"train.extra.{key}: not a {cls.__module__.split('.')[0]}.{cls.__name__} field{hint}")
        if key in type(t).model_fields:
            problems.append(f"train.extra.{key}: set it as train.{key} instead")
    if "resume_from_checkpoint" in t.extra:  # TrainingArguments accepts it, but Trainer.train() never reads it there
        problems.append("train.extra.resume_from_checkpoint: the Trainer never reads it there, and the run would silently "
                        "start again at step 1; remove it, set train.save_steps, and continue a stopped run with "
                        "`tunesmith train --resume RUN_DIR`")
    return problems
