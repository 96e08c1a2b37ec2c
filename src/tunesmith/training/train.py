"""The training recipe, top to bottom: prepare the data, measure the base model, apply the method, train through
the objective's trainer, measure the tuned model the same way, save, and write the run folder (manifest.json last)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import tunesmith.hardware as hardware
from tunesmith.config import RunConfig
from tunesmith.data.sources import fingerprint
from tunesmith.eval import benchmarks
from tunesmith.hardware import machine
from tunesmith.methods.peft_common import save_labels
from tunesmith.methods.registry import METHODS, apply_method
from tunesmith.modeling import (
    count_parameters,
    device,
    ensure_pad_token,
    load_model,
    to_device,
)
from tunesmith.report.card import finish_run
from tunesmith.report.html import write_report
from tunesmith.report.metrics_log import MetricsLog
from tunesmith.report.runlog import peak_memory_mb, versions, write_json
from tunesmith.report.tracking import tracking_callbacks
from tunesmith.runs import (
    OutputPlan,
    Run,
    commit_output,
    discard_output,
    read_json_file,
    run_marker,
    start_manifest,
)
from tunesmith.runs.folder import DATA_PREVIEW
from tunesmith.runs.resume import BASE, STARTED_CONFIG, checkpoint_marker, last_checkpoint
from tunesmith.training.evaluate import base_forgetting_scores, forgetting_scores
from tunesmith.training.prepare import Prepared, measure
from tunesmith.trust import trusting

log = logging.getLogger("tunesmith")


PREVIEW_EXAMPLES = 3  # training examples in a run's data_preview.json


def train_run(cfg: RunConfig, plan: OutputPlan, bf16: bool, trust_remote_code: bool = False,
              checkpoint: Path | None = None) -> Run:
    """Train `cfg` into plan.stage and swap it in as plan.target when it has finished (see tunesmith.runs); with
    `checkpoint`, continue the stopped run in plan.stage from there (tunesmith.runs.resume)."""
    from transformers import set_seed

    set_seed(cfg.train.seed)
    with trusting(trust_remote_code):  # code a config names (an rl reward function) runs only with the flag
        prep = Prepared(cfg, trust_remote_code=trust_remote_code)
    for split in prep.objective.tokenize_first:  # rows that cannot be tokenized fail now, before the model loads
        prep.features[split]
    forget_tasks = benchmarks.load_tasks(cfg.eval.forgetting) if cfg.eval.forgetting else []  # fail before training
    method = METHODS[cfg.method.name]
    set_seed(cfg.train.seed)
    model = load_model(cfg.model, prep.objective.model_kind, trust_remote_code=trust_remote_code,
                       **prep.objective.model_kwargs(prep.task), **method.load_kwargs(cfg.method))
    ensure_pad_token(prep.tokenizer, model)
    to_device(model)

    stage, main = plan.stage, hardware.is_main()  # with --nproc, only rank 0 writes the run folder
    if main:
        stage.mkdir(parents=True, exist_ok=True)
        manifest = start_manifest(model=cfg.model.name, method=cfg.method.name, objective=cfg.objective.name, seed=cfg.train.seed)
        if checkpoint:  # the stopped run keeps its config and start time; the manifest says where it resumed
            before = run_marker(stage) or {}
            manifest.update(started=before.get("started", manifest["started"]),
                            resumed=[*before.get("resumed", []), {"from": checkpoint.name, "at": manifest["started"]}])
            if STARTED_CONFIG in before:
                manifest[STARTED_CONFIG] = before[STARTED_CONFIG]
        else:  # config.yaml, and a copy in the manifest: --resume refuses a config.yaml edited since (runs.resume)
            (stage / "config.yaml").write_text(cfg.to_yaml())
            manifest[STARTED_CONFIG] = cfg.model_dump(mode="json")
            _write_preview(prep, stage)
        write_json(stage / "manifest.json", manifest)
    try:
        with trusting(trust_remote_code):
            model = _train_and_record(model, prep, forget_tasks, cfg, stage, bf16, checkpoint)
    except BaseException as err:
        if main:
            _failed(plan, err)
        raise
    if not main:
        return None
    return Run(commit_output(plan), trust_remote_code=trust_remote_code, model=model, tokenizer=prep.tokenizer)


def _write_preview(prep: Prepared, stage: Path) -> None:
    """data_preview.json, which the board shows; a preview that cannot be made is logged, never fails the run."""
    try:
        write_json(stage / DATA_PREVIEW, prep.preview(PREVIEW_EXAMPLES, stats=False))
    except Exception as err:  # noqa: BLE001 - the run trains without its preview
        log.warning("No data preview for this run (%s: %s)", type(err).__name__, err)


def _failed(plan, err: BaseException) -> None:
    """A run that stops with an error: beside an old run, the new one is dropped (the old stays as it was);
    a new folder keeps what it has, marked failed, so that every command says it did not finish."""
    if plan.swaps and last_checkpoint(plan.stage) is None:
        discard_output(plan)
        log.warning("The new run failed; %s is unchanged", plan.target)
        return
    path = plan.stage / "manifest.json"
    manifest = run_marker(plan.stage) or {}
    manifest.update(status="failed" if isinstance(err, Exception) else "interrupted", error=f"{type(err).__name__}: {err}"[:2000],
                    stopped=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(path, manifest)


def _train_and_record(model, prep: Prepared, forget_tasks: list, cfg: RunConfig, run_dir: Path, bf16: bool,
                      checkpoint: Path | None = None):
    """Measure the base, train, measure the tuned model, save; manifest.json is written last."""
    tok, task = prep.tokenizer, prep.task
    method = METHODS[cfg.method.name]
    main = hardware.is_main()
    if not main:  # another process of a --nproc run: it only trains
        base = base_forget = None
    elif checkpoint and (run_dir / BASE).is_file():  # resumed: the base was measured when the run started
        base, base_forget = (read_json_file(run_dir / BASE).get(k, {}) for k in ("base", "forgetting"))
    else:
        log.info("Evaluating the base model on %d examples", len(prep.data["eval"]))
        base = measure(model, prep, cfg)
        base_forget = base_forgetting_scores(model, tok, forget_tasks, cfg)
        write_json(run_dir / BASE, {"base": base, "forgetting": base_forget})

    model = apply_method(model, cfg.method)
    # what the method keeps from the untrained model for `save`; removed after saving (a --nproc worker: its own)
    scratch = run_dir / "scratch" if main else Path(tempfile.mkdtemp(prefix=f"tunesmith-rank{hardware.rank()}-"))
    if method.start:
        method.start(model, cfg.method, scratch)
    params = count_parameters(model)
    log.info("Trainable parameters: %s of %s (%.4f%%)", f"{params['trainable_params']:,}", f"{params['total_params']:,}", params["trainable_percent"])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    if method.fit:  # a method that trains without a Trainer (features)
        model, stats = method.fit(model, tok, prep, cfg, run_dir)
    else:
        model, stats = _train_with_trainer(model, tok, prep, cfg, run_dir, checkpoint)
    train_seconds = time.time() - start
    if not main:
        shutil.rmtree(scratch, ignore_errors=True)
        return model

    tuned = measure(model, prep, cfg)
    tuned_forget = forgetting_scores(model, tok, forget_tasks, cfg, "tuned model")

    weights_dir = run_dir / method.saves
    (method.save or _save_pretrained)(model, weights_dir, scratch)
    tok.save_pretrained(weights_dir)
    if method.peft:
        save_labels(model, weights_dir)  # label names where plain transformers + PEFT users find them
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    (run_dir / BASE).unlink(missing_ok=True)  # it goes into eval.json

    forgetting = {"forgetting": benchmarks.forgetting(base_forget, tuned_forget)} if forget_tasks else {}
    directions = {m: prep.objective.direction(m) for m in {**base["metrics"], **tuned["metrics"]}
                  if isinstance(base["metrics"].get(m, tuned["metrics"].get(m)), (int, float))}
    write_json(run_dir / "eval.json", {"base": base["metrics"], "tuned": tuned["metrics"], "directions": directions,
                                        "probes": {"inputs": cfg.eval.probes, "base": base["probes"], "tuned": tuned["probes"]},
                                        **forgetting})
    tokens = stats["tokens_seen"]
    manifest = {
        **(run_marker(run_dir) or {}),
        "saved": weights_dir.name, "task": task,
        "train_examples": len(prep.data["train"]), "eval_examples": len(prep.data["eval"]),
        "data_fingerprint": {split: fingerprint(ds) for split, ds in prep.data.items()},
        **params, "train_seconds": round(train_seconds, 2), "train_steps": stats["train_steps"],
        "train_loss": stats["train_loss"], "tokens_seen": tokens,
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds else 0.0,
        "peak_memory": peak_memory_mb(), "device": str(device()), "bf16": bf16, "processes": hardware.world_size(),
        "machine": machine(bf16, hardware.resolve_dtype(cfg.model.dtype, cfg.train.use_cpu, announce=False)), "versions": versions(),
    }
    write_json(run_dir / "manifest.json", manifest)  # the report reads it
    if cfg.report.html:
        write_report(run_dir)
    finish_run(run_dir, cfg.train.report_to)  # the model card (README.md in the weights folder); results to trackers
    write_json(run_dir / "manifest.json", {**manifest, "status": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return model


def _train_with_trainer(model, tok, prep, cfg, run_dir: Path, checkpoint: Path | None = None) -> tuple[Any, dict]:
    """The objective's trainer (transformers.Trainer by default, a TRL trainer for the objectives that own one)."""
    callbacks = [MetricsLog(run_dir / "metrics.jsonl"), *tracking_callbacks(cfg.train.report_to, run_dir)]
    callbacks += [checkpoint_marker()] if cfg.train.save_steps else []
    if METHODS[cfg.method.name].callbacks:  # a method's own per-step work (adalora: rank allocation after each step)
        callbacks += METHODS[cfg.method.name].callbacks(model, cfg)
    trainer = prep.objective.build_trainer(model, tok, prep, cfg, run_dir, callbacks)
    if hardware.world_size() > 1 and getattr(trainer, "accelerator", None) is not None:
        log.info("Data-parallel on %d processes: %s (accelerate %s)", hardware.world_size(), cfg.train.distributed,
                 trainer.accelerator.distributed_type.value)
    result = trainer.train(resume_from_checkpoint=str(checkpoint)) if checkpoint else trainer.train()
    # accelerate wraps forward in bf16 autocast for mixed precision and leaves it on the model: unwrap it, so the
    # tuned model is measured (and saved) in full precision, as the base was and as a reload will be.
    accelerator = getattr(trainer, "accelerator", None)  # a trainer of our own (PPO) may have none
    model = accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False) if accelerator else trainer.model
    return model, {"train_steps": trainer.state.global_step, "train_loss": result.training_loss,
                           "tokens_seen": int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)}


def _save_pretrained(model, folder: Path, scratch: Path | None = None) -> None:
    model.save_pretrained(folder)


