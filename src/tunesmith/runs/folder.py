"""Run folders on disk: what marks a folder as tunesmith's, whether a run finished, and the one rule for
writing an output folder without ever losing what a user owns.

A run folder's `manifest.json` carries `"format": "tunesmith-run"`. It is written when the run starts
(`"status": "running"`) and written again, as the very last file, when it ends (`"status": "finished"`). So a run
killed half way is recognised as unfinished by every command.

Writing an output folder (a run, an export) follows `plan_output` / `commit_output`:
- a folder that does not exist, or is empty, is written in place;
- an existing folder is replaced only with `overwrite`, only if tunesmith made it (its marker), only if it holds
  nothing but the files tunesmith writes there, and never if it holds the config or data the new run reads, or
  the current directory;
- the new content is written beside it (`<name>.partial`) and swapped in only when it is complete, so a failure
  half way leaves the old folder as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import TunesmithError

RUN_FORMAT = "tunesmith-run"
EXPORT_FORMAT = "tunesmith-export"
EXPORT_MARKER = "tunesmith-export.json"
# Everything tunesmith writes at the top of a run folder (weights folders are named by the method's `saves`).
RUN_ENTRIES = {"config.yaml", "manifest.json", "metrics.jsonl", "eval.json", "report.html", "plots", "checkpoints",
               "bench.json", "adapter", "model", "features", "scratch",
               "tensorboard", "mlruns", "base.json", "data_preview.json"}
DATA_PREVIEW = "data_preview.json"  # a new run's first training examples as the model saw them (the board shows it)
PARTIAL = ".partial"


# ---------------------------------------------------------------------------------------------
# Reading


def read_json_file(path: Path, what: str = "") -> dict:
    """A JSON object from a file; a missing, empty or damaged file is a TunesmithError naming it."""
    path = Path(path)
    if not path.is_file():
        raise TunesmithError(f"{path} does not exist{what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno}: {err.msg})" if isinstance(err, json.JSONDecodeError) else ""
        raise TunesmithError(f"{path} is damaged: not valid JSON{where}{what}") from None
    if not isinstance(data, dict):
        raise TunesmithError(f"{path} is damaged: expected a JSON object, found {type(data).__name__}{what}")
    return data


def run_marker(folder: Path) -> dict | None:
    """The manifest of a folder tunesmith made as a run (finished or not), else None. Runs made before the
    marker existed count when their manifest has the keys every finished run had."""
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    if manifest.get("format") == RUN_FORMAT or {"saved", "versions", "seed"} <= set(manifest):
        return manifest
    return None


def is_finished(manifest: dict) -> bool:
    if manifest.get("format") == RUN_FORMAT:
        return manifest.get("status") == "finished"
    return "saved" in manifest  # runs made before the status key: the manifest was written at the end


def finished_run(folder: Path) -> bool:
    """A run folder whose run finished and holds its results (manifest.json says finished, eval.json is there): what
    compare, the pipeline and the sweep may keep instead of training again."""
    manifest = run_marker(folder)
    return manifest is not None and is_finished(manifest) and (Path(folder) / "eval.json").is_file()


# A checkpoint counts once it holds this file, written after everything else (tunesmith.runs.resume).
COMPLETE = "tunesmith-checkpoint.json"


def checkpoint_step(path: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that was written completely, or None (`tunesmith train --resume` continues from it)."""
    for folder in sorted((Path(run_dir) / "checkpoints").glob("checkpoint-*"), key=checkpoint_step, reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text())
            json.loads((folder / COMPLETE).read_text())
        except (OSError, ValueError):
            continue  # killed while writing it: not a checkpoint
        return folder
    return None


def retrain_hint(folder: Path) -> str:
    return f"train it again with `tunesmith train CONFIG --out {folder} --overwrite`"


def resume_hint(folder: Path, checkpoint: Path) -> str:
    step = checkpoint_step(checkpoint)
    return (f"continue it from its last complete checkpoint (step {step}) with `tunesmith train --resume {folder}`, "
            f"which keeps the {step} steps it finished")


