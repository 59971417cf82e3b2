"""PostgreSQL specifics of runs, beyond the runs contract every store passes.

* Round trips, counted by libpq's trace of the protocol (one ``Sync`` per round
  trip): `begin_run` is one, resuming a run or not; `finish_run` and `cancel_run` are
  two, a read and one statement that writes only if nothing changed meanwhile. A
  taken caller id or run id fails no statement.
* The rows SQL writes by itself equal what the pure rules of ``stores/_runs.py``
  give: a new run (`new_run_row`, stamped and given the thread's assistant by SQL),
  a resumed one (`resumed_run`) and the runs a takeover lapses (`settle`).
* Plans: a thread's runs are listed by ``(thread_seq, seq)``, a run's messages read
  by the run index of messages, and a takeover looks only at active runs.
* Writes end cleanly: a refused one leaves nothing and no open transaction, a write
  that finds the run changed since it was read reads it again, and runs work
  without pipelines (libpq before 14) and over pools that do not autocommit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from conftest import explaining_store, postgres_url, stores_of

from langchain_retro import CorruptDataError, MessageIdConflictError, RetroValueError
from langchain_retro._metadata import MetadataPatch
from langchain_retro.errors import (
    RunNotFoundError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from langchain_retro.stores.base import (
    FunctionCall,
    NewMessage,
    NewRun,
    RequiredAction,
    RequiredToolCall,
    RunUpdate,
    RunUsage,
    SubmitToolOutputs,
    new_run_row,
    resumed_run,
    run_body,
    settle,
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
io_module = pytest.importorskip("langchain_retro.stores._postgres_io")
PostgresStore = postgres_module.PostgresStore

WAITING = RequiredAction(
    submit_tool_outputs=SubmitToolOutputs(
        tool_calls=[
            RequiredToolCall(
                id="call_1", function=FunctionCall(name="f", arguments="{}")
            )
        ]
    )
)


def user(text: str, **fields: Any) -> NewMessage:
    return NewMessage(role="user", payload=json.dumps({"content": text}), **fields)


def reply(text: str, run_id: str | None = None) -> NewMessage:
    return NewMessage(
        role="assistant", payload=json.dumps({"content": text}), run_id=run_id
    )


def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        cursor = conn.execute(query, params or None)
        return cursor.fetchall() if cursor.description is not None else []


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Stores on one fresh schema, set up; closed and the schema dropped after."""
    with stores_of("postgres", tmp_path) as factory:
        yield factory


@pytest.fixture
def one_connection(make: Callable[..., Any]) -> Iterator[tuple[Any, Any]]:
    """A store over a pool of one autocommit connection, and that pool."""
    schema = make().schema
    pool = psycopg_pool.ConnectionPool(
        postgres_url(), kwargs={"autocommit": True}, min_size=1, max_size=1, open=True
    )
    try:
        yield PostgresStore(pool, schema=schema), pool
    finally:
        pool.close()


def traced(pool: Any, action: Callable[[], Any]) -> tuple[Any, list[list[str]]]:
    """What ``action`` returned, and libpq's trace of the pool's one connection.

    Each line of the trace is a protocol message: ``F`` (sent) or ``B`` (received),
    its length, its kind and its fields.
    """
    fd, path = tempfile.mkstemp()
    try:
        with pool.connection() as conn:
            conn.pgconn.trace(fd)
            conn.pgconn.set_trace_flags(
                psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE
            )
        try:
            result = action()
        finally:
            with pool.connection() as conn:
                conn.pgconn.untrace()
        with open(path) as trace:
            lines = [line.split("\t") for line in trace.read().splitlines()]
    finally:
        os.close(fd)
        os.unlink(path)
    return result, lines


