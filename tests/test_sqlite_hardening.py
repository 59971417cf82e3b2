"""`SQLiteStore` against bad input, hand-edited rows, full disks and unusable paths.

* every write path checks, then writes: bad input raises a `RetroError` and leaves
  the file as it was;
* a metadata column edited outside the package raises `CorruptDataError` naming the
  object (and the message's thread) from every reader; other objects stay readable;
* opening a current database writes nothing, so it opens on a full disk; errors
  keep their real cause;
* a directory, a missing folder and an unwritable folder each get their own
  `StoreError`; a read-only file, or one in a read-only folder, opens read-only.

Permission cases run in a child process under ``unshare --user``, where even root is
held to file modes; they are skipped where that is not available.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from langchain_retro import (
    OPENAI_LIMITS,
    CorruptDataError,
    MetadataLimitError,
    RetroError,
    RetroValueError,
    SQLiteStore,
    StoreError,
)
from langchain_retro._messages import to_payload
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import NewMessage, NewRun, RunUpdate, ThreadQuery

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "retro.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(path) as opened:
        yield opened


def new(text: str, **fields: Any) -> NewMessage:
    return NewMessage(role="user", payload=to_payload(HumanMessage(text)), **fields)


def snapshot(path: Path) -> dict[str, int]:
    """Row counts of every table: what a refused write must leave unchanged."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables
        }
    finally:
        conn.close()


