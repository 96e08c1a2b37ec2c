"""train.bf16 (auto / true / false) resolved from the hardware, and the checks `validate` runs before any weights load:
train.bf16 on this machine, train.lr_scheduler_type, method.target_modules on the weightless model."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tunesmith import hardware
from tunesmith.cli import app
from tunesmith.config import TrainConfig, load_config
from tunesmith.errors import TunesmithError


def cpu(monkeypatch, flags: set[str], capability: str = "AVX2", name: str = "AMD EPYC"):
    """Pretend to be a machine without a GPU whose CPU has these feature flags."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "_cpu_facts", lambda: (name, set(flags)))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)


def gpu(monkeypatch, bf16: bool, name: str = "NVIDIA H100"):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)


# ---------------------------------------------------------------------------------------------
# native_bf16: what the hardware computes natively, and why


def test_avx2_only_cpu_has_no_native_bf16(monkeypatch):
    cpu(monkeypatch, {"avx", "avx2", "fma"})
    native, why = hardware.native_bf16()
    assert native is False
    assert why.startswith("CPU AMD EPYC has AVX2 only") and "emulated" in why


def test_avx512_without_bf16_is_not_native(monkeypatch):
    cpu(monkeypatch, {"avx2", "avx512f", "avx512_f", "avx512_vnni"}, capability="AVX512", name="Intel Xeon")
    native, why = hardware.native_bf16()
    assert native is False and why.startswith("CPU Intel Xeon has AVX512 only, no AVX-512 BF16 or AMX")


@pytest.mark.parametrize("flag,label", [("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX")])
def test_cpu_with_avx512_bf16_or_amx_is_native(monkeypatch, flag, label):
    cpu(monkeypatch, {"avx2", "avx512f", flag}, capability="AVX512", name="Intel Xeon")
    native, why = hardware.native_bf16()
    assert native is True and why == f"CPU Intel Xeon has {label}"


def test_gpu_with_and_without_bf16(monkeypatch):
    cpu(monkeypatch, {"avx2"})
    gpu(monkeypatch, bf16=True)
    assert hardware.native_bf16() == (True, "GPU NVIDIA H100 computes bf16 natively")
    gpu(monkeypatch, bf16=False, name="Tesla T4")
    native, why = hardware.native_bf16()
    assert native is False and why.startswith("GPU Tesla T4 has no native bf16")


def test_use_cpu_on_a_gpu_machine_asks_the_cpu(monkeypatch):
    cpu(monkeypatch, {"avx2"})
    gpu(monkeypatch, bf16=True)
    assert hardware.native_bf16(use_cpu=True)[0] is False
    assert hardware.resolve_bf16(TrainConfig(use_cpu=True)) is False


def test_cpu_facts_agree_with_torch_on_this_machine():
    name, flags = hardware._cpu_facts()
    assert name
    if not torch.cuda.is_available():
        from torch.cpu import get_capabilities

        caps = get_capabilities()
        expected = bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
        assert hardware.native_bf16()[0] is expected


# ---------------------------------------------------------------------------------------------
# resolve_bf16 / bf16_problems: what a run uses


def test_default_is_auto_and_follows_the_hardware(monkeypatch, caplog):
    assert TrainConfig().bf16 == "auto"
    cpu(monkeypatch, {"avx2"})
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        assert hardware.resolve_bf16(TrainConfig()) is False
    assert "bf16: off (train.bf16: auto; CPU AMD EPYC has AVX2 only" in caplog.text
    cpu(monkeypatch, {"avx2", "avx512_bf16"}, capability="AVX512")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        assert hardware.resolve_bf16(TrainConfig(bf16="auto")) is True
    assert "bf16: on (train.bf16: auto; CPU AMD EPYC has AVX-512 BF16)" in caplog.text


def test_true_without_native_bf16_is_an_error_that_names_the_fix(monkeypatch):
    cpu(monkeypatch, {"avx2"})
    train = TrainConfig(bf16=True)
    assert hardware.bf16_problems(train) and hardware.bf16_problems(TrainConfig(bf16="auto")) == []
    with pytest.raises(TunesmithError, match=r"train.bf16: true .*AVX2 only.*set train.bf16: auto .* or false"):
        hardware.resolve_bf16(train)


def test_true_and_false_are_kept_where_they_apply(monkeypatch):
    cpu(monkeypatch, {"amx_bf16"}, capability="AVX512")
    assert hardware.resolve_bf16(TrainConfig(bf16=True)) is True
    assert hardware.resolve_bf16(TrainConfig(bf16=False)) is False
    cpu(monkeypatch, {"avx2"})
    assert hardware.resolve_bf16(TrainConfig(bf16=False)) is False


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("AUTO", "auto"), ("true", True), (False, False)])
def test_bf16_accepts_auto_and_booleans(value, expected):
    assert TrainConfig(bf16=value).bf16 == expected


def test_bf16_other_values_get_one_clear_error(tiny_bert, sentiment_file, make_config):
    with pytest.raises(TunesmithError, match=r"^train.bf16: value error, expected true, false or auto, found 'maybe'$"):
        load_config(make_config(tiny_bert, sentiment_file, "classify", train={"bf16": "maybe"}))


