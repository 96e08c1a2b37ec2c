"""Reading a training run's metrics.jsonl while its process is still appending to it (the sweep's pruning)."""

from __future__ import annotations

import json
from pathlib import Path


class EvalLines:
    """The new values of one eval metric in a metrics.jsonl that a training process is appending to."""

    def __init__(self, path: Path, key: str):
        self.path, self.key, self.offset = path, key, 0

    def new(self) -> list[tuple[int, float]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1  # only whole lines: the last one may still be being written
        self.offset += end
        found = []
        for line in chunk[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get(self.key), (int, float)):
                found.append((int(record.get("step", 0)), float(record[self.key])))
        return found
