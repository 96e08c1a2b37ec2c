"""The Python API that the CLI and users call: train(), load_run(), Run.evaluate/predict/generate, validate()."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from tunesmith.config import RunConfig, load_config
from tunesmith.data.inspect import describe_example, length_stats
from tunesmith.data.sources import fingerprint, load_splits
from tunesmith.errors import TunesmithError, raise_if
from tunesmith.eval import benchmarks
from tunesmith.methods.registry import METHODS, apply_method
from tunesmith.modeling import (
    count_parameters,
    device,
    ensure_pad_token,
    load_model,
    load_tokenizer,
    resolve_bf16,
)
from tunesmith.objectives.registry import OBJECTIVES
from tunesmith.objectives.trainer import build_trainer
from tunesmith.report.html import write_report
from tunesmith.report.runlog import MetricsLog, peak_memory_mb, versions, write_json
from tunesmith.runs import (
    check_run_folder,
    check_weights,
    commit_output,
    discard_output,
    plan_output,
    read_json_file,
    run_marker,
    start_manifest,
)

log = logging.getLogger("tunesmith")


def _overrides(overrides: dict | None, kwargs: dict) -> dict:
    """Keyword overrides: {'train.learning_rate': 1e-4} or train__learning_rate=1e-4."""
    out = dict(overrides or {})
    out.update({k.replace("__", "."): v for k, v in kwargs.items()})
    return out


# ---------------------------------------------------------------------------------------------
# Preparing data (shared by train, validate, preview and eval)


class Prepared:
    """Config, tokenizer, raw splits, task facts and features, checked together."""

    def __init__(self, cfg: RunConfig, tokenizer=None, task: dict | None = None, trust_remote_code: bool = False,
                 announce: bool = True):
        from tunesmith.data.templates import reads

        self.cfg = cfg
        self.objective = OBJECTIVES[cfg.objective.name]
        self.tokenizer = tokenizer or load_tokenizer(cfg.model, trust_remote_code=trust_remote_code)
        ensure_pad_token(self.tokenizer)
        self.dropped: list[str] = []  # rows the objective cannot use (null text or label, label -1), per split
        self.data = load_splits(cfg.data, cfg.train.seed, reads(cfg), self.dropped)
        for note in self.dropped if announce else []:
            log.warning("%s", note)
        raise_if(self.objective.check(cfg, self.data, self.tokenizer), source="data")
        self.task = task if task is not None else self.objective.setup(cfg, self.data)
        if cfg.eval.max_examples and cfg.eval.max_examples < len(self.data["eval"]):
            self.data["eval"] = self.data["eval"].shuffle(seed=cfg.train.seed).select(range(cfg.eval.max_examples))
        self.features = {split: self.objective.tokenize(ds, self.tokenizer, cfg, self.task) for split, ds in self.data.items()}

    def stats(self) -> dict:
        return {split: length_stats(f, self.cfg.data.max_length) for split, f in self.features.items()}


def validate(config, overrides: dict | list | None = None) -> dict:
    """Check the config and the data (columns, labels, lengths) without loading model weights. It never runs a
    model's own code: a model that asks for it (model.trust_remote_code) is checked with the standard classes."""
    cfg = load_config(config, overrides)
    if cfg.model.trust_remote_code:
        log.info("validate never runs a model's own code: checking %s with the standard transformers classes", cfg.model.name)
        cfg = load_config(cfg, {"model.trust_remote_code": False})
    from tunesmith.methods.targets import target_problems
    from tunesmith.modeling import bf16_problems

    # train.bf16 on this machine, and target_modules on the model built without its weights
    raise_if(bf16_problems(cfg.train) + target_problems(cfg, OBJECTIVES[cfg.objective.name].model_kind),
             source=str(config) if isinstance(config, (str, Path)) else None)
    prep = Prepared(cfg, announce=False)
    return {"config": cfg, "task": prep.task, "stats": prep.stats(), "dropped": prep.dropped,
            "splits": {k: len(v) for k, v in prep.data.items()}, "columns": prep.data["train"].column_names}


