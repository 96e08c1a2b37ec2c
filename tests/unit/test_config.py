"""Config loading: every shipped config validates; bad input gets one error naming each key and the fix."""

import functools
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import load_config, parse_override
from tunesmith.errors import TunesmithError

CONFIGS = sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml"))


ROOT = Path(__file__).parents[2]


def _local_files_exist(cfg, where: str) -> None:
    """Every file a run config reads is shipped (relative paths start from the repository root, where its commands run)."""
    from tunesmith.data.sources import FILE_KINDS, looks_like_path

    for source in [cfg.data.source, *(m.source for m in cfg.data.mix), *cfg.eval.forgetting]:
        if looks_like_path(source) or Path(source).suffix.lower() in FILE_KINDS:
            assert (ROOT / source).exists(), f"{where}: {source} is not shipped"
            tracked = _tracked()  # a fresh clone has only what git tracks (a demo's output may be here, ignored)
            assert tracked is None or Path(source).as_posix() in tracked, f"{where}: {source} is not tracked by git"


@functools.cache
def _tracked() -> frozenset[str] | None:
    """The files git tracks in this checkout, or None outside a git checkout."""
    import subprocess

    out = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True)
    return frozenset(out.stdout.splitlines()) if out.returncode == 0 and out.stdout else None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    """Each file in configs/ is checked as what it is, by the check `tunesmith validate` picks for it."""
    import torch

    from tunesmith.cli.run import file_kind
    from tunesmith.experiments.stages import checkable_config, read_stages

    kind = file_kind(path)
    if kind == "constitution":  # a `tunesmith constitution` config: its principles and every stage's config
        from tunesmith.experiments.constitution.recipe import pipeline_file, read_config, read_constitution

        cfg = read_config(path)
        assert read_constitution(cfg.constitution) and cfg.stages
        assert pipeline_file(cfg, path, Path("runs") / path.stem)["stages"]
        return
    if kind == "pipeline":  # every stage's config
        stages = read_stages(path)
        for stage in stages:
            cfg = load_config(checkable_config(stage, stages, Path("runs") / path.stem))
            _local_files_exist(cfg, f"{path.name} stage {stage['name']}")
        return
    assert kind == "run", kind
    if yaml.safe_load(path.read_text())["method"]["name"] == "qlora" and not torch.cuda.is_available():
        with pytest.raises(TunesmithError, match="needs a CUDA GPU"):  # the only problem it may have here
            load_config(path)
        return
    cfg = load_config(path)  # a sweep: section is checked with it (each value the sweep tries)
    assert cfg.method.name and cfg.objective.name
    assert not path.name.startswith("sweep-") or cfg.sweep is not None
    _local_files_exist(cfg, path.name)


def base():
    return {"model": {"name": "minilm-l6"}, "data": {"source": "rotten_tomatoes"},
            "method": {"name": "lora"}, "objective": {"name": "classify"}}


def test_all_problems_reported_together():
    raw = base()
    raw["method"]["rank"] = 8                     # unknown key
    raw["train"] = {"learning_rate": "fast"}      # wrong type
    raw["data"]["max_lenght"] = 5                 # typo
    with pytest.raises(TunesmithError) as err:
        load_config(raw)
    text = str(err.value)
    assert "method.rank: unknown key" in text
    assert "train.learning_rate" in text
    assert "did you mean 'max_length'" in text
    assert len(err.value.problems) == 3


def test_unknown_method_lists_choices():
    raw = base()
    raw["method"] = {"name": "lorax"}
    with pytest.raises(TunesmithError, match=r"method.name: 'lorax' is not a known method; expected one of"):
        load_config(raw)


def test_conflicting_options():
    raw = base()
    raw["train"] = {"load_best_model_at_end": True, "eval_strategy": "no"}
    with pytest.raises(TunesmithError, match="load_best_model_at_end"):
        load_config(raw)
    raw = base()
    raw["method"] = {"name": "head"}
    raw["objective"] = {"name": "sft"}
    with pytest.raises(TunesmithError, match="does not apply to objective 'sft'"):
        load_config(raw)


def test_overrides():
    assert parse_override("train.learning_rate=1e-4") == (["train", "learning_rate"], 1e-4)
    assert parse_override("method.target_modules=[query,value]")[1] == ["query", "value"]
    cfg = load_config(base(), ["method.r=16", "train.eval_strategy=no"])
    assert cfg.method.r == 16 and cfg.train.eval_strategy == "no"


