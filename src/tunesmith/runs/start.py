"""Start a run from another run's tuned model: `model.name: runs/sft` (a finished run folder) means "the model that
run produced", as the field's recipes chain stages (sft, then a reward model or DPO or RL on top of the sft model).

The tuned model becomes a plain transformers folder: the run's saved `model/` as it is (full, freeze, head), or its
adapter folded into its base (LoRA, DoRA, IA3), written once into tunesmith's cache and reused until that run is
trained again (the cache key is the run's manifest and weights, so a retrained run is merged afresh). Prompt and
prefix tuning, bottleneck adapters and features cannot be folded into the weights: starting from them is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.runs.folder import check_run_folder, run_marker

log = logging.getLogger("tunesmith")


def is_run_folder(name: str | Path) -> bool:
    """Whether `name` is a folder tunesmith wrote as a run (finished or not)."""
    path = Path(str(name)).expanduser()
    return path.is_dir() and run_marker(path) is not None


def _key(run_dir: Path, manifest: dict) -> str:
    """Changes when the run is trained again: its manifest and the size and time of each weights file."""
    weights = run_dir / manifest.get("saved", "")
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights.glob("*") if p.is_file())
    text = json.dumps([str(run_dir.resolve()), manifest, files], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_folder(run_dir: str | Path, trust_remote_code: bool = False) -> Path:
    """A folder that `from_pretrained` loads as the run's tuned model (with its tokenizer)."""
    from tunesmith.assets import cache_dir
    from tunesmith.runs.run import Run

    run_dir = Path(str(run_dir)).expanduser()
    manifest = check_run_folder(run_dir)  # unfinished or damaged runs say so, with the command that fixes them
    if manifest.get("saved") == "model":
        return run_dir / "model"
    run = Run(run_dir, trust_remote_code=trust_remote_code)
    if not (run.is_peft_adapter and run.method.mergeable):
        raise TunesmithError(
            f"model.name: {str(run_dir)!r} is a {run.config.method.name!r} run; a run can be started from only when "
            "its tuned model is a plain set of weights (full, freeze, head) or an adapter that folds into them "
            "(lora, dora, ia3). Start from its base instead (model.name: "
            f"{run.config.model.name!r}) or retrain that stage with one of those methods")
    folder = cache_dir() / "from-runs" / f"{run_dir.resolve().name}-{_key(run_dir, manifest)}"
    if (folder / "config.json").exists():
        return folder
    log.info("Folding the %s adapter of %s into its base (once; cached in %s)", run.config.method.name, run_dir, folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model = run.load_tuned().merge_and_unload()
    model.save_pretrained(partial)
    run.tokenizer.save_pretrained(partial)
    partial.rename(folder)  # complete or absent: a killed merge is redone next time
    return folder


def root_model(name: str) -> str:
    """The model a chain of runs started from (a catalog name, folder or hub id): for checks that need only the
    architecture (validate builds the model on the meta device) and must not merge anything."""
    seen = set()
    while is_run_folder(name) and name not in seen:
        seen.add(name)
        from tunesmith.config_io import read_yaml

        raw = read_yaml(Path(name).expanduser() / "config.yaml")
        name = str((raw.get("model") or {}).get("name", name))
    return name
