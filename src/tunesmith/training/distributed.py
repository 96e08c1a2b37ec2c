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
from tunesmith.hardware import rank, world_size
from tunesmith.procs import die_with_parent

log = logging.getLogger("tunesmith")


def refuse_foreign_launch() -> None:
    """`tunesmith train` started as one of several processes by a launcher other than --nproc."""
    if world_size() > 1:
        raise TunesmithError(f"tunesmith train was started as process {rank()} of {world_size()} by a launcher "
                             "(torchrun, accelerate launch); start it once with --nproc N instead, which launches the "
                             "processes itself so that only one of them writes the run folder")


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
                   "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "tunesmith.cli.worker", str(spec)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
        log.info("Training on %d processes (%s threads each): %s", nproc, env["OMP_NUM_THREADS"], " ".join(command))
        code = subprocess.run(command, env=env, preexec_fn=die_with_parent if os.name == "posix" else None).returncode
    if code != 0:
        if plan.swaps and last_checkpoint(plan.stage) is None:
            discard_output(plan)
        raise TunesmithError(f"training on {nproc} processes stopped (exit code {code}); the workers' messages are "
                             f"above. {plan.target} is " + ("unchanged" if plan.swaps else "marked unfinished"))
    return commit_output(plan)


