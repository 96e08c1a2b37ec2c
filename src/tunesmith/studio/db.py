"""The studio's SQLite file: opening it (WAL, foreign keys, a busy timeout), its schema and version, migrations,
transactions and tokens.

Every statement is parameterized; every write runs inside `transaction(conn)` (BEGIN IMMEDIATE: the write lock is
taken at the start, so two writers queue instead of failing halfway). WAL lets the server read while `init`
writes responses in another process, and synchronous=FULL means that an answer the server acknowledged survives a
killed process or a lost power supply.

The schema lives in schema.sql with its version in SCHEMA_VERSION. A studio written by an older tunesmith is
brought up to date by MIGRATIONS[v] (from version v to v + 1: SQL text or a function of the connection), all in
one transaction; a studio from a newer tunesmith is refused rather than guessed at.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from tunesmith.errors import TunesmithError

SCHEMA_VERSION = 1
DB_NAME = "studio.sqlite"
SCHEMA = Path(__file__).with_name("schema.sql")
MIGRATIONS: dict[int, str | Callable[[sqlite3.Connection], None]] = {}  # version v -> v + 1


def db_path(studio_dir: str | Path) -> Path:
    return Path(studio_dir) / DB_NAME


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), rows readable by column name."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection):
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def statements(sql: str) -> list[str]:
    """The complete statements of an SQL script, in order (comments kept with their statement)."""
    out, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip() and not all(line.strip().startswith("--") or not line.strip() for line in current.splitlines()):
        raise ValueError(f"incomplete SQL statement at the end of the script: {current.strip()[:80]!r}")
    return out


def version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, where: str = "the studio") -> None:
    """Create the schema in an empty file, or bring an older one to SCHEMA_VERSION; under the write lock, so two
    processes opening one new studio at once create it once."""
    if version(conn) == SCHEMA_VERSION:
        return
    with transaction(conn):
        found = version(conn)  # again, under the lock
        if found > SCHEMA_VERSION:
            raise TunesmithError(f"{where} has schema version {found}, newer than this tunesmith's {SCHEMA_VERSION}; "
                                 "upgrade tunesmith to open it")
        if found == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            if tables:
                raise TunesmithError(f"{where} is an SQLite file that tunesmith did not write (it has tables and no "
                                     "schema version); give another folder")
            for statement in statements(SCHEMA.read_text()):
                conn.execute(statement)
            found = SCHEMA_VERSION
        for v in range(found, SCHEMA_VERSION):
            step = MIGRATIONS[v]
            if callable(step):
                step(conn)
            else:
                for statement in statements(step):
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")  # PRAGMA takes no parameters; an int is safe


def open_studio(studio_dir: str | Path, *, create: bool = False) -> sqlite3.Connection:
    """The studio's database, migrated to this version. Without `create`, a folder that holds no studio is an
    error that says how to make one."""
    path = db_path(studio_dir)
    if not path.exists() and not create:
        raise TunesmithError(f"{studio_dir} is not a studio (no {DB_NAME}); create it with "
                             f"`tunesmith studio init {studio_dir} --prompts SOURCE --run RUN_DIR`")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = connect(path)
        migrate(conn, str(path))
    except sqlite3.DatabaseError as err:
        raise TunesmithError(f"{path} is not a readable studio database ({err}); give another folder") from None
    return conn


# ---------------------------------------------------------------------------------------------
# Tokens: random, shown once, stored as SHA-256 (a 192-bit random token needs no slow hash: it cannot be guessed)


def new_token() -> str:
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now() -> float:
    return time.time()
