"""The teacher of a `distill` / `distill_lm` run: where it comes from, its checks, and its outputs, computed once per
example and cached on disk; plus the distillation loss and the small Trainer that applies it.

Teacher: `objective.teacher` is a finished run folder (its tuned model, `Run.load_tuned`) or a model name or folder
(catalog name, local folder, hub id). It must tokenize as the student does (the same vocabulary): the student's
token ids are what the teacher reads, and for a causal LM its logits are compared token by token.

Cache: `cache_dir()/distill/<key>.pt`, keyed by the teacher's identity (a run: its manifest.json and a SHA-256 of its
weight files; a model: its resolved path, revision and, for a local folder, a SHA-256 of its weight files), its
dtype, the kind of output, top_k, data.max_length and the token ids (and, for a causal LM, which positions carry a
label). The logits are raw (temperature 1): temperature and alpha change without recomputing anything.
- classification: `logits` float32 [examples, labels] (8 bytes per example for two labels);
- causal LM / sft, only at the positions that carry a label (response tokens for sft): the teacher's top_k logits
  `values` float16 [positions, k] and their token ids `indices` int32, the log-sum-exp of all its logits `lse`
  float32 and the logit of the true next token `label_logit` float32 (the teacher's own eval loss), with `offsets`
  int64 [examples + 1] into them: 6k + 8 bytes per token, 392 bytes at k = 64 (the full vocabulary in float16
  would be 98 KB per token for SmolLM2's 49,152 tokens). The KL then compares teacher and student on k + 1 outcomes:
  the teacher's top k tokens and one bucket for all the others (the same coarse view for both models, so a student
  equal to its teacher has a loss of exactly 0; the KL is a lower bound of the full-vocabulary KL, exact when the
  teacher's mass outside its top k is 0).

Why not TRL: TRL 1.16's DistillationTrainer is on-policy (it generates completions from prompts and runs the
teacher live at every step) and its GKDTrainer (experimental, an SFTTrainer) also runs the teacher model at every
step on full logits; neither reads cached teacher outputs, and neither does classification. So a small Trainer
subclass with its own compute_loss; its `jsd` is GKD's generalized Jensen-Shannon divergence with the same beta
convention (beta 0: forward KL, beta 1: reverse KL).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path

import tunesmith.tensor_cache as tensor_cache
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")
KEY = "objective.teacher"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json")  # weights and the configs that shape them


# ---------------------------------------------------------------------------------------------
# Where the teacher comes from


def is_run(teacher: str) -> bool:
    from tunesmith.runs.start import is_run_folder

    return is_run_folder(teacher)


def present(teacher: str) -> bool:
    """A folder here (a run or a model) or an offline catalog model; else a hub id, or a run not trained yet."""
    from tunesmith.assets import ASSETS

    return Path(teacher).expanduser().exists() or teacher in ASSETS


def teacher_model_cfg(cfg):
    """The model section for a teacher given by name: the student's dtype and trust flag, no revision, no cut."""
    return cfg.model.model_copy(update={"name": cfg.objective.teacher, "revision": None, "keep_layers": None,
                                        "num_layers": None})


def location_problems(teacher: str, kind: str) -> list[str]:
    """A folder that is neither a finished run nor a model folder, or a run of the wrong kind (no torch needed)."""
    from tunesmith.registries import objectives
    from tunesmith.runs.folder import check_run_folder, objective_of_run

    path = Path(teacher).expanduser()
    if is_run(teacher):
        try:
            check_run_folder(path)
        except TunesmithError as err:
            return [f"{KEY}: {err}"]
        objective = objectives().get(objective_of_run(path))
        if objective is None or objective.model_kind != kind:
            wanted = "a classifier (objective classify or distill)" if kind == "classify" else \
                "a causal LM (objective causal_lm, sft or distill_lm)"
            return [f"{KEY}: {teacher!r} is a {objective.name if objective else '?'!r} run; the teacher must be {wanted}"]
        return []
    if path.is_dir() and not (path / "config.json").is_file():
        return [f"{KEY}: {teacher!r} is neither a tunesmith run folder (no manifest.json) nor a model folder (no "
                "config.json); give the folder `tunesmith train` wrote for the teacher, or a model"]
    return []


