"""One worker process of `tunesmith train --nproc N`, started by torchrun (`python -m tunesmith.cli.worker SPEC`):
train the spec's config into its stage folder; rank 0 alone writes it."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from tunesmith.cli.common import setup_logging
from tunesmith.errors import TunesmithError
from tunesmith.hardware import is_main, rank
from tunesmith.procs import die_with_parent


def worker(spec_path: str) -> int:
    """One worker process (started by torchrun): train the spec's config into its stage folder."""
    import yaml

    from tunesmith.config import load_config
    from tunesmith.runs import OutputPlan
    from tunesmith.training.train import train_run

    die_with_parent()  # torchrun is the parent: it dies with the starting process
    setup_logging()
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