def check_run_folder(folder: str | Path) -> dict:
    """The manifest of a finished run in `folder`; else one clear error: missing, not a run, unfinished, damaged."""
    folder = Path(folder)
    if not folder.exists():
        raise TunesmithError(f"run folder {folder} does not exist; give the folder `tunesmith train` wrote, e.g. runs/sentiment-lora")
    if not folder.is_dir():
        raise TunesmithError(f"{folder} is a file, not a run folder; give the folder `tunesmith train` wrote, e.g. runs/sentiment-lora")
    has_config, has_manifest = (folder / "config.yaml").is_file(), (folder / "manifest.json").is_file()
    if not has_config and not has_manifest:
        raise TunesmithError(f"{folder} is not a tunesmith run folder (no config.yaml, no manifest.json); give the folder "
                             "`tunesmith train` wrote, e.g. runs/sentiment-lora")
    if not has_manifest:
        raise TunesmithError(f"run {folder} did not finish: it has a config.yaml but no manifest.json (the run was stopped "
                             f"before it saved anything); {retrain_hint(folder)}")
    manifest = read_json_file(folder / "manifest.json", f"; {retrain_hint(folder)}")
    if manifest.get("format") != RUN_FORMAT and run_marker(folder) is None:
        raise TunesmithError(f"{folder / 'manifest.json'} is not a tunesmith run manifest; give the folder `tunesmith train` wrote")
    if not is_finished(manifest):
        started = manifest.get("started", "?")
        checkpoint = last_checkpoint(folder)
        fix = f"{resume_hint(folder, checkpoint)}; or {retrain_hint(folder)}" if checkpoint else retrain_hint(folder)
        raise TunesmithError(f"run {folder} did not finish (status {manifest.get('status', '?')!r}, started {started}; "
                             f"it was stopped or crashed before saving its model); {fix}")
    if not has_config:
        raise TunesmithError(f"run {folder} is damaged: config.yaml is missing; {retrain_hint(folder)}")
    saved = manifest.get("saved")
    if not saved or not (folder / saved).is_dir():
        raise TunesmithError(f"run {folder} is damaged: its weights folder {folder / str(saved)}/ is missing; "
                             f"restore it or {retrain_hint(folder)}")
    return manifest


def check_weights(folder: Path, required: tuple[str, ...] = ()) -> None:
    """A saved weights folder is complete and readable: the required files exist, every JSON file parses and every
    safetensors file has a whole header that covers the file. Otherwise one error naming the file."""
    folder = Path(folder)
    run = folder.parent
    fix = f"restore the folder from a copy or {retrain_hint(run)}"
    if not folder.is_dir():
        raise TunesmithError(f"run {run} is damaged: {folder}/ is missing; {fix}")
    for name in required:
        if not (folder / name).is_file():
            raise TunesmithError(f"run {run} is damaged: {folder / name} is missing; {fix}")
    for path in sorted(folder.glob("*.json")):
        read_json_file(path, f"; {fix}")
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not weights:
        raise TunesmithError(f"run {run} is damaged: {folder}/ holds no weights file (*.safetensors); {fix}")
    from safetensors import SafetensorError, safe_open

    for path in weights:
        if path.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(path), framework="numpy") as fh:
                fh.keys()
        except (SafetensorError, OSError) as err:
            raise TunesmithError(f"run {run} is damaged: {path} is not a readable safetensors file ({err}); {fix}") from None


def start_manifest(**facts) -> dict:
    return {"format": RUN_FORMAT, "version": 1, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "pid": os.getpid(), **facts}


# ---------------------------------------------------------------------------------------------
# Writing an output folder without losing anything


@dataclass
class OutputPlan:
    target: Path  # where the result ends up
    stage: Path  # where it is written (the target itself when nothing is there)

    @property
    def swaps(self) -> bool:
        return self.stage != self.target


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _replaceable(folder: Path, kind: str, protected: list[Path]) -> list[str]:
    """Why `folder` may not be replaced (empty list: it may)."""
    problems = []
    if kind == "run":
        if run_marker(folder) is None:
            return [f"{folder} is not a folder tunesmith wrote as a run (its manifest.json has no tunesmith marker)"]
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in RUN_ENTRIES)
        if foreign:
            problems.append(f"{folder} holds files tunesmith did not write there: {foreign[:8]}; move them out first")
    elif not (folder / EXPORT_MARKER).is_file():
        return [f"{folder} is not a folder tunesmith exported (no {EXPORT_MARKER})"]
    if _inside(Path.cwd(), folder):
        problems.append(f"{folder} contains the current directory")
    for path in protected:
        if _inside(path, folder):
            problems.append(f"{folder} contains {path}, which this command reads")
    return problems


