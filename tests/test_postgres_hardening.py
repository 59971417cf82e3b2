"""PostgreSQL hardening: validate before writing, corrupt rows, broken connections.

* Bad metadata is refused before anything is written: the thread of
  ``create_thread({"k": 1})`` must not exist afterwards, nor break later listings.
* A row edited outside the package so that it no longer rebuilds raises
  `CorruptDataError` naming the object (and its thread), and other rows stay readable.
* Connections a server restart broke cost no failed call: the pools check each
  connection they hand out. Backends are ended with ``pg_terminate_backend`` from
  another connection, which is what a restart does to a pool.
* Two appenders racing for one message id: one wins, the other gets
  `MessageIdConflictError`, and nothing else is written.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
from conftest import postgres_url, stores_of

from langchain_retro import (
    CorruptDataError,
    MessageIdConflictError,
    MetadataError,
    RetroError,
    RetroValueError,
    StoreError,
)
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import (
    NewMessage,
    NewRun,
    RunUpdate,
    RunUsage,
    ThreadQuery,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from _helpers import Caller as Call

pytest_plugins = ["_helpers"]
pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")
postgres_module = pytest.importorskip("langchain_retro.stores.postgres")
PostgresStore = postgres_module.PostgresStore


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Stores on one fresh schema, set up; closed and the schema dropped after."""
    with stores_of("postgres", tmp_path) as factory:
        yield factory


def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        cursor = conn.execute(query, params or None)
        return cursor.fetchall() if cursor.description is not None else []


def user(text: str, **fields: Any) -> NewMessage:
    return NewMessage(
        role="user", payload=f'{{"type": "human", "content": "{text}"}}', **fields
    )


# --- 9: validate, then write ---------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [{"k": 1}, {"k": None}, {1: "v"}, {"k": ["v"]}, ["k", "v"], "k=v"],
    ids=["int", "none", "int-key", "list", "not-a-map", "string"],
)
async def test_bad_thread_metadata_writes_nothing(
    make: Callable[..., Any], call: Call, bad: Any
) -> None:
    store = make()
    with pytest.raises(MetadataError) as caught:
        await call(store, "create_thread", bad)
    assert isinstance(caught.value, RetroValueError)
    assert "metadata" in str(caught.value)
    with pytest.raises(MetadataError):
        await call(store, "create_threads", [{"ok": "1"}, bad])
    # Nothing was written, and listings still work.
    assert await call(store, "list_threads", ThreadQuery(limit=100)) == []
    assert run(f'SELECT count(*) FROM "{store.schema}".retro_thread_metadata') == [(0,)]


async def test_bad_assistant_input_writes_nothing(
    make: Callable[..., Any], call: Call
) -> None:
    store = make()
    with pytest.raises(MetadataError):
        await call(store, "create_assistant", {"model": "m"}, {"k": 1})
    with pytest.raises(RetroValueError) as caught:
        await call(store, "create_assistant", {"model": ["m"]}, {})
    assert caught.value.__cause__ is not None
    assistant = await call(store, "create_assistant", {"model": "m"}, {})
    with pytest.raises(RetroValueError):
        await call(store, "update_assistant", assistant.id, {"temperature": "hot"})
    with pytest.raises(RetroValueError, match="native"):
        await call(store, "update_assistant", assistant.id, {"colour": "red"})
    with pytest.raises(RetroValueError, match="native"):
        await call(store, "create_assistant", {"model": "m", "colour": "red"}, {})
    assert await call(store, "list_assistants") == [assistant]


# --- 10: rows that no longer rebuild -------------------------------------------------