def round_trips(pool: Any, action: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What ``action`` returned, and the statements of each round trip it made.

    Each round trip ends with the client's ``Sync`` (psycopg sends nothing else
    that waits); a statement is named by its first word.
    """
    result, lines = traced(pool, action)
    trips: list[str] = []
    statements: list[str] = []
    for direction, _, kind, *rest in lines:
        if direction == "F" and kind == "Parse":
            statements.append(rest[0].split('"')[3].split()[0])
        elif direction == "F" and kind == "Sync":
            trips.append(" ".join(statements))
            statements = []
    return result, trips


needs_pipelines = pytest.mark.skipif(
    not io_module._PIPELINES, reason="libpq before 14 cannot pipeline"
)


@needs_pipelines
def test_a_turn_is_two_round_trips(one_connection: tuple[Any, Any]) -> None:
    store, pool = one_connection
    assistant = store.create_assistant({"model": "m"}, {})
    thread = store.create_thread({"assistant_id": assistant.id})
    start, trips = round_trips(
        pool,
        lambda: store.begin_run(
            thread.id, owner="run_1", ttl=30.0, messages=[user("q")], context_limit=50
        ),
    )
    assert start.run.assistant_id == assistant.id
    # The lease; input, run and lapsed runs in one statement; then the thread with
    # its assistant, and the context: one round trip.
    assert trips == ["WITH WITH SELECT SELECT"]
    saved, trips = round_trips(
        pool,
        lambda: store.finish_run(
            thread.id,
            owner="run_1",
            run_id="run_1",
            update=RunUpdate(status="completed", usage=RunUsage(total_tokens=3)),
            messages=[reply("a", "run_1")],
            thread_patch=MetadataPatch(set={"hwm": start.appended[0].id}),
        ),
    )
    assert saved.run.status == "completed"
    # Written as begin_run left the run and the thread, in one statement, since
    # neither changed meanwhile: no read first.
    assert trips == ["WITH"]
    # What it returns is what it stored, stamped by the database's clock.
    assert saved.run == store.get_run(thread.id, "run_1")
    assert saved.run.completed_at == saved.messages[0].created_at
    assert saved.run.completed_at >= start.run.started_at
    assert store.get_thread(thread.id).metadata["hwm"] == start.appended[0].id
    assert store.get_lease(thread.id) is None


def test_a_bulk_append_looks_for_taken_ids_only_where_messages_are(
    one_connection: tuple[Any, Any],
) -> None:
    # A thread that never held a message cannot hold a caller id: a copy into a
    # new store sends no lookup. One that holds messages is still looked in.
    store, pool = one_connection
    fresh, used = store.create_threads([{}, {}])
    store.add_messages(used.id, [user("there", id="taken")])

    def lookups(batches: list[tuple[str, list[NewMessage]]]) -> list[str]:
        _, lines = traced(pool, lambda: store.bulk_add_messages(batches))
        return [
            line[3]
            for line in lines
            if line[0] == "F" and "AS c (thread_seq, id)" in " ".join(line[3:])
        ]

    assert lookups([(fresh.id, [user("a", id="a"), user("b", id="b")])]) == []
    assert store.count_messages(fresh.id) == 2
    # Now it holds messages: its ids are looked for, and a taken one is named.
    assert len(lookups([(fresh.id, [user("c", id="c")])])) == 1
    with pytest.raises(MessageIdConflictError) as caught:
        store.bulk_add_messages(
            [(fresh.id, [user("d", id="d")]), (used.id, [user("e", id="taken")])]
        )
    assert (caught.value.thread_id, caught.value.message_id) == (used.id, "taken")
    assert store.count_messages(fresh.id) == 3


def begun(store: Any, *messages: NewMessage) -> tuple[Any, Any]:
    """A thread of ``store`` with a run ``run_1`` begun on it, and its start."""
    thread = store.create_thread({"topic": "a"})
    start = store.begin_run(
        thread.id, owner="run_1", ttl=30.0, messages=list(messages) or [user("q")]
    )
    return thread, start


def finish(store: Any, thread_id: str, **patch: str) -> Any:
    """End ``run_1`` completed with a reply, patching the thread with ``patch``."""
    return store.finish_run(
        thread_id,
        owner="run_1",
        run_id="run_1",
        update=RunUpdate(status="completed"),
        messages=[reply("a", "run_1")],
        thread_patch=MetadataPatch(set=patch) if patch else None,
    )


@needs_pipelines
def test_a_run_changed_since_it_began_is_read_before_its_end_is_written(
    one_connection: tuple[Any, Any], make: Callable[..., Any]
) -> None:
    """A cancel from another store between begin and finish: read, then cancelled."""
    store, pool = one_connection
    thread, _ = begun(store)
    make().cancel_run(thread.id, "run_1")
    saved, trips = round_trips(pool, lambda: finish(store, thread.id, hwm="x"))
    # The write found the run changed and wrote nothing; the run was read and
    # ended as a cancel asks: no reply kept, the metadata left alone.
    assert trips == ["WITH", "SELECT", "WITH"]
    assert saved.run.status == "cancelled"
    assert saved.messages == []
    assert saved.run == store.get_run(thread.id, "run_1")
    assert saved.run.cancelled_at is not None
    assert [m.role for m in store.list_messages(thread.id)] == ["user"]
    assert "hwm" not in store.get_thread(thread.id).metadata


@needs_pipelines
def test_thread_metadata_changed_during_a_run_is_kept_by_its_end(
    one_connection: tuple[Any, Any], make: Callable[..., Any]
) -> None:
    """Metadata written by another store while the run ran is patched, not lost."""
    store, pool = one_connection
    thread, start = begun(store)
    make().update_thread(thread.id, MetadataPatch(set={"topic": "b", "extra": "1"}))
    saved, trips = round_trips(
        pool, lambda: finish(store, thread.id, hwm=start.appended[0].id)
    )
    assert trips == ["WITH", "SELECT", "WITH"]
    assert saved.run.status == "completed"
    assert store.get_thread(thread.id).metadata == {
        "topic": "b",
        "extra": "1",
        "hwm": start.appended[0].id,
    }
    assert [m.role for m in store.list_messages(thread.id)] == ["user", "assistant"]


@needs_pipelines
def test_a_run_begun_by_another_store_is_read_before_its_end(
    one_connection: tuple[Any, Any], make: Callable[..., Any]
) -> None:
    """Only the store that began a run skips the read; any store may end it."""
    store, pool = one_connection
    thread, _ = begun(make())
    saved, trips = round_trips(pool, lambda: finish(store, thread.id))
    assert trips == ["SELECT", "WITH"]
    assert saved.run == store.get_run(thread.id, "run_1")
    assert saved.run.status == "completed"


@needs_pipelines
def test_resume_is_one_round_trip_and_cancel_two(
    one_connection: tuple[Any, Any],
) -> None:
    store, pool = one_connection
    thread = store.create_thread({})
    store.begin_run(thread.id, owner="run_1", ttl=30.0)
    store.finish_run(
        thread.id,
        owner="run_1",
        run_id="run_1",
        update=RunUpdate(status="requires_action", required_action=WAITING),
    )
    start, trips = round_trips(
        pool,
        lambda: store.begin_run(
            thread.id, owner="attempt_2", ttl=30.0, messages=[user("r")], resume=True
        ),
    )
    assert (start.resumed, start.run.id) == (True, "run_1")
    assert trips == ["WITH WITH SELECT SELECT"]
    # SQL continued the run as resumed_run does, by the database's clock.
    waiting = store.get_run(thread.id, "run_1")
    assert start.run == waiting
    assert start.run == resumed_run(
        waiting.model_copy(update={"status": "requires_action", "expires_at": None}),
        start.run.started_at,
    ).model_copy(update={"expires_at": waiting.expires_at})
    unleased = waiting.model_copy(update={"expires_at": None})
    assert stored_run(store, "run_1")[1] == json.loads(run_body(unleased))
    cancelled, trips = round_trips(pool, lambda: store.cancel_run(thread.id, "run_1"))
    assert cancelled.status == "cancelling"
    assert trips == ["SELECT", "UPDATE"]
    assert store.renew_run(thread.id, owner="attempt_2", ttl=30.0) == "cancelling"


@pytest.mark.parametrize("limit", [None, 0, 3, 10])
async def test_a_resumed_run_reads_the_context_a_new_run_reads(
    make: Callable[..., Any], call: Call, limit: int | None
) -> None:
    """Resuming reads the context before appending: the same rows in the end."""
    store = make()
    thread = await call(store, "create_thread", {})
    await call(store, "add_messages", thread.id, [user(f"m{i}") for i in range(4)])
    await call(store, "begin_run", thread.id, owner="run_1", ttl=30.0)
    await call(
        store,
        "finish_run",
        thread.id,
        owner="run_1",
        run_id="run_1",
        update=RunUpdate(status="requires_action", required_action=WAITING),
        messages=[reply("calling", "run_1")],
    )
    start = await call(
        store,
        "begin_run",
        thread.id,
        owner="attempt_2",
        ttl=30.0,
        messages=[user("r1"), user("r2")],
        context_limit=limit,
        resume=True,
    )
    assert start.resumed
    stored = await call(store, "list_messages", thread.id)
    assert start.appended == stored[-2:]
    newest = stored if limit is None else stored[max(len(stored) - limit, 0) :]
    assert [row.stored() for row in start.context] == newest


async def test_a_resume_that_cannot_read_gives_the_run_back(
    make: Callable[..., Any], call: Call
) -> None:
    """As a new run that cannot read its thread: no lease, the run as it was."""
    store = make()
    thread = await call(store, "create_thread", {})
    (kept,) = await call(store, "add_messages", thread.id, [user("q")])
    await call(store, "begin_run", thread.id, owner="run_1", ttl=30.0)
    await call(
        store,
        "finish_run",
        thread.id,
        owner="run_1",
        run_id="run_1",
        update=RunUpdate(status="requires_action", required_action=WAITING),
    )
    waiting = stored_run(store, "run_1")
    run(
        f"UPDATE \"{store.schema}\".retro_messages SET metadata = '[1]' WHERE id = %s",
        kept.id,
    )
    with pytest.raises(CorruptDataError):
        await call(
            store,
            "begin_run",
            thread.id,
            owner="attempt_2",
            ttl=30.0,
            messages=[user("r")],
            resume=True,
        )
    assert stored_run(store, "run_1") == waiting
    assert await call(store, "get_lease", thread.id) is None
    assert await call(store, "count_messages", thread.id) == 2  # its input stays
    with pytest.raises(CorruptDataError):  # a new run is deleted
        await call(store, "begin_run", thread.id, owner="run_2", ttl=30.0)
    assert [r.id for r in await call(store, "list_runs", thread.id)] == ["run_1"]
    assert await call(store, "get_lease", thread.id) is None


def test_a_new_run_is_the_row_new_run_row_makes(make: Callable[..., Any]) -> None:
    """SQL stamps the row and fills in the assistant as `new_run_row` would."""
    store = make()
    assistant = store.create_assistant({"model": "m"}, {})
    thread = store.create_thread({"assistant_id": assistant.id, "k": "v"})
    cases = {
        "run_plain": NewRun(id="run_plain"),
        "run_full": NewRun(
            id="run_full",
            assistant_id="asst_other",
            model="gpt-x",
            instructions="Be brief.",
            tools=[{"type": "function", "function": {"name": "f"}}],
            temperature=0.2,
            max_prompt_tokens=100,
            metadata={"a": "b"},
        ),
        "run_blank": NewRun(id="run_blank", assistant_id=""),
    }
    for run_id, new in cases.items():
        start = store.begin_run(thread.id, owner=run_id, ttl=30.0, run=new)
        assert start is not None
        ((created_at, body),) = run(
            f'SELECT created_at, body FROM "{store.schema}".retro_runs WHERE id = %s',
            run_id,
        )
        expected = new_run_row(new, thread.id, start.thread.metadata, created_at)
        assert start.run == expected.model_copy(
            update={"expires_at": start.run.expires_at}
        )
        assert body == json.loads(run_body(expected))
        assert "expires_at" not in body
        assert store.get_run(thread.id, run_id) == start.run
        store.finish_run(
            thread.id, owner=run_id, run_id=run_id, update=RunUpdate(status="failed")
        )
    assert store.get_run(thread.id, "run_plain").assistant_id == assistant.id
    assert store.get_run(thread.id, "run_full").assistant_id == "asst_other"
    assert store.get_run(thread.id, "run_blank").assistant_id == assistant.id


def stored_run(store: Any, run_id: str) -> tuple[str, dict[str, Any], str | None]:
    ((status, body, owner),) = run(
        f'SELECT status, body, lease_owner FROM "{store.schema}".retro_runs '
        "WHERE id = %s",
        run_id,
    )
    return status, body, owner


async def test_a_takeover_writes_what_settle_reads(
    make: Callable[..., Any], call: Call
) -> None:
    store = make()
    expired = await call(store, "create_thread", {})
    await call(store, "begin_run", expired.id, owner="run_old", ttl=0.05)
    cancelled = await call(store, "create_thread", {})
    await call(store, "begin_run", cancelled.id, owner="run_asked", ttl=0.05)
    await call(store, "cancel_run", cancelled.id, "run_asked")
    await asyncio.sleep(0.15)
    # Read as lapsed, still stored as they were until another run takes over.
    read_old = await call(store, "get_run", expired.id, "run_old")
    read_asked = await call(store, "get_run", cancelled.id, "run_asked")
    assert (read_old.status, read_asked.status) == ("expired", "cancelled")
    assert stored_run(store, "run_old")[0] == "in_progress"
    assert stored_run(store, "run_asked")[0] == "cancelling"
    await call(store, "begin_run", expired.id, owner="run_new", ttl=30.0)
    await call(store, "begin_run", cancelled.id, owner="run_next", ttl=30.0)
    status, body, owner = stored_run(store, "run_old")
    assert (status, owner) == ("expired", "run_old")
    assert "expires_at" not in body
    assert await call(store, "get_run", expired.id, "run_old") == read_old
    status, body, _ = stored_run(store, "run_asked")
    assert status == "cancelled"
    taken = await call(store, "get_run", cancelled.id, "run_asked")
    stamps = abs(taken.cancelled_at - read_asked.cancelled_at)
    assert stamps <= 1  # both the database's clock, a moment apart
    assert taken == read_asked.model_copy(update={"cancelled_at": taken.cancelled_at})
    assert body["cancelled_at"] == taken.cancelled_at
    # settle itself agrees with the row written.
    unsettled = read_asked.model_copy(update={"status": "cancelling"})
    assert (
        settle(unsettled, held=False, lease_expires_at=None, now=taken.cancelled_at)
        == taken
    )


def test_renewing_writes_only_the_lease(make: Callable[..., Any]) -> None:
    store = make()
    thread = store.create_thread({})
    store.begin_run(thread.id, owner="run_1", ttl=30.0)
    before = stored_run(store, "run_1")
    assert store.renew_run(thread.id, owner="run_1", ttl=60.0) == "held"
    assert stored_run(store, "run_1") == before
    lease = store.get_lease(thread.id)
    assert lease is not None
    assert lease.expires_at > time.time() + 50
    assert store.get_run(thread.id, "run_1").expires_at == int(lease.expires_at)


def test_a_cancel_of_a_lapsed_run_writes_it_expired(make: Callable[..., Any]) -> None:
    store = make()
    thread = store.create_thread({})
    store.begin_run(thread.id, owner="run_1", ttl=0.05)
    time.sleep(0.15)
    with pytest.raises(RetroValueError, match="already expired"):
        store.cancel_run(thread.id, "run_1")
    assert stored_run(store, "run_1")[0] == "expired"
    # Its process comes back: the lease is still its own, but the run has ended.
    assert store.renew_run(thread.id, owner="run_1", ttl=30.0) == "lost"
    assert run(f'SELECT count(*) FROM "{store.schema}".retro_run_leases') == [(0,)]


# --- plans -------------------------------------------------------------------------


@pytest.fixture(params=["analysed", "no statistics"])
def busy(
    make: Callable[..., Any], request: pytest.FixtureRequest
) -> tuple[Any, str, list[str]]:
    """Three threads of 300 ended runs and their messages; the middle one's runs.

    Once analysed, once as loaded (before autovacuum gathers statistics).
    """
    store = make()
    threads = store.create_threads([{}, {}, {}])
    schema = f'"{store.schema}"'
    for thread in threads:
        run(
            f"INSERT INTO {schema}.retro_runs (thread_seq, id, status, created_at, "
            "body) SELECT t.seq, t.id || '_run_' || i, 'completed', 0, '{}' "
            f"FROM {schema}.retro_threads t, generate_series(1, 300) i "
            "WHERE t.id = %s",
            thread.id,
        )
        store.bulk_add_messages(
            [(thread.id, [reply(str(i), f"{thread.id}_run_{i}") for i in range(300)])]
        )
    if request.param == "analysed":
        run(f"ANALYZE {schema}.retro_runs")
        run(f"ANALYZE {schema}.retro_messages")
    middle = threads[1].id
    return store, middle, [f"{middle}_run_{i}" for i in range(1, 301)]


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_runs_are_read_by_their_indexes(
    busy: tuple[Any, str, list[str]], mode: str
) -> None:
    store, tid, ids = busy
    with explaining_store(store.schema, f"plan_cache_mode = {mode}") as (
        explained,
        plans,
    ):
        for order in ("asc", "desc"):
            for cursor in ({}, {"after": ids[100]}, {"before": ids[200]}):
                page = explained.list_runs(tid, order=order, limit=5, **cursor)
                assert len(page) == 5
                listing = plans[-1]
                assert "retro_runs_thread_index" in listing, listing
                assert "Sort" not in listing, listing
                assert "Seq Scan on retro_runs" not in listing, listing
        written = explained.list_run_messages(tid, ids[5])
        assert [m.run_id for m in written] == [ids[5]]
        assert "retro_messages_run_index" in plans[-1], plans[-1]
        # The three-row threads table may be scanned: it is the runs and the
        # messages that must be reached by their indexes.
        assert "Seq Scan on retro_messages" not in plans[-1], plans[-1]
        assert explained.renew_run(tid, owner="nobody", ttl=1.0) == "lost"
        start = explained.begin_run(tid, owner="run_new", ttl=30.0)
        assert start is not None
        lapse = next(p for p in plans if "Update on retro_runs" in p)
        assert "retro_runs_active_index" in lapse, lapse


# --- writes ------------------------------------------------------------------------


def interleaved(store: Any, op: Any, meanwhile: Callable[[], object]) -> Any:
    """Run ``op`` with ``meanwhile`` done between its first read and its write."""
    with store._pools.connection() as conn:
        cursor = conn.cursor(row_factory=psycopg.rows.tuple_row)
        read = next(op)
        rows = io_module._perform(conn, cursor, read)
        meanwhile()
        write = op.send(rows)
        again = op.send(io_module._perform(conn, cursor, write))
        assert again.query == read.query  # it reads again
        return io_module._drive(conn, io_module._started(again, op))


def test_a_finish_that_finds_the_run_changed_reads_it_again(
    make: Callable[..., Any],
) -> None:
    store = make()
    thread = store.create_thread({})
    make().begin_run(thread.id, owner="run_1", ttl=30.0)  # so finish reads first
    op = store._finish_run(
        thread.id,
        owner="run_1",
        run_id="run_1",
        update=RunUpdate(status="completed", usage=RunUsage(total_tokens=5)),
        messages=[reply("late", "run_1")],
        thread_patch=MetadataPatch(set={"hwm": "x"}),
    )
    saved = interleaved(store, op, lambda: store.cancel_run(thread.id, "run_1"))
    # Read again, it was being cancelled: it ends cancelled, nothing else written.
    assert (saved.messages, saved.run.status) == ([], "cancelled")
    assert store.count_messages(thread.id) == 0
    assert store.get_thread(thread.id).metadata == {}
    assert store.get_thread_usage(thread.id) == RunUsage()
    assert store.get_lease(thread.id) is None


def test_a_patch_is_applied_to_the_metadata_as_it_is(
    make: Callable[..., Any],
) -> None:
    store = make()
    thread = store.create_thread({"a": "1"})
    make().begin_run(thread.id, owner="run_1", ttl=30.0)  # so finish reads first
    op = store._finish_run(
        thread.id,
        owner="run_1",
        run_id="run_1",
        update=RunUpdate(status="completed"),
        messages=[reply("a", "run_1")],
        thread_patch=MetadataPatch(set={"hwm": "x"}),
    )
    saved = interleaved(
        store,
        op,
        lambda: store.update_thread(thread.id, MetadataPatch(set={"b": "2"})),
    )
    assert saved.run.status == "completed"
    assert store.get_thread(thread.id).metadata == {"a": "1", "b": "2", "hwm": "x"}
    assert store.count_messages(thread.id) == 1


def test_a_cancel_that_finds_the_run_changed_reads_it_again(
    make: Callable[..., Any],
) -> None:
    store = make()
    thread = store.create_thread({})
    store.begin_run(thread.id, owner="run_1", ttl=30.0)
    op = store._cancel_run(thread.id, "run_1")
    waiting = RunUpdate(status="requires_action", required_action=WAITING)
    cancelled = interleaved(
        store,
        op,
        lambda: store.finish_run(
            thread.id, owner="run_1", run_id="run_1", update=waiting
        ),
    )
    # Read again, it waits for tool results: cancelled at once.
    assert (cancelled.status, cancelled.required_action) == ("cancelled", None)
    assert store.get_run(thread.id, "run_1") == cancelled


def test_a_refused_finish_leaves_no_transaction(
    one_connection: tuple[Any, Any],
) -> None:
    store, pool = one_connection
    thread = store.create_thread({})
    store.begin_run(thread.id, owner="run_1", ttl=30.0)
    with pytest.raises(RunNotFoundError):
        store.finish_run(
            thread.id,
            owner="run_1",
            run_id="run_nope",
            update=RunUpdate(status="completed"),
            messages=[reply("a")],
        )
    with pool.connection() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert store.count_messages(thread.id) == 0
    assert store.get_lease(thread.id).owner == "run_1"
    store.finish_run(
        thread.id, owner="run_1", run_id="run_1", update=RunUpdate(status="completed")
    )
    assert store.get_lease(thread.id) is None


@needs_pipelines
def test_a_failed_pipeline_forgets_what_it_did_not_prepare(
    one_connection: tuple[Any, Any],
) -> None:
    """A statement skipped after an error, due to be prepared, is not taken as such.

    Otherwise psycopg would run it by a prepared name the server never created.
    """
    _, pool = one_connection
    sql_module = pytest.importorskip("langchain_retro.stores._postgres_sql")
    ok = sql_module._Q(psycopg.sql.Composed([psycopg.sql.SQL("SELECT 1")]))
    bad = sql_module._Q(psycopg.sql.Composed([psycopg.sql.SQL("SELECT 1 / 0")]))
    with pool.connection() as conn:
        conn.prepare_threshold = 1  # prepared on its second run
        cursor = conn.cursor()
        try:
            assert io_module._perform(conn, cursor, (ok,)) == [[(1,)]]
            with pytest.raises(psycopg.errors.DivisionByZero):
                io_module._perform(conn, cursor, (bad, ok))
            assert io_module._perform(conn, cursor, (ok,)) == [[(1,)]]
            assert io_module._perform(conn, cursor, (ok,)) == [[(1,)]]
        finally:
            conn.prepare_threshold = 5


def test_a_clashing_input_fails_no_statement(
    one_connection: tuple[Any, Any],
) -> None:
    """A caller id or run id already stored is found first: no statement fails."""
    store, pool = one_connection
    thread = store.create_thread({})
    store.add_messages(thread.id, [user("q", id="taken")])

    def attempts() -> None:
        for attempt in range(3):
            with pytest.raises(MessageIdConflictError):
                store.begin_run(
                    thread.id,
                    owner=f"clash_{attempt}",
                    ttl=30.0,
                    messages=[user("again", id="taken")],
                )
            owner = f"run_{attempt}"
            assert store.begin_run(thread.id, owner=owner, ttl=30.0) is not None
            store.finish_run(
                thread.id,
                owner=owner,
                run_id=owner,
                update=RunUpdate(status="completed"),
            )
            with pytest.raises(RetroValueError, match="already exists"):
                store.begin_run(
                    thread.id, owner="other", ttl=30.0, run=NewRun(id=owner)
                )

    _, lines = traced(pool, attempts)
    assert not [line for line in lines if line[2] == "ErrorResponse"]
    assert [r.id for r in store.list_runs(thread.id, order="asc")] == [
        f"run_{i}" for i in range(3)
    ]
    assert store.count_messages(thread.id) == 1
    assert store.get_lease(thread.id) is None


def test_a_hand_edited_run_is_named_and_nothing_written(
    make: Callable[..., Any],
) -> None:
    store = make()
    thread = store.create_thread({})
    store.begin_run(thread.id, owner="run_bad", ttl=30.0)
    run(
        f'UPDATE "{store.schema}".retro_runs SET body = \'{{"usage": "lots"}}\' '
        "WHERE id = 'run_bad'"
    )
    readers: list[Callable[[], object]] = [
        lambda: store.get_run(thread.id, "run_bad"),
        lambda: store.list_runs(thread.id),
        lambda: store.cancel_run(thread.id, "run_bad"),
        lambda: store.finish_run(
            thread.id,
            owner="run_bad",
            run_id="run_bad",
            update=RunUpdate(status="completed"),
            messages=[reply("a")],
        ),
    ]
    for read in readers:
        with pytest.raises(CorruptDataError) as caught:
            read()
        assert (caught.value.object_id, caught.value.thread_id) == (
            "run_bad",
            thread.id,
        )
    assert store.count_messages(thread.id) == 0
    assert stored_run(store, "run_bad")[0] == "in_progress"
    assert store.get_lease(thread.id).owner == "run_bad"


@pytest.mark.parametrize("setting", ["no pipelines", "no autocommit"])
async def test_runs_without_pipelines_or_autocommit(
    make: Callable[..., Any],
    call: Call,
    setting: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same run without pipelines (libpq before 14), or over pools of our users."""
    schema = make().schema
    kwargs: dict[str, Any] = {"autocommit": True}
    if setting == "no pipelines":
        monkeypatch.setattr(io_module, "_PIPELINES", False)
    else:
        kwargs = {}
    pool = psycopg_pool.ConnectionPool(
        postgres_url(), kwargs=kwargs, min_size=1, max_size=1, open=True
    )
    async_pool = psycopg_pool.AsyncConnectionPool(
        postgres_url(), kwargs=kwargs, min_size=1, max_size=1, open=False
    )
    await async_pool.open()
    try:
        store = PostgresStore(pool, async_pool, schema=schema)
        thread = await call(store, "create_thread", {})
        start = await call(
            store, "begin_run", thread.id, owner="run_1", ttl=30.0, messages=[user("q")]
        )
        assert start.run.status == "in_progress"
        step = await call(
            store,
            "finish_run",
            thread.id,
            owner="run_1",
            run_id="run_1",
            update=RunUpdate(status="requires_action", required_action=WAITING),
            messages=[reply("calling", "run_1")],
        )
        assert step.run.status == "requires_action"
        resumed = await call(
            store,
            "begin_run",
            thread.id,
            owner="attempt_2",
            ttl=30.0,
            messages=[user("result")],
            resume=True,
        )
        assert (resumed.resumed, resumed.appended[0].run_id) == (True, "run_1")
        cancelling = await call(store, "cancel_run", thread.id, "run_1")
        assert cancelling.status == "cancelling"
        ended = await call(
            store,
            "finish_run",
            thread.id,
            owner="attempt_2",
            run_id="run_1",
            update=RunUpdate(status="completed"),
            messages=[reply("late", "run_1")],
        )
        assert (ended.messages, ended.run.status) == ([], "cancelled")
        assert await call(store, "get_lease", thread.id) is None
        written = await call(store, "list_run_messages", thread.id, "run_1")
        assert [m.role for m in written] == ["assistant", "user"]
        with pool.connection() as conn:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        pool.close()
        await async_pool.close()


