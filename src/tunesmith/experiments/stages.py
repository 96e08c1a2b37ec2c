"""`tunesmith pipeline`: named stages run in order, as the field's recipes chain them (sft, then a reward model,
then RL or DPO on the sft model). Each stage is an ordinary run under <out>/<stage>/, trained in its own process
(as compare's variants are), and a later stage refers to an earlier one's run:

    stages:
      - name: sft
        config: sft-reviews.yaml              # a config file (relative to this file) or the config itself, inline
      - name: reward
        config: reward-ratings.yaml
        overrides: {train.max_steps: 200}     # dotted overrides, as on the command line
      - name: rl
        from: sft                             # starts from the sft stage's tuned model (model.name: <out>/sft)
        config: rl-reviews.yaml
        runs: {objective.reward.run: reward}  # config keys that take a run folder: the reward stage's

Run again, a stage is skipped when it finished with the same config, on the same data (the fingerprints in its
manifest.json against the data its config reads now), and no stage it uses (from:, runs:) was trained again since;
otherwise it is trained again, with one log line saying what changed (its old run is replaced only once the new
one has finished). See tunesmith.experiments.reuse.
<out>/pipeline.json and <out>/report.html show the chain: what each stage bought and cost.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from pathlib import Path

import yaml

from tunesmith.config import apply_overrides, load_config, read_yaml
from tunesmith.errors import TunesmithError
from tunesmith.experiments.reuse import reason_to_train, record_training
from tunesmith.experiments.train_process import train_in_subprocess
from tunesmith.report.runlog import read_json, write_json
from tunesmith.runs.folder import check_command_folder, finished_run

log = logging.getLogger("tunesmith")

STAGE_KEYS = {"name", "config", "overrides", "from", "runs"}
ENTRIES = {"configs", "logs", "pipeline.json", "report.html"}  # besides the stage folders
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def read_stages(path: str | Path) -> list[dict]:
    """The stages of a pipeline file, each {name, raw config, needs}, checked before anything runs: every key
    known, names unique, references to earlier stages only, each stage's config valid."""
    path = Path(path)
    raw = read_yaml(path)
    where = str(path)
    if set(raw) != {"stages"} or not isinstance(raw["stages"], list) or not raw["stages"]:
        raise TunesmithError(f"{where}: a pipeline file has one key, stages: a list of stages, each with name and "
                             "config (see configs/rlhf-positive-reviews.yaml)")
    stages: list[dict] = []
    for i, entry in enumerate(raw["stages"]):
        key = f"stages[{i}]"
        if not isinstance(entry, dict):
            raise TunesmithError(f"{where}: {key}: expected a mapping with name and config, found {entry!r}")
        unknown = sorted(set(entry) - STAGE_KEYS)
        if unknown:
            raise TunesmithError(f"{where}: {key}: unknown key(s) {unknown}; a stage has {sorted(STAGE_KEYS)}")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise TunesmithError(f"{where}: {key}.name: {name!r} is not a stage name; use letters, digits, - and _ "
                                 "(it names the stage's run folder)")
        key = f"stages[{i}] ({name})"
        if name in ENTRIES or any(s["name"] == name for s in stages):
            raise TunesmithError(f"{where}: {key}.name: {name!r} is used twice or is reserved; name each stage once")
        earlier = [s["name"] for s in stages]
        refs = {"model.name": entry["from"]} if entry.get("from") is not None else {}
        if not isinstance(entry.get("runs", {}), dict):
            raise TunesmithError(f"{where}: {key}.runs: expected a mapping of config keys to stage names, e.g. "
                                 "{objective.reward.run: reward}")
        refs.update(entry.get("runs") or {})
        for target, stage in refs.items():
            if stage not in earlier:
                field = "from" if target == "model.name" and "from" in entry else f"runs.{target}"
                hint = f"the stages before it are {earlier}" if earlier else "it is the first stage"
                raise TunesmithError(f"{where}: {key}.{field}: {stage!r} is not an earlier stage ({hint}); a stage can "
                                     "only use the runs of stages listed before it")
        config = _stage_config(entry.get("config"), path.parent, f"{where}: {key}.config")
        stages.append({"name": name, "raw": config, "overrides": entry.get("overrides") or {}, "refs": refs})
    return stages


def _stage_config(value, folder: Path, where: str) -> dict:
    if isinstance(value, dict):
        return copy.deepcopy(value)
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() or Path(value).exists() else folder / value
        if not path.is_file():
            raise TunesmithError(f"{where}: {value!r} is not a file (looked in the current folder and beside the "
                                 "pipeline file); give a config file or write the config inline")
        return read_yaml(path)
    raise TunesmithError(f"{where}: give a config file path or the config itself as a mapping")


