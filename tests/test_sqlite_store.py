"""What only `SQLiteStore` promises: its file, schema, query plans and processes."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_retro import (
    AssistantThreadChatMessageHistory,
    BaseThread,
    RetroValueError,
    SchemaVersionError,
    SQLiteStore,
    StoreClosedError,
    StoreError,
)
from langchain_retro._messages import to_payload
from langchain_retro._metadata import MetadataPatch
from langchain_retro.errors import RunStateError
from langchain_retro.stores.base import (
    MessageRow,
    NewMessage,
    NewRun,
    RunUpdate,
    RunUsage,
    StoredMessage,
)
from langchain_retro.stores.sqlite import (
    CHECKPOINT_EVERY,
    DEFAULT_PATH,
    LOOP_ROWS,
    PATH_ENV,
    SCHEMA_VERSION,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "retro.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(path) as opened:
        yield opened


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def pragma(path: Path, name: str) -> object:
    conn = raw(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def new(text: str) -> NewMessage:
    return NewMessage(role="user", payload=to_payload(HumanMessage(text)))


# --- the file ------------------------------------------------------------------------


def test_wal_mode_and_schema_version(store: SQLiteStore, path: Path) -> None:
    assert path.exists()
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "user_version") == SCHEMA_VERSION >= 1


def test_reopening_keeps_data(path: Path) -> None:
    with SQLiteStore(path) as first:
        thread = first.create_thread({"k": "v"})
        first.add_messages(thread.id, [new("kept")])
    with SQLiteStore(path) as second:
        assert second.get_thread(thread.id).metadata == {"k": "v"}
        assert second.count_messages(thread.id) == 1
    assert pragma(path, "user_version") == SCHEMA_VERSION


def test_newer_schema_is_refused(path: Path) -> None:
    SQLiteStore(path).close()
    conn = raw(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaVersionError) as caught:
        SQLiteStore(path)
    assert isinstance(caught.value, StoreError)
    assert isinstance(caught.value, RuntimeError)
    assert "Upgrade langchain-retro" in str(caught.value)
    assert pragma(path, "user_version") == SCHEMA_VERSION + 1  # left as it was


def open_files() -> set[str]:
    """Paths this process holds open (Linux), for leak checks."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd")
    out = set()
    for fd in fds.iterdir():
        try:
            out.add(str(fd.readlink()))
        except OSError:
            continue
    return out


def test_refused_file_is_not_left_open(path: Path) -> None:
    SQLiteStore(path).close()
    conn = raw(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    assert str(path) not in open_files()
    with pytest.raises(SchemaVersionError):
        SQLiteStore(path)
    assert str(path) not in open_files()


def test_not_a_database_is_store_error(path: Path) -> None:
    path.write_bytes(b"this is not a database file, " * 100)
    with pytest.raises(StoreError) as caught:
        SQLiteStore(path)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    assert str(path) in str(caught.value)
    assert str(path) not in open_files()


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        SQLiteStore(tmp_path / "missing-dir" / "retro.db")
    assert "missing-dir" in str(caught.value)
    assert "does not exist" in str(caught.value)
    assert not (tmp_path / "missing-dir").exists()


def test_default_path_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "from-env.db"
    monkeypatch.setenv(PATH_ENV, str(target))
    with SQLiteStore() as store:
        assert store.path == str(target)
        store.create_thread({})
    assert target.exists()


def test_default_path_in_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PATH_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with SQLiteStore() as store:
        assert store.path == DEFAULT_PATH
    assert (tmp_path / DEFAULT_PATH).exists()


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2)])
def test_synchronous(path: Path, synchronous: str, level: int) -> None:
    with SQLiteStore(path, synchronous=synchronous) as store:  # type: ignore[arg-type]
        assert store._conn is not None
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == level
        thread = store.create_thread({})
        store.add_messages(thread.id, [new("durable")])
        assert store.count_messages(thread.id) == 1


