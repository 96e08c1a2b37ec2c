"""Conversations as people have them, read into one shape: a list of {"role", "content"} messages.

Formats (data.format: chat detects them from the columns; messages / sharegpt / alpaca force one):
- messages: OpenAI style, a `messages` column of {role, content} (roles system, user, assistant, tool).
- sharegpt: a `conversations` column of {from, value}; human -> user, gpt -> assistant, system -> system,
  tool / function / observation -> tool.
- alpaca: `instruction`, optional `input`, `output` (and optional `system`) columns: one user turn, one answer.
- prompt/response: the sft prompt and response columns (data.columns, or data.template's parts): one exchange.

A row's own system message comes first; else its `system` column; else data.system_prompt.
Chat templates (data.chat_template): a named one (NAMED_TEMPLATES), `model` (the tokenizer's own), or a Jinja
file, which transformers renders in its sandboxed Jinja environment (a template is data, not code).
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

CHAT_FORMATS = ("messages", "sharegpt", "alpaca", "prompt/response")  # what detection can find
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system", "tool": "tool",
                  "function": "tool", "observation": "tool", "function_response": "tool"}
LIST_COLUMNS = ("messages", "conversations", "conversation")  # columns that may hold a conversation (a list of turns)
DESCRIPTIONS = {
    "messages": "OpenAI messages ({role, content})",
    "sharegpt": "ShareGPT conversations ({from, value}: human -> user, gpt -> assistant)",
    "alpaca": "Alpaca (instruction + input -> user, output -> assistant)",
    "prompt/response": "prompt/response columns (one user turn, one assistant turn)",
}


def is_chat(data_cfg) -> bool:
    """Whether rows are conversations rendered through a chat template (every data.format but text)."""
    return data_cfg.format != "text"


# --------------------------------------------------------------------------------------------- formats


def _turn_keys(value) -> set[str]:
    """The keys of a conversation's first turn (a list of dicts), or an empty set."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return {k for k, v in value[0].items() if v is not None}
    return set()


def _list_column(row: dict) -> str | None:
    return next((c for c in LIST_COLUMNS if isinstance(row.get(c), list) and row.get(c)), None)


def _shape(turns) -> str | None:
    keys = _turn_keys(turns)
    return "sharegpt" if {"from", "value"} <= keys else "messages" if "role" in keys else None


def detect(row: dict, data_cfg, strict: bool = False) -> str | None:
    """Which of CHAT_FORMATS a row is in, or None. data.format messages / sharegpt / alpaca forces one: with
    `strict` a row in another format is None; without, it is read as what it is (a probe's prompt/response row).
    Under data.format: chat a data.template, or data.columns naming the prompt or response, means prompt/response."""
    column = _list_column(row)
    shape = _shape(row[column]) if column else None
    alpaca = row.get("instruction") is not None and "output" in row
    pair = bool(data_cfg.template) or (data_cfg.column("prompt") in row and data_cfg.column("response") in row)
    forced = data_cfg.format if data_cfg.format in ("messages", "sharegpt", "alpaca") else None
    if forced:
        if forced == (shape if forced != "alpaca" else "alpaca" if alpaca else None):
            return forced
        if strict:
            return None
    if pair and (data_cfg.template or {"prompt", "response"} & set(data_cfg.columns)):
        return "prompt/response"
    return shape or ("alpaca" if alpaca else None) or ("prompt/response" if pair else None)


def conversation_of(row: dict, data_cfg) -> list[dict]:
    """A row as chat messages [{"role", "content"}, ...], whatever its format (detected per row, see `detect`),
    with the system prompt applied: the row's own system message, else its `system` column, else
    data.system_prompt. A row in no known format is a TunesmithError."""
    fmt = detect(row, data_cfg)
    if fmt is None:
        raise TunesmithError(f"data.format: {data_cfg.format!r}: a row with columns {sorted(row)} is in no chat format "
                             f"tunesmith reads ({', '.join(CHAT_FORMATS)}); {FORMAT_FIX}")
    messages = READERS[fmt](row, data_cfg)
    system = row.get("system") if isinstance(row.get("system"), str) and row.get("system") else data_cfg.system_prompt
    if system and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def is_turns(value) -> bool:
    """Whether a column value is a list of chat turns (dicts), as in conversational preference data."""
    return isinstance(value, list) and bool(value) and all(isinstance(t, dict) for t in value)


