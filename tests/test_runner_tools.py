"""`ThreadRunner` tools: every form ``bind_tools`` takes, and whole tool turns.

Tools reach the request the fake server records in each form ``ChatOpenAI.bind_tools``
accepts. A run answering tool results sends the tool-call message and all its results,
whatever ``window`` or token budget, and ``hwm`` never moves past results the model
did not see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from _runs import cfg, hwm
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    RetroValueError,
    ThreadRunner,
)
from langchain_retro.testing import FakeChatServer, ScriptedReply

if TYPE_CHECKING:
    from _helpers import Caller as Call
    from langchain_openai import ChatOpenAI

    from langchain_retro.stores.base import BaseStore

pytest_plugins = ["_helpers"]


def new_thread(store: BaseStore) -> ChatCompletionThread:
    assistant = Assistant.create(store, model="gpt-test", instructions="Be brief.")
    return ChatCompletionThread.create(store, assistant_id=assistant.id)


# --- item 2: every form bind_tools accepts -------------------------------------------

OPENAI_DICT = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

JSON_SCHEMA = {
    "title": "lookup",
    "description": "Look a word up.",
    "type": "object",
    "properties": {"word": {"type": "string"}},
    "required": ["word"],
}


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


class Search(BaseModel):
    """Search the web."""

    query: str = Field(description="What to look for.")


class Translate(TypedDict):
    """Translate a text."""

    text: str
    target: str


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.mark.parametrize(
    "case",
    [
        (OPENAI_DICT, "get_weather"),
        (JSON_SCHEMA, "lookup"),
        (multiply, "multiply"),
        (Search, "Search"),
        (Translate, "Translate"),
        (add, "add"),
    ],
    ids=["openai-dict", "json-schema", "function", "pydantic", "typeddict", "basetool"],
)
async def test_each_tool_form_reaches_the_request(
    store: BaseStore,
    server: FakeChatServer,
    llm: ChatOpenAI,
    call: Call,
    case: tuple[Any, str],
) -> None:
    given, name = case
    runner = ThreadRunner(store=store, llm=llm, tools=[given])
    await call(runner, "invoke", "hi", cfg(new_thread(store)))
    (sent,) = server.requests[0].tools
    assert sent["type"] == "function"
    assert sent["function"]["name"] == name
    assert sent["function"]["parameters"]["type"] == "object"


async def test_all_forms_together_in_order(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    forms = (OPENAI_DICT, JSON_SCHEMA, multiply, Search, Translate, add)
    runner = ThreadRunner(store=store, llm=llm, tools=forms)
    await call(runner, "invoke", "hi", cfg(new_thread(store)))
    names = [t["function"]["name"] for t in server.requests[0].tools]
    assert names == ["get_weather", "lookup", "multiply", "Search", "Translate", "add"]
    assert server.requests[0].tools[0] == OPENAI_DICT


@pytest.mark.parametrize(
    "bad",
    [42, "add", {"name_only": True}, None],
    ids=["int", "str", "dict", "none"],
)
def test_a_tool_bind_tools_cannot_take_is_refused_at_construction(
    store: BaseStore, llm: ChatOpenAI, bad: Any
) -> None:
    with pytest.raises(RetroValueError, match="tool 1") as caught:
        ThreadRunner(store=store, llm=llm, tools=[add, bad])
    assert caught.value.__cause__ is not None


# --- item 3: a tool turn is sent whole ----------------------------------------------


def two_calls(store: BaseStore, thread: ChatCompletionThread) -> None:
    AssistantThreadChatMessageHistory(store, thread.id).add_messages(
        [HumanMessage("hello"), AIMessage("hi"), HumanMessage("add twice")]
    )


TOOL_CALLS = [
    {"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1"},
    {"name": "add", "args": {"a": 1, "b": 1}, "id": "call_2"},
]
RESULTS = [
    ToolMessage("5", tool_call_id="call_1"),
    ToolMessage("2", tool_call_id="call_2"),
]


@pytest.mark.parametrize(
    "options",
    [
        {"window": 1},
        {"window": 2},
        {"window": 3},
        {"max_tokens_context": 1},
        {"window": 2, "max_tokens_context": 1},
    ],
    ids=["window-1", "window-2", "window-3", "budget", "window-and-budget"],
)
async def test_a_small_window_still_sends_the_call_and_all_its_results(
    store: BaseStore,
    server: FakeChatServer,
    llm: ChatOpenAI,
    call: Call,
    options: dict[str, Any],
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, tools=[add], **options)
    server.enqueue(ScriptedReply(tool_calls=TOOL_CALLS), "5 and 2")
    reply = await call(runner, "invoke", "add 2 and 3, then 1 and 1", cfg(thread))
    assert [c["id"] for c in reply.tool_calls] == ["call_1", "call_2"]

    final = await call(runner, "invoke", RESULTS, cfg(thread))

    assert final.content == "5 and 2"
    sent = server.requests[1].messages
    assert [m["role"] for m in sent[-3:]] == ["assistant", "tool", "tool"]
    assert [c["id"] for c in sent[-3]["tool_calls"]] == ["call_1", "call_2"]
    assert [(m["tool_call_id"], m["content"]) for m in sent[-2:]] == [
        ("call_1", "5"),
        ("call_2", "2"),
    ]
    messages = AssistantThreadChatMessageHistory(store, thread.id).messages
    assert [m.type for m in messages] == ["human", "ai", "tool", "tool", "ai"]
    assert hwm(store, thread) == messages[3].id


async def test_a_tool_call_older_than_the_rows_read_is_read_back(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    call_message = AIMessage(
        "",
        tool_calls=[
            {"name": "add", "args": {}, "id": f"c{i}", "type": "tool_call"}
            for i in range(6)
        ],
    )
    history = AssistantThreadChatMessageHistory(store, thread.id)
    history.add_messages([HumanMessage("q"), call_message])
    runner = ThreadRunner(store=store, llm=llm, window=2)
    # Six results, more than twice the window: the run reads back to their call.
    results = [ToolMessage(str(i), tool_call_id=f"c{i}") for i in range(6)]
    await call(runner, "invoke", results, cfg(thread))
    sent = server.requests[0].messages
    assert [m["role"] for m in sent] == ["system", "assistant", *["tool"] * 6]
    assert hwm(store, thread) == history.messages[7].id
