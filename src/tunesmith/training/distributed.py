"""Data-parallel training on several processes: `tunesmith train CONFIG --nproc N`.

The process the user started checks the output folder as a one-process run does, then starts N workers through
`torch.distributed.run` (torchrun; accelerate picks gloo on CPU and nccl on GPUs) and waits for them. Each worker
loads the data and the model; transformers' Trainer sees the launcher's environment, wraps the model in
DistributedDataParallel and gives each worker its share of every batch (accelerate shards the batches of one
seeded order, so N workers with per_device_train_batch_size B train on the same examples per step as one process
with N*B, and the gradients are averaged). Only rank 0 measures the base and the tuned model and writes the run
folder (config, manifest, metrics, eval.json, report, weights); the others train and exit. When all have finished,
the starting process swaps the run in (an existing run is replaced only with --overwrite, as always).

Started by another launcher instead (`torchrun --nproc-per-node N -m tunesmith.cli train ...`, `accelerate launch
...`, an sbatch script), every process runs `train` itself: global rank 0 alone checks and plans the output folder
(the others wait for it and get its plan, or its error, through the process group: `on_rank0`), every rank trains,
rank 0 alone writes and swaps the run folder in. `--resume` is prepared the same way (rank 0 reads and trims the
stopped run; the others read its config and the checkpoint). The folder must be on a filesystem every node sees
when the ranks of a resumed run read its checkpoint; a new run is written from node 0 only.

Several nodes through --nproc: `--nnodes M --node-rank R --master-addr HOST --master-port P` go to torchrun on each
node; the starting process of node 0 plans and swaps the run folder, those of the other nodes never touch it.

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


def launched() -> bool:
    """Whether this process is one of several that a launcher (torchrun, accelerate launch, --nproc) started."""
    return world_size() > 1


def check_launch(nproc: int, nnodes: int = 1) -> None:
    """Under a launcher, --nproc/--nnodes would start processes inside processes: refused, with the fix."""
    if launched() and (nproc > 1 or nnodes > 1):
        raise TunesmithError(f"--nproc {nproc} --nnodes {nnodes}: this process is already rank {rank()} of {world_size()} "
                             "under a launcher (torchrun, accelerate launch), which started the processes; drop --nproc "
                             "and --nnodes (the launcher's own flags set them), or start tunesmith once without a launcher")


def _process_group(use_cpu: bool = False) -> None:
    """The launcher's process group (gloo on CPU, nccl on GPUs), as accelerate would set it up; it keeps this one."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    gpu = torch.cuda.is_available() and not use_cpu
    if gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if gpu else "gloo")


def on_rank0(fn, use_cpu: bool = False):
    """fn() on global rank 0 only, while the other ranks wait; its result (picklable) reaches every rank, and so does
    its TunesmithError: every rank stops with rank 0's message."""
    import torch.distributed as dist

    _process_group(use_cpu)
    box = [None]
    if rank() == 0:
        try:
            box[0] = ("ok", fn())
        except TunesmithError as err:
            box[0] = ("error", str(err))
        except BaseException as err:
            box[0] = ("error", f"rank 0 stopped: {type(err).__name__}: {err}")
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise TunesmithError(value if rank() == 0 else f"(rank 0) {value}")
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_nodes(nodes: dict | None) -> list[str]:
    """torchrun's flags for one node (a free loopback port) or for node R of M."""
    if not nodes:
        return ["--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    return [f"--nnodes={nodes['nnodes']}", f"--node_rank={nodes['node_rank']}", f"--master_addr={nodes['master_addr']}",
            f"--master_port={nodes['master_port']}"]


def check_nodes(nnodes: int, node_rank: int, master_addr: str | None, master_port: int | None) -> dict | None:
    """--nnodes/--node-rank/--master-addr/--master-port checked; None for one node on a free loopback port."""
    if nnodes < 1 or not 0 <= node_rank < nnodes:
        raise TunesmithError(f"--nnodes {nnodes} --node-rank {node_rank}: give --nnodes 1 or more and --node-rank from 0 "
                             f"to {max(nnodes - 1, 0)} (this node's number; node 0 writes the run folder)")
    if nnodes > 1 and (not master_addr or not master_port):
        raise TunesmithError(f"--nnodes {nnodes}: give --master-addr HOST and --master-port PORT, the address of node 0 "
                             "that every node can reach and a free port there (the same on every node)")
    if nnodes == 1 and node_rank == 0 and not master_addr and not master_port:
        return None
    return {"nnodes": nnodes, "node_rank": node_rank, "master_addr": master_addr or "127.0.0.1",
            "master_port": master_port or _free_port()}


def launch(cfg, plan, bf16: bool, nproc: int, trust_remote_code: bool = False, checkpoint: Path | None = None,
           nodes: dict | None = None) -> Path:
    """Train `cfg` into plan.stage on `nproc` worker processes (the caller has run `check`); returns the run folder
    once it is swapped in. `nodes`: {nnodes, node_rank, master_addr, master_port} for several nodes; a node other
    than 0 trains only (its ranks never write) and returns plan.target untouched."""
    from tunesmith.runs.folder import commit_output, discard_output
    from tunesmith.runs.resume import last_checkpoint

    threads = max(1, (os.cpu_count() or 1) // nproc)  # the cores shared out, not N x all of them
    with tempfile.TemporaryDirectory(prefix="tunesmith-nproc-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"config": cfg.to_yaml(), "stage": str(plan.stage), "bf16": bf16,
                                    "trust_remote_code": trust_remote_code,
                                    "checkpoint": str(checkpoint) if checkpoint else None}))
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                   *torchrun_nodes(nodes), "-m", "tunesmith.cli.worker", str(spec)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
        log.info("Training on %d processes (%s threads each): %s", nproc, env["OMP_NUM_THREADS"], " ".join(command))
        code = subprocess.run(command, env=env, preexec_fn=die_with_parent if os.name == "posix" else None).returncode
    writer = not nodes or nodes.get("node_rank", 0) == 0
    if code != 0 and not writer:
        raise TunesmithError(f"training on node {nodes['node_rank']} stopped (exit code {code}); the workers' messages "
                             "are above (node 0 keeps the run folder)")
    if not writer:
        return plan.target
    if code != 0:
        if plan.swaps and last_checkpoint(plan.stage) is None:
            discard_output(plan)
        raise TunesmithError(f"training on {nproc} processes stopped (exit code {code}); the workers' messages are "
                             f"above. {plan.target} is " + ("unchanged" if plan.swaps else "marked unfinished"))
    return commit_output(plan)