def test_synchronous_must_be_known(path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(path, synchronous="OFF")  # type: ignore[arg-type]
    assert not path.exists()


def test_in_memory_database() -> None:
    with SQLiteStore(":memory:") as store:
        thread = store.create_thread({})
        store.add_messages(thread.id, [new("x")])
        assert store.count_messages(thread.id) == 1


def test_deleting_a_thread_leaves_no_rows(store: SQLiteStore, path: Path) -> None:
    thread = store.create_thread({"a": "1"})
    keep = store.create_thread({"a": "1"})
    store.add_messages(thread.id, [new("x"), new("y")])
    store.add_messages(keep.id, [new("z")])
    store.begin_run(thread.id, owner="w", ttl=30.0, messages=[new("q")])
    store.begin_run(keep.id, owner="k", ttl=30.0)
    store.delete_thread(thread.id)
    conn = raw(path)
    try:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
        assert conn.execute("SELECT id FROM runs").fetchall() == [("k",)]
        (seq,) = conn.execute("SELECT seq FROM threads").fetchone()
        keys = conn.execute("SELECT DISTINCT thread_seq FROM thread_metadata")
        assert [r[0] for r in keys] == [seq]
        assert conn.execute("SELECT owner FROM run_leases").fetchall() == [("k",)]
    finally:
        conn.close()


def test_thread_patch_writes_only_the_changed_index_rows(
    store: SQLiteStore, path: Path
) -> None:
    thread = store.create_thread({f"k{i}": str(i) for i in range(10)})
    assert store._conn is not None
    changes = store._conn.total_changes
    patch = MetadataPatch(
        set={"k1": "one", "k9": "9", "new": "x"}, remove=frozenset({"k2"})
    )
    updated = store.update_thread(thread.id, patch)
    # The thread row, then k1's and k2's old entries out, k1's and new's entries in.
    assert store._conn.total_changes - changes == 5
    conn = raw(path)
    try:
        rows = conn.execute("SELECT key, value FROM thread_metadata").fetchall()
    finally:
        conn.close()
    assert dict(rows) == updated.metadata
    assert len(rows) == len(updated.metadata)
    assert BaseThread.list(store, metadata={"k1": "one", "new": "x"}).data
    assert not BaseThread.list(store, metadata={"k1": "1"}).data
    assert not BaseThread.list(store, metadata={"k2": "2"}).data


# --- query plans ---------------------------------------------------------------------


def _statements(store: SQLiteStore, action: object) -> list[str]:
    """The statements ``action`` runs, ``BEGIN`` and ``COMMIT`` left out."""
    statements: list[str] = []
    assert store._conn is not None
    store._conn.set_trace_callback(statements.append)
    try:
        action()  # type: ignore[operator]
    finally:
        store._conn.set_trace_callback(None)
    return [s for s in statements if not s.startswith(("BEGIN", "COMMIT"))]


def _plans(store: SQLiteStore, action: object, table: str = "messages") -> list[str]:
    """The query plans of every ``SELECT`` reading ``table`` that ``action`` runs."""
    statements = _statements(store, action)
    assert store._conn is not None
    plans = []
    for sql in statements:
        if f"FROM {table}" not in sql or not sql.lstrip().upper().startswith("SELECT"):
            continue
        rows = store._conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        plans.append(" | ".join(row[-1] for row in rows))
    assert plans, statements
    return plans


def _busy_thread(store: SQLiteStore) -> tuple[str, list[str]]:
    for _ in range(3):  # neighbours before and after
        other = store.create_thread({})
        store.add_messages(other.id, [new(f"o{i}") for i in range(50)])
    thread = store.create_thread({})
    rows = store.add_messages(thread.id, [new(f"m{i}") for i in range(200)])
    store.add_messages(store.create_thread({}).id, [new("after")] * 20)
    return thread.id, [r.id for r in rows]


def test_newest_n_reads_by_primary_key(store: SQLiteStore) -> None:
    tid, _ = _busy_thread(store)
    history = AssistantThreadChatMessageHistory(store, tid, window=10)
    plans = _plans(store, lambda: history.messages)
    for plan in plans:
        assert "SCAN" not in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    assert any("USING PRIMARY KEY (thread_seq=?" in plan for plan in plans), plans


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_cursor_reads_by_primary_key(store: SQLiteStore, order: str) -> None:
    tid, ids = _busy_thread(store)
    plans = _plans(
        store,
        lambda: store.list_messages(tid, after=ids[100], order=order, limit=5),  # type: ignore[arg-type]
    )
    for plan in plans:
        assert "SCAN" not in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    assert any("PRIMARY KEY (thread_seq=? AND seq>?)" in plan for plan in plans)
    plans = _plans(store, lambda: store.count_messages(tid, after=ids[150]))
    for plan in plans:
        assert "SCAN" not in plan, plan


def _busy_runs(store: SQLiteStore) -> tuple[str, list[str]]:
    """A thread with 30 ended runs among other threads' runs, and its run ids."""
    ids = []
    for t in range(3):
        thread = store.create_thread({})
        for i in range(30):
            owner = f"run_{t}_{i}"
            store.begin_run(thread.id, owner=owner, ttl=30.0, messages=[new("q")])
            store.finish_run(
                thread.id,
                owner=owner,
                run_id=owner,
                update=RunUpdate(status="completed"),
                messages=[NewMessage(role="assistant", payload="{}", run_id=owner)],
            )
            if t == 1:
                ids.append(owner)
        if t == 1:
            middle = thread.id
    return middle, ids


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_runs_are_listed_by_their_index(store: SQLiteStore, order: str) -> None:
    tid, ids = _busy_runs(store)
    for kwargs in ({}, {"after": ids[10]}, {"before": ids[20]}):
        plans = _plans(
            store,
            lambda kw=kwargs: store.list_runs(tid, order=order, limit=5, **kw),  # type: ignore[arg-type, misc]
            "runs",
        )
        for plan in plans:
            assert "SCAN" not in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        assert any("runs_by_thread (thread_seq=?" in plan for plan in plans), plans


def test_a_runs_messages_are_read_by_their_index(store: SQLiteStore) -> None:
    tid, ids = _busy_runs(store)
    plans = _plans(store, lambda: store.list_run_messages(tid, ids[5]))
    (plan,) = plans
    assert "USING INDEX messages_by_run (thread_seq=? AND run_id=?)" in plan
    assert "TEMP B-TREE" not in plan
    assert len(store.list_run_messages(tid, ids[5])) == 1


def test_a_turn_is_a_few_statements_on_indexes(store: SQLiteStore) -> None:
    """begin_run and finish_run stay one transaction of a few indexed statements."""
    thread = store.create_thread(
        {"assistant_id": store.create_assistant({"model": "m"}, {}).id}
    )
    store.begin_run(thread.id, owner="run_0", ttl=30.0)
    store.finish_run(
        thread.id, owner="run_0", run_id="run_0", update=RunUpdate(status="completed")
    )
    begun = _statements(
        store,
        lambda: store.begin_run(
            thread.id, owner="run_1", ttl=30.0, messages=[new("q")], context_limit=50
        ),
    )
    finished = _statements(
        store,
        lambda: store.finish_run(
            thread.id,
            owner="run_1",
            run_id="run_1",
            update=RunUpdate(
                status="completed",
                usage=RunUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
            ),
            messages=[NewMessage(role="assistant", payload="{}", run_id="run_1")],
            thread_patch=MetadataPatch(set={"hwm": "x"}),
        ),
    )
    # Thread (with a probe for runs left active), lease, assistant, run, input,
    # thread row, context.
    assert len(begun) == 7, begun
    # Thread with run and lease, reply, the hwm index entry in, the thread row, the
    # run, the lease.
    assert len(finished) == 6, finished
    assert store._conn is not None
    for sql in begun + finished:
        if sql.startswith("INSERT"):
            continue
        plan = " | ".join(
            row[-1] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {sql}")
        )
        assert "SCAN" not in plan, (sql, plan)
    assert "runs_active" in " ".join(
        row[-1] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {begun[0]}")
    )


# --- runs' rows ----------------------------------------------------------------------


def _run_row(path: Path, run_id: str) -> tuple[str, dict[str, object], str | None]:
    conn = raw(path)
    try:
        status, body, owner = conn.execute(
            "SELECT status, body, lease_owner FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
    finally:
        conn.close()
    return status, json.loads(body), owner


def test_a_takeover_writes_the_lapsed_runs(store: SQLiteStore, path: Path) -> None:
    expired = store.create_thread({})
    store.begin_run(expired.id, owner="run_old", ttl=0.05)
    cancelled = store.create_thread({})
    store.begin_run(cancelled.id, owner="run_asked", ttl=0.05)
    store.cancel_run(cancelled.id, "run_asked")
    time.sleep(0.1)
    # Read as lapsed, but still stored as they were until a new run takes over.
    assert _run_row(path, "run_old")[0] == "in_progress"
    assert _run_row(path, "run_asked")[0] == "cancelling"
    store.begin_run(expired.id, owner="run_new", ttl=30.0)
    store.begin_run(cancelled.id, owner="run_next", ttl=30.0)
    status, body, owner = _run_row(path, "run_old")
    assert (status, owner) == ("expired", "run_old")
    assert "expires_at" not in body
    status, body, _ = _run_row(path, "run_asked")
    assert status == "cancelled"
    assert isinstance(body["cancelled_at"], int)
    assert _run_row(path, "run_new")[0] == "in_progress"


def test_renewing_writes_only_the_lease(store: SQLiteStore, path: Path) -> None:
    thread = store.create_thread({})
    store.begin_run(thread.id, owner="run_1", ttl=30.0, run=NewRun(id="run_1"))
    assert "expires_at" not in _run_row(path, "run_1")[1]
    assert store._conn is not None
    changes = store._conn.total_changes
    assert store.renew_run(thread.id, owner="run_1", ttl=60.0) == "held"
    assert store._conn.total_changes - changes == 1
    lease = store.get_lease(thread.id)
    assert lease is not None
    assert store.get_run(thread.id, "run_1").expires_at == int(lease.expires_at)


def test_a_cancel_of_a_lapsed_run_writes_it_expired(
    store: SQLiteStore, path: Path
) -> None:
    thread = store.create_thread({})
    store.begin_run(thread.id, owner="run_1", ttl=0.05)
    time.sleep(0.1)
    with pytest.raises(RunStateError):
        store.cancel_run(thread.id, "run_1")
    assert _run_row(path, "run_1")[0] == "expired"
    # Its process comes back: the lease is still its own, but the run has ended.
    assert store.renew_run(thread.id, owner="run_1", ttl=30.0) == "lost"
    assert store.get_lease(thread.id) is None


# --- processes -----------------------------------------------------------------------


def _append_many(path: str, thread_id: str, name: str, count: int) -> None:
    store = SQLiteStore(path)
    try:
        for i in range(count):
            store.add_messages(thread_id, [new(f"{name}-{i}")])
    finally:
        store.close()


def test_two_processes_append_to_one_thread(store: SQLiteStore, path: Path) -> None:
    thread = store.create_thread({})
    count = 40
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(target=_append_many, args=(str(path), thread.id, name, count))
        for name in ("a", "b")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    texts = [
        m.content for m in AssistantThreadChatMessageHistory(store, thread.id).messages
    ]
    assert len(texts) == 2 * count
    for name in ("a", "b"):  # nothing lost, each writer's messages in its order
        assert [t for t in texts if str(t).startswith(f"{name}-")] == [
            f"{name}-{i}" for i in range(count)
        ]
    conn = raw(path)
    try:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM messages ORDER BY seq")]
    finally:
        conn.close()
    assert seqs == list(range(1, 2 * count + 1))  # strictly increasing, gapless


# --- the event loop ------------------------------------------------------------------


async def test_async_reads_do_not_block_the_event_loop(store: SQLiteStore) -> None:
    thread = await BaseThread.acreate(store)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    pairs = [
        [HumanMessage(f"question {i} " * 10), AIMessage(f"answer {i} " * 20)]
        for i in range(2500)
    ]
    await history.aadd_messages([m for pair in pairs for m in pair])

    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    # A full collection stops every thread; this test is about our code, not the GC.
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        messages = await history.aget_messages()
        finished = time.perf_counter()
    finally:
        gc.enable()
    elapsed = finished - started
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(messages) == 5000
    during = [t for t in ticks if started <= t <= finished]
    marks = [started, *during, finished]
    gaps = [b - a for a, b in itertools.pairwise(marks)]
    # A blocking read would leave one gap as long as the read itself. The worker
    # thread shares the GIL, so under load ticks come late: allow for that.
    assert len(during) >= 2, (len(during), elapsed)
    assert max(gaps) < elapsed * 0.6, (max(gaps), elapsed)


async def test_async_calls_run_in_one_thread_of_the_store(path: Path) -> None:
    # With synchronous=FULL every commit syncs, so no call runs on the loop. One
    # connection, one thread: calls side by side queue there, instead of taking
    # turns at the connection's lock from several threads.
    before = set(threading.enumerate())
    store = SQLiteStore(path, synchronous="FULL")
    threads = [await BaseThread.acreate(store) for _ in range(3)]
    read = await asyncio.gather(
        *(store.aget_thread(t.id) for _ in range(8) for t in threads)
    )
    assert [r.id for r in read] == [t.id for _ in range(8) for t in threads]
    (mine,) = set(threading.enumerate()) - before  # no other thread took a call
    assert mine.name.startswith("retro-sqlite")
    await store.aclose()
    mine.join(timeout=5)  # closing the store ends its thread
    assert not mine.is_alive()
    with pytest.raises(StoreClosedError):
        await store.aget_thread(threads[0].id)


def _text(message: StoredMessage | MessageRow) -> str:
    return str(json.loads(message.payload)["content"])


def _size(path: Path) -> int:
    return path.stat().st_size


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("retro-sqlite")]


async def test_small_async_calls_run_on_the_loop_and_large_ones_in_the_thread(
    path: Path,
) -> None:
    before = set(_store_threads())
    store = SQLiteStore(path)
    try:
        thread = await BaseThread.acreate(store)
        await store.aadd_messages(thread.id, [new(f"m{i}") for i in range(LOOP_ROWS)])
        page = await store.alist_messages(thread.id, limit=LOOP_ROWS)
        assert [_text(m) for m in page] == [f"m{i}" for i in range(100)]
        read = await asyncio.gather(*(store.aget_thread(thread.id) for _ in range(8)))
        assert {r.id for r in read} == {thread.id}
        # A thread handed a call would be new; none is.
        assert not set(_store_threads()) - before
        assert await store.alist_assistants(limit=5) == []
        assert not set(_store_threads()) - before
        # A filtered listing of assistants reads every assistant's metadata: the
        # store's thread takes it.
        assert await store.alist_assistants(metadata={"team": "x"}) == []
        assert len(set(_store_threads()) - before) == 1
        # More rows than a page: the store's thread (the same one) reads them.
        everything = await store.alist_messages(thread.id)
        assert len(everything) == LOOP_ROWS
        assert len(set(_store_threads()) - before) == 1
    finally:
        await store.aclose()


async def test_a_run_with_a_long_context_begins_in_the_thread(path: Path) -> None:
    store = SQLiteStore(path)
    try:
        thread = await BaseThread.acreate(store)
        await store.aadd_messages(thread.id, [new(f"m{i}") for i in range(LOOP_ROWS)])
        before = set(_store_threads())
        short = await store.abegin_run(
            thread.id, owner="w1", ttl=30.0, messages=[new("x")], context_limit=10
        )
        assert short is not None
        assert _text(short.context[-1]) == "x"
        assert not set(_store_threads()) - before  # ten rows: on the loop
        await store.afinish_run(
            thread.id,
            owner="w1",
            run_id=short.run.id,
            update=RunUpdate(status="completed"),
        )
        # The whole thread as context: more than a page, so the thread takes it,
        # from the start (nothing of the attempt on the loop is left behind).
        whole = await store.abegin_run(
            thread.id, owner="w2", ttl=30.0, messages=[new("y")]
        )
        assert whole is not None
        assert len(whole.context) == LOOP_ROWS + 2
        assert [_text(m) for m in whole.appended] == ["y"]
        assert len(set(_store_threads()) - before) == 1
        texts = [_text(m) for m in await store.alist_messages(thread.id)]
        assert texts.count("y") == 1
        assert len(await store.alist_runs(thread.id)) == 2
    finally:
        await store.aclose()


async def test_an_async_write_waits_for_another_writer_in_the_thread(
    path: Path,
) -> None:
    # Another connection holds the file's write lock: the write must wait for it
    # without stopping the event loop, then land once.
    store = SQLiteStore(path)
    try:
        thread = await BaseThread.acreate(store)
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.005)

        ticking = asyncio.create_task(ticker())
        adding = asyncio.create_task(store.aadd_messages(thread.id, [new("later")]))
        await asyncio.sleep(0.3)
        assert not adding.done()  # it waits for the lock...
        assert len(ticks) >= 20  # ...and the loop goes on meanwhile
        other.execute("COMMIT")
        other.close()
        (stored,) = await asyncio.wait_for(adding, timeout=10)
        ticking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ticking
        assert _text(stored) == "later"
        texts = [_text(m) for m in await store.alist_messages(thread.id)]
        assert texts == ["later"]
    finally:
        await store.aclose()


