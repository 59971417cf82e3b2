"""`PostgresStore`: assistants, threads, messages and runs in PostgreSQL.

Install with ``pip install "langchain-retro[postgres]"`` (psycopg 3 and psycopg-pool).

Layout (schema version 3). Every table name is ``{table_prefix}{name}``, qualified by
the store's schema, so several apps can share one database:

* ``schema_migrations``: one row per applied migration; `PostgresStore.setup` creates
  a new schema's tables at the current version, or applies the missing migrations,
  under a transaction-level advisory lock, so processes starting at once take turns;
* ``assistants``: one row per assistant, ``metadata`` as ``jsonb``;
* ``threads``: one row per thread, ``metadata`` as ``jsonb``; ``next_seq`` hands out
  the per-thread message sequence and ``message_count`` keeps the count, so counting
  a thread's messages reads one row; ``prompt_tokens``, ``completion_tokens`` and
  ``total_tokens`` are the running sums of its runs' usage;
* ``thread_metadata``: one row per thread metadata entry, primary key
  ``(key, value, thread_seq)``, kept by triggers in the transaction that writes
  ``threads.metadata`` (whatever writes it). Filtered listings walk this key: each
  step of a leapfrog join over the filters is one index descent per filter value, so a
  page costs O(log N + page) for common, rare and absent values alike, with plans that
  statistics and generic plans cannot turn into scans;
* ``messages``: primary key ``(thread_seq, seq)``, so a thread's messages, its newest N
  and those after a cursor are one index range scan; message ids are unique per
  thread (``UNIQUE (thread_seq, id)``), so every unique key holds the thread and the
  table can be hash-partitioned by thread (``message_partitions``); ``payload`` is
  ``text``, read back as stored with no JSON decoding on either side; ``run_id``,
  ``assistant_id`` and ``reply_to`` link a reply to its run and what it answered, and
  a partial index on ``(thread_seq, run_id)`` reads a run's messages;
* ``runs``: one row per run: its id (unique in the store), thread, status, creation
  time and lease owner as columns, the rest as a ``jsonb`` body
  (``stores/_runs.py``); indexed by ``(thread_seq, seq)`` for listings, and by thread
  for the few runs in an active status, which a new run lapses when it takes the
  thread over;
* ``run_leases``: the one-active-run-per-thread lease, expiring by the database clock.

Appending takes the thread's row lock to allocate the sequence
(``UPDATE threads SET next_seq = next_seq + n ... RETURNING``) and inserts in the same
statement, so concurrent appenders to one thread are serialised and each gets a
contiguous block: the sequence is strictly increasing, and only deleting a message
leaves a gap (which readers tolerate). An append whose caller id the thread already
holds writes nothing, and takes no sequence numbers. Timestamps (``created_at``,
lease expiry) come from the database clock, so hosts with skewed clocks agree.

Connections run in autocommit: single-statement calls (most of them, appends included)
are one round trip; calls that read before they write run in a transaction. A turn
takes three round trips: `PostgresStore.begin_run` pipelines its statements (the
lease; the new or resumed run, the input and the lapsed runs in one statement; the
thread with its assistant; the newest messages) in one implicit transaction, each
reading after the previous one's locks and writes; `PostgresStore.finish_run` reads
the run, its lease and its thread, then writes the messages, thread, run and lease
in one statement that writes nothing if the run or the thread's metadata changed
since (and is then sent again after a new read), as `PostgresStore.cancel_run` does.
No explicit transaction, so no ``BEGIN`` or ``COMMIT`` round trips.

The statements are built by the pure functions of
`langchain_retro.stores._postgres_sql` (and, for runs,
`langchain_retro.stores._postgres_runs`); input is checked before any of them by
`langchain_retro.stores._postgres_checks`; `langchain_retro.stores._postgres_io`
performs them, sync and async, through the drivers of `langchain_retro._steps`; and
`langchain_retro.stores._postgres_pool` holds the pools. This module holds the store:
its operations, each written once as a generator of statements.

PgBouncer in transaction mode works: the store keeps no session state across
transactions. It holds only transaction-level advisory locks, leases live in a table,
and every table name is schema-qualified instead of relying on ``search_path``. Two
things to configure there, both for `PostgresStore.from_connection_string`:

* psycopg's server-side prepared statements (used after ``prepare_threshold`` = 5
  executions of a query), which PgBouncer before 1.21 cannot route: pass
  ``prepare_threshold=None`` (or ``kwargs={"prepare_threshold": None}`` to pools you
  build). PgBouncer 1.21+ with ``max_prepared_statements`` > 0 needs nothing;
* the one ``SET`` the store runs, when its pools open a connection
  (``plan_cache_mode``, so that a prepared statement is planned once): pass
  ``generic_plans=False`` so that it does not reach PgBouncer's other clients.

The pools `PostgresStore.from_connection_string` makes check each connection as they
hand it out (without a round trip, unless the server ended it), so a server restart
costs no failed call; pools you build get the same with
``check=ConnectionPool.check_connection`` (one round trip per checkout).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import closing, nullcontext
from typing import Any, NoReturn, TypeVar, cast

from pydantic import ValidationError

from langchain_retro._ids import new_id
from langchain_retro._metadata import CLASS_KEY, MetadataPatch, check_limits, dumps
from langchain_retro.errors import (
    AssistantInUseError,
    AssistantNotFoundError,
    CorruptDataError,
    MessageIdConflictError,
    MessageNotFoundError,
    MissingDependencyError,
    RetroValueError,
    RunNotFoundError,
    RunStateError,
    SchemaVersionError,
    ThreadNotFoundError,
)
from langchain_retro.stores._postgres_checks import (
    _bulk_rows,
    _check_partitions,
    _conflict,
    _message_ids,
    _run_taken,
)
from langchain_retro.stores._postgres_import import (
    _q_import_assistants,
    _q_import_runs,
    _q_import_threads,
    _q_threads_present,
)
from langchain_retro.stores._postgres_io import _adrive, _drive, _errors, _started
from langchain_retro.stores._postgres_pool import _Pools
from langchain_retro.stores._postgres_runs import (
    _Begun,
    _BegunRuns,
    _lease_of,
    _q_run_begin,
    _q_run_context,
    _q_run_cursors,
    _q_run_finish,
    _q_run_get,
    _q_run_messages,
    _q_run_renew,
    _q_run_setup,
    _q_run_thread,
    _q_run_undo,
    _q_run_write,
    _q_runs_list,
    _q_thread_usage,
    _run_of,
    _run_read,
    _RunRead,
)
from langchain_retro.stores._postgres_sql import (
    _DEFAULT_SCHEMA,
    _FRAGMENTS,
    _MAX_SEQ,
    _NO_SEQ,
    _THREAD_COLUMNS,
    SCHEMA_VERSION,
    _assistant,
    _check_prefix,
    _check_schema,
    _copy_messages,
    _filters,
    _message,
    _message_row,
    _Names,
    _Op,
    _q_assistant_delete,
    _q_assistant_get,
    _q_assistant_insert,
    _q_assistant_threads,
    _q_assistant_update,
    _q_bulk_advance,
    _q_bulk_clash,
    _q_busy,
    _q_create_layout,
    _q_create_migrations_table,
    _q_create_schema,
    _q_in_scope,
    _q_last_asked,
    _q_lease_acquire,
    _q_lease_get,
    _q_lease_release,
    _q_listing,
    _q_lock,
    _q_message_cursors,
    _q_message_delete,
    _q_message_get,
    _q_message_get_for_update,
    _q_message_set_metadata,
    _q_messages_append,
    _q_messages_clear,
    _q_messages_count,
    _q_messages_list,
    _q_messages_partitioned,
    _q_migrate,
    _q_record_migration,
    _q_record_version,
    _q_schema_version,
    _q_seq_of,
    _q_setup_state,
    _q_thread_cursors,
    _q_thread_delete,
    _q_thread_get,
    _q_thread_insert,
    _q_thread_set_metadata,
    _q_thread_walk,
    _q_threads_insert,
    _q_threads_lock,
    _Rows,
    _seq_bound,
    _thread,
)
from langchain_retro.stores._runs import END_STAMPS
from langchain_retro.stores.base import (
    ACTIVE_RUN_STATUSES,
    ASSISTANT_FIELDS,
    AssistantThreads,
    BaseStore,
    Lease,
    NewMessage,
    NewRun,
    Order,
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
    new_run_row,
    resumed_run,
    updated_run,
)

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, ConnectionPool
except ImportError as exc:
    raise MissingDependencyError(
        "PostgresStore needs psycopg 3 and psycopg-pool: "
        'pip install "langchain-retro[postgres]"'
    ) from exc

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

_IDLE_LEASE_TTL = 30.0
"""`add_messages_if_idle`'s lease: taken and given back in one transaction."""

