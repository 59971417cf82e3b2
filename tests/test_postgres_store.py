"""PostgreSQL specifics of `PostgresStore`, beyond the contract every store passes.

Migrations and their lock, schemas and table prefixes sharing one database, the metadata
index behind the listing filters, the missing extra, bad connection strings, leases
timed by the database clock, concurrent appends, pools the caller owns, one async pool
per event loop, and the PgBouncer setting.
"""

from __future__ import annotations

import asyncio
import importlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
from conftest import explaining_store, postgres_url, stores_of

from langchain_retro import (
    MissingDependencyError,
    RetroValueError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    ThreadNotFoundError,
)
from langchain_retro.stores.base import (
    MetadataPatch,
    NewMessage,
    RunUpdate,
    ThreadQuery,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")
postgres_module = pytest.importorskip("langchain_retro.stores.postgres")
io_module = pytest.importorskip("langchain_retro.stores._postgres_io")
PostgresStore = postgres_module.PostgresStore


@pytest.fixture
def url() -> str:
    return postgres_url()


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., PostgresStore]]:
    """Stores on one fresh schema, set up; closed and the schema dropped after."""
    with stores_of("postgres", tmp_path) as factory:
        yield factory


@pytest.fixture
def schemas(url: str) -> Iterator[Callable[..., str]]:
    """Fresh schema names; each schema is dropped after the test."""
    made: list[str] = []

    def fresh(suffix: str = "") -> str:
        made.append(f"test_{uuid.uuid4().hex[:12]}{suffix}")
        return made[-1]

    yield fresh
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in made:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    psycopg.sql.Identifier(schema)
                )
            )


def sql_rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own; its rows, if it has any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params or None)
        return cursor.fetchall() if cursor.description is not None else []


def user(text: str) -> NewMessage:
    return NewMessage(role="user", payload=f'{{"type": "human", "content": "{text}"}}')


# --- migrations --------------------------------------------------------------------


def test_setup_records_the_schema_version(make: Callable[..., PostgresStore]) -> None:
    store = make()
    table = f'"{store.schema}"."retro_schema_migrations"'
    rows = sql_rows(postgres_url(), f"SELECT version, applied_at FROM {table}")
    assert [version for version, _ in rows] == [postgres_module.SCHEMA_VERSION]
    assert rows[0][1] is not None


def test_setup_twice_is_a_no_op(make: Callable[..., PostgresStore]) -> None:
    store = make()
    thread = store.create_thread({"k": "v"})
    table = f'"{store.schema}"."retro_schema_migrations"'
    before = sql_rows(postgres_url(), f"SELECT version, applied_at FROM {table}")
    store.setup()
    make().setup()
    assert (
        sql_rows(postgres_url(), f"SELECT version, applied_at FROM {table}") == before
    )
    assert store.get_thread(thread.id) == thread


async def test_schema_version_reads_without_creating_anything(
    url: str, schemas: Callable[..., str]
) -> None:
    schema = schemas()
    exists = "SELECT count(*) FROM pg_namespace WHERE nspname = %s"
    async with PostgresStore.from_connection_string(url, schema=schema) as store:
        assert store.schema_version() is None
        assert await store.aschema_version() is None
        assert sql_rows(url, exists, schema) == [(0,)]
        await store.asetup()
        assert store.schema_version() == postgres_module.SCHEMA_VERSION
        assert await store.aschema_version() == postgres_module.SCHEMA_VERSION


async def test_asetup_creates_the_tables(url: str, schemas: Callable[..., str]) -> None:
    async with PostgresStore.from_connection_string(url, schema=schemas()) as store:
        await store.asetup()
        await store.asetup()
        thread = await store.acreate_thread({})
        assert (await store.aget_thread(thread.id)) == thread


def test_concurrent_setups_all_succeed(url: str, schemas: Callable[..., str]) -> None:
    schema = schemas()
    stores = [
        PostgresStore.from_connection_string(url, schema=schema) for _ in range(6)
    ]
    barrier = threading.Barrier(len(stores))

    def setup(store: PostgresStore) -> None:
        barrier.wait()
        store.setup()

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(setup, stores))
        table = f'"{schema}"."retro_schema_migrations"'
        assert sql_rows(url, f"SELECT version FROM {table}") == [
            (postgres_module.SCHEMA_VERSION,)
        ]
        thread = stores[0].create_thread({})
        assert stores[-1].get_thread(thread.id) == thread
    finally:
        for store in stores:
            store.close()


