"""`SQLiteStore`'s pure parts: row decoding, the thread listing's and the runs' queries.

Nothing here does I/O; `langchain_retro.stores.sqlite` runs what these build.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_retro._ids import new_id
from langchain_retro._metadata import dumps
from langchain_retro.errors import CorruptDataError, MessageIdConflictError
from langchain_retro.stores.base import (
    ASSISTANT_FIELDS,
    MessageRow,
    NewMessage,
    StoredAssistant,
    StoredMessage,
    StoredRun,
    StoredThread,
    run_body,
    run_from_row,
    settle,
)

__all__ = [
    "ACTIVE_RUN",
    "ASSISTANT_COLUMNS",
    "CLASS_KEY",
    "ESTIMATE_CAP",
    "MESSAGE_COLUMNS",
    "RUN_COLUMNS",
    "RUN_READ",
    "assistant",
    "bulk_rows",
    "check_bulk_ids",
    "conflict_ids",
    "is_id_conflict",
    "is_run_id_conflict",
    "listing_sql",
    "load_metadata",
    "message",
    "message_row",
    "run",
    "run_listing_sql",
    "stored_body",
    "thread",
]

ASSISTANT_COLUMNS = "id, created_at, metadata, " + ", ".join(ASSISTANT_FIELDS)
MESSAGE_COLUMNS = (
    "m.id, m.created_at, m.metadata, m.role, m.payload, "
    "m.run_id, m.assistant_id, m.reply_to"
)
RUN_COLUMNS = "r.id, r.status, r.created_at, r.body, r.lease_owner"
"""A run's columns, as `run` decodes them."""

ACTIVE_RUN = "status IN ('queued', 'in_progress', 'cancelling')"
"""The runs that may hold their thread's lease: the ``runs_active`` partial index's
condition, written the same way so that SQLite uses that index."""

RUN_READ = (
    "SELECT t.seq, l.owner, l.expires_at, "  # noqa: S608 - constant columns
    f"{RUN_COLUMNS}, r.seq FROM threads t "
    "LEFT JOIN runs r ON r.thread_seq = t.seq AND r.id = ? "
    "LEFT JOIN run_leases l ON l.thread_id = t.id WHERE t.id = ?"
)
"""One run of a thread with the thread's lease, from ``(run_id, thread_id)``: no row
for an unknown thread, a row of ``NULL`` run columns for an unknown run."""

CLASS_KEY = "retro_class"
"""The metadata key holding a record's class marker."""

ESTIMATE_CAP = 256
"""How many index entries a filter's size estimate counts at most."""

_CORRUPT_HINT = (
    "The row was changed outside langchain-retro: restore its metadata column to a "
    "JSON object of strings (e.g. '{}'), or delete the object."
)


def load_metadata(text: object, what: str, **ids: Any) -> dict[str, str]:
    """Decode a metadata column, which must be a JSON object of strings.

    Args:
        text: The column's value.
        what: The object, for the error (``"Thread 'thread_...'"``).
        **ids: ``object_id`` and, for a message, ``thread_id`` of the error.

    Raises:
        CorruptDataError: Naming the object, if the column does not decode.
    """
    try:
        value = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise CorruptDataError(
            f"{what} no longer rebuilds: its metadata column is not JSON. "
            + _CORRUPT_HINT,
            **ids,
        ) from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise CorruptDataError(
            f"{what} no longer rebuilds: its metadata column is not a JSON object "
            "of strings. " + _CORRUPT_HINT,
            **ids,
        )
    return value


def _corrupt(what: str, exc: Exception, **ids: Any) -> CorruptDataError:
    error = CorruptDataError(
        f"{what} no longer rebuilds from its row ({type(exc).__name__}). "
        "The row was changed outside langchain-retro: repair or delete it.",
        **ids,
    )
    error.__cause__ = exc
    return error


def assistant(row: Sequence[Any]) -> StoredAssistant:
    """Rebuild an assistant from ``ASSISTANT_COLUMNS``."""
    what = f"Assistant {row[0]!r}"
    metadata = load_metadata(row[2], what, object_id=row[0])
    try:
        return StoredAssistant(
            id=row[0],
            created_at=row[1],
            metadata=metadata,
            **{name: row[i] for i, name in enumerate(ASSISTANT_FIELDS, start=3)},
        )
    except ValueError as exc:
        raise _corrupt(what, exc, object_id=row[0]) from exc


