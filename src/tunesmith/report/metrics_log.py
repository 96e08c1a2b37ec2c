"""metrics.jsonl: every Trainer log (loss, learning rate, eval metrics) appended as it happens."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback


class MetricsLog(TrainerCallback):
    """Appends every Trainer log (loss, learning rate, eval metrics) to metrics.jsonl as it happens."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "time": round(time.time() - self.start, 2)}
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
