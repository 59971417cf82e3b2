"""The I/O of `PostgresStore`: performing an operation's statements, sync and async.

The operations of `langchain_retro.stores.postgres` are generators of statements
(`langchain_retro.stores._postgres_sql`). They are run by the generic drivers of
`langchain_retro._steps`, with the functions here performing each step on a
connection: a statement, a ``COPY``, or a pipelined batch at a time. A statement's
error (a ``psycopg.Error``) is thrown into the operation so it can name it; any other
error leaves at once. These functions are the only code that differs between the
sync and the async store.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from langchain_retro._steps import adrive, drive
from langchain_retro.errors import MissingDependencyError, StoreError
from langchain_retro.stores._postgres_sql import _Q, _Copy, _Op, _Rows, _Step
from langchain_retro.stores.base import unencodable_error

try:
    import psycopg
    from psycopg import pq, sql
    from psycopg.rows import tuple_row
except ImportError as exc:
    raise MissingDependencyError(
        "PostgresStore needs psycopg 3 and psycopg-pool: "
        'pip install "langchain-retro[postgres]"'
    ) from exc

__all__ = [
    "_PIPELINES",
    "_adrive",
    "_drive",
    "_errors",
    "_perform",
    "_started",
]

T = TypeVar("T")

_PIPELINES = psycopg.Pipeline.is_supported()
"""Whether libpq can pipeline statements (14+); else a batch is a transaction."""

_FORGET = sql.SQL("DEALLOCATE ALL")


@contextmanager
def _errors(label: str) -> Iterator[None]:
    """Turn psycopg's errors into `StoreError` naming ``label``, chained; ours pass."""
    try:
        yield
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise StoreError(
            f"{label}: {exc.diag.message_primary}. Create the tables first with "
            "store.setup() (or await store.asetup())."
        ) from exc
    except UnicodeEncodeError as exc:
        raise unencodable_error(exc) from exc
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL error in {label}: {exc}") from exc


def _forgets(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether a pipeline that failed on ``conn`` must forget prepared statements.

    A statement skipped after the error may have been due to be prepared: psycopg
    then believes it prepared, and the server does not have it. ``DEALLOCATE ALL``
    resets both (psycopg clears its cache when it sees it). Outside autocommit the
    rollback that follows does it.
    """
    return (
        _PIPELINES
        and conn.prepare_threshold is not None
        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    )


def _started(first: _Step, op: _Op[T]) -> _Op[T]:
    """``op``, already advanced to its ``first`` step, as a fresh operation.

    `PostgresStore` advances an operation to its first statement before it takes a
    connection, so that checks needing no I/O cost none; the drivers take it from
    there through this.
    """
    step = first
    while True:
        try:
            result = yield step
        except GeneratorExit:
            op.close()
            raise
        except BaseException as exc:  # thrown in by the driver: the op's to handle
            try:
                step = op.throw(exc)
            except StopIteration as stop:
                return cast("T", stop.value)
            continue
        try:
            step = op.send(result)
        except StopIteration as stop:
            return cast("T", stop.value)


# --- sync --------------------------------------------------------------------------


def _perform(
    conn: psycopg.Connection[Any], cursor: psycopg.Cursor[tuple[Any, ...]], step: _Step
) -> Any:
    """Perform one step: its rows, ``[]`` for a copy, a list of rows for a batch."""
    if isinstance(step, _Q):
        cursor.execute(step.query, step.params)
        return _rows(cursor)
    if isinstance(step, _Copy):
        with cursor.copy(step.statement) as copy:
            for row in step.rows:
                copy.write_row(row)
        return []
    return _batch(conn, step)


def _drive(conn: psycopg.Connection[Any], op: _Op[T]) -> T:
    """Run an operation on a connection; a statement's error is thrown into it."""
    cursor = conn.cursor(row_factory=tuple_row)
    perform = functools.partial(_perform, conn, cursor)
    return drive(op, perform, throw=(psycopg.Error,))


def _returns_rows(
    cursor: psycopg.Cursor[tuple[Any, ...]] | psycopg.AsyncCursor[tuple[Any, ...]],
) -> bool:
    """Whether the cursor's statement returned rows to fetch.

    What ``cursor.description is not None`` says, without building the columns'
    descriptions: a run's statements ask ten times.
    """
    result = cursor.pgresult
    return result is not None and (
        result.nfields > 0 or result.status == pq.ExecStatus.TUPLES_OK
    )


def _rows(cursor: psycopg.Cursor[tuple[Any, ...]]) -> _Rows:
    return cursor.fetchall() if _returns_rows(cursor) else []


def _batch(conn: psycopg.Connection[Any], batch: tuple[_Q, ...]) -> list[_Rows]:
    cursors = [conn.cursor(row_factory=tuple_row) for _ in batch]
    try:
        with conn.pipeline() if _PIPELINES else conn.transaction():
            for cursor, query in zip(cursors, batch, strict=True):
                cursor.execute(query.query, query.params)
    except psycopg.Error:
        if _forgets(conn):
            with contextlib.suppress(psycopg.Error):
                conn.execute(_FORGET)
        raise
    return [_rows(cursor) for cursor in cursors]


# --- async -------------------------------------------------------------------------


async def _aperform(
    conn: psycopg.AsyncConnection[Any],
    cursor: psycopg.AsyncCursor[tuple[Any, ...]],
    step: _Step,
) -> Any:
    """Async twin of `_perform`."""
    if isinstance(step, _Q):
        await cursor.execute(step.query, step.params)
        return await _arows(cursor)
    if isinstance(step, _Copy):
        async with cursor.copy(step.statement) as copy:
            for row in step.rows:
                await copy.write_row(row)
        return []
    return await _abatch(conn, step)


async def _adrive(conn: psycopg.AsyncConnection[Any], op: _Op[T]) -> T:
    """Async twin of `_drive`."""
    cursor = conn.cursor(row_factory=tuple_row)
    perform = functools.partial(_aperform, conn, cursor)
    return await adrive(op, perform, throw=(psycopg.Error,))


async def _arows(cursor: psycopg.AsyncCursor[tuple[Any, ...]]) -> _Rows:
    return await cursor.fetchall() if _returns_rows(cursor) else []


async def _abatch(
    conn: psycopg.AsyncConnection[Any], batch: tuple[_Q, ...]
) -> list[_Rows]:
    cursors = [conn.cursor(row_factory=tuple_row) for _ in batch]
    try:
        async with conn.pipeline() if _PIPELINES else conn.transaction():
            for cursor, query in zip(cursors, batch, strict=True):
                await cursor.execute(query.query, query.params)
    except psycopg.Error:
        if _forgets(conn):
            with contextlib.suppress(psycopg.Error):
                await conn.execute(_FORGET)
        raise
    return [await _arows(cursor) for cursor in cursors]
