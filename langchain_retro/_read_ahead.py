"""Reading a copy's source ahead of its writer, in a thread or an asyncio task.

A copy spends its time on two sides: reading the source (pages of rows rebuilt as
records) and writing the destination (statements, commits). Driven as one stream of
steps, each side waits while the other works. `read_ahead` runs the source's steps
(such as `langchain_retro._transfer.store_records`) on their own, under
`drive_calls` in a thread or under `adrive_calls` in a task of the running event
loop, and hands their records to the sink in chunks through a bounded queue. sqlite3
and psycopg release the GIL while they wait, so the reading goes on while the sink
writes: up to ``ahead`` records ahead of it, which must cover what the sink writes at
once (with less, the reader waits on a full queue through every write and nothing
overlaps). Memory holds those records, whatever the size of the source.

The sink sees the same records in the same order as without it, so what the sink
guarantees (the `Writer`'s all-or-nothing batches, resumable at any point) holds
as it did. However the copy ends (the last record written, an error on either side,
KeyboardInterrupt, cancellation) the reader is stopped: its thread is joined, its
task cancelled. An error of the reader is raised to the caller of `read_ahead` as
the reader raised it (its type, and a traceback through the reader's frames), so
``except ThreadNotFoundError`` and the like work as they did without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from langchain_retro._steps import Call, Steps, adrive_calls, call, drive_calls
from langchain_retro._transfer import Record, Sink, hand_over

__all__ = ["AHEAD", "CHUNK", "ReadAhead", "Source", "read_ahead"]

Source: TypeAlias = Callable[[Sink], Steps[Call[Any], None]]
"""Steps that hand every record of a source to the sink they are given."""

CHUNK = 1_000
"""Records handed over at a time."""
AHEAD = 6_000
"""Records read ahead of the sink at most, by default."""


class _StoppedError(Exception):
    """Ends the reader's steps once the consumer has stopped it."""


@dataclass(frozen=True, slots=True)
class _Failed:
    """The reader's error, handed over in place of the next chunk."""

    error: BaseException
    """What the reader raised."""


_Item: TypeAlias = list[Record] | _Failed | None
"""What the queue carries: a chunk, the reader's error, or ``None`` at the end."""


class ReadAhead:
    """A source read ahead of its consumer, in chunks through a bounded queue.

    The first `get` starts the reader in a thread, the first `aget` in a task of the
    running loop; use one of the two, then `stop` however the reading ends.
    """

    def __init__(
        self, source: Source, *, ahead: int = AHEAD, chunk: int = CHUNK
    ) -> None:
        """Prepare to read ``source``; nothing is read before the first `get`.

        Args:
            source: The steps reading the source.
            ahead: Records read ahead of the consumer at most (rounded up to
                whole chunks).
            chunk: Records handed over at a time.
        """
        self._source = source
        self._chunk_size = chunk
        self._depth = max(1, -(-ahead // chunk))
        self._chunk: list[Record] = []
        self._queue: queue.Queue[_Item] = queue.Queue(self._depth)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._aqueue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None

    # --- the consumer's side ----------------------------------------------------------

    def get(self) -> list[Record] | None:
        """The next chunk, waiting for it; ``None`` at the end (starts the thread).

        Raises:
            BaseException: Whatever the reader raised.
        """
        if self._thread is None:
            self._thread = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._read,),
                name="langchain-retro-read-ahead",
                daemon=True,
            )
            self._thread.start()
        return _unpacked(self._queue.get())

    async def aget(self) -> list[Record] | None:
        """Async twin of `get` (the reader is a task of the running loop)."""
        if self._aqueue is None:
            self._aqueue = asyncio.Queue(self._depth)
            self._task = asyncio.create_task(self._aread())
        return _unpacked(await self._aqueue.get())

    def stop(self) -> None:
        """Stop the reader: cancel its task, or end its thread and wait for it.

        The thread ends after the source call it is in, if any (one page).
        """
        if self._task is not None:
            self._task.cancel()
        if self._thread is not None:
            self._stopping.set()
            # Free a reader waiting on a full queue: its next hand-over sees the stop.
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._thread.join()

    # --- the reader's side ------------------------------------------------------------

    def _read(self) -> None:
        """The thread: read the source, hand over its end or its error."""
        try:
            drive_calls(self._steps())
        except _StoppedError:
            return
        except BaseException as exc:  # the consumer raises it
            with contextlib.suppress(_StoppedError):
                self._put(_Failed(exc))

    async def _aread(self) -> None:
        """The task: read the source, hand over its end or its error."""
        assert self._aqueue is not None  # noqa: S101 - set before the task starts
        try:
            await adrive_calls(self._steps())
        except Exception as exc:  # the consumer raises it
            await self._aqueue.put(_Failed(exc))

    def _steps(self) -> Steps[Call[Any], None]:
        yield from self._source(self._hand)
        if self._chunk:
            yield from call(self._put, self._aput, self._chunk)
        yield from call(self._put, self._aput, None)

    def _hand(self, record: Record) -> Steps[Call[Any], None]:
        """The source's sink: hand records over a chunk at a time."""
        self._chunk.append(record)
        if len(self._chunk) >= self._chunk_size:
            chunk, self._chunk = self._chunk, []
            yield from call(self._put, self._aput, chunk)

    def _put(self, item: _Item) -> None:
        if self._stopping.is_set():
            raise _StoppedError
        self._queue.put(item)

    async def _aput(self, item: _Item) -> None:
        assert self._aqueue is not None  # noqa: S101 - set before the task starts
        await self._aqueue.put(item)


def _unpacked(item: _Item) -> list[Record] | None:
    if isinstance(item, _Failed):
        raise item.error
    return item


def read_ahead(
    source: Source, sink: Sink, *, ahead: int = AHEAD, chunk: int = CHUNK
) -> Steps[Call[Any], None]:
    """Hand every record of ``source`` to ``sink``, reading ahead of it.

    Args:
        source: The steps reading the source, run in a thread or a task.
        sink: Takes each record, in the source's order.
        ahead: Records read ahead at most: what the sink writes at once, so that
            the reader goes on while it writes.
        chunk: Records handed over at a time.

    Raises:
        BaseException: Whatever the source or the sink raised; the reader is
            stopped first.
    """
    reader = ReadAhead(source, ahead=ahead, chunk=chunk)
    try:
        yield from hand_over(reader.get, reader.aget, sink)
    finally:
        reader.stop()
