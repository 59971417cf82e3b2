"""Copying records between stores, written once as steps (`langchain_retro._steps`).

A copy is a stream of records in one order: every assistant, then each thread
followed by its runs and its messages (oldest first). A *source* walks a store (or
an export file) page by page and hands each record to a *sink*; the sink `Writer`
buffers them and writes batches to the destination with the id-keeping store
operations (`BaseStore.import_assistants`, `BaseStore.import_threads`,
`BaseStore.import_runs`) and `BaseStore.bulk_add_messages`. A copy reads the source
ahead of the writer (``langchain_retro._read_ahead``), so memory holds one batch and
the records read ahead of it, whatever the size of the store.

Why a copy can be killed at any moment and run again:

* assistants, threads and runs are written "if absent", so writing one twice is a
  no-op;
* a thread's messages are appended in order by all-or-nothing batches, so the
  destination always holds a prefix of each thread's messages. A thread found in
  the destination is resumed after the messages it has: the first ``n`` of the
  stream are skipped, and the destination's newest message must be the source's
  ``n``-th (else the two differ and the copy stops with `TransferError`).

Every store call is a `Call` effect, so `drive_calls` runs a copy with the sync
store methods and `adrive_calls` with their async twins.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

from langchain_retro._steps import Call, Steps, call
from langchain_retro.errors import (
    AssistantNotFoundError,
    RunNotFoundError,
    ThreadNotFoundError,
    TransferError,
)
from langchain_retro.stores.base import (
    BaseStore,
    NewMessage,
    StoredAssistant,
    StoredMessage,
    StoredRun,
    StoredThread,
    ThreadCopy,
    ThreadQuery,
    imported_run,
    lapsed_status,
)

__all__ = [
    "Counts",
    "MessageCopy",
    "Progress",
    "Record",
    "Sink",
    "Writer",
    "count",
    "hand_over",
    "message_digest",
    "plan",
    "store_records",
    "verify",
]


class MessageCopy(NewMessage):
    """A message of a copy as the `Writer` appends it: ready, with its id and thread.

    A source may hand these in place of `StoredMessage` records (an import reads
    its message lines as these): the writer then appends them as they are, instead
    of building a `NewMessage` from each.
    """

    id: str
    """The message's id, kept."""
    created_at: int
    """Creation time in Unix seconds, kept."""
    thread_id: str
    """The thread the message belongs to."""


Record: TypeAlias = (
    StoredAssistant | ThreadCopy | StoredRun | StoredMessage | MessageCopy
)
"""One record of a copy."""

Sink: TypeAlias = Callable[[Record], Steps[Call[Any], None]]
"""Takes the next record of the stream (and may write, as steps)."""


def hand_over(
    get: Callable[[], list[Record] | None],
    aget: Callable[[], Awaitable[list[Record] | None]],
    sink: Sink,
) -> Steps[Call[Any], None]:
    """Hand every record of the chunks ``get`` returns to ``sink``, until ``None``."""
    while True:
        records = yield from call(get, aget)
        if records is None:
            return
        for record in records:
            yield from sink(record)


Progress: TypeAlias = Callable[[str, int], None]
"""Told ``(kind, how many)`` as records of a kind are written."""

ASSISTANT_PAGE = 100
"""Assistants read per request."""
THREAD_PAGE = 200
"""Threads read per request."""
RUN_PAGE = 100
"""Runs read per request."""
MESSAGE_PAGE = 1_000
"""Messages read per request."""


@dataclass
class Counts:
    """How many records of each kind."""

    assistants: int = 0
    """Assistants."""
    threads: int = 0
    """Threads."""
    runs: int = 0
    """Runs."""
    messages: int = 0
    """Messages."""

    def add(self, kind: str, n: int = 1) -> None:
        """Count ``n`` more of ``kind`` (``assistants``, ``threads``...)."""
        setattr(self, kind, getattr(self, kind) + n)

    def as_dict(self) -> dict[str, int]:
        """The counts by kind."""
        return {
            "assistants": self.assistants,
            "threads": self.threads,
            "runs": self.runs,
            "messages": self.messages,
        }


# --- sources --------------------------------------------------------------------------


