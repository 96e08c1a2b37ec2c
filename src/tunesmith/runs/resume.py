"""Never lose a run: checkpoints that are complete or visibly not, and resuming a stopped run from the last one.

With `train.save_steps: N` the trainer writes a checkpoint every N optimizer steps into <run>/checkpoints/ (the
model or adapter, optimizer, scheduler, RNG states and the data position, as transformers saves them). A
checkpoint counts only once it holds `tunesmith-checkpoint.json`, written after everything else: a process killed
while writing one leaves a folder without that file, which resume skips. `tunesmith train --resume RUN_DIR` finds
the stopped run (RUN_DIR itself, or RUN_DIR.partial when it was a retrain beside a finished run), and continues
from its last complete checkpoint with the config it started with; the base model's measurement is not repeated
(it was saved in base.json when the run started).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.procs import alive
from tunesmith.runs.folder import COMPLETE, PARTIAL, is_finished, last_checkpoint, run_marker

__all__ = ["BASE", "COMPLETE", "STARTED_CONFIG", "checkpoint_marker", "config_changes", "last_checkpoint", "stopped_run",
           "trim_metrics"]
BASE = "base.json"  # the base model's measurement, written before training starts
STARTED_CONFIG = "started_config"  # manifest key: the resolved config the run started with (config.yaml as written)


def checkpoint_marker():
    """A TrainerCallback that marks each checkpoint complete once the trainer has written all of it."""
    from transformers import TrainerCallback

    class CheckpointMarker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and (folder / "trainer_state.json").is_file():
                tmp = folder / (COMPLETE + ".tmp")
                tmp.write_text(json.dumps({"step": state.global_step, "epoch": state.epoch}) + "\n")
                os.replace(tmp, folder / COMPLETE)

    return CheckpointMarker()


def stopped_run(run_dir: str | Path) -> tuple[Path, Path]:
    """(folder holding the stopped run, its last complete checkpoint) for `--resume RUN_DIR`; else a clear error."""
    target = Path(run_dir)
    partial = target.with_name(target.name + PARTIAL)
    for folder in (partial, target):
        manifest = run_marker(folder) if folder.is_dir() else None
        if manifest is None or is_finished(manifest):
            continue
        if alive(manifest.get("pid")):
            raise TunesmithError(f"--resume {target}: the run is still training (process {manifest['pid']}); wait for "
                                 "it or stop it first")
        checkpoint = last_checkpoint(folder)
        if checkpoint is None:
            raise TunesmithError(f"--resume {target}: the stopped run in {folder} has no complete checkpoint to continue "
                                 "from (set train.save_steps to write them); train it again with --overwrite")
        changes = config_changes(folder, manifest)
        if changes:
            config = folder / "config.yaml"
            raise TunesmithError(f"--resume {target}: {config} was edited after the run started, and a checkpoint only "
                                 f"continues the config it was written with: {'; '.join(changes)}. Put the values back "
                                 f"as they were to resume, or train the edited config from the start in another folder: "
                                 f"`tunesmith train {config} --out OTHER_FOLDER`")
        return folder, checkpoint
    manifest = run_marker(target) if target.is_dir() else None
    if manifest is not None and is_finished(manifest):
        raise TunesmithError(f"--resume {target}: the run finished; there is nothing to resume (train it again with "
                             "--overwrite to start over)")
    raise TunesmithError(f"--resume {target}: no stopped tunesmith run there (nor in {partial.name}); give the folder "
                         "of a run that was stopped or crashed")


def config_changes(folder: Path, manifest: dict) -> list[str]:
    """The keys of <folder>/config.yaml whose values differ from the config the run started with (kept in its
    manifest), one line each; [] when they agree, or for a run started before the manifest kept a copy."""
    from tunesmith.config_io import read_yaml

    started = manifest.get(STARTED_CONFIG)
    if not isinstance(started, dict):
        return []
    before, now = _flat(started), _flat(read_yaml(Path(folder) / "config.yaml"))
    missing = object()
    show = lambda value: "absent" if value is missing else json.dumps(value)  # noqa: E731
    return [f"{key}: {show(before.get(key, missing))} when it started, {show(now.get(key, missing))} now"
            for key in sorted(set(before) | set(now)) if before.get(key, missing) != now.get(key, missing)]


def _flat(raw: dict, prefix: str = "") -> dict:
    """{'method': {'r': 4}} -> {'method.r': 4}; lists stay whole values."""
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def trim_metrics(run_dir: Path, step: int) -> None:
    """Drop the training log lines written after the checkpoint, which the resumed run writes again."""
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in keep))
