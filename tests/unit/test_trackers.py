"""train.report_to: every integration of the installed transformers; tunesmith adds the run's name, config and
eval.json to the tracker run. tensorboard, mlflow (a file store in the run folder) and wandb (offline mode) are in the
test set-up (make setup: the tracking and dev extras); trackio (local) runs where installed and skips, saying so, where
not: it pins pillow<13, which the set-up does not take."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from tunesmith import api
from tunesmith.errors import TunesmithError


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_report_to_takes_the_names_transformers_knows(tiny_bert, sentiment_file, make_config):
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from tunesmith.config import load_config
    from tunesmith.report.tracking import expand, known_trackers, missing_trackers

    assert known_trackers() == sorted(INTEGRATION_TO_CALLBACK) and {"wandb", "trackio", "mlflow"} <= set(known_trackers())
    cfg = load_config(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": "wandb"}))
    assert cfg.train.report_to == ["wandb"]  # one name, as transformers takes it
    assert load_config(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": "none"})).train.report_to == []
    assert "tensorboard" in expand(["all"])  # every installed one
    for name in known_trackers():  # each is either usable or named with its install command
        problems = missing_trackers([name])
        assert problems == [] or "pip install" in problems[0], problems


def test_an_unknown_tracker_is_named_with_the_known_ones(tiny_bert, sentiment_file, make_config):
    with pytest.raises(TunesmithError, match=r"train.report_to: 'wandbb' is not a tracker transformers knows; did you "
                                             r"mean 'wandb'\?; expected one of .*tensorboard.*trackio.*wandb"):
        api.validate(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": ["wandbb"]}))


def test_train_refuses_a_tracker_that_is_not_installed_before_loading_anything(tiny_bert, sentiment_file, make_config,
                                                                               tmp_path):
    from tunesmith.report.tracking import PACKAGES, known_trackers

    absent = [n for n in known_trackers() if not _installed(PACKAGES.get(n, (n, n))[0])]  # comet_ml, neptune, ...
    assert absent, "every tracker transformers knows is installed here"
    package = PACKAGES.get(absent[0], (absent[0], absent[0]))[1]
    with pytest.raises(TunesmithError, match=f"train.report_to: {absent[0]} needs the {package} package; install it "
                                             f"with pip install {package}"):
        api.train(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": [absent[0]]}), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not _installed("tensorboard"), reason="tensorboard is not installed")
def test_tensorboard_gets_the_run_name_config_and_eval(tiny_bert, sentiment_file, make_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = api.train(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": ["tensorboard"]}),
                    out=tmp_path / "tracked")
    acc = EventAccumulator(str(run.dir / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "train/loss" in tags["scalars"]  # the Trainer's own logging
    results = json.loads((run.dir / "eval.json").read_text())
    for which in ("base", "tuned"):
        (event,) = acc.Scalars(f"eval_{which}/accuracy")
        assert event.value == pytest.approx(results[which]["accuracy"])
    assert {"tunesmith/run/text_summary", "tunesmith/config/text_summary", "tunesmith/eval/text_summary"} <= set(tags["tensors"])
    text = lambda tag: acc.Tensors(tag)[0].tensor_proto.string_val[0].decode()  # noqa: E731
    assert text("tunesmith/run/text_summary") == "tracked"
    assert "learning_rate: 0.005" in text("tunesmith/config/text_summary")
    assert '"accuracy"' in text("tunesmith/eval/text_summary")
    # hparams: the config flattened, with eval.json's numbers as the metrics
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    info = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert info.hparams["train.learning_rate"].number_value == pytest.approx(0.005)
    assert info.hparams["method.name"].string_value == "lora"


@pytest.mark.skipif(not _installed("mlflow"), reason="mlflow is not installed here (pip install mlflow to run this test)")
def test_mlflow_file_store_gets_params_and_eval_metrics(tiny_bert, sentiment_file, make_config, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = api.train(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": ["mlflow"]}), out=tmp_path / "ml")
    mlflow.set_tracking_uri((run.dir / "mlruns").resolve().as_uri())
    (found,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    results = json.loads((run.dir / "eval.json").read_text())
    assert found.data.metrics["tuned.accuracy"] == pytest.approx(results["tuned"]["accuracy"])
    assert found.data.params["tunesmith.method.name"] == "lora"
    assert found.data.tags["tunesmith.run"] == "ml" and found.info.run_name == "ml"


@pytest.mark.skipif(not _installed("wandb"), reason="wandb is not installed here (pip install wandb to run this test)")
def test_wandb_offline_run_gets_the_config_and_eval(tiny_bert, sentiment_file, make_config, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = api.train(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": ["wandb"]}), out=tmp_path / "wb")
    import wandb

    assert wandb.run is not None and wandb.run.name == "wb"
    assert wandb.run.summary["tuned/accuracy"] == pytest.approx(json.loads((run.dir / "eval.json").read_text())["tuned"]["accuracy"])
    wandb.finish()
    assert list(tmp_path.rglob("offline-run-*"))


@pytest.mark.skipif(not _installed("trackio"), reason="trackio is not installed here (pip install trackio to run this test)")
def test_trackio_local_run(tiny_bert, sentiment_file, make_config, tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    api.train(make_config(tiny_bert, sentiment_file, "classify", train={"report_to": ["trackio"]}), out=tmp_path / "tr")
    assert any((tmp_path / "trackio").rglob("*"))  # the Trainer's logs, stored locally


def test_each_run_gets_its_own_mlflow_store_unless_the_user_named_one(tmp_path, monkeypatch):
    from tunesmith.report import tracking

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(tracking, "_MLFLOW_SET", {})
    tracking._use_mlflow_store(tmp_path / "a")
    assert os.environ["MLFLOW_TRACKING_URI"] == (tmp_path / "a" / "mlruns").resolve().as_uri()
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"  # mlflow 3.x refuses a file store without it
    tracking._use_mlflow_store(tmp_path / "b")  # a second run in this process: its own store, not the first's
    assert os.environ["MLFLOW_TRACKING_URI"] == (tmp_path / "b" / "mlruns").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # the user's server is kept
    tracking._use_mlflow_store(tmp_path / "c")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
