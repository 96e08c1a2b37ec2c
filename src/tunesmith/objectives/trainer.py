"""The default trainer (transformers.Trainer, for classify, causal_lm and sft) and the training arguments every
trainer shares: the config's `train` section turned into the objective's TrainingArguments class (a TRL objective's
config class subclasses it), with train.extra passed through. Our code only configures them."""

from __future__ import annotations

import logging
from pathlib import Path

from tunesmith.data.tokenize import model_inputs
from tunesmith.hardware import resolve_bf16, world_size

log = logging.getLogger("tunesmith")


def training_arguments(cfg, out_dir: Path, objective, **more):
    """objective.args_class() built from cfg.train (+ `more`, an objective's own settings, + train.extra)."""
    import torch

    t = cfg.train
    use_cpu = t.use_cpu or not torch.cuda.is_available()
    # the metric alone (load_best_model_at_end off) only names what the trainer records as best, as in transformers
    metric = t.metric_for_best_model or (objective.best_metric if t.load_best_model_at_end else None)
    return objective.args_class()(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps,
        # checkpoints: every train.save_steps with everything resume needs (two kept), else only what picking the
        # best model at the end needs
        save_strategy="steps" if t.save_steps else t.eval_strategy if t.load_best_model_at_end else "no",
        **({"save_steps": t.save_steps} if t.save_steps else {}),
        save_total_limit=2 if t.save_steps else 1 if t.load_best_model_at_end else None,
        save_only_model=not t.save_steps,
        load_best_model_at_end=t.load_best_model_at_end,
        metric_for_best_model=metric,
        greater_is_better=None if metric is None else objective.direction(metric) == "max",
        logging_steps=t.logging_steps,
        bf16=resolve_bf16(t),  # 'auto' resolved for this machine: the Trainer args record what the run used
        use_cpu=use_cpu,
        include_num_input_tokens_seen="non_padding",
        report_to="none",  # the trackers of train.report_to come as callbacks (tunesmith.report.tracking)
        **({} if "run_name" in t.extra else {"run_name": Path(out_dir).name.removesuffix(".partial")}),  # the tracker run
        **({"gradient_checkpointing": True} if t.gradient_checkpointing else {}),
        **({"use_liger_kernel": True} if t.use_liger_kernel else {}),  # checked first: hardware.gpu_setting_problems
        # --nproc: every trainable parameter takes part in each forward pass, so DDP need not search for unused
        # ones (an extra pass over the autograd graph per step); train.extra can turn the search back on
        **({"ddp_find_unused_parameters": False} if world_size() > 1 else {}),
        **trainer_settings(t),  # train.distributed: fsdp or DeepSpeed ZeRO through accelerate's plugins
        **more,
        **t.extra,
    )


def build_trainer(model, tokenizer, prep, cfg, out_dir: Path, callbacks=(), collator=None, **more):
    """Objective.build_trainer's default: a transformers.Trainer on the tokenized splits (`collator`: instead of the
    objective's; `more`: training arguments of the objective's own, as training_arguments takes them)."""
    from transformers import Trainer

    objective, task = prep.objective, prep.task
    compute_metrics = objective.compute_metrics(task) if objective.compute_metrics else None
    use_eval = cfg.train.eval_strategy != "no"
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, out_dir, objective, **more),
        train_dataset=model_inputs(prep.features["train"]),
        eval_dataset=model_inputs(prep.features["eval"]) if use_eval else None,
        data_collator=collator or objective.collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=list(callbacks),
    )
    if objective.model_kind == "classify":
        # A classification head's loss is the batch mean and ignores num_items_in_batch, but its forward takes
        # **kwargs, so the Trainer would treat it as a token-count loss: multiply it by the number of processes
        # (--nproc 2 trained on twice the gradient) and skip the division by gradient_accumulation_steps.
        trainer.model_accepts_loss_kwargs = False
    return trainer


# ---------------------------------------------------------------------------------------------
# train.distributed: the Trainer's FSDP / DeepSpeed settings


def _merge(base: dict, more: dict) -> dict:
    out = dict(base)
    for key, value in more.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def deepspeed_config(stage: int, options: dict | None = None) -> dict:
    """A DeepSpeed ZeRO config whose batch, accumulation, clipping and precision follow the Trainer's arguments
    ("auto"), as the transformers integration fills them in."""
    zero = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:  # save_pretrained gets whole weights, not shards
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    base = {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}
    return _merge(base, options or {})


def trainer_settings(train) -> dict:
    """TrainingArguments fields for cfg.train.distributed (none for ddp, which the Trainer sets up by itself)."""
    if train.distributed == "fsdp":  # FSDP2, whole weights when saving (a plain transformers/PEFT folder)
        return {"fsdp": True, "fsdp_config": _merge({"version": 2, "reshard_after_forward": True,
                                                     "state_dict_type": "FULL_STATE_DICT"}, train.distributed_options)}
    if train.distributed in ("zero2", "zero3"):
        return {"deepspeed": deepspeed_config(int(train.distributed[-1]), train.distributed_options)}
    return {}


def check_engine(train) -> list[str]:
    """Problems with train.distributed on this machine, each with the fix (`train` checks; `validate` does not, so a
    GPU config can be checked on a laptop); and with train.report_to (both check it), before anything loads."""
    import importlib.util

    import torch

    from tunesmith.report.tracking import missing_trackers

    problems = missing_trackers(train.report_to)
    if train.distributed == "ddp":
        return problems
    if not torch.cuda.is_available() or train.use_cpu:
        # accelerate sets FSDP and DeepSpeed up on accelerators only; on CPU it would quietly train with plain DDP
        problems.append(f"train.distributed: {train.distributed} shards the model across GPUs, and this machine trains "
                        "on CPU (accelerate would quietly fall back to plain DDP); use train.distributed: ddp here, "
                        "or run it where CUDA GPUs are")
    if train.distributed in ("zero2", "zero3") and importlib.util.find_spec("deepspeed") is None:
        problems.append(f"train.distributed: {train.distributed} needs the deepspeed package: pip install deepspeed")
    return problems
