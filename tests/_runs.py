"""Small helpers the run tests share: a run's config, what was stored and sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_retro import AssistantThreadChatMessageHistory, ChatCompletionThread

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import RunnableConfig

    from langchain_retro import BaseThread
    from langchain_retro.stores.base import BaseStore
    from langchain_retro.testing import RecordedRequest


def cfg(thread: BaseThread | str) -> RunnableConfig:
    """The config of a run on ``thread``."""
    thread_id = thread if isinstance(thread, str) else thread.id
    return {"configurable": {"thread_id": thread_id}}


def stored(store: BaseStore, thread: BaseThread) -> list[BaseMessage]:
    """The thread's messages, as the history reads them."""
    return AssistantThreadChatMessageHistory(store, thread.id).messages


def sent(request: RecordedRequest) -> list[tuple[str, Any]]:
    """``(role, content)`` of each message a recorded request sent."""
    return [(m["role"], m.get("content")) for m in request.messages]


def hwm(store: BaseStore, thread: BaseThread) -> str | None:
    """The thread's high-water mark, read afresh."""
    return ChatCompletionThread.retrieve(store, thread.id).hwm
