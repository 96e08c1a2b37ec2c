"""An Ollama Modelfile for a GGUF export: the run's chat template rewritten as Ollama's Go template, and its stop
tokens.

Ollama's TEMPLATE is a Go template, not Jinja, so the run's Jinja template is read by rendering it: a conversation
of marker messages shows what comes before and after each role's content, the generation prompt and a default
system message. The pieces are accepted only if they rebuild the Jinja rendering of several conversations exactly
(`rebuild`); otherwise the Modelfile has no TEMPLATE and Ollama falls back to the template the GGUF file carries
(tokenizer.chat_template, which llama.cpp uses itself)."""

from __future__ import annotations

import logging

log = logging.getLogger("tunesmith")

MARK = {"system": "SYSTEMQZX", "user": "USERONEQZX", "assistant": "ASSISTANTQZX", "user2": "USERTWOQZX"}


def _render(tokenizer, messages: list[dict], generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _between(text: str, marks: list[str]) -> list[str] | None:
    """The text before, between and after the marks (in this order), or None where one is missing."""
    pieces, at = [], 0
    for mark in marks:
        i = text.find(mark, at)
        if i < 0:
            return None
        pieces.append(text[at:i])
        at = i + len(mark)
    return pieces + [text[at:]]


def _lstrip(text: str, prefix: str | None) -> str:
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def chat_pieces(tokenizer) -> dict | None:
    """{default, system: (pre, post), user: (...), assistant: (...), generation} read from the tokenizer's chat
    template, or None where the template cannot be read so (the pieces do not rebuild its renderings)."""
    s, u, a, u2 = MARK["system"], MARK["user"], MARK["assistant"], MARK["user2"]
    # a tokenizer that adds BOS itself has it added by llama.cpp and Ollama too (the GGUF says so): not template text
    bos = tokenizer.bos_token if getattr(tokenizer, "add_bos_token", False) else None
    try:
        generation = _render(tokenizer, [{"role": "user", "content": u}], True)[
            len(_render(tokenizer, [{"role": "user", "content": u}], False)):]
        alone = _between(_lstrip(_render(tokenizer, [{"role": "user", "content": u}], True), bos), [u])
        full = _between(_lstrip(_render(tokenizer, [{"role": "system", "content": s}, {"role": "user", "content": u},
                                                    {"role": "assistant", "content": a},
                                                    {"role": "user", "content": u2}], True), bos), [s, u, a, u2])
    except Exception as err:  # a template that refuses a system message, or any conversation of these shapes
        log.debug("Modelfile: the chat template does not render the probe conversations (%s)", err)
        return None
    if alone is None or full is None or not generation:
        return None
    head, g1, g2, g3, tail = full
    user_pre = generation.replace("assistant", "user")  # roles are usually formatted alike, named differently
    if not (g1.endswith(user_pre) and g3.endswith(user_pre) and g2.endswith(generation) and alone[0].endswith(user_pre)):
        return None
    user_post = g2[: len(g2) - len(generation)]
    pieces = {"default": alone[0][: len(alone[0]) - len(user_pre)], "system": (head, g1[: len(g1) - len(user_pre)]),
              "user": (user_pre, user_post), "assistant": (generation, g3[: len(g3) - len(user_pre)]),
              "generation": generation}
    return pieces if _faithful(tokenizer, pieces, bos) else None


def rebuild(pieces: dict, messages: list[dict], generation: bool) -> str:
    """What the Go template of `template` renders for messages (the same rule, in Python)."""
    out = "" if any(m["role"] == "system" for m in messages) else pieces["default"]
    for m in messages:
        pre, post = pieces[m["role"]]
        out += pre + m["content"] + post
    return out + (pieces["generation"] if generation else "")


def _faithful(tokenizer, pieces: dict, bos: str | None) -> bool:
    talks = [([{"role": "user", "content": "Hi there"}], True),
             ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}], True),
             ([{"role": "user", "content": "One?"}, {"role": "assistant", "content": "Yes."},
               {"role": "user", "content": "Two?"}], True),
             ([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hello to you."}], False)]
    try:
        return all(_lstrip(_render(tokenizer, m, g), bos) == rebuild(pieces, m, g) for m, g in talks)
    except Exception:
        return False


def template(pieces: dict) -> str:
    """Ollama's Go template for the pieces: one line, no trimming markers (the pieces' newlines are the model's)."""
    def role(name: str) -> str:
        pre, post = pieces[name]
        return f'{{{{ if eq .Role "{name}" }}}}{pre}{{{{ .Content }}}}{post}{{{{ end }}}}'

    return ("{{ $system := false }}{{ range .Messages }}{{ if eq .Role \"system\" }}{{ $system = true }}{{ end }}{{ end }}"
            f"{{{{ if not $system }}}}{pieces['default']}{{{{ end }}}}"
            f"{{{{ range .Messages }}}}{role('system')}{role('user')}{role('assistant')}{{{{ end }}}}{pieces['generation']}")


def stop_tokens(tokenizer, pieces: dict | None) -> list[str]:
    """The strings that end a reply: EOS and the special tokens that close an assistant turn (e.g. <|im_end|>)."""
    stops = [tokenizer.eos_token] if getattr(tokenizer, "eos_token", None) else []
    if pieces:
        specials = [str(t) for t in (getattr(tokenizer, "all_special_tokens", None) or [])]
        specials += [str(t) for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()
                     if getattr(t, "special", False)]
        post = pieces["assistant"][1]
        stops += sorted({t for t in specials if t and t in post}, key=post.index)
    return list(dict.fromkeys(stops))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile(gguf: str, tokenizer, *, note: str = "") -> str:
    """The Modelfile: FROM the GGUF file, TEMPLATE (where the chat template could be read), PARAMETER stop."""
    pieces = chat_pieces(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    go = template(pieces) if pieces else None
    if go is not None and ('"""' in go or any("{{" in p or "}}" in p for p in _texts(pieces))):
        go = None  # text the Modelfile or Go cannot quote: leave the template to the GGUF
    lines = [f"# Ollama: ollama create NAME -f Modelfile; ollama run NAME{note}", f"FROM {gguf}"]
    if go is not None:
        lines.append(f'TEMPLATE """{go}"""')
    else:
        lines.append("# no TEMPLATE: the chat template could not be rewritten for Ollama; Ollama reads the one in the GGUF")
    lines += [f"PARAMETER stop {_quoted(s)}" for s in stop_tokens(tokenizer, pieces)]
    return "\n".join(lines) + "\n"


def _texts(pieces: dict) -> list[str]:
    return [pieces["default"], pieces["generation"], *pieces["system"], *pieces["user"], *pieces["assistant"]]