@pytest.mark.parametrize("native", [True, False])
def test_trainer_arguments_record_the_resolved_value(native, monkeypatch, tiny_bert, sentiment_file, make_config, tmp_path):
    from tunesmith.objectives.registry import OBJECTIVES
    from tunesmith.objectives.trainer import training_arguments

    cpu(monkeypatch, {"avx2", "avx512_bf16"} if native else {"avx2"})
    cfg = load_config(make_config(tiny_bert, sentiment_file, "classify"))
    assert cfg.train.bf16 == "auto"
    args = training_arguments(cfg, tmp_path, OBJECTIVES["classify"])
    assert args.bf16 is native and args.use_cpu is True


def test_a_model_trained_with_bf16_autocast_is_measured_and_reloaded_in_full_precision(
        monkeypatch, tiny_bert, sentiment_file, make_config, tmp_path):
    """accelerate wraps forward in bf16 autocast for mixed precision and leaves it on the model; the tuned model must
    be measured without it (as the base was, and as a reload is). Any CPU runs bf16 autocast (emulated if need be)."""
    from tunesmith import api

    cpu(monkeypatch, {"avx2", "avx512_bf16"})
    run = api.train(make_config(tiny_bert, sentiment_file, "classify", train={"bf16": True}), out=tmp_path / "run")
    assert run.manifest["bf16"] is True
    texts = ["What a film.", "Dull."]
    assert [p["probs"] for p in run.predict(texts)] == [p["probs"] for p in api.load_run(run.dir).predict(texts)]


# ---------------------------------------------------------------------------------------------
# `tunesmith validate`: problems that used to surface only during training


def validate(tmp_path, raw: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return CliRunner().invoke(app, ["validate", str(path)])


def assert_stops(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


def test_validate_rejects_bf16_true_without_native_bf16(monkeypatch, tmp_path, tiny_bert, sentiment_file, make_config):
    cpu(monkeypatch, {"avx2"})
    result = validate(tmp_path, make_config(tiny_bert, sentiment_file, "classify", train={"bf16": True}))
    assert_stops(result, "train.bf16", "AVX2 only", "auto")


def test_validate_catches_a_scheduler_typo(tmp_path, tiny_bert, sentiment_file, make_config):
    result = validate(tmp_path, make_config(tiny_bert, sentiment_file, "classify", train={"lr_scheduler_type": "cosinee"}))
    assert_stops(result, "train.lr_scheduler_type", "'cosinee'", "did you mean 'cosine'?")


@pytest.mark.parametrize("method,fragments", [
    ({"name": "lora", "target_modules": ["q_proj", "value"]}, ["method.target_modules", "['q_proj'] match no linear", "'query'"]),
    ({"name": "dora", "target_modules": "q_proj"}, ["method.target_modules", "['q_proj'] match no linear"]),
    ({"name": "ia3", "target_modules": ["attn"]}, ["method.target_modules", "['attn'] match no linear"]),
    ({"name": "adapter", "target_modules": {"ffn": ["mlp.down_proj"]}}, ["method.target_modules", "no ffn output projection"]),
])
def test_validate_catches_targets_that_match_nothing_without_loading_weights(
        method, fragments, monkeypatch, tmp_path, tiny_bert, sentiment_file, make_config):
    from transformers import AutoModelForSequenceClassification

    def no_weights(*args, **kwargs):
        raise AssertionError("validate loaded the model's weights")

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", no_weights)
    result = validate(tmp_path, make_config(tiny_bert, sentiment_file, "classify", method))
    assert_stops(result, *fragments)


def test_validate_accepts_targets_that_match(tmp_path, tiny_llama, qa_file, make_config):
    result = validate(tmp_path, make_config(tiny_llama, qa_file, "sft", {"name": "lora", "target_modules": ["q_proj", "down_proj"]}))
    assert result.exit_code == 0, result.output


def test_targets_not_checked_when_the_config_needs_its_own_code(tmp_path, tiny_bert, sentiment_file, make_config, caplog):
    from tunesmith.methods.targets import target_problems

    model = Path(shutil.copytree(tiny_bert, tmp_path / "custom"))
    config = json.loads((model / "config.json").read_text())
    config.update({"model_type": "my-custom-bert", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}})
    (model / "config.json").write_text(json.dumps(config))
    cfg = load_config(make_config(str(model), sentiment_file, "classify", {"name": "lora", "target_modules": ["q_proj"]}))
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        assert target_problems(cfg, "classify") == []
    assert "method.target_modules: not checked" in caplog.text and "when the model loads" in caplog.text


def test_train_stops_on_true_without_native_bf16(monkeypatch, tiny_bert, sentiment_file, make_config, tmp_path):
    """`train` reaches the same check when it builds the Trainer's arguments (validate reports it earlier)."""
    from tunesmith.objectives.registry import OBJECTIVES
    from tunesmith.objectives.trainer import training_arguments

    cfg = load_config(make_config(tiny_bert, sentiment_file, "classify", train={"bf16": True}))  # loads anywhere
    cpu(monkeypatch, {"avx2"})
    with pytest.raises(TunesmithError, match=r"^train.bf16: true asks for bf16 autocast, but CPU AMD EPYC has AVX2 only"):
        training_arguments(cfg, tmp_path, OBJECTIVES["classify"])
