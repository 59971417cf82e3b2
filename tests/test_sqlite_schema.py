"""`SQLiteStore`'s schema v2: the forward migration from v1 and the kept counts."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from langchain_retro import MessageIdConflictError, SQLiteStore
from langchain_retro._messages import to_payload
from langchain_retro.stores._sqlite_schema import MIGRATIONS
from langchain_retro.stores.base import NewMessage, ThreadQuery
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
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == 2
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
    assert SCHEMA_VERSION == 2


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
