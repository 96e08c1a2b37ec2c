"""Hub access that fails fast: an unreachable Hugging Face hub is found out in seconds (not after a minute of
retries), and a model in the local hub cache is used from there."""

from __future__ import annotations

import functools
import logging
import os
import socket
import urllib.parse
from pathlib import Path

from tunesmith.assets.catalog import ASSETS
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable() -> bool:
    """Can this machine open a connection to the hub (HF_ENDPOINT), and may it (HF_HUB_OFFLINE unset)?"""
    return not hub_offline() and _can_connect(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


@functools.lru_cache(maxsize=None)
def _can_connect(endpoint: str, timeout: float = 3.0) -> bool:
    """Asked once per process and endpoint, in at most `timeout` s, so that an unreachable hub fails in seconds
    instead of a minute of retries."""
    url = urllib.parse.urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_access(name: str, revision: str | None = None, *, repo_type: str = "model", key: str = "model.name") -> dict:
    """from_pretrained keywords for `name`: {} for a local folder or a reachable hub; local_files_only when the hub
    cannot be reached but the local cache has the model; else a TunesmithError at once (not after a minute of
    retries). Datasets are looked up by `datasets` itself when HF_HUB_OFFLINE is set (it has its own cache)."""
    if Path(name).expanduser().exists() or hub_reachable() or (repo_type == "dataset" and hub_offline()):
        return {}
    kinds = "model" if repo_type == "model" else "dataset"
    catalog = ", ".join(n for n, a in ASSETS.items() if a.kind == kinds)
    if repo_type == "dataset":
        raise TunesmithError(f"{key}: {name!r} is not a local file or folder nor in the offline catalog, and the Hugging "
                             f"Face hub cannot be reached from this machine; use an offline dataset ({catalog}) or a "
                             "local file, or set HF_HUB_OFFLINE=1 if the dataset is in your local cache")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    except ValueError:  # not a valid repo id
        cached = False
    if cached:
        log.info("The hub is unreachable%s; using the cached copy of %s", " (HF_HUB_OFFLINE is set)" if hub_offline() else "", name)
        return {"local_files_only": True}
    why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face hub cannot be reached from this machine"
    raise TunesmithError(f"{key}: {name!r} is not a local folder, not in the offline catalog and not in the local hub "
                         f"cache, and {why}; use an offline {kinds} ({catalog}), a local path, or a machine with a network")
