"""The torch side of feature-based tuning (see features.py): the head, the model that pools a frozen backbone's
embeddings into it, and the copy of a fitted scikit-learn classifier into the head. Kept apart from features.py so
that reading a config never imports torch."""

from __future__ import annotations

import numpy as np
import torch

from tunesmith.data.tokenize import model_inputs
from tunesmith.eval.metrics import batches

UNSEEN = -1e4  # logit of a label that never occurs in the training data: probability 0


def make_head(kind: str, dim: int, num_labels: int, hidden: int) -> torch.nn.Sequential:
    layers = [torch.nn.Linear(dim, num_labels)] if kind == "logistic" else [
        torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, num_labels)]
    head = torch.nn.Sequential(*layers)
    for param in head.parameters():
        torch.nn.init.zeros_(param)  # untrained: every label equally likely
    return head


class FeatureClassifier(torch.nn.Module):
    """A frozen backbone, pooling, and a torch head holding the scikit-learn classifier's weights."""

    def __init__(self, model, pooling: str, normalize: bool, classifier: str, head: torch.nn.Sequential):
        super().__init__()
        self.backbone = model.base_model
        self.backbone.requires_grad_(False)
        self.config = model.config
        self.pooling, self.normalize, self.classifier = pooling, normalize, classifier
        self.head = head

    def embed(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = self.head(self.embed(input_ids, attention_mask, token_type_ids))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


@torch.no_grad()
def embed_all(model: FeatureClassifier, tokenizer, features, batch_size: int) -> torch.Tensor:
    """Pooled embeddings of every example, in order; batches of similar length waste less on padding."""
    from transformers import DataCollatorWithPadding

    model.eval()
    device = next(model.backbone.parameters()).device
    lengths = [len(ids) for ids in features["input_ids"]]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks = [model.embed(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).cpu()
              for batch in batches(model_inputs(features).select(order), batch_size, DataCollatorWithPadding(tokenizer))]
    stacked = torch.cat(chunks)
    out = torch.empty_like(stacked)
    out[torch.tensor(order)] = stacked
    return out


@torch.no_grad()
def copy_weights(head: torch.nn.Sequential, clf, num_labels: int) -> None:
    """Put the fitted classifier into the head so that softmax(head(x)) == clf.predict_proba(x)."""
    if hasattr(clf, "coef_"):
        layers = [(clf.coef_, clf.intercept_)]
    else:  # MLPClassifier stores [in, out] matrices
        layers = [(w.T, b) for w, b in zip(clf.coefs_, clf.intercepts_)]
    w, b = layers[-1]
    if w.shape[0] == 1:  # binary: sklearn keeps one logit z for classes_[1]; logits [0, z] give the same softmax
        w, b = np.vstack([np.zeros_like(w), w]), np.concatenate([[0.0], b])
    full_w, full_b = np.zeros((num_labels, w.shape[1])), np.full(num_labels, UNSEEN)
    full_w[clf.classes_], full_b[clf.classes_] = w, b
    layers[-1] = (full_w, full_b)
    for linear, (w, b) in zip([m for m in head if isinstance(m, torch.nn.Linear)], layers):
        linear.weight.copy_(torch.as_tensor(w))
        linear.bias.copy_(torch.as_tensor(b))