def _list_threads(store: BaseStore, after: str | None) -> Steps[Call[Any], list[Any]]:
    query = ThreadQuery(after=after, order="asc", limit=THREAD_PAGE)
    return (yield from call(store.list_threads, store.alist_threads, query))


def store_records(
    store: BaseStore,
    sink: Sink,
    *,
    thread_ids: Sequence[str] | None = None,
    messages: bool = True,
) -> Steps[Call[Any], None]:
    """Walk a store in copy order and hand every record to ``sink``.

    Args:
        store: The source.
        sink: Takes each record.
        thread_ids: Only these threads (in this order) and the assistants they name;
            ``None`` for every assistant and thread.
        messages: Whether to read messages (a plan reads only threads and runs).
    """
    if thread_ids is None:
        after: str | None = None
        while True:
            page = yield from call(
                store.list_assistants,
                store.alist_assistants,
                after=after,
                order="asc",
                limit=ASSISTANT_PAGE,
            )
            for assistant in page:
                yield from sink(assistant)
            if len(page) < ASSISTANT_PAGE:
                break
            after = page[-1].id
        after = None
        while True:
            threads = yield from _list_threads(store, after)
            for thread in threads:
                yield from _thread_records(store, sink, thread, messages=messages)
            if len(threads) < THREAD_PAGE:
                return
            after = threads[-1].id
    chosen: list[StoredThread] = []
    for thread_id in dict.fromkeys(thread_ids):
        thread = yield from call(store.get_thread, store.aget_thread, thread_id)
        chosen.append(thread)
    named = dict.fromkeys(
        t.metadata["assistant_id"] for t in chosen if "assistant_id" in t.metadata
    )
    for assistant_id in named:
        try:
            assistant = yield from call(
                store.get_assistant, store.aget_assistant, assistant_id
            )
        except AssistantNotFoundError:
            continue  # a thread may name an assistant deleted since
        yield from sink(assistant)
    for thread in chosen:
        yield from _thread_records(store, sink, thread, messages=messages)


def _thread_records(
    store: BaseStore, sink: Sink, thread: StoredThread, *, messages: bool
) -> Steps[Call[Any], None]:
    """A thread with its token totals, then its runs, then its messages."""
    usage = yield from call(store.get_thread_usage, store.aget_thread_usage, thread.id)
    yield from sink(ThreadCopy(**thread.model_dump(), usage=usage))
    after: str | None = None
    while True:
        runs = yield from call(
            store.list_runs,
            store.alist_runs,
            thread.id,
            after=after,
            order="asc",
            limit=RUN_PAGE,
        )
        for run in runs:
            yield from sink(run)
        if len(runs) < RUN_PAGE:
            break
        after = runs[-1].id
    if not messages:
        return
    after = None
    while True:
        page = yield from call(
            store.list_messages,
            store.alist_messages,
            thread.id,
            after=after,
            order="asc",
            limit=MESSAGE_PAGE,
        )
        for message in page:
            yield from sink(message)
        if len(page) < MESSAGE_PAGE:
            return
        after = page[-1].id


# --- the destination ------------------------------------------------------------------


_NEW_MESSAGE = NewMessage.__pydantic_validator__


def _new_message(message: StoredMessage | MessageCopy) -> NewMessage:
    if isinstance(message, MessageCopy):
        return message
    # Validating the record's attributes in one call to pydantic-core costs a third
    # less than keyword arguments through NewMessage.__init__, and half of
    # model_construct (pydantic 2 builds a constructed model field by field in
    # Python); the fields are those of a StoredMessage, already validated.
    message_ = _NEW_MESSAGE.validate_python(message, from_attributes=True)
    return cast("NewMessage", message_)


@dataclass
class _ThreadState:
    """What the writer knows of one thread of the stream."""

    seen: int = 0
    """Messages of the thread seen in the stream so far."""
    present: int | None = None
    """Messages the destination held when the copy reached the thread; ``None``
    until the thread's batch is written."""
    newest: str | None = None
    """The id of the destination's newest message then."""
    ended: bool = False
    """Whether the stream moved on to another thread."""


