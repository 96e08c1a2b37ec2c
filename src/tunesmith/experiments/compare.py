"""The comparison lab: the same task under several methods (same data, seed and budget), side by side.

Each variant is an ordinary run (its own process, so peak memory is its own; a crash stays its own) under
<out>/runs/<name>; compare.json and compare.html are made from the run folders' files. A finished run is
skipped when the comparison is run again, unless `rerun` or unless its config or its data changed since it trained
(tunesmith.experiments.reuse).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import yaml

from tunesmith.config import RunConfig, apply_overrides, load_config, read_yaml
from tunesmith.errors import TunesmithError
from tunesmith.experiments.reuse import reason_to_train, record_training
from tunesmith.experiments.train_process import train_in_subprocess
from tunesmith.methods.registry import METHODS
from tunesmith.report.runlog import read_json, write_json
from tunesmith.runs.folder import check_command_folder, finished_run

log = logging.getLogger("tunesmith")

# The task metric shown first: the first of these that the runs report (which way it is better comes from the
# runs' eval.json, see primary_metric).
COMPARE_ENTRIES = {"configs", "runs", "logs", "plots", "compare.json", "compare.html"}  # what it writes in --out
PRIMARY = ("accuracy", "rougeL", "preference_accuracy", "reward_accuracy", "reward", "eval_loss")


def variants(raw: dict, cfg: RunConfig, methods: list[str] | None) -> list[dict]:
    """[{name, raw config}] from --methods (method defaults; the config's own block for its own method)
    or from the config's compare: section."""
    base = {k: v for k, v in copy.deepcopy(raw).items() if k != "compare"}
    if methods:
        entries = [{"name": m, "method": dict(raw["method"]) if m == cfg.method.name else {"name": m}, "overrides": {}}
                   for m in methods]
    elif cfg.compare:
        entries = [v.model_dump() for v in cfg.compare]
    else:
        raise TunesmithError("compare: give --methods full,lora,... or a compare: section listing method variants in the config")
    names = [e["name"] for e in entries]
    if len(set(names)) < len(names):
        raise TunesmithError(f"compare: variant names must differ (they name the run folders); found {names}")
    out = []
    for e in entries:
        v = copy.deepcopy(base)
        v["method"] = e["method"]
        overrides = dict(e["overrides"])
        name = e["method"].get("name")
        if name != cfg.method.name and "train.learning_rate" not in overrides and name in METHODS:
            overrides["train.learning_rate"] = METHODS[name].learning_rate
            log.info("compare: %s uses learning rate %g, the method's usual rate (the config's %g is for %s)",
                     e["name"], METHODS[name].learning_rate, cfg.train.learning_rate, cfg.method.name)
        out.append({"name": e["name"], "raw": apply_overrides(v, overrides)})
    return out


def compare(config, methods: list[str] | None = None, *, out: str | Path | None = None, rerun: bool = False,
            overrides: list[str] | dict | None = None, progress=None, trust_remote_code: bool = False) -> dict:
    """Run every variant (or skip it if finished), then write compare.json and compare.html. Returns the rows."""
    raw = read_yaml(config) if isinstance(config, (str, Path)) else copy.deepcopy(config)
    raw = apply_overrides(raw, overrides)
    cfg = load_config(raw)
    out = Path(out) if out else Path("runs") / f"compare-{Path(config).stem if isinstance(config, (str, Path)) else 'run'}"
    check_command_folder(out, "compare", entries=COMPARE_ENTRIES, example="runs/compare-mine")
    for sub in ("configs", "runs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    results, fingerprints = {}, {}  # the data's fingerprints: read once for the variants that share it
    todo = variants(raw, cfg, methods)
    for i, v in enumerate(todo):
        name, run_dir = v["name"], out / "runs" / v["name"]
        if progress:
            progress(i, len(todo), name)
        try:
            load_config(v["raw"])
        except TunesmithError as err:  # an invalid variant fails alone; the others still run
            results[name] = {"error": str(err)}
            log.warning("compare: %s is not a valid config: %s", name, err)
            continue
        config_path = out / "configs" / f"{name}.yaml"
        text = yaml.safe_dump(v["raw"], sort_keys=False, allow_unicode=True)
        why = "--rerun" if rerun else reason_to_train(run_dir, config_path, text, trust_remote_code=trust_remote_code,
                                                       cache=fingerprints)
        if why is None:
            log.info("compare: %s finished before with the same config and data; skipping it (--rerun to train "
                     "again)", name)
            results[name] = {}
            continue
        log.info("compare: training %s (%s)", name, why)
        config_path.write_text(text)
        start = time.time()
        error = train_in_subprocess(config_path, run_dir, out / "logs" / f"{name}.log", trust_remote_code)
        results[name] = {"error": error} if error else {}
        if not error:
            record_training(config_path, text)
        log.info("compare: %s %s in %.0f s", name, "failed" if error else "done", time.time() - start)
    rows = [row(name, out / "runs" / name, results[name].get("error")) for name in results]
    metric = primary_metric(rows)
    summary = {"config": str(config) if isinstance(config, (str, Path)) else None, "metric": metric,
               "direction": metric_direction(rows, metric),
               "rows": rows, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(out / "compare.json", summary)
    from tunesmith.report.compare_html import write_compare_report

    write_compare_report(out)
    return summary


def metric_direction(rows: list[dict], metric: str | None) -> str:
    """'max' or 'min' for the metric, as the runs recorded it (eval.json "directions"), else the defaults."""
    from tunesmith.eval.metrics import direction

    recorded = next((r["directions"] for r in rows if r.get("directions", {}).get(metric)), None)
    return direction(metric or "", recorded)


def primary_metric(rows: list[dict]) -> str | None:
    present = {k for r in rows for k in r.get("tuned", {})}
    return next((m for m in PRIMARY if m in present), None)


def row(name: str, run_dir: Path, error: str | None) -> dict:
    """One table row from a run folder (or the error that stopped it)."""
    if error or not finished_run(run_dir):
        return {"name": name, "status": "failed", "error": error or "no results (the run did not finish)"}
    m, e = read_json(run_dir / "manifest.json"), read_json(run_dir / "eval.json")
    scalars = lambda d: {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}  # noqa: E731
    forgetting = {task: f["change"] for task, f in (e.get("forgetting") or {}).items()}
    memory = m.get("peak_memory", {})
    return {
        "name": name, "status": "ok", "method": m["method"], "run_dir": str(run_dir),
        "base": scalars(e["base"]), "tuned": scalars(e["tuned"]), "directions": e.get("directions", {}),
        "trainable_params": m["trainable_params"], "total_params": m["total_params"],
        "trainable_percent": m["trainable_percent"], "train_seconds": m["train_seconds"],
        "tokens_per_second": m["tokens_per_second"],
        "peak_memory_mb": memory.get("peak_cuda_mb") or memory.get("peak_rss_mb"),
        "forgetting": forgetting, "machine": (m.get("machine") or {}).get("summary", "not recorded"),
        "forgetting_mean": sum(forgetting.values()) / len(forgetting) if forgetting else None,
    }
