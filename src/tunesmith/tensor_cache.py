"""Tensors cached on disk under cache_dir() (features' embeddings, distillation's teacher outputs): read back safely
(weights_only, so a cache file never runs code) and written atomically (a concurrent run never reads half a file)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path


def read(path: Path):
    """The cached object, None when there is no file, or the exception that made it unreadable (the caller logs
    it and computes again)."""
    import torch

    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        return err


def write(path: Path, value) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    torch.save(value, tmp)
    os.replace(tmp, path)
