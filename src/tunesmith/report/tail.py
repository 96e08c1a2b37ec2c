"""Reading a JSON-lines file that a process is still appending to (a run's metrics.jsonl): the whole lines after
a byte offset, and the offset to read from next time. The last line may still be being written, so it waits."""

from __future__ import annotations

import json
from pathlib import Path


def appended_records(path: Path, offset: int = 0, limit: int | None = None) -> tuple[list[dict], int]:
    """The JSON objects on the complete lines after byte `offset` (at most `limit` bytes read), and the offset after
    them. A missing file gives nothing and offset 0; a line that is not a JSON object is passed over."""
    offset = max(0, int(offset))
    try:
        with Path(path).open("rb") as fh:
            fh.seek(offset)
            chunk = fh.read(-1 if limit is None else limit)
    except OSError:
        return [], 0
    end = chunk.rfind(b"\n") + 1  # only whole lines
    records = []
    for line in chunk[:end].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, offset + end