_ASSISTANT_WIDTH = 3 + len(ASSISTANT_FIELDS)
"""How many columns an assistant's row has: id, created_at, metadata, the fields."""

T = TypeVar("T")


class PostgresStore(BaseStore):
    """Assistants, threads, messages and runs in PostgreSQL, over psycopg pools.

    Setup:
        Install the extra and create the tables once (safe to repeat, and safe from
        several processes at once):

        .. code-block:: bash

            pip install "langchain-retro[postgres]"

        .. code-block:: python

            store = PostgresStore.from_connection_string(url)
            store.setup()  # or: await store.asetup()

    Instantiate:
        .. code-block:: python

            from langchain_retro import PostgresStore

            store = PostgresStore.from_connection_string(
                "postgresql://user:secret@db:5432/app",
                schema="assistants",  # default: public
                table_prefix="retro_",  # several apps can share one schema
                max_size=10,
            )

            # Or from pools you own (the store never closes them):
            from psycopg_pool import AsyncConnectionPool, ConnectionPool

            store = PostgresStore(
                pool=ConnectionPool(url, kwargs={"autocommit": True}, open=True),
                async_pool=async_pool,  # opened with `await async_pool.open()`
            )

    Async:
        Every sync method has an ``a``-prefixed twin that never blocks the event loop.
        A store made by `from_connection_string` opens its async pool lazily, inside
        the running loop, on the first async call (one pool per event loop).

        .. code-block:: python

            async with PostgresStore.from_connection_string(url) as store:
                await store.asetup()
                thread = await store.acreate_thread({"user": "ada"})

    Behind PgBouncer in transaction mode, pass ``prepare_threshold=None`` (PgBouncer
    before 1.21); nothing else keeps session state.
    """

    def __init__(
        self,
        pool: ConnectionPool[Any] | None = None,
        async_pool: AsyncConnectionPool[Any] | None = None,
        *,
        schema: str | None = None,
        table_prefix: str = "retro_",
        message_partitions: int | None = None,
    ) -> None:
        """Use existing connection pools; the store neither opens nor closes them.

        Args:
            pool: An open sync pool, for the sync methods; ``None`` if only the async
                methods are used. Connections with ``autocommit=True`` save a
                round trip per call; ``check=ConnectionPool.check_connection`` makes
                a server restart cost no failed call.
            async_pool: An open async pool, for the ``a``-prefixed methods; ``None``
                if only the sync methods are used.
            schema: The PostgreSQL schema holding the tables, created by `setup` if
                missing. Defaults to ``public``.
            table_prefix: Prepended to every table name: lowercase letters, digits and
                underscores, up to 30 characters.
            message_partitions: Create ``messages`` hash-partitioned by thread into
                this many partitions when `setup` creates a new schema (see
                ``docs/postgres-partitioning.md``); ``None`` for one table.

        Raises:
            RetroValueError: If both pools are ``None``, the schema or prefix is
                invalid, or ``message_partitions`` is not 1 to 1024 or ``None``.
        """
        if pool is None and async_pool is None:
            raise RetroValueError(
                "PostgresStore needs a pool, an async_pool or both; or use "
                "PostgresStore.from_connection_string(url)."
            )
        self._init(
            schema=schema,
            table_prefix=table_prefix,
            message_partitions=message_partitions,
        )
        self._pools = _Pools(pool, async_pool, label=repr(self))

    def _init(
        self, *, schema: str | None, table_prefix: str, message_partitions: int | None
    ) -> None:
        _check_prefix(table_prefix)
        self.schema = _DEFAULT_SCHEMA if schema is None else schema
        _check_schema(self.schema)
        self.table_prefix = table_prefix
        self.message_partitions = _check_partitions(message_partitions) or None
        self._names = _Names(
            self.schema, table_prefix, partitions=self.message_partitions or 0
        )
        self._begun = _BegunRuns()

    @classmethod
    def from_connection_string(
        cls,
        url: str,
        *,
        schema: str | None = None,
        table_prefix: str = "retro_",
        min_size: int = 1,
        max_size: int = 10,
        prepare_threshold: int | None = 5,
        generic_plans: bool = True,
        message_partitions: int | None = None,
        pool_kwargs: Mapping[str, Any] | None = None,
        async_pool_kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> PostgresStore:
        """Make a store with its own pools, opened on first use and closed with it.

        Both pools check each connection as they hand it out, so connections a
        server restart or a terminated backend ended are replaced instead of failing
        the call. The check costs no round trip: only a connection whose server has
        sent something while it was idle (as ending it does) is pinged
        (``ConnectionPool.check_connection``) before use.

        Args:
            url: A libpq connection string or URL (``postgresql://user@host/db``).
            schema: The PostgreSQL schema holding the tables, created by `setup` if
                missing. Defaults to ``public``.
            table_prefix: Prepended to every table name: lowercase letters, digits and
                underscores, up to 30 characters.
            min_size: Connections each pool keeps open.
            max_size: Connections each pool may open.
            prepare_threshold: Executions of a query after which psycopg prepares it
                on the server (psycopg's default, 5); ``None`` never prepares, as
                PgBouncer before 1.21 in transaction mode requires.
            generic_plans: Have each connection the pools open plan a prepared
                statement once (``SET plan_cache_mode = force_generic_plan``), which
                saves the server about 2 ms of CPU a run. ``False`` behind a
                transaction-mode PgBouncer, where the setting would reach other
                clients of the same server connections (set it for the store's role
                there: ``ALTER ROLE ... SET plan_cache_mode = force_generic_plan``).
                No effect with ``prepare_threshold=None``.
            message_partitions: Create ``messages`` hash-partitioned by thread into
                this many partitions when `setup` creates a new schema (see
                ``docs/postgres-partitioning.md``); ``None`` for one table.
            pool_kwargs: Options of the sync ``psycopg_pool.ConnectionPool`` only,
                over the shared ones: callbacks (``configure``, ``reset``,
                ``check``; ``check=None`` turns the check off), ``kwargs``...
            async_pool_kwargs: The same for the ``AsyncConnectionPool``s (their
                callbacks are coroutine functions).
            **options: Further options of both pools (``timeout``, ``max_idle``,
                ``name``, ``kwargs`` for the connections...).

        Raises:
            StoreError: If the connection string cannot be parsed. A server that
                cannot be reached raises `StoreError` on first use.
            ValueError: If the schema or prefix is invalid.
            RetroValueError: If ``message_partitions`` is not 1 to 1024 or ``None``.
            TypeError: If ``options`` holds an option that differs between sync and
                async pools (pass it in ``pool_kwargs`` and ``async_pool_kwargs``).
        """
        store = cls.__new__(cls)
        store._init(
            schema=schema,
            table_prefix=table_prefix,
            message_partitions=message_partitions,
        )
        store._pools = _Pools.from_url(
            url,
            label=repr(store),
            min_size=min_size,
            max_size=max_size,
            prepare_threshold=prepare_threshold,
            generic_plans=generic_plans,
            pool_kwargs=pool_kwargs,
            async_pool_kwargs=async_pool_kwargs,
            options=options,
        )
        return store

    def __repr__(self) -> str:
        return (
            f"PostgresStore(schema={self.schema!r}, table_prefix={self.table_prefix!r})"
        )

    # --- plumbing ------------------------------------------------------------------

    def close(self) -> None:
        """Close the pools the store made; later calls raise `StoreClosedError`."""
        self._pools.close()

    async def aclose(self) -> None:
        """Async twin of `close`."""
        await self._pools.aclose()

    def _run(self, op: _Op[T], *, transaction: bool = False) -> T:
        """Run an operation on a pooled connection, in a transaction if asked."""
        self._pools.check_open()
        try:
            first = next(op)  # checks needing no I/O run before taking a connection
        except StopIteration as stop:
            return cast(T, stop.value)
        with (
            _errors(self._pools.label),
            closing(op),
            self._pools.connection() as conn,
            conn.transaction() if transaction else nullcontext(),
        ):
            return _drive(conn, _started(first, op))

    async def _arun(self, op: _Op[T], *, transaction: bool = False) -> T:
        """Async twin of `_run`."""
        self._pools.check_open()
        try:
            first = next(op)
        except StopIteration as stop:
            return cast(T, stop.value)
        with _errors(self._pools.label), closing(op):
            async with self._pools.aconnection() as conn:
                if not transaction:
                    return await _adrive(conn, _started(first, op))
                async with conn.transaction():
                    return await _adrive(conn, _started(first, op))

    # --- schema ----------------------------------------------------------------------

    def _setup(self) -> _Op[int]:
        names = self._names
        yield _q_lock(names)
        ((schema_exists, migrations_exist),) = yield _q_setup_state(names)
        if not schema_exists:
            yield _q_create_schema(names)
        version = 0
        if migrations_exist:
            ((found,),) = yield _q_schema_version(names)
            version = found or 0
        else:
            yield _q_create_migrations_table(names)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"Tables {self.table_prefix}* in schema {self.schema!r} have schema "
                f"version {version}, newer than the {SCHEMA_VERSION} this version "
                "knows. Upgrade langchain-retro."
            )
        if version == 0:
            # A new schema gets the current layout at once, partitioned if asked.
            yield _q_create_layout(names)
            yield _q_record_version(names)
            return SCHEMA_VERSION
        if self.message_partitions:
            ((partitioned,),) = yield _q_messages_partitioned(names)
            if not partitioned:
                raise SchemaVersionError(
                    f"Table {self.table_prefix}messages in schema {self.schema!r} "
                    f"exists and is not partitioned, so message_partitions="
                    f"{self.message_partitions} cannot apply: setup() partitions only "
                    "a new schema. Drop the option, or move the data into a "
                    "partitioned schema as docs/postgres-partitioning.md shows."
                )
        for number in range(version, SCHEMA_VERSION):
            yield _q_migrate(names, number)
            yield _q_record_migration(names, number)
        return SCHEMA_VERSION

    def setup(self) -> None:
        """Create the schema and tables, or migrate them; a no-op when up to date.

        Safe to call from several processes at once: migrations run one at a time
        under a transaction-level advisory lock. A new schema gets the current layout
        at once, with ``messages`` partitioned if the store was given
        ``message_partitions``.

        The migration from schema version 1 builds the ``(thread_seq, id)`` key and
        the metadata index, holding the tables locked while it runs (minutes for
        millions of rows): run it when the app is quiet, after stopping processes of
        the older version, whose appends would not keep the message counts.

        Raises:
            SchemaVersionError: If the tables were written by a newer version, or
                ``message_partitions`` was given for an unpartitioned table.
            StoreError: If PostgreSQL fails (the cause is chained).
        """
        self._run(self._setup(), transaction=True)

    async def asetup(self) -> None:
        """Async twin of `setup`."""
        await self._arun(self._setup(), transaction=True)

    def _schema_version(self) -> _Op[int | None]:
        ((_, migrations_exist),) = yield _q_setup_state(self._names)
        if not migrations_exist:
            return None
        ((found,),) = yield _q_schema_version(self._names)
        return int(found or 0)

    def schema_version(self) -> int | None:
        """The version of the store's tables, or ``None`` if there are none yet.

        Reads only: a way to look at a database without `setup` creating anything
        in it (a dry run, a health check). `setup` brings the tables to
        ``langchain_retro.stores.postgres.SCHEMA_VERSION``.
        """
        return self._run(self._schema_version())

    async def aschema_version(self) -> int | None:
        """Async twin of `schema_version`."""
        return await self._arun(self._schema_version())

    # --- assistants ------------------------------------------------------------------

    def _create_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> _Op[StoredAssistant]:
        checked = check_metadata(metadata, self.limits, "Assistant")
        check_assistant_fields(fields)
        try:
            draft = StoredAssistant(
                id=new_id("asst"), created_at=0, metadata=checked, **fields
            )
        except ValidationError as exc:
            raise RetroValueError(f"Invalid assistant fields: {exc}") from exc
        ((created_at,),) = yield _q_assistant_insert(self._names, draft)
        return draft.model_copy(update={"created_at": created_at})

    def create_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Create an assistant from its native fields and its metadata."""
        return self._run(self._create_assistant(fields, metadata))

    async def acreate_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Async twin of `create_assistant`."""
        return await self._arun(self._create_assistant(fields, metadata))

    def _get_assistant(self, assistant_id: str) -> _Op[StoredAssistant]:
        rows = yield _q_assistant_get(self._names, assistant_id)
        if not rows:
            raise AssistantNotFoundError(assistant_id)
        return _assistant(rows[0])

    def get_assistant(self, assistant_id: str) -> StoredAssistant:
        """Read an assistant; raises `AssistantNotFoundError`."""
        return self._run(self._get_assistant(assistant_id))

    async def aget_assistant(self, assistant_id: str) -> StoredAssistant:
        """Async twin of `get_assistant`."""
        return await self._arun(self._get_assistant(assistant_id))

    def _update_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None,
    ) -> _Op[StoredAssistant]:
        check_assistant_fields(fields)
        rows = yield _q_assistant_get(self._names, assistant_id, lock=True)
        if not rows:
            raise AssistantNotFoundError(assistant_id)
        current = _assistant(rows[0])
        metadata = (
            patch.apply(current.metadata, self.limits) if patch else current.metadata
        )
        try:
            updated = StoredAssistant.model_validate(
                {**current.model_dump(), **fields, "metadata": metadata}
            )
        except ValidationError as exc:
            raise RetroValueError(
                f"Invalid fields for assistant {assistant_id!r}: {exc}"
            ) from exc
        yield _q_assistant_update(self._names, updated)
        return updated

    def update_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Change native fields and apply a metadata patch, in one transaction."""
        return self._run(
            self._update_assistant(assistant_id, fields, patch), transaction=True
        )

    async def aupdate_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Async twin of `update_assistant`."""
        return await self._arun(
            self._update_assistant(assistant_id, fields, patch), transaction=True
        )

    def _delete_assistant(
        self, assistant_id: str, threads: AssistantThreads
    ) -> _Op[int]:
        if threads not in ("refuse", "keep", "delete"):
            raise RetroValueError(
                f"threads must be 'refuse', 'keep' or 'delete', not {threads!r}"
            )
        if not (yield _q_assistant_get(self._names, assistant_id, lock=True)):
            raise AssistantNotFoundError(assistant_id)
        linked = [
            seq for (seq,) in (yield _q_assistant_threads(self._names, assistant_id))
        ]
        if linked and threads == "refuse":
            raise AssistantInUseError(assistant_id, len(linked))
        doomed = linked if threads == "delete" else []
        yield _q_assistant_delete(self._names, assistant_id, doomed)
        return len(doomed)

    def delete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Delete an assistant; returns how many of its threads were deleted."""
        return self._run(
            self._delete_assistant(assistant_id, threads), transaction=True
        )

    async def adelete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Async twin of `delete_assistant`."""
        return await self._arun(
            self._delete_assistant(assistant_id, threads), transaction=True
        )

    def _list_assistants(
        self,
        metadata: Mapping[str, str] | None,
        classes: Sequence[str] | None,
        after: str | None,
        order: Order,
        limit: int,
    ) -> _Op[list[StoredAssistant]]:
        params: list[Any] = []
        where = _filters(metadata, classes, params)
        if after is not None:
            rows = yield _q_seq_of(self._names, "assistants", after)
            if not rows:
                raise AssistantNotFoundError(after, hint="(used as a cursor)")
            where.append(_seq_bound(order != "desc"))
            params.append(rows[0][0])
        rows = yield _q_listing(
            self._names,
            "assistants",
            _FRAGMENTS["assistant_columns"],
            where,
            params,
            desc=order == "desc",
            limit=limit,
        )
        return [_assistant(row) for row in rows]

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
        return self._run(self._list_assistants(metadata, classes, after, order, limit))

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
        return await self._arun(
            self._list_assistants(metadata, classes, after, order, limit)
        )

    # --- threads ---------------------------------------------------------------------

    def _create_thread(self, metadata: Mapping[str, str]) -> _Op[StoredThread]:
        checked = check_metadata(metadata, self.limits, "Thread")
        thread_id = new_id("thread")
        ((created_at,),) = yield _q_thread_insert(self._names, thread_id, checked)
        return StoredThread(id=thread_id, created_at=created_at, metadata=checked)

    def create_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Create a thread with the given metadata."""
        return self._run(self._create_thread(metadata))

    async def acreate_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Async twin of `create_thread`."""
        return await self._arun(self._create_thread(metadata))

    def _create_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> _Op[list[StoredThread]]:
        checked = [check_metadata(m, self.limits, "Thread") for m in metadatas]
        if not checked:
            return []
        ids = [new_id("thread") for _ in checked]
        ((created_at, _),) = yield _q_threads_insert(
            self._names, ids, [dumps(metadata) for metadata in checked]
        )
        return [
            StoredThread(id=thread_id, created_at=created_at, metadata=metadata)
            for thread_id, metadata in zip(ids, checked, strict=True)
        ]

    def create_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Create many threads in one statement, all or none, in the given order.

        Every metadata map is checked before anything is written.
        """
        return self._run(self._create_threads(metadatas))

    async def acreate_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Async twin of `create_threads`."""
        return await self._arun(self._create_threads(metadatas))

    def _get_thread(self, thread_id: str) -> _Op[StoredThread]:
        rows = yield _q_thread_get(self._names, thread_id)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        _, created_at, metadata = rows[0]
        return _thread(thread_id, created_at, metadata)

    def get_thread(self, thread_id: str) -> StoredThread:
        """Read a thread; raises `ThreadNotFoundError`."""
        return self._run(self._get_thread(thread_id))

    async def aget_thread(self, thread_id: str) -> StoredThread:
        """Async twin of `get_thread`."""
        return await self._arun(self._get_thread(thread_id))

    def _update_thread(self, thread_id: str, patch: MetadataPatch) -> _Op[StoredThread]:
        rows = yield _q_thread_get(self._names, thread_id, lock=True)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        thread_seq, created_at, current = rows[0]
        metadata = patch.apply(
            _thread(thread_id, created_at, current).metadata, self.limits
        )
        yield _q_thread_set_metadata(self._names, thread_seq, metadata)
        return StoredThread(id=thread_id, created_at=created_at, metadata=metadata)

    def update_thread(self, thread_id: str, patch: MetadataPatch) -> StoredThread:
        """Apply a metadata patch to a thread, in one transaction."""
        return self._run(self._update_thread(thread_id, patch), transaction=True)

    async def aupdate_thread(
        self, thread_id: str, patch: MetadataPatch
    ) -> StoredThread:
        """Async twin of `update_thread`."""
        return await self._arun(self._update_thread(thread_id, patch), transaction=True)

    def _delete_thread(self, thread_id: str) -> _Op[None]:
        if not (yield _q_thread_delete(self._names, thread_id)):
            raise ThreadNotFoundError(thread_id)

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread with all its messages."""
        self._run(self._delete_thread(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        """Async twin of `delete_thread`."""
        await self._arun(self._delete_thread(thread_id))

    def _list_threads(self, query: ThreadQuery) -> _Op[list[StoredThread]]:
        desc = query.order == "desc"
        filters = [(key, [value]) for key, value in query.metadata.items()]
        if query.classes is not None:
            filters.append((CLASS_KEY, list(query.classes)))
        bounds: list[tuple[int, bool]] = []  # (seq, whether to list newer threads)
        if query.after is not None or query.before is not None:
            ((after_seq, before_seq),) = yield _q_thread_cursors(
                self._names, query.after, query.before
            )
            for cursor_id, seq, newer in (
                (query.after, after_seq, not desc),
                (query.before, before_seq, desc),
            ):
                if cursor_id is None:
                    continue
                if seq is None:
                    raise ThreadNotFoundError(cursor_id)
                bounds.append((seq, newer))
        # A page before a cursor is the one nearest it: read towards it, then turn.
        backwards = query.before is not None
        if filters:
            lo, hi = _NO_SEQ, _MAX_SEQ
            for seq, newer in bounds:
                lo, hi = (max(lo, seq + 1), hi) if newer else (lo, min(hi, seq - 1))
            rows = yield _q_thread_walk(
                self._names,
                filters,
                lo,
                hi,
                desc=desc != backwards,
                limit=query.limit,
            )
        else:
            params: list[Any] = []
            where: list[Any] = []
            for seq, newer in bounds:
                where.append(_seq_bound(newer))
                params.append(seq)
            rows = yield _q_listing(
                self._names,
                "threads",
                _THREAD_COLUMNS,
                where,
                params,
                desc=desc != backwards,
                limit=query.limit,
            )
        threads = [_thread(r[0], r[1], r[2]) for r in rows]
        return threads[::-1] if backwards else threads

    def list_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """List threads matching a query, in the query's order."""
        return self._run(self._list_threads(query))

    async def alist_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """Async twin of `list_threads`."""
        return await self._arun(self._list_threads(query))

    # --- messages --------------------------------------------------------------------

    def _append(
        self,
        thread_id: str,
        ids: list[str],
        messages: Sequence[NewMessage],
        thread_metadata: dict[str, str] | None,
    ) -> _Op[int]:
        """Append (one statement); the ``created_at`` the messages were given."""
        try:
            rows = yield _q_messages_append(
                self._names, thread_id, ids, messages, thread_metadata
            )
        except psycopg.errors.UniqueViolation as exc:
            raise _conflict(exc, self._names, thread_id, messages) from exc
        created_at, clash = rows[0]
        if clash is not None:
            raise MessageIdConflictError(thread_id, clash)
        if created_at is None:
            raise ThreadNotFoundError(thread_id)
        return int(created_at)

    def _add_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        thread_patch: MetadataPatch | None,
        hwm_key: str | None,
    ) -> _Op[list[StoredMessage]]:
        check_new_ids(thread_id, messages)
        for message in messages:
            check_limits(message.metadata, self.limits)
        if hwm_key is not None:
            check_hwm_key(hwm_key, self.limits)
        ids = _message_ids(messages)
        replies = hwm_key is not None and has_reply(messages)
        thread_metadata = None
        if thread_patch is not None or replies:
            rows = yield _q_thread_get(self._names, thread_id, lock=True)
            if not rows:
                raise ThreadNotFoundError(thread_id)
            thread_seq, created_at, current = rows[0]
            metadata = _thread(thread_id, created_at, current).metadata
            if thread_patch is not None:
                metadata = thread_patch.apply(metadata, self.limits)
                thread_metadata = metadata
            if replies and hwm_key is not None:
                answered = answered_in_batch(messages, ids)
                if answered is None:
                    found = yield _q_last_asked(self._names, thread_seq)
                    answered = found[0][0] if found else None
                if answered is not None:
                    mark = MetadataPatch(set={hwm_key: answered})
                    thread_metadata = mark.apply(metadata, self.limits)
        created_at = yield from self._append(thread_id, ids, messages, thread_metadata)
        return [
            message.stored(message_id, thread_id, created_at)
            for message_id, message in zip(ids, messages, strict=True)
        ]

    def add_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
        hwm_key: str | None = None,
    ) -> list[StoredMessage]:
        """Append messages to a thread, all or none, in the given order.

        One statement; a transaction that reads the thread first when a
        ``thread_patch`` or ``hwm_key`` changes its metadata. A caller id already in
        the thread raises `MessageIdConflictError` and writes nothing, the sequence
        included.
        """
        return self._run(
            self._add_messages(thread_id, messages, thread_patch, hwm_key),
            transaction=thread_patch is not None
            or (hwm_key is not None and has_reply(messages)),
        )

    async def aadd_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
        hwm_key: str | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `add_messages`."""
        return await self._arun(
            self._add_messages(thread_id, messages, thread_patch, hwm_key),
            transaction=thread_patch is not None
            or (hwm_key is not None and has_reply(messages)),
        )

    def _add_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        scope: Mapping[str, str] | None,
    ) -> _Op[list[StoredMessage]]:
        check_new_ids(thread_id, messages)
        for message in messages:
            check_limits(message.metadata, self.limits)
        names = self._names
        owner = new_id("write")
        ids = _message_ids(messages)
        while True:
            # One round trip, one transaction: take the lease as begin_run does (so
            # a run that starts meanwhile waits for this commit and then reads the
            # messages, and this waits for a run's), append if it was taken and no
            # run waits for tool outputs, give the lease back. Nobody ever sees it.
            try:
                leased, appended, _ = yield (
                    _q_lease_acquire(names, thread_id, owner, _IDLE_LEASE_TTL),
                    _q_messages_append(
                        names,
                        thread_id,
                        ids,
                        messages,
                        None,
                        leased_by=owner,
                        idle=True,
                        scope=scope,
                    ),
                    _q_lease_release(names, thread_id, owner),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise _conflict(exc, names, thread_id, messages) from exc
            ((thread_found, _),) = leased
            if not thread_found:
                raise ThreadNotFoundError(thread_id)
            ((created_at, clash),) = appended
            if clash is not None:
                raise MessageIdConflictError(thread_id, clash)
            if created_at is not None:
                return [
                    message.stored(message_id, thread_id, int(created_at))
                    for message_id, message in zip(ids, messages, strict=True)
                ]
            if scope is not None:
                ((seen,),) = yield _q_in_scope(names, thread_id, scope)
                if not seen:
                    raise ThreadNotFoundError(thread_id)
            ((held, run_id, status),) = yield _q_busy(names, thread_id)
            refusal = busy_refusal(thread_id, leased=held, run_id=run_id, status=status)
            if refusal is not None:
                raise busy_error(refusal)
            # The run that held the thread ended in between: try again.

    def add_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        scope: Mapping[str, str] | None = None,
    ) -> list[StoredMessage]:
        """Append messages unless a run keeps the thread busy, in one transaction.

        See `BaseStore.add_messages_if_idle`. One round trip: the thread's lease is
        taken and given back inside the transaction that appends, so a run that
        starts meanwhile waits for it and reads the new messages; ``scope`` is a
        condition of the same statement.
        """
        # No explicit transaction: each attempt is one pipelined batch, which is
        # one implicit transaction (BEGIN and COMMIT would be two more round trips).
        return self._run(self._add_messages_if_idle(thread_id, messages, scope))

    async def aadd_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        scope: Mapping[str, str] | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `add_messages_if_idle`."""
        return await self._arun(self._add_messages_if_idle(thread_id, messages, scope))

    def _bulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> _Op[int]:
        by_thread: dict[str, list[NewMessage]] = {}
        for thread_id, messages in batches:
            by_thread.setdefault(thread_id, []).extend(messages)
            for message in messages:
                check_limits(message.metadata, self.limits)
        for thread_id, messages in by_thread.items():
            check_new_ids(thread_id, messages)
        if not by_thread:
            return 0
        names = self._names
        locked = yield _q_threads_lock(names, list(by_thread))
        seqs = {thread_id: seq for thread_id, seq, _, _ in locked}
        next_seqs = {thread_id: next_seq for thread_id, _, next_seq, _ in locked}
        for thread_id in by_thread:
            if thread_id not in seqs:
                raise ThreadNotFoundError(thread_id)
        rows, clash_seqs, clash_ids = _bulk_rows(batches, seqs, next_seqs, locked[0][3])
        if clash_ids:
            clash = yield _q_bulk_clash(names, clash_seqs, clash_ids)
            if clash:
                by_seq = {seq: thread_id for thread_id, seq in seqs.items()}
                raise MessageIdConflictError(by_seq[clash[0][0]], clash[0][1])
        try:
            yield _copy_messages(names, rows)
        except psycopg.errors.UniqueViolation as exc:
            first = next(iter(by_thread))
            raise _conflict(exc, names, first, by_thread[first]) from exc
        counts = {thread_id: len(messages) for thread_id, messages in by_thread.items()}
        yield _q_bulk_advance(
            names, [seqs[t] for t in counts], [counts[t] for t in counts]
        )
        return len(rows)

    def bulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Append messages to many threads in one transaction, all or none.

        Four statements whatever the size: lock the threads (in one order, so bulk
        writers cannot deadlock), look for caller ids already taken, ``COPY`` the
        messages in, move each thread's sequence and count.
        """
        return self._run(self._bulk_add_messages(batches), transaction=True)

    async def abulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Async twin of `bulk_add_messages`."""
        return await self._arun(self._bulk_add_messages(batches), transaction=True)

    def _get_message(self, thread_id: str, message_id: str) -> _Op[StoredMessage]:
        rows = yield _q_message_get(self._names, thread_id, message_id)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        if rows[0][0] is None:
            raise MessageNotFoundError(message_id, hint=f"(in thread {thread_id!r})")
        return _message(rows[0], thread_id)

    def get_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Read a message of a thread; raises `MessageNotFoundError`."""
        return self._run(self._get_message(thread_id, message_id))

    async def aget_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Async twin of `get_message`."""
        return await self._arun(self._get_message(thread_id, message_id))

    def _list_messages(
        self,
        thread_id: str,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int | None,
    ) -> _Op[list[StoredMessage]]:
        rows = yield from self._message_rows(thread_id, after, before, order, limit)
        return [_message(row, thread_id) for row in rows]

    def _list_message_payloads(
        self, thread_id: str, order: Order, limit: int | None
    ) -> _Op[list[tuple[str, str]]]:
        rows = yield from self._message_rows(thread_id, None, None, order, limit)
        return [(row[0], row[4]) for row in rows]

    def _message_rows(
        self,
        thread_id: str,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int | None,
    ) -> _Op[_Rows]:
        if limit is not None and limit < 0:
            raise RetroValueError(f"limit must be >= 0 or None, not {limit}")
        rows = yield _q_message_cursors(self._names, thread_id, after, before)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        thread_seq, after_seq, before_seq = rows[0]
        for cursor_id, seq in ((after, after_seq), (before, before_seq)):
            if cursor_id is not None and seq is None:
                raise MessageNotFoundError(cursor_id, hint="(not in this thread)")
        # A limited page before a cursor is the one nearest it: oldest first, read
        # towards the cursor, then turn.
        backwards = before is not None and limit is not None and order == "asc"
        rows = yield _q_messages_list(
            self._names,
            thread_seq,
            _NO_SEQ if after_seq is None else after_seq,
            _MAX_SEQ if before_seq is None else before_seq,
            desc=order == "desc" or backwards,
            limit=limit,
        )
        found: _Rows = rows
        if backwards:
            found.reverse()
        return found

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
        return self._run(self._list_messages(thread_id, after, before, order, limit))

    def list_message_payloads(
        self, thread_id: str, *, order: Order = "asc", limit: int | None = None
    ) -> list[tuple[str, str]]:
        """(id, payload) of a thread's messages, without building row objects."""
        return self._run(self._list_message_payloads(thread_id, order, limit))

    async def alist_message_payloads(
        self, thread_id: str, *, order: Order = "asc", limit: int | None = None
    ) -> list[tuple[str, str]]:
        """Async twin of `list_message_payloads`."""
        return await self._arun(self._list_message_payloads(thread_id, order, limit))

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
        return await self._arun(
            self._list_messages(thread_id, after, before, order, limit)
        )

    def _update_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> _Op[StoredMessage]:
        rows = yield _q_message_get_for_update(self._names, thread_id, message_id)
        if not rows:
            if not (yield _q_seq_of(self._names, "threads", thread_id)):
                raise ThreadNotFoundError(thread_id)
            raise MessageNotFoundError(message_id, hint=f"(in thread {thread_id!r})")
        current = _message(rows[0], thread_id)
        metadata = patch.apply(current.metadata, self.limits)
        yield _q_message_set_metadata(self._names, rows[0][8], message_id, metadata)
        return current.model_copy(update={"metadata": metadata})

    def update_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Apply a metadata patch to a message."""
        return self._run(
            self._update_message(thread_id, message_id, patch), transaction=True
        )

    async def aupdate_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Async twin of `update_message`."""
        return await self._arun(
            self._update_message(thread_id, message_id, patch), transaction=True
        )

    def _delete_message(self, thread_id: str, message_id: str) -> _Op[None]:
        # The thread is locked first, as appends and clears lock it: no deadlock.
        rows = yield _q_thread_get(self._names, thread_id, lock=True)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        ((deleted,),) = yield _q_message_delete(self._names, rows[0][0], message_id)
        if not deleted:
            raise MessageNotFoundError(message_id, hint=f"(in thread {thread_id!r})")

    def delete_message(self, thread_id: str, message_id: str) -> None:
        """Delete one message of a thread."""
        self._run(self._delete_message(thread_id, message_id), transaction=True)

    async def adelete_message(self, thread_id: str, message_id: str) -> None:
        """Async twin of `delete_message`."""
        await self._arun(self._delete_message(thread_id, message_id), transaction=True)

    def _clear_messages(
        self, thread_id: str, thread_patch: MetadataPatch | None
    ) -> _Op[int]:
        rows = yield _q_thread_get(self._names, thread_id, lock=True)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        thread_seq, created_at, current = rows[0]
        thread_metadata = None
        if thread_patch is not None:
            current = _thread(thread_id, created_at, current).metadata
            thread_metadata = thread_patch.apply(current, self.limits)
        ((count,),) = yield _q_messages_clear(self._names, thread_seq, thread_metadata)
        return int(count)

    def clear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Delete all of a thread's messages (the thread stays); returns how many."""
        return self._run(
            self._clear_messages(thread_id, thread_patch), transaction=True
        )

    async def aclear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Async twin of `clear_messages`."""
        return await self._arun(
            self._clear_messages(thread_id, thread_patch), transaction=True
        )

    def _count_messages(self, thread_id: str, after: str | None) -> _Op[int]:
        rows = yield _q_messages_count(self._names, thread_id, after)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        after_seq, count = rows[0]
        if after is not None and after_seq is None:
            raise MessageNotFoundError(after, hint="(not in this thread)")
        return int(count)

    def count_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Count a thread's messages, or those after the message ``after``."""
        return self._run(self._count_messages(thread_id, after))

    async def acount_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Async twin of `count_messages`."""
        return await self._arun(self._count_messages(thread_id, after))

    # --- run leases ------------------------------------------------------------------

    def _acquire_lease(self, thread_id: str, owner: str, ttl: float) -> _Op[bool]:
        ((thread_found, expires_at),) = yield _q_lease_acquire(
            self._names, thread_id, owner, ttl
        )
        if not thread_found:
            raise ThreadNotFoundError(thread_id)
        return expires_at is not None

    def acquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Take the thread's run lease for ``ttl`` seconds if free, expired or ours.

        Expiry is measured by the database clock, so workers on hosts with skewed
        clocks agree.
        """
        return self._run(self._acquire_lease(thread_id, owner, ttl))

    async def aacquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Async twin of `acquire_lease`."""
        return await self._arun(self._acquire_lease(thread_id, owner, ttl))

    def _release_lease(self, thread_id: str, owner: str) -> _Op[None]:
        yield _q_lease_release(self._names, thread_id, owner)

    def release_lease(self, thread_id: str, owner: str) -> None:
        """Give the lease back if ``owner`` still holds it."""
        self._run(self._release_lease(thread_id, owner))

    async def arelease_lease(self, thread_id: str, owner: str) -> None:
        """Async twin of `release_lease`."""
        await self._arun(self._release_lease(thread_id, owner))

    def _get_lease(self, thread_id: str) -> _Op[Lease | None]:
        rows = yield _q_lease_get(self._names, thread_id)
        if not rows:
            return None
        owner, expires_at = rows[0]
        return Lease(thread_id=thread_id, owner=owner, expires_at=expires_at)

    def get_lease(self, thread_id: str) -> Lease | None:
        """The thread's run lease if one is held and not expired, else ``None``.

        Expiry is by the database clock, as `acquire_lease` measures it.
        """
        return self._run(self._get_lease(thread_id))

    async def aget_lease(self, thread_id: str) -> Lease | None:
        """Async twin of `get_lease`."""
        return await self._arun(self._get_lease(thread_id))

    # --- runs ------------------------------------------------------------------------

    def _begin_run(
        self,
        thread_id: str,
        *,
        owner: str,
        ttl: float,
        new: NewRun | None,
        messages: Sequence[NewMessage],
        context_limit: int | None,
        resume: bool,
    ) -> _Op[RunStart | None]:
        check_new_ids(thread_id, messages)
        for message in messages:
            check_limits(message.metadata, self.limits)
        new = NewRun(id=owner) if new is None else new
        names = self._names
        while True:
            ids = _message_ids(messages)
            # One batch, so one round trip and one transaction: the lease, the
            # writes, then the reads. Each statement reads a snapshot taken after
            # the previous one (and its wait for the lease or the thread's row), so
            # it sees what the previous run committed.
            try:
                leased, began, thread_rows, newest = yield (
                    _q_lease_acquire(names, thread_id, owner, ttl),
                    _q_run_begin(
                        names,
                        thread_id,
                        owner=owner,
                        row=new_run_row(new, thread_id, {}, 0),
                        ids=ids,
                        messages=messages,
                        resume=resume,
                    ),
                    _q_run_thread(names, thread_id, owner),
                    _q_run_context(names, thread_id, owner, context_limit),
                )
            except psycopg.errors.UniqueViolation as exc:  # a race the checks missed
                raise _conflict(exc, names, thread_id, messages, run_id=new.id) from exc
            ((thread_found, expires_at),) = leased
            if not thread_found:
                raise ThreadNotFoundError(thread_id)
            if expires_at is None:
                return None
            ((held, clash, run_taken, *waiting, resumed, now, version),) = began
            if clash is not None:
                raise MessageIdConflictError(thread_id, clash)
            if run_taken:
                raise _run_taken(thread_id, new.id)
            if not held or not thread_rows:
                raise ThreadNotFoundError(thread_id)  # deleted while we took the lease
            if now is not None:
                break
            # The run to resume was cancelled meanwhile: begin again, a new run.
        try:
            thread, assistant = _thread_and_assistant(thread_id, thread_rows[0])
            context = [_message_row(row, thread_id) for row in reversed(newest)]
            if resumed:
                run = resumed_run(_run_of(waiting, thread_id), now)
                mark = {"run_id": run.id}
                messages = [
                    m if m.run_id is not None else m.model_copy(update=mark)
                    for m in messages
                ]
            else:
                run = new_run_row(new, thread_id, thread.metadata, now)
        except CorruptDataError:
            # A run that cannot read its thread holds no lease and is left as it
            # was (its input stays).
            undone = new.id if not resumed else waiting[0]
            yield _q_run_undo(
                names, thread_id, owner, undone, waiting if resumed else None
            )
            raise
        self._begun.put(
            _Begun(thread_id, owner, run, version, thread.created_at, thread.metadata)
        )
        return RunStart.model_construct(
            thread=thread,
            assistant=assistant,
            appended=[
                message.stored(message_id, thread_id, now)
                for message_id, message in zip(ids, messages, strict=True)
            ],
            context=context,
            run=run.model_copy(update={"expires_at": int(expires_at)}),
            resumed=bool(resumed),
        )

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
        """Start a run in one round trip: lease, run, thread, assistant, input, context.

        The statements are pipelined in one transaction (with libpq older than 14,
        which cannot pipeline, they take a round trip each), resuming a run or not.
        """
        return self._run(
            self._begin_run(
                thread_id,
                owner=owner,
                ttl=ttl,
                new=run,
                messages=messages,
                context_limit=context_limit,
                resume=resume,
            ),
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
        return await self._arun(
            self._begin_run(
                thread_id,
                owner=owner,
                ttl=ttl,
                new=run,
                messages=messages,
                context_limit=context_limit,
                resume=resume,
            ),
        )

    def _finish_run(
        self,
        thread_id: str,
        *,
        owner: str,
        run_id: str,
        update: RunUpdate,
        messages: Sequence[NewMessage],
        thread_patch: MetadataPatch | None,
    ) -> _Op[RunSaved]:
        check_new_ids(thread_id, messages)
        for message in messages:
            check_limits(message.metadata, self.limits)
        names = self._names
        # A run this store began is written at once, as begin_run left it: if it
        # changed since, nothing is written and it is read as any other.
        begun = None
        if update.status not in ACTIVE_RUN_STATUSES:
            begun = self._begun.take(run_id, thread_id, owner)
        while True:
            if begun is not None:
                read, begun = begun.as_read(), None
            else:
                read = yield from self._read_run(thread_id, run_id)
            run = read.run
            metadata = None
            if run.status in ("cancelling", "cancelled"):
                # A cancel came while it ran (written cancelled if another run took
                # the thread over since): it ends cancelled, nothing else is kept.
                ended = run
                if run.status == "cancelling":
                    ended = updated_run(run, _CANCELLED, read.lease.now)
                saving: list[NewMessage] = []
                usage = None
            else:
                ended = updated_run(run, update, read.lease.now)
                saving, usage = list(messages), update.usage
                if thread_patch is not None:
                    current = _thread(
                        thread_id, read.thread_created_at, read.thread_metadata
                    ).metadata
                    metadata = current, thread_patch.apply(current, self.limits)
            ids = _message_ids(saving)
            stamp = END_STAMPS.get(ended.status) if ended is not run else None
            done = yield _q_run_finish(
                names,
                thread_id,
                owner=owner,
                run=ended,
                version=read.version,
                stamp=stamp,
                write=ended is not run,
                release=ended.status not in ACTIVE_RUN_STATUSES
                and read.lease.holder == owner,
                ids=ids,
                messages=saving,
                metadata=metadata,
                usage=_tokens(usage),
            )
            ((as_read, appended_at, clash),) = done
            if clash is not None:
                raise MessageIdConflictError(thread_id, clash)
            if as_read:
                break
            # The run or the thread's metadata changed since it was read: again.
        if stamp is not None:  # the database's time, as the statement wrote it
            ended = ended.model_copy(update={stamp: appended_at})
        return RunSaved(
            messages=[
                message.stored(message_id, thread_id, appended_at)
                for message_id, message in zip(ids, saving, strict=True)
            ],
            run=read.lease.settled(ended, read.lease_owner),
        )

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
        """Write a run's step or end in one statement, all or nothing.

        The statement, if neither the run nor the thread's metadata changed since they
        were read, appends, patches the thread, adds the usage, writes the run and
        gives the lease back. The end of a run that this store began is written as
        `begin_run` left it, in one round trip; otherwise (or if it changed since) the
        run, its lease and the thread are read first, and again until nothing
        changed between the read and the write.
        """
        return self._run(
            self._finish_run(
                thread_id,
                owner=owner,
                run_id=run_id,
                update=update,
                messages=messages,
                thread_patch=thread_patch,
            ),
        )

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
        return await self._arun(
            self._finish_run(
                thread_id,
                owner=owner,
                run_id=run_id,
                update=update,
                messages=messages,
                thread_patch=thread_patch,
            ),
        )

    def _renew_run(self, thread_id: str, owner: str, ttl: float) -> _Op[RunLeaseState]:
        ((renewed, status),) = yield _q_run_renew(self._names, thread_id, owner, ttl)
        if not renewed:
            return "lost"
        return "cancelling" if status in ("cancelling", "cancelled") else "held"

    def renew_run(self, thread_id: str, *, owner: str, ttl: float) -> RunLeaseState:
        """Renew a running run's lease, in one statement, and say if it may go on.

        The lease is renewed while ``owner`` still holds it, even past its expiry
        (nobody took it over). A run whose lapse was already written ``expired`` (a
        cancel read it while its lease had lapsed) has ended: its lease is given
        back and the answer is ``lost``.
        """
        return self._run(self._renew_run(thread_id, owner, ttl))

    async def arenew_run(
        self, thread_id: str, *, owner: str, ttl: float
    ) -> RunLeaseState:
        """Async twin of `renew_run`."""
        return await self._arun(self._renew_run(thread_id, owner, ttl))

    def _missing_run(self, thread_id: str, run_id: str) -> _Op[NoReturn]:
        """Raise `ThreadNotFoundError` or `RunNotFoundError`, whichever is missing."""
        if not (yield _q_seq_of(self._names, "threads", thread_id)):
            raise ThreadNotFoundError(thread_id)
        raise RunNotFoundError(run_id, hint=f"(on thread {thread_id!r})")

    def _read_run(self, thread_id: str, run_id: str) -> _Op[_RunRead]:
        """A run with its lease, clocks and version, and its thread's metadata.

        Raises:
            ThreadNotFoundError: If the thread does not exist.
            RunNotFoundError: If the run is not on it.
        """
        rows = yield _q_run_get(self._names, thread_id, run_id)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        if rows[0][0] is None:
            raise RunNotFoundError(run_id, hint=f"(on thread {thread_id!r})")
        return _run_read(rows[0], thread_id)

    def _get_run(self, thread_id: str, run_id: str) -> _Op[StoredRun]:
        return (yield from self._read_run(thread_id, run_id)).settled

    def get_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Read a run of a thread, settled by its lease and the database clock."""
        return self._run(self._get_run(thread_id, run_id))

    async def aget_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `get_run`."""
        return await self._arun(self._get_run(thread_id, run_id))

    def _list_runs(
        self,
        thread_id: str,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int,
    ) -> _Op[list[StoredRun]]:
        if limit < 0:
            raise RetroValueError(f"limit must be >= 0, not {limit}")
        rows = yield _q_run_cursors(self._names, thread_id, after, before)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        thread_seq, after_seq, before_seq = rows[0]
        for cursor_id, seq in ((after, after_seq), (before, before_seq)):
            if cursor_id is not None and seq is None:
                raise RunNotFoundError(cursor_id, hint=f"(on thread {thread_id!r})")
        # A page before a cursor is the one nearest it: oldest first, read towards
        # the cursor, then turn (as list_messages reads).
        backwards = before is not None and order == "asc"
        rows = yield _q_runs_list(
            self._names,
            thread_id,
            thread_seq,
            _NO_SEQ if after_seq is None else after_seq,
            _MAX_SEQ if before_seq is None else before_seq,
            desc=order == "desc" or backwards,
            limit=limit,
        )
        runs = [_lease_of(row).settled(_run_of(row, thread_id), row[4]) for row in rows]
        return runs[::-1] if backwards else runs

    def list_runs(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredRun]:
        """List a thread's runs by creation, newest first by default, settled."""
        return self._run(self._list_runs(thread_id, after, before, order, limit))

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
        return await self._arun(self._list_runs(thread_id, after, before, order, limit))

    def _get_run_setup(self, thread_id: str, assistant_id: str) -> _Op[RunSetup]:
        ((created_at, metadata, *row),) = yield _q_run_setup(
            self._names, thread_id, assistant_id
        )
        thread = None
        if created_at is not None:
            thread = _thread(thread_id, created_at, metadata)
        assistant_row, run_row = row[:_ASSISTANT_WIDTH], row[_ASSISTANT_WIDTH:]
        assistant = None if assistant_row[0] is None else _assistant(assistant_row)
        newest = None
        if run_row[0] is not None:
            newest = _lease_of(run_row).settled(_run_of(run_row, thread_id), run_row[4])
        return RunSetup(thread, assistant, newest)

    def get_run_setup(self, thread_id: str, assistant_id: str) -> RunSetup:
        """A thread, an assistant and the thread's newest run, in one statement."""
        return self._run(self._get_run_setup(thread_id, assistant_id))

    async def aget_run_setup(self, thread_id: str, assistant_id: str) -> RunSetup:
        """Async twin of `get_run_setup`."""
        return await self._arun(self._get_run_setup(thread_id, assistant_id))

    def _cancel_run(self, thread_id: str, run_id: str) -> _Op[StoredRun]:
        while True:
            read = yield from self._read_run(thread_id, run_id)
            settled = read.settled
            try:
                cancelled = cancel_requested(settled, read.lease.now)
            except RunStateError:
                # Ended: refused, but a lapse only read so far is written as it
                # reads.
                if settled.status == read.run.status or (
                    yield _q_run_write(self._names, settled, read.version)
                ):
                    raise
                continue
            if cancelled == settled or (
                yield _q_run_write(self._names, cancelled, read.version)
            ):
                return cancelled
            # The run changed since it was read: again.

    def cancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Ask a run to stop: read it, then write it if it did not change meanwhile.

        A run that lapsed is settled first, and its lapsed status written even when
        the cancel is then refused with `RunStateError`.
        """
        return self._run(self._cancel_run(thread_id, run_id))

    async def acancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `cancel_run`."""
        return await self._arun(self._cancel_run(thread_id, run_id))

    def _update_run_metadata(
        self, thread_id: str, run_id: str, metadata: dict[str, str]
    ) -> _Op[StoredRun]:
        while True:
            read = yield from self._read_run(thread_id, run_id)
            updated = read.settled.model_copy(update={"metadata": metadata})
            if (yield _q_run_write(self._names, updated, read.version)):
                return updated
            # The run changed since it was read: again.

    def update_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Replace a run's metadata if the run did not change since it was read."""
        checked = check_metadata(metadata, self.limits, "Run")
        return self._run(self._update_run_metadata(thread_id, run_id, checked))

    async def aupdate_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Async twin of `update_run_metadata`."""
        checked = check_metadata(metadata, self.limits, "Run")
        return await self._arun(self._update_run_metadata(thread_id, run_id, checked))

    def _list_run_messages(
        self, thread_id: str, run_id: str
    ) -> _Op[list[StoredMessage]]:
        rows = yield _q_run_messages(self._names, thread_id, run_id)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        return [_message(row, thread_id) for row in rows if row[0] is not None]

    def list_run_messages(self, thread_id: str, run_id: str) -> list[StoredMessage]:
        """The messages a run wrote, in thread order, read by the run's index."""
        return self._run(self._list_run_messages(thread_id, run_id))

    async def alist_run_messages(
        self, thread_id: str, run_id: str
    ) -> list[StoredMessage]:
        """Async twin of `list_run_messages`."""
        return await self._arun(self._list_run_messages(thread_id, run_id))

    def _get_thread_usage(self, thread_id: str) -> _Op[RunUsage]:
        rows = yield _q_thread_usage(self._names, thread_id)
        if not rows:
            raise ThreadNotFoundError(thread_id)
        prompt, completion, total = rows[0]
        return RunUsage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=total
        )

    def get_thread_usage(self, thread_id: str) -> RunUsage:
        """The tokens of all the thread's runs: a running total, read in O(1)."""
        return self._run(self._get_thread_usage(thread_id))

    async def aget_thread_usage(self, thread_id: str) -> RunUsage:
        """Async twin of `get_thread_usage`."""
        return await self._arun(self._get_thread_usage(thread_id))

    # --- copies that keep ids (migrate, import) --------------------------------------

    keeps_ids = True

    def _import_assistants(
        self, assistants: Sequence[StoredAssistant]
    ) -> _Op[list[str]]:
        check_copies(assistants, self.limits, "Assistant")
        if not assistants:
            return []
        rows = yield _q_import_assistants(self._names, assistants)
        return _in_order(assistants, rows)

    def import_assistants(self, assistants: Sequence[StoredAssistant]) -> list[str]:
        """Write assistants as they are, skipping ids present: one statement."""
        return self._run(self._import_assistants(assistants))

    async def aimport_assistants(
        self, assistants: Sequence[StoredAssistant]
    ) -> list[str]:
        """Async twin of `import_assistants`."""
        return await self._arun(self._import_assistants(assistants))

    def _import_threads(self, threads: Sequence[ThreadCopy]) -> _Op[list[str]]:
        check_copies(threads, self.limits, "Thread")
        if not threads:
            return []
        rows = yield _q_import_threads(self._names, threads)
        return _in_order(threads, rows)

    def import_threads(self, threads: Sequence[ThreadCopy]) -> list[str]:
        """Write threads as they are, skipping ids present: one statement."""
        return self._run(self._import_threads(threads))

    async def aimport_threads(self, threads: Sequence[ThreadCopy]) -> list[str]:
        """Async twin of `import_threads`."""
        return await self._arun(self._import_threads(threads))

    def _import_runs(self, runs: Sequence[StoredRun]) -> _Op[list[str]]:
        check_copies(runs, self.limits, "Run")
        if not runs:
            return []
        wanted = list(dict.fromkeys(r.thread_id for r in runs))
        present = {row[0] for row in (yield _q_threads_present(self._names, wanted))}
        for thread_id in wanted:
            if thread_id not in present:
                raise ThreadNotFoundError(thread_id)
        rows = yield _q_import_runs(
            self._names, [imported_run(r, _now()) for r in runs]
        )
        return _in_order(runs, rows)

    def import_runs(self, runs: Sequence[StoredRun]) -> list[str]:
        """Write run records as they are, skipping ids present: one transaction."""
        return self._run(self._import_runs(runs), transaction=True)

    async def aimport_runs(self, runs: Sequence[StoredRun]) -> list[str]:
        """Async twin of `import_runs`."""
        return await self._arun(self._import_runs(runs), transaction=True)


def _thread_and_assistant(
    thread_id: str, row: Sequence[Any]
) -> tuple[StoredThread, StoredAssistant | None]:
    """The thread and assistant of a `_q_run_thread` row.

    Raises:
        CorruptDataError: If either no longer rebuilds.
    """
    created_at, metadata, *assistant = row
    thread = _thread(thread_id, created_at, metadata)
    return thread, None if assistant[0] is None else _assistant(assistant)


_CANCELLED = RunUpdate(status="cancelled")
"""What `PostgresStore.finish_run` writes of a run that was being cancelled."""


def _tokens(usage: RunUsage | None) -> tuple[int, int, int]:
    """Prompt, completion and total tokens of ``usage`` (none: zeros)."""
    if usage is None:
        return 0, 0, 0
    return usage.prompt_tokens, usage.completion_tokens, usage.total_tokens


def _in_order(
    records: Sequence[StoredAssistant | ThreadCopy | StoredRun], rows: _Rows
) -> list[str]:
    """The ids of ``records`` that ``RETURNING id`` gave back, in the records' order."""
    written = {row[0] for row in rows}
    return [r.id for r in records if r.id in written]


def _now() -> float:
    """The local clock, for settling imported runs (as every read settles them)."""
    return time.time()
