"""A run on a thread holding a row that no longer rebuilds: one error, nothing lost.

The error names the thread and the message, the run stores nothing and gives its
lease back, and other threads keep running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from langchain_retro import (
    Assistant,
    ChatCompletionThread,
    CorruptDataError,
    ThreadRunner,
)
from langchain_retro.stores.base import NewMessage
from langchain_retro.testing import FakeChatServer

if TYPE_CHECKING:
    from _helpers import Caller as Call
    from langchain_openai import ChatOpenAI

    from langchain_retro.stores.base import BaseStore

pytest_plugins = ["_helpers"]


@pytest.mark.parametrize("payload", ['{"type": "human"', '{"type": "nope"}', "[1]"])
async def test_a_corrupt_row_names_thread_and_message_and_stores_nothing(
    store: BaseStore,
    server: FakeChatServer,
    llm: ChatOpenAI,
    call: Call,
    payload: str,
) -> None:
    assistant = Assistant.create(store, model="gpt-test")
    bad = ChatCompletionThread.create(store, assistant_id=assistant.id)
    good = ChatCompletionThread.create(store, assistant_id=assistant.id)
    # A row written by another tool: the store keeps text, the runner rebuilds it.
    (row,) = store.add_messages(
        bad.id, [NewMessage(role="user", payload=payload, id="edited-by-hand")]
    )
    runner = ThreadRunner(store=store, llm=llm, wait_timeout=0.0)
    with pytest.raises(CorruptDataError) as caught:
        await call(runner, "invoke", "hi", {"configurable": {"thread_id": bad.id}})
    assert caught.value.thread_id == bad.id
    assert caught.value.object_id == row.id
    assert bad.id in str(caught.value)
    assert "edited-by-hand" in str(caught.value)
    assert server.requests == []
    assert store.count_messages(bad.id) == 2  # the row and the kept input, no reply
    assert store.get_lease(bad.id) is None  # given back
    reply = await call(
        runner, "invoke", "hello", {"configurable": {"thread_id": good.id}}
    )
    assert reply.content == "echo: hello"
