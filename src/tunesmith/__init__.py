"""tunesmith: fine-tune pretrained language models with every method, and measure what each bought and cost."""

from tunesmith.errors import TunesmithError

__version__ = "0.1.0"
__all__ = ["TunesmithError", "train", "load_run", "validate", "preview", "Run", "load_config", "load_adapters", "export",
           "bench"]


def __getattr__(name):  # keep `import tunesmith` light: torch and transformers load on first use
    if name in ("train", "load_run", "validate", "preview", "Run", "bench"):
        from tunesmith import api

        return getattr(api, name)
    if name in ("load_adapters", "export", "AdapterSet"):
        from tunesmith.runs import adapters

        return getattr(adapters, name)
    if name == "load_config":
        from tunesmith.config import load_config

        return load_config
    raise AttributeError(name)
