"""Reading a copy's source ahead of its writer: order, bounds, errors, stopping.

The reader runs in a thread (`migrate`) or a task (`amigrate`). Whatever ends the
copy, the caller gets the error as it was raised and the reader is stopped; the
copy then resumes as after any interruption. Real stores throughout: SQLite files
(a source that fails on its n-th page, a destination that is interrupted) and the
PostgreSQL test server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _migrate_data import snapshot
from conftest import stores_of

from langchain_retro import (
    SQLiteStore,
    aimport_from_file,
    amigrate,
    export_to_file,
    import_from_file,
    migrate,
    verify_migration,
)
from langchain_retro._export import ExportReader, check_lines
from langchain_retro._read_ahead import read_ahead
from langchain_retro._steps import Call, Steps, adrive_calls, drive_calls
from langchain_retro._transfer import Record, Sink
from langchain_retro.stores.base import (
    BaseStore,
    NewMessage,
    StoredMessage,
    ThreadQuery,
)

READER = "langchain-retro-read-ahead"


class _SourceBrokeError(Exception):
    pass


class _Breaking(SQLiteStore):
    """A source whose n-th page of messages fails, as a disk or a network can."""

    pages_left = 1_000_000

    def list_messages(self, thread_id: str, **options: Any) -> list[StoredMessage]:
        self.pages_left -= 1
        if self.pages_left < 0:
            raise _SourceBrokeError(thread_id)
        return super().list_messages(thread_id, **options)


class _DestBrokeError(Exception):
    pass


class _Interrupted(SQLiteStore):
    """A destination interrupted (Ctrl-C, or ``error``) in its n-th message write."""

    writes_left = 1_000_000
    error: type[BaseException] = KeyboardInterrupt

    def bulk_add_messages(self, batches: Any) -> int:
        self.writes_left -= 1
        if self.writes_left < 0:
            raise self.error
        return super().bulk_add_messages(batches)


def _fill(store: BaseStore, threads: int = 12, messages: int = 150) -> None:
    """Threads with more messages than a page, so each is read in several."""
    made = store.create_threads([{"n": str(i)} for i in range(threads)])
    store.bulk_add_messages(
        [
            (
                thread.id,
                [
                    NewMessage(
                        role="user", payload=f'{{"type":"human","content":"{i}"}}'
                    )
                    for i in range(messages)
                ],
            )
            for thread in made
        ]
    )


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == READER]


@pytest.fixture
def source(tmp_path: Path) -> Iterator[_Breaking]:
    with _Breaking(tmp_path / "source.db") as store:
        _fill(store)
        yield store


# --- the mechanism ------------------------------------------------------------------


def _numbered(n: int, produced: list[int]) -> Any:
    """A source of ``n`` messages that counts what it has produced."""

    def source(sink: Sink) -> Steps[Call[Any], None]:
        for i in range(n):
            produced[0] += 1
            yield from sink(
                StoredMessage(
                    id=f"msg_{i}",
                    created_at=0,
                    metadata={},
                    thread_id="thread_a",
                    role="user",
                    payload="{}",
                )
            )

    return source


@pytest.mark.parametrize("mode", ["thread", "task"])
async def test_records_arrive_in_order_and_the_reader_stays_close(mode: str) -> None:
    produced = [0]
    seen: list[str] = []
    most = 0

    def sink(record: Record) -> Steps[Call[Any], None]:
        nonlocal most
        seen.append(record.id)
        most = max(most, produced[0] - len(seen))
        return
        yield

    steps = read_ahead(_numbered(1_000, produced), sink, ahead=10, chunk=3)
    if mode == "thread":
        drive_calls(steps)
    else:
        await adrive_calls(steps)
    assert seen == [f"msg_{i}" for i in range(1_000)]
    # The queue's 4 chunks, the chunk being handed over, the one in the sink.
    assert 10 <= most <= 12 + 2 * 3
    assert not _readers()


# --- migrate --------------------------------------------------------------------------


def test_a_source_error_reaches_the_caller_and_the_copy_resumes(
    tmp_path: Path, source: _Breaking
) -> None:
    expected = snapshot(source)
    with SQLiteStore(tmp_path / "dest.db") as dest:
        source.pages_left = 5
        with pytest.raises(_SourceBrokeError) as raised:
            migrate(source, dest, batch_size=100)
        # The error the reader raised, with the reader's frames in its traceback.
        frames = traceback.extract_tb(raised.value.__traceback__)
        assert any(frame.name == "list_messages" for frame in frames)
        assert not _readers()
        source.pages_left = 1_000_000
        migrate(source, dest, batch_size=100)
        assert snapshot(dest) == expected


def test_an_interrupt_while_the_reader_waits_stops_it(
    tmp_path: Path, source: _Breaking
) -> None:
    expected = snapshot(source)
    with _Interrupted(tmp_path / "dest.db") as dest:
        dest.writes_left = 1
        # Batches of 200 messages: the reader, 1,200 records ahead, waits on a
        # full queue when the second write is interrupted.
        with pytest.raises(KeyboardInterrupt):
            migrate(source, dest, batch_size=200)
        assert not _readers()
        dest.writes_left = 1_000_000
        again = migrate(source, dest, batch_size=200)
        assert again.skipped["messages"] > 0
        assert snapshot(dest) == expected


async def _no_other_tasks() -> bool:
    """Whether every task but this one is done, once cancellations have run."""
    await asyncio.sleep(0)
    others = asyncio.all_tasks() - {asyncio.current_task()}
    return all(task.done() for task in others)


async def test_the_async_reader_hands_its_error_over_too(
    tmp_path: Path, source: _Breaking
) -> None:
    with stores_of("postgres", tmp_path) as make:
        dest = make()
        source.pages_left = 3
        with pytest.raises(_SourceBrokeError):
            await amigrate(source, dest, batch_size=100)
        assert await _no_other_tasks()
        source.pages_left = 1_000_000
        await amigrate(source, dest, batch_size=100)
        assert verify_migration(source, dest).ok


async def test_a_writer_error_cancels_the_async_reader(
    tmp_path: Path, source: _Breaking
) -> None:
    expected = snapshot(source)
    with _Interrupted(tmp_path / "dest.db") as dest:
        dest.writes_left, dest.error = 1, _DestBrokeError
        with pytest.raises(_DestBrokeError):
            await amigrate(source, dest, batch_size=200)
        assert await _no_other_tasks()
        dest.writes_left = 1_000_000
        await amigrate(source, dest, batch_size=200)
        assert snapshot(dest) == expected


# --- import ---------------------------------------------------------------------------


class _Blocked(SQLiteStore):
    """A destination whose n-th message write waits until it is cancelled."""

    writes_left = 1_000_000
    blocked: asyncio.Event | None = None

    async def abulk_add_messages(self, batches: Any) -> int:
        self.writes_left -= 1
        if self.writes_left < 0:
            assert self.blocked is not None
            self.blocked.set()
            await asyncio.Event().wait()
        return await super().abulk_add_messages(batches)


def _open_files(path: Path) -> list[str]:
    """This process's open descriptors of ``path``."""
    folder = Path("/proc/self/fd")
    found = []
    for fd in folder.iterdir():
        with contextlib.suppress(OSError):
            if Path(os.readlink(fd)) == path:
                found.append(fd.name)
    return found