def thread(row: Sequence[Any]) -> StoredThread:
    """Rebuild a thread from ``(id, created_at, metadata)``."""
    what = f"Thread {row[0]!r}"
    metadata = load_metadata(row[2], what, object_id=row[0])
    try:
        return StoredThread(id=row[0], created_at=row[1], metadata=metadata)
    except ValueError as exc:
        raise _corrupt(what, exc, object_id=row[0]) from exc


def message(row: Sequence[Any], thread_id: str) -> StoredMessage:
    """Rebuild a message from ``MESSAGE_COLUMNS``."""
    try:
        # Plain validation is faster than model_construct in pydantic 2 here, and
        # most messages are not replies: leave their links to the defaults.
        if row[5] is None and row[6] is None and row[7] is None:
            return StoredMessage(
                id=row[0],
                created_at=row[1],
                metadata=json.loads(row[2]) if row[2] != "{}" else {},
                thread_id=thread_id,
                role=row[3],
                payload=row[4],
            )
        return StoredMessage(
            id=row[0],
            created_at=row[1],
            metadata=json.loads(row[2]) if row[2] != "{}" else {},
            thread_id=thread_id,
            role=row[3],
            payload=row[4],
            run_id=row[5],
            assistant_id=row[6],
            reply_to=row[7],
        )
    except (TypeError, ValueError) as exc:
        what = f"Message {row[0]!r} of thread {thread_id!r}"
        ids = {"object_id": str(row[0]), "thread_id": thread_id}
        load_metadata(row[2], what, **ids)  # the precise error, if it is that
        raise _corrupt(what, exc, **ids) from exc


def message_row(row: Sequence[Any], thread_id: str) -> MessageRow:
    """A run's context row from ``MESSAGE_COLUMNS``: what `message` gives, as a tuple.

    A row with no metadata (most rows) whose columns hold the types the schema
    declares becomes a tuple at once; any other is rebuilt by `message`, which
    accepts what it accepts and names what is wrong.
    """
    id_, created_at, metadata, role, payload, run_id, assistant_id, reply_to = row
    if (
        metadata == "{}"
        and type(id_) is str
        and type(created_at) is int
        and type(role) is str
        and type(payload) is str
        and (run_id is None or type(run_id) is str)
        and (assistant_id is None or type(assistant_id) is str)
        and (reply_to is None or type(reply_to) is str)
    ):
        return MessageRow.plain(row, thread_id)
    return MessageRow.of(message(row, thread_id))


def run(
    row: Sequence[Any], thread_id: str, lease: Sequence[Any], now: float
) -> StoredRun:
    """Rebuild a run from ``RUN_COLUMNS``, settled against its thread's lease.

    Args:
        row: The run's columns.
        thread_id: Its thread.
        lease: ``(owner, expires_at)`` of the thread's lease, ``NULL`` if none.
        now: The store's clock, in Unix seconds.
    """
    stored = run_from_row(row[0], thread_id, row[1], row[2], row[3])
    held = row[4] is not None and lease[0] == row[4]
    return settle(
        stored, held=held, lease_expires_at=lease[1] if held else None, now=now
    )


def stored_body(run: StoredRun) -> str:
    """The body to write for ``run``: without ``expires_at``, which the lease keeps.

    A renewal then writes only the lease, and every read settles the run from it.
    """
    if run.expires_at is not None:
        run = run.model_copy(update={"expires_at": None})
    return run_body(run)


def run_listing_sql(bounds: Mapping[str, int], desc: bool) -> str:
    """A page of a thread's runs by ``(thread_seq, seq)``, from cursor bounds.

    Args:
        bounds: ``{"gt": seq}`` and/or ``{"lt": seq}``, in that order of parameters.
        desc: Read newest first.

    Returns:
        The query; its parameters are the thread's seq, the bounds' values, the limit.
    """
    where = "".join(
        " AND r.seq > ?" if key == "gt" else " AND r.seq < ?" for key in bounds
    )
    return (
        f"SELECT {RUN_COLUMNS} FROM runs r "  # noqa: S608 - constant columns
        f"WHERE r.thread_seq = ?{where} "
        f"ORDER BY r.seq {'DESC' if desc else 'ASC'} LIMIT ?"
    )


