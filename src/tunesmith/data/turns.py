"""A conversation -> token ids and a loss mask on every assistant turn (or the last), for any chat template.

The template is not parsed: the conversation is rendered prefix by prefix through it (the messages before assistant
turn i with the generation prompt, then the messages through turn i), and each rendering must be a prefix of the
next, as text and as tokens. Then the tokens between the two renderings of turn i are exactly what the model writes
for it: its content and its end-of-turn token (whitespace the template puts after that token is context, not loss).
A conversation whose renderings do not line up (a template that rewrites earlier turns, e.g. one that drops
reasoning from them) raises TurnMismatch saying where, instead of training a wrong mask.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

IGNORE = -100
ROLES = ("system", "user", "assistant", "tool", "other")  # role codes of spans: index in this tuple


class TurnMismatch(Exception):
    """A conversation that cannot be split into turns through this chat template; the message says what differs."""


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]
    turns: list[tuple[int, int]]  # the trained token range [start, end) of each trained assistant turn
    spans: list[list[int]] = field(default_factory=list)  # [first token, role code] where each message's tokens start
    messages: int = 0
    numbers: list[int] = field(default_factory=list)  # which assistant turn (1-based) each of `turns` is


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as err:  # noqa: BLE001 - the template's own checks (roles in order, roles it knows)
        raise TurnMismatch(f"the chat template refuses the first {len(messages)} messages ({type(err).__name__}: {err})") from None


def _difference(a: str, b: str) -> str:
    """Where b stops extending a: a short excerpt of each from the first differing character."""
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    lo = max(0, at - 20)
    return f"at character {at}: {a[lo:at + 30]!r} versus {b[lo:at + 30]!r}"


def _stops(tokenizer) -> set[int]:
    """Tokens that can end a turn: the special ones (EOS, and added tokens marked special such as <|eot_id|>)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids.update(i for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items() if getattr(t, "special", False))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _trim(tokenizer, ids: list[int], start: int, end: int, stops: set[int]) -> int:
    """The end of a turn's trained tokens: after its last special token (the end of turn) when only whitespace follows."""
    last = next((p for p in range(end - 1, start - 1, -1) if ids[p] in stops), None)
    if last is not None and last + 1 < end and not tokenizer.decode(ids[last + 1 : end]).strip():
        return last + 1
    return end


def encode_conversation(tokenizer, messages: list[dict], train_on: str = "all_assistant") -> Encoded:
    """Token ids of a conversation (up to its last assistant message) and labels that are -100 everywhere but on
    the trained assistant turns. Raises TurnMismatch when the template cannot be split there."""
    assistant = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not assistant:
        raise TurnMismatch(f"no assistant message among its {len(messages)} messages (roles "
                           f"{[m.get('role') for m in messages]}): nothing to train")
    messages = messages[: assistant[-1] + 1]  # what follows the last answer is never trained
    trained = assistant if train_on == "all_assistant" else assistant[-1:]
    texts, names = [], []
    for i in trained:
        turn = assistant.index(i) + 1
        texts += [render(tokenizer, messages[:i], True), render(tokenizer, messages[: i + 1], False)]
        names += [f"the messages before assistant turn {turn} with the generation prompt", f"the messages through assistant turn {turn}"]
    for k in range(1, len(texts)):
        if not texts[k].startswith(texts[k - 1]):
            raise TurnMismatch(f"the chat template renders {names[k - 1]} differently from the start of {names[k]}, "
                               f"{_difference(texts[k - 1], texts[k])}")
    ids, bounds, offsets = tokenize_renderings(tokenizer, texts, names)
    stops = _stops(tokenizer)
    labels, turns = [IGNORE] * len(ids), []
    for n in range(len(trained)):
        start = bounds[2 * n]
        end = _trim(tokenizer, ids, start, bounds[2 * n + 1], stops)
        labels[start:end] = ids[start:end]
        turns.append((start, end))
    eos = tokenizer.eos_token_id
    if eos is not None and turns and (turns[-1][0] == turns[-1][1] or ids[turns[-1][1] - 1] not in stops):
        ids, labels = ids[: turns[-1][1]] + [eos], labels[: turns[-1][1]] + [eos]  # a template without an end of turn
        turns[-1] = (turns[-1][0], len(ids))
    spans = role_spans(tokenizer, messages, texts[-1], offsets, turns, len(ids))
    return Encoded(ids, labels, turns, spans, len(messages), [assistant.index(i) + 1 for i in trained])