async def test_writes_on_the_loop_are_checkpointed_in_the_thread(path: Path) -> None:
    # Commits on the loop never checkpoint (a checkpoint syncs): every
    # CHECKPOINT_EVERY writes the store's thread does, copying the WAL's pages
    # into the database file.
    store = SQLiteStore(path)
    try:
        thread = await BaseThread.acreate(store)
        size = _size(path)
        for i in range(CHECKPOINT_EVERY - 2):
            await store.aadd_messages(thread.id, [new(f"{i} " * 200)])
        assert _size(path) == size  # all of it still in the WAL
        for i in range(4):
            await store.aadd_messages(thread.id, [new(f"{i} " * 200)])
        # A count runs in the store's thread, after the checkpoint queued there.
        assert await store.acount_messages(thread.id) == CHECKPOINT_EVERY + 2
        assert _size(path) > size + 32 * 4096  # the messages, copied
    finally:
        await store.aclose()


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_path_is_refused_not_a_throwaway_database(empty: str) -> None:
    with pytest.raises(RetroValueError, match="empty"):
        SQLiteStore(empty)


def test_an_empty_path_variable_counts_as_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LANGCHAIN_RETRO_DB", "")
    with SQLiteStore() as store:
        assert store.path == "langchain-retro.db"
    assert (tmp_path / "langchain-retro.db").exists()
