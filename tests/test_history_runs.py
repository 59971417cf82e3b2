"""The history and the runner on one run thread never answer a message twice."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.history import RunnableWithMessageHistory

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    NothingToRunError,
    ThreadRunner,
)
from langchain_retro.stores.base import BaseStore
from langchain_retro.testing import FakeChatServer

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers"]


async def test_runner_finds_nothing_to_answer_after_history_turns(
    store: BaseStore, call: Call
) -> None:
    assistant = await call(Assistant, "create", store, model="gpt-test")
    thread = await call(
        ChatCompletionThread, "create", store, assistant_id=assistant.id
    )
    config: RunnableConfig = {
        "configurable": {"session_id": thread.id, "thread_id": thread.id}
    }
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{input}")]
    )
    with FakeChatServer() as server:
        async with server.achat_model() as llm:
            chain = RunnableWithMessageHistory(
                prompt | llm,
                lambda session_id: AssistantThreadChatMessageHistory(store, session_id),
                input_messages_key="input",
                history_messages_key="history",
            )
            for text in ("first", "second"):
                reply: Any = await call(chain, "invoke", {"input": text}, config)
                assert reply.content == f"echo: {text}"
            history = AssistantThreadChatMessageHistory(store, thread.id)
            stored = await call.messages(history)
            assert [m.content for m in stored] == [
                "first",
                "echo: first",
                "second",
                "echo: second",
            ]
            after = await call(ChatCompletionThread, "retrieve", store, thread.id)
            assert after.hwm == stored[2].id

            runner = ThreadRunner(store=store, llm=llm)
            with pytest.raises(NothingToRunError) as caught:
                await call(runner, "invoke", None, config)
            assert caught.value.thread_id == thread.id
            assert len(server.requests) == 2  # the two chain turns, no third call
            assert await call(store, "count_messages", thread.id) == 4