def tokenize_renderings(tokenizer, texts: list[str], names: list[str]) -> tuple[list[int], list[int], list[int] | None]:
    """(ids of the last rendering, the token count at the end of each rendering, each token's first character or None
    for a slow tokenizer). Each rendering must end where a token of the last one ends (a fast tokenizer's offsets
    say), or else, tokenized alone, be a prefix of the next; where a token spans a boundary
    (the pre-tokenizer merges a generation prompt's '\\n\\n' with the answer's first word) the renderings' differences
    are tokenized one by one instead, as generation meets them (the answer starts a new token after its prompt), and
    must decode to the same text."""
    fast = getattr(tokenizer, "is_fast", False)
    if fast:  # the usual case, in one pass: the last rendering's tokens, no token across a rendering's end
        enc = tokenizer(texts[-1], add_special_tokens=False, return_offsets_mapping=True)
        starts, ends = [o[0] for o in enc["offset_mapping"]], [o[1] for o in enc["offset_mapping"]]
        bounds = [bisect_left(starts, len(text)) for text in texts]
        ids = list(enc["input_ids"])
        if (all(k == 0 or ends[k - 1] <= len(text) for k, text in zip(bounds, texts))
                and prompts_alike(tokenizer, texts[::2], ids, starts, bounds[::2])):
            return ids, bounds, starts
    enc = tokenizer(texts, add_special_tokens=False, **({"return_offsets_mapping": True} if fast else {}))
    tokens = enc["input_ids"]
    if all(tokens[k][: len(tokens[k - 1])] == tokens[k - 1] for k in range(1, len(tokens))):
        return list(tokens[-1]), [len(t) for t in tokens], [o[0] for o in enc["offset_mapping"][-1]] if fast else None
    pieces = [texts[0]] + [texts[k][len(texts[k - 1]):] for k in range(1, len(texts))]
    enc = tokenizer(pieces, add_special_tokens=False, **({"return_offsets_mapping": True} if fast else {}))
    ids, bounds, offsets = [], [], []
    for k, piece_ids in enumerate(enc["input_ids"]):
        ids += piece_ids
        bounds.append(len(ids))
        if fast:
            offsets += [o[0] + (len(texts[k - 1]) if k else 0) for o in enc["offset_mapping"][k]]
    if tokenizer.decode(ids) != tokenizer.decode(tokens[-1]):
        k = next(k for k in range(1, len(tokens)) if tokens[k][: len(tokens[k - 1])] != tokens[k - 1])
        raise TurnMismatch(f"{names[k - 1]} tokenizes differently alone and followed by the rest, and its parts "
                           f"tokenized one by one read differently ({_difference(texts[k - 1], texts[k])})")
    return ids, bounds, offsets if fast else None


def prompts_alike(tokenizer, prompts: list[str], ids: list[int], starts: list[int], bounds: list[int]) -> bool:
    """Whether each generation prompt, tokenized alone as generation will see it, is the tokens the conversation
    has there. Only its end since its last special token is tokenized again: text is split at special tokens first,
    so nothing before one changes the tokens after it."""
    special = _stops(tokenizer)
    cuts = [next((t for t in range(end - 1, -1, -1) if ids[t] in special), -1) + 1 for end in bounds]
    tails = tokenizer([p[starts[c]:] if c < len(starts) else "" for p, c in zip(prompts, cuts)], add_special_tokens=False)
    return all(list(tail) == ids[c:end] for tail, c, end in zip(tails["input_ids"], cuts, bounds))


def _code(role) -> int:
    return ROLES.index(role) if role in ROLES else ROLES.index("other")


def role_spans(tokenizer, messages, full: str, offsets, turns, length: int) -> list[list[int]]:
    """[first token, role code] for each message: from the character where each prefix's rendering ends (prefixes the
    template refuses or renders otherwise merge into the message before), mapped to tokens by their offsets. A slow
    tokenizer (no offsets) gets the assistant turns only."""
    if offsets is None:
        spans = [[0, _code("other")]]
        for start, end in turns:
            spans += [[start, _code("assistant")], [end, _code("other")]]
        return [s for s in spans if s[0] < length]
    first = _first_start(tokenizer, messages[0], full) if messages else 0
    starts = [(0, _code("other"))] if first else []  # (character, role code)
    for k, message in enumerate(messages):
        try:
            text = render(tokenizer, messages[:k], False) if k else full[:first]
        except TurnMismatch:
            continue
        if full.startswith(text):
            starts.append((len(text), _code(message.get("role"))))
    spans, t = [], 0
    for char, code in starts:
        while t < len(offsets) and offsets[t] < char:
            t += 1
        if spans and spans[-1][0] == t:
            spans[-1][1] = code
        else:
            spans.append([t, code])
    return spans


def _first_start(tokenizer, first: dict, full: str) -> int:
    """Where the first message's own text starts in the rendering `full`: after what the template writes before any
    message (BOS, a default system prompt it adds to a conversation without one), which is role 'other'. The first
    message's header is read from its rendering after a system message; 0 where that cannot be told."""
    content = str(first.get("content") or "").strip()
    if first.get("role") == "system" or not content:
        return 0
    try:
        before = render(tokenizer, [{"role": "system", "content": "S"}], False)
        after = render(tokenizer, [{"role": "system", "content": "S"}, first], False)
    except TurnMismatch:
        return 0
    at = after.find(content, len(before))
    header = after[len(before):at] if after.startswith(before) and at >= 0 else ""
    start = full.rfind(header, 0, full.find(content)) if header.strip() else -1
    return max(start, 0)


def cut(encoded: Encoded, max_length: int, side: str) -> tuple[list[int], list[int], list[list[int]], list[int]]:
    """(ids, labels, spans, assistant turn numbers truncation cut) of a conversation cut to max_length tokens on
    `side`; a turn counts as cut when any of its trained tokens is gone."""
    n = len(encoded.ids)
    if n <= max_length:
        return encoded.ids, encoded.labels, encoded.spans, []
    lo = 0 if side == "right" else n - max_length
    hi = lo + max_length
    gone = [k for k, (s, e) in zip(encoded.numbers, encoded.turns) if e > s and (s < lo or e > hi)]
    spans = []
    for start, code in encoded.spans:
        start = max(0, start - lo)
        if start >= max_length:
            break
        if spans and spans[-1][0] == start:
            spans[-1][1] = code
        else:
            spans.append([start, code])
    return encoded.ids[lo:hi], encoded.labels[lo:hi], spans, gone
