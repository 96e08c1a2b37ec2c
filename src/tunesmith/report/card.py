"""Model cards: the README.md that the Hugging Face Hub reads, written from a run folder's own files.

YAML metadata (base_model, library_name, pipeline_tag, tags, datasets, license, model-index from eval.json: each
metric on its split, tuned and base), then what was trained and how, what it bought and what it cost (the run's
figures from manifest.json), forgetting where measured, and a snippet that loads the model with plain
transformers / PEFT. Written into the run's weights folder at the end of training (it replaces PEFT's empty
template there), into every export, and again with the repo id by `tunesmith push`.
Built with huggingface_hub's ModelCard / ModelCardData / EvalResult, so the metadata is what the Hub validates."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tunesmith.assets import ASSETS, looks_like_path
from tunesmith.config_io import read_yaml
from tunesmith.runs.folder import EXPORT_MARKER, PARTIAL, read_json_file

log = logging.getLogger("tunesmith")

# The hub origin of the offline catalog's assets (the packages carry copies of these) and the base model's license.
CATALOG_MODELS = {"minilm-l6": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
                  "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
CATALOG_DATASETS = {"rotten_tomatoes": "cornell-movie-review-data/rotten_tomatoes", "xsum-1k": "EdinburghNLP/xsum",
                    "boolq": "google/boolq", "openbookqa": "allenai/openbookqa", "commonsenseqa": "tau/commonsense_qa",
                    "truthfulqa": "truthfulqa/truthful_qa", "mmlu": "cais/mmlu", "nq-open": "google-research-datasets/nq_open",
                    "stereoset": "McGill-NLP/stereoset", "stereoset-single": "McGill-NLP/stereoset"}
PIPELINES = {"classify": "text-classification", "causal_lm": "text-generation"}
NOT_METRICS = {"eval_tokens", "tokens"}  # counts in eval.json, not scores


def card_path(folder: Path) -> Path:
    return Path(folder) / "README.md"


def finish_run(run_dir: Path, trackers=()) -> None:
    """What the world sees of a run that has just finished training: its model card, and its config and eval.json in
    the trackers it reported to (train.report_to)."""
    write_run_card(run_dir)
    if trackers:
        from tunesmith.report.tracking import log_results

        log_results(run_dir, trackers)


def write_run_card(run_dir: Path) -> Path | None:
    """The card of a run that has just finished training, into its weights folder. A card that cannot be written
    is logged, never the end of a trained run (`tunesmith export` and `push` write it again)."""
    try:
        manifest = read_json_file(Path(run_dir) / "manifest.json")
        return write_card(run_dir, Path(run_dir) / manifest["saved"], location=_final(Path(run_dir)) / manifest["saved"])
    except Exception as err:  # noqa: BLE001 - the run's weights are saved; its card is a convenience
        log.warning("The model card (README.md) was not written: %s: %s", type(err).__name__, err)
        return None


def _final(run_dir: Path) -> Path:
    """A run written beside an old one (`name.partial`) is read from `name` once it is swapped in."""
    return run_dir.with_name(run_dir.name.removesuffix(PARTIAL)).resolve()


def write_card(run_dir, folder, *, location: str | Path | None = None, repo: str | None = None) -> Path:
    """README.md in `folder` (the run's weights folder or an export of it) describing `run_dir`. The usage snippet
    loads from `repo` (a hub id, for a push), else `location` (where the folder will be read), else the folder."""
    card = build_card(run_dir, folder, location=repo or location)
    path = card_path(folder)
    card.save(path)
    return path


def build_card(run_dir, folder, *, location: str | Path | None = None):
    """The ModelCard of `run_dir` as saved in `folder`."""
    from huggingface_hub import ModelCard

    facts = _facts(Path(run_dir), Path(folder), str(location or Path(folder).resolve()))
    body = "\n".join(part(facts) for part in (_intro, _trained, _bought, _cost, _forgetting, _usage))
    return ModelCard(f"---\n{card_data(facts).to_yaml()}\n---\n\n{body}")


# ---------------------------------------------------------------------------------------------
# Facts from the run folder


def _facts(run_dir: Path, folder: Path, location: str) -> dict:
    manifest = read_json_file(run_dir / "manifest.json")
    config = read_yaml(run_dir / "config.yaml")
    results = read_json_file(run_dir / "eval.json") if (run_dir / "eval.json").is_file() else {}
    export = read_json_file(folder / EXPORT_MARKER) if (folder / EXPORT_MARKER).is_file() else {}
    adapter = read_json_file(folder / "adapter_config.json") if (folder / "adapter_config.json").is_file() else None
    model_config = read_json_file(folder / "config.json") if (folder / "config.json").is_file() else {}
    if adapter is not None:
        library, kind = "peft", "classify" if adapter.get("task_type") == "SEQ_CLS" else "causal_lm"
    elif model_config:
        archs = model_config.get("architectures") or [""]
        library, kind = "transformers", "classify" if archs[0].endswith("ForSequenceClassification") else "causal_lm"
    else:  # a method's own format (features)
        library, kind = None, "classify" if manifest.get("task", {}).get("labels") else "causal_lm"
    base = str(manifest.get("model") or config["model"]["name"])
    base_id, license_ = _base_origin(base)
    return {"run_dir": run_dir, "name": _final(run_dir).name, "folder": folder, "location": location,
            "manifest": manifest, "config": config, "results": results, "export": export, "adapter": adapter,
            "library": library, "kind": kind, "base": base, "base_id": base_id, "license": license_,
            "labels": list(manifest.get("task", {}).get("labels") or []),
            "base_path": (adapter or {}).get("base_model_name_or_path") or base}


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if looks_like_path(name) or Path(name).expanduser().exists():
        return False
    try:
        validate_repo_id(name)
        return True
    except HFValidationError:
        return False


def _base_origin(name: str) -> tuple[str | None, str | None]:
    """(hub id, license) of the base model: the catalog's origin; a hub id and the license on its own card when
    that card is on this machine (a local folder's README.md, the hub cache); None where unknown."""
    if name in CATALOG_MODELS:
        return CATALOG_MODELS[name]
    readme = None
    if Path(name).expanduser().is_dir():
        readme = Path(name).expanduser() / "README.md"
    elif _is_hub_id(name):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "README.md")
        readme = Path(cached) if isinstance(cached, str) else None
    license_ = None
    if readme is not None and readme.is_file():
        from huggingface_hub import ModelCard

        license_ = ModelCard.load(readme, ignore_metadata_errors=True).data.license
    return (name if _is_hub_id(name) else None), license_


def _datasets(config: dict) -> list[tuple[str, str | None]]:
    """(name shown, hub id or None) of each data source: a catalog dataset with a known origin, a hub id, a local
    file (by its file name only: a card must not carry this machine's paths)."""
    data = config.get("data") or {}
    out = []
    for source in [data.get("source"), *((m or {}).get("source") for m in data.get("mix") or [])]:
        if not source:
            continue
        source = str(source)
        if source in ASSETS:
            out.append((source, CATALOG_DATASETS.get(source)))
        elif _is_hub_id(source):
            out.append((source, source))
        else:
            out.append((Path(source).name, None))
    return out


def _split(config: dict) -> str:
    data = config.get("data") or {}
    return data.get("eval_split") or f"held out from {data.get('train_split') or 'train'}"


def _metrics(results: dict) -> list[str]:
    base, tuned = results.get("base") or {}, results.get("tuned") or {}
    names = [m for m in {**base, **tuned} if m not in NOT_METRICS]
    return [m for m in names if any(isinstance(d.get(m), (int, float)) and not isinstance(d.get(m), bool)
                                    for d in (base, tuned))]


# ---------------------------------------------------------------------------------------------
# Metadata


def card_data(facts: dict):
    """ModelCardData: what the Hub indexes (its constructor checks the model-index)."""
    from huggingface_hub import EvalResult, ModelCardData

    config, results = facts["config"], facts["results"]
    method, objective = config["method"]["name"], config["objective"]["name"]
    sources = _datasets(config)
    first_name, first_id = sources[0] if sources else ("eval", None)
    pipeline = PIPELINES[facts["kind"]]
    evals = []
    for metric in _metrics(results):
        for which, label in (("tuned", metric), ("base", f"{metric} (base model, before tuning)")):
            value = (results.get(which) or {}).get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                evals.append(EvalResult(task_type=pipeline, dataset_type=first_id or first_name, dataset_name=first_name,
                                        dataset_split=_split(config), metric_type=metric.removeprefix("eval_"),
                                        metric_value=value, metric_name=label))
    tags = ["tunesmith", method, objective] + (["merged"] if facts["export"].get("merged") else [])
    return ModelCardData(base_model=facts["base_id"], library_name=facts["library"], pipeline_tag=pipeline,
                         tags=list(dict.fromkeys(tags)), license=facts["license"],
                         datasets=sorted({i for _, i in sources if i}) or None,
                         model_name=facts["name"], eval_results=evals or None)


# ---------------------------------------------------------------------------------------------
# Sections


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _options(section: dict, skip=("name",)) -> str:
    items = [f"`{k}: {json.dumps(v)}`" for k, v in (section or {}).items() if k not in skip and v not in (None, [], {})]
    return ", ".join(items) or "defaults"


def _intro(f: dict) -> str:
    config, export = f["config"], f["export"]
    method, objective = config["method"]["name"], config["objective"]["name"]
    what = ("a standalone model: the adapter folded into the base weights" if export.get("merged")
            else f"the adapter cut to rank {export['rank']}" if export.get("rank") is not None
            else "a PEFT adapter on the base model" if f["library"] == "peft"
            else "the whole tuned model" if f["library"] == "transformers" else f"tunesmith's {method} format")
    base = (f"[{f['base_id']}](https://huggingface.co/{f['base_id']})" if f["base_id"]
            else f"`{Path(f['base']).name}` (a local model folder)" if Path(f["base"]).expanduser().exists() else f"`{f['base']}`")
    return (f"# {f['name']}\n\n{base} tuned with **{method}** on the **{objective}** objective by "
            f"tunesmith ({what}). Every figure below is this run's own, from its run folder "
            "(`manifest.json`, `eval.json`).\n")


def _trained(f: dict) -> str:
    config, manifest = f["config"], f["manifest"]
    data, train = config.get("data") or {}, config.get("train") or {}
    sources = ", ".join(f"[{n}](https://huggingface.co/datasets/{i})" if i else f"`{n}`" for n, i in _datasets(config))
    length = f"{train.get('max_steps')} steps" if (train.get("max_steps") or -1) > 0 else f"{train.get('num_train_epochs')} epochs"
    keys = ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type",
            "warmup_steps", "weight_decay", "seed", "bf16")
    return "\n".join([
        "## What was trained, and how\n",
        f"- **Method:** `{config['method']['name']}` ({_options(config['method'])})",
        f"- **Objective:** `{config['objective']['name']}` ({_options(config['objective'])})",
        f"- **Data:** {sources or 'see config'}; {manifest.get('train_examples', '?')} training and "
        f"{manifest.get('eval_examples', '?')} evaluation examples (evaluation split: {_split(config)}); "
        f"columns {_options(data.get('columns'), ())}; max length {data.get('max_length')} tokens",
        f"- **Training:** {length}, " + ", ".join(f"`{k}: {json.dumps(train.get(k))}`" for k in keys if k in train),
        f"- **Seed:** {manifest.get('seed')}; data fingerprints {_options(manifest.get('data_fingerprint'), ())}\n",
    ])


