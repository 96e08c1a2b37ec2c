"""`tunesmith train --nproc N`: data-parallel training through torchrun (gloo on CPU), on a tiny model.

Two processes with per-device batch 2 train on the same examples per step as one process with batch 4, and DDP
averages their gradients: the logged losses and the trained weights match one process within float tolerance.
Only rank 0 writes the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith import api
from tunesmith.errors import TunesmithError


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _config(make_config, tiny_llama, text_file, batch: int) -> dict:
    return make_config(tiny_llama, text_file, "causal_lm", method={"name": "lora", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
                       train={"max_steps": 3, "per_device_train_batch_size": batch, "learning_rate": 1e-2, "bf16": False})


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, make_config, tiny_llama, text_file):
    one = api.train(_config(make_config, tiny_llama, text_file, 4), out=tmp_path / "one")
    two = api.train(_config(make_config, tiny_llama, text_file, 2), out=tmp_path / "two", nproc=2)
    assert two.manifest["status"] == "finished" and two.manifest["train_steps"] == 3
    assert _losses(two.dir) == pytest.approx(_losses(one.dir), rel=1e-4, abs=1e-5)
    a, b = (load_file(str(r.dir / "adapter" / "adapter_model.safetensors")) for r in (one, two))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert two.results["tuned"]["eval_loss"] == pytest.approx(one.results["tuned"]["eval_loss"], rel=1e-4)
    # rank 0 wrote the folder alone: one metrics line per logged step, no other rank's scratch or files
    assert len(_losses(two.dir)) == 3
    assert sorted(p.name for p in two.dir.iterdir()) == sorted(p.name for p in one.dir.iterdir())


def test_refused_where_it_would_train_copies(tmp_path, make_config, tiny_bert, sentiment_file):
    cfg = make_config(tiny_bert, sentiment_file, "classify", method={"name": "features"})
    with pytest.raises(TunesmithError, match="--nproc 2: method 'features'"):
        api.train(cfg, out=tmp_path / "f", nproc=2)
    assert not (tmp_path / "f").exists()


def test_fsdp_and_zero_resolve_to_accelerate_settings(tiny_llama, text_file, make_config):
    """The GPU configs are checked here on CPU: what they hand to the Trainer, and so to accelerate's plugins."""
    from tunesmith.config import load_config
    from tunesmith.objectives.registry import OBJECTIVES
    from tunesmith.objectives.trainer import trainer_settings, training_arguments

    fsdp = load_config("configs/chat-sft-full-fsdp.yaml", ["train.distributed_options={cpu_offload: true}"])
    args = training_arguments(fsdp, Path("/tmp/unused"), OBJECTIVES["sft"])
    assert args.fsdp is True
    assert args.fsdp_plugin_args["fsdp_version"] == 2 and args.fsdp_plugin_args["cpu_offload"] is True
    assert args.fsdp_plugin_args["state_dict_type"] == "FULL_STATE_DICT"
    assert args.fsdp_plugin_args["reshard_after_forward"] is True

    zero3 = load_config("configs/chat-sft-full-zero3.yaml",
                        ["train.distributed_options={zero_optimization: {offload_optimizer: {device: cpu}}}"])
    ds = trainer_settings(zero3.train)["deepspeed"]
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"]
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu"} and ds["zero_optimization"]["overlap_comm"]
    assert ds["train_micro_batch_size_per_gpu"] == "auto" and ds["bf16"] == {"enabled": "auto"}
    zero2 = load_config("configs/chat-sft-full-zero3.yaml", ["train.distributed=zero2"])
    assert trainer_settings(zero2.train)["deepspeed"]["zero_optimization"]["stage"] == 2
    assert trainer_settings(load_config(make_config(tiny_llama, text_file, "causal_lm")).train) == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_sharding_on_cpu_is_refused_not_silently_ddp(tmp_path, make_config, tiny_llama, text_file):
    cfg = make_config(tiny_llama, text_file, "causal_lm", train={"distributed": "fsdp"})
    with pytest.raises(TunesmithError, match="train.distributed: fsdp shards the model across GPUs"):
        api.train(cfg, out=tmp_path / "f", nproc=2)
    assert not (tmp_path / "f").exists()


def _workers_alive() -> list[int]:
    """Pids of --nproc workers and their torchrun (both run `-m tunesmith.training.distributed SPEC`) on this machine."""
    alive = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split(") ")[-1][0]
        except OSError:
            continue
        if b"tunesmith.cli.worker" in args and state != "Z":  # a zombie has exited and waits to be reaped
            alive.append(int(proc.name))
    return alive


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="reads /proc to find the workers")
def test_a_killed_two_process_run_leaves_no_workers_and_resumes_on_two(tmp_path, make_config, tiny_bert, sentiment_file):
    """SIGKILL the process that started `--nproc 2`: torchrun and both workers die with it (nothing keeps writing
    into the folder), and `--resume --nproc 2` finishes with the weights of an uninterrupted two-process run."""
    import sys
    import time

    import yaml
    from test_resume import kill_when_checkpointed, runner, weights

    from tunesmith.cli import app
    from tunesmith.procs import alive as _alive

    cfg = make_config(tiny_bert, sentiment_file, "classify",
                      train={"max_steps": 24, "save_steps": 4, "per_device_train_batch_size": 2})
    whole = api.train(cfg, out=tmp_path / "whole", nproc=2)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "killed"
    kill_when_checkpointed([sys.executable, "-m", "tunesmith.cli", "train", str(path), "--out", str(run_dir),
                            "--nproc", "2"], run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running"
    deadline = time.time() + 30  # the kernel takes a moment to tear a killed process down
    while (_workers_alive() or _alive(manifest["pid"])) and time.time() < deadline:
        time.sleep(0.2)
    assert _workers_alive() == [] and not _alive(manifest["pid"])  # rank 0, which wrote the manifest, is gone too

    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--nproc", "2"])
    assert result.exit_code == 0, result.output
    resumed = api.load_run(run_dir)
    assert resumed.manifest["status"] == "finished" and resumed.manifest["train_steps"] == 24
    assert resumed.manifest["processes"] == 2 and resumed.manifest["resumed"][0]["from"].startswith("checkpoint-")
    a, b = weights(whole.dir), weights(run_dir)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert resumed.results["tuned"]["accuracy"] == whole.results["tuned"]["accuracy"]