def test_setup_from_concurrent_processes(url: str, schemas: Callable[..., str]) -> None:
    schema = schemas()
    script = (
        "import sys\n"
        "from langchain_retro.stores.postgres import PostgresStore\n"
        "with PostgresStore.from_connection_string(sys.argv[1], schema=sys.argv[2])"
        " as store:\n"
        "    store.setup()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, url, schema])  # noqa: S603
        for _ in range(3)
    ]
    assert [proc.wait(timeout=60) for proc in procs] == [0, 0, 0]
    table = f'"{schema}"."retro_schema_migrations"'
    assert sql_rows(url, f"SELECT version FROM {table}") == [
        (postgres_module.SCHEMA_VERSION,)
    ]


async def test_newer_schema_version_is_refused(
    make: Callable[..., PostgresStore],
) -> None:
    store = make()
    table = f'"{store.schema}"."retro_schema_migrations"'
    sql_rows(postgres_url(), f"INSERT INTO {table} (version) VALUES (99)")
    with pytest.raises(SchemaVersionError, match="99") as info:
        store.setup()
    assert isinstance(info.value, StoreError)
    with pytest.raises(SchemaVersionError, match="Upgrade langchain-retro"):
        await store.asetup()


def test_using_tables_before_setup_says_to_call_setup(
    url: str, schemas: Callable[..., str]
) -> None:
    with PostgresStore.from_connection_string(url, schema=schemas()) as store:
        with pytest.raises(StoreError, match=r"setup\(\)") as info:
            store.create_thread({})
        assert isinstance(info.value.__cause__, psycopg.Error)


# --- schemas and prefixes ----------------------------------------------------------


def test_table_prefixes_share_a_schema_without_seeing_each_other(
    make: Callable[..., PostgresStore],
) -> None:
    first, second = make(table_prefix="app_one_"), make(table_prefix="app_two_")
    mine = first.create_thread({"tenant": "t"})
    theirs = second.create_thread({"tenant": "t"})
    assert first.list_threads(ThreadQuery(metadata={"tenant": "t"})) == [mine]
    assert second.list_threads(ThreadQuery(metadata={"tenant": "t"})) == [theirs]
    with pytest.raises(ThreadNotFoundError):
        first.get_thread(theirs.id)
    tables = sql_rows(
        postgres_url(),
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1",
        first.schema,
    )
    assert {name for (name,) in tables} >= {"app_one_threads", "app_two_threads"}


def test_schemas_share_a_database_without_seeing_each_other(
    url: str, schemas: Callable[..., str]
) -> None:
    # A schema name that needs quoting is used as is, never spliced into SQL.
    odd = schemas(' "odd"; name')
    with (
        PostgresStore.from_connection_string(url, schema=schemas()) as first,
        PostgresStore.from_connection_string(url, schema=odd) as second,
    ):
        first.setup()
        second.setup()
        mine = first.create_thread({})
        theirs = second.create_thread({})
        assert first.list_threads(ThreadQuery()) == [mine]
        assert second.list_threads(ThreadQuery()) == [theirs]
        with pytest.raises(ThreadNotFoundError):
            second.get_thread(mine.id)
        assert sql_rows(url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", odd) == [
            (1,)
        ]


@pytest.mark.parametrize("prefix", ["Retro_", "1retro", "re-tro", "x" * 31])
def test_invalid_table_prefix_is_refused(url: str, prefix: str) -> None:
    with pytest.raises(RetroValueError, match="table_prefix"):
        PostgresStore.from_connection_string(url, table_prefix=prefix)


def test_default_schema_is_public(url: str) -> None:
    with PostgresStore.from_connection_string(url) as store:
        assert store.schema == "public"
        assert "public" in repr(store)


# --- indexes -----------------------------------------------------------------------


