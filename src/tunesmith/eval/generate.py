"""Batched greedy generation from token-id prompts (left padding), used by probes, samples and `generate`."""

from __future__ import annotations


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 48, batch_size: int = 8) -> list[str]:
    """Greedy completions (new text only, special tokens dropped) for each prompt's token ids."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
            )
        outputs += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    return outputs
