"""Measuring beyond training: a finished run evaluated again (on its eval set or other data), and the forgetting
benchmarks, the base model's scores cached on disk so that every run of a comparison scores its base once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig, load_config
from tunesmith.errors import TunesmithError
from tunesmith.eval import benchmarks
from tunesmith.methods.registry import METHODS
from tunesmith.report.runlog import versions, write_json
from tunesmith.runs import (
    Run,
    read_json_file,
)
from tunesmith.training.prepare import Prepared, measure
from tunesmith.trust import trusting

log = logging.getLogger("tunesmith")


def forgetting_scores(model, tok, tasks: list, cfg: RunConfig, what: str) -> dict:
    """eval.forgetting benchmarks on the model as it is now (base before tuning, tuned after)."""
    if not tasks:
        return {}
    return benchmarks.run_benchmarks(model, tok, tasks, limit=cfg.eval.forgetting_limit, shots=cfg.eval.forgetting_shots,
                                     batch_size=cfg.train.per_device_eval_batch_size, what=what)


def base_forgetting_scores(model, tok, tasks: list, cfg: RunConfig) -> dict:
    """The base model's forgetting scores, cached on disk: every run of a comparison shares one base, so it is
    scored once (key: model, dtype, quantization, tasks and their files, limit, shots)."""
    import hashlib
    import json

    from tunesmith.assets import cache_dir
    from tunesmith.modeling import model_path

    if not tasks:
        return {}
    files = [Path(t) for t in cfg.eval.forgetting]
    key = json.dumps([model_path(cfg.model), cfg.model.revision, cfg.model.dtype,
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
    scores = forgetting_scores(model, tok, tasks, cfg, "base model")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, scores)
    return scores


def evaluate_run(run: Run, data: str | None = None, split: str | None = None, columns: dict[str, str] | None = None) -> dict:
    """Base and tuned model of a run on its eval set, or on another source (roles mapped by `columns`)."""
    cfg = run.config
    if data or split or columns:
        changes: dict[str, Any] = {f"data.columns.{role}": col for role, col in (columns or {}).items()}
        if data:  # the whole chosen split of another source is the eval set
            from tunesmith.data.sources import load_source

            splits = list(load_source(data))
            chosen = split or next((s for s in ("validation", "test") if s in splits), splits[0])
            changes.update({"data.source": data, "data.subset": None, "data.eval_split": chosen, "data.train_split": chosen,
                            "data.eval_size": 0.1, "data.train_size": None, "data.group_column": None})
        elif split:
            changes["data.eval_split"] = split
        cfg = load_config(cfg, changes)
    with trusting(run.trust_remote_code):
        prep = Prepared(cfg, tokenizer=run.tokenizer, task=run.task)
        base = measure(run.load_base(), prep, cfg, probes=False)
        tuned = measure(run.model, prep, cfg, probes=False)
    return {"base": base["metrics"], "tuned": tuned["metrics"], "examples": len(prep.data["eval"])}