@dataclass
class Writer:
    """The sink that writes a stream of records to a store, in batches, resumably.

    Use `add` as the `Sink`, then `finish`; both are steps.
    """

    dest: BaseStore
    """Where the records go."""
    batch_size: int = 5_000
    """Records buffered before a write (messages in one ``bulk_add_messages``)."""
    progress: Progress | None = None
    """Told what was written."""
    written: Counts = field(default_factory=Counts)
    """Records written."""
    skipped: Counts = field(default_factory=Counts)
    """Records the destination already held."""
    _assistants: list[StoredAssistant] = field(default_factory=list)
    _threads: list[ThreadCopy] = field(default_factory=list)
    _runs: list[StoredRun] = field(default_factory=list)
    _messages: list[tuple[_ThreadState, StoredMessage | MessageCopy, int]] = field(
        default_factory=list
    )
    _states: dict[str, _ThreadState] = field(default_factory=dict)
    _current: _ThreadState | None = None
    _current_id: str = ""
    _buffered: int = 0

    def add(self, record: Record) -> Steps[Call[Any], None]:
        """Take the next record; write a batch when the buffer is full."""
        if isinstance(record, (StoredMessage, MessageCopy)):
            state = self._current
            if state is None or self._current_id != record.thread_id:
                raise TransferError(
                    f"Message {record.id!r} of thread {record.thread_id!r} comes "
                    "before its thread in the stream; nothing of it was written."
                )
            self._messages.append((state, record, state.seen))
            state.seen += 1
        elif isinstance(record, ThreadCopy):
            if self._current is not None:
                self._current.ended = True
            self._current = self._states[record.id] = _ThreadState()
            self._current_id = record.id
            self._threads.append(record)
        elif isinstance(record, StoredRun):
            self._runs.append(record)
        else:
            self._assistants.append(record)
        self._buffered += 1
        if self._buffered >= self.batch_size:
            yield from self.flush()

    def finish(self) -> Steps[Call[Any], None]:
        """Write what is buffered; the stream has ended."""
        if self._current is not None:
            self._current.ended = True
        yield from self.flush()

    def _tell(self, kind: str, written: int, skipped: int) -> None:
        self.written.add(kind, written)
        self.skipped.add(kind, skipped)
        if self.progress is not None and written + skipped:
            self.progress(kind, written + skipped)

    def flush(self) -> Steps[Call[Any], None]:
        """Write the buffered records: assistants, threads, runs, then messages."""
        dest = self.dest
        self._buffered = 0
        if self._assistants:
            done = yield from call(
                dest.import_assistants, dest.aimport_assistants, self._assistants
            )
            self._tell("assistants", len(done), len(self._assistants) - len(done))
            self._assistants = []
        if self._threads:
            done = yield from call(
                dest.import_threads, dest.aimport_threads, self._threads
            )
            new = set(done)
            for thread in self._threads:
                state = self._states[thread.id]
                state.present = 0
                if thread.id not in new:
                    yield from self._resume_point(thread.id, state)
            self._tell("threads", len(done), len(self._threads) - len(done))
            self._threads = []
        if self._runs:
            done = yield from call(dest.import_runs, dest.aimport_runs, self._runs)
            self._tell("runs", len(done), len(self._runs) - len(done))
            self._runs = []
        if self._messages:
            batches, skipped = self._message_batches()
            self._messages = []
            written = 0
            if batches:
                written = yield from call(
                    dest.bulk_add_messages, dest.abulk_add_messages, batches
                )
            self._tell("messages", written, skipped)
        self._check_ended()

    def _resume_point(self, thread_id: str, state: _ThreadState) -> Steps[Any, None]:
        """Read how many messages the destination's copy of a thread already has."""
        dest = self.dest
        state.present = yield from call(
            dest.count_messages, dest.acount_messages, thread_id
        )
        if state.present:
            newest = yield from call(
                dest.list_messages,
                dest.alist_messages,
                thread_id,
                order="desc",
                limit=1,
            )
            state.newest = newest[0].id if newest else None

    def _message_batches(self) -> tuple[list[tuple[str, list[NewMessage]]], int]:
        """The buffered messages to append, by thread in stream order; and skips."""
        batches: list[tuple[str, list[NewMessage]]] = []
        skipped = 0
        for state, message, index in self._messages:
            present = state.present or 0
            if index < present:
                skipped += 1
                if index == present - 1 and message.id != state.newest:
                    raise TransferError(
                        f"Thread {message.thread_id!r} differs between source and "
                        f"destination: the destination's message {present} is "
                        f"{state.newest!r}, the source's is {message.id!r}. The "
                        "destination was changed since the last copy; copy into an "
                        "empty store, or delete the thread there and run again."
                    )
                continue
            if not batches or batches[-1][0] != message.thread_id:
                batches.append((message.thread_id, []))
            batches[-1][1].append(_new_message(message))
        return batches, skipped

    def _check_ended(self) -> None:
        """Drop finished threads; one with more messages in the destination differs."""
        for thread_id, state in list(self._states.items()):
            if not state.ended or state.present is None:
                continue
            if state.present > state.seen:
                raise TransferError(
                    f"Thread {thread_id!r} has {state.present} messages in the "
                    f"destination but {state.seen} in the source: the destination was "
                    "changed since the last copy. Copy into an empty store, or delete "
                    "the thread there and run again."
                )
            del self._states[thread_id]


