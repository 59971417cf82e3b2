"""The connection pools of `PostgresStore`: given by the caller, or made and owned.

`_Pools` holds a store's pools and their lifecycle, so the store itself holds only
operations:

* pools the caller passes in are used as they are, and never opened or closed here;
* pools made by `_Pools.from_url` (``PostgresStore.from_connection_string``) are
  opened on first use, the sync one in the calling thread and one async pool per
  event loop, inside that loop; `_Pools.close` and `_Pools.aclose` close them, from
  any thread or loop;
* the pools made here check each connection they hand out without a round trip,
  unless the server has ended it (`_check_connection`), and set each new connection
  to plan prepared statements once (`_generic_plans`) unless told not to.
"""

from __future__ import annotations

import asyncio
import select
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NamedTuple

from langchain_retro.errors import MissingDependencyError, StoreClosedError, StoreError
from langchain_retro.stores._postgres_io import _errors

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import AsyncConnectionPool, ConnectionPool
except ImportError as exc:
    raise MissingDependencyError(
        "PostgresStore needs psycopg 3 and psycopg-pool: "
        'pip install "langchain-retro[postgres]"'
    ) from exc

__all__ = [
    "_LoopPool",
    "_Owned",
    "_Pools",
    "_acheck_connection",
    "_check_connection",
    "_server_spoke",
    "_stop",
]

_PER_POOL_OPTIONS = frozenset(
    {"open", "connection_class", "configure", "reset", "check", "reconnect_failed"}
)
"""Pool options that differ between a sync and an async pool (callbacks...)."""


class _Owned(NamedTuple):
    """How to make the pools of a store that owns them."""

    conninfo: str
    """The connection string."""
    kwargs: dict[str, Any]
    """The connections' options (``autocommit``, ``prepare_threshold``...)."""
    sync: dict[str, Any]
    """The options of the sync ``ConnectionPool``."""
    async_: dict[str, Any]
    """The options of each ``AsyncConnectionPool``."""


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


_GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"
"""Plan a prepared statement once, not at every execution.

Every statement of the store finds its rows by key (a thread, a run, an index entry),
so its plan does not depend on its parameters. PostgreSQL still re-plans the larger
ones (`begin_run`'s, `finish_run`'s) at each execution by default, since a plan made
for the values can drop branches that the parameters switch off: that costs the
server about 2 ms of CPU a turn, more than the statements themselves.
"""

_GENERIC_PLANS_SINCE = 120000
"""The server version that has ``plan_cache_mode`` (PostgreSQL 12)."""


def _generic_plans(
    configure: Callable[[psycopg.Connection[Any]], None] | None,
) -> Callable[[psycopg.Connection[Any]], None]:
    """A sync pool's ``configure``: generic plans, then the caller's ``configure``."""

    def configured(conn: psycopg.Connection[Any]) -> None:
        if conn.info.server_version >= _GENERIC_PLANS_SINCE:
            conn.execute(_GENERIC_PLANS)
            if not conn.autocommit:  # the pool takes only idle connections
                conn.commit()
        if configure is not None:
            configure(conn)

    return configured


def _ageneric_plans(
    configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None,
) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]:
    """Async twin of `_generic_plans`."""

    async def configured(conn: psycopg.AsyncConnection[Any]) -> None:
        if conn.info.server_version >= _GENERIC_PLANS_SINCE:
            await conn.execute(_GENERIC_PLANS)
            if not conn.autocommit:
                await conn.commit()
        if configure is not None:
            await configure(conn)

    return configured


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