@needs_pipelines
def test_a_message_if_idle_is_one_round_trip(one_connection: tuple[Any, Any]) -> None:
    store, pool = one_connection
    thread = store.create_thread({})
    stored, trips = round_trips(
        pool, lambda: store.add_messages_if_idle(thread.id, [user("q")])
    )
    assert [m.id for m in store.list_messages(thread.id)] == [stored[0].id]
    # In one transaction: the lease taken, the append under it, the lease given back.
    assert trips == ["WITH WITH DELETE"]
    assert store.get_lease(thread.id) is None
    # A scope (the server's owner) is a condition of the same statements.
    owned = store.create_thread({"retro_owner": "a"})
    scope = {"retro_owner": "a"}
    _, trips = round_trips(
        pool, lambda: store.add_messages_if_idle(owned.id, [user("r")], scope=scope)
    )
    assert trips == ["WITH WITH DELETE"]
    assert store.count_messages(owned.id) == 1
    with pytest.raises(ThreadNotFoundError):
        store.add_messages_if_idle(owned.id, [user("s")], scope={"retro_owner": "b"})
    assert store.count_messages(owned.id) == 1
    assert store.get_lease(owned.id) is None


def test_messages_racing_a_run_start_are_in_its_context_or_refused(
    make: Callable[..., Any],
) -> None:
    # READ COMMITTED would let an append's check miss a lease a starting run has
    # not committed yet; the lease taken inside the append's transaction orders them.
    store = make()
    for round_ in range(8):
        thread = store.create_thread({})
        store.add_messages(thread.id, [user("first")])
        barrier = threading.Barrier(7)

        def start(_: int, thread_id: str = thread.id, b: Any = barrier) -> Any:
            b.wait()
            return store.begin_run(thread_id, owner=f"run_{thread_id}", ttl=30.0)

        def write(index: int, thread_id: str = thread.id, b: Any = barrier) -> Any:
            b.wait()
            time.sleep(index * 0.0005)
            try:
                store.add_messages_if_idle(thread_id, [user(f"m{index}")])
            except ThreadBusyError as exc:
                return str(exc.run_id)
            return f"m{index}"

        with concurrent.futures.ThreadPoolExecutor(7) as pool:
            begun = pool.submit(start, 0)
            written = [pool.submit(write, i) for i in range(6)]
            answers = {f.result() for f in written}
            began = begun.result()
        accepted = answers - {began.run.id}  # the others were refused naming it
        context = {json.loads(m.payload)["content"] for m in began.context}
        assert context == {"first"} | accepted, round_
        rows = store.list_messages(thread.id)
        stored = {json.loads(m.payload)["content"] for m in rows}
        assert stored == context, round_
