"""`ThreadRunner` and conversation order, on real stores.

Listings keep append order; a run's context is in conversation order (each reply right
after the message it answered). Every reply records its run (``run_...``, also the
lease owner), its assistant and the message it answered. Caller-chosen ids that do not
sort by age change nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from _runs import cfg, hwm
from langchain_core.messages import HumanMessage, ToolMessage

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    NothingToRunError,
    ThreadRunner,
    _messages,
)
from langchain_retro.stores.base import NewMessage
from langchain_retro.testing import FakeChatServer, ScriptedReply

if TYPE_CHECKING:
    from collections.abc import Callable

    from _helpers import Caller as Call
    from langchain_openai import ChatOpenAI

    from langchain_retro.stores.base import BaseStore

pytest_plugins = ["_helpers"]


def new_thread(store: BaseStore) -> tuple[Assistant, ChatCompletionThread]:
    assistant = Assistant.create(store, model="gpt-test")
    return assistant, ChatCompletionThread.create(store, assistant_id=assistant.id)


def contents(request_messages: list[dict[str, Any]]) -> list[Any]:
    return [m.get("content") for m in request_messages]


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


def post(store: BaseStore, thread: ChatCompletionThread, text: str, **kw: Any) -> str:
    message = HumanMessage(text)
    (row,) = store.add_messages(
        thread.id,
        [NewMessage(role="user", payload=_messages.to_payload(message), **kw)],
    )
    return row.id


async def test_a_reply_records_its_run_assistant_and_what_it_answered(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    assistant, thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    reply = await call(runner, "invoke", ["one", "two"], cfg(thread))
    chunks = [c async for c in runner.astream("three", cfg(thread))]
    rows = store.list_messages(thread.id)
    assert [r.role for r in rows] == ["user", "user", "assistant", "user", "assistant"]
    first, second = rows[2], rows[4]
    assert first.id == reply.id
    assert second.id == chunks[-1].id
    assert (first.assistant_id, first.reply_to) == (assistant.id, rows[1].id)
    assert (second.assistant_id, second.reply_to) == (assistant.id, rows[3].id)
    assert first.run_id is not None
    assert second.run_id is not None
    assert first.run_id.startswith("run_")
    assert first.run_id != second.run_id
    # Input and messages posted by others belong to no run.
    links = {
        (r.run_id, r.assistant_id, r.reply_to) for r in (rows[0], rows[1], rows[3])
    }
    assert links == {(None, None, None)}


async def test_the_run_id_is_the_lease_owner(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI
) -> None:
    _, thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    server.set_delay(0.3)
    running = asyncio.ensure_future(runner.ainvoke("hi", cfg(thread)))
    await until(lambda: len(server.requests) == 1)
    lease = store.get_lease(thread.id)
    reply = await running
    assert lease is not None
    assert lease.owner.startswith("run_")
    assert store.get_message(thread.id, reply.id).run_id == lease.owner


async def test_a_late_post_comes_after_the_reply_that_was_in_flight(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI
) -> None:
    _, thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, window=3)
    server.set_delay(0.3)
    running = asyncio.ensure_future(runner.ainvoke("first", cfg(thread)))
    await until(lambda: len(server.requests) == 1)
    post(store, thread, "late")
    await running
    server.set_delay(0)

    # Listings keep append order; the next run's context is in conversation order.
    listed = AssistantThreadChatMessageHistory(store, thread.id).messages
    assert [m.content for m in listed] == ["first", "late", "echo: first"]
    await runner.ainvoke(None, cfg(thread))
    assert contents(server.requests[1].messages) == ["first", "echo: first", "late"]
    await runner.ainvoke("next", cfg(thread))
    # Window 3: the newest three in conversation order.
    assert contents(server.requests[2].messages) == ["late", "echo: late", "next"]


async def test_tool_results_follow_a_tool_call_that_was_in_flight(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI
) -> None:
    _, thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    server.enqueue(
        ScriptedReply(tool_calls=[{"name": "add", "args": {"a": 1}, "id": "c1"}])
    )
    server.set_delay(0.3)
    running = asyncio.ensure_future(runner.ainvoke("first", cfg(thread)))
    await until(lambda: len(server.requests) == 1)
    post(store, thread, "late")
    await running
    server.set_delay(0)

    await runner.ainvoke([ToolMessage("2", tool_call_id="c1")], cfg(thread))
    sent = server.requests[1].messages
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert contents(sent)[-1] == "late"


async def test_a_deleted_hwm_message_leaves_later_posts_pending(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    _, thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    post(store, thread, "q1", id="zz")  # a caller's id, sorting after msg_... ids
    await call(runner, "invoke", None, cfg(thread))
    assert hwm(store, thread) == "zz"
    store.delete_message(thread.id, "zz")
    # Nothing new: the reply to the deleted message still marks it answered.
    with pytest.raises(NothingToRunError):
        await call(runner, "invoke", None, cfg(thread))
    # "aa" sorts before "zz" but was posted after: it is pending.
    post(store, thread, "q2", id="aa")
    reply = await call(runner, "invoke", None, cfg(thread))
    assert reply.content == "echo: q2"
    assert hwm(store, thread) == "aa"
