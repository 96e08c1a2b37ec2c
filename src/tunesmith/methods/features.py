"""features: feature-based tuning. The backbone stays frozen and only embeds; its pooled embeddings of the
training set are computed once (cached on disk) and a small scikit-learn classifier is trained on them.
The classifier is then copied into a torch head, so the tuned model is an ordinary module whose
`model(**batch).logits` give exactly the classifier's `predict_proba` after a softmax.

Embedding cache: `cache_dir()/features/<key>.pt`, one float32 tensor [examples, hidden]. The key hashes the
resolved model, its dtype, pooling, normalize, data.max_length and the token ids of every training example
(never the labels), so another label set on the same texts re-uses the embeddings.

Saved format (the run's `features/` folder, next to the tokenizer files):
- `features_config.json`: {"format": "tunesmith-features", "version": 1, "base_model": path or hub id,
  "pooling": "mean" | "cls", "normalize": bool, "classifier": "logistic" | "mlp",
  "layers": {tensor name: shape}, "labels": [label of output 0, label of output 1, ...]}
- `head.safetensors`: the head's tensors only, named as in a `torch.nn.Sequential`:
  logistic: `0.weight` [labels, hidden], `0.bias` [labels];
  mlp: `0.weight` [mlp hidden, hidden], `0.bias`, then a ReLU, then `2.weight` [labels, mlp hidden], `2.bias`.
Using it without tunesmith: `h = transformers.AutoModel.from_pretrained(base_model)(**tokenizer(texts,
padding=True, return_tensors="pt")).last_hidden_state`; pool it (mean: sum of h over the positions where
attention_mask is 1, divided by their count; cls: h[:, 0]); if normalize, divide by its L2 norm; then
logits = x @ W0.T + b0 (mlp: relu(x @ W0.T + b0) @ W2.T + b2); softmax(logits) are the label probabilities.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

import tunesmith.tensor_cache as tensor_cache
from tunesmith.assets import cache_dir
from tunesmith.errors import TunesmithError
from tunesmith.methods.peft_common import is_classifier
from tunesmith.methods.spec import Method
from tunesmith.modeling import model_path
from tunesmith.schema import Section

if TYPE_CHECKING:
    import torch

    from tunesmith.methods.features_model import FeatureClassifier

log = logging.getLogger("tunesmith")

FORMAT, CONFIG_FILE, HEAD_FILE = "tunesmith-features", "features_config.json", "head.safetensors"


class FeaturesConfig(Section):
    """Frozen embeddings + a scikit-learn classifier (a linear probe, or a one-hidden-layer MLP)."""

    name: Literal["features"]
    pooling: Literal["mean", "cls"] = Field("mean", description="Pooling of the last hidden states: mean over real tokens, or the first ([CLS]) token.")
    classifier: Literal["logistic", "mlp"] = Field("logistic", description="scikit-learn LogisticRegression, or MLPClassifier with one ReLU hidden layer.")
    C: float = Field(1.0, gt=0, description="Inverse L2 regularisation strength of the logistic classifier (smaller: stronger).")
    hidden_size: int = Field(256, gt=0, description="Hidden units of the mlp classifier.")
    max_iter: int = Field(1000, gt=0, description="Most solver iterations (logistic: lbfgs; mlp: epochs of adam).")
    normalize: bool = Field(False, description="L2-normalise the pooled embeddings before the classifier.")
    cache: bool = Field(True, description="Cache the training embeddings under the tunesmith cache folder and re-use them.")


def apply(model, cfg: FeaturesConfig) -> FeatureClassifier:
    if not is_classifier(model) or model.base_model is model:
        raise TunesmithError(
            f"method.name: 'features' trains a classifier on the embeddings of a sequence-classification model; "
            f"got {type(model).__name__}; use objective 'classify', or method 'lora' or 'full' for this model")
    from tunesmith.methods.features_model import FeatureClassifier, make_head

    head = make_head(cfg.classifier, model.config.hidden_size, model.config.num_labels, cfg.hidden_size)
    log.info("features: backbone frozen; a %s classifier on %s-pooled embeddings", cfg.classifier, cfg.pooling)
    return FeatureClassifier(model, cfg.pooling, cfg.normalize, cfg.classifier, head.to(model.device))


def cache_key(cfg, features, dtype) -> str:
    """What the embeddings depend on: model, dtype, pooling, normalize, max_length and the token ids (not labels)."""
    tokens = hashlib.sha256()
    for column in ("input_ids", "token_type_ids"):
        if column in features.column_names:
            for ids in features[column]:  # length-prefixed, so rows cannot run into each other
                tokens.update(np.int64(len(ids)).tobytes() + np.asarray(ids, dtype=np.int64).tobytes())
    parts = {"model": model_path(cfg.model), "revision": cfg.model.revision, "dtype": str(dtype),
             "pooling": cfg.method.pooling, "normalize": cfg.method.normalize, "max_length": cfg.data.max_length,
             "tokens": tokens.hexdigest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def embeddings(model: FeatureClassifier, tokenizer, features, cfg) -> tuple[torch.Tensor, int, bool]:
    """(embeddings, tokens embedded, cache hit): from the cache when it has them, else computed (and cached)."""
    import torch

    from tunesmith.methods.features_model import embed_all

    n = len(features)
    path = cache_dir() / "features" / f"{cache_key(cfg, features, next(model.backbone.parameters()).dtype)}.pt"
    if cfg.method.cache and path.exists():
        x = tensor_cache.read(path)
        if isinstance(x, torch.Tensor) and x.shape[0] == n:
            log.info("features: re-using cached embeddings %s (%d examples)", path, n)
            return x, 0, True
        log.warning("features: ignoring unreadable cached embeddings %s (%s); embedding again", path, x)
    log.info("features: embedding %d examples with %s", n, cfg.model.name)
    x = embed_all(model, tokenizer, features, cfg.train.per_device_eval_batch_size)
    if cfg.method.cache:
        tensor_cache.write(path, x)
        log.info("features: cached embeddings at %s", path)
    return x, sum(len(ids) for ids in features["input_ids"]), False


def train_classifier(x: np.ndarray, y: np.ndarray, cfg: FeaturesConfig, seed: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if cfg.classifier == "logistic":
        clf = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=seed)
    else:
        clf = MLPClassifier(hidden_layer_sizes=(cfg.hidden_size,), max_iter=cfg.max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("features: the %s classifier did not converge in method.max_iter=%d iterations; raise it "
                    "(or lower method.C for logistic)", cfg.classifier, cfg.max_iter)
    return clf


def fit(model: FeatureClassifier, tokenizer, prep, cfg, run_dir) -> tuple[FeatureClassifier, dict]:
    from sklearn.metrics import log_loss

    from tunesmith.methods.features_model import copy_weights

    features = prep.features["train"]
    start = time.time()
    x, tokens, hit = embeddings(model, tokenizer, features, cfg)
    embed_seconds = time.time() - start
    y = np.asarray(list(features["labels"]))
    clf = train_classifier(x.numpy(), y, cfg.method, cfg.train.seed)
    copy_weights(model.head, clf, model.config.num_labels)
    loss = float(log_loss(y, clf.predict_proba(x.numpy()), labels=clf.classes_))
    n_iter = int(np.max(clf.n_iter_))
    record = {"step": n_iter, "loss": loss, "train_accuracy": float(clf.score(x.numpy(), y)), "n_iter": n_iter,
              "embed_seconds": round(embed_seconds, 3), "fit_seconds": round(time.time() - start - embed_seconds, 3),
              "cache_hit": hit, "examples": len(y)}
    with (Path(run_dir) / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    log.info("features: %s classifier, train accuracy %.3f, log-loss %.4f", cfg.method.classifier, record["train_accuracy"], loss)
    return model, {"train_steps": n_iter, "train_loss": loss, "tokens_seen": tokens}


def save(model: FeatureClassifier, folder, scratch=None) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    save_file(state, str(folder / HEAD_FILE))
    id2label = getattr(model.config, "id2label", None) or {}
    meta = {"format": FORMAT, "version": 1, "base_model": getattr(model.config, "_name_or_path", None),
            "pooling": model.pooling, "normalize": model.normalize, "classifier": model.classifier,
            "layers": {k: list(v.shape) for k, v in state.items()}, "labels": [str(id2label[i]) for i in sorted(id2label)]}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def load(base_model, folder) -> FeatureClassifier:
    from safetensors.torch import load_file

    from tunesmith.methods.features_model import FeatureClassifier, make_head

    folder = Path(folder)
    missing = [f for f in (CONFIG_FILE, HEAD_FILE) if not (folder / f).exists()]
    if missing:
        raise TunesmithError(f"{folder}: the features method's files {missing} are missing; "
                             f"give the `features` folder of a run trained with method 'features', or train it again")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise TunesmithError(f"{folder / CONFIG_FILE}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    state = load_file(str(folder / HEAD_FILE))
    kind, last = meta["classifier"], "0.weight" if meta["classifier"] == "logistic" else "2.weight"
    head = make_head(kind, state["0.weight"].shape[1], state[last].shape[0], state["0.weight"].shape[0])
    head.load_state_dict(state)
    if state[last].shape[0] != base_model.config.num_labels or state["0.weight"].shape[1] != base_model.config.hidden_size:
        raise TunesmithError(f"{folder / HEAD_FILE}: head shapes {meta['layers']} do not match the base model "
                             f"(hidden {base_model.config.hidden_size}, {base_model.config.num_labels} labels)")
    return FeatureClassifier(base_model, meta["pooling"], meta["normalize"], kind, head.to(base_model.device))


_NOTHING_TO_GENERATE = ("feature-based tuning trains a classifier on frozen embeddings; there is nothing to generate "
                        "with; use lora or full")
METHOD = Method(
    name="features", config_cls=FeaturesConfig, apply=apply, fit=fit, save=save, load=load, saves="features",
    summary="frozen embeddings + scikit-learn classifier",
    unsupported={"causal_lm": _NOTHING_TO_GENERATE, "sft": _NOTHING_TO_GENERATE},
)