def test_listing_filters_use_the_metadata_index(
    make: Callable[..., PostgresStore],
) -> None:
    store = make()
    threads = f'"{store.schema}"."retro_threads"'
    # Written behind the store's back: the triggers keep thread_metadata in step.
    sql_rows(
        postgres_url(),
        f"INSERT INTO {threads} (id, created_at, metadata) "
        "SELECT 'thread_' || g, 0, jsonb_build_object('customer', 'c' || g, "
        "'retro_class', CASE WHEN g % 1000 = 0 THEN 'Rare' ELSE 'Common' END) "
        "FROM generate_series(1, 5000) g",
    )
    sql_rows(postgres_url(), f"ANALYZE {threads}")
    with explaining_store(store.schema) as (explained, plans):
        found = explained.list_threads(ThreadQuery(metadata={"customer": "c42"}))
        assert [t.id for t in found] == ["thread_42"]
        assert "retro_thread_metadata_pkey" in plans[-1]
        assert "Seq Scan" not in plans[-1]
        rare = explained.list_threads(ThreadQuery(classes=("Rare",), limit=3))
        assert [t.id for t in rare] == ["thread_5000", "thread_4000", "thread_3000"]
        assert "retro_thread_metadata_pkey" in plans[-1]
        assert "Seq Scan" not in plans[-1]


# --- dependencies and connection strings ------------------------------------------


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "langchain_retro.stores.postgres", raising=False)
    with pytest.raises(MissingDependencyError) as info:
        importlib.import_module("langchain_retro.stores.postgres")
    assert 'pip install "langchain-retro[postgres]"' in str(info.value)
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value.__cause__, ImportError)


def test_missing_extra_through_the_lazy_attribute() -> None:
    script = (
        "import sys\n"
        "sys.modules['psycopg_pool'] = None\n"
        "import langchain_retro\n"
        "from langchain_retro.errors import MissingDependencyError\n"
        "try:\n"
        "    langchain_retro.PostgresStore\n"
        "except MissingDependencyError as exc:\n"
        "    assert isinstance(exc.__cause__, ImportError)\n"
        "    print(exc)\n"
    )
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert 'pip install "langchain-retro[postgres]"' in out.stdout


def test_malformed_connection_string_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="connection string") as info:
        PostgresStore.from_connection_string("host=localhost port")
    assert isinstance(info.value.__cause__, psycopg.Error)


async def test_unreachable_server_fails_fast_on_first_use() -> None:
    with socket.socket() as sock:  # a local port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://nobody@127.0.0.1:{port}/nothing?connect_timeout=5"
    store = PostgresStore.from_connection_string(url)
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.setup()
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    with pytest.raises(StoreError) as info:
        await store.asetup()
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert time.monotonic() - started < 10
    await store.aclose()


def test_pool_options_that_differ_between_sync_and_async_are_refused(
    url: str,
) -> None:
    with pytest.raises(TypeError, match="configure"):
        PostgresStore.from_connection_string(url, configure=lambda conn: None)


# --- leases ------------------------------------------------------------------------


def test_lease_expiry_uses_the_database_clock(
    make: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make()
    thread = store.create_thread({})
    assert store.acquire_lease(thread.id, "worker-a", 60)
    # A host whose clock runs an hour ahead must not see the lease as expired.
    ahead = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: ahead)
    assert not store.acquire_lease(thread.id, "worker-b", 60)
    monkeypatch.undo()
    leases = f'"{store.schema}"."retro_run_leases"'
    ((left,),) = sql_rows(
        postgres_url(),
        f"SELECT extract(epoch FROM expires_at - clock_timestamp()) "
        f"FROM {leases} WHERE thread_id = %s",
        thread.id,
    )
    assert 55 < float(left) <= 60
    # Expire it by the database clock only.
    sql_rows(
        postgres_url(),
        f"UPDATE {leases} SET expires_at = clock_timestamp() - interval '1 second'",
    )
    assert store.acquire_lease(thread.id, "worker-b", 60)


async def test_async_lease_round_trip(make: Callable[..., PostgresStore]) -> None:
    store = make()
    thread = await store.acreate_thread({})
    assert await store.aacquire_lease(thread.id, "a", 0.05)
    assert not await store.aacquire_lease(thread.id, "b", 10)
    await asyncio.sleep(0.1)
    assert await store.aacquire_lease(thread.id, "b", 10)
    await store.arelease_lease(thread.id, "b")
    assert await store.aacquire_lease(thread.id, "a", 10)


# --- concurrency -------------------------------------------------------------------