async def _file_closed(path: Path) -> bool:
    """Whether the reading thread closed ``path`` (it ends after its read)."""
    for _ in range(200):
        if not _open_files(path) and not _threads(IMPORTER):
            return True
        await asyncio.sleep(0.01)
    return False


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


IMPORTER = "langchain-retro-import"


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    """An export file longer than the reader reads ahead, and its snapshot."""
    path = tmp_path / "all.jsonl.gz"
    with SQLiteStore(tmp_path / "big.db") as store:
        _fill(store, threads=40)
        export_to_file(store, path)
        yield path, snapshot(store)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_an_interrupted_import_closes_its_file_and_resumes(
    tmp_path: Path, exported: tuple[Path, Any]
) -> None:
    path, expected = exported
    with _Interrupted(tmp_path / "dest.db") as dest:
        dest.writes_left = 2
        with pytest.raises(KeyboardInterrupt):
            import_from_file(path, dest, batch_size=200)
        assert not _readers()
        assert not _open_files(path)
        dest.writes_left = 1_000_000
        again = import_from_file(path, dest, batch_size=200)
        assert again.skipped["messages"] > 0
        assert snapshot(dest) == expected


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_a_cancelled_async_import_closes_its_file_and_resumes(
    tmp_path: Path, exported: tuple[Path, Any]
) -> None:
    path, expected = exported
    with _Blocked(tmp_path / "dest.db") as dest:
        dest.writes_left, dest.blocked = 2, asyncio.Event()
        task = asyncio.create_task(aimport_from_file(path, dest, batch_size=200))
        await dest.blocked.wait()
        assert _open_files(path)  # the reader is reading it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _no_other_tasks()
        # Closed by the thread that reads it, once its read is over: never under it.
        assert await _file_closed(path)
        dest.writes_left = 1_000_000
        again = await aimport_from_file(path, dest, batch_size=200)
        assert again.skipped["messages"] > 0
        assert snapshot(dest) == expected


def _long_file(path: Path, messages: int) -> Path:
    """An export file of one thread with ``messages`` messages, written directly."""
    thread = "thread_01M8XY3KRS81RCP0XGMVM1N2P9"
    payload = json.dumps({"type": "human", "content": "hi"})
    with path.open("w") as file:
        header = {"type": "header", "format": "langchain-retro-export", "version": 1}
        file.write(json.dumps(header) + "\n")
        line = {"type": "thread", "id": thread, "created_at": 1, "metadata": {}}
        file.write(json.dumps(line) + "\n")
        for n in range(messages):
            message = {
                "type": "message",
                "id": f"msg_{n:08d}",
                "created_at": 1,
                "metadata": {},
                "thread_id": thread,
                "role": "user",
                "payload": payload,
            }
            file.write(json.dumps(message) + "\n")
        counts = {"assistants": 0, "threads": 1, "runs": 0, "messages": messages}
        file.write(json.dumps({"type": "end", "counts": counts}) + "\n")
    return path


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
async def test_an_import_cancelled_while_it_validates_stops_reading(
    tmp_path: Path,
) -> None:
    path = _long_file(tmp_path / "long.jsonl", 40_000)
    started = time.monotonic()
    counts = await asyncio.to_thread(check_lines, ExportReader(path))
    whole = time.monotonic() - started
    assert counts["messages"] == 40_000
    with SQLiteStore(tmp_path / "dest.db") as dest:
        task = asyncio.create_task(aimport_from_file(path, dest))
        for _ in range(10_000):  # until the check opens the file
            if _open_files(path):
                break
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled = time.monotonic()
        for _ in range(10_000):
            if not _open_files(path):
                break
            await asyncio.sleep(0.001)
        # The check stopped at its next chunk: far sooner than a whole pass.
        assert time.monotonic() - cancelled < whole / 3
        assert dest.list_threads(ThreadQuery()) == []
