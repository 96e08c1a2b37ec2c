"""sweep.json and sweep.html, made from the study and the run folders: every trial, the best, the parameter
importances."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tunesmith.experiments.sweep_study import counted
from tunesmith.sweep_config import label


def write_reports(study, out: Path, cfg, metric: str, direction: str, wanted: int, config) -> dict:
    from tunesmith.report.sweep_html import write_sweep_report

    summary = summarize(study, out, cfg, metric, direction, wanted, config)
    (out / "sweep.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_sweep_report(out)
    return summary


def summarize(study, out: Path, cfg, metric: str, direction: str, wanted: int, config) -> dict:
    """Every trial (number, params, state, value, run folder, seconds), the best, and the parameter importances."""
    import optuna
    from optuna.trial import TrialState

    parameters = cfg.sweep.parameters
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):  # asked for by a worker that lost the race for the last trial; never ran
            continue
        run_dir = out / "trials" / str(t.number)
        manifest = _read(run_dir / "manifest.json")
        error = t.user_attrs.get("error") or (
            "interrupted: the sweep stopped while it trained (its parameters were queued again)"
            if t.state == TrialState.FAIL else None)
        rows.append({
            "number": t.number, "state": t.state.name.lower(),
            "params": {k: parameters[k].labels().get(v, v) if k in parameters else v for k, v in t.params.items()},
            "labels": {k: label(v) for k, v in t.params.items()}, "value": t.value,
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "run_dir": str(run_dir) if run_dir.exists() else None,
            "train_seconds": manifest.get("train_seconds") if t.state == TrialState.COMPLETE else None,
            "seconds": t.user_attrs.get("seconds"), "error": error})
    complete = [r for r in rows if r["state"] == "complete"]
    best = (max if direction == "maximize" else min)(complete, key=lambda r: r["value"]) if complete else None
    importances, note = None, None
    if len(complete) < 2:
        note = f"needs at least 2 completed trials; this sweep has {len(complete)}"
    else:
        import warnings

        try:
            with warnings.catch_warnings(record=True) as caught:  # e.g. too few trials to tell the parameters apart
                warnings.simplefilter("always")
                importances = {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
            note = "; ".join(sorted({str(w.message) for w in caught})) or None
        except (RuntimeError, ValueError, ZeroDivisionError) as err:
            note = f"could not be computed from these trials ({err})"
    return {"config": str(config) if isinstance(config, (str, Path)) else None, "folder": str(out), "metric": metric,
            "direction": direction, "trials_wanted": wanted, "trials_counted": len(counted(study)),
            "pruning": cfg.sweep.pruning, "sampler": cfg.sweep.sampler,
            "parameters": {k: p.model_dump(exclude_none=True) for k, p in parameters.items()},
            "best": best, "importances": importances, "importances_note": note, "trials": rows,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