# --- dry run --------------------------------------------------------------------------


@dataclass
class _Planner:
    """The sink of a dry run: what the destination lacks, record by record."""

    dest: BaseStore
    source: BaseStore
    missing: Counts = field(default_factory=Counts)
    present: Counts = field(default_factory=Counts)

    def add(self, record: Record) -> Steps[Call[Any], None]:
        dest = self.dest
        try:
            if isinstance(record, ThreadCopy):
                there = yield from call(
                    dest.count_messages, dest.acount_messages, record.id
                )
                self.present.add("threads")
                total = yield from call(
                    self.source.count_messages, self.source.acount_messages, record.id
                )
                self.present.add("messages", min(there, total))
                self.missing.add("messages", max(total - there, 0))
                return
            if isinstance(record, StoredRun):
                yield from call(
                    dest.get_run, dest.aget_run, record.thread_id, record.id
                )
                self.present.add("runs")
                return
            if isinstance(record, StoredAssistant):
                yield from call(dest.get_assistant, dest.aget_assistant, record.id)
                self.present.add("assistants")
        except ThreadNotFoundError:
            self.missing.add("runs" if isinstance(record, StoredRun) else "threads")
            if isinstance(record, ThreadCopy):
                total = yield from call(
                    self.source.count_messages, self.source.acount_messages, record.id
                )
                self.missing.add("messages", total)
        except RunNotFoundError:
            self.missing.add("runs")
        except AssistantNotFoundError:
            self.missing.add("assistants")


def plan(
    source: BaseStore, dest: BaseStore, thread_ids: Sequence[str] | None = None
) -> Steps[Call[Any], tuple[Counts, Counts]]:
    """What a copy would write, without writing: ``(missing, present)`` counts."""
    planner = _Planner(dest, source)
    yield from store_records(source, planner.add, thread_ids=thread_ids, messages=False)
    return planner.missing, planner.present


# --- verify ---------------------------------------------------------------------------


