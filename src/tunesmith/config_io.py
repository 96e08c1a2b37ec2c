"""Config files and command-line overrides as plain data: YAML in (safe_load, errors with line and column), dotted
`key=value` overrides applied to a nested dict. No schema here: tunesmith.config validates the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import TunesmithError


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.learning_rate=1e-4' -> (['train', 'learning_rate'], 0.0001). Values are parsed as YAML."""
    if "=" not in text:
        raise TunesmithError(f"override {text!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-4")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise TunesmithError(f"override {text!r}: the key is empty; expected e.g. method.r=8")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str):
        try:  # YAML 1.1 reads '1e-4' as a string; take scientific notation as people write it.
            parsed = float(parsed)
        except ValueError:
            pass
    return parts, parsed


def apply_overrides(raw: dict, overrides: dict[str, Any] | list[str] | None) -> dict:
    """Set dotted keys in a nested dict (a copy): {'method.r': 8} or ['method.r=8']."""
    import copy

    raw = copy.deepcopy(raw)
    items: list[tuple[list[str], Any]] = []
    if isinstance(overrides, dict):
        items = [(k.split("."), v) for k, v in overrides.items()]
    elif overrides:
        items = [parse_override(o) for o in overrides]
    for parts, value in items:
        node = raw
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TunesmithError(f"config file {path} does not exist; pass the path to a YAML file, e.g. configs/sentiment-lora.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TunesmithError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise TunesmithError(f"{path}: expected a mapping with sections model, data, method, objective; found {type(raw).__name__}")
    return raw