def _bought(f: dict) -> str:
    results = f["results"]
    base, tuned, directions = results.get("base") or {}, results.get("tuned") or {}, results.get("directions") or {}
    rows = ["## What it bought\n", f"Measured on the same {f['manifest'].get('eval_examples', '?')} held-out examples "
            f"({_split(f['config'])}) before and after tuning.\n", "| metric | base | tuned | change | better |",
            "|---|---|---|---|---|"]
    for m in _metrics(results):
        b, t = base.get(m), tuned.get(m)
        change = f"{t - b:+.4g}" if isinstance(b, (int, float)) and isinstance(t, (int, float)) else ""
        rows.append(f"| {m} | {_fmt(b) if b is not None else ''} | {_fmt(t) if t is not None else ''} | {change} | "
                    f"{ {'max': 'higher', 'min': 'lower'}.get(directions.get(m), '') } |")
    return "\n".join(rows) + "\n" if len(rows) > 4 else "## What it bought\n\nNo metrics were measured.\n"


def _cost(f: dict) -> str:
    m = f["manifest"]
    memory = ", ".join(f"{k.removeprefix('peak_').removesuffix('_mb').replace('_', ' ')} {v:,.0f} MB"
                       for k, v in (m.get("peak_memory") or {}).items())
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if k not in ("platform",))
    rows = [
        "## What it cost\n",
        "| | |", "|---|---|",
        f"| trainable parameters | {m.get('trainable_params', 0):,} of {m.get('total_params', 0):,} "
        f"({m.get('trainable_percent', 0)}%) |",
        f"| training time | {m.get('train_seconds', '?')} s, {m.get('train_steps', '?')} steps |",
        f"| tokens seen | {m.get('tokens_seen', 0):,} ({m.get('tokens_per_second', '?')} tokens/s) |",
        f"| peak memory | {memory or '?'} |",
        f"| machine | {(m.get('machine') or {}).get('summary', m.get('device', '?'))}; {m.get('processes', 1)} process(es) |",
        f"| software | {versions} |",
    ]
    return "\n".join(rows) + "\n\nFigures from another machine are not comparable without its own summary line.\n"


