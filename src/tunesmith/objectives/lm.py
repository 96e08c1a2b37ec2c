"""What causal_lm and sft share: the collator, loss/perplexity evaluation and generation of samples."""

from __future__ import annotations

from tunesmith.data.tokenize import model_inputs
from tunesmith.eval.generate import generate
from tunesmith.eval.metrics import lm_loss

METRICS = frozenset({"eval_loss", "perplexity", "loss"})


def collator(tokenizer):
    """Dynamic padding per batch; padded label positions are -100 (never trained, pad may equal EOS)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def evaluate(model, tokenizer, features, cfg, sample_prompts: list[list[int]], references: list[str]) -> dict:
    metrics = lm_loss(model, model_inputs(features), collator(tokenizer), cfg.train.per_device_eval_batch_size)
    if sample_prompts:
        outputs = generate(model, tokenizer, sample_prompts, cfg.eval.max_new_tokens)
        metrics["samples"] = [
            {"prompt": tokenizer.decode(p, skip_special_tokens=True), "reference": r, "generation": g}
            for p, r, g in zip(sample_prompts, references, outputs)
        ]
    return metrics
