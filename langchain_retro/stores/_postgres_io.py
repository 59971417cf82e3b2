"""The I/O of `PostgresStore`: performing an operation's statements, sync and async.

The operations of `langchain_retro.stores.postgres` are generators of statements
(`langchain_retro.stores._postgres_sql`). They are run by the generic drivers of
`langchain_retro._steps`, with the functions here performing each step on a
connection: a statement, a ``COPY``, or a pipelined batch at a time. A statement's
error (a ``psycopg.Error``) is thrown into the operation so it can name it; any other
error leaves at once. These functions are the only code that differs between the
sync and the async store.

An operation runs in autocommit (each step its own transaction), in a transaction,
or in a pipelined transaction: ``BEGIN`` is sent with its first step and ``COMMIT``
with its `_Commit` step, so a transaction of two steps costs two round trips, not
four.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

from langchain_retro._steps import adrive, drive
from langchain_retro.errors import MissingDependencyError, StoreError
from langchain_retro.stores._postgres_sql import _Q, _Commit, _Copy, _Op, _Rows, _Step
from langchain_retro.stores.base import unencodable_error

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import tuple_row
except ImportError as exc:
    raise MissingDependencyError(
        "PostgresStore needs psycopg 3 and psycopg-pool: "
        'pip install "langchain-retro[postgres]"'
    ) from exc

__all__ = [
    "_PIPELINES",
    "_Transaction",
    "_adrive",
    "_asession",
    "_drive",
    "_errors",
    "_perform",
    "_session",
    "_started",
]

T = TypeVar("T")

_PIPELINES = psycopg.Pipeline.is_supported()
"""Whether libpq can pipeline statements (14+); else a batch is a transaction."""

_BEGIN = _Q(sql.Composed([sql.SQL("BEGIN")]))
_END = _Q(sql.Composed([sql.SQL("COMMIT")]))


class _Transaction:
    """A pipelined transaction: whether its ``BEGIN`` went, and whether it ended."""

    __slots__ = ("begun", "ended")

    def __init__(self) -> None:
        self.begun = False
        self.ended = False

    def wrap(self, batch: tuple[_Q, ...], *, commit: bool) -> tuple[_Q, ...]:
        """The statements to send for ``batch``: after ``BEGIN`` if it is the first."""
        lead = () if self.begun else (_BEGIN,)
        self.begun = True
        self.ended = commit
        return (*lead, *batch, *((_END,) if commit else ()))

    def unwrap(self, rows: list[_Rows], batch: tuple[_Q, ...]) -> list[_Rows]:
        """The rows of ``batch``'s own statements, without ``BEGIN`` and ``COMMIT``."""
        lead = len(rows) - len(batch) - (1 if self.ended else 0)
        return rows[lead : lead + len(batch)]


