"""Turning a row into what the model reads: plain text, a prompt and a response, or chat messages."""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from tunesmith.errors import TunesmithError


def fields(template: str) -> list[str]:
    """Column names a format string uses: 'Q: {question}\\nA: {answer}' -> ['question', 'answer']."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render(template: str, row: dict) -> str:
    try:
        return template.format(**{k: "" if v is None else v for k, v in row.items()})
    except KeyError as err:
        raise TunesmithError(f"data.template: uses {{{err.args[0]}}} but the data has no column {err.args[0]!r}; columns are {sorted(row)}") from None


def text_of(row: dict, data_cfg) -> str:
    """The text of a classify or causal_lm example."""
    if data_cfg.template:
        return render(data_cfg.template, row)
    return str(row[data_cfg.text_column])


def sft_template(data_cfg) -> str:
    """The sft template; without one: '{prompt}\\n{response}' over the configured columns."""
    return data_cfg.template or "{%s}\n{%s}" % (data_cfg.prompt_column, data_cfg.response_column)


def split_template(data_cfg) -> tuple[str, str]:
    """'Q: {question}\\nA: {answer}' -> ('Q: {question}\\nA: ', '{answer}')."""
    template = sft_template(data_cfg)
    cut = template.rindex("{" + data_cfg.response_column + "}")
    return template[:cut], template[cut:]


def prompt_fields(data_cfg) -> list[str]:
    return fields(split_template(data_cfg)[0])


def prompt_and_response(row: dict, data_cfg) -> tuple[str, str]:
    head, tail = split_template(data_cfg)
    return render(head, row), render(tail, row)


def messages_of(row: dict, data_cfg) -> list[dict]:
    """Chat messages: the row's own `messages` column, else system? + user(prompt) + assistant(response)."""
    if "messages" in row and row["messages"]:
        return list(row["messages"])
    prompt, response = prompt_and_response(row, data_cfg) if data_cfg.template else (
        str(row[data_cfg.prompt_column]), str(row[data_cfg.response_column]))
    msgs = [{"role": "system", "content": data_cfg.system_prompt}] if data_cfg.system_prompt else []
    return msgs + [{"role": "user", "content": prompt.strip() if data_cfg.template else prompt},
                   {"role": "assistant", "content": response}]


def probe_row(text: str, data_cfg) -> dict:
    """A probe string as a row: it fills every prompt field of the template (usually there is one)."""
    names = prompt_fields(data_cfg) if data_cfg.template else [data_cfg.prompt_column]
    return {**{n: text for n in names}, data_cfg.response_column: ""}


@dataclass(frozen=True)
class Reads:
    """What an objective reads from each row: text columns (column -> the config key that names it), a label
    column, and columns that may hold a list of strings (sft reference answers). A null in any of them drops the row."""

    text: dict[str, str]
    label: str | None = None
    lists: tuple[str, ...] = field(default=())


def _text_reads(d) -> dict[str, str]:
    return {f: "data.template" for f in fields(d.template)} if d.template else {d.text_column: "data.text_column"}


def _classify_reads(d) -> Reads:
    pair = {d.text_pair_column: "data.text_pair_column"} if d.text_pair_column else {}
    return Reads({**_text_reads(d), **pair}, d.label_column)


def _sft_reads(d) -> Reads:
    text = {f: "data.template" for f in fields(d.template)} if d.template else {
        d.prompt_column: "data.prompt_column", d.response_column: "data.response_column"}
    return Reads(text, lists=(d.response_column,))


READS = {"classify": _classify_reads, "causal_lm": lambda d: Reads(_text_reads(d)), "sft": _sft_reads}


def reads(cfg) -> Reads:
    """The columns the config's objective reads from each row (an objective not listed reads none)."""
    make = READS.get(cfg.objective.name)
    return make(cfg.data) if make else Reads({})
