"""Copying into a store that assigns its own ids: new ids, an id map, links rewritten.

The fallback of a copy when the destination cannot keep ids
(`BaseStore.keeps_ids` false, e.g. a plain Assistants API). Objects are created with
the ordinary calls (`BaseStore.create_assistant`, `BaseStore.create_thread`,
`BaseStore.add_messages`), which give them new ids, and every reference is rewritten
to the new ids: a thread's ``assistant_id`` and ``hwm``, a message's
``assistant_id`` and ``reply_to``. Run records cannot be written through such a
store: runs are counted as skipped, and a message's ``run_id`` is dropped.

Why it survives a kill at any moment and a re-run duplicates nothing:

* every assistant and thread is created with `SOURCE_KEY` in its metadata, holding
  its source id, so a re-run finds it (a metadata-filtered listing) instead of
  creating it again;
* a thread's messages are appended in order by all-or-nothing batches, so the
  destination holds a prefix of them; a re-run reads that prefix and pairs it with
  the source's first messages, which rebuilds the message id map, and appends the
  rest;
* ``hwm`` is set last, once the thread's messages are all there.

The id map is written as JSON Lines, one ``{"type", "source", "dest"}`` object a
line (``type``: ``assistant``, ``thread`` or ``message``; a message line adds
``thread``, the destination thread). A re-run appends the lines of the objects it
maps again; the last line for a source id holds.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_retro._metadata import MetadataPatch
from langchain_retro._steps import Call, Steps, call
from langchain_retro._transfer import Counts, MessageCopy, Progress, Record
from langchain_retro.errors import TransferError
from langchain_retro.stores.base import (
    ASSISTANT_FIELDS,
    BaseStore,
    NewMessage,
    StoredAssistant,
    StoredMessage,
    StoredRun,
    ThreadCopy,
    ThreadQuery,
)

__all__ = ["HWM_KEY", "SOURCE_KEY", "RemapWriter"]

SOURCE_KEY = "migrated_from"
"""The metadata entry holding a copied assistant's or thread's source id."""

HWM_KEY = "hwm"
"""The thread metadata entry naming the last answered message."""

_LINK_KEY = "assistant_id"
"""The thread metadata entry naming its assistant."""


@dataclass
class _Thread:
    """The thread being copied."""

    source: ThreadCopy
    dest_id: str
    present: list[str]
    """The destination's message ids found there when the copy reached it."""
    seen: int = 0
    messages: dict[str, str] = field(default_factory=dict)
    """Source message id -> destination message id."""
    pending: list[StoredMessage] = field(default_factory=list)
    hwm: str | None = None
    """The destination thread's ``hwm`` when the copy reached it."""