def test_concurrent_appends_get_a_gap_free_increasing_sequence(
    make: Callable[..., PostgresStore],
) -> None:
    writers = [make(max_size=2) for _ in range(4)]
    thread = writers[0].create_thread({})
    rounds = 40

    def append(index: int) -> list[str]:
        store = writers[index]
        ids: list[str] = []
        for n in range(rounds):
            batch = [user(f"w{index}-{n}-{k}") for k in range(1 + n % 3)]
            patch = MetadataPatch(set={f"w{index}": str(n)}) if n % 5 == 0 else None
            ids += [
                m.id for m in store.add_messages(thread.id, batch, thread_patch=patch)
            ]
        return ids

    with ThreadPoolExecutor(len(writers)) as pool:
        written = list(pool.map(append, range(len(writers))))
    stored = writers[0].list_messages(thread.id)
    total = sum(len(ids) for ids in written)
    assert len(stored) == total == len({m.id for m in stored})
    messages = f'"{writers[0].schema}"."retro_messages"'
    seqs = [
        seq
        for (seq,) in sql_rows(
            postgres_url(), f"SELECT seq FROM {messages} ORDER BY seq"
        )
    ]
    assert seqs == list(range(1, total + 1))
    position = {m.id: i for i, m in enumerate(stored)}
    for ids in written:  # each writer's messages keep its order
        assert [position[i] for i in ids] == sorted(position[i] for i in ids)
    metadata = writers[0].get_thread(thread.id).metadata
    assert metadata == {f"w{i}": str(rounds - 5) for i in range(len(writers))}


