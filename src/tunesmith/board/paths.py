"""The one rule for paths: the board reads and writes only inside the run directories it was given.

A run is named in URLs as ROOT/REL: ROOT the index of a run directory on the command line, REL a path relative to
it made of plain names (no `..`, no absolute path, no empty part, no backslash). The resolved path (symlinks
followed) must still be inside the resolved root, so a symlink that points out of it is refused too.
"""

from __future__ import annotations

import re
from pathlib import Path

from tunesmith.errors import TunesmithError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
BOARD_DIR = ".board"  # in each root: the configs and logs of the runs the board started


class OutsideRoots(TunesmithError):
    """A path that is not inside one of the board's run directories (or not written as one)."""


class Roots:
    def __init__(self, dirs):
        if not dirs:
            raise TunesmithError("board: give at least one run directory, e.g. `tunesmith board runs`")
        self.dirs = []
        for d in dirs:
            path = Path(d).expanduser().resolve()
            if not path.is_dir():
                raise TunesmithError(f"board: {d} is not a directory; give a folder that holds run folders "
                                     f"(create it first, e.g. `mkdir -p {d}`)")
            self.dirs.append(path)

    def root(self, index) -> Path:
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise OutsideRoots(f"no run directory {str(index)[:20]!r}") from None
        if not 0 <= i < len(self.dirs):
            raise OutsideRoots(f"no run directory {i}")
        return self.dirs[i]

    def resolve(self, index, rel: str) -> Path:
        """ROOT/REL as a path inside the root; OutsideRoots for anything else."""
        root = self.root(index)
        parts = check_rel(rel)
        path = root.joinpath(*parts)
        real = path.resolve()
        if real != root and root not in real.parents:
            raise OutsideRoots(f"{rel[:200]!r} leads out of the run directory")
        return path

    def rel_id(self, path: Path) -> str | None:
        """The ROOT/REL id of a path inside a root, else None."""
        real = Path(path).resolve()
        for i, root in enumerate(self.dirs):
            if real == root or root in real.parents:
                rel = real.relative_to(root).as_posix()
                return f"{i}/{rel}" if rel != "." else None
        return None

    def board_dir(self, index, sub: str) -> Path:
        """ROOT/.board/SUB, created: where the board keeps what it writes besides runs (configs, logs)."""
        path = self.root(index) / BOARD_DIR / sub
        path.mkdir(parents=True, exist_ok=True)
        return path


def check_rel(rel: str) -> list[str]:
    """The parts of a path inside a run directory: no absolute path, no `..` or `.`, no empty part, no backslash,
    not the board's own folder."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel or rel.startswith("/") or len(rel) > 1000:
        raise OutsideRoots(f"{str(rel)[:200]!r} is not a path inside a run directory")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == BOARD_DIR:
        raise OutsideRoots(f"{rel[:200]!r} is not a path inside a run directory (no `..`, `.` or empty parts)")
    return parts


def check_name(name: str) -> str:
    """A new run's name: plain folder names (letters, digits, . _ -) joined by /."""
    parts = check_rel(name)
    for part in parts:
        if not NAME.fullmatch(part):
            raise OutsideRoots(f"{name[:200]!r}: {part[:60]!r} is not a plain folder name (letters, digits, . _ -)")
    return name