@dataclass
class RemapWriter:
    """The sink of a copy into a store that assigns ids (see the module docstring).

    Use `add` as the sink, then `finish`; both are steps.
    """

    dest: BaseStore
    """Where the records go."""
    write_map: Callable[[list[str]], None]
    """Appends lines to the id map (blocking file I/O, run as a `Call`)."""
    awrite_map: Callable[[list[str]], Awaitable[None]]
    """Async twin of ``write_map``."""
    batch_size: int = 1_000
    """Messages per `BaseStore.add_messages`."""
    progress: Progress | None = None
    """Told what was written."""
    written: Counts = field(default_factory=Counts)
    """Records written."""
    skipped: Counts = field(default_factory=Counts)
    """Records already there, or that cannot be written (runs)."""
    assistants: dict[str, str] = field(default_factory=dict)
    """Source assistant id -> destination assistant id."""
    _thread: _Thread | None = None
    _lines: list[str] = field(default_factory=list)

    def _tell(self, kind: str, written: int, skipped: int) -> None:
        self.written.add(kind, written)
        self.skipped.add(kind, skipped)
        if self.progress is not None and written + skipped:
            self.progress(kind, written + skipped)

    def _map(self, kind: str, source: str, dest: str, **more: str) -> None:
        self._lines.append(
            json.dumps(
                {"type": kind, "source": source, "dest": dest, **more},
                ensure_ascii=False,
            )
        )

    def _write_map(self, *, at_least: int = 1) -> Steps[Call[Any], None]:
        if len(self._lines) >= at_least:
            lines, self._lines = self._lines, []
            yield from call(self.write_map, self.awrite_map, lines)

    def add(self, record: Record) -> Steps[Call[Any], None]:
        """Take the next record of the stream."""
        if isinstance(record, MessageCopy):
            record = StoredMessage.model_validate(record, from_attributes=True)
        if isinstance(record, StoredMessage):
            thread = self._thread
            if thread is None or thread.source.id != record.thread_id:
                raise TransferError(
                    f"Message {record.id!r} of thread {record.thread_id!r} comes "
                    "before its thread in the stream; nothing of it was written."
                )
            yield from self._message(thread, record)
        elif isinstance(record, ThreadCopy):
            yield from self._end_thread()
            yield from self._begin_thread(record)
        elif isinstance(record, StoredRun):
            self._tell("runs", 0, 1)  # no run records through such a store
        else:
            yield from self._assistant(record)
        yield from self._write_map(at_least=1_000)

    def finish(self) -> Steps[Call[Any], None]:
        """End the stream: the last thread's messages and ``hwm``."""
        yield from self._end_thread()
        yield from self._write_map()

    # --- assistants and threads, found again by their source id --------------------

    def _assistant(self, assistant: StoredAssistant) -> Steps[Call[Any], None]:
        dest = self.dest
        found = yield from call(
            dest.list_assistants,
            dest.alist_assistants,
            metadata={SOURCE_KEY: assistant.id},
            limit=1,
        )
        if found:
            new_id = found[0].id
            self._tell("assistants", 0, 1)
        else:
            fields = {name: getattr(assistant, name) for name in ASSISTANT_FIELDS}
            metadata = {**assistant.metadata, SOURCE_KEY: assistant.id}
            made = yield from call(
                dest.create_assistant, dest.acreate_assistant, fields, metadata
            )
            new_id = made.id
            self._tell("assistants", 1, 0)
        self.assistants[assistant.id] = new_id
        self._map("assistant", assistant.id, new_id)

    def _begin_thread(self, thread: ThreadCopy) -> Steps[Call[Any], None]:
        dest = self.dest
        query = ThreadQuery(metadata={SOURCE_KEY: thread.id}, limit=1)
        found = yield from call(dest.list_threads, dest.alist_threads, query)
        hwm: str | None = None
        if found:
            new_id = found[0].id
            hwm = found[0].metadata.get(HWM_KEY)
            present: list[str] = []
            after: str | None = None
            while True:
                page = yield from call(
                    dest.list_messages,
                    dest.alist_messages,
                    new_id,
                    after=after,
                    limit=1_000,
                )
                present += [m.id for m in page]
                if len(page) < 1_000:
                    break
                after = page[-1].id
            self._tell("threads", 0, 1)
        else:
            metadata = {k: v for k, v in thread.metadata.items() if k not in (HWM_KEY,)}
            if _LINK_KEY in metadata:
                metadata[_LINK_KEY] = self.assistants.get(
                    metadata[_LINK_KEY], metadata[_LINK_KEY]
                )
            metadata[SOURCE_KEY] = thread.id
            made = yield from call(dest.create_thread, dest.acreate_thread, metadata)
            new_id, present = made.id, []
            self._tell("threads", 1, 0)
        self._thread = _Thread(source=thread, dest_id=new_id, present=present, hwm=hwm)
        self._map("thread", thread.id, new_id)

    def _end_thread(self) -> Steps[Call[Any], None]:
        thread = self._thread
        if thread is None:
            return
        yield from self._flush(thread)
        if len(thread.present) > thread.seen:
            raise TransferError(
                f"Thread {thread.source.id!r} has {len(thread.present)} messages in "
                f"the destination (as {thread.dest_id!r}) but {thread.seen} in the "
                "source: the destination was changed since the last copy. Delete "
                "that thread there and run again."
            )
        hwm = thread.source.metadata.get(HWM_KEY)
        if hwm in thread.messages and thread.messages[hwm] != thread.hwm:
            dest = self.dest
            patch = MetadataPatch(set={HWM_KEY: thread.messages[hwm]})
            yield from call(
                dest.update_thread, dest.aupdate_thread, thread.dest_id, patch
            )
        self._thread = None

    # --- messages --------------------------------------------------------------------

    def _message(
        self, thread: _Thread, message: StoredMessage
    ) -> Steps[Call[Any], None]:
        index = thread.seen
        thread.seen += 1
        if index < len(thread.present):
            thread.messages[message.id] = thread.present[index]
            self._map(
                "message", message.id, thread.present[index], thread=thread.dest_id
            )
            self._tell("messages", 0, 1)
            return
        if message.reply_to is not None and any(
            m.id == message.reply_to for m in thread.pending
        ):
            yield from self._flush(thread)  # its new id is needed first
        thread.pending.append(message)
        if len(thread.pending) >= self.batch_size:
            yield from self._flush(thread)

    def _flush(self, thread: _Thread) -> Steps[Call[Any], None]:
        if not thread.pending:
            return
        batch = [
            NewMessage(
                role=m.role,
                payload=m.payload,
                metadata=m.metadata,
                created_at=m.created_at,
                assistant_id=None
                if m.assistant_id is None
                else self.assistants.get(m.assistant_id, m.assistant_id),
                reply_to=None
                if m.reply_to is None
                else thread.messages.get(m.reply_to),
            )
            for m in thread.pending
        ]
        dest = self.dest
        stored = yield from call(
            dest.add_messages, dest.aadd_messages, thread.dest_id, batch
        )
        for source, made in zip(thread.pending, stored, strict=True):
            thread.messages[source.id] = made.id
            self._map("message", source.id, made.id, thread=thread.dest_id)
        self._tell("messages", len(stored), 0)
        thread.pending = []
