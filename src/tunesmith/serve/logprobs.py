"""Log-probabilities in OpenAI's response shapes, from decode.py's entries (token id, logprob or None, top [(id, lp)]).

- chat: `choices[i].logprobs = {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
  "bytes"}]}], "refusal": None}`, the k most likely tokens at each position (k = top_logprobs);
- completions: `choices[i].logprobs = {"tokens", "token_logprobs", "top_logprobs", "text_offset"}`, where
  top_logprobs[j] maps the k most likely tokens (k = logprobs) and the chosen one to their logprobs, as OpenAI's
  legacy API and vLLM answer; with echo the prompt's tokens come first, the very first with null logprob and top.

A token is shown as its decoded text (special tokens too); `bytes` are that text's UTF-8 bytes. Values are the
model's raw next-token log-probabilities, before temperature, top-k and top-p.
"""

from __future__ import annotations


def _token(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def chat_logprobs(tokenizer, entries: list[tuple]) -> dict:
    def one(token_id, logprob) -> dict:
        text = _token(tokenizer, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {"content": [{**one(t, lp), "top_logprobs": [one(i, v) for i, v in top]} for t, lp, top in entries],
            "refusal": None}


def completion_logprobs(tokenizer, entries: list[tuple], offset: int = 0) -> dict:
    """`offset`: where the first token's text starts in the choice's text (after an echoed prompt: 0)."""
    tokens, offsets, tops = [], [], []
    for token_id, logprob, top in entries:
        text = _token(tokenizer, token_id)
        offsets.append(offset)
        offset += len(text)
        tokens.append(text)
        if logprob is None:
            tops.append(None)
            continue
        shown = {_token(tokenizer, i): v for i, v in top}
        shown.setdefault(text, logprob)
        tops.append(shown)
    return {"tokens": tokens, "token_logprobs": [lp for _, lp, _ in entries], "top_logprobs": tops,
            "text_offset": offsets}


def joined(first: dict | None, then: dict | None) -> dict | None:
    """Two completion logprobs objects one after the other (an echoed prompt's, then the completion's)."""
    if first is None or then is None:
        return first or then
    return {k: first[k] + then[k] for k in first}