def messages_of(value, data_cfg, role: str = "user") -> list[dict]:
    """One column value as chat messages of {role, content}: a text is one message of `role`; a list of turns (OpenAI
    {role, content} or ShareGPT {from, value}, by the keys of its first turn) is read as `conversation_of` reads a
    conversation. A prompt (role user) gets the system prompt as `conversation_of` applies it."""
    if is_turns(value):
        shape = _shape(value)
        if shape is None:
            raise TunesmithError(f"data: a list of turns whose first turn has the keys {sorted(_turn_keys(value))}; "
                                 f"{FORMAT_FIX}")
        messages = [{"role": m["role"], "content": m["content"]} for m in READERS[shape]({"messages": value}, data_cfg)]
    else:
        messages = [{"role": role, "content": "" if value is None else str(value)}]
    if role == "user" and data_cfg.system_prompt and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": data_cfg.system_prompt}, *messages]
    return messages


def text_of(value) -> str:
    """A column value as plain text, for checks and reports: a text as it is, a list of turns as its contents one per
    line."""
    if is_turns(value):
        return "\n".join(str(t.get("content", t.get("value")) or "") for t in value)
    return "" if value is None else str(value)


FORMAT_FIX = ("give each row a `messages` list of {role, content}, a ShareGPT `conversations` list of {from, value}, "
              "Alpaca `instruction`/`input`/`output` columns, or prompt and response columns (data.columns)")


def _messages(row: dict, data_cfg) -> list[dict]:
    out = []
    for turn in row[_list_column(row)]:
        message = {k: v for k, v in turn.items() if v is not None}  # arrow fills keys other rows have with None
        message["content"] = "" if turn.get("content") is None else turn["content"]
        out.append(message)
    return out


def _sharegpt(row: dict, data_cfg) -> list[dict]:
    out = []
    for turn in row[_list_column(row)]:
        who = str(turn.get("from", "")).lower()
        if who not in SHAREGPT_ROLES:
            raise TunesmithError(f"data: a ShareGPT turn is from {turn.get('from')!r}; tunesmith reads the roles "
                                 f"{sorted(SHAREGPT_ROLES)}; rename it in the data")
        out.append({"role": SHAREGPT_ROLES[who], "content": "" if turn.get("value") is None else str(turn["value"])})
    return out


def _alpaca(row: dict, data_cfg) -> list[dict]:
    user = str(row["instruction"]).strip()
    if row.get("input"):
        user += "\n\n" + str(row["input"]).strip()
    return [{"role": "user", "content": user}, {"role": "assistant", "content": "" if row["output"] is None else str(row["output"])}]


def _prompt_response(row: dict, data_cfg) -> list[dict]:
    from tunesmith.data.templates import prompt_and_response

    if data_cfg.template:
        prompt, response = prompt_and_response(row, data_cfg)
        prompt = prompt.strip()
    else:
        prompt, response = str(row[data_cfg.column("prompt")]), str(row[data_cfg.column("response")])
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


READERS = {"messages": _messages, "sharegpt": _sharegpt, "alpaca": _alpaca, "prompt/response": _prompt_response}


def column_problems(ds, data_cfg, where: str) -> tuple[str | None, list[str]]:
    """(the format a split's rows are in, problems): detection on its first row, every row's format checked."""
    if not len(ds):
        return None, []
    fmt = detect(ds[0], data_cfg, strict=True)
    if fmt is None:
        forced = data_cfg.format if data_cfg.format != "chat" else None
        wanted = f"data.format: {forced!r} reads " + {"messages": "a `messages` list of {role, content}",
                                                       "sharegpt": "a `conversations` list of {from, value}",
                                                       "alpaca": "`instruction` and `output` columns"}[forced] if forced else \
            f"data.format: 'chat' reads {', '.join(CHAT_FORMATS)}"
        return None, [f"{where}: columns {ds.column_names} hold no conversation that {wanted}; {FORMAT_FIX}, or set "
                      "data.format to the format of the data"]
    column = _list_column(ds[0])
    if column:
        bad = [i for i, value in enumerate(ds[column][:]) if not value]
        if bad:
            return fmt, [f"{where}: column {column!r} is empty or null in {len(bad)} rows (first row {bad[0] + 1}); "
                         "remove those rows"]
    return fmt, []


