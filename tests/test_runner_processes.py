"""Runs across processes: cancelled from another process, expired after a kill -9.

A child process (a real ``python`` started with `subprocess`) runs one turn through
its own `ThreadRunner` and store on the test's database, against the test's
`FakeChatServer`, which answers slowly so the run is caught in flight. The test
process then cancels the run, or kills the child with SIGKILL, and reads the run back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import postgres_url

from langchain_retro import (
    Assistant,
    ChatCompletionThread,
    SQLiteStore,
    ThreadRunner,
)

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

    from langchain_retro.stores.base import BaseStore, StoredRun
    from langchain_retro.testing import FakeChatServer

LEASE_TTL = 0.6
"""The child's lease: renewed every 0.2 s, so it notices a cancel that soon."""

CHILD = """
import json, sys
from langchain_openai import ChatOpenAI
from langchain_retro import RunCancelledError, SQLiteStore, ThreadRunner

spec, base_url, thread_id, ttl, stream = json.loads(sys.argv[1])
if spec["kind"] == "sqlite":
    store = SQLiteStore(spec["path"])
else:
    from langchain_retro.stores.postgres import PostgresStore
    store = PostgresStore.from_connection_string(spec["url"], schema=spec["schema"])
llm = ChatOpenAI(model="fake-model", api_key="k", base_url=base_url, max_retries=0)
runner = ThreadRunner(store=store, llm=llm, lease_ttl=ttl)
config = {"configurable": {"thread_id": thread_id}}
print("started", flush=True)
try:
    if stream:
        for chunk in runner.stream("Tell me a long story", config):
            pass
    else:
        runner.invoke("Tell me a long story", config)
except RunCancelledError as exc:
    print("cancelled", exc.run_id, flush=True)
    sys.exit(3)
print("completed", flush=True)
"""


def store_spec(store: BaseStore) -> dict[str, str]:
    if isinstance(store, SQLiteStore):
        return {"kind": "sqlite", "path": str(store.path)}
    return {"kind": "postgres", "url": postgres_url(), "schema": store.schema}  # type: ignore[attr-defined]


def start_child(
    store: BaseStore, server: FakeChatServer, thread_id: str, *, stream: bool = False
) -> subprocess.Popen[str]:
    argument = json.dumps(
        [store_spec(store), server.base_url, thread_id, LEASE_TTL, stream]
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", CHILD, argument],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def reap(child: subprocess.Popen[str]) -> None:
    """Kill the child if it still runs, and close its pipes."""
    child.kill()
    child.communicate()


def wait_for_run(store: BaseStore, thread_id: str, deadline: float = 30.0) -> StoredRun:
    """The thread's run, once it is in progress (the child has reached the model)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        runs = store.list_runs(thread_id)
        if runs and runs[0].status == "in_progress":
            return runs[0]
        time.sleep(0.02)
    pytest.fail("the child's run never started")


def new_thread(store: BaseStore) -> ChatCompletionThread:
    bot = Assistant.create(store, model="fake-model")
    return ChatCompletionThread.create(store, assistant_id=bot.id)


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_a_run_cancelled_from_another_process_stops_and_stores_no_reply(
    store: BaseStore, server: FakeChatServer, stream: bool
) -> None:
    thread = new_thread(store)
    # invoke waits for the whole answer; a stream gets its first words, then waits.
    server.set_delay(0.0 if stream else 30.0, per_chunk=30.0 if stream else 0.0)
    server.enqueue("Once upon a time there was a thread")
    child = start_child(store, server, thread.id, stream=stream)
    try:
        run = wait_for_run(store, thread.id)
        asked = time.monotonic()
        cancelling = store.cancel_run(thread.id, run.id)
        assert cancelling.status == "cancelling"
        out, err = child.communicate(timeout=20)
        noticed = time.monotonic() - asked
    finally:
        reap(child)
    assert child.returncode == 3, err
    assert f"cancelled {run.id}" in out
    assert noticed < 10 * LEASE_TTL  # well before the fake model's 30 s answer
    ended = store.get_run(thread.id, run.id)
    assert ended.status == "cancelled"
    assert ended.cancelled_at is not None
    assert [m.role for m in store.list_messages(thread.id)] == ["user"]
    assert store.get_lease(thread.id) is None
    assert store.list_run_messages(thread.id, run.id) == []


def test_a_run_whose_process_was_killed_expires_and_frees_the_thread(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI
) -> None:
    thread = new_thread(store)
    server.set_delay(30.0)
    child = start_child(store, server, thread.id)
    try:
        run = wait_for_run(store, thread.id)
        assert run.expires_at is not None
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        reap(child)
    time.sleep(LEASE_TTL + 0.2)
    dead = store.get_run(thread.id, run.id)
    assert dead.status == "expired"  # read after the lease lapsed: never in_progress
    assert dead.expires_at is None
    assert store.list_runs(thread.id)[0].status == "expired"
    # Another run takes the thread over, answers the input, and the dead run stays
    # expired in the store.
    server.set_delay(0.0)
    runner = ThreadRunner(store=store, llm=llm)
    reply = runner.invoke(None, {"configurable": {"thread_id": thread.id}})
    assert reply.content == "echo: Tell me a long story"
    statuses: dict[str, Any] = {r.id: r.status for r in store.list_runs(thread.id)}
    assert statuses[run.id] == "expired"
    assert statuses[reply.response_metadata["run_id"]] == "completed"
