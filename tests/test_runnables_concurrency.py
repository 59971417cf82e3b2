"""`ThreadRunner` under concurrency: leases, in-flight posts, parallel runs, batches.

One run is active per thread, across threads of a process, stores on one database and
processes; runs on different threads run in parallel; settings never leak between
concurrent runs.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
from _runs import cfg
from langchain_core.messages import HumanMessage

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    NothingToRunError,
    SQLiteStore,
    ThreadBusyError,
    ThreadRunner,
)
from langchain_retro.testing import FakeChatServer, RecordedRequest, echo_reply

if TYPE_CHECKING:
    from collections.abc import Callable

    from _helpers import Caller as Call
    from langchain_openai import ChatOpenAI

    from langchain_retro.stores.base import BaseStore

pytest_plugins = ["_helpers"]


class Gauge:
    """A fake model's reply that takes a while and records how many overlap."""

    def __init__(self, pause: float = 0.0) -> None:
        self.pause = pause
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0

    def __call__(self, request: RecordedRequest) -> str:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(self.pause)
        with self.lock:
            self.in_flight -= 1
        return echo_reply(request)


@pytest.fixture
def gauge() -> Gauge:
    return Gauge()


@pytest.fixture
def server(server: FakeChatServer, gauge: Gauge) -> FakeChatServer:
    """The conftest's server, answering through `gauge` (reset after the test)."""
    server.default = gauge
    return server


def new_thread(store: BaseStore, **assistant_fields: Any) -> ChatCompletionThread:
    fields = {"model": "gpt-test", **assistant_fields}
    assistant = Assistant.create(store, **fields)
    return ChatCompletionThread.create(store, assistant_id=assistant.id)


def contents(store: BaseStore, thread: ChatCompletionThread) -> list[Any]:
    history = AssistantThreadChatMessageHistory(store, thread.id)
    return [m.content for m in history.messages]


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


async def in_background(mode: str, function: Callable[[], Any]) -> asyncio.Future[Any]:
    """Start a sync call in a thread, or an async one as a task."""
    if mode == "sync":
        return asyncio.get_running_loop().run_in_executor(None, function)
    return asyncio.ensure_future(function())


# --- settings never leak -------------------------------------------------------------


async def test_concurrent_runs_keep_their_own_settings(
    store: BaseStore, gauge: Gauge, server: FakeChatServer, llm: ChatOpenAI, mode: str
) -> None:
    gauge.pause = 0.05
    settings = [
        {"model": f"model-{i}", "temperature": i / 4, "top_p": 1 - i / 8}
        for i in range(4)
    ]
    threads = [
        new_thread(store, instructions=f"assistant {i}", **settings[i])
        for i in range(4)
        for _ in range(2)
    ]
    before = llm.model_dump()
    runner = ThreadRunner(store=store, llm=llm)
    if mode == "sync":
        with ThreadPoolExecutor(len(threads)) as pool:
            list(pool.map(lambda t: runner.invoke("hi", cfg(t)), threads))
    else:
        await asyncio.gather(*(runner.ainvoke("hi", cfg(t)) for t in threads))

    assert gauge.peak > 1  # the runs did overlap
    assert len(server.requests) == len(threads)
    for request in server.requests:
        number = int((request.system_prompt or "").removeprefix("assistant "))
        expected = settings[number]
        assert request.model == expected["model"]
        assert (request.temperature, request.top_p) == (
            expected["temperature"],
            expected["top_p"],
        )
    assert llm.model_dump() == before


# --- messages posted while a run is in flight ----------------------------------------