@pytest.mark.parametrize(
    "edited",
    ['{"k": 1}', '["k"]', '"text"', '{"k": {"nested": "v"}}'],
    ids=["int-value", "array", "string", "nested"],
)
async def test_a_hand_edited_thread_raises_corrupt_data(
    make: Callable[..., Any], call: Call, edited: str
) -> None:
    store = make()
    good = await call(store, "create_thread", {"k": "v"})
    bad = await call(store, "create_thread", {"k": "v"})
    run(
        f'UPDATE "{store.schema}".retro_threads SET metadata = %s::jsonb WHERE id = %s',
        edited,
        bad.id,
    )
    for name, args in (
        ("get_thread", (bad.id,)),
        ("list_threads", (ThreadQuery(),)),
        ("update_thread", (bad.id, MetadataPatch(set={"x": "y"}))),
        ("add_messages", (bad.id, [user("a")], {"thread_patch": MetadataPatch()})),
    ):
        *positional, last = args
        kwargs = last if isinstance(last, dict) else {}
        positional = positional if isinstance(last, dict) else [*positional, last]
        with pytest.raises(CorruptDataError) as caught:
            await call(store, name, *positional, **kwargs)
        assert caught.value.object_id == bad.id
        assert caught.value.thread_id == bad.id
        assert bad.id in str(caught.value)
        assert isinstance(caught.value, StoreError)
    # Other threads stay readable, and so do the listings that do not reach it.
    assert await call(store, "get_thread", good.id) == good
    page = await call(store, "list_threads", ThreadQuery(order="asc", limit=1))
    assert page == [good]
    # Nothing was appended by the refused write.
    assert await call(store, "count_messages", bad.id) == 0


async def test_a_hand_edited_message_raises_corrupt_data(
    make: Callable[..., Any], call: Call
) -> None:
    store = make()
    thread = await call(store, "create_thread", {})
    other = await call(store, "create_thread", {})
    ok, broken = await call(store, "add_messages", thread.id, [user("a"), user("b")])
    await call(store, "add_messages", other.id, [user("c")])
    run(
        f'UPDATE "{store.schema}".retro_messages SET metadata = %s::jsonb '
        "WHERE id = %s",
        '{"k": 7}',
        broken.id,
    )
    for name, args in (
        ("get_message", (thread.id, broken.id)),
        ("list_messages", (thread.id,)),
        ("update_message", (thread.id, broken.id, MetadataPatch(set={"x": "y"}))),
    ):
        with pytest.raises(CorruptDataError) as caught:
            await call(store, name, *args)
        assert caught.value.object_id == broken.id
        assert caught.value.thread_id == thread.id
        assert broken.id in str(caught.value)
        assert thread.id in str(caught.value)
    assert (await call(store, "get_message", thread.id, ok.id)).id == ok.id
    assert len(await call(store, "list_messages", other.id)) == 1
    # The payload-only read does not rebuild metadata: a history still reads.
    pairs = await call(store, "list_message_payloads", thread.id)
    assert [message_id for message_id, _ in pairs] == [ok.id, broken.id]


async def test_a_run_on_a_corrupt_thread_holds_no_lease(
    make: Callable[..., Any], call: Call
) -> None:
    store = make()
    thread = await call(store, "create_thread", {})
    run(
        f"UPDATE \"{store.schema}\".retro_threads SET metadata = '[1]' WHERE id = %s",
        thread.id,
    )
    with pytest.raises(CorruptDataError):
        await call(store, "begin_run", thread.id, owner="run_a", ttl=30.0)
    assert await call(store, "get_lease", thread.id) is None


async def test_a_hand_edited_assistant_raises_corrupt_data(
    make: Callable[..., Any], call: Call
) -> None:
    store = make()
    good = await call(store, "create_assistant", {"model": "m"}, {})
    bad = await call(store, "create_assistant", {"model": "m"}, {})
    run(
        f"UPDATE \"{store.schema}\".retro_assistants SET metadata = '[]' WHERE id = %s",
        bad.id,
    )
    with pytest.raises(CorruptDataError) as caught:
        await call(store, "get_assistant", bad.id)
    assert caught.value.object_id == bad.id
    assert await call(store, "get_assistant", good.id) == good


# --- 12: connections broken by a restart --------------------------------------------


def terminate(application_name: str, expected: int) -> None:
    """End every backend of ``application_name`` from another connection, and wait."""
    ended = run(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
        "FROM pg_stat_activity WHERE application_name = %s",
        application_name,
    )
    assert ended == [(expected,)]
    deadline = time.monotonic() + 10
    while run(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
        application_name,
    ) != [(0,)]:
        assert time.monotonic() < deadline, "backends did not end"
        time.sleep(0.05)


