"""Data-parallel training on several processes: `tunesmith train CONFIG --nproc N`.

The process the user started checks the output folder as a one-process run does, then starts N workers through
`torch.distributed.run` (torchrun; accelerate picks gloo on CPU and nccl on GPUs) and waits for them. Each worker
loads the data and the model; transformers' Trainer sees the launcher's environment, wraps the model in
DistributedDataParallel and gives each worker its share of every batch (accelerate shards the batches of one
seeded order, so N workers with per_device_train_batch_size B train on the same examples per step as one process
with N*B, and the gradients are averaged). Only rank 0 measures the base and the tuned model and writes the run
folder (config, manifest, metrics, eval.json, report, weights); the others train and exit. When all have finished,
the starting process swaps the run in (an existing run is replaced only with --overwrite, as always).

Started by another launcher instead (`torchrun ... tunesmith train`, `accelerate launch ...`), every process would
check and write the run folder on its own: `train` refuses that and names --nproc.

If the starting process dies (killed, even with SIGKILL), torchrun and the workers die with it (Linux's parent-death
signal), so a killed run leaves no orphan training on and writing into its folder; `--resume` continues it.

Not supported (refused with the reason): methods that train without a Trainer (features) and objectives whose
trainer is not transformers' (rl's PPO loop), which would train N independent copies.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")


def rank() -> int:
    """This process's rank in a distributed run (0 when there is none)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process writes the run folder (the only process, or rank 0 of several)."""
    return rank() == 0


def refuse_foreign_launch() -> None:
    """`tunesmith train` started as one of several processes by a launcher other than --nproc."""
    if world_size() > 1:
        raise TunesmithError(f"tunesmith train was started as process {rank()} of {world_size()} by a launcher "
                             "(torchrun, accelerate launch); start it once with --nproc N instead, which launches the "
                             "processes itself so that only one of them writes the run folder")


def check(cfg, nproc: int) -> None:
    """Refuse what would not train as one model on N processes, before anything starts."""
    from tunesmith.methods.registry import METHODS
    from tunesmith.objectives.registry import OBJECTIVES

    if nproc < 1:
        raise TunesmithError(f"--nproc {nproc}: give 1 or more processes")
    problems = check_engine(cfg.train)
    if problems:
        raise TunesmithError("; ".join(problems))
    if nproc == 1:
        return
    if METHODS[cfg.method.name].fit:
        raise TunesmithError(f"--nproc {nproc}: method {cfg.method.name!r} trains its classifier without a Trainer, "
                             "on one process; drop --nproc (it trains in seconds)")
    if not OBJECTIVES[cfg.objective.name].distributed:
        raise TunesmithError(f"--nproc {nproc}: objective {cfg.objective.name!r} trains with its own loop, which does not "
                             "split batches across processes; drop --nproc")


def _merge(base: dict, more: dict) -> dict:
    out = dict(base)
    for key, value in more.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def deepspeed_config(stage: int, options: dict | None = None) -> dict:
    """A DeepSpeed ZeRO config whose batch, accumulation, clipping and precision follow the Trainer's arguments
    ("auto"), as the transformers integration fills them in."""
    zero = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:  # save_pretrained gets whole weights, not shards
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    base = {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "train_micro_batch_size_per_gpu": "auto",
            "train_batch_size": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"}
    return _merge(base, options or {})


def trainer_settings(train) -> dict:
    """TrainingArguments fields for cfg.train.distributed (none for ddp, which the Trainer sets up by itself)."""
    if train.distributed == "fsdp":  # FSDP2, whole weights when saving (a plain transformers/PEFT folder)
        return {"fsdp": True, "fsdp_config": _merge({"version": 2, "reshard_after_forward": True,
                                                     "state_dict_type": "FULL_STATE_DICT"}, train.distributed_options)}
    if train.distributed in ("zero2", "zero3"):
        return {"deepspeed": deepspeed_config(int(train.distributed[-1]), train.distributed_options)}
    return {}


def check_engine(train) -> list[str]:
    """Problems with train.distributed on this machine, each with the fix (`train` checks; `validate` does not, so a
    GPU config can be checked on a laptop)."""
    import importlib.util

    import torch

    if train.distributed == "ddp":
        return []
    problems = []
    if not torch.cuda.is_available() or train.use_cpu:
        # accelerate sets FSDP and DeepSpeed up on accelerators only; on CPU it would quietly train with plain DDP
        problems.append(f"train.distributed: {train.distributed} shards the model across GPUs, and this machine trains "
                        "on CPU (accelerate would quietly fall back to plain DDP); use train.distributed: ddp here, "
                        "or run it where CUDA GPUs are")
    if train.distributed in ("zero2", "zero3") and importlib.util.find_spec("deepspeed") is None:
        problems.append(f"train.distributed: {train.distributed} needs the deepspeed package: pip install deepspeed")
    return problems


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (elsewhere: nothing). Used as torchrun's preexec_fn
    and at the start of each worker, so that killing `tunesmith train --nproc N` takes torchrun and the workers down."""
    import ctypes
    import signal

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cfg, plan, bf16: bool, nproc: int, trust_remote_code: bool = False, checkpoint: Path | None = None) -> Path:
    """Train `cfg` into plan.stage on `nproc` worker processes (the caller has run `check`); returns the run folder
    once it is swapped in."""
    from tunesmith.runs.folder import commit_output, discard_output
    from tunesmith.runs.resume import last_checkpoint

    threads = max(1, (os.cpu_count() or 1) // nproc)  # the cores shared out, not N x all of them
    with tempfile.TemporaryDirectory(prefix="tunesmith-nproc-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"config": cfg.to_yaml(), "stage": str(plan.stage), "bf16": bf16,
                                    "trust_remote_code": trust_remote_code,
                                    "checkpoint": str(checkpoint) if checkpoint else None}))
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
                   "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "tunesmith.distributed", str(spec)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
        log.info("Training on %d processes (%s threads each): %s", nproc, env["OMP_NUM_THREADS"], " ".join(command))
        code = subprocess.run(command, env=env, preexec_fn=die_with_parent if os.name == "posix" else None).returncode
    if code != 0:
        if plan.swaps and last_checkpoint(plan.stage) is None:
            discard_output(plan)
        raise TunesmithError(f"training on {nproc} processes stopped (exit code {code}); the workers' messages are "
                             f"above. {plan.target} is " + ("unchanged" if plan.swaps else "marked unfinished"))
    return commit_output(plan)


def worker(spec_path: str) -> int:
    """One worker process (started by torchrun): train the spec's config into its stage folder."""
    import yaml

    from tunesmith.cli import _setup_logging
    from tunesmith.config import load_config
    from tunesmith.pipeline import train_run
    from tunesmith.runs import OutputPlan

    die_with_parent()  # torchrun is the parent: it dies with the starting process
    _setup_logging()
    if not is_main():  # one log and one progress bar: rank 0's
        logging.getLogger("tunesmith").setLevel(logging.WARNING)
    spec = json.loads(Path(spec_path).read_text())
    cfg = load_config(yaml.safe_load(spec["config"]))
    stage = Path(spec["stage"])
    try:
        train_run(cfg, OutputPlan(stage, stage), spec["bf16"], trust_remote_code=spec["trust_remote_code"],
                  checkpoint=Path(spec["checkpoint"]) if spec["checkpoint"] else None)
    except TunesmithError as err:
        print(f"error (rank {rank()}): {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1]))
