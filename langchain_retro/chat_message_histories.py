"""`AssistantThreadChatMessageHistory`: a thread as a LangChain chat message history."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from langchain_retro import _messages
from langchain_retro._metadata import MetadataPatch
from langchain_retro.errors import RetroValueError, ThreadNotFoundError
from langchain_retro.stores.base import (
    THREAD_ASSISTANT_KEY,
    BaseStore,
    NewMessage,
    StoredThread,
    check_message_id,
    check_new_ids,
)

__all__ = ["AssistantThreadChatMessageHistory"]

_HWM = "hwm"
"""The metadata entry of a run thread that marks what its runs have answered."""

_HINT = (
    "A history reads an existing thread: create it first (BaseThread.create), or "
    "use AssistantThreadChatMessageHistory.for_session(store, session_id, ...) to "
    "find or create a thread for a free-form session id on first use."
)

_RESET_HWM = MetadataPatch(clear_fields=frozenset({_HWM}))


_OFFLOAD_ROWS = 100
"""Rebuilding more messages than this runs in a worker thread, off the event loop."""


_CACHE = _messages.MessageCache(50_000)
"""Messages rebuilt by any history of this process, shared: a chain reads its whole
history every turn, and only the messages added since need rebuilding.

Readers get shallow copies: a field reassigned on a returned message stays with that
reader. A nested dict or list changed in place would be seen by later reads in this
process (never by the store), as with ``InMemoryChatMessageHistory``, which hands out
its own objects."""


def _rebuild(
    rows: Sequence[tuple[str, str]], newest_first: bool, thread_id: str
) -> list[BaseMessage]:
    ordered = list(reversed(rows)) if newest_first else rows
    return _CACHE.rebuild(ordered, copy=True, thread_id=thread_id)


async def _arebuild(
    rows: Sequence[tuple[str, str]], newest_first: bool, thread_id: str
) -> list[BaseMessage]:
    # Validating thousands of messages takes tens of milliseconds: not on the loop.
    if len(rows) > _OFFLOAD_ROWS:
        return await asyncio.to_thread(_rebuild, rows, newest_first, thread_id)
    return _rebuild(rows, newest_first, thread_id)


def _new(thread_id: str, messages: Sequence[BaseMessage]) -> list[NewMessage]:
    """The rows to append; every message is converted and checked before any write.

    A message keeps its own ``id``; the store assigns ``msg_...`` to those without.
    """
    if isinstance(messages, str | bytes | BaseMessage) or not isinstance(
        messages, Sequence
    ):
        raise RetroValueError(
            f"add_messages takes a sequence of messages, not {messages!r}; use "
            "add_message for one message."
        )
    rows = _messages.to_payloads(messages)
    new = [
        NewMessage(
            role=role,
            payload=payload,
            id=None if message.id is None else check_message_id(message.id, thread_id),
        )
        for message, (role, payload) in zip(messages, rows, strict=True)
    ]
    check_new_ids(thread_id, new)
    return new


def _is_run_thread(thread: StoredThread) -> bool:
    """Whether runs answer this thread (a `ChatCompletionThread` or subclass)."""
    return THREAD_ASSISTANT_KEY in thread.metadata


def _has_reply(new: Sequence[NewMessage]) -> bool:
    return any(m.role == "assistant" for m in new)


@contextmanager
def _not_found_hint(thread_id: str) -> Iterator[None]:
    """Say how to create threads on first use when the history's thread is missing."""
    try:
        yield
    except ThreadNotFoundError as exc:
        if exc.object_id != thread_id or _HINT in str(exc):
            raise
        raise ThreadNotFoundError(thread_id, hint=_HINT) from exc