def describe(fmt: str, ds, data_cfg) -> str:
    """How rows are read, for validate and data preview: 'ShareGPT conversations (... ) from column ...'."""
    column = _list_column(ds[0]) if len(ds) else None
    where = f" from column {column!r}" if column and fmt in ("messages", "sharegpt") else ""
    system = (" with their `system` column as the system prompt" if "system" in ds.column_names else
              f" with system prompt {data_cfg.system_prompt!r}" if data_cfg.system_prompt else "")
    how = "detected from the columns" if data_cfg.format == "chat" else f"data.format: {data_cfg.format}"
    return f"{DESCRIPTIONS[fmt]}{where}{system} ({how}); trained on {data_cfg.train_on.replace('_', ' ')} turns"


# --------------------------------------------------------------------------------------------- templates


def _chatml(end: str) -> str:
    return ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
            f"{end} + '\\n' }}}}{{% endfor %}}{{% if add_generation_prompt %}}{{{{ '<|im_start|>assistant\\n' }}}}{{% endif %}}")


def _llama3(end: str) -> str:
    return ("{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
            f"'<|end_header_id|>\\n\\n' + message['content'] | trim + {end} }}}}{{% endfor %}}{{% if add_generation_prompt %}}"
            "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


# name -> (template for an end-of-turn string expression, the end-of-turn marker)
NAMED_TEMPLATES = {"chatml": (_chatml, "<|im_end|>"), "llama-3": (_llama3, "<|eot_id|>")}
TEMPLATE_NAMES = (*NAMED_TEMPLATES, "model")


def named_template(name: str, tokenizer) -> str:
    """A named template's Jinja source for this tokenizer. Where its end-of-turn marker is no token of the
    tokenizer (a base model that never saw it), each assistant turn also ends with the tokenizer's EOS, so that the
    tuned model learns to stop where generation stops."""
    build, marker = NAMED_TEMPLATES[name]
    end = repr(marker)
    if marker not in tokenizer.get_vocab() and tokenizer.eos_token:
        end = f"{end} + (eos_token if message['role'] == 'assistant' else '')"
        log.info("data.chat_template %s: %r is no token of this tokenizer (it is read as text pieces); assistant turns "
                 "also end with its EOS %r", name, marker, tokenizer.eos_token)
    return build(end)


def template_source(value: str, tokenizer) -> str | None:
    """data.chat_template -> Jinja source (None for `model`: the tokenizer's own)."""
    if value == "model":
        return None
    if value in NAMED_TEMPLATES:
        return named_template(value, tokenizer)
    path = Path(value).expanduser()
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise TunesmithError(f"data.chat_template: could not read {str(path)!r} ({err})") from None
    close = difflib.get_close_matches(value, TEMPLATE_NAMES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    raise TunesmithError(f"data.chat_template: {value!r} is neither a named template ({', '.join(TEMPLATE_NAMES)}) nor "
                         f"a Jinja file that exists{hint} Give a name or the path of a file that exists")


def use_chat_template(tokenizer, data_cfg) -> None:
    """Set data.chat_template on the tokenizer (the run saves the tokenizer with it, so the tuned model chats the
    same way after reload, in `generate` and in `serve`). A template that cannot render a short conversation is an
    error naming the file and what Jinja said."""
    value = data_cfg.chat_template
    if not value:
        return
    if value == "model" and not getattr(tokenizer, "chat_template", None):
        raise TunesmithError(f"data.chat_template: 'model' asks for the tokenizer's own template, and "
                             f"{getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} has none; use a named template "
                             f"({', '.join(NAMED_TEMPLATES)}) or a Jinja file")
    source = template_source(value, tokenizer)
    if source is None:
        return
    tokenizer.chat_template = source
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                                      tokenize=False)
    except Exception as err:  # noqa: BLE001 - Jinja syntax errors, undefined names, the template's own raise_exception
        raise TunesmithError(f"data.chat_template: {value!r} does not render a user/assistant exchange "
                             f"({type(err).__name__}: {err}); fix the template") from None
    log.info("Chat template: %s (a run saves it with its tokenizer)", value)
