"""`ThreadRunner` across processes: several workers running turns on shared threads.

Four worker processes (started with ``spawn``, as on macOS and Windows) run turns
through their own `ThreadRunner` and store on one database: a PostgreSQL schema or a
SQLite file. Workers are paired on purpose: both workers of a pair run each turn on
the same thread, and one pair's next thread is the other pair's current one, so runs on
one thread collide across processes all the time. Half the workers use ``invoke``, half
``ainvoke``. One `FakeChatServer` in the test process answers them all, slowly enough
that runs overlap, and counts the runs in flight on each thread.

Afterwards every thread must read as if its turns had run one at a time: human and AI
messages alternate, each reply answers the human message right before it, no message
is lost or stored twice, each run sent the whole thread as it stood, and ``hwm`` is the
last human message.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import re
import threading
import time
import traceback
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import pytest
from conftest import postgres_url
from langchain_core.messages import AIMessage, HumanMessage

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    SQLiteStore,
    ThreadBusyError,
    ThreadRunner,
)
from langchain_retro.testing import FakeChatServer, RecordedRequest, echo_reply

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_retro.stores.base import BaseStore

PROCESSES = 4
THREADS = 6
TURNS = 8
MODEL_DELAY = 0.01
"""Seconds the fake model takes per reply, so runs from different processes overlap."""
WAIT_TIMEOUT = 60.0
"""Long enough that a run never gives up waiting for a busy thread."""
CHILD_DEADLINE = 90.0
"""Seconds the test waits for the workers (spawning and imports included)."""
TEXT = re.compile(r"p(\d+)-t(\d+)")


def thread_index(proc: int, turn: int) -> int:
    """The thread a worker's turn runs on; both workers of a pair use the same."""
    return (turn + proc // 2) % THREADS


def turn_text(proc: int, turn: int) -> str:
    return f"p{proc}-t{turn}"


class Model:
    """The fake model's answer: an echo, after a pause, counting runs in flight."""

    def __init__(self, thread_ids: list[str]) -> None:
        self.thread_ids = thread_ids
        self.lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.peak_per_thread: Counter[str] = Counter()
        self.peak = 0

    def __call__(self, request: RecordedRequest) -> str:
        match = TEXT.fullmatch(request.last_user_text)
        assert match is not None, request.last_user_text
        thread_id = self.thread_ids[thread_index(int(match[1]), int(match[2]))]
        with self.lock:
            self.in_flight[thread_id] += 1
            self.peak_per_thread[thread_id] = max(
                self.peak_per_thread[thread_id], self.in_flight[thread_id]
            )
            self.peak = max(self.peak, self.in_flight.total())
        time.sleep(MODEL_DELAY)
        with self.lock:
            self.in_flight[thread_id] -= 1
        return echo_reply(request)


# --- the worker process --------------------------------------------------------------


def open_store(spec: dict[str, str]) -> BaseStore:
    if spec["kind"] == "sqlite":
        return SQLiteStore(spec["path"])
    from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

    return PostgresStore.from_connection_string(
        spec["url"], schema=spec["schema"], max_size=2
    )


def worker(
    *,
    spec: dict[str, str],
    base_url: str,
    proc: int,
    thread_ids: list[str],
    start: Any,
    results: Any,
) -> None:
    """Run `TURNS` turns; put ``(proc, replies, busy, error)`` on ``results``."""
    replies: list[tuple[str, str, str]] = []  # (sent text, reply content, reply id)
    busy = 0
    try:
        from langchain_openai import ChatOpenAI  # noqa: PLC0415

        llm = ChatOpenAI(
            base_url=base_url, api_key="test-key", model="fake-model", max_retries=0
        )
        store = open_store(spec)
        runner = ThreadRunner(store=store, llm=llm, wait_timeout=WAIT_TIMEOUT)
        turns = [
            (turn_text(proc, turn), thread_ids[thread_index(proc, turn)])
            for turn in range(TURNS)
        ]

        def record(text: str, reply: AIMessage) -> None:
            assert reply.id is not None
            replies.append((text, str(reply.content), reply.id))

        start.wait(CHILD_DEADLINE)
        if proc % 2 == 0:
            with store:
                for text, thread_id in turns:
                    config: Any = {"configurable": {"thread_id": thread_id}}
                    while True:
                        try:
                            record(text, runner.invoke(text, config))
                            break
                        except ThreadBusyError:
                            busy += 1
        else:

            async def run() -> int:
                retried = 0
                async with store:
                    for text, thread_id in turns:
                        config: Any = {"configurable": {"thread_id": thread_id}}
                        while True:
                            try:
                                record(text, await runner.ainvoke(text, config))
                                break
                            except ThreadBusyError:
                                retried += 1
                return retried

            busy = asyncio.run(run())
    except BaseException:
        results.put((proc, replies, busy, traceback.format_exc()))
        raise
    results.put((proc, replies, busy, None))


# --- the test ------------------------------------------------------------------------


def store_spec(store: BaseStore) -> dict[str, str]:
    """How a worker opens the database ``store`` is on."""
    if isinstance(store, SQLiteStore):
        return {"kind": "sqlite", "path": store.path}
    from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

    assert isinstance(store, PostgresStore)
    return {"kind": "postgres", "url": postgres_url(), "schema": store.schema}


def run_workers(
    spec: dict[str, str], base_url: str, thread_ids: list[str]
) -> list[tuple[int, list[tuple[str, str, str]], int, str | None]]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(
            target=worker,
            kwargs={
                "spec": spec,
                "base_url": base_url,
                "proc": proc,
                "thread_ids": thread_ids,
                "start": start,
                "results": results,
            },
            name=f"retro-worker-{proc}",
        )
        for proc in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    out = []
    try:
        deadline = time.monotonic() + CHILD_DEADLINE
        while len(out) < PROCESSES:
            try:
                out.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                codes = [p.exitcode for p in processes]
                pytest.fail(f"workers did not all report in time; exit codes {codes}")
        for process in processes:
            process.join(timeout=30)
        assert [p.exitcode for p in processes] == [0] * PROCESSES
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        results.close()
    return sorted(out)


@pytest.mark.timeout(120)
def test_workers_in_several_processes_share_threads(
    store_factory: Callable[..., BaseStore],
) -> None:
    store = store_factory()
    assistant = Assistant.create(store, model="fake-model")
    thread_ids = [
        ChatCompletionThread.create(store, assistant_id=assistant.id).id
        for _ in range(THREADS)
    ]
    sent: dict[str, list[str]] = defaultdict(list)
    for proc in range(PROCESSES):
        for turn in range(TURNS):
            sent[thread_ids[thread_index(proc, turn)]].append(turn_text(proc, turn))

    model = Model(thread_ids)
    with FakeChatServer(default=model) as server:
        results = run_workers(store_spec(store), server.base_url, thread_ids)
    requests = {r.last_user_text: r for r in server.requests}

    # Every worker did every turn, each answered by an echo stored under its own id.
    busy = 0
    reply_ids: list[str] = []
    for proc, (number, replies, retried, error) in enumerate(results):
        assert error is None, f"worker {number} failed:\n{error}"
        assert number == proc
        assert [(text, content) for text, content, _ in replies] == [
            (turn_text(proc, turn), f"echo: {turn_text(proc, turn)}")
            for turn in range(TURNS)
        ]
        reply_ids += [reply_id for _, _, reply_id in replies]
        busy += retried
    assert busy == 0  # WAIT_TIMEOUT outlasts any wait; retries would be counted here
    assert len(server.requests) == PROCESSES * TURNS  # one model call per turn
    assert len(requests) == PROCESSES * TURNS
    assert model.peak > 1  # runs of different processes overlapped...
    assert set(model.peak_per_thread.values()) == {1}  # ...never on one thread

    for thread_id in thread_ids:
        messages = AssistantThreadChatMessageHistory(store, thread_id).messages
        humans, ais = messages[0::2], messages[1::2]
        # Strict alternation: each human message followed by the one reply to it.
        assert len(messages) == 2 * len(sent[thread_id])
        assert all(isinstance(m, HumanMessage) for m in humans)
        assert all(isinstance(m, AIMessage) for m in ais)
        for human, ai in zip(humans, ais, strict=True):
            assert ai.content == f"echo: {human.content}"
        # Nothing lost, nothing stored twice.
        texts = [str(m.content) for m in humans]
        assert sorted(texts) == sorted(sent[thread_id])
        # Each run sent the thread as it stood: every earlier turn, then its input.
        for position, human in enumerate(humans):
            request = requests[str(human.content)]
            context = [m["content"] for m in request.messages]
            assert context == [m.content for m in messages[: 2 * position + 1]]
        thread = ChatCompletionThread.retrieve(store, thread_id)
        assert thread.hwm == humans[-1].id
        assert {m.id for m in ais} <= set(reply_ids)
    assert len(set(reply_ids)) == len(reply_ids) == PROCESSES * TURNS