def test_switching_method_by_override_drops_the_old_methods_options(caplog):
    raw = base()
    raw["method"].update({"r": 8, "lora_alpha": 16})
    with caplog.at_level("WARNING", logger="tunesmith"):
        cfg = load_config(raw, ["method.name=full"])
    assert cfg.method.name == "full"
    assert "method.name: full replaces lora; dropped the lora options r" in caplog.text
    assert load_config(raw, ["method=full"]).method.name == "full"  # shorthand for method='{name: full}'
    assert load_config(raw, ["method=dora", "method.r=4"]).method.r == 4
    cfg = load_config(raw, ["method.name=ia3", "method.target_modules=[query,value]"])  # options given with it stay
    assert cfg.method.target_modules == ["query", "value"]
    with pytest.raises(TunesmithError, match="method.r: unknown key"):  # a stray option without a switch stays an error
        load_config({**raw, "method": {"name": "full", "r": 8}})


def test_switching_objective_by_override():
    cfg = load_config(base(), ["objective=causal_lm", "data.columns={text: text}"])
    assert cfg.objective.name == "causal_lm"


def test_cli_prints_error_without_traceback_and_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    raw = base()
    raw["method"]["r"] = "eight"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "method.r" in result.output and "Traceback" not in result.output


def test_missing_config_file():
    with pytest.raises(TunesmithError, match="does not exist"):
        load_config("nope/missing.yaml")


def test_a_folder_given_as_a_config_is_named(tmp_path):
    """`tunesmith train RUN_DIR` or `data preview RUN_DIR` said 'config file RUN_DIR does not exist'."""
    with pytest.raises(TunesmithError, match=f"{tmp_path} is a folder, not a config file"):
        load_config(tmp_path)
    (tmp_path / "config.yaml").write_text("model: {name: x}\n")
    with pytest.raises(TunesmithError, match=rf"is a folder \(a run folder: its config is {tmp_path / 'config.yaml'}\)"):
        load_config(tmp_path)


@pytest.mark.parametrize("path", [p for p in CONFIGS if "compare:" in p.read_text()], ids=lambda p: p.name)
def test_every_compare_variant_validates(path):
    from tunesmith.config import read_yaml
    from tunesmith.experiments.compare import variants

    raw = read_yaml(path)
    for v in variants(raw, load_config(raw), None):
        assert load_config(v["raw"]).method.name == v["raw"]["method"]["name"], v["name"]


def test_turning_off_best_model_keeps_the_metric(tmp_path):
    """train.load_best_model_at_end=false on a config that names metric_for_best_model (every sentiment config) is
    accepted: as in transformers, the metric alone names what the trainer records as best."""
    from tunesmith.objectives.registry import OBJECTIVES
    from tunesmith.objectives.trainer import training_arguments

    path = Path(__file__).parents[2] / "configs" / "sentiment-lora.yaml"
    cfg = load_config(path, ["train.load_best_model_at_end=false"])
    assert not cfg.train.load_best_model_at_end and cfg.train.metric_for_best_model == "accuracy"
    args = training_arguments(cfg, tmp_path, OBJECTIVES["classify"])
    assert args.metric_for_best_model == "accuracy" and args.greater_is_better and not args.load_best_model_at_end
    assert args.save_strategy == "no"  # nothing is kept for a best model nobody loads
    result = CliRunner().invoke(app, ["validate", str(path), "train.load_best_model_at_end=false", "data.train_size=50",
                                      "data.eval_size=20"])
    assert result.exit_code == 0, result.output


def test_a_key_in_the_wrong_section_names_the_section_it_belongs_to():
    """Issue 22 item 13 asked for `data.rating_range`; it is objective.rating_range: the error says so (it suggested
    data.train_on). A key that belongs in several sections (name) gets no such hint."""
    raw = {**base(), "objective": {"name": "reward"}}
    raw["data"] = {**raw["data"], "rating_range": [1, 5]}
    with pytest.raises(TunesmithError) as err:
        load_config(raw)
    assert "data.rating_range: unknown key; it belongs in objective: write it as objective.rating_range" in str(err.value)
    with pytest.raises(TunesmithError, match=r"learning_rate: unknown key; it belongs in train: write it as "
                                             r"train.learning_rate"):
        load_config({**base(), "learning_rate": 1e-3})
    with pytest.raises(TunesmithError) as err:
        load_config({**base(), "data": {**base()["data"], "name": "x"}})
    assert "data.name: unknown key; remove it" in str(err.value)
