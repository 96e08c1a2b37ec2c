"""Reading a training run's metrics.jsonl while its process is still appending to it (the sweep's pruning)."""

from __future__ import annotations

from pathlib import Path

from tunesmith.report.tail import appended_records


class EvalLines:
    """The new values of one eval metric in a metrics.jsonl that a training process is appending to."""

    def __init__(self, path: Path, key: str):
        self.path, self.key, self.offset = path, key, 0

    def new(self) -> list[tuple[int, float]]:
        records, self.offset = appended_records(self.path, self.offset)
        return [(int(r.get("step", 0)), float(r[self.key])) for r in records if isinstance(r.get(self.key), (int, float))]
