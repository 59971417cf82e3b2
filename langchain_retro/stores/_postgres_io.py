"""The I/O of `PostgresStore`: drivers that send an operation's statements, and pools.

The operations of `langchain_retro.stores.postgres` are generators of statements
(`langchain_retro.stores._postgres_sql`); the drivers here send them, sync or async,
and are the only code that differs between the two: `_drive` and `_adrive` run an
operation on a connection (a statement, a ``COPY``, or a pipelined batch at a time),
throwing a statement's error into the operation so it can name it. The pool helpers
check connections on checkout without a round trip, and stop an event loop's pool
from outside that loop.
"""

from __future__ import annotations

import asyncio
import select
from typing import Any, NamedTuple, TypeVar, cast

from langchain_retro.errors import MissingDependencyError
from langchain_retro.stores._postgres_sql import _Q, _Copy, _Op, _Rows, _Step

try:
    import psycopg
    from psycopg.rows import tuple_row
    from psycopg_pool import AsyncConnectionPool, ConnectionPool
except ImportError as exc:
    raise MissingDependencyError(
        "PostgresStore needs psycopg 3 and psycopg-pool: "
        'pip install "langchain-retro[postgres]"'
    ) from exc

__all__ = [
    "_PIPELINES",
    "_LoopPool",
    "_acheck_connection",
    "_adrive",
    "_check_connection",
    "_drive",
    "_server_spoke",
    "_stop",
]

T = TypeVar("T")

_PIPELINES = psycopg.Pipeline.is_supported()
"""Whether libpq can pipeline statements (14+); else a batch is a transaction."""


class _LoopPool(NamedTuple):
    """One event loop's pool: ready once open; the task closes it when cancelled."""

    ready: asyncio.Future[AsyncConnectionPool[Any]]
    task: asyncio.Task[None]


def _server_spoke(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection's socket has something to read, or is gone.

    An idle connection is sent nothing unless the server ends it (a restart, an
    administrator's ``pg_terminate_backend``, an idle timeout), so a live one is told
    from a dead one without a round trip.
    """
    if conn.closed:
        return True
    try:
        fileno = conn.fileno()
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(poller.poll(0))
        return bool(select.select([fileno], [], [], 0)[0])
    except (OSError, ValueError, psycopg.Error):
        return True


def _check_connection(conn: psycopg.Connection[Any]) -> None:
    """The sync pool's checkout check: a round trip only if the server spoke."""
    if _server_spoke(conn):
        ConnectionPool.check_connection(conn)


async def _acheck_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """The async pool's checkout check: a round trip only if the server spoke."""
    if _server_spoke(conn):
        await AsyncConnectionPool.check_connection(conn)


def _drive(conn: psycopg.Connection[Any], step: _Step, op: _Op[T]) -> T:
    # A statement's error is thrown into the operation, which may turn it into one
    # of ours (or, in autocommit, go on); uncaught, it leaves through here.
    cursor = conn.cursor(row_factory=tuple_row)
    try:
        while True:
            try:
                if isinstance(step, _Q):
                    cursor.execute(step.query, step.params)
                    result: Any = _rows(cursor)
                elif isinstance(step, _Copy):
                    with cursor.copy(step.statement) as copy:
                        for row in step.rows:
                            copy.write_row(row)
                    result = []
                else:
                    result = _batch(conn, step)
            except psycopg.Error as exc:
                step = op.throw(exc)
                continue
            step = op.send(result)
    except StopIteration as stop:
        return cast(T, stop.value)
    finally:
        op.close()


def _rows(cursor: psycopg.Cursor[tuple[Any, ...]]) -> _Rows:
    return cursor.fetchall() if cursor.description is not None else []


def _batch(conn: psycopg.Connection[Any], batch: tuple[_Q, ...]) -> list[_Rows]:
    cursors = [conn.cursor(row_factory=tuple_row) for _ in batch]
    with conn.pipeline() if _PIPELINES else conn.transaction():
        for cursor, query in zip(cursors, batch, strict=True):
            cursor.execute(query.query, query.params)
    return [_rows(cursor) for cursor in cursors]


async def _adrive(conn: psycopg.AsyncConnection[Any], step: _Step, op: _Op[T]) -> T:
    cursor = conn.cursor(row_factory=tuple_row)
    try:
        while True:
            try:
                if isinstance(step, _Q):
                    await cursor.execute(step.query, step.params)
                    result: Any = await _arows(cursor)
                elif isinstance(step, _Copy):
                    async with cursor.copy(step.statement) as copy:
                        for row in step.rows:
                            await copy.write_row(row)
                    result = []
                else:
                    result = await _abatch(conn, step)
            except psycopg.Error as exc:
                step = op.throw(exc)
                continue
            step = op.send(result)
    except StopIteration as stop:
        return cast(T, stop.value)
    finally:
        op.close()


async def _arows(cursor: psycopg.AsyncCursor[tuple[Any, ...]]) -> _Rows:
    return await cursor.fetchall() if cursor.description is not None else []


async def _abatch(
    conn: psycopg.AsyncConnection[Any], batch: tuple[_Q, ...]
) -> list[_Rows]:
    cursors = [conn.cursor(row_factory=tuple_row) for _ in batch]
    async with conn.pipeline() if _PIPELINES else conn.transaction():
        for cursor, query in zip(cursors, batch, strict=True):
            await cursor.execute(query.query, query.params)
    return [await _arows(cursor) for cursor in cursors]


_stopping: set[asyncio.Task[None]] = set()
"""Pool tasks cancelled from sync code, kept referenced until they finish."""


def _stop(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
    """Cancel an event loop's pool task (which closes the pool) from outside it.

    A closed loop's pool cannot be awaited any more; its connections are freed with it.
    """
    if loop.is_closed() or task.done():
        return
    if not loop.is_running():
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop runs in this thread: drive that one to the end
            task.cancel()
            loop.run_until_complete(asyncio.wait([task]))
            return
    # The loop runs (here or in another thread), or may run again: let it finish.
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)
    loop.call_soon_threadsafe(task.cancel)
