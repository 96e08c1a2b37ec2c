"""When a finished run may stand for training again (compare's variants, the pipeline's stages, the sweep's trials):
it finished, from the same config, from the same input runs (the earlier stages it starts from or reads), and on
the same data: the fingerprints in its manifest.json against the data the config reads now, loaded as training loads
it (tunesmith.training.prepare.Prepared: the splits, the objective's row drops, eval.max_examples; no model). Else
one phrase says what changed, for the log line that says why it trains again.

What a run was trained from is recorded beside its config when it finishes (<config>.trained.json: the config's
hash and the input runs' identities), so an interrupted retrain, which leaves the old run in place, is not taken
for a finished one."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError
from tunesmith.runs.folder import finished_run, run_marker


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def run_identity(run_dir: Path) -> str | None:
    """What tells one training of a run folder from another: the hash of its manifest.json (written anew, with its
    start and end times, by every training); None when it has none."""
    try:
        return _hash((Path(run_dir) / "manifest.json").read_bytes())
    except OSError:
        return None


def current_fingerprint(cfg, trust_remote_code: bool = False) -> dict[str, str]:
    """{split: fingerprint} of the data a RunConfig reads now, as a run's manifest.json records it."""
    from tunesmith.data.sources import fingerprint
    from tunesmith.training.prepare import Prepared

    quiet = logging.getLogger("tunesmith")
    level, quiet.level = quiet.level, logging.WARNING  # which split it evaluates on is said when the run trains
    try:
        prep = Prepared(cfg, trust_remote_code=trust_remote_code, announce=False)
    finally:
        quiet.setLevel(level)
    return {split: fingerprint(ds) for split, ds in prep.data.items()}


def data_change(run_dir: Path, config, trust_remote_code: bool = False, cache: dict | None = None) -> str | None:
    """How the data that `config` (a config file, a raw config or a RunConfig) reads now differs from what the
    finished run in `run_dir` trained on; None when the same. `cache` keeps fingerprints for many runs of one data."""
    from tunesmith.config import load_config

    recorded = (run_marker(run_dir) or {}).get("data_fingerprint")
    if not isinstance(recorded, dict):
        return "its run records no data fingerprint"
    try:
        cfg = load_config(config)
        # what the splits depend on: the data, the seed, the objective (its row drops), the model (its tokenizer)
        key = json.dumps([cfg.model_dump(mode="json", include={"model", "data", "objective", "eval"}), cfg.train.seed],
                         sort_keys=True, default=str)
        now = cache[key] if cache is not None and key in cache else current_fingerprint(cfg, trust_remote_code)
    except Exception as err:  # noqa: BLE001  (training it again reports the problem in full)
        return f"its data could not be read now ({err if isinstance(err, TunesmithError) else repr(err)})"
    if cache is not None:
        cache[key] = now
    changed = [s for s in sorted(set(recorded) | set(now)) if recorded.get(s) != now.get(s)]
    if not changed:
        return None
    shown = ", ".join(f"{s} {recorded.get(s, 'none')} -> {now.get(s, 'none')}" for s in changed)
    return f"its data changed: {cfg.data.source} now gives other {' and '.join(changed)} rows (fingerprints {shown})"


def record_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.stem + ".trained.json")


def record_training(config_path: Path, text: str, inputs: dict[str, Path] | None = None) -> None:
    """After a run trained from `text` (the config written at config_path): what it was trained from."""
    record = {"config": _hash(text.encode()), "inputs": {n: run_identity(p) for n, p in (inputs or {}).items()}}
    record_path(config_path).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _recorded(config_path: Path, text: str, inputs: dict[str, Path]) -> dict | None:
    """The record of what the run was trained from. A folder from before records existed: its config file stands
    for it (if it holds `text`, the run is taken as trained from it and from today's inputs, and the record written)."""
    try:
        record = json.loads(record_path(config_path).read_text())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict):
        return record
    if config_path.is_file() and config_path.read_text() == text:
        record_training(config_path, text, inputs)
        return json.loads(record_path(config_path).read_text())
    return None


def reason_to_train(run_dir: Path, config_path: Path, text: str, *, inputs: dict[str, Path] | None = None,
                    trust_remote_code: bool = False, cache: dict | None = None) -> str | None:
    """None when the finished run in `run_dir` may be kept: it was trained from `text` (the config, as written to
    config_path), from the runs in `inputs` (name -> folder) as they are now, and on the data that config reads now.
    Else what changed, e.g. "its config changed", "sft was trained again since", "its data changed: ...". `cache`
    keeps the data's fingerprints for the next call (compare's variants share their data)."""
    inputs = inputs or {}
    if not finished_run(run_dir):
        return "its last run did not finish" if Path(run_dir).exists() else "it has no run yet"
    record = _recorded(config_path, text, inputs)
    if record is None or record.get("config") != _hash(text.encode()):
        return "its config changed"
    before = record.get("inputs") or {}
    retrained = [name for name, folder in inputs.items() if before.get(name) != run_identity(folder)]
    if retrained:
        return f"{', '.join(retrained)} {'was' if len(retrained) == 1 else 'were'} trained again since it ran"
    return data_change(run_dir, yaml.safe_load(text), trust_remote_code, cache)