def preview(config, n: int = 3, overrides: dict | list | None = None) -> dict:
    """The first n training examples as the model sees them, plus length statistics."""
    cfg = load_config(config, overrides)
    prep = Prepared(cfg, announce=False)
    train = prep.features["train"]
    examples = [describe_example(train, i, prep.tokenizer, prep.task.get("labels")) for i in range(min(n, len(train)))]
    return {"examples": examples, "stats": prep.stats(), "task": prep.task, "dropped": prep.dropped}


# ---------------------------------------------------------------------------------------------
# Training


def default_run_dir(config) -> Path:
    stem = Path(config).stem if isinstance(config, (str, Path)) else "run"
    return Path("runs") / stem


def read_inputs(config, cfg: RunConfig) -> list[Path]:
    """Files and folders a run reads (its config, local data sources, benchmark files): an output folder may
    never contain them, so that replacing it cannot delete them."""
    paths = [Path(config)] if isinstance(config, (str, Path)) else []
    sources = [cfg.data.source, *(m.source for m in cfg.data.mix), *cfg.eval.forgetting]
    return paths + [Path(s).expanduser() for s in sources if Path(s).expanduser().exists()]


def train(config, *, out: str | Path | None = None, overwrite: bool = False, overrides: dict | list | None = None,
          trust_remote_code: bool = False, **kwargs) -> Run:
    """Train a model from a config path, dict or RunConfig; returns the finished Run.

    An existing run folder is replaced only with `overwrite`, only if tunesmith wrote it, and only once the new
    run has finished (it is written beside it and swapped in). `trust_remote_code` lets a model's own Python code
    run (the config's model.trust_remote_code alone never does)."""
    cfg = load_config(config, overrides if isinstance(overrides, list) else _overrides(overrides, kwargs))
    bf16 = resolve_bf16(cfg.train)  # true on hardware without native bf16 stops here, before anything loads
    plan = plan_output(Path(out) if out else default_run_dir(config), overwrite=overwrite, protected=read_inputs(config, cfg))

    from transformers import set_seed

    set_seed(cfg.train.seed)
    prep = Prepared(cfg, trust_remote_code=trust_remote_code)
    forget_tasks = benchmarks.load_tasks(cfg.eval.forgetting) if cfg.eval.forgetting else []  # fail before training
    method = METHODS[cfg.method.name]
    set_seed(cfg.train.seed)
    model = load_model(cfg.model, prep.objective.model_kind, trust_remote_code=trust_remote_code,
                       **prep.objective.model_kwargs(prep.task), **method.load_kwargs(cfg.method))
    ensure_pad_token(prep.tokenizer, model)
    to_device(model)
    if model.tunesmith_new_keys:
        log.info("Newly initialized (not in the checkpoint): %s", ", ".join(model.tunesmith_new_keys))

    stage = plan.stage
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "config.yaml").write_text(cfg.to_yaml())
    write_json(stage / "manifest.json", start_manifest(model=cfg.model.name, method=cfg.method.name,
                                                       objective=cfg.objective.name, seed=cfg.train.seed))
    try:
        model = _train_and_record(model, prep, forget_tasks, cfg, stage, bf16)
    except BaseException as err:
        _failed(plan, err)
        raise
    run = Run(commit_output(plan), trust_remote_code=trust_remote_code)
    run._model, run._tokenizer = model, prep.tokenizer
    return run


