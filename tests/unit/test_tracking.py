"""train.report_to: the Trainer's trackers write into the run folder."""

from __future__ import annotations

import importlib.util

import pytest

from tunesmith import api
from tunesmith.errors import TunesmithError


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_event_files_land_in_the_run_folder(tiny_bert, sentiment_file, make_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = api.train(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": ["tensorboard"]}),
                    out=tmp_path / "run")
    events = list((run.dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(run.dir / "tensorboard"))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"] and len(acc.Scalars("train/loss")) == 4  # logging_steps 1, 4 steps


def test_a_tracker_that_is_not_installed_is_named_with_its_install_command(tiny_bert, sentiment_file, make_config,
                                                                             monkeypatch):
    import importlib.util as util

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(TunesmithError, match=r"train.report_to: mlflow needs the mlflow package; install it with pip install mlflow"):
        api.validate(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": ["mlflow"]}))


def test_an_unknown_tracker_is_a_config_error(tiny_bert, sentiment_file, make_config):
    with pytest.raises(TunesmithError, match="train.report_to"):
        api.validate(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": ["wandbb"]}))