@pytest.fixture
def schema() -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    run(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_terminated_backends_cost_no_failed_call(schema: str) -> None:
    app = f"retro_{uuid.uuid4().hex[:8]}"
    with PostgresStore.from_connection_string(
        postgres_url(),
        schema=schema,
        min_size=4,
        max_size=4,
        kwargs={"application_name": app},
    ) as store:
        store.setup()
        thread = store.create_thread({})
        terminate(app, 4)
        # Every call succeeds, one after the other and four at once.
        for i in range(8):
            store.add_messages(thread.id, [user(f"m{i}")])
        with ThreadPoolExecutor(4) as pool:
            counts = list(pool.map(lambda _: store.count_messages(thread.id), range(8)))
        assert counts == [8] * 8


async def test_terminated_backends_cost_no_failed_async_call(schema: str) -> None:
    app = f"retro_{uuid.uuid4().hex[:8]}"
    async with PostgresStore.from_connection_string(
        postgres_url(),
        schema=schema,
        min_size=4,
        max_size=4,
        kwargs={"application_name": app},
    ) as store:
        await store.asetup()
        thread = await store.acreate_thread({})
        await asyncio.to_thread(terminate, app, 4)
        for i in range(8):
            await store.aadd_messages(thread.id, [user(f"m{i}")])
        counts = await asyncio.gather(
            *(store.acount_messages(thread.id) for _ in range(8))
        )
        assert counts == [8] * 8


def test_the_check_is_what_saves_the_call(schema: str) -> None:
    app = f"retro_{uuid.uuid4().hex[:8]}"
    with PostgresStore.from_connection_string(
        postgres_url(),
        schema=schema,
        min_size=1,
        max_size=1,
        kwargs={"application_name": app},
        pool_kwargs={"check": None},
    ) as store:
        store.setup()
        thread = store.create_thread({})
        terminate(app, 1)
        with pytest.raises(StoreError) as caught:
            store.get_thread(thread.id)
        assert isinstance(caught.value.__cause__, psycopg.OperationalError)


async def test_pool_kwargs_reach_each_pool(schema: str) -> None:
    configured: list[str] = []

    def configure(conn: Any) -> None:
        configured.append("sync")

    async def aconfigure(conn: Any) -> None:
        configured.append("async")

    store = PostgresStore.from_connection_string(
        postgres_url(),
        schema=schema,
        pool_kwargs={"configure": configure, "name": "retro-sync"},
        async_pool_kwargs={"configure": aconfigure},
    )
    async with store:
        await asyncio.to_thread(store.setup)
        await store.aget_lease("thread_x")
    assert set(configured) == {"sync", "async"}


# --- message ids under a race --------------------------------------------------------


def test_racing_appends_of_one_id_let_one_win(make: Callable[..., Any]) -> None:
    store = make()
    thread = store.create_thread({})
    workers = 4
    table = f'"{store.schema}".retro_threads'

    def append(i: int) -> tuple[str, ...]:
        try:
            store.add_messages(thread.id, [user(f"w{i}"), user(f"x{i}", id="shared")])
        except MessageIdConflictError as exc:
            return (exc.thread_id, exc.message_id)
        return ("won",)

    # Holding the thread's row lock makes every appender look for the id before
    # any has written it: all but the first are refused by the unique key itself.
    with psycopg.connect(postgres_url()) as holder:
        holder.execute(f"SELECT FROM {table} WHERE id = %s FOR UPDATE", (thread.id,))
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(append, i) for i in range(workers)]
            deadline = time.monotonic() + 10
            while run(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s",
                f"%{store.schema}%",
            ) != [(workers,)]:
                assert time.monotonic() < deadline, "the appenders did not wait"
                time.sleep(0.02)
            holder.commit()
            outcomes = [future.result() for future in futures]
    assert sorted(outcomes) == [(thread.id, "shared")] * (workers - 1) + [("won",)]
    rows = store.list_messages(thread.id)
    assert len(rows) == 2
    assert store.count_messages(thread.id) == 2
    # No gap in the sequence the refused appends would have taken.
    store.add_messages(thread.id, [user("after")])
    seqs = run(f'SELECT seq FROM "{store.schema}".retro_messages ORDER BY seq')
    assert seqs == [(1,), (2,), (3,)]


def test_errors_for_bad_input_are_ours(make: Callable[..., Any]) -> None:
    store = make()
    thread = store.create_thread({})
    reply = NewMessage(role="assistant", payload="{}")
    for bad in ("", 7):
        with pytest.raises(RetroValueError, match="hwm_key"):
            store.add_messages(thread.id, [user("q"), reply], hwm_key=bad)
    assert store.count_messages(thread.id) == 0
    with pytest.raises(RetroError):
        store.list_messages(thread.id, limit=-1)
    with pytest.raises(RetroError):
        store.delete_assistant("asst_x", threads="maybe")  # type: ignore[arg-type]