def load_tokenizer(cfg):
    from tunesmith.modeling import load_tokenizer as load
    from tunesmith.runs import Run
    from tunesmith.trust import trusted

    teacher = cfg.objective.teacher
    if is_run(teacher):
        return Run(teacher, trust_remote_code=trusted()).tokenizer
    return load(teacher_model_cfg(cfg), trust_remote_code=trusted())


def tokenizer_problems(cfg, student_tokenizer) -> list[str]:
    """The teacher must read the student's token ids as the same tokens: the same vocabulary, id for id."""
    teacher = load_tokenizer(cfg)
    mine, theirs = student_tokenizer.get_vocab(), teacher.get_vocab()
    if mine == theirs:
        return []
    differ = sorted((set(mine.items()) ^ set(theirs.items())), key=lambda kv: kv[1])[:3]
    return [f"{KEY}: the teacher {cfg.objective.teacher!r} and the student {cfg.model.name!r} use different tokenizers "
            f"({len(theirs):,} and {len(mine):,} tokens; they differ at e.g. {[k for k, _ in differ]}); distillation "
            "feeds the student's token ids to the teacher and compares their outputs token by token. Use a teacher "
            "and a student of one model family (the same tokenizer), e.g. a student cut from the teacher's own base "
            "with model.keep_layers"]


def labels(cfg) -> list[str]:
    """The teacher's class names in output order: the student's head gets the same."""
    from tunesmith.runs import Run

    teacher = cfg.objective.teacher
    if is_run(teacher):
        return list(Run(teacher).task.get("labels") or [])
    from transformers import AutoConfig

    from tunesmith.modeling import model_path

    config = AutoConfig.from_pretrained(model_path(teacher_model_cfg(cfg)))
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def load(cfg, kind: str):
    """The teacher model in eval mode on the training device."""
    from tunesmith.modeling import load_model, to_device
    from tunesmith.runs import Run
    from tunesmith.trust import trusted

    teacher = cfg.objective.teacher
    if is_run(teacher):
        model = Run(teacher, trust_remote_code=trusted()).load_tuned()
    else:
        model = load_model(teacher_model_cfg(cfg), kind, trust_remote_code=trusted())
    return to_device(model).eval()


# ---------------------------------------------------------------------------------------------
# Identity and the disk cache