def plan_output(target: str | Path, *, overwrite: bool, kind: str = "run", protected: list[Path] = (),
                option: str = "--out") -> OutputPlan:
    """Check that `target` can be written (see the module docstring) before any work starts; raises otherwise."""
    target = Path(target)
    what = "run folder" if kind == "run" else "export folder"
    if target.exists() and not target.is_dir():
        raise TunesmithError(f"{option} {target}: is an existing file, not a folder; choose a folder path, e.g. {option} runs/my-run")
    for path in protected:
        if _inside(target, path) or target.resolve() == Path(path).resolve():
            raise TunesmithError(f"{option} {target}: is inside {path}, which this command reads; choose a folder outside it")
    if not target.exists() or not any(target.iterdir()):
        return OutputPlan(target, target)
    if not overwrite:
        state = ""
        manifest = run_marker(target) if kind == "run" else None
        if manifest is not None and not is_finished(manifest):
            checkpoint = last_checkpoint(target)
            state = " (an unfinished run: it was stopped or crashed" + (f"; {resume_hint(target, checkpoint)})"
                                                                        if checkpoint else ")")
        raise TunesmithError(f"{what} {target} already exists{state}; pass --overwrite to replace it, or {option} to choose another folder")
    problems = _replaceable(target, kind, [Path(p) for p in protected])
    if problems:
        raise TunesmithError(f"{option} {target}: refusing to replace it, even with --overwrite: " + "; ".join(problems)
                             + f". Choose another {option}, or delete it yourself if you are sure")
    stage = target.with_name(target.name + PARTIAL)
    if stage.exists():
        if kind == "run" and run_marker(stage) is not None and not _replaceable(stage, kind, []):
            shutil.rmtree(stage)  # an earlier attempt of ours that did not finish
        elif kind != "run" and (stage / EXPORT_MARKER).is_file():
            shutil.rmtree(stage)
        else:
            raise TunesmithError(f"{option} {target}: the folder beside it, {stage}, is in the way (tunesmith writes the new "
                                 "content there before swapping it in); move it")
    return OutputPlan(target, stage)


def commit_output(plan: OutputPlan) -> Path:
    """Swap a completely written stage folder in for the target; the old content goes only after the swap."""
    if not plan.swaps:
        return plan.target
    old = plan.target.with_name(f"{plan.target.name}.old-{os.getpid()}")
    while old.exists():  # never rename onto a folder that happens to carry that name
        old = old.with_name(old.name + "-")
    os.replace(plan.target, old)
    os.replace(plan.stage, plan.target)
    shutil.rmtree(old, ignore_errors=True)
    return plan.target


def discard_output(plan: OutputPlan) -> None:
    """After a failure: remove what was staged beside an existing folder (the old folder is untouched)."""
    if plan.swaps and plan.stage.exists():
        shutil.rmtree(plan.stage, ignore_errors=True)


def check_command_folder(out: Path, command: str, *, example: str, entries: set[str] | None = None,
                         marker: str | None = None) -> None:
    """A folder that a command writes many files into (compare, sweep, pipeline, constitution) is new, empty, or one
    that command wrote: every name at its top is one of `entries`, or it holds the command's `marker` file. Never an
    existing file, never a folder with other files, which the command could overwrite."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TunesmithError(f"--out {out}: is an existing file, not a folder; choose a folder, e.g. --out {example}")
    if not out.is_dir() or not any(out.iterdir()) or (marker is not None and (out / marker).is_file()):
        return
    if entries is None:
        raise TunesmithError(f"--out {out}: is a folder that `tunesmith {command}` did not write (it has no {marker}); "
                             "choose a new or empty folder")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in entries)
    if foreign:
        raise TunesmithError(f"--out {out}: holds files that `tunesmith {command}` did not write ({foreign[:8]}); it "
                             f"writes only {sorted(entries)} there, so choose a new or empty folder")


def write_export_marker(folder: Path, **facts) -> None:
    (Path(folder) / EXPORT_MARKER).write_text(json.dumps({"format": EXPORT_FORMAT, "version": 1, **facts}, indent=2) + "\n")


def objective_of_run(run_dir: str | Path) -> str | None:
    """The objective a run folder was trained with, read from its config.yaml without validating it (no torch, no
    registry): None when the folder has no readable config."""
    from tunesmith.config_io import read_yaml

    config = Path(run_dir).expanduser() / "config.yaml"
    if not config.is_file():
        return None
    raw = read_yaml(config)
    name = (raw.get("objective") or {}).get("name") if isinstance(raw, dict) else None
    return name if isinstance(name, str) else None