async def test_concurrent_async_appends_lose_nothing(
    make: Callable[..., PostgresStore],
) -> None:
    store = make(max_size=4)
    thread = await store.acreate_thread({})
    await asyncio.gather(
        *(
            store.aadd_messages(thread.id, [user(f"m{i}"), user(f"n{i}")])
            for i in range(40)
        )
    )
    assert await store.acount_messages(thread.id) == 80
    stored = await store.alist_messages(thread.id)
    for first, second in zip(stored[::2], stored[1::2], strict=True):
        assert first.payload.replace('"m', '"n') == second.payload


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("pipelines", [True, False], ids=["pipeline", "libpq<14"])
def test_begin_run_reads_what_it_waited_for(
    make: Callable[..., PostgresStore],
    url: str,
    api: str,
    pipelines: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run starts after the previous one ends, and reads what that one wrote.

    Another transaction holds the lease (ending the previous run: moving hwm, adding
    a message, releasing) when begin_run starts; begin_run waits for it, and its
    reads must see that transaction's writes, not a snapshot from before the wait.
    Without pipelines (libpq before 14) the same statements run in a transaction.
    """
    monkeypatch.setattr(io_module, "_PIPELINES", pipelines)
    store = make()
    thread = store.create_thread({"hwm": "old"})
    store.add_messages(thread.id, [user("first")])
    assert store.acquire_lease(thread.id, "previous", 30.0)
    threads = f'"{store.schema}"."retro_threads"'
    messages = f'"{store.schema}"."retro_messages"'
    leases = f'"{store.schema}"."retro_run_leases"'
    with psycopg.connect(url) as conn, ThreadPoolExecutor(1) as pool:
        ((seq,),) = conn.execute(
            f"UPDATE {threads} SET next_seq = next_seq + 1, "
            """metadata = '{"hwm": "new"}' WHERE id = %s RETURNING seq""",
            (thread.id,),
        ).fetchall()
        conn.execute(
            f"INSERT INTO {messages} "
            "(thread_seq, seq, id, created_at, role, payload, metadata) "
            "VALUES (%s, 2, 'msg_by_the_previous_run', 0, 'assistant', 'x', '{}')",
            (seq,),
        )
        conn.execute(f"DELETE FROM {leases} WHERE owner = 'previous'")
        begin = {"owner": "next", "ttl": 30.0, "messages": [user("mine")]}
        if api == "sync":
            started = pool.submit(store.begin_run, thread.id, **begin)
        else:
            started = pool.submit(asyncio.run, store.abegin_run(thread.id, **begin))
        time.sleep(0.3)
        assert not started.done()  # waiting for the lease
        conn.commit()
        start = started.result(timeout=10)
    assert start is not None
    assert start.thread.metadata == {"hwm": "new"}
    assert [m.id for m in start.context][1:] == [
        "msg_by_the_previous_run",
        start.appended[0].id,
    ]


async def test_runs_over_pools_that_do_not_autocommit(
    make: Callable[..., PostgresStore],
) -> None:
    schema = make().schema
    pool = psycopg_pool.ConnectionPool(postgres_url(), open=True, min_size=1)
    async_pool = psycopg_pool.AsyncConnectionPool(postgres_url(), open=False)
    await async_pool.open()
    try:
        store = PostgresStore(pool=pool, async_pool=async_pool, schema=schema)
        thread = store.create_thread({})
        reply = NewMessage(role="assistant", payload="{}")
        for turn in range(2):
            begin = {"owner": f"run_{turn}", "ttl": 30.0, "messages": [user("q")]}
            if turn == 0:
                start = store.begin_run(thread.id, **begin)
            else:
                start = await store.abegin_run(thread.id, **begin)
            assert start is not None
            assert len(start.context) == 2 * turn + 1
            assert not store.acquire_lease(thread.id, "other", 30.0)
            finish = {
                "owner": f"run_{turn}",
                "run_id": start.run.id,
                "update": RunUpdate(status="completed"),
                "messages": [reply],
                "thread_patch": MetadataPatch(set={"hwm": start.appended[0].id}),
            }
            if turn == 0:
                saved = store.finish_run(thread.id, **finish)
            else:
                saved = await store.afinish_run(thread.id, **finish)
            assert saved.run.status == "completed"
            assert store.get_run(thread.id, start.run.id) == saved.run
        assert len(await store.alist_messages(thread.id)) == 4
        assert store.get_thread(thread.id).metadata == {"hwm": start.appended[0].id}
        assert store.acquire_lease(thread.id, "other", 30.0)
        store.close()
    finally:
        pool.close()
        await async_pool.close()


# --- pools -------------------------------------------------------------------------


async def test_store_over_pools_the_caller_owns(
    make: Callable[..., PostgresStore],
) -> None:
    schema = make().schema
    pool = psycopg_pool.ConnectionPool(postgres_url(), open=True, min_size=1)
    async_pool = psycopg_pool.AsyncConnectionPool(postgres_url(), open=False)
    await async_pool.open()
    try:
        store = PostgresStore(pool=pool, async_pool=async_pool, schema=schema)
        thread = store.create_thread({"owner": "caller"})
        await store.aadd_messages(thread.id, [user("hi")])
        assert [m.id for m in store.list_messages(thread.id)] == [
            m.id for m in await store.alist_messages(thread.id)
        ]
        await store.aclose()
        with pytest.raises(StoreClosedError):
            store.get_thread(thread.id)
        with pytest.raises(StoreClosedError):
            await store.aget_thread(thread.id)
        # The pools stay open: they belong to the caller.
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        async with async_pool.connection() as aconn:
            assert await (await aconn.execute("SELECT 1")).fetchone() == (1,)
    finally:
        pool.close()
        await async_pool.close()


async def test_missing_pool_for_the_api_used_is_a_clear_error(
    make: Callable[..., PostgresStore],
) -> None:
    schema = make().schema
    with pytest.raises(RetroValueError, match="pool"):
        PostgresStore()
    pool = psycopg_pool.ConnectionPool(postgres_url(), open=True, min_size=1)
    try:
        sync_only = PostgresStore(pool=pool, schema=schema)
        sync_only.create_thread({})
        with pytest.raises(StoreError, match="no async pool"):
            await sync_only.acreate_thread({})
    finally:
        pool.close()
    async_pool = psycopg_pool.AsyncConnectionPool(postgres_url(), open=False)
    await async_pool.open()
    try:
        async_only = PostgresStore(async_pool=async_pool, schema=schema)
        await async_only.acreate_thread({})
        with pytest.raises(StoreError, match="no sync pool"):
            async_only.create_thread({})
    finally:
        await async_pool.close()


def test_one_async_pool_per_event_loop(make: Callable[..., PostgresStore]) -> None:
    store = make()
    thread = store.create_thread({})

    async def append(text: str) -> None:
        await store.aadd_messages(thread.id, [user(text)])

    # Each asyncio.run is a new loop; the previous loop's pool went with it.
    asyncio.run(append("first"))
    asyncio.run(append("second"))
    assert store.count_messages(thread.id) == 2
    store.close()
    with pytest.raises(StoreClosedError):
        asyncio.run(append("third"))


def test_async_pool_of_a_loop_that_is_still_open_is_closed_by_close(
    make: Callable[..., PostgresStore],
) -> None:
    store = make()
    loop = asyncio.new_event_loop()
    try:
        thread = loop.run_until_complete(store.acreate_thread({}))
        assert loop.run_until_complete(store.aget_thread(thread.id)) == thread
        store.close()
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        assert pending == []
    finally:
        loop.close()


async def test_sync_close_inside_a_coroutine_closes_the_pool_soon(
    make: Callable[..., PostgresStore],
) -> None:
    store = make()
    await store.acreate_thread({})
    store.close()
    for _ in range(100):  # the pool closes as soon as the loop gets control
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if not others:
            break
        await asyncio.sleep(0.02)
    assert others == []


def test_aclose_on_one_loop_closes_the_pool_of_another(
    make: Callable[..., PostgresStore],
) -> None:
    store = make()
    other = asyncio.new_event_loop()
    try:
        other.run_until_complete(store.acreate_thread({}))
        asyncio.run(store.aclose())  # cannot drive `other` from inside this loop
        other.run_until_complete(asyncio.sleep(0.1))  # `other` closes it when it runs
        assert [t for t in asyncio.all_tasks(other) if not t.done()] == []
    finally:
        other.close()


# --- PgBouncer -----------------------------------------------------------------------


@pytest.mark.parametrize(("threshold", "prepared"), [(None, False), (2, True)])
def test_prepare_threshold_reaches_the_connections(
    make: Callable[..., PostgresStore], threshold: int | None, prepared: bool
) -> None:
    store = make(prepare_threshold=threshold, min_size=1, max_size=1)
    thread = store.create_thread({})
    for _ in range(6):
        store.get_thread(thread.id)
    with store._pools.connection() as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements"
        ).fetchone()
    assert (count > 0) is prepared


async def test_owned_connections_plan_prepared_statements_once(
    make: Callable[..., PostgresStore],
) -> None:
    """Generic plans on the store's own connections; a caller's configure still runs."""
    seen: list[str] = []

    def configure(conn: Any) -> None:
        seen.append("sync")

    async def aconfigure(conn: Any) -> None:
        seen.append("async")

    store = make(
        pool_kwargs={"configure": configure},
        async_pool_kwargs={"configure": aconfigure},
        min_size=1,
        max_size=1,
    )
    show = "SELECT current_setting('plan_cache_mode')"
    with store._pools.connection() as conn:
        assert conn.execute(show).fetchone() == ("force_generic_plan",)
    async with store._pools.aconnection() as aconn:
        assert await (await aconn.execute(show)).fetchone() == ("force_generic_plan",)
    assert sorted(seen) == ["async", "sync"]


async def test_connections_that_do_not_autocommit_get_the_setting_too(
    make: Callable[..., PostgresStore],
) -> None:
    manual = {"kwargs": {"autocommit": False}}
    store = make(pool_kwargs=manual, async_pool_kwargs=manual, min_size=1, max_size=1)
    thread = store.create_thread({"k": "v"})
    assert (await store.aget_thread(thread.id)) == thread
    show = "SELECT current_setting('plan_cache_mode')"
    with store._pools.connection() as conn:
        assert conn.execute(show).fetchone() == ("force_generic_plan",)


@pytest.mark.parametrize(
    "options", [{"generic_plans": False}, {"prepare_threshold": None}]
)
async def test_no_setting_is_made_when_asked_or_nothing_is_prepared(
    make: Callable[..., PostgresStore], options: dict[str, Any]
) -> None:
    """Behind a transaction-mode PgBouncer the store's SET would reach others."""
    store = make(min_size=1, max_size=1, **options)
    show = "SELECT current_setting('plan_cache_mode')"
    with store._pools.connection() as conn:
        assert conn.execute(show).fetchone() == ("auto",)
    async with store._pools.aconnection() as aconn:
        assert await (await aconn.execute(show)).fetchone() == ("auto",)


# --- payloads ----------------------------------------------------------------------


def test_payload_text_comes_back_byte_for_byte(
    make: Callable[..., PostgresStore],
) -> None:
    store = make()
    thread = store.create_thread({})
    payload = (
        '{ "type":"human",  "content": "h\\u00e9llo \\ud83d\\ude00 ü", '
        '"z": 1, "a": [] }'
    )
    (added,) = store.add_messages(thread.id, [NewMessage(role="user", payload=payload)])
    assert store.get_message(thread.id, added.id).payload == payload
    assert store.list_messages(thread.id)[0].payload == payload
