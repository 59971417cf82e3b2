"""`SQLiteStore`'s schema, its forward migrations, and opening a file safely.

Layout (schema version 3, kept in ``PRAGMA user_version``):

* ``threads``: one row per thread; ``next_seq`` hands out the per-thread message
  sequence, so message order never depends on clocks; ``message_count`` is kept by
  every write, so counting a thread's messages reads one row; ``prompt_tokens``,
  ``completion_tokens`` and ``total_tokens`` sum the usage of the thread's runs;
* ``messages``: clustered by ``(thread_seq, seq)`` (a ``WITHOUT ROWID`` table), so a
  thread's messages, its newest N and those after a cursor are one contiguous range
  read; ``(thread_seq, id)`` is unique, so a caller's message id is unique within its
  thread (every unique key holds the thread); ``run_id``, ``assistant_id`` and
  ``reply_to`` link a run's reply to what it answered; a partial index on
  ``(thread_seq, run_id)`` reads the messages of one run;
* ``thread_metadata``: one row per metadata entry, keyed ``(key, value, thread_seq)``:
  the thread listing's filters are driven from it in thread order;
* ``run_leases``: the one-active-run-per-thread lease, shared by every process that
  opens the file;
* ``runs``: one row per run: the columns a query needs (``id``, its thread, ``status``,
  ``created_at``, ``lease_owner``) and the rest as one JSON ``body``
  (`langchain_retro.stores._runs.run_body`); listed by ``(thread_seq, seq)``, and a
  partial index holds only the runs that may hold a lease, which a new run of the
  thread marks as lapsed.

Opening never writes to a database that is already current: the schema version is
read first, and only a file that needs creating or migrating is written to.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import suppress
from pathlib import Path

from langchain_retro.errors import SchemaVersionError, StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Opened", "open_database", "rollback"]

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the first schema.
    """
    CREATE TABLE assistants (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        name TEXT,
        description TEXT,
        instructions TEXT,
        model TEXT NOT NULL,
        temperature REAL,
        top_p REAL,
        metadata TEXT NOT NULL
    );
    CREATE TABLE threads (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        metadata TEXT NOT NULL,
        next_seq INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE thread_metadata (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        thread_seq INTEGER NOT NULL REFERENCES threads(seq) ON DELETE CASCADE,
        PRIMARY KEY (key, value, thread_seq)
    ) WITHOUT ROWID;
    CREATE INDEX thread_metadata_by_thread ON thread_metadata(thread_seq);
    CREATE TABLE messages (
        thread_seq INTEGER NOT NULL REFERENCES threads(seq) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        role TEXT NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        PRIMARY KEY (thread_seq, seq)
    ) WITHOUT ROWID;
    CREATE TABLE run_leases (
        thread_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    # 1 -> 2: message ids unique per thread, reply links, a kept message count.
    # SQLite cannot drop a constraint, so the messages table is rebuilt; every row
    # keeps its thread, sequence, id and columns.
    """
    CREATE TABLE messages_v2 (
        thread_seq INTEGER NOT NULL REFERENCES threads(seq) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        role TEXT NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        run_id TEXT,
        assistant_id TEXT,
        reply_to TEXT,
        PRIMARY KEY (thread_seq, seq),
        UNIQUE (thread_seq, id)
    ) WITHOUT ROWID;
    INSERT INTO messages_v2
        (thread_seq, seq, id, created_at, role, payload, metadata)
        SELECT thread_seq, seq, id, created_at, role, payload, metadata
        FROM messages ORDER BY thread_seq, seq;
    DROP TABLE messages;
    ALTER TABLE messages_v2 RENAME TO messages;
    ALTER TABLE threads ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0;
    UPDATE threads SET message_count =
        (SELECT count(*) FROM messages m WHERE m.thread_seq = threads.seq);
    """,
    # 2 -> 3: runs, a thread's running token totals, a run's messages by index.
    """
    CREATE TABLE runs (
        seq INTEGER PRIMARY KEY,
        thread_seq INTEGER NOT NULL REFERENCES threads(seq) ON DELETE CASCADE,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        lease_owner TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX runs_by_thread ON runs(thread_seq, seq);
    CREATE INDEX runs_active ON runs(thread_seq)
        WHERE status IN ('queued', 'in_progress', 'cancelling');
    ALTER TABLE threads ADD COLUMN prompt_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE threads ADD COLUMN completion_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE threads ADD COLUMN total_tokens INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_by_run ON messages(thread_seq, run_id)
        WHERE run_id IS NOT NULL;
    """,
)
"""Forward migrations; entry N brings the schema from version N to N + 1."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this package writes and reads."""


class Opened:
    """An open connection, and why it is read-only if it is."""

    def __init__(self, conn: sqlite3.Connection, read_only: str | None) -> None:
        self.conn = conn
        self.read_only = read_only


def _statements(script: str) -> list[str]:
    return [s for s in script.split(";") if s.strip()]


def _check_path(path: str) -> tuple[bool, str | None]:
    """Say what is wrong with a path before SQLite's ``unable to open`` does.

    Returns:
        Whether the file exists, and why it can only be read (``None`` if it can be
        written).

    Raises:
        StoreError: For a directory, a missing folder, or a folder where a new
            database cannot be created.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path()
    if target.is_dir():
        raise StoreError(
            f"Cannot open SQLite database {path!r}: it is a directory. Pass the path "
            "of a database file, e.g. a name inside that directory."
        )
    if not folder.is_dir():
        raise StoreError(
            f"Cannot open SQLite database {path!r}: its folder {str(folder)!r} does "
            "not exist. Create the folder first, or choose another path."
        )
    folder_writable = os.access(folder, os.W_OK | os.X_OK)
    if not target.exists():
        if not folder_writable:
            raise StoreError(
                f"Cannot create SQLite database {path!r}: the folder {str(folder)!r} "
                "is not writable. Choose a writable folder, or give this user write "
                "permission on it."
            )
        return False, None
    if not os.access(target, os.W_OK):
        return True, "the database file is not writable"
    if not folder_writable:
        # WAL mode keeps its -wal and -shm files next to the database.
        return True, f"its folder {str(folder)!r} is not writable"
    return True, None


def _connect(
    path: str, busy_timeout: float, read_only: bool, immutable: bool = False
) -> sqlite3.Connection:
    if read_only:
        uri = Path(path).absolute().as_uri() + "?mode=ro"
        if immutable:
            uri += "&immutable=1"
        return sqlite3.connect(
            uri,
            uri=True,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
    return sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; never hide the error that led here.

    After a disk-full or I/O error SQLite may have rolled back already; a second
    error from ``ROLLBACK`` would replace the real cause.
    """
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection, path: str, read_only: str | None) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path!r} has schema version {version}, newer than the "
            f"{SCHEMA_VERSION} this version knows. Upgrade langchain-retro."
        )
    if version == SCHEMA_VERSION:
        return  # current: nothing to write
    if read_only is not None:
        raise StoreError(
            f"{path!r} has schema version {version} and needs migrating to "
            f"{SCHEMA_VERSION}, but it can only be opened read-only ({read_only}). "
            "Open it once with write access to migrate it."
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated it while we waited for the lock.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(  # noqa: TRY301 - rolled back below
                f"{path!r} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this version knows. Upgrade langchain-retro."
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def _prepare(
    conn: sqlite3.Connection, path: str, synchronous: str, read_only: str | None
) -> None:
    if read_only is None:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() not in ("wal", "memory"):
            conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    _migrate(conn, path, read_only)


def _readonly_error(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PERM,
    )


def open_database(path: str, *, synchronous: str, busy_timeout: float) -> Opened:
    """Open (and create or migrate) a database file, read-only if it must be.

    A file that cannot be written (or whose folder cannot hold WAL mode's side files)
    is opened read-only: reads work, writes raise `StoreError` saying why. If SQLite
    cannot read it that way either (a WAL file in a read-only folder without its
    ``-shm`` file), it is opened ``immutable``: SQLite then assumes no other process
    changes the file, which holds while nobody can write its folder.

    Raises:
        SchemaVersionError: If the file was written by a newer version.
        StoreError: If the file cannot be opened, saying which path and what to do.
    """
    if path == ":memory:" or path.startswith("file:"):
        exists, read_only = True, None
    else:
        exists, read_only = _check_path(path)
    attempts: list[tuple[bool, bool]] = []
    if read_only is None:
        attempts.append((False, False))
    if exists:
        attempts += [(True, False), (True, True)]
    error: BaseException | None = None
    for as_read_only, immutable in attempts:
        try:
            conn = _connect(path, busy_timeout, as_read_only, immutable)
        except sqlite3.Error as exc:
            error = exc
            continue
        why = read_only or f"opening it for writing failed: {error}"
        try:
            _prepare(conn, path, synchronous, why if as_read_only else None)
        except BaseException as exc:
            # A store that failed to open must not keep the file open.
            conn.close()
            if not isinstance(exc, sqlite3.Error):
                raise
            error = exc
            if _readonly_error(exc):
                continue
            break
        return Opened(conn, why if as_read_only else None)
    assert error is not None  # noqa: S101 - every attempt failed with an error
    raise StoreError(f"Cannot open SQLite database {path!r}: {error}") from error