class _Pools:
    """A store's pools: the connections its sync and async operations run on."""

    def __init__(
        self,
        pool: ConnectionPool[Any] | None,
        async_pool: AsyncConnectionPool[Any] | None,
        *,
        label: str,
        owned: _Owned | None = None,
    ) -> None:
        """Hold given pools, or (with ``owned``) the sync pool made by `from_url`.

        Args:
            pool: The sync pool; ``None`` if only the async methods are used.
            async_pool: The async pool of pools given by the caller.
            label: The store, as its errors name it.
            owned: How to make the pools, for a store that owns them.
        """
        self.label = label
        self._pool = pool
        self._async_pool = async_pool
        # Pools made by from_url: how to open the async pool of each event loop, and
        # whether the sync pool still needs opening.
        self._owned = owned
        self._pool_opened = owned is None
        self._async_pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}
        self._lock = threading.Lock()  # held briefly: async code takes it too
        self._opening_lock = threading.Lock()  # held while the sync pool connects
        self.closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        label: str,
        min_size: int,
        max_size: int,
        prepare_threshold: int | None,
        generic_plans: bool,
        pool_kwargs: Mapping[str, Any] | None,
        async_pool_kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> _Pools:
        """Pools to make from a connection string, checking connections on checkout.

        See ``PostgresStore.from_connection_string`` for the arguments.

        Raises:
            StoreError: If the connection string cannot be parsed.
            TypeError: If ``options`` holds an option that differs between sync and
                async pools.
        """
        per_pool = _PER_POOL_OPTIONS & set(options)
        if per_pool:
            raise TypeError(
                f"{sorted(per_pool)} cannot be shared by the sync and async pools: "
                "pass them in pool_kwargs= and async_pool_kwargs=, or build the "
                "pools yourself and pass them to PostgresStore(pool=..., "
                "async_pool=...)."
            )
        try:
            conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"Invalid PostgreSQL connection string: {exc}") from exc
        kwargs = {
            **options.get("kwargs", {}),
            "autocommit": True,
            "prepare_threshold": prepare_threshold,
        }
        shared: dict[str, Any] = {**options, "min_size": min_size, "max_size": max_size}

        def per(
            check: Any, plans: Callable[[Any], Any], own: Mapping[str, Any] | None
        ) -> dict[str, Any]:
            own = dict(own or {})
            own_kwargs = {**kwargs, **own.pop("kwargs", {})}
            if generic_plans and own_kwargs.get("prepare_threshold") is not None:
                own["configure"] = plans(own.get("configure"))
            return {"check": check, **shared, **own, "kwargs": own_kwargs}

        owned = _Owned(
            conninfo=url,
            kwargs=kwargs,
            sync=per(_check_connection, _generic_plans, pool_kwargs),
            async_=per(_acheck_connection, _ageneric_plans, async_pool_kwargs),
        )
        return cls(
            ConnectionPool(url, open=False, **owned.sync),
            None,
            label=label,
            owned=owned,
        )

    def check_open(self) -> None:
        """Raise `StoreClosedError` once the store is closed."""
        if self.closed:
            raise StoreClosedError(f"{self.label} is closed; open a new store.")

    # --- sync ----------------------------------------------------------------------

    def sync_pool(self) -> ConnectionPool[Any]:
        """The sync pool, opened (and its URL checked) on first use if owned."""
        self.check_open()
        pool = self._pool
        if pool is None:
            raise StoreError(
                f"{self.label} was given no sync pool: pass pool=ConnectionPool(...) "
                "or use the async methods."
            )
        if not self._pool_opened:
            with self._opening_lock:
                self.check_open()
                if not self._pool_opened and self._owned is not None:
                    pool = self._open_sync(pool, self._owned)
        return pool

    def _open_sync(
        self, pool: ConnectionPool[Any], owned: _Owned
    ) -> ConnectionPool[Any]:
        pool.open()
        try:
            # One direct connection while the pool fills: a wrong URL fails now with
            # the server's reason, not after the pool's timeout.
            with _errors(self.label):
                psycopg.connect(owned.conninfo, **owned.kwargs).close()
                pool.wait()
        except BaseException:
            pool.close()
            self._pool = ConnectionPool(owned.conninfo, open=False, **owned.sync)
            raise
        self._pool_opened = True
        return pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the sync pool, for one operation."""
        with self.sync_pool().connection() as conn:
            yield conn

    # --- async ---------------------------------------------------------------------

    async def async_pool(self) -> AsyncConnectionPool[Any]:
        """The running event loop's pool: the given one, or this loop's own."""
        self.check_open()
        if self._async_pool is not None:
            return self._async_pool
        if self._owned is None:
            raise StoreError(
                f"{self.label} was given no async pool: pass "
                "async_pool=AsyncConnectionPool(...) or use the sync methods."
            )
        loop = asyncio.get_running_loop()
        entry = self._async_pools.get(loop)
        if entry is None:
            with self._lock:
                for old in [lp for lp in self._async_pools if lp.is_closed()]:
                    del self._async_pools[old]  # its loop is gone: nothing to await
                ready: asyncio.Future[AsyncConnectionPool[Any]] = loop.create_future()
                task = loop.create_task(self._serve_async_pool(self._owned, ready))
                entry = self._async_pools[loop] = _LoopPool(ready, task)
        try:
            return await asyncio.shield(entry.ready)
        except BaseException:
            if entry.ready.done():  # it failed to open: the next call tries again
                with self._lock:
                    if self._async_pools.get(loop) is entry:
                        del self._async_pools[loop]
            raise

    @asynccontextmanager
    async def aconnection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of the running event loop's pool, for one operation."""
        pool = await self.async_pool()
        async with pool.connection() as conn:
            yield conn

    async def _serve_async_pool(
        self, owned: _Owned, ready: asyncio.Future[AsyncConnectionPool[Any]]
    ) -> None:
        """Open this event loop's pool, hand it out, and close it when cancelled.

        `close` and `aclose` cancel this task; so does the loop shutting down
        (``asyncio.run`` ending cancels every task). psycopg_pool's workers can
        swallow that cancellation while connecting, and hang the shutdown, unless the
        pool is closed first: this task does it, also for stores nobody closed.
        """
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            owned.conninfo, open=False, **owned.async_
        )
        try:
            await pool.open()
            try:
                with _errors(self.label):
                    # One direct connection while the pool fills: a wrong URL fails
                    # now with the server's reason, not after the pool's timeout.
                    probe = await psycopg.AsyncConnection.connect(
                        owned.conninfo, **owned.kwargs
                    )
                    await probe.close()
                    await pool.wait()
            except BaseException:
                await pool.close()
                raise
        except asyncio.CancelledError:
            ready.cancel()
            raise
        except Exception as exc:  # handed to the caller through ready
            ready.set_exception(exc)
            return
        ready.set_result(pool)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            await pool.close()

    # --- closing -------------------------------------------------------------------

    def _mark_closed(self) -> dict[asyncio.AbstractEventLoop, _LoopPool] | None:
        """Mark the pools closed; the loop pools to stop, or ``None`` if already."""
        with self._lock:
            if self.closed:
                return None
            self.closed = True
            pools, self._async_pools = self._async_pools, {}
        return pools

    def close(self) -> None:
        """Close the pools made here; later calls raise `StoreClosedError`."""
        pools = self._mark_closed()
        if pools is None or self._owned is None:
            return
        if self._pool is not None:
            self._pool.close()
        for loop, entry in pools.items():
            _stop(loop, entry.task)

    async def aclose(self) -> None:
        """Async twin of `close`."""
        pools = self._mark_closed()
        if pools is None or self._owned is None:
            return
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
        current = asyncio.get_running_loop()
        for loop, entry in pools.items():
            if loop is current:
                entry.task.cancel()
                await asyncio.wait([entry.task])
            else:
                _stop(loop, entry.task)
