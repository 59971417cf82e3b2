"""`SQLiteStore`: the embedded default store, one SQLite file.

Layout (schema version 1, kept in ``PRAGMA user_version``):

* ``threads``: one row per thread; ``next_seq`` hands out the per-thread message
  sequence, so message order never depends on clocks;
* ``messages``: clustered by ``(thread_seq, seq)`` (a ``WITHOUT ROWID`` table), so a
  thread's messages, its newest N and those after a cursor are one contiguous range
  read, whatever the thread's length and however many other threads the file holds;
* ``thread_metadata``: one row per metadata entry, keyed ``(key, value, thread_seq)``,
  serving the thread listing's class, ``assistant_id`` and equality filters;
* ``run_leases``: the one-active-run-per-thread lease, shared by every process that
  opens the file.

The file runs in WAL mode with ``synchronous=NORMAL`` by default: a committed write
survives the application crashing; a power loss may drop the last few commits, never
corrupt the file. Pass ``synchronous="FULL"`` to survive power loss too.

Async methods run the same code in a worker thread, so they never block the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, ParamSpec, TypeVar

from langchain_retro._ids import new_id
from langchain_retro._metadata import MetadataPatch, check_limits, dumps
from langchain_retro.errors import (
    AssistantInUseError,
    AssistantNotFoundError,
    MessageNotFoundError,
    RetroError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    ThreadNotFoundError,
)
from langchain_retro.stores.base import (
    ASSISTANT_FIELDS,
    THREAD_ASSISTANT_KEY,
    AssistantThreads,
    BaseStore,
    NewMessage,
    Order,
    RunStart,
    StoredAssistant,
    StoredMessage,
    StoredThread,
    ThreadQuery,
)

__all__ = ["DEFAULT_PATH", "PATH_ENV", "SQLiteStore"]

DEFAULT_PATH = "langchain-retro.db"
"""The file `SQLiteStore` opens given no path and no ``LANGCHAIN_RETRO_DB``."""

PATH_ENV = "LANGCHAIN_RETRO_DB"
"""The environment variable naming the default database file."""

P = ParamSpec("P")
T = TypeVar("T")

_MIGRATIONS: tuple[str, ...] = (
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
)
"""Forward migrations; entry N brings the schema from version N to N + 1."""

SCHEMA_VERSION = len(_MIGRATIONS)

_ASSISTANT_COLUMNS = "id, created_at, metadata, " + ", ".join(ASSISTANT_FIELDS)
_MESSAGE_COLUMNS = "m.id, m.created_at, m.metadata, m.role, m.payload"


def _assistant(row: sqlite3.Row) -> StoredAssistant:
    return StoredAssistant(
        id=row[0],
        created_at=row[1],
        metadata=json.loads(row[2]),
        **{name: row[i] for i, name in enumerate(ASSISTANT_FIELDS, start=3)},
    )


def _thread(row: Sequence[Any]) -> StoredThread:
    return StoredThread(id=row[0], created_at=row[1], metadata=json.loads(row[2]))


def _message(row: Sequence[Any], thread_id: str) -> StoredMessage:
    # Plain validation is faster than model_construct in pydantic 2 here.
    return StoredMessage(
        id=row[0],
        created_at=row[1],
        metadata=json.loads(row[2]) if row[2] != "{}" else {},
        thread_id=thread_id,
        role=row[3],
        payload=row[4],
    )


def _now() -> int:
    return int(time.time())


class SQLiteStore(BaseStore):
    """The embedded default store: assistants, threads and messages in one SQLite file.

    Setup:
        Nothing to install: it uses the standard library's ``sqlite3``.

    Instantiate:
        .. code-block:: python

            from langchain_retro import SQLiteStore

            store = SQLiteStore("app.db")  # or SQLiteStore() for the default file

    Several processes may open the same file: writes are serialised by SQLite,
    message order comes from a per-thread sequence, and run leases live in the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 30.0,
    ) -> None:
        """Open (and create or migrate) a database file.

        Args:
            path: The database file; ``":memory:"`` for a private in-memory database.
                Defaults to ``$LANGCHAIN_RETRO_DB``, else ``langchain-retro.db`` in the
                working directory.
            synchronous: ``NORMAL`` (default) survives application crashes; ``FULL``
                also survives power loss, at the cost of an fsync per commit.
            busy_timeout: Seconds to wait for another process's write to finish.

        Raises:
            SchemaVersionError: If the file was written by a newer version.
            StoreError: If the file cannot be opened.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(
                f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}"
            )
        self.path = str(
            path if path is not None else os.environ.get(PATH_ENV, DEFAULT_PATH)
        )
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(
                f"Cannot open SQLite database {self.path!r}: {exc}"
            ) from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
        except BaseException as exc:
            # A store that failed to open must not keep the file open.
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"Cannot open SQLite database {self.path!r}: {exc}"
                ) from exc
            raise
        self._conn = conn

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # --- plumbing --------------------------------------------------------------------

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(  # noqa: TRY301 - rolled back below
                    f"{self.path!r} has schema version {version}, newer than the "
                    f"{SCHEMA_VERSION} this version knows. Upgrade langchain-retro."
                )
            for number in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction on the connection; store errors come out as `StoreError`."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreClosedError(f"{self!r} is closed; open a new store.")
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except RetroError:
                raise
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite error on {self.path!r}: {exc}") from exc

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def close(self) -> None:
        """Close the database connection; later calls raise `StoreClosedError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def aclose(self) -> None:
        """Async twin of `close`."""
        await self._run(self.close)

    # --- lookups inside a transaction ------------------------------------------------

    @staticmethod
    def _thread_row(conn: sqlite3.Connection, thread_id: str) -> tuple[int, str]:
        row = conn.execute(
            "SELECT seq, metadata FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
        if row is None:
            raise ThreadNotFoundError(thread_id)
        return row[0], row[1]

    @staticmethod
    def _message_seq(conn: sqlite3.Connection, thread_seq: int, message_id: str) -> int:
        row = conn.execute(
            "SELECT seq FROM messages WHERE id = ? AND thread_seq = ?",
            (message_id, thread_seq),
        ).fetchone()
        if row is None:
            raise MessageNotFoundError(message_id, hint="(not in this thread)")
        return int(row[0])

    @staticmethod
    def _append(
        conn: sqlite3.Connection,
        thread_seq: int,
        thread_id: str,
        messages: Sequence[NewMessage],
    ) -> list[StoredMessage]:
        created_at = _now()
        (next_seq,) = conn.execute(
            "SELECT next_seq FROM threads WHERE seq = ?", (thread_seq,)
        ).fetchone()
        stored = [
            message.stored(new_id("msg"), thread_id, created_at) for message in messages
        ]
        conn.executemany(
            "INSERT INTO messages (thread_seq, seq, id, created_at, role, payload, "
            "metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    thread_seq,
                    next_seq + i,
                    m.id,
                    created_at,
                    m.role,
                    m.payload,
                    dumps(m.metadata),
                )
                for i, m in enumerate(stored)
            ],
        )
        conn.execute(
            "UPDATE threads SET next_seq = ? WHERE seq = ?",
            (next_seq + len(stored), thread_seq),
        )
        return stored

    @staticmethod
    def _take_lease(
        conn: sqlite3.Connection, thread_id: str, owner: str, ttl: float
    ) -> bool:
        now = time.time()
        cursor = conn.execute(
            "INSERT INTO run_leases (thread_id, owner, expires_at) "
            "VALUES (?, ?, ?) "
            "ON CONFLICT (thread_id) DO UPDATE SET owner = excluded.owner, "
            "expires_at = excluded.expires_at "
            "WHERE run_leases.expires_at < ? OR run_leases.owner = excluded.owner",
            (thread_id, owner, now + ttl, now),
        )
        return cursor.rowcount == 1

    @staticmethod
    def _release(conn: sqlite3.Connection, thread_id: str, owner: str) -> None:
        conn.execute(
            "DELETE FROM run_leases WHERE thread_id = ? AND owner = ?",
            (thread_id, owner),
        )

    @staticmethod
    def _patch_thread(
        conn: sqlite3.Connection,
        thread_seq: int,
        current: str,
        patch: MetadataPatch,
        limits: Any,
    ) -> dict[str, str]:
        old = json.loads(current)
        metadata = patch.apply(old, limits)
        conn.execute(
            "UPDATE threads SET metadata = ? WHERE seq = ?",
            (dumps(metadata), thread_seq),
        )
        # Only the entries that changed: a run moving hwm rewrites one row, not all.
        conn.executemany(
            "DELETE FROM thread_metadata "
            "WHERE key = ? AND value = ? AND thread_seq = ?",
            [(k, v, thread_seq) for k, v in old.items() if metadata.get(k) != v],
        )
        conn.executemany(
            "INSERT INTO thread_metadata (key, value, thread_seq) VALUES (?, ?, ?)",
            [(k, v, thread_seq) for k, v in metadata.items() if old.get(k) != v],
        )
        return metadata

    # --- assistants ------------------------------------------------------------------

    def create_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Create an assistant from its native fields and its metadata."""
        check_limits(metadata, self.limits)
        stored = StoredAssistant(
            id=new_id("asst"), created_at=_now(), metadata=dict(metadata), **fields
        )
        with self._tx(write=True) as conn:
            conn.execute(
                f"INSERT INTO assistants ({_ASSISTANT_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stored.id,
                    stored.created_at,
                    dumps(stored.metadata),
                    *(getattr(stored, name) for name in ASSISTANT_FIELDS),
                ),
            )
        return stored

    async def acreate_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Async twin of `create_assistant`."""
        return await self._run(self.create_assistant, fields, metadata)

    def _get_assistant(
        self, conn: sqlite3.Connection, assistant_id: str
    ) -> StoredAssistant:
        row = conn.execute(
            f"SELECT {_ASSISTANT_COLUMNS} FROM assistants WHERE id = ?",  # noqa: S608
            (assistant_id,),
        ).fetchone()
        if row is None:
            raise AssistantNotFoundError(assistant_id)
        return _assistant(row)

    def get_assistant(self, assistant_id: str) -> StoredAssistant:
        """Read an assistant; raises `AssistantNotFoundError`."""
        with self._tx(write=False) as conn:
            return self._get_assistant(conn, assistant_id)

    async def aget_assistant(self, assistant_id: str) -> StoredAssistant:
        """Async twin of `get_assistant`."""
        return await self._run(self.get_assistant, assistant_id)

    def update_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Change native fields and apply a metadata patch, in one transaction."""
        unknown = set(fields) - set(ASSISTANT_FIELDS)
        if unknown:
            raise ValueError(f"Not native assistant fields: {sorted(unknown)}")
        with self._tx(write=True) as conn:
            current = self._get_assistant(conn, assistant_id)
            metadata = (
                patch.apply(current.metadata, self.limits)
                if patch
                else current.metadata
            )
            updated = current.model_copy(update={**fields, "metadata": metadata})
            StoredAssistant.model_validate(updated.model_dump())
            assignments = ", ".join(f"{name} = ?" for name in ASSISTANT_FIELDS)
            conn.execute(
                f"UPDATE assistants SET metadata = ?, {assignments} WHERE id = ?",  # noqa: S608
                (
                    dumps(metadata),
                    *(getattr(updated, name) for name in ASSISTANT_FIELDS),
                    assistant_id,
                ),
            )
        return updated

    async def aupdate_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Async twin of `update_assistant`."""
        return await self._run(self.update_assistant, assistant_id, fields, patch)

    def delete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Delete an assistant; returns how many of its threads were deleted."""
        if threads not in ("refuse", "keep", "delete"):
            raise ValueError(
                f"threads must be 'refuse', 'keep' or 'delete', not {threads!r}"
            )
        with self._tx(write=True) as conn:
            self._get_assistant(conn, assistant_id)
            linked = [
                row[0]
                for row in conn.execute(
                    "SELECT thread_seq FROM thread_metadata "
                    "WHERE key = ? AND value = ?",
                    (THREAD_ASSISTANT_KEY, assistant_id),
                )
            ]
            if linked and threads == "refuse":
                raise AssistantInUseError(assistant_id, len(linked))
            deleted = 0
            if threads == "delete":
                for thread_seq in linked:
                    (thread_id,) = conn.execute(
                        "SELECT id FROM threads WHERE seq = ?", (thread_seq,)
                    ).fetchone()
                    self._delete_thread(conn, thread_seq, thread_id)
                    deleted += 1
            conn.execute("DELETE FROM assistants WHERE id = ?", (assistant_id,))
        return deleted

    async def adelete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Async twin of `delete_assistant`."""
        return await self._run(self.delete_assistant, assistant_id, threads=threads)

    def list_assistants(
        self,
        *,
        metadata: Mapping[str, str] | None = None,
        classes: Sequence[str] | None = None,
        after: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredAssistant]:
        """List assistants, newest first by default, after an optional cursor id."""
        where: list[str] = []
        params: list[Any] = []
        for key, value in (metadata or {}).items():
            where.append(
                "EXISTS (SELECT 1 FROM json_each(assistants.metadata) e "
                "WHERE e.key = ? AND e.value = ?)"
            )
            params += [key, value]
        if classes is not None:
            where.append(
                "EXISTS (SELECT 1 FROM json_each(assistants.metadata) e "  # noqa: S608
                "WHERE e.key = 'retro_class' AND e.value IN "
                f"({', '.join('?' * len(classes))}))"
            )
            params += list(classes)
        with self._tx(write=False) as conn:
            if after is not None:
                row = conn.execute(
                    "SELECT seq FROM assistants WHERE id = ?", (after,)
                ).fetchone()
                if row is None:
                    raise AssistantNotFoundError(after, hint="(used as a cursor)")
                where.append("seq < ?" if order == "desc" else "seq > ?")
                params.append(row[0])
            sql = f"SELECT {_ASSISTANT_COLUMNS} FROM assistants"  # noqa: S608
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += f" ORDER BY seq {'DESC' if order == 'desc' else 'ASC'} LIMIT ?"
            return [_assistant(r) for r in conn.execute(sql, (*params, limit))]

    async def alist_assistants(
        self,
        *,
        metadata: Mapping[str, str] | None = None,
        classes: Sequence[str] | None = None,
        after: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredAssistant]:
        """Async twin of `list_assistants`."""
        return await self._run(
            self.list_assistants,
            metadata=metadata,
            classes=classes,
            after=after,
            order=order,
            limit=limit,
        )

    # --- threads ---------------------------------------------------------------------

    def create_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Create a thread with the given metadata."""
        check_limits(metadata, self.limits)
        stored = StoredThread(
            id=new_id("thread"), created_at=_now(), metadata=dict(metadata)
        )
        with self._tx(write=True) as conn:
            cursor = conn.execute(
                "INSERT INTO threads (id, created_at, metadata) VALUES (?, ?, ?)",
                (stored.id, stored.created_at, dumps(stored.metadata)),
            )
            conn.executemany(
                "INSERT INTO thread_metadata (key, value, thread_seq) VALUES (?, ?, ?)",
                [(k, v, cursor.lastrowid) for k, v in stored.metadata.items()],
            )
        return stored

    async def acreate_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Async twin of `create_thread`."""
        return await self._run(self.create_thread, metadata)

    def get_thread(self, thread_id: str) -> StoredThread:
        """Read a thread; raises `ThreadNotFoundError`."""
        with self._tx(write=False) as conn:
            row = conn.execute(
                "SELECT id, created_at, metadata FROM threads WHERE id = ?",
                (thread_id,),
            ).fetchone()
        if row is None:
            raise ThreadNotFoundError(thread_id)
        return _thread(row)

    async def aget_thread(self, thread_id: str) -> StoredThread:
        """Async twin of `get_thread`."""
        return await self._run(self.get_thread, thread_id)

    def update_thread(self, thread_id: str, patch: MetadataPatch) -> StoredThread:
        """Apply a metadata patch to a thread, in one transaction."""
        with self._tx(write=True) as conn:
            thread_seq, current = self._thread_row(conn, thread_id)
            metadata = self._patch_thread(conn, thread_seq, current, patch, self.limits)
            (created_at,) = conn.execute(
                "SELECT created_at FROM threads WHERE seq = ?", (thread_seq,)
            ).fetchone()
        return StoredThread(id=thread_id, created_at=created_at, metadata=metadata)

    async def aupdate_thread(
        self, thread_id: str, patch: MetadataPatch
    ) -> StoredThread:
        """Async twin of `update_thread`."""
        return await self._run(self.update_thread, thread_id, patch)

    @staticmethod
    def _delete_thread(
        conn: sqlite3.Connection, thread_seq: int, thread_id: str
    ) -> None:
        conn.execute("DELETE FROM messages WHERE thread_seq = ?", (thread_seq,))
        conn.execute("DELETE FROM thread_metadata WHERE thread_seq = ?", (thread_seq,))
        conn.execute("DELETE FROM run_leases WHERE thread_id = ?", (thread_id,))
        conn.execute("DELETE FROM threads WHERE seq = ?", (thread_seq,))

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread with all its messages."""
        with self._tx(write=True) as conn:
            thread_seq, _ = self._thread_row(conn, thread_id)
            self._delete_thread(conn, thread_seq, thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async twin of `delete_thread`."""
        await self._run(self.delete_thread, thread_id)

    def list_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """List threads matching a query, in the query's order."""
        desc = query.order == "desc"
        where: list[str] = []
        params: list[Any] = []
        for key, value in query.metadata.items():
            where.append(
                "EXISTS (SELECT 1 FROM thread_metadata m WHERE m.thread_seq = t.seq "
                "AND m.key = ? AND m.value = ?)"
            )
            params += [key, value]
        if query.classes is not None:
            where.append(
                "EXISTS (SELECT 1 FROM thread_metadata m "  # noqa: S608 - placeholders only
                "WHERE m.thread_seq = t.seq "
                "AND m.key = 'retro_class' AND m.value IN "
                f"({', '.join('?' * len(query.classes))}))"
            )
            params += list(query.classes)
        # A page before a cursor is the one nearest it: read towards it, then turn.
        backwards = query.before is not None
        with self._tx(write=False) as conn:
            for cursor_id, newer in ((query.after, not desc), (query.before, desc)):
                if cursor_id is not None:
                    cursor_seq, _ = self._thread_row(conn, cursor_id)
                    where.append("t.seq > ?" if newer else "t.seq < ?")
                    params.append(cursor_seq)
            sql = "SELECT t.id, t.created_at, t.metadata FROM threads t"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += f" ORDER BY t.seq {'DESC' if desc != backwards else 'ASC'} LIMIT ?"
            rows = conn.execute(sql, (*params, query.limit)).fetchall()
        threads = [_thread(r) for r in rows]
        return threads[::-1] if backwards else threads

    async def alist_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """Async twin of `list_threads`."""
        return await self._run(self.list_threads, query)

    # --- messages --------------------------------------------------------------------

    def add_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
    ) -> list[StoredMessage]:
        """Append messages to a thread, all or none, in the given order."""
        for message in messages:
            check_limits(message.metadata, self.limits)
        with self._tx(write=True) as conn:
            thread_seq, current = self._thread_row(conn, thread_id)
            stored = self._append(conn, thread_seq, thread_id, messages)
            if thread_patch is not None:
                self._patch_thread(conn, thread_seq, current, thread_patch, self.limits)
        return stored

    async def aadd_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `add_messages`."""
        return await self._run(
            self.add_messages, thread_id, messages, thread_patch=thread_patch
        )

    def get_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Read a message of a thread; raises `MessageNotFoundError`."""
        with self._tx(write=False) as conn:
            thread_seq, _ = self._thread_row(conn, thread_id)
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m "  # noqa: S608
                "WHERE m.id = ? AND m.thread_seq = ?",
                (message_id, thread_seq),
            ).fetchone()
        if row is None:
            raise MessageNotFoundError(message_id, hint=f"(in thread {thread_id!r})")
        return _message(row, thread_id)

    async def aget_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Async twin of `get_message`."""
        return await self._run(self.get_message, thread_id, message_id)

    def list_messages(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        limit: int | None = None,
    ) -> list[StoredMessage]:
        """List a thread's messages in thread order."""
        rows = self._message_rows(thread_id, after, before, order, limit)
        return [_message(row, thread_id) for row in rows]

    def list_message_payloads(
        self, thread_id: str, *, order: Order = "asc", limit: int | None = None
    ) -> list[tuple[str, str]]:
        """(id, payload) of a thread's messages, without building row objects."""
        rows = self._message_rows(thread_id, None, None, order, limit)
        return [(row[0], row[4]) for row in rows]

    async def alist_message_payloads(
        self, thread_id: str, *, order: Order = "asc", limit: int | None = None
    ) -> list[tuple[str, str]]:
        """Async twin of `list_message_payloads`."""
        return await self._run(
            self.list_message_payloads, thread_id, order=order, limit=limit
        )

    def _message_rows(
        self,
        thread_id: str,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int | None,
    ) -> list[Any]:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.thread_seq = ?"  # noqa: S608
        with self._tx(write=False) as conn:
            thread_seq, _ = self._thread_row(conn, thread_id)
            params: list[Any] = [thread_seq]
            if after is not None:
                sql += " AND m.seq > ?"
                params.append(self._message_seq(conn, thread_seq, after))
            if before is not None:
                sql += " AND m.seq < ?"
                params.append(self._message_seq(conn, thread_seq, before))
            # A limited page before a cursor is the one nearest it: oldest first,
            # read towards the cursor, then turn.
            backwards = before is not None and limit is not None and order == "asc"
            desc = order == "desc" or backwards
            sql += f" ORDER BY m.seq {'DESC' if desc else 'ASC'}"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            rows = conn.execute(sql, params).fetchall()
        if backwards:
            rows.reverse()
        return rows

    async def alist_messages(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        limit: int | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `list_messages`."""
        return await self._run(
            self.list_messages,
            thread_id,
            after=after,
            before=before,
            order=order,
            limit=limit,
        )

    def update_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Apply a metadata patch to a message."""
        with self._tx(write=True) as conn:
            thread_seq, _ = self._thread_row(conn, thread_id)
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m "  # noqa: S608
                "WHERE m.id = ? AND m.thread_seq = ?",
                (message_id, thread_seq),
            ).fetchone()
            if row is None:
                raise MessageNotFoundError(
                    message_id, hint=f"(in thread {thread_id!r})"
                )
            current = _message(row, thread_id)
            metadata = patch.apply(current.metadata, self.limits)
            conn.execute(
                "UPDATE messages SET metadata = ? WHERE id = ?",
                (dumps(metadata), message_id),
            )
        return current.model_copy(update={"metadata": metadata})

    async def aupdate_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Async twin of `update_message`."""
        return await self._run(self.update_message, thread_id, message_id, patch)

    def delete_message(self, thread_id: str, message_id: str) -> None:
        """Delete one message of a thread."""
        with self._tx(write=True) as conn:
            thread_seq, _ = self._thread_row(conn, thread_id)
            deleted = conn.execute(
                "DELETE FROM messages WHERE id = ? AND thread_seq = ?",
                (message_id, thread_seq),
            ).rowcount
            if deleted == 0:
                raise MessageNotFoundError(
                    message_id, hint=f"(in thread {thread_id!r})"
                )

    async def adelete_message(self, thread_id: str, message_id: str) -> None:
        """Async twin of `delete_message`."""
        await self._run(self.delete_message, thread_id, message_id)

    def clear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Delete all of a thread's messages (the thread stays); returns how many."""
        with self._tx(write=True) as conn:
            thread_seq, current = self._thread_row(conn, thread_id)
            count = conn.execute(
                "DELETE FROM messages WHERE thread_seq = ?", (thread_seq,)
            ).rowcount
            if thread_patch is not None:
                self._patch_thread(conn, thread_seq, current, thread_patch, self.limits)
        return int(count)

    async def aclear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Async twin of `clear_messages`."""
        return await self._run(
            self.clear_messages, thread_id, thread_patch=thread_patch
        )

    def count_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Count a thread's messages, or those after the message ``after``."""
        with self._tx(write=False) as conn:
            thread_seq, _ = self._thread_row(conn, thread_id)
            floor = 0 if after is None else self._message_seq(conn, thread_seq, after)
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE thread_seq = ? AND seq > ?",
                (thread_seq, floor),
            ).fetchone()
        return int(count)

    async def acount_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Async twin of `count_messages`."""
        return await self._run(self.count_messages, thread_id, after=after)

    # --- run leases ------------------------------------------------------------------

    def acquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Take the thread's run lease for ``ttl`` seconds if free, expired or ours."""
        with self._tx(write=True) as conn:
            self._thread_row(conn, thread_id)
            return self._take_lease(conn, thread_id, owner, ttl)

    async def aacquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Async twin of `acquire_lease`."""
        return await self._run(self.acquire_lease, thread_id, owner, ttl)

    def release_lease(self, thread_id: str, owner: str) -> None:
        """Give the lease back if ``owner`` still holds it."""
        with self._tx(write=True) as conn:
            self._release(conn, thread_id, owner)

    async def arelease_lease(self, thread_id: str, owner: str) -> None:
        """Async twin of `release_lease`."""
        await self._run(self.release_lease, thread_id, owner)

    # --- runs ------------------------------------------------------------------------

    def begin_run(
        self,
        thread_id: str,
        *,
        owner: str,
        ttl: float,
        messages: Sequence[NewMessage] = (),
        context_limit: int | None = None,
    ) -> RunStart | None:
        """Start a run in one transaction: lease, thread, assistant, input, context."""
        for message in messages:
            check_limits(message.metadata, self.limits)
        with self._tx(write=True) as conn:
            row = conn.execute(
                "SELECT seq, id, created_at, metadata FROM threads WHERE id = ?",
                (thread_id,),
            ).fetchone()
            if row is None:
                raise ThreadNotFoundError(thread_id)
            if not self._take_lease(conn, thread_id, owner, ttl):
                return None
            thread_seq = row[0]
            thread = _thread(row[1:])
            assistant = None
            assistant_id = thread.metadata.get(THREAD_ASSISTANT_KEY)
            if assistant_id is not None:
                found = conn.execute(
                    f"SELECT {_ASSISTANT_COLUMNS} FROM assistants WHERE id = ?",  # noqa: S608
                    (assistant_id,),
                ).fetchone()
                assistant = None if found is None else _assistant(found)
            appended = (
                self._append(conn, thread_seq, thread_id, messages) if messages else []
            )
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m "  # noqa: S608
                "WHERE m.thread_seq = ? ORDER BY m.seq DESC LIMIT ?",
                (thread_seq, -1 if context_limit is None else context_limit),
            ).fetchall()
        rows.reverse()
        return RunStart.model_construct(
            thread=thread,
            assistant=assistant,
            appended=appended,
            context=[_message(r, thread_id) for r in rows],
        )

    async def abegin_run(
        self,
        thread_id: str,
        *,
        owner: str,
        ttl: float,
        messages: Sequence[NewMessage] = (),
        context_limit: int | None = None,
    ) -> RunStart | None:
        """Async twin of `begin_run`."""
        return await self._run(
            self.begin_run,
            thread_id,
            owner=owner,
            ttl=ttl,
            messages=messages,
            context_limit=context_limit,
        )

    def finish_run(
        self,
        thread_id: str,
        *,
        owner: str,
        reply: NewMessage,
        thread_patch: MetadataPatch,
    ) -> StoredMessage:
        """End a run in one transaction: reply, thread patch, lease released."""
        check_limits(reply.metadata, self.limits)
        with self._tx(write=True) as conn:
            thread_seq, current = self._thread_row(conn, thread_id)
            (stored,) = self._append(conn, thread_seq, thread_id, [reply])
            self._patch_thread(conn, thread_seq, current, thread_patch, self.limits)
            self._release(conn, thread_id, owner)
        return stored

    async def afinish_run(
        self,
        thread_id: str,
        *,
        owner: str,
        reply: NewMessage,
        thread_patch: MetadataPatch,
    ) -> StoredMessage:
        """Async twin of `finish_run`."""
        return await self._run(
            self.finish_run,
            thread_id,
            owner=owner,
            reply=reply,
            thread_patch=thread_patch,
        )
