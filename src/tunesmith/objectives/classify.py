"""classify: labels from the data; a sequence-classification model with id2label/label2id saved in its config."""

from __future__ import annotations

from typing import Literal

from tunesmith.data.roles import Role, check_columns, no_packing, plain_text_only
from tunesmith.data.templates import fields
from tunesmith.data.tokenize import encode_classify, model_inputs, tokenize_classify
from tunesmith.errors import TunesmithError
from tunesmith.eval.metrics import batches, classification_metrics, trainer_classification_metrics
from tunesmith.objectives.spec import Objective
from tunesmith.schema import Section


class ClassifyConfig(Section):
    """Supervised classification from a label column."""

    name: Literal["classify"]


ROLES = (
    Role("text", templated=True, help="the text to classify (or data.template over several columns)"),
    Role("text_pair", optional=True, help="a second text read with the first, e.g. for entailment or paraphrase"),
    Role("label", kind="label", help="the class: a name, or a class id"),
)


def check_config(cfg) -> list[str]:
    return check_columns(cfg, ROLES) + plain_text_only(cfg) + no_packing(cfg)


def _needed_columns(data_cfg) -> list[tuple[str, str]]:
    cols = [(f"data.template field {{{f}}}", f) for f in fields(data_cfg.template)] if data_cfg.template else [
        ("data.columns.text", data_cfg.column("text"))]
    if data_cfg.column("text_pair"):
        cols.append(("data.columns.text_pair", data_cfg.column("text_pair")))
    return cols + [("data.columns.label", data_cfg.column("label"))]


def check(cfg, dd, tokenizer) -> list[str]:
    problems = []
    d = cfg.data
    for split, ds in dd.items():
        for key, col in _needed_columns(d):
            if col not in ds.column_names:
                problems.append(f"{key}: column {col!r} is not in the {split} data of {d.source!r}; columns are {ds.column_names}")
    if problems:
        return problems
    label = d.column("label")
    train_labels = sorted(set(label_values(dd["train"], label)))
    if len(train_labels) < 2:
        problems.append(f"data.columns.label: {label!r} has a single class {train_labels} in the training data of "
                        f"{d.source!r}; classification needs at least two: give data with both classes, or the column "
                        "that holds the labels in data.columns.label")
    if d.labels:
        unknown = sorted({v for ds in dd.values() for v in label_values(ds, label)} - set(d.labels))
        if unknown:
            problems.append(f"data.labels: the data has labels {unknown} that data.labels {d.labels} does not list; add them")
    else:
        unseen = sorted(set(label_values(dd["eval"], label)) - set(train_labels))
        if unseen:
            problems.append(f"data.columns.label: the eval data of {d.source!r} has labels {unseen} that never occur in "
                            "training; fix the data or list every label in data.labels")
    return problems


def setup(cfg, dd) -> dict:
    d = cfg.data
    feature = dd["train"].features.get(d.column("label"))
    if d.labels:
        names = list(d.labels)
    elif hasattr(feature, "names"):  # a datasets ClassLabel column: ints with names
        names = list(feature.names)
    else:
        names = sorted(set(label_values(dd["train"], d.column("label"))), key=_label_order)
    return {"labels": names}


def _label_order(name: str) -> tuple:
    """Numbers in numeric order ('2' before '10'), then words in alphabetical order."""
    try:
        return (0, int(name), name)
    except ValueError:
        return (1, 0, name)


def _label2id(task) -> dict:
    return {name: i for i, name in enumerate(task["labels"])}


def label_values(ds, column) -> list[str]:
    """A label column as names (a datasets ClassLabel column holds ints with names)."""
    names = getattr(ds.features.get(column), "names", None)
    return [names[v] if names else str(v) for v in ds[column][:]]  # [:] reads the column at once, not row by row


def tokenize(ds, tokenizer, cfg, task):
    label_map = _label2id(task)
    d = cfg.data
    label = d.column("label")
    unknown = sorted(set(label_values(ds, label)) - set(label_map), key=_label_order)
    if unknown:  # e.g. `tunesmith eval RUN --data OTHER` with other labels than the run was trained on
        raise TunesmithError(f"{d.source}: column {label!r} has labels {unknown} that the model was not trained on; "
                             f"it knows {task['labels']}. Evaluate on data labelled with those (or rename the labels in the data)")
    names = getattr(ds.features.get(label), "names", None)
    return tokenize_classify(ds, tokenizer, cfg.data, lambda v: label_map[names[v] if names else str(v)])


def collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def probabilities(model, tokenizer, features, batch_size: int = 32):
    """Softmax over the labels for every example: a float tensor [examples, labels] on the CPU."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    out = []
    for batch in batches(model_inputs(features), batch_size, collator(tokenizer)):
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            out.append(torch.softmax(model(**batch).logits.float(), dim=-1).cpu())
    return torch.cat(out)


def evaluate(model, tokenizer, raw, features, cfg, task) -> dict:
    probs = probabilities(model, tokenizer, features, cfg.train.per_device_eval_batch_size)
    return classification_metrics(features["labels"], probs.argmax(-1).tolist(), task["labels"])


def predict(model, tokenizer, texts: list[str], cfg, task) -> list[dict]:
    """Label and probability of each text (templates apply as in training)."""
    label = cfg.data.column("label")
    columns = [c for _, c in _needed_columns(cfg.data) if c != label]
    rows = [{**{c: text for c in columns}, label: task["labels"][0]} for text in texts]
    # tokenized in memory, not through a datasets map (~100 ms of bookkeeping per call: a server's whole latency)
    enc = encode_classify(rows, tokenizer, cfg.data, _label2id(task).__getitem__)
    features = [dict(zip(enc, values)) for values in zip(*enc.values())]
    probs = probabilities(model, tokenizer, features, cfg.train.per_device_eval_batch_size)
    return [{"label": task["labels"][int(p.argmax())], "score": float(p.max()),
             "probs": {n: float(v) for n, v in zip(task["labels"], p)}} for p in probs]


def probe(model, tokenizer, texts, cfg, task, **options) -> list[str]:  # options are generation's: unused here
    return [f"{p['label']} ({p['score']:.2f})" for p in predict(model, tokenizer, texts, cfg, task)]


def build_trainer(*args, **kwargs):
    """Length-grouped batches, frozen weights cast to bf16 once (classify_speed, imported here: reading a config
    imports no torch)."""
    from tunesmith.objectives import classify_speed

    return classify_speed.build_trainer(*args, **kwargs)


def model_kwargs(task) -> dict:
    labels = task["labels"]
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)), "label2id": _label2id(task)}


OBJECTIVE = Objective(
    name="classify", config_cls=ClassifyConfig, model_kind="classify",
    roles=ROLES, check_config=check_config,
    metric_names=frozenset({"accuracy", "precision", "recall", "f1", "loss"}), best_metric="accuracy",
    check=check, setup=setup, tokenize=tokenize, collator=collator, evaluate=evaluate, probe=probe,
    model_kwargs=model_kwargs, compute_metrics=lambda task: trainer_classification_metrics(task["labels"]),
    summary="labels from the data (accuracy, precision, recall, F1)",
    metric_directions={"accuracy": "max", "precision": "max", "recall": "max", "f1": "max", "loss": "min"},
    predict=predict, build_trainer=build_trainer,
)
