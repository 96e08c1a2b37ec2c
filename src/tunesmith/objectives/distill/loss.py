"""The distillation loss and the small transformers.Trainer that applies it to batches that carry the teacher's
cached outputs (see distill_teacher for the cache and why not TRL's trainers).

    loss = alpha * T^2 * D(teacher || student at temperature T) + (1 - alpha) * the task's cross-entropy

D is the forward KL(teacher || student) by default (the student covers every answer the teacher gives), the reverse
KL(student || teacher) (mode-seeking) or GKD's generalized Jensen-Shannon divergence with `beta` (Agarwal et al.
2024, the same convention as TRL's GKDTrainer: beta 0 is the forward KL, 1 the reverse). T^2 keeps the gradient of
the soft term at the same scale whatever the temperature (Hinton et al. 2015). A classification row without a
label trains on the teacher alone (its alpha is 1).
"""

from __future__ import annotations

import math

from tunesmith.errors import TunesmithError

IGNORE = -100


def divergence(teacher_logp, student_logp, kl: str = "forward", beta: float = 0.5):
    """Per-outcome terms of D(teacher, student) for log-probabilities [..., outcomes]; sum the last axis for D."""
    import torch
    import torch.nn.functional as F

    def kl_of(p, q):  # KL(p || q), elementwise: exp(p) * (p - q)
        return F.kl_div(q, p, reduction="none", log_target=True)

    if kl == "forward" or (kl == "jsd" and beta == 0):
        return kl_of(teacher_logp, student_logp)
    if kl == "reverse" or (kl == "jsd" and beta == 1):
        return kl_of(student_logp, teacher_logp)
    mixture = torch.logsumexp(torch.stack([student_logp + math.log(1 - beta), teacher_logp + math.log(beta)]), dim=0)
    return beta * kl_of(teacher_logp, mixture) + (1 - beta) * kl_of(student_logp, mixture)


def soft(logits, temperature: float):
    import torch

    return torch.log_softmax(logits / temperature, dim=-1)


def coarse(top_logits, lse):
    """Log-probabilities over k + 1 outcomes: the k given tokens, and one bucket for every other token."""
    import torch

    logp = top_logits - lse[..., None]
    rest = torch.log1p(-logp.exp().sum(-1).clamp(max=1 - 1e-6))
    return torch.cat([logp, rest[..., None]], dim=-1)


def classify_loss(student_logits, teacher_logits, labels, o):
    """Mean over rows of alpha * T^2 * D + (1 - alpha) * CE; rows without a label (-100) have alpha 1."""
    import torch
    import torch.nn.functional as F

    t = o.temperature
    s = student_logits.float()
    d = divergence(soft(teacher_logits.float(), t), soft(s, t), o.kl, o.beta).sum(-1) * t * t
    labelled = labels != IGNORE
    ce = F.cross_entropy(s, labels.clamp(min=0), reduction="none") * labelled
    alpha = torch.where(labelled, torch.full_like(d, o.alpha), torch.ones_like(d))
    return (alpha * d + (1 - alpha) * ce).mean()


def lm_loss(student_logits, labels, teacher: dict, o):
    """Per token, on the positions that carry a label (the response for sft): alpha * T^2 * D on the teacher's top-k
    tokens plus a rest bucket, + (1 - alpha) * CE on the next token; the mean over tokens."""
    import torch.nn.functional as F

    logits = student_logits[:, -labels.size(1):][:, :-1].float()  # a soft prompt prepends virtual tokens
    targets = labels[:, 1:]
    mask = targets != IGNORE
    s = logits[mask]
    if s.size(0) != teacher["teacher_values"].size(0):
        raise TunesmithError(f"distill: the batch has {s.size(0)} labelled tokens and the teacher's cached outputs "
                             f"{teacher['teacher_values'].size(0)}; delete the cache folder distill/ and train again")
    indices = teacher["teacher_indices"].long()
    student = coarse(s.gather(1, indices), s.logsumexp(-1))
    tutor = coarse(teacher["teacher_values"].float(), teacher["teacher_lse"].float())
    t = o.temperature
    d = divergence(soft(tutor, t), soft(student, t), o.kl, o.beta).sum(-1) * t * t
    ce = F.cross_entropy(s, targets[mask], reduction="none")
    return (o.alpha * d + (1 - o.alpha) * ce).mean()


class TeacherCollator:
    """The objective's usual collator, plus the teacher's cached outputs for the batch's rows (`teacher_row`)."""

    def __init__(self, base, cached: dict):
        self.base, self.cached = base, cached

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        if "teacher_row" not in examples[0]:  # evaluation rows: the task's loss only
            return self.base(examples)
        rows = [e.pop("teacher_row") for e in examples]
        batch = self.base(examples)
        c = self.cached
        if "logits" in c:
            batch["teacher_logits"] = c["logits"][rows]
            return batch
        spans = [torch.arange(int(c["offsets"][r]), int(c["offsets"][r + 1])) for r in rows]
        at = torch.cat(spans) if spans else torch.zeros(0, dtype=torch.long)
        batch.update(teacher_values=c["values"][at], teacher_indices=c["indices"][at], teacher_lse=c["lse"][at])
        return batch


def trainer(o, kind: str, **kwargs):
    """A transformers.Trainer whose loss is the distillation loss on training batches (they carry the teacher's
    outputs) and the task's own loss on evaluation batches (they do not)."""
    from transformers import Trainer

    class DistillTrainer(Trainer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.model_accepts_loss_kwargs = False  # our loss is a mean per batch: the Trainer scales it for accumulation

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            teacher = {k: inputs.pop(k) for k in TEACHER_KEYS if k in inputs}
            if not teacher:
                outputs = model(**inputs)
                return (outputs.loss, outputs) if return_outputs else outputs.loss
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            if kind == "classify":
                loss = classify_loss(outputs.logits, teacher["teacher_logits"], labels, o)
            else:
                loss = lm_loss(outputs.logits, labels, teacher, o)
            return (loss, outputs) if return_outputs else loss

    return DistillTrainer(**kwargs)


TEACHER_KEYS = ("teacher_logits", "teacher_values", "teacher_indices", "teacher_lse")