async def test_message_posted_during_a_run_is_answered_by_the_next(
    store: BaseStore, gauge: Gauge, server: FakeChatServer, llm: ChatOpenAI, mode: str
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    gauge.pause = 0.3
    if mode == "sync":
        first = await in_background(mode, lambda: runner.invoke("first", cfg(thread)))
    else:
        first = await in_background(mode, lambda: runner.ainvoke("first", cfg(thread)))
    await until(lambda: len(server.requests) == 1)
    await history.aadd_messages([HumanMessage("late")])
    assert (await first).content == "echo: first"
    gauge.pause = 0.0

    hwm = ChatCompletionThread.retrieve(store, thread.id).hwm
    assert hwm == history.messages[0].id  # "first", not "late"
    reply = runner.invoke(None, cfg(thread))
    assert reply.content == "echo: late"
    # In conversation order: the reply to "first" comes before "late" (issue 8).
    assert [m["content"] for m in server.requests[1].messages] == [
        "first",
        "echo: first",
        "late",
    ]
    with pytest.raises(NothingToRunError):
        runner.invoke(None, cfg(thread))
    assert contents(store, thread) == ["first", "late", "echo: first", "echo: late"]


async def test_concurrent_runs_answer_a_message_once(
    store: BaseStore, gauge: Gauge, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    AssistantThreadChatMessageHistory(store, thread.id).add_messages(
        [HumanMessage("only once")]
    )
    gauge.pause = 0.1
    runner = ThreadRunner(store=store, llm=llm)
    results = await asyncio.gather(
        *(call(runner, "invoke", None, cfg(thread)) for _ in range(3)),
        return_exceptions=True,
    )
    replies = [r for r in results if not isinstance(r, BaseException)]
    assert [r.content for r in replies] == ["echo: only once"]
    assert all(isinstance(r, NothingToRunError) for r in results if r not in replies)
    assert len(server.requests) == 1
    assert contents(store, thread) == ["only once", "echo: only once"]


async def test_runs_on_one_thread_take_turns(
    store: BaseStore, gauge: Gauge, server: FakeChatServer, llm: ChatOpenAI, mode: str
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    gauge.pause = 0.1
    if mode == "sync":
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda q: runner.invoke(q, cfg(thread)), ["a", "b"]))
    else:
        await asyncio.gather(*(runner.ainvoke(q, cfg(thread)) for q in ("a", "b")))
    assert gauge.peak == 1
    first, second = server.requests
    # The second run saw the first one's whole turn.
    assert [m["content"] for m in second.messages][:2] == [
        first.messages[0]["content"],
        f"echo: {first.last_user_text}",
    ]
    assert len(contents(store, thread)) == 4


# --- the lease -----------------------------------------------------------------------


async def test_busy_thread_raises_after_the_wait_timeout(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    assert store.acquire_lease(thread.id, "another-worker", 60)
    runner = ThreadRunner(store=store, llm=llm, wait_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ThreadBusyError, match=r"wait_timeout of 0\.3s") as caught:
        await call(runner, "invoke", "hi", cfg(thread))
    assert 0.3 <= time.monotonic() - started < 2
    assert caught.value.thread_id == thread.id
    assert isinstance(caught.value, TimeoutError)
    assert server.requests == []
    assert contents(store, thread) == []  # the input waits with the caller

    store.release_lease(thread.id, "another-worker")
    assert (await call(runner, "invoke", "hi", cfg(thread))).content == "echo: hi"


async def test_expired_lease_of_a_crashed_run_is_taken_over(
    store: BaseStore, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    assert store.acquire_lease(thread.id, "crashed-worker", 0.3)
    runner = ThreadRunner(store=store, llm=llm, wait_timeout=5)
    started = time.monotonic()
    await call(runner, "invoke", "hi", cfg(thread))
    assert time.monotonic() - started >= 0.25


async def test_lease_is_renewed_while_a_run_lasts(
    store: BaseStore, gauge: Gauge, server: FakeChatServer, llm: ChatOpenAI, mode: str
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, lease_ttl=0.3)
    gauge.pause = 1.0
    if mode == "sync":
        run = await in_background(mode, lambda: runner.invoke("slow", cfg(thread)))
    else:
        run = await in_background(mode, lambda: runner.ainvoke("slow", cfg(thread)))
    await until(lambda: len(server.requests) == 1)
    await asyncio.sleep(0.6)  # twice the lease's time to live
    assert not await store.aacquire_lease(thread.id, "intruder", 5)
    await run
    assert await store.aacquire_lease(thread.id, "intruder", 5)


async def test_busy_across_stores_on_one_database(
    store: BaseStore,
    store_factory: Callable[..., BaseStore],
    gauge: Gauge,
    server: FakeChatServer,
    llm: ChatOpenAI,
) -> None:
    thread = new_thread(store)
    other = store_factory()
    gauge.pause = 0.5
    first = await in_background(
        "sync", lambda: ThreadRunner(store=store, llm=llm).invoke("a", cfg(thread))
    )
    await until(lambda: len(server.requests) == 1)
    impatient = ThreadRunner(store=other, llm=llm, wait_timeout=0.1)
    with pytest.raises(ThreadBusyError):
        await impatient.ainvoke("b", cfg(thread))
    patient = ThreadRunner(store=other, llm=llm, wait_timeout=5)
    gauge.pause = 0.0
    assert (await patient.ainvoke("b", cfg(thread))).content == "echo: b"
    await first
    assert contents(other, thread) == ["a", "echo: a", "b", "echo: b"]


def _run_in_child(path: str, base_url: str, thread_id: str) -> None:
    from langchain_openai import ChatOpenAI  # noqa: PLC0415

    with SQLiteStore(path) as store:
        llm = ChatOpenAI(model="m", api_key="k", base_url=base_url, max_retries=0)
        runner = ThreadRunner(store=store, llm=llm)
        runner.invoke("from the child", {"configurable": {"thread_id": thread_id}})


async def test_busy_across_processes(
    tmp_path: Any, gauge: Gauge, server: FakeChatServer
) -> None:
    path = str(tmp_path / "shared.db")
    with SQLiteStore(path) as store:
        thread = new_thread(store)
        gauge.pause = 1.0
        child = multiprocessing.get_context("spawn").Process(
            target=_run_in_child, args=(path, server.base_url, thread.id)
        )
        child.start()
        try:
            await until(lambda: len(server.requests) == 1, within=30)
            async with server.achat_model() as model:
                impatient = ThreadRunner(store=store, llm=model, wait_timeout=0.1)
                with pytest.raises(ThreadBusyError):
                    await impatient.ainvoke("from the parent", cfg(thread))
                gauge.pause = 0.0
                patient = ThreadRunner(store=store, llm=model, wait_timeout=10)
                await patient.ainvoke("from the parent", cfg(thread))
        finally:
            child.join(timeout=30)
        assert child.exitcode == 0
        assert contents(store, thread) == [
            "from the child",
            "echo: from the child",
            "from the parent",
            "echo: from the parent",
        ]


# --- many threads at once ------------------------------------------------------------


async def test_batch_over_many_threads_respects_max_concurrency(
    store: BaseStore, gauge: Gauge, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    threads = [new_thread(store) for _ in range(20)]
    runner = ThreadRunner(store=store, llm=llm)
    gauge.pause = 0.05
    replies = await call(
        runner,
        "batch",
        [f"q{i}" for i in range(20)],
        [{**cfg(t), "max_concurrency": 4} for t in threads],
    )
    assert [r.content for r in replies] == [f"echo: q{i}" for i in range(20)]
    assert gauge.peak == 4
    for i, thread in enumerate(threads):
        assert contents(store, thread) == [f"q{i}", f"echo: q{i}"]


async def test_runs_on_different_threads_run_in_parallel(
    store: BaseStore, gauge: Gauge, llm: ChatOpenAI, call: Call
) -> None:
    threads = [new_thread(store) for _ in range(8)]
    runner = ThreadRunner(store=store, llm=llm)
    gauge.pause = 0.2
    started = time.monotonic()
    configs = [{**cfg(t), "max_concurrency": 8} for t in threads]
    await call(runner, "batch", ["hi"] * 8, configs)
    assert gauge.peak == 8
    assert time.monotonic() - started < 8 * 0.2 / 2
