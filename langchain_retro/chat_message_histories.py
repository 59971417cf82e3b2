"""`AssistantThreadChatMessageHistory`: a thread as a LangChain chat message history."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from langchain_retro import _messages
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import BaseStore, NewMessage

__all__ = ["AssistantThreadChatMessageHistory"]

_RESET_HWM = MetadataPatch(clear_fields=frozenset({"hwm"}))


_OFFLOAD_ROWS = 100
"""Rebuilding more messages than this runs in a worker thread, off the event loop."""


_CACHE = _messages.MessageCache(50_000)
"""Messages rebuilt by any history of this process, shared: a chain reads its whole
history every turn, and only the messages added since need rebuilding.

Readers get shallow copies: a field reassigned on a returned message stays with that
reader. A nested dict or list changed in place would be seen by later reads in this
process (never by the store), as with ``InMemoryChatMessageHistory``, which hands out
its own objects."""


def _rebuild(rows: Sequence[tuple[str, str]], newest_first: bool) -> list[BaseMessage]:
    ordered = list(reversed(rows)) if newest_first else rows
    return _CACHE.rebuild(ordered, copy=True)


async def _arebuild(
    rows: Sequence[tuple[str, str]], newest_first: bool
) -> list[BaseMessage]:
    # Validating thousands of messages takes tens of milliseconds: not on the loop.
    if len(rows) > _OFFLOAD_ROWS:
        return await asyncio.to_thread(_rebuild, rows, newest_first)
    return _rebuild(rows, newest_first)


def _new(messages: Sequence[BaseMessage]) -> list[NewMessage]:
    # Every message is converted (and so checked) before anything is written.
    return [
        NewMessage(role=role, payload=payload)
        for role, payload in _messages.to_payloads(messages)
    ]


class AssistantThreadChatMessageHistory(BaseChatMessageHistory):
    """The messages of one thread, as a LangChain chat message history.

    Works with any store, as the ``get_session_history`` of
    ``RunnableWithMessageHistory`` (sync, async and streaming). Every stored message
    gets the store's id, which is its ``id`` when read back.

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

    An unknown thread id raises `ThreadNotFoundError` (a ``LookupError``) on first use.

    Messages rebuilt from the store are cached per process by id (stored messages
    never change), so reading a long history again rebuilds only what was added.
    Reads return shallow copies: treat nested dicts and lists as read-only.
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
        if window is not None and window < 1:
            raise ValueError(
                f"window must be a positive number of messages, not {window}"
            )
        self.store = store
        self.thread_id = thread_id
        self.window = window

    def __repr__(self) -> str:
        return f"AssistantThreadChatMessageHistory({self.store!r}, {self.thread_id!r})"

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The thread's messages, oldest first (the newest ``window`` if set)."""
        if self.window is None:
            return _rebuild(self.store.list_message_payloads(self.thread_id), False)
        rows = self.store.list_message_payloads(
            self.thread_id, order="desc", limit=self.window
        )
        return _rebuild(rows, True)

    async def aget_messages(self) -> list[BaseMessage]:
        """Async twin of `messages`."""
        if self.window is None:
            return await _arebuild(
                await self.store.alist_message_payloads(self.thread_id), False
            )
        rows = await self.store.alist_message_payloads(
            self.thread_id, order="desc", limit=self.window
        )
        return await _arebuild(rows, True)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages as one atomic batch: all are stored, or none."""
        self.store.add_messages(self.thread_id, _new(messages))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Async twin of `add_messages`."""
        await self.store.aadd_messages(self.thread_id, _new(messages))

    def add_message(self, message: BaseMessage) -> None:
        """Append one message."""
        self.add_messages([message])

    def clear(self) -> None:
        """Delete the thread's messages and reset its ``hwm``; the thread stays."""
        self.store.clear_messages(self.thread_id, thread_patch=_RESET_HWM)

    async def aclear(self) -> None:
        """Async twin of `clear`."""
        await self.store.aclear_messages(self.thread_id, thread_patch=_RESET_HWM)