async def test_a_run_keeps_caller_ids_and_a_clash_writes_nothing(
    make: Callable[..., Any], call: Call
) -> None:
    store = make()
    thread = await call(store, "create_thread", {})
    start = await call(
        store,
        "begin_run",
        thread.id,
        owner="run_a",
        ttl=30.0,
        messages=[user("q", id="client-q")],
    )
    assert [m.id for m in start.appended] == ["client-q"]
    assert [m.id for m in start.context] == ["client-q"]
    # A reply whose id the thread holds: nothing written, and the run keeps its
    # lease, its status and the thread its token count.
    used = RunUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    end = {
        "owner": "run_a",
        "run_id": "run_a",
        "update": RunUpdate(status="completed", usage=used),
        "thread_patch": MetadataPatch(set={"hwm": "client-q"}),
    }
    clash = NewMessage(role="assistant", payload="{}", id="client-q")
    with pytest.raises(MessageIdConflictError):
        await call(store, "finish_run", thread.id, messages=[clash], **end)
    assert (await call(store, "get_lease", thread.id)).owner == "run_a"
    assert (await call(store, "get_thread", thread.id)).metadata == {}
    assert (await call(store, "get_run", thread.id, "run_a")).status == "in_progress"
    assert await call(store, "get_thread_usage", thread.id) == RunUsage()
    reply = NewMessage(role="assistant", payload="{}", id="client-a", run_id="run_a")
    saved = await call(store, "finish_run", thread.id, messages=[reply], **end)
    (stored,) = saved.messages
    assert (stored.id, stored.run_id) == ("client-a", "run_a")
    assert saved.run.status == "completed"
    assert await call(store, "get_lease", thread.id) is None
    assert await call(store, "get_thread_usage", thread.id) == used
    # A run whose input clashes takes no lease and writes nothing, its run included.
    with pytest.raises(MessageIdConflictError) as caught:
        await call(
            store,
            "begin_run",
            thread.id,
            owner="run_b",
            ttl=30.0,
            messages=[user("again", id="client-q")],
        )
    assert caught.value.message_id == "client-q"
    assert await call(store, "get_lease", thread.id) is None
    assert await call(store, "count_messages", thread.id) == 2
    assert [r.id for r in await call(store, "list_runs", thread.id)] == ["run_a"]
    # So does a run whose id is taken.
    with pytest.raises(RetroValueError, match="run_a"):
        await call(
            store,
            "begin_run",
            thread.id,
            owner="run_c",
            ttl=30.0,
            run=NewRun(id="run_a"),
            messages=[user("new")],
        )
    assert await call(store, "get_lease", thread.id) is None
    assert await call(store, "count_messages", thread.id) == 2
    assert [r.id for r in await call(store, "list_runs", thread.id)] == ["run_a"]


async def test_bulk_refuses_an_id_given_twice_across_pairs(
    make: Callable[..., Any], call: Call
) -> None:
    store = make()
    one, two = await call(store, "create_threads", [{}, {}])
    with pytest.raises(MessageIdConflictError) as caught:
        await call(
            store,
            "bulk_add_messages",
            [
                (one.id, [user("a", id="twice")]),
                (two.id, [user("b", id="twice")]),  # another thread: fine
                (one.id, [user("c", id="twice")]),
            ],
        )
    assert (caught.value.thread_id, caught.value.message_id) == (one.id, "twice")
    for thread in (one, two):
        assert await call(store, "count_messages", thread.id) == 0
    written = await call(
        store,
        "bulk_add_messages",
        [(one.id, [user("a", id="twice")]), (two.id, [user("b", id="twice")])],
    )
    assert written == 2


def test_the_checkout_check_pings_only_ended_connections() -> None:
    spoke = pytest.importorskip("langchain_retro.stores._postgres_pool")._server_spoke
    app = f"retro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url(), autocommit=True, application_name=app) as conn:
        conn.execute("SELECT 1").fetchall()
        assert not spoke(conn)  # idle and alive: no round trip needed
        terminate(app, 1)
        assert spoke(conn)  # ended by the server: the pool pings it, and drops it
        with pytest.raises(psycopg.OperationalError):
            psycopg_pool.ConnectionPool.check_connection(conn)
