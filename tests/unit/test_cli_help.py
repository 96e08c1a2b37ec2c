"""`--help` of every command and subcommand shows each help text whole: a bracketed part such as `[default: 96]` or
`[query,value]` is text, never eaten as Rich markup."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from tunesmith.cli import app

runner = CliRunner()


def _commands(group, path: tuple[str, ...] = ()):
    yield path, group
    for name, sub in sorted(getattr(group, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.fixture
def wide(monkeypatch):
    """No wrapping: each help text stays on one line (typer reads TERMINAL_WIDTH once, when it is imported)."""
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 2000)


def _plain(text: str) -> str:
    return re.sub(r"\\(\[)", r"\1", text)  # what the reader should see: an escaped bracket shows as a bracket


def _words(text: str) -> str:
    return " ".join(text.split())


def test_every_command_is_walked():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"train", "validate", "studio init", "studio export", "data preview"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_help_keeps_every_bracketed_part(path, command, wide):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    shown = _words(result.output)
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    for text in texts:
        for part in re.findall(r"\[[^\[\]]*\]", _plain(text)):
            assert _words(part) in shown, f"`tunesmith {' '.join(path)} --help` lost {part!r} of {text!r}"


def test_studio_init_shows_its_defaults(wide):
    result = runner.invoke(app, ["studio", "init", "--help"])
    shown = _words(result.output)
    for part in ("[default: 96]", "per prompt and model [default: 1].", "0 is greedy [default: 0.7]."):
        assert part in shown, part
