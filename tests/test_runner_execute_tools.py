"""`ThreadRunner(execute_tools=True)`: the runner runs the tools inside the run.

The fake model calls tools; the runner executes them (in parallel, bounded), sends
the results back and stores every step as it completes, until a reply without calls
or ``max_steps`` model calls (the run then ends ``incomplete``). A tool that raises is
reported to the model as a ``ToolMessage`` with ``status="error"``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from _runs import cfg, hwm
from langchain_core.messages import AIMessageChunk, ToolMessage
from langchain_core.tools import tool

from langchain_retro import (
    Assistant,
    ChatCompletionThread,
    RetroValueError,
    RunIncompleteError,
    ThreadRunner,
)
from langchain_retro._messages import from_payload
from langchain_retro.testing import FakeChatServer, ScriptedReply

if TYPE_CHECKING:
    from _helpers import Caller as Call
    from langchain_openai import ChatOpenAI

    from langchain_retro.stores.base import BaseStore

pytest_plugins = ["_helpers"]


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def nap(seconds: float) -> str:
    """Sleep a while, then say so."""
    time.sleep(seconds)
    return f"slept {seconds}"


@tool
def explode(why: str) -> str:
    """Always fails."""
    raise ValueError(why)


def new_thread(store: BaseStore) -> ChatCompletionThread:
    bot = Assistant.create(store, model="gpt-test")
    return ChatCompletionThread.create(store, assistant_id=bot.id)


def calls(*specs: tuple[str, dict[str, Any], str]) -> ScriptedReply:
    return ScriptedReply(
        tool_calls=[{"name": n, "args": a, "id": i} for n, a, i in specs]
    )


async def test_the_runner_runs_a_tool_and_sends_its_result_back(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, tools=[add], execute_tools=True)
    server.enqueue(calls(("add", {"a": 2, "b": 3}, "c1")), "The sum is 5.")
    reply = await call(runner, "invoke", "What is 2 + 3?", cfg(thread))
    assert reply.content == "The sum is 5."
    run_id = reply.response_metadata["run_id"]
    run = await call(store, "get_run", thread.id, run_id)
    assert run.status == "completed"
    written = await call(store, "list_run_messages", thread.id, run_id)
    assert [m.role for m in written] == ["assistant", "tool", "assistant"]
    result = from_payload(written[1].payload, written[1].id)
    assert isinstance(result, ToolMessage)
    assert (result.content, result.tool_call_id) == ("5", "c1")
    second = server.requests[-1].messages
    assert (second[-1]["role"], second[-1]["content"]) == ("tool", "5")
    assert second[-1]["tool_call_id"] == "c1"
    assert second[-2]["role"] == "assistant"
    assert second[-2]["tool_calls"][0]["id"] == "c1"
    # Usage is both calls'; hwm is what the final reply answered.
    answers = [from_payload(m.payload, m.id) for m in written if m.role == "assistant"]
    totals = [getattr(m, "usage_metadata", None) or {} for m in answers]
    assert run.usage is not None
    assert run.usage.total_tokens == sum(t["total_tokens"] for t in totals) > 0
    assert hwm(store, thread) == written[1].id


async def test_tool_calls_of_one_reply_run_in_parallel(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, tools=[nap], execute_tools=True)
    server.enqueue(
        calls(*((("nap", {"seconds": 0.4}, f"c{i}")) for i in range(4))), "Rested."
    )
    started = time.monotonic()
    reply = await call(runner, "invoke", "Rest", cfg(thread))
    elapsed = time.monotonic() - started
    assert reply.content == "Rested."
    assert elapsed < 1.2  # 4 x 0.4 s one after another would take 1.6 s
    results = [
        from_payload(m.payload, m.id)
        for m in await call(store, "list_messages", thread.id)
        if m.role == "tool"
    ]
    assert [r.tool_call_id for r in results] == ["c0", "c1", "c2", "c3"]


async def test_a_tool_that_raises_is_reported_to_the_model_as_an_error(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(
        store=store, llm=llm, tools=[explode, add], execute_tools=True
    )
    server.enqueue(
        calls(("explode", {"why": "boom"}, "c1"), ("nope", {}, "c2")),
        "Sorry, that failed.",
    )
    reply = await call(runner, "invoke", "Try it", cfg(thread))
    assert reply.content == "Sorry, that failed."
    sent_results = [m for m in server.requests[-1].messages if m["role"] == "tool"]
    assert "ValueError: boom" in sent_results[0]["content"]
    assert "no tool named 'nope'" in sent_results[1]["content"]
    stored = [
        from_payload(m.payload, m.id)
        for m in await call(store, "list_messages", thread.id)
        if m.role == "tool"
    ]
    assert [getattr(m, "status", None) for m in stored] == ["error", "error"]


async def test_max_steps_ends_the_run_incomplete_with_every_step_stored(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(
        store=store, llm=llm, tools=[add], execute_tools=True, max_steps=2
    )
    server.enqueue(
        calls(("add", {"a": 1, "b": 1}, "c1")), calls(("add", {"a": 2, "b": 2}, "c2"))
    )
    with pytest.raises(RunIncompleteError, match="max_steps=2") as caught:
        await call(runner, "invoke", "Keep adding", cfg(thread))
    run = await call(store, "get_run", thread.id, caught.value.run_id)
    assert run.status == "incomplete"
    assert run.incomplete_details is not None
    assert run.incomplete_details.reason == "max_steps"
    roles = [m.role for m in await call(store, "list_messages", thread.id)]
    assert roles == ["user", "assistant", "tool", "assistant", "tool"]
    assert await call(store, "get_lease", thread.id) is None
    # The next run goes on from the last results.
    server.enqueue("Done: 4.")
    reply = await call(runner, "invoke", None, cfg(thread))
    assert reply.content == "Done: 4."
    last = server.requests[-1].messages[-1]
    assert (last["role"], last["tool_call_id"]) == ("tool", "c2")


def test_stream_shows_every_step(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, tools=[add], execute_tools=True)
    server.enqueue(calls(("add", {"a": 2, "b": 3}, "c1")), "The sum is 5.")
    chunks = list(runner.stream("2 + 3?", cfg(thread)))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert any(c.tool_call_chunks for c in chunks)
    assert "".join(str(c.content) for c in chunks) == "The sum is 5."
    closing = [c.id for c in chunks if c.chunk_position == "last" and not c.content]
    stored = [m.id for m in store.list_messages(thread.id) if m.role == "assistant"]
    assert [i for i in closing if i in stored] == stored


@pytest.mark.parametrize(
    "tools",
    [
        [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        [add, add],
    ],
    ids=["description-only", "same-name-twice"],
)
def test_execute_tools_needs_runnable_tools_with_unique_names(
    store: BaseStore, llm: ChatOpenAI, tools: list[Any]
) -> None:
    with pytest.raises(RetroValueError, match="execute_tools"):
        ThreadRunner(store=store, llm=llm, tools=tools, execute_tools=True)