@functools.lru_cache(maxsize=16)
def _files_digest(folder: str, stamp: tuple) -> str:
    """SHA-256 of the weight files of `folder` (`stamp`: their names, sizes and times, so a change re-hashes)."""
    h = hashlib.sha256()
    for name, _, _ in stamp:
        h.update(name.encode())
        with open(Path(folder) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def files_digest(folder: Path) -> str:
    files = sorted(p for p in folder.glob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    return _files_digest(str(folder), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))


def identity(cfg) -> dict:
    """What the teacher's outputs depend on: the run (manifest + weights) or the model (path, revision, weights)."""
    from tunesmith.modeling import model_path
    from tunesmith.runs.folder import check_run_folder

    teacher = cfg.objective.teacher
    if is_run(teacher):
        path = Path(teacher).expanduser()
        manifest = check_run_folder(path)
        return {"run_manifest": manifest, "weights": files_digest(path / manifest["saved"]), "dtype": cfg.model.dtype}
    resolved = model_path(teacher_model_cfg(cfg))
    weights = files_digest(Path(resolved)) if Path(resolved).is_dir() else None
    return {"model": resolved, "weights": weights, "dtype": cfg.model.dtype}


def cache_key(cfg, features, kind: str) -> str:
    import numpy as np

    tokens = hashlib.sha256()
    columns = ["input_ids", "token_type_ids"] + (["labels"] if kind == "lm" else [])
    for column in columns:
        if column in features.column_names:
            for ids in features[column]:  # length-prefixed, so rows cannot run into each other
                ids = np.asarray(ids, dtype=np.int64)
                tokens.update(np.int64(len(ids)).tobytes() + (ids if column != "labels" else ids != -100).tobytes())
    parts = {"format": 1, "teacher": identity(cfg), "kind": kind, "max_length": cfg.data.max_length,
             "top_k": cfg.objective.top_k if kind == "lm" else None, "tokens": tokens.hexdigest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def outputs(cfg, features, kind: str, tokenizer) -> dict:
    """The teacher's outputs for `features` ('classify' or 'lm'), from the cache or computed now (then cached);
    `tokenizer` (the student's, which is the teacher's too) pads the batches."""

    from tunesmith.assets import cache_dir

    path = cache_dir() / "distill" / f"{cache_key(cfg, features, kind)}.pt"
    if cfg.objective.cache and path.exists():
        cached = tensor_cache.read(path)
        if isinstance(cached, dict) and _rows(cached) == len(features):
            log.info("distill: re-using the teacher's cached outputs %s (%d examples)", path, len(features))
            return cached
        log.warning("distill: ignoring an unreadable cache file %s (%s); running the teacher again", path, cached)
    log.info("distill: running the teacher %s on %d examples", cfg.objective.teacher, len(features))
    model = load(cfg, "classify" if kind == "classify" else "causal_lm")
    computed = (classify_logits if kind == "classify" else lm_outputs)(model, features, cfg, tokenizer)
    del model
    if cfg.objective.cache:
        tensor_cache.write(path, computed)
        log.info("distill: cached the teacher's outputs at %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return computed


def _rows(cached: dict) -> int:
    return len(cached["logits"]) if "logits" in cached else len(cached["offsets"]) - 1


def _batches(model, features, batch_size: int, collate):
    """(batch on the model's device without labels, labels) for consecutive rows of `features`."""
    from tunesmith.data.tokenize import model_inputs
    from tunesmith.eval.metrics import batches

    device = next(model.parameters()).device
    for batch in batches(model_inputs(features), batch_size, collate):
        labels = batch.pop("labels", None)
        yield {k: v.to(device) for k, v in batch.items()}, labels


def classify_logits(model, features, cfg, tokenizer) -> dict:
    import torch
    from transformers import DataCollatorWithPadding

    out = []
    for batch, _ in _batches(model, features, cfg.train.per_device_eval_batch_size, DataCollatorWithPadding(tokenizer)):
        with torch.no_grad():
            out.append(model(**batch).logits.float().cpu())
    return {"logits": torch.cat(out)}


def lm_outputs(model, features, cfg, tokenizer) -> dict:
    """Top-k logits, log-sum-exp and the true next token's logit at every position that carries a label."""
    import torch

    from tunesmith.objectives.lm import collator

    parts: dict[str, list] = {"values": [], "indices": [], "lse": [], "label_logit": []}
    counts = []
    batch_size = min(cfg.train.per_device_eval_batch_size, 8)  # [batch, length, vocabulary] floats: keep it small
    for batch, labels in _batches(model, features, batch_size, collator(tokenizer)):
        with torch.no_grad():
            logits = model(**batch).logits.float()
        logits = logits[:, -labels.size(1):][:, :-1].cpu()
        targets = labels[:, 1:]
        mask = targets != -100
        counts += mask.sum(1).tolist()
        chosen = logits[mask]
        top = chosen.topk(min(cfg.objective.top_k, chosen.size(-1)), dim=-1)
        parts["values"].append(top.values.half())
        parts["indices"].append(top.indices.int())
        parts["lse"].append(chosen.logsumexp(-1))
        parts["label_logit"].append(chosen.gather(1, targets[mask][:, None])[:, 0])
    out = {k: torch.cat(v) for k, v in parts.items()}
    out["offsets"] = torch.tensor([0] + counts).cumsum(0)
    return out

