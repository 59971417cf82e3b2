"""`SQLiteStore`'s schema: the forward migrations (v1 -> v2 -> v3), the kept counts,
the runs table and its indexes, and a current file opened read-only."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from langchain_retro import MessageIdConflictError, SQLiteStore
from langchain_retro._messages import to_payload
from langchain_retro.stores._sqlite_schema import MIGRATIONS
from langchain_retro.stores.base import (
    ACTIVE_RUN_STATUSES,
    NewMessage,
    RunUpdate,
    RunUsage,
    ThreadQuery,
)
from langchain_retro.stores.sqlite import SCHEMA_VERSION


def new(text: str, **fields: object) -> NewMessage:
    return NewMessage(role="user", payload=to_payload(HumanMessage(text)), **fields)  # type: ignore[arg-type]


def build_v1(path: Path) -> None:
    """A version-1 file with the old DDL and rows written the way v1 wrote them."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
        conn.execute("BEGIN")
        for seq, tid, meta in [
            (1, "thread_one", {"k": "v", "hwm": "msg_b"}),
            (2, "thread_two", {}),
            (3, "thread_empty", {"k": "v"}),
        ]:
            conn.execute(
                "INSERT INTO threads (seq, id, created_at, metadata, next_seq) "
                "VALUES (?, ?, ?, ?, ?)",
                (seq, tid, 1_600_000_000 + seq, json.dumps(meta), 1),
            )
            conn.executemany(
                "INSERT INTO thread_metadata VALUES (?, ?, ?)",
                [(k, v, seq) for k, v in meta.items()],
            )
        rows = {1: ["msg_a", "msg_b", "msg_c"], 2: ["msg_x", "msg_y"]}
        for thread_seq, ids in rows.items():
            for i, mid in enumerate(ids, start=1):
                conn.execute(
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        thread_seq,
                        i,
                        mid,
                        1_600_000_100 + i,
                        "user",
                        to_payload(HumanMessage(mid)),
                        json.dumps({"n": str(i)}) if i == 2 else "{}",
                    ),
                )
            conn.execute(
                "UPDATE threads SET next_seq = ? WHERE seq = ?",
                (len(ids) + 1, thread_seq),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_v1_file_upgrades_on_open_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    build_v1(path)
    with SQLiteStore(path) as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == 3
        one = store.list_messages("thread_one")
        assert [m.id for m in one] == ["msg_a", "msg_b", "msg_c"]
        assert [json.loads(m.payload)["content"] for m in one] == [
            "msg_a",
            "msg_b",
            "msg_c",
        ]
        assert [m.created_at for m in one] == [1_600_000_101 + i for i in range(3)]
        assert one[1].metadata == {"n": "2"}
        assert {(m.run_id, m.assistant_id, m.reply_to) for m in one} == {
            (None, None, None)
        }
        assert [m.id for m in store.list_messages("thread_two")] == ["msg_x", "msg_y"]
        assert store.get_thread("thread_one").metadata == {"k": "v", "hwm": "msg_b"}
        # The kept counts were filled in from the rows.
        assert store.count_messages("thread_one") == 3
        assert store.count_messages("thread_two") == 2
        assert store.count_messages("thread_empty") == 0
        assert store.count_messages("thread_one", after="msg_a") == 2
        assert [t.id for t in store.list_threads(ThreadQuery(metadata={"k": "v"}))] == [
            "thread_empty",
            "thread_one",
        ]

        # New writes continue each thread's order, with v2's columns.
        rows = store.add_messages(
            "thread_one",
            [new("d", id="msg_x", run_id="run_1", reply_to="msg_c")],
        )
        assert rows[0].id == "msg_x"  # unique per thread now, not globally
        assert [m.id for m in store.list_messages("thread_one")][-1] == "msg_x"
        assert store.get_message("thread_one", "msg_x").run_id == "run_1"
        with pytest.raises(MessageIdConflictError):
            store.add_messages("thread_one", [new("again", id="msg_a")])
        assert store.count_messages("thread_one") == 4
        fresh = store.create_thread({})
        assert fresh.id not in {"thread_one", "thread_two", "thread_empty"}
        store.add_messages(fresh.id, [new("new")])
        assert store.count_messages(fresh.id) == 1
        seqs = store._conn.execute(
            "SELECT seq FROM messages WHERE thread_seq = 1 ORDER BY seq"
        ).fetchall()
        assert [s for (s,) in seqs] == [1, 2, 3, 4]
    # Reopening a migrated file changes nothing.
    with SQLiteStore(path) as again:
        assert again.count_messages("thread_one") == 4
    assert SCHEMA_VERSION == 3


def build_v2(path: Path) -> None:
    """A version-2 file: v1's rows migrated by v2's DDL, then a run's reply."""
    build_v1(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for statement in MIGRATIONS[1].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("PRAGMA user_version=2")
        # A reply of a run made before runs were kept: its run_id names no run.
        conn.execute(
            "INSERT INTO messages (thread_seq, seq, id, created_at, role, payload, "
            "metadata, run_id, assistant_id, reply_to) "
            "VALUES (1, 4, 'msg_d', 1600000200, 'assistant', ?, '{}', 'run_old', "
            "'asst_old', 'msg_c')",
            (to_payload(HumanMessage("d")),),
        )
        conn.execute("UPDATE threads SET next_seq = 5, message_count = 4 WHERE seq = 1")
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_v2_file_upgrades_on_open_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    build_v2(path)
    conn = sqlite3.connect(path)
    try:
        before = {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("assistants", "threads", "thread_metadata", "messages")
        }
    finally:
        conn.close()
    with SQLiteStore(path) as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == 3
        for table in ("assistants", "thread_metadata", "messages"):
            rows = store._conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
            assert rows.fetchall() == before[table], table
        threads = store._conn.execute(
            "SELECT seq, id, created_at, metadata, next_seq, message_count, "
            "prompt_tokens, completion_tokens, total_tokens FROM threads ORDER BY 1"
        ).fetchall()
        assert [t[:6] for t in threads] == before["threads"]
        assert {t[6:] for t in threads} == {(0, 0, 0)}
        assert store.get_thread_usage("thread_one") == RunUsage()
        assert store.list_runs("thread_one") == []
        # The old run's reply is found by the new index.
        (old,) = store.list_run_messages("thread_one", "run_old")
        assert (old.id, old.reply_to) == ("msg_d", "msg_c")
        assert [m.id for m in store.list_messages("thread_one")][-1] == "msg_d"

        # Runs work on the migrated file and continue each thread's order.
        start = store.begin_run(
            "thread_one", owner="run_new", ttl=30.0, messages=[new("q")]
        )
        assert start is not None
        assert start.run.status == "in_progress"
        saved = store.finish_run(
            "thread_one",
            owner="run_new",
            run_id="run_new",
            update=RunUpdate(
                status="completed",
                usage=RunUsage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
            ),
            messages=[new("a", run_id="run_new")],
        )
        assert saved.run.status == "completed"
        assert [m.id for m in store.list_run_messages("thread_one", "run_new")] == [
            saved.messages[0].id
        ]
        assert store.count_messages("thread_one") == 6
        assert store.get_thread_usage("thread_one").total_tokens == 7
    with SQLiteStore(path) as again:  # reopening a migrated file changes nothing
        assert [r.id for r in again.list_runs("thread_one")] == ["run_new"]
        assert again.get_thread_usage("thread_one").total_tokens == 7


def test_the_v3_runs_table_and_indexes(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "new.db") as store:
        assert store._conn is not None
        indexes = {
            row[1]: row[4]  # name -> partial
            for table in ("runs", "messages")
            for row in store._conn.execute(f"PRAGMA index_list('{table}')")
        }
        assert indexes["runs_by_thread"] == 0
        assert indexes["runs_active"] == 1
        assert indexes["messages_by_run"] == 1
        (active,) = store._conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'runs_active'"
        ).fetchone()
        # The partial index holds exactly the statuses that hold a lease.
        assert {s for s in ACTIVE_RUN_STATUSES if f"'{s}'" in active} == set(
            ACTIVE_RUN_STATUSES
        )
        foreign = store._conn.execute("PRAGMA foreign_key_list('runs')").fetchall()
        assert [(f[2], f[3], f[4], f[6]) for f in foreign] == [
            ("threads", "thread_seq", "seq", "CASCADE")
        ]


def test_the_v2_keys(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "new.db") as store:
        assert store._conn is not None
        indexes = store._conn.execute(
            "SELECT name FROM pragma_index_list('messages') WHERE \"unique\""
        ).fetchall()
        columns = {
            tuple(
                r[0]
                for r in store._conn.execute(
                    "SELECT name FROM pragma_index_info(?)", (name,)
                )
            )
            for (name,) in indexes
        }
        assert ("thread_seq", "id") in columns
        assert ("id",) not in columns  # no globally unique message id any more


READ_ONLY_RUNS = """
    import json
    from langchain_retro import SQLiteStore, StoreError
    try:
        store = SQLiteStore({path!r})
    except StoreError as exc:
        print(json.dumps({{"open": str(exc)}}))
        raise SystemExit(0)
    thread = {thread!r}
    out = {{"read_only": store.read_only}}
    out["runs"] = [[r.id, r.status] for r in store.list_runs(thread)]
    out["usage"] = store.get_thread_usage(thread).total_tokens
    out["messages"] = [m.id for m in store.list_run_messages(thread, "run_1")]
    try:
        store.begin_run(thread, owner="run_2", ttl=5.0)
    except StoreError as exc:
        out["write"] = str(exc)
    store.close()
    print(json.dumps(out))
"""


def _read_only_child(path: Path, thread_id: str) -> dict[str, object]:
    from test_sqlite_hardening import _child  # noqa: PLC0415

    path.chmod(0o444)
    try:
        done = _child(
            READ_ONLY_RUNS.format(path=str(path), thread=thread_id), user_ns=True
        )
    finally:
        path.chmod(0o644)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_v3_file_with_runs_opens_read_only(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    with SQLiteStore(path) as store:
        thread = store.create_thread({})
        store.begin_run(thread.id, owner="run_1", ttl=30.0, messages=[new("q")])
        saved = store.finish_run(
            thread.id,
            owner="run_1",
            run_id="run_1",
            update=RunUpdate(
                status="completed",
                usage=RunUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
            ),
            messages=[new("a", run_id="run_1")],
        )
    before = path.read_bytes()
    got = _read_only_child(path, thread.id)
    assert got["runs"] == [["run_1", "completed"]]
    assert got["usage"] == 2
    assert got["messages"] == [saved.messages[0].id]
    assert "not writable" in str(got["read_only"])
    assert "nothing was written" in str(got["write"])
    assert path.read_bytes() == before


def test_a_read_only_v2_file_says_it_needs_migrating(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    build_v2(path)
    before = path.read_bytes()
    got = _read_only_child(path, "thread_one")
    assert "schema version 2" in str(got["open"])
    assert "needs migrating to 3" in str(got["open"])
    assert path.read_bytes() == before
