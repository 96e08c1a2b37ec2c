"""Experiment trackers (`train.report_to: [tensorboard, mlflow]`): the Trainer's own callbacks, pointed at the run
folder (tensorboard/ event files; mlflow's file store in mlruns/ unless MLFLOW_TRACKING_URI names a server), so a
run's tracking lives with the run. Any trainer that takes callbacks (transformers', TRL's) reports the same way."""

from __future__ import annotations

import os
from pathlib import Path

from tunesmith.errors import TunesmithError

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # name -> the package it needs


def missing_trackers(names) -> list[str]:
    """train.report_to entries whose package is not installed, each with the command that installs it."""
    import importlib.util

    return [f"train.report_to: {name} needs the {TRACKERS[name]} package; install it with pip install {TRACKERS[name]} "
            f"(or pip install 'tunesmith[tracking]'), or remove {name!r}"
            for name in names if importlib.util.find_spec(TRACKERS[name]) is None]


def tracking_callbacks(names, run_dir: Path) -> list:
    problems = missing_trackers(names)
    if problems:
        raise TunesmithError(problems)
    callbacks = []
    if "tensorboard" in names:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))))
    if "mlflow" in names:
        from transformers.integrations import MLflowCallback

        os.environ.setdefault("MLFLOW_TRACKING_URI", (Path(run_dir) / "mlruns").resolve().as_uri())
        callbacks.append(MLflowCallback())
    return callbacks
