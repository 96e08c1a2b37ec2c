"""What causal_lm and sft share: the collator, loss/perplexity evaluation, generation of samples, and
generation metrics (eval.generation_metrics: ROUGE, BLEU, chrF, exact match on held-out examples)."""

from __future__ import annotations

import logging

from tunesmith.data.tokenize import model_inputs
from tunesmith.eval.metrics import lm_loss
from tunesmith.eval.textgen import generation_metrics
from tunesmith.generation import generate
from tunesmith.progress import bar

log = logging.getLogger("tunesmith")

LONG = 200  # held-out generations: more than this always shows a progress bar
METRICS = frozenset({"eval_loss", "perplexity", "loss"})
DIRECTIONS = {"eval_loss": "min", "perplexity": "min", "loss": "min", "rouge1": "max", "rouge2": "max", "rougeL": "max",
              "bleu": "max", "chrf": "max", "exact_match": "max"}


def collator(tokenizer):
    """Dynamic padding per batch; padded label positions are -100 (never trained, pad may equal EOS)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


def generation_rows(raw, cfg):
    """The held-out rows generated for eval.generation_metrics: the first eval.max_generate of the (seeded) eval set."""
    if not cfg.eval.generation_metrics:
        return raw.select([])
    n = len(raw) if cfg.eval.max_generate is None else min(cfg.eval.max_generate, len(raw))
    return raw.select(range(n))


def fit_prompts(prompts: list[list[int]], cfg) -> list[list[int]]:
    """Prompts for generation metrics, cut from the left (the end is where the answer starts) so that prompt and
    generation fit in data.max_length, the length the model was trained on; long documents stay affordable."""
    keep = max(cfg.data.max_length - cfg.eval.max_new_tokens, cfg.data.max_length // 2)
    cut = sum(len(p) > keep for p in prompts)
    if cut:
        log.info("Generation metrics: %d of %d prompts are longer than %d tokens (data.max_length - eval.max_new_tokens); "
                 "their beginning is cut", cut, len(prompts), keep)
    return [p[-keep:] if len(p) > keep else p for p in prompts]


def generation_scores(model, tokenizer, prompts: list[list[int]], references: list, cfg) -> dict:
    """Greedy generations for prompts, scored against references with eval.generation_metrics."""
    if not prompts or not cfg.eval.generation_metrics:
        return {}
    size = cfg.train.per_device_eval_batch_size
    outputs = []
    with bar(total=len(prompts), desc="generation metrics", unit="example", long=len(prompts) >= LONG) as progress:
        for start in range(0, len(prompts), size):  # batch by batch, as generate batches them: the same outputs
            outputs += generate(model, tokenizer, prompts[start : start + size], cfg.eval.max_new_tokens, size)
            progress.update(len(prompts[start : start + size]))
    return {**generation_metrics(outputs, references, cfg.eval.generation_metrics), "generated_examples": len(outputs)}


def evaluate(model, tokenizer, features, cfg, sample_prompts: list[list[int]], references: list[str],
             generation_prompts: list[list[int]] = (), generation_references: list = ()) -> dict:
    """Loss and perplexity on features; samples for sample_prompts; generation metrics for generation_prompts."""
    metrics = lm_loss(model, model_inputs(features), collator(tokenizer), cfg.train.per_device_eval_batch_size)
    metrics.update(generation_scores(model, tokenizer, list(generation_prompts), list(generation_references), cfg))
    if sample_prompts:
        outputs = generate(model, tokenizer, sample_prompts, cfg.eval.max_new_tokens)
        metrics["samples"] = [
            {"prompt": tokenizer.decode(p, skip_special_tokens=True), "reference": r, "generation": g}
            for p, r, g in zip(sample_prompts, references, outputs)
        ]
    return metrics