def _forgetting(f: dict) -> str:
    forgetting = f["results"].get("forgetting")
    if not forgetting:
        return ""
    rows = ["## Forgetting\n", "Multiple-choice benchmarks outside the training data, scored by log-likelihood "
            "(acc_norm), before and after tuning.\n", "| benchmark | n | base | tuned | change |", "|---|---|---|---|---|"]
    rows += [f"| {task} | {r.get('n')} | {_fmt(r['base'])} | {_fmt(r['tuned'])} | {r['change']:+.4g} |"
             for task, r in forgetting.items()]
    return "\n".join(rows) + "\n"


def _usage(f: dict) -> str:
    code = usage_snippet(f)
    return "## Use it\n\n" + (f"```python\n{code}```\n" if code else
                              f"This is tunesmith's own `{f['config']['method']['name']}` format: load it with "
                              f"`tunesmith.load_run(\"{_final(f['run_dir'])}\")`.\n")


# ---------------------------------------------------------------------------------------------
# The usage snippet: plain transformers / PEFT, no tunesmith


def usage_snippet(f: dict) -> str | None:
    """Python that loads the model from f["location"] and runs it once; None for a format of tunesmith's own."""
    if f["library"] is None:
        return None
    peft = f["library"] == "peft"
    auto = "AutoModelForSequenceClassification" if f["kind"] == "classify" else "AutoModelForCausalLM"
    base = f["base_id"] or f["base_path"]
    lines = (["import torch", "from peft import PeftModel"] if peft else ["import torch"]) + [
        f"from transformers import {auto}, AutoTokenizer", "", f"model_id = {json.dumps(str(f['location']))}",
        "tokenizer = AutoTokenizer.from_pretrained(model_id)"]
    if f["kind"] == "classify":
        return "\n".join(lines + _classify_lines(f, auto, base, peft)) + "\n"
    load = (f"model = PeftModel.from_pretrained({auto}.from_pretrained({json.dumps(base)}), model_id).eval()" if peft
            else f"model = {auto}.from_pretrained(model_id).eval()")
    data = f["config"].get("data") or {}
    prompt = next(iter((f["results"].get("probes") or {}).get("inputs") or []), None)
    if data.get("format", "text") != "text":  # every data.format but text renders through the chat template
        ask = [f"messages = [{{\"role\": \"user\", \"content\": {json.dumps(prompt or 'Hello!')}}}]",
               "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
               "return_dict=True)"]
    else:
        samples = (f["results"].get("base") or {}).get("samples") or []
        prompt = prompt or (samples[0]["prompt"] if samples else "Hello!")
        ask = [f"inputs = tokenizer({json.dumps(prompt)}, return_tensors=\"pt\")"]
    new = (f["config"].get("eval") or {}).get("max_new_tokens") or 48
    return "\n".join(lines + [load, ""] + ask + [
        "with torch.no_grad():", f"    out = model.generate(**inputs, max_new_tokens={new}, do_sample=False)",
        "print(tokenizer.decode(out[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))"]) + "\n"


def _classify_lines(f: dict, auto: str, base: str, peft: bool) -> list[str]:
    labels = f["labels"]
    max_length = (f["config"].get("data") or {}).get("max_length") or 512
    if peft:
        names = [f"id2label = {dict(enumerate(labels))!r}"] if labels else []
        args = ", id2label=id2label, label2id={v: k for k, v in id2label.items()}" if labels else ", num_labels=1"
        lines = names + [f"base = {auto}.from_pretrained({json.dumps(base)}{args})",
                         "base.config.pad_token_id = tokenizer.pad_token_id",
                         "model = PeftModel.from_pretrained(base, model_id).eval()"]
    else:
        lines = [f"model = {auto}.from_pretrained(model_id).eval()"] + (["id2label = model.config.id2label"] if labels else [])
    lines += ["", "texts = [\"An example to classify.\"]",
              f"inputs = tokenizer(texts, return_tensors=\"pt\", padding=True, truncation=True, max_length={max_length})",
              "with torch.no_grad():", "    logits = model(**inputs).logits"]
    if labels:
        return lines + ["print([id2label[i] for i in logits.softmax(-1).argmax(-1).tolist()])"]
    return lines + ["print(logits[:, 0].tolist())  # one score per text (a reward model: higher is preferred)"]
