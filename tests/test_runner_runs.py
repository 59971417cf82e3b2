"""Runs as records, written by `ThreadRunner`: statuses, usage, options, streams.

Every run leaves a record (`StoredRun`) reachable from the reply it returns and from
the messages it stored; a failed model call leaves a ``failed`` run with its
``last_error``; tool calls end a run ``requires_action`` and their results continue
the same run; the Assistants run options shape the request the fake server records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from _runs import cfg, hwm, sent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_retro import (
    Assistant,
    ChatCompletionThread,
    ModelCallError,
    RetroValueError,
    RunIncompleteError,
    RunStateError,
    ThreadRunner,
    ToolOutputsError,
)
from langchain_retro.testing import FakeChatServer, ScriptedReply

if TYPE_CHECKING:
    from _helpers import Caller as Call
    from langchain_openai import ChatOpenAI

    from langchain_retro.stores.base import BaseStore

pytest_plugins = ["_helpers"]

WEATHER = {
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


def new_thread(store: BaseStore, **assistant: Any) -> ChatCompletionThread:
    settings = {"model": "gpt-test", "instructions": "Be brief.", **assistant}
    bot = Assistant.create(store, **settings)
    return ChatCompletionThread.create(store, assistant_id=bot.id)


def run_of(reply: AIMessage) -> str:
    run_id = reply.response_metadata["run_id"]
    assert isinstance(run_id, str)
    assert run_id.startswith("run_")
    return run_id


async def test_a_run_is_recorded_completed_with_its_settings_and_usage(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store, temperature=0.3, top_p=0.9)
    runner = ThreadRunner(store=store, llm=llm)
    reply = await call(runner, "invoke", "Hello", cfg(thread))
    run = await call(store, "get_run", thread.id, run_of(reply))
    assert run.status == "completed"
    assert run.thread_id == thread.id
    assert run.assistant_id == thread.assistant_id
    assert reply.response_metadata["assistant_id"] == thread.assistant_id
    assert (run.model, run.instructions) == ("gpt-test", "Be brief.")
    assert (run.temperature, run.top_p) == (0.3, 0.9)
    assert run.started_at is not None
    assert run.completed_at is not None
    assert run.completed_at >= run.created_at
    assert run.failed_at is None
    assert run.last_error is None
    assert run.expires_at is None  # the lease went with the reply
    usage = reply.usage_metadata
    assert usage is not None
    assert run.usage is not None
    assert run.usage.prompt_tokens == usage["input_tokens"] > 0
    assert run.usage.completion_tokens == usage["output_tokens"] > 0
    assert run.usage.total_tokens == usage["total_tokens"]
    # The stored reply names its run and assistant.
    (written,) = await call(store, "list_run_messages", thread.id, run.id)
    assert written.id == reply.id
    assert (written.run_id, written.assistant_id) == (run.id, thread.assistant_id)
    assert server.requests[-1].temperature == 0.3


async def test_usage_adds_up_over_a_threads_runs(
    store: BaseStore, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    first = await call(runner, "invoke", "one", cfg(thread))
    second = await call(runner, "invoke", "two two", cfg(thread))
    total = await call(store, "get_thread_usage", thread.id)
    expected = [m.usage_metadata for m in (first, second)]
    assert all(expected)
    assert total.total_tokens == sum(u["total_tokens"] for u in expected if u)
    assert total.prompt_tokens == sum(u["input_tokens"] for u in expected if u)
    runs = await call(store, "list_runs", thread.id)
    assert [r.id for r in runs] == [run_of(second), run_of(first)]  # newest first


async def test_a_failed_model_call_fails_the_run_with_its_error(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    server.fail_next(500, message="upstream exploded")
    with pytest.raises(ModelCallError) as caught:
        await call(runner, "invoke", "Hello", cfg(thread))
    run_id = caught.value.run_id
    assert run_id is not None
    run = await call(store, "get_run", thread.id, run_id)
    assert run.status == "failed"
    assert run.failed_at is not None
    assert run.last_error is not None
    assert run.last_error.code == "server_error"
    assert "upstream exploded" in run.last_error.message
    assert hwm(store, thread) is None
    # The input stays, the lease is free: running again answers it.
    reply = await call(runner, "invoke", None, cfg(thread))
    assert (await call(store, "get_run", thread.id, run_of(reply))).status == (
        "completed"
    )


async def test_a_reply_with_tool_calls_requires_action_and_results_continue_it(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, tools=[WEATHER])
    server.enqueue(
        ScriptedReply(
            tool_calls=[
                {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_a"},
                {"name": "get_weather", "args": {"city": "Rome"}, "id": "call_b"},
            ]
        ),
        "Oslo is cold, Rome is warm.",
    )
    calling = await call(runner, "invoke", "Weather?", cfg(thread))
    run_id = run_of(calling)
    run = await call(store, "get_run", thread.id, run_id)
    assert run.status == "requires_action"
    assert run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.id, c.function.name) for c in calls] == [
        ("call_a", "get_weather"),
        ("call_b", "get_weather"),
    ]
    assert calls[0].function.arguments == '{"city": "Oslo"}'
    assert run.tools == [WEATHER]
    results = [
        ToolMessage("cold", tool_call_id="call_a"),
        ToolMessage("warm", tool_call_id="call_b"),
    ]
    final = await call(runner, "invoke", results, cfg(thread))
    assert final.content == "Oslo is cold, Rome is warm."
    assert run_of(final) == run_id  # the same run, continued
    run = await call(store, "get_run", thread.id, run_id)
    assert run.status == "completed"
    assert run.required_action is None
    written = await call(store, "list_run_messages", thread.id, run_id)
    assert [m.role for m in written] == ["assistant", "tool", "tool", "assistant"]
    assert [r["role"] for r in server.requests[-1].messages][-3:] == [
        "assistant",
        "tool",
        "tool",
    ]
    assert len(await call(store, "list_runs", thread.id)) == 1


@pytest.mark.parametrize(
    "case",
    [
        (
            [ToolMessage("cold", tool_call_id="call_a")],
            ToolOutputsError,
            "call_b",
        ),
        (
            [
                ToolMessage("cold", tool_call_id="call_a"),
                ToolMessage("warm", tool_call_id="call_b"),
                ToolMessage("??", tool_call_id="call_zzz"),
            ],
            ToolOutputsError,
            "call_zzz",
        ),
        ([HumanMessage("never mind")], RunStateError, "cancel"),
    ],
    ids=["unanswered", "unknown", "not-results"],
)
async def test_results_that_do_not_fit_the_calls_are_refused_and_nothing_stored(
    store: BaseStore,
    llm: ChatOpenAI,
    server: FakeChatServer,
    call: Call,
    case: tuple[list[Any], type[Exception], str],
) -> None:
    results, error, names = case
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, tools=[WEATHER])
    server.enqueue(
        ScriptedReply(
            tool_calls=[
                {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_a"},
                {"name": "get_weather", "args": {"city": "Rome"}, "id": "call_b"},
            ]
        )
    )
    calling = await call(runner, "invoke", "Weather?", cfg(thread))
    before = await call(store, "list_messages", thread.id)
    requests = len(server.requests)
    with pytest.raises(error, match=names):
        await call(runner, "invoke", results, cfg(thread))
    assert await call(store, "list_messages", thread.id) == before
    assert len(server.requests) == requests
    run = await call(store, "get_run", thread.id, run_of(calling))
    assert run.status == "requires_action"
    assert run.required_action is not None
    assert await call(store, "get_lease", thread.id) is None


async def test_cancelling_a_run_waiting_for_results_frees_the_thread(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, tools=[WEATHER])
    server.enqueue(ScriptedReply(tool_calls=[{"name": "get_weather", "id": "c1"}]))
    calling = await call(runner, "invoke", "Weather?", cfg(thread))
    run = await call(store, "cancel_run", thread.id, run_of(calling))
    assert run.status == "cancelled"
    assert run.cancelled_at is not None
    # The thread goes on; the unanswered call is not sent (the API would refuse it).
    reply = await call(runner, "invoke", "Hello again", cfg(thread))
    assert reply.content == "echo: Hello again"
    roles = [m["role"] for m in server.requests[-1].messages]
    assert "tool" not in roles
    assert not any(m.get("tool_calls") for m in server.requests[-1].messages)


async def test_run_options_shape_the_request_and_are_recorded(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    for text in ("one", "two", "three"):
        await call(runner, "invoke", text, cfg(thread))
    reply = await call(
        runner,
        "invoke",
        "four",
        cfg(thread),
        truncation_strategy={"type": "last_messages", "last_messages": 3},
        additional_instructions="Answer in French.",
        instructions="Be terse.",
        model="gpt-other",
        temperature=0.1,
        max_completion_tokens=50,
        metadata={"ticket": "T-1"},
    )
    request = server.requests[-1]
    assert sent(request) == [
        ("system", "Be terse."),
        ("system", "Answer in French."),
        ("user", "three"),
        ("assistant", "echo: three"),
        ("user", "four"),
    ]
    assert request.model == "gpt-other"
    assert request.temperature == 0.1
    assert request.body["max_completion_tokens"] == 50
    run = await call(store, "get_run", thread.id, run_of(reply))
    assert run.truncation_strategy is not None
    assert run.truncation_strategy.last_messages == 3
    assert (run.model, run.instructions, run.temperature) == (
        "gpt-other",
        "Be terse.",
        0.1,
    )
    assert run.additional_instructions == "Answer in French."
    assert run.max_completion_tokens == 50
    assert run.metadata == {"ticket": "T-1"}


async def test_a_prompt_budget_that_cannot_hold_the_input_ends_incomplete(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    with pytest.raises(RunIncompleteError, match="max_prompt_tokens") as caught:
        await call(runner, "invoke", "word " * 200, cfg(thread), max_prompt_tokens=20)
    assert server.requests == []
    run = await call(store, "get_run", thread.id, caught.value.run_id)
    assert run.status == "incomplete"
    assert run.incomplete_details is not None
    assert run.incomplete_details.reason == "max_prompt_tokens"
    assert len(await call(store, "list_messages", thread.id)) == 1  # input kept


async def test_a_reply_cut_by_max_completion_tokens_ends_incomplete(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    server.enqueue(ScriptedReply(content="Once upon", finish_reason="length"))
    with pytest.raises(RunIncompleteError) as caught:
        await call(runner, "invoke", "Story", cfg(thread), max_completion_tokens=2)
    assert caught.value.reason == "max_completion_tokens"
    run = await call(store, "get_run", thread.id, caught.value.run_id)
    assert run.status == "incomplete"
    written = await call(store, "list_run_messages", thread.id, run.id)
    assert len(written) == 1  # the cut reply is kept


@pytest.mark.parametrize(
    "options",
    [
        {"max_prompt_tokens": 0},
        {"truncation_strategy": {"type": "last_messages"}},
        {"truncation_strategy": {"type": "middle"}},
        {"metadata": {"k": 1}},
        {"additional_instructions": 3},
    ],
)
async def test_bad_run_options_are_refused_before_anything_is_written(
    store: BaseStore, llm: ChatOpenAI, call: Call, options: dict[str, Any]
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    with pytest.raises(RetroValueError):
        await call(runner, "invoke", "hi", cfg(thread), **options)
    assert await call(store, "list_messages", thread.id) == []
    assert await call(store, "list_runs", thread.id) == []


async def test_streaming_records_the_run_and_closing_early_cancels_it(
    store: BaseStore, llm: ChatOpenAI, server: FakeChatServer, mode: str
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    server.enqueue("one two three four five")
    if mode == "sync":
        stream = runner.stream("Go", cfg(thread))
        next(stream)
        stream.close()
    else:
        astream = runner.astream("Go", cfg(thread))
        await anext(astream)
        await astream.aclose()  # type: ignore[attr-defined]
    (run,) = store.list_runs(thread.id)
    assert run.status == "cancelled"
    assert store.get_lease(thread.id) is None
    assert [m.role for m in store.list_messages(thread.id)] == ["user"]
    chunks = list(runner.stream(None, cfg(thread)))
    reply_id = chunks[-1].id
    (done, _) = store.list_runs(thread.id)
    assert done.status == "completed"
    (written,) = store.list_run_messages(thread.id, done.id)
    assert written.id == reply_id