def _failed(plan, err: BaseException) -> None:
    """A run that stops with an error: beside an old run, the new one is dropped (the old stays as it was);
    a new folder keeps what it has, marked failed, so that every command says it did not finish."""
    if plan.swaps:
        discard_output(plan)
        log.warning("The new run failed; %s is unchanged", plan.target)
        return
    path = plan.stage / "manifest.json"
    manifest = run_marker(plan.stage) or {}
    manifest.update(status="failed" if isinstance(err, Exception) else "interrupted", error=f"{type(err).__name__}: {err}"[:2000],
                    stopped=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(path, manifest)


def _train_and_record(model, prep: Prepared, forget_tasks: list, cfg: RunConfig, run_dir: Path, bf16: bool):
    """Measure the base, train, measure the tuned model, save; manifest.json is written last."""
    tok, task = prep.tokenizer, prep.task
    method = METHODS[cfg.method.name]
    log.info("Evaluating the base model on %d examples", len(prep.data["eval"]))
    base = _measure(model, prep, cfg)
    base_forget = _base_forgetting_scores(model, tok, forget_tasks, cfg)

    model = apply_method(model, cfg.method)
    params = count_parameters(model)
    log.info("Trainable parameters: %s of %s (%.4f%%)", f"{params['trainable_params']:,}", f"{params['total_params']:,}", params["trainable_percent"])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    if method.fit:  # a method that trains without a Trainer (features)
        model, stats = method.fit(model, tok, prep, cfg, run_dir)
    else:
        model, stats = _train_with_trainer(model, tok, prep, cfg, run_dir)
    train_seconds = time.time() - start

    tuned = _measure(model, prep, cfg)
    tuned_forget = _forgetting_scores(model, tok, forget_tasks, cfg, "tuned model")

    weights_dir = run_dir / method.saves
    (method.save or _save_pretrained)(model, weights_dir)
    tok.save_pretrained(weights_dir)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)

    forgetting = {"forgetting": benchmarks.forgetting(base_forget, tuned_forget)} if forget_tasks else {}
    write_json(run_dir / "eval.json", {"base": base["metrics"], "tuned": tuned["metrics"],
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
        "peak_memory": peak_memory_mb(), "device": str(device()), "bf16": bf16, "versions": versions(),
    }
    write_json(run_dir / "manifest.json", manifest)  # the report reads it
    if cfg.report.html:
        write_report(run_dir)
    write_json(run_dir / "manifest.json", {**manifest, "status": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return model


def _measure(model, prep: Prepared, cfg: RunConfig) -> dict:
    """The objective's metrics on the eval set and its probes' outputs: the same for the base and the tuned model."""
    objective, tok, task = prep.objective, prep.tokenizer, prep.task
    metrics = objective.evaluate(model, tok, prep.data["eval"], prep.features["eval"], cfg, task)
    probes = objective.probe(model, tok, cfg.eval.probes, cfg, task) if cfg.eval.probes else []
    return {"metrics": metrics, "probes": probes}


def _train_with_trainer(model, tok, prep, cfg, run_dir: Path) -> tuple[Any, dict]:
    trainer = build_trainer(model, tok, prep.features, cfg, prep.objective, prep.task, run_dir,
                            [MetricsLog(run_dir / "metrics.jsonl")])
    result = trainer.train()
    return trainer.model, {"train_steps": trainer.state.global_step, "train_loss": result.training_loss,
                           "tokens_seen": int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)}


def _forgetting_scores(model, tok, tasks: list, cfg: RunConfig, what: str) -> dict:
    """eval.forgetting benchmarks on the model as it is now (base before tuning, tuned after)."""
    if not tasks:
        return {}
    return benchmarks.run_benchmarks(model, tok, tasks, limit=cfg.eval.forgetting_limit, shots=cfg.eval.forgetting_shots,
                                     batch_size=cfg.train.per_device_eval_batch_size, what=what)


def _base_forgetting_scores(model, tok, tasks: list, cfg: RunConfig) -> dict:
    """The base model's forgetting scores, cached on disk: every run of a comparison shares one base, so it is
    scored once (key: model, dtype, quantization, tasks and their files, limit, shots)."""
    import hashlib
    import json

    from tunesmith.assets import cache_dir, resolve_model

    if not tasks:
        return {}
    files = [Path(t) for t in cfg.eval.forgetting]
    key = json.dumps([str(resolve_model(cfg.model.name)), cfg.model.revision, cfg.model.dtype,
                      sorted(METHODS[cfg.method.name].load_kwargs(cfg.method)), cfg.eval.forgetting,
                      [(f.stat().st_size, f.stat().st_mtime) for f in files if f.is_file()],
                      cfg.eval.forgetting_limit, cfg.eval.forgetting_shots, benchmarks.SEED, versions()["tunesmith"]])
    path = cache_dir() / "bench" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    if path.exists():
        try:
            scores = read_json_file(path)
            log.info("Forgetting: re-using the base model's scores from %s", path)
            return scores
        except TunesmithError as err:
            log.warning("Forgetting: ignoring a damaged cache file (%s); scoring the base model again", err)
    scores = _forgetting_scores(model, tok, tasks, cfg, "base model")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, scores)
    return scores


def _save_pretrained(model, folder: Path) -> None:
    model.save_pretrained(folder)


def to_device(model):
    """Move to the GPU if there is one; a quantized model was placed by from_pretrained and stays."""
    if not getattr(model, "is_quantized", False):
        model.to(device())
    return model


# ---------------------------------------------------------------------------------------------
# A finished run


class Run:
    """A finished run folder: its config, manifest and eval results, and the tuned model loaded on demand.

    An unfinished, damaged or foreign folder raises a TunesmithError that says which. `trust_remote_code` lets the
    model's own Python code run (a config read off disk never decides that alone)."""

    def __init__(self, run_dir: str | Path, trust_remote_code: bool = False):
        self.dir = Path(run_dir)
        self.manifest: dict = check_run_folder(self.dir)
        self.config: RunConfig = load_config(self.dir / "config.yaml")
        self.objective = OBJECTIVES[self.config.objective.name]
        self.trust_remote_code = trust_remote_code
        self._model = self._tokenizer = None

    @property
    def task(self) -> dict:
        return self.manifest.get("task", {})

    @property
    def results(self) -> dict:
        return read_json_file(self.dir / "eval.json", f"; {self.dir} is damaged: train it again with --overwrite")

    @property
    def weights_dir(self) -> Path:
        return self.dir / self.manifest["saved"]

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            check_weights(self.weights_dir)
            self._tokenizer = load_tokenizer(self.config.model, path=str(self.weights_dir), trust_remote_code=self.trust_remote_code)
            ensure_pad_token(self._tokenizer)
        return self._tokenizer

    def load_base(self):
        from transformers import set_seed

        set_seed(self.config.train.seed)  # the same new head the base was evaluated with
        model = load_model(self.config.model, self.objective.model_kind, trust_remote_code=self.trust_remote_code,
                           **self.objective.model_kwargs(self.task), **self.method.load_kwargs(self.config.method))
        ensure_pad_token(self.tokenizer, model)
        return to_device(model).eval()

    @property
    def method(self):
        return METHODS[self.config.method.name]

    @property
    def is_peft_adapter(self) -> bool:
        """Saved in PEFT's layout (adapter_config.json + adapter_model.safetensors), loadable with plain PEFT."""
        return self.method.saves == "adapter" and self.method.load is None

    @property
    def model(self):
        """The tuned model: the base plus the run's adapter, or the run's whole saved model."""
        if self._model is None:
            self._model = to_device(self.load_tuned()).eval()
        return self._model

    def load_tuned(self, base=None):
        """A fresh copy of the tuned model: the saved weights on `base` (default: the run's base, as it was
        evaluated). A damaged or missing file is a TunesmithError that names it."""
        saved = self.weights_dir
        required = ("adapter_config.json",) if self.is_peft_adapter else ("config.json",) if self.method.saves == "model" else ()
        check_weights(saved, required)
        if base is None and self.method.saves != "model":
            base = self.load_base()
        try:
            if self.method.load:
                return self.method.load(base, saved)
            if self.is_peft_adapter:
                from peft import PeftModel

                return PeftModel.from_pretrained(base, str(saved))
            return load_model(self.config.model, self.objective.model_kind, path=str(saved), trust_remote_code=self.trust_remote_code)
        except TunesmithError:
            raise
        except Exception as err:  # files that passed the checks but do not fit the model (shapes, keys)
            raise TunesmithError(f"run {self.dir} is damaged: its weights in {saved}/ do not load onto "
                                 f"{self.config.model.name} ({type(err).__name__}: {str(err)[:500]}); "
                                 "train it again with --overwrite") from None

    def evaluate(self, data: str | None = None, split: str | None = None, columns: dict[str, str] | None = None) -> dict:
        """Base and tuned model on the run's eval set, or on another source with the same columns."""
        cfg = self.config
        if data or split or columns:
            changes: dict[str, Any] = {f"data.{role}_column": col for role, col in (columns or {}).items()}
            if data:  # the whole chosen split of another source is the eval set
                from tunesmith.data.sources import load_source

                splits = list(load_source(data))
                chosen = split or next((s for s in ("validation", "test") if s in splits), splits[0])
                changes.update({"data.source": data, "data.subset": None, "data.eval_split": chosen, "data.train_split": chosen,
                                "data.eval_size": 0.1, "data.train_size": None, "data.group_column": None})
            elif split:
                changes["data.eval_split"] = split
            cfg = load_config(cfg, changes)
        prep = Prepared(cfg, tokenizer=self.tokenizer, task=self.task)
        raw, feats = prep.data["eval"], prep.features["eval"]
        base = self.objective.evaluate(self.load_base(), self.tokenizer, raw, feats, cfg, self.task)
        tuned = self.objective.evaluate(self.model, self.tokenizer, raw, feats, cfg, self.task)
        return {"base": base, "tuned": tuned, "examples": len(raw)}

    def predict(self, texts: list[str] | str) -> list[dict]:
        """classify runs: label, score and per-label probabilities of each text."""
        if self.config.objective.name != "classify":
            raise TunesmithError(f"predict: run {self.dir} is a {self.config.objective.name} run; use generate() (`tunesmith generate`)")
        from tunesmith.objectives.classify import predict

        texts = [texts] if isinstance(texts, str) else list(texts)
        return predict(self.model, self.tokenizer, texts, self.config, self.task)

    def generate(self, prompts: list[str] | str, max_new_tokens: int | None = None) -> list[str]:
        """causal_lm / sft runs: greedy completions, prompts formatted as in training."""
        if self.objective.model_kind != "causal_lm":
            raise TunesmithError(f"generate: run {self.dir} is a classify run; use predict() (`tunesmith predict`)")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cfg = load_config(self.config, {"eval.max_new_tokens": max_new_tokens}) if max_new_tokens else self.config
        return self.objective.probe(self.model, self.tokenizer, prompts, cfg, self.task)

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, method={self.config.method.name!r}, objective={self.config.objective.name!r})"