def stage_config(stage: dict, out: Path) -> dict:
    """The stage's raw config with its overrides and with references turned into the earlier stages' folders."""
    refs = {target: str(out / stage) for target, stage in stage["refs"].items()}
    return apply_overrides(stage["raw"], {**stage["overrides"], **refs})


def is_pipeline_file(path: str | Path) -> bool:
    """A YAML file whose one key is stages (a pipeline), rather than a run config."""
    return "stages" in read_yaml(path)


def pending_runs(stage: dict, out: Path) -> list[str]:
    """The earlier stages whose runs this stage reads (runs:) and that have not finished yet."""
    return [s for target, s in stage["refs"].items() if target != "model.name" and not finished_run(out / s)]


def checkable_config(stage: dict, stages: list[dict], out: Path) -> dict:
    """The stage's config for `tunesmith validate` before the stages it starts from have run: a stage that starts
    from an earlier stage's model is checked with the model that chain begins with (same tokenizer, same modules)."""
    raw = stage_config(stage, out)
    by_name = {s["name"]: s for s in stages}
    current = stage
    while "model.name" in current["refs"] and not finished_run(out / current["refs"]["model.name"]):
        current = by_name[current["refs"]["model.name"]]
        raw = apply_overrides(raw, {"model.name": stage_config(current, out)["model"]["name"]})
    return raw


def run_pipeline(path: str | Path, *, out: str | Path | None = None, rerun: bool = False, progress=None,
                 trust_remote_code: bool = False) -> dict:
    """Run each stage in order (skipping finished ones unless `rerun`), then write pipeline.json and report.html."""
    path = Path(path)
    stages = read_stages(path)
    out = Path(out) if out else Path("runs") / path.stem
    check_command_folder(out, "pipeline", marker="pipeline.json", example="runs/my-pipeline")
    for stage in stages:  # every stage's config is valid before the first one trains (earlier runs may not exist yet)
        try:
            load_config(stage_config(stage, out))
        except TunesmithError as err:
            raise TunesmithError(f"{path}: stage {stage['name']!r}: {err}") from None
    for sub in ("configs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows, trained = [], set()
    for i, stage in enumerate(stages):
        name, run_dir = stage["name"], out / stage["name"]
        if progress:
            progress(i, len(stages), name)
        text = yaml.safe_dump(stage_config(stage, out), sort_keys=False, allow_unicode=True)
        config_path = out / "configs" / f"{name}.yaml"
        inputs = {s: out / s for s in dict.fromkeys(stage["refs"].values())}
        upstream = [s for s in inputs if s in trained]
        why = "--rerun" if rerun else f"{', '.join(upstream)} trained again" if upstream else reason_to_train(
            run_dir, config_path, text, inputs=inputs, trust_remote_code=trust_remote_code)
        if why is None:
            log.info("pipeline: %s finished before with the same config, data and inputs; skipping it", name)
            rows.append(stage_row(name, run_dir, skipped=True))
            continue
        log.info("pipeline: training %s (%s)", name, why)
        config_path.write_text(text)
        start = time.time()
        error = train_in_subprocess(config_path, run_dir, out / "logs" / f"{name}.log", trust_remote_code)
        if error:
            rows.append(stage_row(name, run_dir, error=error))
            _summarize(out, path, rows)
            raise TunesmithError(f"pipeline: stage {name!r} failed: {error} (its log: {out / 'logs' / (name + '.log')}); "
                                 "the stages after it did not run. Fix it and run the pipeline again: finished stages "
                                 "are skipped")
        record_training(config_path, text, inputs)
        trained.add(name)
        log.info("pipeline: %s done in %.0f s", name, time.time() - start)
        rows.append(stage_row(name, run_dir))
    return _summarize(out, path, rows)


def stage_row(name: str, run_dir: Path, *, skipped: bool = False, error: str | None = None) -> dict:
    """What the stage bought and cost, read from its run folder."""
    row = {"stage": name, "run": str(run_dir), "skipped": skipped, "error": error}
    if error or not finished_run(run_dir):
        return row
    manifest, ev = read_json(run_dir / "manifest.json"), read_json(run_dir / "eval.json")
    row.update({k: manifest.get(k) for k in ("model", "method", "objective", "trainable_params", "total_params",
                                              "train_seconds", "peak_memory", "train_examples")})
    row.update({"base": ev.get("base", {}), "tuned": ev.get("tuned", {}), "directions": ev.get("directions", {})})
    return row


def _summarize(out: Path, path: Path, rows: list[dict]) -> dict:
    from tunesmith.report.pipeline_html import write_pipeline_report

    summary = {"pipeline": str(path), "stages": rows, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(out / "pipeline.json", summary)
    write_pipeline_report(out)
    return summary
