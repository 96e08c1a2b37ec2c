"""Experiment trackers (`train.report_to`): every integration the installed transformers has (tensorboard, mlflow,
wandb, trackio, comet_ml, neptune, clearml, swanlab, dvclive, ...; `all`: each one installed), through the Trainer's
own callbacks, so any trainer that takes callbacks (transformers', TRL's) reports the same way.

tensorboard writes into the run folder (tensorboard/) and mlflow into a file store there (mlruns/) unless
MLFLOW_TRACKING_URI names a server, so a run's tracking lives with the run; the others go where their own settings
say (WANDB_MODE=offline, TRACKIO_DIR, ...). The tracker run is named after the run folder (TrainingArguments.run_name).
When the run has finished, `log_results` adds tunesmith's config and eval.json to the tracker run: tensorboard (text
and hparams), mlflow (params and base/tuned metrics, eval.json and config.yaml as artifacts), wandb (config and
summary, when its run is still open). The other trackers get the Trainer's own logs only."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from tunesmith.config_io import read_yaml, suggest
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

# integration name -> (module that shows it is installed, pip package); names transformers adds later fall back to
# their own name for both
PACKAGES = {"azure_ml": ("azureml", "azureml-core"), "comet_ml": ("comet_ml", "comet_ml"), "flyte": ("flytekit", "flytekit"),
            "kubeflow": ("kubeflow", "kubeflow-training")}


def known_trackers() -> list[str]:
    """The integrations the installed transformers supports (its report_to names)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return sorted(INTEGRATION_TO_CALLBACK)


def expand(names) -> list[str]:
    """train.report_to as a list of integrations: `all` is every one installed, `none` none."""
    names = list(names or [])
    if "all" in names:
        from transformers.integrations.integration_utils import get_available_reporting_integrations

        names = [*get_available_reporting_integrations(), *(n for n in names if n != "all")]
    return list(dict.fromkeys(n for n in names if n != "none"))


def missing_trackers(names) -> list[str]:
    """Problems with train.report_to: a name transformers does not know (with the names it does), or a tracker whose
    package is not installed (with the command that installs it)."""
    import importlib.util

    names = [n for n in (names or []) if n not in ("all", "none")]
    if not names:
        return []
    known, problems = known_trackers(), []
    for name in names:
        if name not in known:
            problems.append(f"train.report_to: {name!r} is not a tracker transformers knows{suggest(name, known)}; "
                            f"expected one of {', '.join(known)}, all or none")
            continue
        module, package = PACKAGES.get(name, (name, name))
        if importlib.util.find_spec(module) is None:
            problems.append(f"train.report_to: {name} needs the {package} package; install it with pip install {package} "
                            f"(or tunesmith with its trackers extra), or remove {name!r}")
    return problems


def tracking_callbacks(names, run_dir: Path) -> list:
    """The Trainer callbacks of train.report_to (instances, or classes the Trainer instantiates as it does its own)."""
    names = expand(names)
    problems = missing_trackers(names)
    if problems:
        raise TunesmithError(problems)
    callbacks = []
    for name in names:
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback

            callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))))
        elif name == "mlflow":
            from transformers.integrations import MLflowCallback

            _use_mlflow_store(run_dir)
            callbacks.append(MLflowCallback())
        else:
            from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

            callbacks.append(INTEGRATION_TO_CALLBACK[name])
    return callbacks


_MLFLOW_SET: dict[str, str] = {}  # the MLFLOW_* variables this process set itself (not the user), with their values