def message_digest(messages: Sequence[StoredMessage], digest: Any) -> None:
    """Feed messages into a running hash: every stored field, in a fixed form."""
    for m in messages:
        digest.update(
            json.dumps(
                [
                    m.id,
                    m.created_at,
                    m.role,
                    m.payload,
                    sorted(m.metadata.items()),
                    m.run_id,
                    m.assistant_id,
                    m.reply_to,
                ],
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
        )
        digest.update(b"\n")


def _thread_digest(
    store: BaseStore, thread_id: str
) -> Steps[Call[Any], tuple[int, str]]:
    """``(count, sha256)`` of a thread's messages, read page by page."""
    digest = hashlib.sha256()
    count = 0
    after: str | None = None
    while True:
        page = yield from call(
            store.list_messages,
            store.alist_messages,
            thread_id,
            after=after,
            order="asc",
            limit=MESSAGE_PAGE,
        )
        message_digest(page, digest)
        count += len(page)
        if len(page) < MESSAGE_PAGE:
            return count, digest.hexdigest()
        after = page[-1].id


def _as_copied(run: StoredRun, copy: StoredRun) -> StoredRun:
    """``run`` as its copy should hold it.

    A run active in the source was copied as if its lease had lapsed
    (`imported_run`), stamped with the time of the copy that ``copy`` shows.
    """
    if lapsed_status(run.status) is None:
        return run
    return imported_run(run, copy.cancelled_at or 0)


@dataclass
class _Verifier:
    """The sink of a verify: each source record compared with the destination's."""

    source: BaseStore
    dest: BaseStore
    limit: int = 20
    counts: Counts = field(default_factory=Counts)
    differences: list[str] = field(default_factory=list)
    different: int = 0

    def _differ(self, text: str) -> None:
        self.different += 1
        if len(self.differences) < self.limit:
            self.differences.append(text)

    def add(self, record: Record) -> Steps[Call[Any], None]:
        dest = self.dest
        try:
            if isinstance(record, StoredAssistant):
                self.counts.add("assistants")
                got = yield from call(
                    dest.get_assistant, dest.aget_assistant, record.id
                )
                if got != record:
                    self._differ(f"assistant {record.id}: its fields differ")
            elif isinstance(record, ThreadCopy):
                self.counts.add("threads")
                yield from self._thread(record)
            elif isinstance(record, StoredRun):
                self.counts.add("runs")
                got_run = yield from call(
                    dest.get_run, dest.aget_run, record.thread_id, record.id
                )
                if got_run != _as_copied(record, got_run):
                    self._differ(f"run {record.id}: its record differs")
        except AssistantNotFoundError:
            self._differ(f"assistant {record.id}: missing in the destination")
        except ThreadNotFoundError:
            self._differ(f"thread {getattr(record, 'thread_id', record.id)}: missing")
        except RunNotFoundError:
            self._differ(f"run {record.id}: missing in the destination")

    def _thread(self, thread: ThreadCopy) -> Steps[Call[Any], None]:
        dest = self.dest
        got = yield from call(dest.get_thread, dest.aget_thread, thread.id)
        if got.model_dump() != thread.model_dump(exclude={"usage"}):
            self._differ(f"thread {thread.id}: its metadata or created_at differ")
        usage = yield from call(
            dest.get_thread_usage, dest.aget_thread_usage, thread.id
        )
        if usage != thread.usage:
            self._differ(f"thread {thread.id}: its token totals differ")
        mine = yield from _thread_digest(self.source, thread.id)
        theirs = yield from _thread_digest(dest, thread.id)
        self.counts.add("messages", mine[0])
        if mine != theirs:
            self._differ(
                f"thread {thread.id}: messages differ (source {mine[0]} "
                f"sha256 {mine[1][:12]}, destination {theirs[0]} sha256 "
                f"{theirs[1][:12]})"
            )


def verify(
    source: BaseStore, dest: BaseStore, thread_ids: Sequence[str] | None = None
) -> Steps[Call[Any], tuple[Counts, Counts, int, list[str]]]:
    """Compare every record of ``source`` with ``dest``'s copy, and both counts.

    Returns:
        The source's counts, the destination's, how many records differ, and the
        first differences.
    """
    verifier = _Verifier(source, dest)
    yield from store_records(
        source, verifier.add, thread_ids=thread_ids, messages=False
    )
    theirs = yield from count(dest, thread_ids)
    return verifier.counts, theirs, verifier.different, verifier.differences


def count(
    store: BaseStore, thread_ids: Sequence[str] | None = None
) -> Steps[Call[Any], Counts]:
    """A store's records by kind; messages counted per thread (one read each)."""
    counts = Counts()

    def tally(record: Record) -> Steps[Call[Any], None]:
        if isinstance(record, ThreadCopy):
            counts.add("threads")
            n = yield from call(store.count_messages, store.acount_messages, record.id)
            counts.add("messages", n)
        else:
            counts.add("runs" if isinstance(record, StoredRun) else "assistants")

    # A chosen thread the destination lacks ends its count; the verifier names it.
    with contextlib.suppress(ThreadNotFoundError):
        yield from store_records(store, tally, thread_ids=thread_ids, messages=False)
    return counts