class AssistantThreadChatMessageHistory(BaseChatMessageHistory):
    """The messages of one thread, as a LangChain chat message history.

    Works with any store, as the ``get_session_history`` of
    ``RunnableWithMessageHistory`` (sync, async and streaming).

    Setup:
        .. code-block:: python

            from langchain_retro import (
                AssistantThreadChatMessageHistory, BaseThread, SQLiteStore,
            )

            store = SQLiteStore()
            thread = BaseThread.create(store)
            history = AssistantThreadChatMessageHistory(store, thread.id)

    Read and write:
        .. code-block:: python

            history.add_messages([HumanMessage("hi"), AIMessage("hello")])  # atomic
            history.messages        # [HumanMessage(id="msg_..."), AIMessage(...)]
            await history.aget_messages()

    Message ids: a message keeps the ``id`` it comes with (as
    ``InMemoryChatMessageHistory`` does), so code that correlates messages by id keeps
    working; a message without one gets the store's ``msg_...`` id. Ids are unique
    within a thread: adding a message whose id is already in the thread (or twice in
    one batch) raises `MessageIdConflictError` and writes nothing of the batch.

    Run threads: on a thread that runs answer (a `ChatCompletionThread`, whose
    metadata names an ``assistant_id``), adding an assistant reply marks the messages
    before it as answered (moves the thread's ``hwm`` in the same transaction), so a
    `ThreadRunner` on the thread never answers them again.

    An unknown thread id raises `ThreadNotFoundError` (a ``LookupError``) on first use.

    Messages rebuilt from the store are cached per process by id and stored payload,
    so reading a long history again rebuilds only what was added. Reads return
    shallow copies: treat nested dicts and lists as read-only.
    """

    def __init__(
        self, store: BaseStore, thread_id: str, *, window: int | None = None
    ) -> None:
        """Bind a history to a thread.

        Args:
            store: The store holding the thread.
            thread_id: The thread's id.
            window: If set, `messages` returns only the newest ``window`` messages,
                read from the store without touching the rest of the thread.
        """
        if not isinstance(thread_id, str):
            raise RetroValueError(f"thread_id must be a string, not {thread_id!r}")
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 1
        ):
            raise RetroValueError(
                f"window must be a positive number of messages, not {window!r}"
            )
        self.store = store
        self.thread_id = thread_id
        self.window = window
        self._run_thread: bool | None = None

    def __repr__(self) -> str:
        return f"AssistantThreadChatMessageHistory({self.store!r}, {self.thread_id!r})"

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The thread's messages, oldest first (the newest ``window`` if set)."""
        thread_id = self.thread_id
        with _not_found_hint(thread_id):
            if self.window is None:
                rows = self.store.list_message_payloads(thread_id)
            else:
                rows = self.store.list_message_payloads(
                    thread_id, order="desc", limit=self.window
                )
        return _rebuild(rows, self.window is not None, thread_id)

    async def aget_messages(self) -> list[BaseMessage]:
        """Async twin of `messages`."""
        thread_id = self.thread_id
        with _not_found_hint(thread_id):
            if self.window is None:
                rows = await self.store.alist_message_payloads(thread_id)
            else:
                rows = await self.store.alist_message_payloads(
                    thread_id, order="desc", limit=self.window
                )
        return await _arebuild(rows, self.window is not None, thread_id)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages as one atomic batch: all are stored, or none.

        Raises:
            MessageIdConflictError: If a message's ``id`` is already in the thread.
            MessageConversionError: If a message cannot be stored.
        """
        thread_id = self.thread_id
        new = _new(thread_id, messages)
        with _not_found_hint(thread_id):
            if _has_reply(new) and self._run_thread is None:
                self._run_thread = _is_run_thread(self.store.get_thread(thread_id))
            if _has_reply(new) and self._run_thread:
                self.store.add_messages(thread_id, new, hwm_key=_HWM)
            else:  # a plain thread has no hwm: leave the store nothing to look up
                self.store.add_messages(thread_id, new)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async twin of `add_messages`."""
        thread_id = self.thread_id
        new = _new(thread_id, messages)
        with _not_found_hint(thread_id):
            if _has_reply(new) and self._run_thread is None:
                thread = await self.store.aget_thread(thread_id)
                self._run_thread = _is_run_thread(thread)
            if _has_reply(new) and self._run_thread:
                await self.store.aadd_messages(thread_id, new, hwm_key=_HWM)
            else:
                await self.store.aadd_messages(thread_id, new)

    def add_message(self, message: BaseMessage) -> None:
        """Append one message."""
        self.add_messages([message])

    def clear(self) -> None:
        """Delete the thread's messages and reset its ``hwm``; the thread stays."""
        with _not_found_hint(self.thread_id):
            self.store.clear_messages(self.thread_id, thread_patch=_RESET_HWM)

    async def aclear(self) -> None:
        """Async twin of `clear`."""
        with _not_found_hint(self.thread_id):
            await self.store.aclear_messages(self.thread_id, thread_patch=_RESET_HWM)