def _use_mlflow_store(run_dir: Path) -> None:
    """MLFLOW_TRACKING_URI: the run folder's file store (mlruns/), unless the user set one; a store this process
    set for an earlier run is replaced (two runs in one process must not share it). mlflow 3.x refuses file stores
    unless MLFLOW_ALLOW_FILE_STORE=true (it keeps them in maintenance mode), so that is set with it."""
    wanted = {"MLFLOW_TRACKING_URI": (Path(run_dir) / "mlruns").resolve().as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}
    if os.environ.get("MLFLOW_TRACKING_URI", _MLFLOW_SET.get("MLFLOW_TRACKING_URI")) != _MLFLOW_SET.get("MLFLOW_TRACKING_URI"):
        return  # the user's own tracking server or store
    for key, value in wanted.items():
        if key not in os.environ or os.environ[key] == _MLFLOW_SET.get(key):
            os.environ[key] = _MLFLOW_SET[key] = value


# ---------------------------------------------------------------------------------------------
# After the run: tunesmith's config and eval.json into the tracker run


def _flat(data, prefix: str = "") -> dict:
    out = {}
    for key, value in (data or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _scores(results: dict) -> dict[str, float]:
    """{'tuned/accuracy': 0.7, 'base/accuracy': 0.5, 'forgetting/boolq': -0.01, ...}: the numbers of eval.json."""
    out = {}
    for which in ("base", "tuned"):
        for metric, value in (results.get(which) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{which}/{metric}"] = float(value)
    for task, row in (results.get("forgetting") or {}).items():
        out[f"forgetting/{task}"] = float(row["change"])
    return out


def log_results(run_dir: Path, names) -> None:
    """Add the run's name, config and eval.json to each tracker it reported to."""
    run_dir = Path(run_dir)
    config = read_yaml(run_dir / "config.yaml")
    results = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else {}
    for name in expand(names):
        writer = RESULT_WRITERS.get(name)
        if writer is None:
            log.info("train.report_to: %s has the Trainer's logs; tunesmith's config and eval.json go to tensorboard, "
                     "mlflow and wandb only", name)
            continue
        try:
            writer(run_dir, config, results)
        except Exception as err:  # noqa: BLE001 - the run is saved; a tracker that refuses the extras is reported
            log.warning("train.report_to: could not add the config and eval.json to %s: %s: %s", name, type(err).__name__, err)


def _tensorboard(run_dir: Path, config: dict, results: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    name = run_dir.name.removesuffix(".partial")
    scores = _scores(results)
    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in _flat(config).items()
               if v is not None}
    with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as writer:
        writer.add_text("tunesmith/run", name)
        writer.add_text("tunesmith/config", "```\n" + (run_dir / "config.yaml").read_text() + "\n```")
        writer.add_text("tunesmith/eval", "```\n" + json.dumps(results, indent=2) + "\n```")
        for key, value in scores.items():
            writer.add_scalar(f"eval_{key}", value)
        writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in scores.items()}, run_name=".")


def _mlflow(run_dir: Path, config: dict, results: dict) -> None:
    import mlflow

    # the run the Trainer's MLflowCallback logged to: ended when training ended, or still open if the user started it
    active = mlflow.active_run()
    run = active or mlflow.last_active_run()
    if run is None:
        log.warning("train.report_to: mlflow has no run of this training to add eval.json to")
        return
    with contextlib.nullcontext() if active else mlflow.start_run(run_id=run.info.run_id):
        mlflow.set_tag("tunesmith.run", run_dir.name.removesuffix(".partial"))
        params = {f"tunesmith.{k}": str(v)[:500] for k, v in _flat(config).items()}  # beside the Trainer's own params
        mlflow.log_params(params)
        mlflow.log_metrics({k.replace("/", "."): v for k, v in _scores(results).items()})
        mlflow.log_artifact(str(run_dir / "config.yaml"))
        if (run_dir / "eval.json").is_file():
            mlflow.log_artifact(str(run_dir / "eval.json"))


def _wandb(run_dir: Path, config: dict, results: dict) -> None:
    import wandb

    if wandb.run is None:
        log.warning("train.report_to: the wandb run has ended; eval.json is not in it")
        return
    wandb.run.config.update({"tunesmith": config}, allow_val_change=True)
    wandb.run.summary.update(_scores(results))
    wandb.run.summary["tunesmith/eval.json"] = json.dumps(results)


RESULT_WRITERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}