def load_run(run_dir: str | Path, trust_remote_code: bool = False) -> Run:
    return Run(run_dir, trust_remote_code=trust_remote_code)


# ---------------------------------------------------------------------------------------------
# Benchmarks


def bench(model_or_run, tasks, limit: int | None = None, shots: int = 0, batch_size: int = 16,
          seed: int = benchmarks.SEED, trust_remote_code: bool = False) -> dict:
    """Multiple-choice benchmarks scored by log-likelihood (acc, acc_norm, n, shots per task).

    A run folder (or Run) -> {"base": {task: {...}}, "tuned": {...}}; a model (catalog name, local folder or hub
    id) -> {"model": {task: {...}}}. Tasks: names or sources, a list or comma-separated ("boolq,openbookqa").
    `limit` takes the first N questions after a seeded shuffle, the same for every model.
    """
    run = None
    if isinstance(model_or_run, Run) or any((Path(model_or_run) / f).is_file() for f in ("config.yaml", "manifest.json")):
        run = model_or_run if isinstance(model_or_run, Run) else Run(model_or_run, trust_remote_code=trust_remote_code)
        if run.objective.model_kind != "causal_lm":
            raise TunesmithError(f"benchmarks score a causal LM's log-likelihood; run {run.dir} is a {run.config.objective.name} run")
    task_list = benchmarks.load_tasks(tasks)  # bad names fail before any model loads
    options = {"limit": limit, "shots": shots, "batch_size": batch_size, "seed": seed}
    if run is not None:
        base = benchmarks.run_benchmarks(run.load_base(), run.tokenizer, task_list, what="base model", **options)
        tuned = benchmarks.run_benchmarks(run.model, run.tokenizer, task_list, what="tuned model", **options)
        return {"base": base, "tuned": tuned}
    from tunesmith.config import ModelConfig

    model_cfg = ModelConfig(name=str(model_or_run))
    tok = load_tokenizer(model_cfg, trust_remote_code=trust_remote_code)
    model = load_model(model_cfg, "causal_lm", trust_remote_code=trust_remote_code)
    ensure_pad_token(tok, model)
    to_device(model).eval()
    return {"model": benchmarks.run_benchmarks(model, tok, task_list, what=str(model_or_run), **options)}
