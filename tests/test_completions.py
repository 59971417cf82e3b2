"""The model a run calls: the request it sends is the one ``ChatOpenAI`` sends.

A run hands its messages to the openai SDK as built, past the SDK's request
transform (`langchain_retro._completions`). These tests hold the request a run sends,
key order included, to the one a bare ``ChatOpenAI`` call sends for the same messages,
sync and async, streamed and not, with tools and the caller's ``extra_body``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from _runs import cfg
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from openai.resources.chat.completions import completions as sdk_completions

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    SQLiteStore,
    ThreadRunner,
)
from langchain_retro._completions import run_model
from langchain_retro.testing import FakeChatServer, RecordedRequest


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


PRIOR: list[BaseMessage] = [
    HumanMessage('Hello, émoji 🌍 and "quotes"'),
    HumanMessage(content=[{"type": "text", "text": "parts"}]),
]


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "c.db") as opened:
        yield opened


def _thread(store: SQLiteStore) -> ChatCompletionThread:
    assistant = Assistant.create(store, model="fake-model", instructions="Be brief.")
    thread = ChatCompletionThread.create(store, assistant_id=assistant.id)
    AssistantThreadChatMessageHistory(store, thread.id).add_messages(PRIOR)
    return thread


def _wire(request: RecordedRequest) -> str:
    """The request body as sent, keys in order."""
    return json.dumps(request.body)


def _expected() -> list[BaseMessage]:
    return [SystemMessage("Be brief."), *PRIOR, HumanMessage("and now?")]


@pytest.mark.parametrize("stream", [False, True])
def test_a_run_sends_what_chat_openai_sends(
    server: FakeChatServer, sqlite: SQLiteStore, stream: bool
) -> None:
    llm = server.chat_model(temperature=0.3, extra_body={"top_k": 5})
    runner = ThreadRunner(store=sqlite, llm=llm)
    thread = _thread(sqlite)
    if stream:
        "".join(str(chunk.content) for chunk in runner.stream("and now?", cfg(thread)))
        list(llm.stream(_expected()))
    else:
        runner.invoke("and now?", cfg(thread))
        llm.invoke(_expected())
    ours, bare = server.requests
    assert _wire(ours) == _wire(bare)
    assert ours.body["top_k"] == 5
    assert [m["role"] for m in ours.messages] == ["system", "user", "user", "user"]


async def test_an_async_run_with_tools_sends_what_chat_openai_sends(
    server: FakeChatServer, sqlite: SQLiteStore
) -> None:
    llm = server.chat_model()
    runner = ThreadRunner(store=sqlite, llm=llm, tools=[get_weather])
    thread = _thread(sqlite)
    await runner.ainvoke("and now?", cfg(thread))
    await llm.bind_tools([get_weather]).ainvoke(_expected())
    history = await AssistantThreadChatMessageHistory(sqlite, thread.id).aget_messages()
    [chunk async for chunk in runner.astream("more?", cfg(thread))]
    await llm.bind_tools([get_weather]).ainvoke(
        [SystemMessage("Be brief."), *history, HumanMessage("more?")], stream=True
    )
    first, bare, streamed, bare_streamed = server.requests
    assert _wire(first) == _wire(bare)
    assert first.body["tools"][0]["function"]["name"] == "get_weather"
    assert [m["role"] for m in streamed.messages][-2:] == ["assistant", "user"]
    assert _wire(streamed) == _wire(bare_streamed)


def test_the_sdk_never_walks_a_runs_messages(
    server: FakeChatServer, sqlite: SQLiteStore
) -> None:
    llm = server.chat_model()
    runner = ThreadRunner(store=sqlite, llm=llm)
    thread = _thread(sqlite)
    sdk_transform = vars(sdk_completions)["maybe_transform"]
    with mock.patch.object(
        sdk_completions, "maybe_transform", wraps=sdk_transform
    ) as transform:
        runner.invoke("and now?", cfg(thread))
        llm.invoke(_expected())
    ours, bare = (call.args[0] for call in transform.call_args_list)
    assert ours["messages"] == []  # the run's went past the transform...
    assert len(bare["messages"]) == 4  # ...a bare call's through it
    assert ours["model"] == bare["model"] == "fake-model"
    assert len(server.requests[0].messages) == 4


def test_the_callers_model_is_left_as_it_was(server: FakeChatServer) -> None:
    llm = server.chat_model()
    client, async_client = llm.client, llm.async_client
    model = run_model(llm)
    assert (llm.client, llm.async_client) == (client, async_client)
    assert llm.use_responses_api is None
    assert model.use_responses_api is False
    again = run_model(model)
    assert again.client is model.client  # not wrapped twice
    assert model.client.with_raw_response is not None
    assert model.client.messages is client.messages  # the rest is the SDK's


def test_a_client_of_the_callers_making_is_called_as_it_is(
    server: FakeChatServer,
) -> None:
    mine = object()
    llm = server.chat_model().model_copy(update={"client": mine})
    model = run_model(llm)
    assert model.client is mine
    assert type(model.async_client).__name__ == "_AsBuilt"
