"""`SQLiteStore`: the embedded default store, one SQLite file.

The schema (``threads``, ``messages`` clustered by ``(thread_seq, seq)``,
``thread_metadata`` keyed ``(key, value, thread_seq)``, ``run_leases``, ``runs``) and
its migrations are in ``langchain_retro.stores._sqlite_schema``; row decoding and the
listings' queries in ``langchain_retro.stores._sqlite_sql``. A run's rules (how it
starts, changes, lapses and is cancelled) are the pure functions of
``langchain_retro.stores._runs``; this module only reads and writes their rows.

The file runs in WAL mode with ``synchronous=NORMAL`` by default: a committed write
survives the application crashing; a power loss may drop the last few commits, never
corrupt the file. Pass ``synchronous="FULL"`` to survive power loss too.

A file that cannot be written (read-only, or in a read-only folder) opens read-only:
reads work and writes raise `StoreError` saying why.

Async methods run the same code without blocking the event loop, in one of two ways:

* **On the event loop, when nothing can make them wait** and they handle at most
  `LOOP_ROWS` rows (a message, a run's start and end, a page of a listing). With
  ``synchronous=NORMAL`` a commit writes to the WAL in the page cache and never
  syncs, so such a call waits only for a lock: the connection's, held by a call in
  the store's thread, or the file's write lock, held by another connection. The call
  is tried on the loop with both taken without waiting (SQLite's busy timeout set to
  0 for its first write transaction); if either is held, it runs in the store's
  thread instead, from the start. A run whose context would be longer learns so from
  the thread's row, before it writes, and moves the same way. WAL checkpoints, which
  sync, are not left to commits: every `CHECKPOINT_EVERY` writes one runs in the
  store's thread.
* **In the store's own worker thread** otherwise: larger calls (a whole thread's
  messages, deleting a thread, imports, a filtered listing of assistants), calls that
  met a lock, and every call with ``synchronous=FULL``, whose commits sync. One
  thread, as there is one connection: calls made side by side run back to back in
  it, instead of in several threads taking turns at the connection's lock (and the
  interpreter's).

Handing a call to a thread and back costs more than most calls themselves (about
0.3 ms of CPU against 0.1 ms for adding a message, under a server's load), which is
why the loop runs them itself when it can. Each method writes in one transaction; a
call on the loop that had committed a write and then met the file's write lock would
wait for it there, with SQLite's busy timeout, as any caller does.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import heapq
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, Literal, ParamSpec, TypeVar

from pydantic import ValidationError

from langchain_retro._ids import new_id
from langchain_retro._metadata import MetadataPatch, check_limits, dumps
from langchain_retro.errors import (
    AssistantInUseError,
    AssistantNotFoundError,
    CorruptDataError,
    MessageIdConflictError,
    MessageNotFoundError,
    RetroError,
    RetroValueError,
    RunNotFoundError,
    RunStateError,
    StoreClosedError,
    StoreError,
    ThreadNotFoundError,
)
from langchain_retro.stores import _sqlite_sql as sql_
from langchain_retro.stores._sqlite_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    open_database,
    rollback,
)
from langchain_retro.stores.base import (
    ACTIVE_RUN_STATUSES,
    ASSISTANT_FIELDS,
    THREAD_ASSISTANT_KEY,
    AssistantThreads,
    BaseStore,
    Lease,
    NewMessage,
    NewRun,
    Order,
    RefusedBusy,
    RunLeaseState,
    RunSaved,
    RunSetup,
    RunStart,
    RunUpdate,
    RunUsage,
    StoredAssistant,
    StoredMessage,
    StoredRun,
    StoredThread,
    ThreadCopy,
    ThreadQuery,
    answered_in_batch,
    busy_error,
    busy_refusal,
    cancel_requested,
    check_assistant_fields,
    check_copies,
    check_hwm_key,
    check_metadata,
    check_new_ids,
    has_reply,
    imported_run,
    in_scope,
    new_run_row,
    resumed_run,
    run_from_row,
    settle,
    unencodable_error,
    updated_run,
)

__all__ = ["DEFAULT_PATH", "PATH_ENV", "SCHEMA_VERSION", "SQLiteStore"]

DEFAULT_PATH = "langchain-retro.db"
"""The file `SQLiteStore` opens given no path and no ``LANGCHAIN_RETRO_DB``."""

PATH_ENV = "LANGCHAIN_RETRO_DB"
"""The environment variable naming the default database file."""

P = ParamSpec("P")
T = TypeVar("T")

_MIGRATIONS = MIGRATIONS
"""Forward migrations; entry N brings the schema from version N to N + 1."""

_ASSISTANT_COLUMNS = sql_.ASSISTANT_COLUMNS
_MESSAGE_COLUMNS = sql_.MESSAGE_COLUMNS
_INSERT_MESSAGE = (
    "INSERT INTO messages (thread_seq, seq, id, created_at, role, payload, "
    "metadata, run_id, assistant_id, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _now() -> int:
    return int(time.time())


LOOP_ROWS = 100
"""The most rows an async call reads or writes on the event loop (the Assistants
API's largest page); a call that may handle more runs in the store's thread."""

CHECKPOINT_EVERY = 200
"""Writes between two WAL checkpoints of a store whose async calls run on the loop
(a few pages each: SQLite's own default is every 1,000 pages)."""


class _Inline(enum.Enum):
    """Where a call on the event loop stands (`SQLiteStore._run`)."""

    OFF = enum.auto()
    """No call on the loop holds the connection."""
    UNWRITTEN = enum.auto()
    """One does, and has written nothing yet: a write may still go to the thread."""
    WRITTEN = enum.auto()
    """One does, and has committed a write: it finishes where it is."""


class _WouldWait(Exception):  # noqa: N818 - a signal, not an error
    """A call on the loop met a lock held elsewhere; it runs in the thread instead."""


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

    A file this process cannot write (or whose folder it cannot write, which WAL
    mode needs for its side files) opens read-only: `read_only` says why, reads
    work, and every write raises `StoreError` with nothing written. Files of an
    older schema are migrated on open; opening a current file writes nothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 30.0,
    ) -> None:
        """Open (and create or migrate) a database file.

        Opening a database that is already current writes nothing. A file that
        cannot be written, or whose folder cannot be written, opens read-only.

        Args:
            path: The database file; ``":memory:"`` for a private in-memory database.
                Defaults to ``$LANGCHAIN_RETRO_DB``, else ``langchain-retro.db`` in the
                working directory.
            synchronous: ``NORMAL`` (default) survives application crashes; ``FULL``
                also survives power loss, at the cost of an fsync per commit.
            busy_timeout: Seconds to wait for another process's write to finish.

        Raises:
            SchemaVersionError: If the file was written by a newer version.
            StoreError: If the file cannot be opened: the message says whether the
                path is a directory, its folder is missing or not writable, or what
                SQLite said.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise RetroValueError(
                f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}"
            )
        if path is None:
            path = os.environ.get(PATH_ENV, "").strip() or DEFAULT_PATH
        if not str(path).strip():
            raise RetroValueError(
                "SQLiteStore needs a file path, not an empty one (SQLite would open "
                "a throwaway database): pass a path, or ':memory:' for a private "
                "in-memory database."
            )
        self.path = str(path)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._worker: tuple[int, ThreadPoolExecutor] | None = None
        """The async methods' thread (started on first use), and its process."""
        self._worker_lock = threading.Lock()
        opened = open_database(
            self.path, synchronous=synchronous, busy_timeout=busy_timeout
        )
        self.read_only: str | None = opened.read_only
        """Why the store is read-only (writes raise `StoreError`), or ``None``."""
        self._conn = opened.conn
        self._busy_ms = int(busy_timeout * 1000)
        self._loop_calls = synchronous == "NORMAL"
        """Async calls are tried on the event loop first (module docstring)."""
        self._inline = _Inline.OFF
        """Where the call holding the connection's lock stands, if on the loop."""
        self._writes = 0
        """Writes committed since the last checkpoint."""
        if self._loop_calls and self.read_only is None:
            # Commits on the loop must not sync: `_written` checkpoints instead.
            self._conn.execute("PRAGMA wal_autocheckpoint = 0")

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # --- plumbing --------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction on the connection; store errors come out as `StoreError`."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreClosedError(f"{self!r} is closed; open a new store.")
            if write and self.read_only is not None:
                raise StoreError(
                    f"{self!r} is open read-only ({self.read_only}); nothing was "
                    "written. Make the file and its folder writable, then open the "
                    "store again."
                )
            try:
                if write and self._inline is _Inline.UNWRITTEN:
                    self._begin_without_waiting(conn)
                else:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    rollback(conn)
                    raise
                conn.execute("COMMIT")
                if write:
                    self._written()
            except RetroError:
                raise
            except UnicodeEncodeError as exc:
                rollback(conn)
                raise unencodable_error(exc) from exc
            except sqlite3.Error as exc:
                rollback(conn)
                raise StoreError(f"SQLite error on {self.path!r}: {exc}") from exc

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a sync method on the loop if nothing makes it wait, else in the thread.

        See the module's docstring. On the loop, the call holds the connection's
        lock from start to end, so no call of the store's thread interleaves.
        """
        if self._loop_calls and self._lock.acquire(blocking=False):
            try:
                if self._inline is _Inline.OFF:  # not a call nested in a sync one
                    self._inline = _Inline.UNWRITTEN
                    try:
                        return fn(*args, **kwargs)
                    except _WouldWait:
                        pass  # nothing was written: run it in the thread instead
                    finally:
                        self._inline = _Inline.OFF
            finally:
                self._lock.release()
        return await self._in_thread(fn, *args, **kwargs)

    async def _run_sized(
        self, rows: int | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`_run` for a call of at most ``rows`` rows, `_in_thread` for more or any."""
        if rows is not None and rows <= LOOP_ROWS:
            return await self._run(fn, *args, **kwargs)
        return await self._in_thread(fn, *args, **kwargs)

    async def _in_thread(
        self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a sync method in the store's worker thread, with this context."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor(), call)

    def _check_loop_rows(self, rows: int) -> None:
        """Send a call on the loop that would handle more than `LOOP_ROWS` rows away.

        Only a call that has written nothing yet: it runs again in the store's
        thread (`_WouldWait`); the transaction it is in rolls back.
        """
        if rows > LOOP_ROWS and self._inline is _Inline.UNWRITTEN:
            raise _WouldWait

    def _begin_without_waiting(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE`` for a call on the loop; `_WouldWait` if it would wait."""
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                raise _WouldWait from exc
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")

    def _written(self) -> None:
        """After a write's commit: count it, and checkpoint the WAL when it is due.

        Only with calls on the loop (whose connection does not checkpoint on
        commit): the checkpoint runs here in a thread, or is handed to the store's
        thread from the loop.
        """
        if self._inline is _Inline.UNWRITTEN:
            self._inline = _Inline.WRITTEN
        if not self._loop_calls:
            return
        self._writes += 1
        if self._writes < CHECKPOINT_EVERY:
            return
        self._writes = 0
        if self._inline is _Inline.OFF:
            self._checkpoint()
        else:
            self._executor().submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """A passive WAL checkpoint: copies what no reader needs, never waits."""
        with self._lock:
            if self._conn is not None:
                with suppress(sqlite3.Error):  # the next one tries again
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _executor(self) -> ThreadPoolExecutor:
        """The store's one worker thread; a new one in a forked child."""
        worker = self._worker
        if worker is None or worker[0] != os.getpid():
            with self._worker_lock:
                worker = self._worker
                if worker is None or worker[0] != os.getpid():
                    worker = (
                        os.getpid(),
                        ThreadPoolExecutor(1, thread_name_prefix="retro-sqlite"),
                    )
                    self._worker = worker
        return worker[1]

    def close(self) -> None:
        """Close the database connection; later calls raise `StoreClosedError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._worker_lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker[1].shutdown(wait=False)  # its thread ends once idle

    async def aclose(self) -> None:
        """Async twin of `close`."""
        await self._run(self.close)

    # --- lookups inside a transaction ------------------------------------------------

    @staticmethod
    def _thread_row(conn: sqlite3.Connection, thread_id: str) -> tuple[int, str, int]:
        """``(seq, metadata, next_seq)`` of a thread."""
        row = conn.execute(
            "SELECT seq, metadata, next_seq FROM threads WHERE id = ?", (thread_id,)
        ).fetchone()
        if row is None:
            raise ThreadNotFoundError(thread_id)
        return row[0], row[1], row[2]

    @staticmethod
    def _message_seq(conn: sqlite3.Connection, thread_seq: int, message_id: str) -> int:
        row = conn.execute(
            "SELECT seq FROM messages WHERE thread_seq = ? AND id = ?",
            (thread_seq, message_id),
        ).fetchone()
        if row is None:
            raise MessageNotFoundError(message_id, hint="(not in this thread)")
        return int(row[0])

    @staticmethod
    def _conflict(
        conn: sqlite3.Connection,
        thread_seq: int,
        thread_id: str,
        floor: int,
        messages: Sequence[NewMessage],
    ) -> MessageIdConflictError:
        """Name the caller id that hit the thread's unique key (in the batch's tx)."""
        ids = sql_.conflict_ids(messages)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            row = conn.execute(
                "SELECT id FROM messages WHERE thread_seq = ? AND seq < ? "  # noqa: S608
                f"AND id IN ({', '.join('?' * len(chunk))}) ORDER BY seq LIMIT 1",
                (thread_seq, floor, *chunk),
            ).fetchone()
            if row is not None:
                return MessageIdConflictError(thread_id, row[0])
        return MessageIdConflictError(thread_id, ids[0] if ids else "?")

    def _append(
        self,
        conn: sqlite3.Connection,
        thread_seq: int,
        thread_id: str,
        next_seq: int,
        messages: Sequence[NewMessage],
    ) -> list[StoredMessage]:
        """Insert a checked batch and move the thread's sequence past it."""
        stored = self._insert_messages(conn, thread_seq, thread_id, next_seq, messages)
        self._bump_thread(conn, thread_seq, next_seq, len(stored))
        return stored

    def _insert_messages(
        self,
        conn: sqlite3.Connection,
        thread_seq: int,
        thread_id: str,
        next_seq: int,
        messages: Sequence[NewMessage],
    ) -> list[StoredMessage]:
        """Insert a checked batch; a caller id already in the thread raises.

        The thread's unique key ``(thread_seq, id)`` finds a clash in the insert
        itself, so appends cost no extra statement; the transaction is rolled back.
        The caller moves the thread's sequence (`_bump_thread`).
        """
        created_at = _now()
        stored = [
            m.stored(new_id("msg") if m.id is None else m.id, thread_id, created_at)
            for m in messages
        ]
        try:
            conn.executemany(
                _INSERT_MESSAGE,
                [
                    (
                        thread_seq,
                        next_seq + i,
                        s.id,
                        s.created_at,
                        s.role,
                        s.payload,
                        dumps(s.metadata),
                        s.run_id,
                        s.assistant_id,
                        s.reply_to,
                    )
                    for i, s in enumerate(stored)
                ],
            )
        except sqlite3.IntegrityError as exc:
            if not sql_.is_id_conflict(exc):
                raise
            raise self._conflict(
                conn, thread_seq, thread_id, next_seq, messages
            ) from exc
        return stored

    @staticmethod
    def _bump_thread(
        conn: sqlite3.Connection,
        thread_seq: int,
        next_seq: int,
        added: int,
        *,
        usage: RunUsage | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Update the thread's row once: sequence, count, token totals, metadata.

        The sequence moves past ``added`` new messages from ``next_seq``; ``usage``
        is added to the totals; ``metadata``, if given, replaces the row's.
        """
        sets = "next_seq = ?, message_count = message_count + ?"
        params: list[Any] = [next_seq + added, added]
        if usage is not None:
            sets += (
                ", prompt_tokens = prompt_tokens + ?, "
                "completion_tokens = completion_tokens + ?, "
                "total_tokens = total_tokens + ?"
            )
            params += [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens]
        if metadata is not None:
            sets += ", metadata = ?"
            params.append(dumps(metadata))
        conn.execute(f"UPDATE threads SET {sets} WHERE seq = ?", (*params, thread_seq))  # noqa: S608

    @staticmethod
    def _take_lease(
        conn: sqlite3.Connection,
        thread_id: str,
        owner: str,
        ttl: float,
        now: float | None = None,
    ) -> bool:
        if now is None:
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
    def _write_thread_metadata(
        conn: sqlite3.Connection,
        thread_seq: int,
        old: Mapping[str, str],
        metadata: Mapping[str, str],
        *,
        row: bool = True,
    ) -> None:
        """Write a thread's new metadata: its row and the changed index entries.

        With ``row`` false the caller's own update of the row writes it.
        """
        if row:
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

    def _patch_thread(
        self,
        conn: sqlite3.Connection,
        thread_seq: int,
        thread_id: str,
        current: str,
        patch: MetadataPatch,
    ) -> dict[str, str]:
        old = sql_.load_metadata(current, f"Thread {thread_id!r}", object_id=thread_id)
        metadata = patch.apply(old, self.limits)
        self._write_thread_metadata(conn, thread_seq, old, metadata)
        return metadata

    # --- assistants ------------------------------------------------------------------

    def create_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Create an assistant from its native fields and its metadata."""
        check_metadata(metadata, self.limits, "Assistant")
        check_assistant_fields(fields)
        try:
            stored = StoredAssistant(
                id=new_id("asst"), created_at=_now(), metadata=dict(metadata), **fields
            )
        except ValidationError as exc:
            raise RetroValueError(
                f"Invalid assistant fields {dict(fields)!r}: {exc}. Nothing was "
                "written."
            ) from exc
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
        return sql_.assistant(row)

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
        check_assistant_fields(fields)
        with self._tx(write=True) as conn:
            current = self._get_assistant(conn, assistant_id)
            metadata = (
                patch.apply(current.metadata, self.limits)
                if patch
                else current.metadata
            )
            try:
                updated = StoredAssistant.model_validate(
                    {**current.model_dump(), **fields, "metadata": metadata}
                )
            except ValidationError as exc:
                raise RetroValueError(
                    f"Invalid fields for assistant {assistant_id!r}: {exc}. Nothing "
                    "was written."
                ) from exc
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
            raise RetroValueError(
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
        return await self._in_thread(
            self.delete_assistant, assistant_id, threads=threads
        )

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
            try:
                rows = conn.execute(sql, (*params, limit)).fetchall()
            except sqlite3.OperationalError as exc:
                # json_each met a metadata column that is not JSON: name its row.
                bad = conn.execute(
                    "SELECT id FROM assistants WHERE NOT json_valid(metadata) LIMIT 1"
                ).fetchone()
                if bad is None:
                    raise
                raise CorruptDataError(
                    f"Assistant {bad[0]!r} no longer rebuilds: its metadata column "
                    "is not JSON. Restore it to a JSON object of strings (e.g. "
                    "'{}'), or delete the assistant.",
                    object_id=bad[0],
                ) from exc
            return [sql_.assistant(r) for r in rows]

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
        # A filter reads every assistant's metadata until the page is full.
        rows = None if metadata or classes else limit
        return await self._run_sized(
            rows,
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
        check_metadata(metadata, self.limits, "Thread")
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

    def create_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Create many threads in one transaction, all or none, in the given order."""
        for metadata in metadatas:
            check_metadata(metadata, self.limits, "Thread")
        created_at = _now()
        made = [
            StoredThread(id=new_id("thread"), created_at=created_at, metadata=dict(m))
            for m in metadatas
        ]
        if not made:
            return []
        with self._tx(write=True) as conn:
            # AUTOINCREMENT never reuses a seq: start above the highest ever used.
            (base,) = conn.execute(
                "SELECT max(coalesce((SELECT seq FROM sqlite_sequence "
                "WHERE name = 'threads'), 0), coalesce((SELECT max(seq) "
                "FROM threads), 0))"
            ).fetchone()
            conn.executemany(
                "INSERT INTO threads (seq, id, created_at, metadata) "
                "VALUES (?, ?, ?, ?)",
                [
                    (base + 1 + i, t.id, t.created_at, dumps(t.metadata))
                    for i, t in enumerate(made)
                ],
            )
            conn.executemany(
                "INSERT INTO thread_metadata (key, value, thread_seq) VALUES (?, ?, ?)",
                [
                    (k, v, base + 1 + i)
                    for i, t in enumerate(made)
                    for k, v in t.metadata.items()
                ],
            )
        return made

    async def acreate_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Async twin of `create_threads`."""
        return await self._run_sized(len(metadatas), self.create_threads, metadatas)

    def get_thread(self, thread_id: str) -> StoredThread:
        """Read a thread; raises `ThreadNotFoundError`."""
        with self._tx(write=False) as conn:
            row = conn.execute(
                "SELECT id, created_at, metadata FROM threads WHERE id = ?",
                (thread_id,),
            ).fetchone()
        if row is None:
            raise ThreadNotFoundError(thread_id)
        return sql_.thread(row)

    async def aget_thread(self, thread_id: str) -> StoredThread:
        """Async twin of `get_thread`."""
        return await self._run(self.get_thread, thread_id)

    def update_thread(self, thread_id: str, patch: MetadataPatch) -> StoredThread:
        """Apply a metadata patch to a thread, in one transaction."""
        with self._tx(write=True) as conn:
            thread_seq, current, _ = self._thread_row(conn, thread_id)
            metadata = self._patch_thread(conn, thread_seq, thread_id, current, patch)
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
        conn.execute("DELETE FROM runs WHERE thread_seq = ?", (thread_seq,))
        conn.execute("DELETE FROM threads WHERE seq = ?", (thread_seq,))

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread with all its messages, runs and lease."""
        with self._tx(write=True) as conn:
            thread_seq, _, _ = self._thread_row(conn, thread_id)
            self._delete_thread(conn, thread_seq, thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async twin of `delete_thread`."""
        await self._in_thread(self.delete_thread, thread_id)

    def list_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """List threads matching a query, in the query's order.

        A filtered page is driven from ``thread_metadata``'s ``(key, value,
        thread_seq)`` key in thread order: it costs O(log N + page) whatever the
        filter's selectivity. With several filters, the one with the fewest entries
        (counted up to a small cap) drives and the others are probed by primary key.
        """
        desc = query.order == "desc"
        filters: list[list[tuple[str, str]]] = [
            [(key, value)] for key, value in query.metadata.items()
        ]
        if query.classes is not None:
            if not query.classes:
                return []
            filters.append([(sql_.CLASS_KEY, c) for c in dict.fromkeys(query.classes)])
        # A page before a cursor is the one nearest it: read towards it, then turn.
        backwards = query.before is not None
        read_desc = desc != backwards
        with self._tx(write=False) as conn:
            bounds: dict[str, int] = {}
            for cursor_id, newer in ((query.after, not desc), (query.before, desc)):
                if cursor_id is not None:
                    cursor_seq, _, _ = self._thread_row(conn, cursor_id)
                    bounds["gt" if newer else "lt"] = cursor_seq
            if filters:
                rows = self._filtered_rows(
                    conn, filters, bounds, read_desc, query.limit
                )
            else:
                where = ["seq > ?" if key == "gt" else "seq < ?" for key in bounds]
                sql = "SELECT seq, id, created_at, metadata FROM threads"
                if where:
                    sql += " WHERE " + " AND ".join(where)
                sql += f" ORDER BY seq {'DESC' if read_desc else 'ASC'} LIMIT ?"
                rows = conn.execute(sql, (*bounds.values(), query.limit)).fetchall()
        threads = [sql_.thread(r[1:]) for r in rows]
        return threads[::-1] if backwards else threads

    @staticmethod
    def _filtered_rows(
        conn: sqlite3.Connection,
        filters: list[list[tuple[str, str]]],
        bounds: Mapping[str, int],
        desc: bool,
        limit: int,
    ) -> list[Any]:
        if len(filters) > 1:
            # Drive from the smallest filter; counting stops at a cap, so the
            # estimate costs O(log N) whatever the sizes.
            def size(entries: list[tuple[str, str]]) -> int:
                return sum(
                    conn.execute(
                        "SELECT count(*) FROM (SELECT 1 FROM thread_metadata "
                        "WHERE key = ? AND value = ? LIMIT ?)",
                        (key, value, sql_.ESTIMATE_CAP),
                    ).fetchone()[0]
                    for key, value in entries
                )

            filters = sorted(filters, key=size)
        driver, probes = filters[0], filters[1:]
        pages = []
        for entry in driver:  # one value, or one per class: merged below
            sql, params = sql_.listing_sql([entry], probes, bounds, desc)
            pages.append(conn.execute(sql, (*params, limit)).fetchall())
        if len(pages) == 1:
            return pages[0]
        merged = heapq.merge(*pages, key=lambda r: -r[0] if desc else r[0])
        return list(merged)[:limit]

    async def alist_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """Async twin of `list_threads`."""
        return await self._run_sized(query.limit, self.list_threads, query)

    # --- messages --------------------------------------------------------------------

    def _check_batch(self, thread_id: str, messages: Sequence[NewMessage]) -> None:
        check_new_ids(thread_id, messages)
        for message in messages:
            check_limits(message.metadata, self.limits)

    def add_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
        hwm_key: str | None = None,
    ) -> list[StoredMessage]:
        """Append messages to a thread, all or none, in the given order.

        See `BaseStore.add_messages` for caller ids and ``hwm_key``.
        """
        self._check_batch(thread_id, messages)
        if hwm_key is not None:
            check_hwm_key(hwm_key, self.limits)
        with self._tx(write=True) as conn:
            thread_seq, current, next_seq = self._thread_row(conn, thread_id)
            return self._write_messages(
                conn,
                (thread_seq, current, next_seq),
                thread_id,
                messages,
                thread_patch=thread_patch,
                hwm_key=hwm_key,
            )

    def add_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        scope: Mapping[str, str] | None = None,
    ) -> list[StoredMessage]:
        """Append messages unless a run keeps the thread busy, in one transaction.

        See `BaseStore.add_messages_if_idle`. The write transaction holds SQLite's
        write lock from the check to the write, so no run starts in between.
        """
        self._check_batch(thread_id, messages)
        with self._tx(write=True) as conn:
            head = self._thread_row(conn, thread_id)
            if scope is not None:
                what = f"Thread {thread_id!r}"
                current = sql_.load_metadata(head[1], what, object_id=thread_id)
                if not in_scope(current, scope):
                    raise ThreadNotFoundError(thread_id)
            refusal = self._busy(conn, thread_id, head[0])
            if refusal is not None:
                raise busy_error(refusal)
            return self._write_messages(
                conn, head, thread_id, messages, thread_patch=None
            )

    async def aadd_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        scope: Mapping[str, str] | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `add_messages_if_idle`."""
        return await self._run_sized(
            len(messages), self.add_messages_if_idle, thread_id, messages, scope=scope
        )

    @staticmethod
    def _busy(
        conn: sqlite3.Connection, thread_id: str, thread_seq: int
    ) -> RefusedBusy | None:
        """Why the thread takes no message now (`busy_refusal`), read in ``conn``."""
        leased, run_id, status = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM run_leases "
            "WHERE thread_id = ? AND expires_at >= ?), r.id, r.status "
            "FROM (SELECT 1) LEFT JOIN (SELECT id, status FROM runs "
            "WHERE thread_seq = ? ORDER BY seq DESC LIMIT 1) AS r",
            (thread_id, time.time(), thread_seq),
        ).fetchone()
        return busy_refusal(
            thread_id, leased=bool(leased), run_id=run_id, status=status
        )

    def _write_messages(
        self,
        conn: sqlite3.Connection,
        head: tuple[int, str, int],
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None,
        hwm_key: str | None = None,
        usage: RunUsage | None = None,
    ) -> list[StoredMessage]:
        """`add_messages`'s writes, inside a transaction (`finish_run` makes them too).

        Args:
            conn: The connection, in a write transaction.
            head: The thread's ``(seq, metadata, next_seq)``, as `_thread_row` reads.
            thread_id: The thread.
            messages: The checked batch.
            thread_patch: A patch applied to the thread's metadata.
            hwm_key: See `BaseStore.add_messages`.
            usage: Tokens added to the thread's running totals.
        """
        thread_seq, current, next_seq = head
        stored = (
            self._insert_messages(conn, thread_seq, thread_id, next_seq, messages)
            if messages
            else []
        )
        target: str | None = None
        if hwm_key is not None:
            replies = has_reply(messages)
            target = answered_in_batch(messages, [s.id for s in stored])
            if replies and target is None:
                row = conn.execute(
                    "SELECT id FROM messages WHERE thread_seq = ? AND seq < ? "
                    "AND role != 'assistant' ORDER BY seq DESC LIMIT 1",
                    (thread_seq, next_seq),
                ).fetchone()
                target = None if row is None else row[0]
        metadata: dict[str, str] | None = None
        if thread_patch is not None or target is not None:
            what = f"Thread {thread_id!r}"
            old = sql_.load_metadata(current, what, object_id=thread_id)
            metadata = (
                old if thread_patch is None else thread_patch.apply(old, self.limits)
            )
            if target is not None and hwm_key is not None:
                metadata = {**metadata, hwm_key: target}
                check_limits(metadata, self.limits)
            self._write_thread_metadata(conn, thread_seq, old, metadata, row=False)
        if stored or usage is not None or metadata is not None:
            self._bump_thread(
                conn,
                thread_seq,
                next_seq,
                len(stored),
                usage=usage,
                metadata=metadata,
            )
        return stored

    async def aadd_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
        hwm_key: str | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `add_messages`."""
        return await self._run_sized(
            len(messages),
            self.add_messages,
            thread_id,
            messages,
            thread_patch=thread_patch,
            hwm_key=hwm_key,
        )

    def bulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Append messages to many threads in one transaction, all or none.

        Every batch is checked first; the rows go in with one ``executemany`` and no
        row objects are built.
        """
        for thread_id, messages in batches:
            self._check_batch(thread_id, messages)
        sql_.check_bulk_ids(batches)
        if not any(messages for _, messages in batches):
            with self._tx(write=False) as conn:
                for thread_id, _ in batches:
                    self._thread_row(conn, thread_id)
            return 0
        now = _now()
        with self._tx(write=True) as conn:
            heads: dict[str, list[int]] = {}  # thread id -> [seq, first, next]
            for thread_id, _ in batches:
                if thread_id not in heads:
                    seq, _, next_seq = self._thread_row(conn, thread_id)
                    heads[thread_id] = [seq, next_seq, next_seq]
            rows = sql_.bulk_rows(batches, heads, now)
            try:
                conn.executemany(_INSERT_MESSAGE, rows)
            except sqlite3.IntegrityError as exc:
                if not sql_.is_id_conflict(exc):
                    raise
                for thread_id, messages in batches:
                    seq, first, _ = heads[thread_id]
                    error = self._conflict(conn, seq, thread_id, first, messages)
                    if error.message_id != "?" and any(
                        m.id == error.message_id for m in messages
                    ):
                        raise error from exc
                raise self._conflict(  # pragma: no cover - named above
                    conn, heads[batches[0][0]][0], batches[0][0], 0, []
                ) from exc
            conn.executemany(
                "UPDATE threads SET next_seq = ?, message_count = message_count + ? "
                "WHERE seq = ?",
                [(nxt, nxt - first, seq) for seq, first, nxt in heads.values()],
            )
        return len(rows)

    async def abulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Async twin of `bulk_add_messages`."""
        rows = sum(len(batch) for _, batch in batches)
        return await self._run_sized(rows, self.bulk_add_messages, batches)

    def get_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Read a message of a thread; raises `MessageNotFoundError`."""
        with self._tx(write=False) as conn:
            thread_seq, _, _ = self._thread_row(conn, thread_id)
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m "  # noqa: S608
                "WHERE m.thread_seq = ? AND m.id = ?",
                (thread_seq, message_id),
            ).fetchone()
        if row is None:
            raise MessageNotFoundError(message_id, hint=f"(in thread {thread_id!r})")
        return sql_.message(row, thread_id)

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
        return [sql_.message(row, thread_id) for row in rows]

    def list_message_payloads(
        self, thread_id: str, *, order: Order = "asc", limit: int | None = None
    ) -> list[tuple[str, str]]:
        """(id, payload) of a thread's messages, without building row objects."""
        return self._message_rows(
            thread_id, None, None, order, limit, columns="m.id, m.payload"
        )

    async def alist_message_payloads(
        self, thread_id: str, *, order: Order = "asc", limit: int | None = None
    ) -> list[tuple[str, str]]:
        """Async twin of `list_message_payloads`."""
        return await self._run_sized(
            limit, self.list_message_payloads, thread_id, order=order, limit=limit
        )

    def _message_rows(
        self,
        thread_id: str,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int | None,
        *,
        columns: str = _MESSAGE_COLUMNS,
    ) -> list[Any]:
        if limit is not None and limit < 0:
            raise RetroValueError(f"limit must be >= 0, not {limit}")
        sql = f"SELECT {columns} FROM messages m WHERE m.thread_seq = ?"  # noqa: S608
        with self._tx(write=False) as conn:
            thread_seq, _, _ = self._thread_row(conn, thread_id)
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
        return await self._run_sized(
            limit,
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
            thread_seq, _, _ = self._thread_row(conn, thread_id)
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m "  # noqa: S608
                "WHERE m.thread_seq = ? AND m.id = ?",
                (thread_seq, message_id),
            ).fetchone()
            if row is None:
                raise MessageNotFoundError(
                    message_id, hint=f"(in thread {thread_id!r})"
                )
            current = sql_.message(row, thread_id)
            metadata = patch.apply(current.metadata, self.limits)
            conn.execute(
                "UPDATE messages SET metadata = ? WHERE thread_seq = ? AND id = ?",
                (dumps(metadata), thread_seq, message_id),
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
            thread_seq, _, _ = self._thread_row(conn, thread_id)
            deleted = conn.execute(
                "DELETE FROM messages WHERE thread_seq = ? AND id = ?",
                (thread_seq, message_id),
            ).rowcount
            if deleted == 0:
                raise MessageNotFoundError(
                    message_id, hint=f"(in thread {thread_id!r})"
                )
            conn.execute(
                "UPDATE threads SET message_count = message_count - 1 WHERE seq = ?",
                (thread_seq,),
            )

    async def adelete_message(self, thread_id: str, message_id: str) -> None:
        """Async twin of `delete_message`."""
        await self._run(self.delete_message, thread_id, message_id)

    def clear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Delete all of a thread's messages (the thread stays); returns how many."""
        with self._tx(write=True) as conn:
            thread_seq, current, _ = self._thread_row(conn, thread_id)
            metadata: dict[str, str] | None = None
            if thread_patch is not None:  # checked before anything is deleted
                old = sql_.load_metadata(
                    current, f"Thread {thread_id!r}", object_id=thread_id
                )
                metadata = thread_patch.apply(old, self.limits)
            count = conn.execute(
                "DELETE FROM messages WHERE thread_seq = ?", (thread_seq,)
            ).rowcount
            conn.execute(
                "UPDATE threads SET message_count = 0 WHERE seq = ?", (thread_seq,)
            )
            if metadata is not None:
                self._write_thread_metadata(conn, thread_seq, old, metadata)
        return int(count)

    async def aclear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Async twin of `clear_messages`."""
        return await self._in_thread(
            self.clear_messages, thread_id, thread_patch=thread_patch
        )

    def count_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Count a thread's messages (one row read), or those after ``after``."""
        with self._tx(write=False) as conn:
            if after is None:
                row = conn.execute(
                    "SELECT message_count FROM threads WHERE id = ?", (thread_id,)
                ).fetchone()
                if row is None:
                    raise ThreadNotFoundError(thread_id)
                return int(row[0])
            thread_seq, _, _ = self._thread_row(conn, thread_id)
            floor = self._message_seq(conn, thread_seq, after)
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE thread_seq = ? AND seq > ?",
                (thread_seq, floor),
            ).fetchone()
        return int(count)

    async def acount_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Async twin of `count_messages`."""
        return await self._in_thread(self.count_messages, thread_id, after=after)

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

    def get_lease(self, thread_id: str) -> Lease | None:
        """The thread's run lease if one is held and not expired, else ``None``.

        An unknown thread holds no lease: ``None``, as on PostgreSQL.
        """
        with self._tx(write=False) as conn:
            row = conn.execute(
                "SELECT owner, expires_at FROM run_leases "
                "WHERE thread_id = ? AND expires_at >= ?",
                (thread_id, time.time()),
            ).fetchone()
        if row is None:
            return None
        return Lease(thread_id=thread_id, owner=row[0], expires_at=row[1])

    async def aget_lease(self, thread_id: str) -> Lease | None:
        """Async twin of `get_lease`."""
        return await self._run(self.get_lease, thread_id)

    # --- runs ------------------------------------------------------------------------

    def begin_run(
        self,
        thread_id: str,
        *,
        owner: str,
        ttl: float,
        run: NewRun | None = None,
        messages: Sequence[NewMessage] = (),
        context_limit: int | None = None,
        resume: bool = False,
    ) -> RunStart | None:
        """Start a run in one transaction: lease, run record, input, context.

        See `BaseStore.begin_run`. In the usual case (no other run of the thread
        left active) that is seven statements: the thread (with a probe of the
        runs left active), the lease, the assistant, the run, the input, the
        thread's row and the context.

        Raises:
            ThreadNotFoundError: If the thread does not exist.
            RetroValueError: If the new run's id is already a run's; nothing is
                written and the lease is not taken.
        """
        self._check_batch(thread_id, messages)
        new = NewRun(id=owner) if run is None else run
        with self._tx(write=True) as conn:
            row = conn.execute(
                "SELECT seq, next_seq, id, created_at, metadata, "  # noqa: S608
                "EXISTS (SELECT 1 FROM runs WHERE thread_seq = threads.seq AND "
                f"{sql_.ACTIVE_RUN} AND lease_owner IS NOT ?) "
                "FROM threads WHERE id = ?",
                (owner, thread_id),
            ).fetchone()
            if row is None:
                raise ThreadNotFoundError(thread_id)
            thread = sql_.thread(row[2:5])
            context_rows = row[1] - 1 + len(messages)  # at most
            if context_limit is not None:
                context_rows = min(context_rows, context_limit)
            self._check_loop_rows(len(messages) + context_rows)
            now = time.time()
            if not self._take_lease(conn, thread_id, owner, ttl, now):
                return None
            thread_seq, next_seq = row[0], row[1]
            if row[5]:
                self._lapse_others(conn, thread_seq, thread_id, owner, now)
            assistant = None
            assistant_id = thread.metadata.get(THREAD_ASSISTANT_KEY)
            if assistant_id is not None:
                found = conn.execute(
                    f"SELECT {_ASSISTANT_COLUMNS} FROM assistants WHERE id = ?",  # noqa: S608
                    (assistant_id,),
                ).fetchone()
                assistant = None if found is None else sql_.assistant(found)
            waiting = self._waiting_run(conn, thread_seq, thread_id) if resume else None
            if waiting is not None:
                seq, stored = waiting
                started = resumed_run(stored, int(now))
                conn.execute(
                    "UPDATE runs SET status = ?, lease_owner = ?, body = ? "
                    "WHERE seq = ?",
                    (started.status, owner, sql_.stored_body(started), seq),
                )
                messages = [
                    m
                    if m.run_id is not None
                    else m.model_copy(update={"run_id": stored.id})
                    for m in messages
                ]
            else:
                started = new_run_row(new, thread_id, thread.metadata, int(now))
                self._insert_run(conn, thread_seq, started, owner)
            appended = (
                self._append(conn, thread_seq, thread_id, next_seq, messages)
                if messages
                else []
            )
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m "  # noqa: S608
                "WHERE m.thread_seq = ? ORDER BY m.seq DESC LIMIT ?",
                (thread_seq, -1 if context_limit is None else context_limit),
            ).fetchall()
            # Rebuilt inside the transaction: a row that no longer rebuilds rolls
            # the lease and the input back.
            context = [sql_.message_row(r, thread_id) for r in reversed(rows)]
        return RunStart.model_construct(
            thread=thread,
            assistant=assistant,
            appended=appended,
            context=context,
            run=settle(started, held=True, lease_expires_at=now + ttl, now=now),
            resumed=waiting is not None,
        )

    async def abegin_run(
        self,
        thread_id: str,
        *,
        owner: str,
        ttl: float,
        run: NewRun | None = None,
        messages: Sequence[NewMessage] = (),
        context_limit: int | None = None,
        resume: bool = False,
    ) -> RunStart | None:
        """Async twin of `begin_run`."""
        return await self._run(
            self.begin_run,
            thread_id,
            owner=owner,
            ttl=ttl,
            run=run,
            messages=messages,
            context_limit=context_limit,
            resume=resume,
        )

    @staticmethod
    def _lapse_others(
        conn: sqlite3.Connection,
        thread_seq: int,
        thread_id: str,
        owner: str,
        now: float,
    ) -> None:
        """Write the lapsed status of the thread's runs that lost the lease to us."""
        rows = conn.execute(
            "SELECT seq, id, status, created_at, body FROM runs "  # noqa: S608
            f"WHERE thread_seq = ? AND {sql_.ACTIVE_RUN} AND lease_owner IS NOT ?",
            (thread_seq, owner),
        ).fetchall()
        lapsed = [
            (
                row[0],
                settle(
                    run_from_row(row[1], thread_id, *row[2:]),
                    held=False,
                    lease_expires_at=None,
                    now=now,
                ),
            )
            for row in rows
        ]
        conn.executemany(
            "UPDATE runs SET status = ?, body = ? WHERE seq = ?",
            [(r.status, sql_.stored_body(r), seq) for seq, r in lapsed],
        )

    @staticmethod
    def _waiting_run(
        conn: sqlite3.Connection, thread_seq: int, thread_id: str
    ) -> tuple[int, StoredRun] | None:
        """The thread's newest run if it waits for tool results, with its seq."""
        row = conn.execute(
            "SELECT seq, id, status, created_at, body FROM runs "
            "WHERE thread_seq = ? ORDER BY seq DESC LIMIT 1",
            (thread_seq,),
        ).fetchone()
        if row is None or row[2] != "requires_action":
            return None
        return row[0], run_from_row(row[1], thread_id, *row[2:])

    @staticmethod
    def _insert_run(
        conn: sqlite3.Connection, thread_seq: int, run: StoredRun, owner: str
    ) -> None:
        try:
            conn.execute(
                "INSERT INTO runs (thread_seq, id, status, created_at, lease_owner, "
                "body) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    thread_seq,
                    run.id,
                    run.status,
                    run.created_at,
                    owner,
                    sql_.stored_body(run),
                ),
            )
        except sqlite3.IntegrityError as exc:
            if not sql_.is_run_id_conflict(exc):
                raise
            raise RetroValueError(
                f"A run with id {run.id!r} already exists in this store, so a new run "
                f"on thread {run.thread_id!r} cannot take it; nothing was written and "
                "the thread's lease was not taken. Run ids are unique across the "
                "store: give the new run an unused id (without a NewRun, the run "
                "takes the owner's id, so use a new owner per attempt)."
            ) from exc

    def finish_run(
        self,
        thread_id: str,
        *,
        owner: str,
        run_id: str,
        update: RunUpdate,
        messages: Sequence[NewMessage] = (),
        thread_patch: MetadataPatch | None = None,
    ) -> RunSaved:
        """Write a run's step or end in one transaction; see `BaseStore.finish_run`.

        A run already ``cancelled`` (a cancel that came while it ran, settled when
        another run took the thread over) is treated as a ``cancelling`` one: nothing
        is written but the lease given back.

        Raises:
            ThreadNotFoundError: If the thread does not exist.
            RunNotFoundError: If the run is not on the thread; nothing is written.
        """
        self._check_batch(thread_id, messages)
        with self._tx(write=True) as conn:
            row = conn.execute(
                "SELECT t.seq, t.metadata, t.next_seq, "  # noqa: S608
                f"{sql_.RUN_COLUMNS}, r.seq, l.owner, l.expires_at FROM threads t "
                "LEFT JOIN runs r ON r.thread_seq = t.seq AND r.id = ? "
                "LEFT JOIN run_leases l ON l.thread_id = t.id WHERE t.id = ?",
                (run_id, thread_id),
            ).fetchone()
            if row is None:
                raise ThreadNotFoundError(thread_id)
            head, columns, (run_seq, *lease) = row[:3], row[3:8], row[8:]
            if columns[0] is None:
                raise RunNotFoundError(run_id, hint=f"(not on thread {thread_id!r})")
            now = time.time()
            stored = run_from_row(run_id, thread_id, *columns[1:4])
            saved: list[StoredMessage] = []
            if stored.status == "cancelled":
                ended = stored
            elif stored.status == "cancelling":
                ended = updated_run(stored, RunUpdate(status="cancelled"), int(now))
                self._write_run(conn, run_seq, ended)
            else:
                saved = self._write_messages(
                    conn,
                    head,
                    thread_id,
                    messages,
                    thread_patch=thread_patch,
                    usage=update.usage,
                )
                ended = updated_run(stored, update, int(now))
                self._write_run(conn, run_seq, ended)
            if lease[0] == owner and ended.status not in ACTIVE_RUN_STATUSES:
                self._release(conn, thread_id, owner)
        held = columns[4] is not None and lease[0] == columns[4]
        run = settle(ended, held=held, lease_expires_at=lease[1], now=now)
        return RunSaved(messages=saved, run=run)

    async def afinish_run(
        self,
        thread_id: str,
        *,
        owner: str,
        run_id: str,
        update: RunUpdate,
        messages: Sequence[NewMessage] = (),
        thread_patch: MetadataPatch | None = None,
    ) -> RunSaved:
        """Async twin of `finish_run`."""
        return await self._run_sized(
            len(messages),
            self.finish_run,
            thread_id,
            owner=owner,
            run_id=run_id,
            update=update,
            messages=messages,
            thread_patch=thread_patch,
        )

    @staticmethod
    def _write_run(conn: sqlite3.Connection, run_seq: int, run: StoredRun) -> None:
        conn.execute(
            "UPDATE runs SET status = ?, body = ? WHERE seq = ?",
            (run.status, sql_.stored_body(run), run_seq),
        )

    def renew_run(self, thread_id: str, *, owner: str, ttl: float) -> RunLeaseState:
        """Renew a running run's lease and say if it may go on; see `BaseStore`.

        The lease is renewed while ``owner`` still holds it, even past its expiry
        (nobody took it over). A run whose lapse was already written as
        ``expired`` (a cancel read it while its lease had lapsed) has ended: its
        lease is given back and the answer is ``lost``.
        """
        with self._tx(write=True) as conn:
            renewed = conn.execute(
                "UPDATE run_leases SET expires_at = ? "
                "WHERE thread_id = ? AND owner = ?",
                (time.time() + ttl, thread_id, owner),
            ).rowcount
            if not renewed:
                return "lost"
            row = conn.execute(
                "SELECT r.status FROM threads t JOIN runs r ON r.thread_seq = t.seq "
                "WHERE t.id = ? AND r.lease_owner = ? ORDER BY r.seq DESC LIMIT 1",
                (thread_id, owner),
            ).fetchone()
            status = None if row is None else row[0]
            if status == "expired":
                self._release(conn, thread_id, owner)
                return "lost"
        return "cancelling" if status in ("cancelling", "cancelled") else "held"

    async def arenew_run(
        self, thread_id: str, *, owner: str, ttl: float
    ) -> RunLeaseState:
        """Async twin of `renew_run`."""
        return await self._run(self.renew_run, thread_id, owner=owner, ttl=ttl)

    @staticmethod
    def _read_run(
        conn: sqlite3.Connection, thread_id: str, run_id: str
    ) -> tuple[Any, ...]:
        """``(thread seq, lease owner, lease expiry, *RUN_COLUMNS, run seq)``."""
        row = conn.execute(sql_.RUN_READ, (run_id, thread_id)).fetchone()
        if row is None:
            raise ThreadNotFoundError(thread_id)
        if row[3] is None:
            raise RunNotFoundError(run_id, hint=f"(not on thread {thread_id!r})")
        return tuple(row)

    def get_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Read a run of a thread, settled; raises `RunNotFoundError`.

        Raises `ThreadNotFoundError` for an unknown thread.
        """
        with self._tx(write=False) as conn:
            row = self._read_run(conn, thread_id, run_id)
        return sql_.run(row[3:8], thread_id, row[1:3], time.time())

    async def aget_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `get_run`."""
        return await self._run(self.get_run, thread_id, run_id)

    def list_runs(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredRun]:
        """List a thread's runs by creation, newest first by default, settled.

        Cursors work as for `list_messages`: ``after`` / ``before`` bound the runs in
        creation order, and a limited ascending page before a cursor is the one
        nearest it. Reads by ``(thread_seq, seq)``: O(limit) whatever the count.
        """
        if limit < 0:
            raise RetroValueError(f"limit must be >= 0, not {limit}")
        with self._tx(write=False) as conn:
            head = conn.execute(
                "SELECT t.seq, l.owner, l.expires_at FROM threads t "
                "LEFT JOIN run_leases l ON l.thread_id = t.id WHERE t.id = ?",
                (thread_id,),
            ).fetchone()
            if head is None:
                raise ThreadNotFoundError(thread_id)
            bounds: dict[str, int] = {}
            for key, cursor in (("gt", after), ("lt", before)):
                if cursor is not None:
                    found = conn.execute(
                        "SELECT seq FROM runs WHERE id = ? AND thread_seq = ?",
                        (cursor, head[0]),
                    ).fetchone()
                    if found is None:
                        raise RunNotFoundError(
                            cursor, hint=f"(used as a cursor on thread {thread_id!r})"
                        )
                    bounds[key] = found[0]
            backwards = before is not None and order == "asc"
            rows = conn.execute(
                sql_.run_listing_sql(bounds, desc=order == "desc" or backwards),
                (head[0], *bounds.values(), limit),
            ).fetchall()
        if backwards:
            rows.reverse()
        now = time.time()
        return [sql_.run(row, thread_id, head[1:], now) for row in rows]

    async def alist_runs(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredRun]:
        """Async twin of `list_runs`."""
        return await self._run_sized(
            limit,
            self.list_runs,
            thread_id,
            after=after,
            before=before,
            order=order,
            limit=limit,
        )

    async def aget_run_setup(self, thread_id: str, assistant_id: str) -> RunSetup:
        """Async twin of `get_run_setup`: its three reads in one call, back to back."""
        return await self._run(self.get_run_setup, thread_id, assistant_id)

    def cancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Ask a run to stop, in one transaction; see `BaseStore.cancel_run`.

        A run that lapsed is settled first, and its lapsed status written even when
        the cancel is then refused with `RunStateError`.
        """
        refused: RunStateError | None = None
        with self._tx(write=True) as conn:
            row = self._read_run(conn, thread_id, run_id)
            now = time.time()
            settled = sql_.run(row[3:8], thread_id, row[1:3], now)
            try:
                cancelled = cancel_requested(settled, int(now))
            except RunStateError as exc:
                refused, cancelled = exc, settled
            if cancelled.status != row[4]:
                self._write_run(conn, row[8], cancelled)
        if refused is not None:
            raise refused
        return cancelled

    async def acancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `cancel_run`."""
        return await self._run(self.cancel_run, thread_id, run_id)

    def update_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Replace a run's metadata, in one transaction; see `BaseStore`."""
        checked = check_metadata(metadata, self.limits, "Run")
        with self._tx(write=True) as conn:
            row = self._read_run(conn, thread_id, run_id)
            settled = sql_.run(row[3:8], thread_id, row[1:3], time.time())
            updated = settled.model_copy(update={"metadata": checked})
            self._write_run(conn, row[8], updated)
        return updated

    async def aupdate_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Async twin of `update_run_metadata`."""
        return await self._run(self.update_run_metadata, thread_id, run_id, metadata)

    def list_run_messages(self, thread_id: str, run_id: str) -> list[StoredMessage]:
        """The messages a run wrote, in thread order, read by the run's index.

        An id no message carries gives ``[]``; an unknown thread raises
        `ThreadNotFoundError`.
        """
        with self._tx(write=False) as conn:
            thread_seq, _, _ = self._thread_row(conn, thread_id)
            # Without statistics SQLite would rather read the whole thread in order
            # by its primary key than sort a run's few rows: name the index.
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m "  # noqa: S608
                "INDEXED BY messages_by_run "
                "WHERE m.thread_seq = ? AND m.run_id = ? ORDER BY m.seq",
                (thread_seq, run_id),
            ).fetchall()
        return [sql_.message(row, thread_id) for row in rows]

    async def alist_run_messages(
        self, thread_id: str, run_id: str
    ) -> list[StoredMessage]:
        """Async twin of `list_run_messages`."""
        return await self._run(self.list_run_messages, thread_id, run_id)

    def get_thread_usage(self, thread_id: str) -> RunUsage:
        """The tokens of all the thread's runs: one row read."""
        with self._tx(write=False) as conn:
            row = conn.execute(
                "SELECT prompt_tokens, completion_tokens, total_tokens FROM threads "
                "WHERE id = ?",
                (thread_id,),
            ).fetchone()
        if row is None:
            raise ThreadNotFoundError(thread_id)
        return RunUsage(
            prompt_tokens=row[0], completion_tokens=row[1], total_tokens=row[2]
        )

    async def aget_thread_usage(self, thread_id: str) -> RunUsage:
        """Async twin of `get_thread_usage`."""
        return await self._in_thread(self.get_thread_usage, thread_id)

    # --- copies that keep ids (migrate, import) --------------------------------------

    keeps_ids = True

    @staticmethod
    def _absent(conn: sqlite3.Connection, table: str, ids: Sequence[str]) -> set[str]:
        """The ids of ``ids`` that ``table`` does not hold."""
        present: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            present.update(
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM {table} "  # noqa: S608 - a fixed table name
                    f"WHERE id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
            )
        return set(ids) - present

    def import_assistants(self, assistants: Sequence[StoredAssistant]) -> list[str]:
        """Write assistants as they are, skipping ids present; see `BaseStore`."""
        check_copies(assistants, self.limits, "Assistant")
        if not assistants:
            return []
        with self._tx(write=True) as conn:
            absent = self._absent(conn, "assistants", [a.id for a in assistants])
            new = [a for a in assistants if a.id in absent]
            conn.executemany(
                f"INSERT INTO assistants ({_ASSISTANT_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        a.id,
                        a.created_at,
                        dumps(a.metadata),
                        *(getattr(a, name) for name in ASSISTANT_FIELDS),
                    )
                    for a in new
                ],
            )
        return [a.id for a in new]

    async def aimport_assistants(
        self, assistants: Sequence[StoredAssistant]
    ) -> list[str]:
        """Async twin of `import_assistants`."""
        return await self._in_thread(self.import_assistants, assistants)

    def import_threads(self, threads: Sequence[ThreadCopy]) -> list[str]:
        """Write threads as they are, skipping ids present; see `BaseStore`."""
        check_copies(threads, self.limits, "Thread")
        if not threads:
            return []
        with self._tx(write=True) as conn:
            absent = self._absent(conn, "threads", [t.id for t in threads])
            new = [t for t in threads if t.id in absent]
            for thread in new:
                cursor = conn.execute(
                    "INSERT INTO threads (id, created_at, metadata, prompt_tokens, "
                    "completion_tokens, total_tokens) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        thread.id,
                        thread.created_at,
                        dumps(thread.metadata),
                        thread.usage.prompt_tokens,
                        thread.usage.completion_tokens,
                        thread.usage.total_tokens,
                    ),
                )
                conn.executemany(
                    "INSERT INTO thread_metadata (key, value, thread_seq) "
                    "VALUES (?, ?, ?)",
                    [(k, v, cursor.lastrowid) for k, v in thread.metadata.items()],
                )
        return [t.id for t in new]

    async def aimport_threads(self, threads: Sequence[ThreadCopy]) -> list[str]:
        """Async twin of `import_threads`."""
        return await self._in_thread(self.import_threads, threads)

    def import_runs(self, runs: Sequence[StoredRun]) -> list[str]:
        """Write run records as they are, skipping ids present; see `BaseStore`."""
        check_copies(runs, self.limits, "Run")
        if not runs:
            return []
        now = time.time()
        with self._tx(write=True) as conn:
            seqs: dict[str, int] = {}
            for run in runs:
                if run.thread_id not in seqs:
                    seqs[run.thread_id] = self._thread_row(conn, run.thread_id)[0]
            absent = self._absent(conn, "runs", [r.id for r in runs])
            new = [imported_run(r, now) for r in runs if r.id in absent]
            conn.executemany(
                "INSERT INTO runs (thread_seq, id, status, created_at, lease_owner, "
                "body) VALUES (?, ?, ?, ?, NULL, ?)",
                [
                    (
                        seqs[r.thread_id],
                        r.id,
                        r.status,
                        r.created_at,
                        sql_.stored_body(r),
                    )
                    for r in new
                ],
            )
        return [r.id for r in new]

    async def aimport_runs(self, runs: Sequence[StoredRun]) -> list[str]:
        """Async twin of `import_runs`."""
        return await self._in_thread(self.import_runs, runs)