def is_run_id_conflict(exc: sqlite3.IntegrityError) -> bool:
    """Whether an insert failed on the runs' unique ``id``."""
    return "runs.id" in str(exc)


def is_id_conflict(exc: sqlite3.IntegrityError) -> bool:
    """Whether an insert failed on the ``(thread_seq, id)`` unique key."""
    return "messages.thread_seq, messages.id" in str(exc)


def conflict_ids(messages: Sequence[NewMessage]) -> list[str]:
    """The caller-given ids of a batch, to look up after a unique-key failure."""
    return [m.id for m in messages if m.id is not None]


def listing_sql(
    driver: Sequence[tuple[str, str]],
    probes: Sequence[Sequence[tuple[str, str]]],
    bounds: Mapping[str, int],
    desc: bool,
) -> tuple[str, list[Any]]:
    """One query of the filtered thread listing, driven from one metadata entry.

    The driver ``(key, value)`` is read from ``thread_metadata``'s primary key
    ``(key, value, thread_seq)`` in thread order, from the cursor on; each probe (a
    filter: one entry, or several of which one must hold) is a primary-key lookup
    per candidate thread. ``CROSS JOIN`` fixes the join order, so the plan does not
    depend on statistics.

    Args:
        driver: One ``(key, value)`` pair (a one-element sequence).
        probes: The other filters.
        bounds: ``{"lt": seq}`` and/or ``{"gt": seq}`` from the cursors.
        desc: Read newest first.
    """
    ((key, value),) = driver
    params: list[Any] = [key, value]
    where = ["d.key = ?", "d.value = ?"]
    if "lt" in bounds:
        where.append("d.thread_seq < ?")
        params.append(bounds["lt"])
    if "gt" in bounds:
        where.append("d.thread_seq > ?")
        params.append(bounds["gt"])
    for probe in probes:
        keys = {k for k, _ in probe}
        if len(keys) == 1:
            (probe_key,) = keys
            marks = ", ".join("?" * len(probe))
            where.append(
                "EXISTS (SELECT 1 FROM thread_metadata p "  # noqa: S608 - placeholders
                f"WHERE p.key = ? AND p.value IN ({marks}) "
                "AND p.thread_seq = d.thread_seq)"
            )
            params += [probe_key, *(v for _, v in probe)]
        else:  # pragma: no cover - filters are one key each
            raise ValueError(probe)
    sql = (
        "SELECT t.seq, t.id, t.created_at, t.metadata "  # noqa: S608 - placeholders
        "FROM thread_metadata d CROSS JOIN threads t ON t.seq = d.thread_seq "
        f"WHERE {' AND '.join(where)} "
        f"ORDER BY d.thread_seq {'DESC' if desc else 'ASC'} LIMIT ?"
    )
    return sql, params


def check_bulk_ids(batches: Sequence[tuple[str, Sequence[NewMessage]]]) -> None:
    """Refuse a caller id given twice for one thread across a bulk write's pairs."""
    given: dict[str, set[str]] = {}
    for thread_id, messages in batches:
        seen = given.setdefault(thread_id, set())
        for m in messages:
            if m.id is not None:
                if m.id in seen:
                    raise MessageIdConflictError(thread_id, m.id)
                seen.add(m.id)


def bulk_rows(
    batches: Sequence[tuple[str, Sequence[NewMessage]]],
    heads: Mapping[str, list[int]],
    now: int,
) -> list[tuple[Any, ...]]:
    """The message rows of a bulk write, as tuples (no row objects).

    Args:
        batches: The ``(thread_id, messages)`` pairs.
        heads: Per thread ``[seq, first new seq, next seq]``; the next seq is
            advanced in place.
        now: The creation time of messages that bring none.
    """
    rows = []
    for thread_id, messages in batches:
        head = heads[thread_id]
        for m in messages:
            rows.append(
                (
                    head[0],
                    head[2],
                    new_id("msg") if m.id is None else m.id,
                    now if m.created_at is None else m.created_at,
                    m.role,
                    m.payload,
                    dumps(m.metadata),
                    m.run_id,
                    m.assistant_id,
                    m.reply_to,
                )
            )
            head[2] += 1
    return rows
