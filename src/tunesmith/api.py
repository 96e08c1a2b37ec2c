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
from tunesmith.modeling import count_parameters, device, ensure_pad_token, load_model, load_tokenizer
from tunesmith.objectives.registry import OBJECTIVES
from tunesmith.objectives.trainer import build_trainer
from tunesmith.report.html import write_report
from tunesmith.report.runlog import MetricsLog, peak_memory_mb, read_json, versions, write_json

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

    def __init__(self, cfg: RunConfig, tokenizer=None, task: dict | None = None):
        self.cfg = cfg
        self.objective = OBJECTIVES[cfg.objective.name]
        self.tokenizer = tokenizer or load_tokenizer(cfg.model)
        ensure_pad_token(self.tokenizer)
        self.data = load_splits(cfg.data, cfg.train.seed)
        raise_if(self.objective.check(cfg, self.data, self.tokenizer), source="data")
        self.task = task if task is not None else self.objective.setup(cfg, self.data)
        if cfg.eval.max_examples and cfg.eval.max_examples < len(self.data["eval"]):
            self.data["eval"] = self.data["eval"].shuffle(seed=cfg.train.seed).select(range(cfg.eval.max_examples))
        self.features = {split: self.objective.tokenize(ds, self.tokenizer, cfg, self.task) for split, ds in self.data.items()}

    def stats(self) -> dict:
        return {split: length_stats(f, self.cfg.data.max_length) for split, f in self.features.items()}


def validate(config, overrides: dict | list | None = None) -> dict:
    """Check the config and the data (columns, labels, lengths) without loading model weights."""
    cfg = load_config(config, overrides)
    prep = Prepared(cfg)
    return {"config": cfg, "task": prep.task, "stats": prep.stats(),
            "splits": {k: len(v) for k, v in prep.data.items()}, "columns": prep.data["train"].column_names}


def preview(config, n: int = 3, overrides: dict | list | None = None) -> dict:
    """The first n training examples as the model sees them, plus length statistics."""
    cfg = load_config(config, overrides)
    prep = Prepared(cfg)
    train = prep.features["train"]
    examples = [describe_example(train, i, prep.tokenizer, prep.task.get("labels")) for i in range(min(n, len(train)))]
    return {"examples": examples, "stats": prep.stats(), "task": prep.task}


# ---------------------------------------------------------------------------------------------
# Training