def edit(path: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()


# --- item 9: check, then write -------------------------------------------------------


def _refusals(store: SQLiteStore) -> list[tuple[str, Callable[[], object]]]:
    thread = store.create_thread({"k": "v"})
    store.add_messages(thread.id, [new("kept", id="m1")])
    assistant = store.create_assistant({"model": "m"}, {})
    store.begin_run(thread.id, owner="run_1", ttl=30.0)
    too_long = "x" * 600
    return [
        ("thread metadata not strings", lambda: store.create_thread({"k": 1})),  # type: ignore[dict-item]
        ("thread metadata not a map", lambda: store.create_thread(["k"])),  # type: ignore[arg-type]
        ("one bad map of many", lambda: store.create_threads([{}, {"k": None}])),  # type: ignore[dict-item]
        (
            "assistant metadata",
            lambda: store.create_assistant({"model": "m"}, {"k": 2}),
        ),  # type: ignore[dict-item]
        (
            "assistant field type",
            lambda: store.create_assistant({"model": "m", "temperature": "hot"}, {}),
        ),
        (
            "assistant unknown field",
            lambda: store.create_assistant({"model": "m", "colour": "red"}, {}),
        ),
        (
            "assistant update",
            lambda: store.update_assistant(assistant.id, {"top_p": "most"}),
        ),
        (
            "assistant update field",
            lambda: store.update_assistant(assistant.id, {"nope": 1}),
        ),
        (
            "hwm_key empty",
            lambda: store.add_messages(thread.id, [new("a")], hwm_key=""),
        ),
        (
            "message id",
            lambda: store.add_messages(thread.id, [new("a"), new("b", id=" x")]),
        ),
        (
            "clashing id",
            lambda: store.add_messages(thread.id, [new("a"), new("b", id="m1")]),
        ),
        (
            "bulk, second pair",
            lambda: store.bulk_add_messages(
                [(thread.id, [new("a")]), (thread.id, [new("b", id="m1")])]
            ),
        ),
        (
            "bulk, across pairs",
            lambda: store.bulk_add_messages(
                [(thread.id, [new("a", id="z")]), (thread.id, [new("b", id="z")])]
            ),
        ),
        (
            "clear with a bad patch",
            lambda: _limited(
                store,
                lambda: store.clear_messages(
                    thread.id, thread_patch=MetadataPatch(set={"k": too_long})
                ),
            ),
        ),
        (
            "patch over a limit",
            lambda: _limited(
                store,
                lambda: store.add_messages(
                    thread.id,
                    [new("a")],
                    thread_patch=MetadataPatch(set={"k": too_long}),
                ),
            ),
        ),
        (
            "finish with a bad patch",
            lambda: _limited(
                store,
                lambda: store.finish_run(
                    thread.id,
                    owner="run_1",
                    run_id="run_1",
                    update=RunUpdate(status="completed"),
                    messages=[new("r")],
                    thread_patch=MetadataPatch(set={"k": too_long}),
                ),
            ),
        ),
        (
            "begin with a bad id",
            lambda: store.begin_run(
                thread.id,
                owner="run_1",
                ttl=5.0,
                run=NewRun(id="run_2"),
                messages=[new("q", id="m1")],
            ),
        ),
        (
            "begin with a taken run id",
            lambda: store.begin_run(thread.id, owner="run_1", ttl=5.0),
        ),
        (
            "delete_assistant mode",
            lambda: store.delete_assistant(assistant.id, threads="all"),
        ),  # type: ignore[arg-type]
    ]


def _limited(store: SQLiteStore, action: Callable[[], object]) -> object:
    store.limits = OPENAI_LIMITS
    try:
        return action()
    finally:
        store.limits = type(store).limits


def test_every_refused_write_is_a_retro_error_and_writes_nothing(
    store: SQLiteStore, path: Path
) -> None:
    refusals = _refusals(store)
    before = snapshot(path)
    (thread,) = store.list_threads(ThreadQuery())
    lease = store.get_lease(thread.id)
    for name, action in refusals:
        try:
            action()
        except RetroError as exc:
            caught = exc
        else:
            pytest.fail(f"{name}: not refused")
        assert isinstance(caught, (RetroValueError, MetadataLimitError)), name
        assert snapshot(path) == before, name
    assert store.get_thread(thread.id).metadata == {"k": "v"}
    assert store.get_lease(thread.id) == lease  # the run still holds its thread


# --- item 10: hand-edited rows -------------------------------------------------------


@pytest.mark.parametrize(
    "column", ["not json", '["a"]', '{"n": 1}', "null", '{"k": {"x": "y"}}']
)
def test_a_hand_edited_thread_is_named_by_every_reader(
    store: SQLiteStore, path: Path, column: str
) -> None:
    bad = store.create_thread({"k": "v"})
    good = store.create_thread({"k": "v", "other": "1"})
    assistant = store.create_assistant({"model": "m"}, {})
    edit(path, "UPDATE threads SET metadata = ? WHERE id = ?", column, bad.id)
    readers: list[Callable[[], object]] = [
        lambda: store.get_thread(bad.id),
        lambda: store.list_threads(ThreadQuery()),
        lambda: store.list_threads(ThreadQuery(metadata={"k": "v"})),
        lambda: store.update_thread(bad.id, MetadataPatch(set={"a": "b"})),
        lambda: store.add_messages(bad.id, [new("x")], thread_patch=MetadataPatch()),
        lambda: store.begin_run(bad.id, owner="r", ttl=5.0),
        lambda: store.clear_messages(bad.id, thread_patch=MetadataPatch()),
    ]
    for read in readers:
        with pytest.raises(CorruptDataError) as caught:
            read()
        assert caught.value.object_id == bad.id
        assert bad.id in str(caught.value)
        assert isinstance(caught.value, StoreError)
    # Other threads stay readable, listings that do not reach it too.
    assert store.get_thread(good.id) == good
    assert store.list_threads(ThreadQuery(metadata={"other": "1"})) == [good]
    assert store.list_threads(ThreadQuery(limit=1)) == [good]
    assert store.get_assistant(assistant.id) == assistant
    assert store.count_messages(bad.id) == 0  # nothing was appended
    assert store.get_lease(bad.id) is None  # nor the lease taken


@pytest.mark.parametrize("column", ["{oops", '{"n": 2}', "[]"])
async def test_a_hand_edited_message_names_thread_and_message(
    store: SQLiteStore, path: Path, column: str
) -> None:
    thread = store.create_thread({})
    rows = store.add_messages(thread.id, [new("a"), new("b"), new("c")])
    other = store.create_thread({})
    store.add_messages(other.id, [new("fine")])
    edit(
        path,
        "UPDATE messages SET metadata = ? WHERE id = ?",
        column,
        rows[1].id,
    )
    readers: list[Callable[[], object]] = [
        lambda: store.get_message(thread.id, rows[1].id),
        lambda: store.list_messages(thread.id),
        lambda: store.list_messages(thread.id, order="desc", limit=2),
        lambda: store.update_message(thread.id, rows[1].id, MetadataPatch()),
        lambda: store.begin_run(thread.id, owner="r", ttl=5.0),
    ]
    for read in readers:
        with pytest.raises(CorruptDataError) as caught:
            read()
        assert (caught.value.object_id, caught.value.thread_id) == (
            rows[1].id,
            thread.id,
        )
        assert rows[1].id in str(caught.value)
        assert thread.id in str(caught.value)
    with pytest.raises(CorruptDataError):
        await store.alist_messages(thread.id)
    # The rows around it and other threads still read.
    assert [m.id for m in store.list_messages(thread.id, after=rows[1].id)] == [
        rows[2].id
    ]
    assert store.get_message(thread.id, rows[0].id) == rows[0]
    assert [m.payload for m in store.list_messages(other.id)] == [new("fine").payload]
    assert store.get_lease(thread.id) is None


@pytest.mark.parametrize("body", ["not json", '{"usage": "lots"}', "[]"])
def test_a_hand_edited_run_is_named(store: SQLiteStore, path: Path, body: str) -> None:
    thread = store.create_thread({})
    store.begin_run(thread.id, owner="run_bad", ttl=30.0)
    edit(path, "UPDATE runs SET body = ? WHERE id = 'run_bad'", body)
    edit(path, "UPDATE run_leases SET expires_at = 0")  # lapsed: a takeover reads it
    readers: list[Callable[[], object]] = [
        lambda: store.get_run(thread.id, "run_bad"),
        lambda: store.list_runs(thread.id),
        lambda: store.cancel_run(thread.id, "run_bad"),
        lambda: store.finish_run(
            thread.id,
            owner="run_bad",
            run_id="run_bad",
            update=RunUpdate(status="completed"),
            messages=[new("a")],
        ),
        lambda: store.begin_run(thread.id, owner="run_next", ttl=30.0),
    ]
    before = snapshot(path)
    for read in readers:
        with pytest.raises(CorruptDataError) as caught:
            read()
        assert (caught.value.object_id, caught.value.thread_id) == (
            "run_bad",
            thread.id,
        )
        assert "run_bad" in str(caught.value)
    assert snapshot(path) == before
    conn = sqlite3.connect(path)
    try:  # the takeover took nothing
        assert conn.execute("SELECT owner FROM run_leases").fetchall() == [("run_bad",)]
    finally:
        conn.close()
    edit(path, "UPDATE runs SET status = 'failed' WHERE id = 'run_bad'")
    start = store.begin_run(thread.id, owner="run_next", ttl=30.0)  # not active: kept
    assert start is not None
    assert store.list_runs(thread.id, limit=1) == [start.run]


def test_a_hand_edited_assistant_is_named(store: SQLiteStore, path: Path) -> None:
    bad = store.create_assistant({"model": "m"}, {})
    good = store.create_assistant({"model": "m"}, {"a": "1"})
    thread = store.create_thread({"assistant_id": bad.id})
    edit(path, "UPDATE assistants SET metadata = '[1]' WHERE id = ?", bad.id)
    for read in (
        lambda: store.get_assistant(bad.id),
        store.list_assistants,
        lambda: store.begin_run(thread.id, owner="r", ttl=5.0),
    ):
        with pytest.raises(CorruptDataError) as caught:
            read()
        assert caught.value.object_id == bad.id
    assert store.get_assistant(good.id) == good
    assert store.list_assistants(limit=1) == [good]
    edit(path, "UPDATE assistants SET metadata = '{not json' WHERE id = ?", bad.id)
    with pytest.raises(CorruptDataError) as caught:
        store.list_assistants(metadata={"a": "1"})  # json_each meets the bad row
    assert caught.value.object_id == bad.id


# --- item 13: opening writes nothing -------------------------------------------------


def _files(path: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for p in sorted(path.parent.iterdir()):
        out[p.name] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def test_opening_a_current_file_writes_nothing(path: Path) -> None:
    with SQLiteStore(path) as store:
        thread = store.create_thread({"k": "v"})
        store.add_messages(thread.id, [new("x")])
    before = _files(path)
    assert list(before) == [path.name]  # the last close checkpointed the WAL
    with SQLiteStore(path) as again:
        assert again.count_messages(thread.id) == 1
        assert again.list_threads(ThreadQuery(metadata={"k": "v"}))[0].id == thread.id
    assert _files(path) == before


def _child(code: str, *, user_ns: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child Python that imports this checkout's package."""
    command = [sys.executable, "-c", textwrap.dedent(code)]
    if user_ns:
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("needs unshare(1) to hold root to file modes")
        command = [unshare, "--user", *command]
    done = subprocess.run(  # noqa: S603 - our own interpreter and code
        command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    if user_ns and "unshare failed" in done.stderr:
        pytest.skip(f"user namespaces are not available: {done.stderr.strip()}")
    return done


FULL_DISK = """
    import resource, signal, sys
    from langchain_retro import SQLiteStore, StoreError
    from langchain_retro.stores.base import NewMessage
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file may grow: disk full
    path, thread_id = sys.argv[1:] if len(sys.argv) > 2 else ({path!r}, {thread!r})
    try:
        store = SQLiteStore(path)
    except StoreError as exc:
        print("OPEN-FAILED", exc)
        raise SystemExit(0)
    print("COUNT", store.count_messages(thread_id))
    try:
        store.add_messages(thread_id, [NewMessage(role="user", payload="{{}}")])
    except StoreError as exc:
        print("WRITE-FAILED", exc)
    store.close()
"""


def test_a_current_file_opens_on_a_full_disk(path: Path) -> None:
    with SQLiteStore(path) as store:
        thread = store.create_thread({})
        store.add_messages(thread.id, [new("x")] * 3)
    # Another process keeps the file open, so its -wal and -shm files exist.
    holder = sqlite3.connect(path)
    try:
        holder.execute("SELECT count(*) FROM threads").fetchone()
        before = path.read_bytes()
        done = _child(FULL_DISK.format(path=str(path), thread=thread.id))
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr
    assert "COUNT 3" in done.stdout, done.stdout
    # The write fails with the real cause, not a failed rollback.
    assert "WRITE-FAILED" in done.stdout, done.stdout
    assert "cannot rollback" not in done.stdout
    assert "disk is full" in done.stdout or "disk I/O error" in done.stdout
    assert path.read_bytes() == before


def test_a_migration_on_a_full_disk_keeps_the_cause(path: Path) -> None:
    from test_sqlite_schema import build_v1  # noqa: PLC0415

    build_v1(path)
    holder = sqlite3.connect(path)
    try:
        holder.execute("SELECT count(*) FROM threads").fetchone()
        done = _child(FULL_DISK.format(path=str(path), thread="thread_one"))
    finally:
        holder.close()
    assert done.returncode == 0, done.stderr
    assert "OPEN-FAILED" in done.stdout, done.stdout
    assert "cannot rollback" not in done.stdout
    assert "disk is full" in done.stdout or "disk I/O error" in done.stdout
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # untouched
    finally:
        conn.close()


# --- item 18: paths ------------------------------------------------------------------


def test_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        SQLiteStore(tmp_path)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist") as caught:
        SQLiteStore(tmp_path / "nope" / "retro.db")
    assert str(tmp_path / "nope") in str(caught.value)


READ_ONLY = """
    import json, sys
    from langchain_retro import SQLiteStore, StoreError
    from langchain_retro.stores.base import NewMessage, ThreadQuery
    out = {{}}
    try:
        store = SQLiteStore({path!r})
    except StoreError as exc:
        print(json.dumps({{"open": str(exc)}}))
        raise SystemExit(0)
    out["read_only"] = store.read_only
    out["threads"] = [t.metadata for t in store.list_threads(ThreadQuery())]
    out["count"] = store.count_messages(store.list_threads(ThreadQuery())[0].id)
    try:
        store.create_thread({{}})
    except StoreError as exc:
        out["write"] = str(exc)
    store.close()
    print(json.dumps(out))
"""


def _read_only_run(path: Path) -> dict[str, Any]:
    done = _child(READ_ONLY.format(path=str(path)), user_ns=True)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "retro.db"
    with SQLiteStore(path) as store:
        thread = store.create_thread({"k": "v"})
        store.add_messages(thread.id, [new("a"), new("b")])
    yield path
    folder.chmod(0o755)
    path.chmod(0o644)


def test_a_read_only_file_is_readable(filled: Path) -> None:
    filled.chmod(0o444)
    before = filled.read_bytes()
    got = _read_only_run(filled)
    assert got["threads"] == [{"k": "v"}]
    assert got["count"] == 2
    assert "not writable" in got["read_only"]
    assert "read-only" in got["write"]
    assert "nothing was written" in got["write"]
    assert filled.read_bytes() == before


def test_a_file_in_a_read_only_folder_is_readable(filled: Path) -> None:
    filled.parent.chmod(0o555)
    before = filled.read_bytes()
    got = _read_only_run(filled)
    assert got["threads"] == [{"k": "v"}]
    assert got["count"] == 2
    assert str(filled.parent) in got["read_only"]
    assert "read-only" in got["write"]
    assert filled.read_bytes() == before
    assert sorted(os.listdir(filled.parent)) == ["retro.db"]


def test_a_new_file_in_an_unwritable_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        got = _read_only_run(folder / "retro.db")
    finally:
        folder.chmod(0o755)
    assert "not writable" in got["open"], got
    assert "Choose a writable folder" in got["open"]
    assert not (folder / "retro.db").exists()


def test_other_hand_edited_columns_are_named_too(
    store: SQLiteStore, path: Path
) -> None:
    thread = store.create_thread({})
    (message,) = store.add_messages(thread.id, [new("a")])
    edit(path, "UPDATE messages SET created_at = 'noon' WHERE id = ?", message.id)
    with pytest.raises(CorruptDataError) as caught:
        store.list_messages(thread.id)
    assert (caught.value.object_id, caught.value.thread_id) == (message.id, thread.id)
    edit(path, "UPDATE threads SET created_at = 'yesterday' WHERE id = ?", thread.id)
    with pytest.raises(CorruptDataError) as caught:
        store.get_thread(thread.id)
    assert caught.value.object_id == thread.id
    assert isinstance(caught.value.__cause__, ValueError)