def _pipelined(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether a transaction on ``conn`` can be pipelined with ``BEGIN``/``COMMIT``.

    Only in autocommit, where psycopg sends no ``BEGIN`` of its own.
    """
    return _PIPELINES and conn.autocommit


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


@contextmanager
def _session(
    conn: psycopg.Connection[Any], *, transaction: bool, pipelined: bool
) -> Iterator[_Transaction | None]:
    """Run an operation in autocommit, or in a transaction.

    Yields the pipelined transaction the steps take part in, if it is one (with
    libpq older than 14, or a connection not in autocommit, it is a plain
    transaction). One not ended by a `_Commit` step is committed here, or rolled
    back if the operation fails.
    """
    if not transaction:
        yield None
    elif pipelined and _pipelined(conn):
        try:
            yield _Transaction()
        except BaseException:
            with contextlib.suppress(psycopg.Error):  # a broken one is discarded
                conn.rollback()
            raise
        conn.commit()  # nothing to do if a _Commit step ended it
    else:
        with conn.transaction():
            yield None


def _perform(
    conn: psycopg.Connection[Any],
    cursor: psycopg.Cursor[tuple[Any, ...]],
    tx: _Transaction | None,
    step: _Step,
) -> Any:
    """Perform one step: its rows, ``[]`` for a copy, a list of rows for a batch."""
    if isinstance(step, _Q):
        if tx is not None:  # it rides with BEGIN, if first
            return _batch(conn, tx, (step,))[0]
        cursor.execute(step.query, step.params)
        return _rows(cursor)
    if isinstance(step, _Copy):
        with cursor.copy(step.statement) as copy:
            for row in step.rows:
                copy.write_row(row)
        return []
    if isinstance(step, _Commit):
        return _batch(conn, tx, step.batch, commit=True)
    return _batch(conn, tx, step)


def _drive(conn: psycopg.Connection[Any], tx: _Transaction | None, op: _Op[T]) -> T:
    """Run an operation on a connection; a statement's error is thrown into it."""
    cursor = conn.cursor(row_factory=tuple_row)
    perform = functools.partial(_perform, conn, cursor, tx)
    return drive(op, perform, throw=(psycopg.Error,))


def _rows(cursor: psycopg.Cursor[tuple[Any, ...]]) -> _Rows:
    return cursor.fetchall() if cursor.description is not None else []


def _batch(
    conn: psycopg.Connection[Any],
    tx: _Transaction | None,
    batch: tuple[_Q, ...],
    *,
    commit: bool = False,
) -> list[_Rows]:
    sent = batch if tx is None else tx.wrap(batch, commit=commit)
    cursors = [conn.cursor(row_factory=tuple_row) for _ in sent]
    with conn.pipeline() if _PIPELINES else conn.transaction():
        for cursor, query in zip(cursors, sent, strict=True):
            cursor.execute(query.query, query.params)
    rows = [_rows(cursor) for cursor in cursors]
    return rows if tx is None else tx.unwrap(rows, batch)


# --- async -------------------------------------------------------------------------


@asynccontextmanager
async def _asession(
    conn: psycopg.AsyncConnection[Any], *, transaction: bool, pipelined: bool
) -> AsyncIterator[_Transaction | None]:
    """Async twin of `_session`."""
    if not transaction:
        yield None
    elif pipelined and _pipelined(conn):
        try:
            yield _Transaction()
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
            raise
        await conn.commit()
    else:
        async with conn.transaction():
            yield None


async def _aperform(
    conn: psycopg.AsyncConnection[Any],
    cursor: psycopg.AsyncCursor[tuple[Any, ...]],
    tx: _Transaction | None,
    step: _Step,
) -> Any:
    """Async twin of `_perform`."""
    if isinstance(step, _Q):
        if tx is not None:
            return (await _abatch(conn, tx, (step,)))[0]
        await cursor.execute(step.query, step.params)
        return await _arows(cursor)
    if isinstance(step, _Copy):
        async with cursor.copy(step.statement) as copy:
            for row in step.rows:
                await copy.write_row(row)
        return []
    if isinstance(step, _Commit):
        return await _abatch(conn, tx, step.batch, commit=True)
    return await _abatch(conn, tx, step)


async def _adrive(
    conn: psycopg.AsyncConnection[Any], tx: _Transaction | None, op: _Op[T]
) -> T:
    """Async twin of `_drive`."""
    cursor = conn.cursor(row_factory=tuple_row)
    perform = functools.partial(_aperform, conn, cursor, tx)
    return await adrive(op, perform, throw=(psycopg.Error,))


async def _arows(cursor: psycopg.AsyncCursor[tuple[Any, ...]]) -> _Rows:
    return await cursor.fetchall() if cursor.description is not None else []


async def _abatch(
    conn: psycopg.AsyncConnection[Any],
    tx: _Transaction | None,
    batch: tuple[_Q, ...],
    *,
    commit: bool = False,
) -> list[_Rows]:
    sent = batch if tx is None else tx.wrap(batch, commit=commit)
    cursors = [conn.cursor(row_factory=tuple_row) for _ in sent]
    async with conn.pipeline() if _PIPELINES else conn.transaction():
        for cursor, query in zip(cursors, sent, strict=True):
            await cursor.execute(query.query, query.params)
    rows = [await _arows(cursor) for cursor in cursors]
    return rows if tx is None else tx.unwrap(rows, batch)