def prepare_run_dir(path: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing run folder unless asked; never delete a folder that is not a run."""
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise TunesmithError(f"run folder {path} already exists; pass --overwrite (overwrite=True) to replace it, or --out to choose another folder")
        if not (path / "config.yaml").exists() and not (path / "manifest.json").exists():
            raise TunesmithError(f"{path} is not empty and is not a tunesmith run folder (no config.yaml); refusing to delete it even with --overwrite; choose another --out")


def default_run_dir(config) -> Path:
    stem = Path(config).stem if isinstance(config, (str, Path)) else "run"
    return Path("runs") / stem


def train(config, *, out: str | Path | None = None, overwrite: bool = False, overrides: dict | list | None = None, **kwargs) -> Run:
    """Train a model from a config path, dict or RunConfig; returns the finished Run."""
    if isinstance(overrides, list):
        cfg = load_config(config, overrides)
    else:
        cfg = load_config(config, _overrides(overrides, kwargs))
    run_dir = Path(out) if out else default_run_dir(config)
    prepare_run_dir(run_dir, overwrite)

    from transformers import set_seed

    set_seed(cfg.train.seed)
    prep = Prepared(cfg)
    objective, tok, task = prep.objective, prep.tokenizer, prep.task
    forget_tasks = benchmarks.load_tasks(cfg.eval.forgetting) if cfg.eval.forgetting else []  # fail before training
    method = METHODS[cfg.method.name]
    set_seed(cfg.train.seed)
    model = load_model(cfg.model, objective.model_kind, **objective.model_kwargs(task), **method.load_kwargs(cfg.method))
    ensure_pad_token(tok, model)
    to_device(model)
    if model.tunesmith_new_keys:
        log.info("Newly initialized (not in the checkpoint): %s", ", ".join(model.tunesmith_new_keys))

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())

    log.info("Evaluating the base model on %d examples", len(prep.data["eval"]))
    base = objective.evaluate(model, tok, prep.data["eval"], prep.features["eval"], cfg, task)
    base_probes = objective.probe(model, tok, cfg.eval.probes, cfg, task) if cfg.eval.probes else []
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

    tuned = objective.evaluate(model, tok, prep.data["eval"], prep.features["eval"], cfg, task)
    tuned_probes = objective.probe(model, tok, cfg.eval.probes, cfg, task) if cfg.eval.probes else []
    tuned_forget = _forgetting_scores(model, tok, forget_tasks, cfg, "tuned model")

    weights_dir = run_dir / method.saves
    (method.save or _save_pretrained)(model, weights_dir)
    tok.save_pretrained(weights_dir)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)

    tokens = stats["tokens_seen"]
    manifest = {
        "model": cfg.model.name, "method": cfg.method.name, "objective": cfg.objective.name,
        "saved": weights_dir.name, "task": task, "seed": cfg.train.seed,
        "train_examples": len(prep.data["train"]), "eval_examples": len(prep.data["eval"]),
        "data_fingerprint": {split: fingerprint(ds) for split, ds in prep.data.items()},
        **params, "train_seconds": round(train_seconds, 2), "train_steps": stats["train_steps"],
        "train_loss": stats["train_loss"], "tokens_seen": tokens,
        "tokens_per_second": round(tokens / train_seconds, 1) if train_seconds else 0.0,
        "peak_memory": peak_memory_mb(), "device": str(device()), "versions": versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(run_dir / "manifest.json", manifest)
    forgetting = {"forgetting": benchmarks.forgetting(base_forget, tuned_forget)} if forget_tasks else {}
    write_json(run_dir / "eval.json", {"base": base, "tuned": tuned,
                                        "probes": {"inputs": cfg.eval.probes, "base": base_probes, "tuned": tuned_probes},
                                        **forgetting})
    if cfg.report.html:
        write_report(run_dir)
    run = Run(run_dir)
    run._model, run._tokenizer = model, tok
    return run


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
        log.info("Forgetting: re-using the base model's scores from %s", path)
        return read_json(path)
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
    """A run folder: its config, manifest and eval results, and the tuned model loaded on demand."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        if not (self.dir / "config.yaml").exists():
            raise TunesmithError(f"{self.dir} is not a tunesmith run folder (no config.yaml); give the folder `tunesmith train` wrote, e.g. runs/sentiment-lora")
        self.config: RunConfig = load_config(self.dir / "config.yaml")
        self.manifest: dict = read_json(self.dir / "manifest.json")
        self.objective = OBJECTIVES[self.config.objective.name]
        self._model = self._tokenizer = None

    @property
    def task(self) -> dict:
        return self.manifest.get("task", {})

    @property
    def results(self) -> dict:
        return read_json(self.dir / "eval.json")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.config.model, path=str(self.dir / self.manifest["saved"]))
            ensure_pad_token(self._tokenizer)
        return self._tokenizer

    def load_base(self):
        from transformers import set_seed

        set_seed(self.config.train.seed)  # the same new head the base was evaluated with
        model = load_model(self.config.model, self.objective.model_kind, **self.objective.model_kwargs(self.task),
                           **self.method.load_kwargs(self.config.method))
        ensure_pad_token(self.tokenizer, model)
        return to_device(model).eval()

    @property
    def method(self):
        return METHODS[self.config.method.name]

    @property
    def model(self):
        """The tuned model: the base plus the run's adapter, or the run's whole saved model."""
        if self._model is None:
            saved = self.dir / self.manifest["saved"]
            if self.method.load:
                self._model = self.method.load(self.load_base(), saved)
            elif self.method.saves == "adapter":
                from peft import PeftModel

                self._model = PeftModel.from_pretrained(self.load_base(), str(saved))
            else:
                self._model = load_model(self.config.model, self.objective.model_kind, path=str(saved))
            to_device(self._model).eval()
        return self._model

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


def load_run(run_dir: str | Path) -> Run:
    return Run(run_dir)


# ---------------------------------------------------------------------------------------------
# Benchmarks


def bench(model_or_run, tasks, limit: int | None = None, shots: int = 0, batch_size: int = 16,
          seed: int = benchmarks.SEED) -> dict:
    """Multiple-choice benchmarks scored by log-likelihood (acc, acc_norm, n, shots per task).

    A run folder (or Run) -> {"base": {task: {...}}, "tuned": {...}}; a model (catalog name, local folder or hub
    id) -> {"model": {task: {...}}}. Tasks: names or sources, a list or comma-separated ("boolq,openbookqa").
    `limit` takes the first N questions after a seeded shuffle, the same for every model.
    """
    run = None
    if isinstance(model_or_run, Run) or (Path(model_or_run) / "config.yaml").is_file():
        run = model_or_run if isinstance(model_or_run, Run) else Run(model_or_run)
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
    tok = load_tokenizer(model_cfg)
    model = load_model(model_cfg, "causal_lm")
    ensure_pad_token(tok, model)
    to_device(model).eval()
    return {"model": benchmarks.run_benchmarks(model, tok, task_list, what=str(model_or_run), **options)}
