"""The one error type a user can cause. The CLI prints it without a traceback and exits 2."""

from __future__ import annotations


class TunesmithError(Exception):
    """A problem the user can fix: bad config, data, paths, or a model that lacks a module.

    ``problems`` holds one line per problem; each names the key, file or line, what was found,
    what was expected and how to fix it.
    """

    def __init__(self, problems: str | list[str], *, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = head + self.problems[0]
        else:
            lines = [f"{head}{len(self.problems)} problems:"] + [f"  - {p}" for p in self.problems]
            message = "\n".join(lines)
        super().__init__(message)


def raise_if(problems: list[str], *, source: str | None = None) -> None:
    """Raise one TunesmithError listing every problem, if there are any."""
    if problems:
        raise TunesmithError(problems, source=source)
