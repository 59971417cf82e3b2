"""The store contract for runs, run against every backend, sync and async.

Through the `BaseStore` protocol only: `begin_run` creates (or resumes) a run under the
thread's lease, `finish_run` writes its steps and its end with its messages and usage,
`renew_run` keeps it going or says it was cancelled or lost, a run whose lease lapsed
reads as expired (or cancelled) and is written so when another run takes the thread,
and runs are listed, cancelled and deleted with their thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from conftest import EVERY_BACKEND
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_retro import (
    NotFoundError,
    RetroValueError,
    ThreadNotFoundError,
)
from langchain_retro._messages import to_payload
from langchain_retro._metadata import MetadataPatch
from langchain_retro.errors import (
    MessageIdConflictError,
    RunNotFoundError,
    RunStateError,
    ThreadBusyError,
)
from langchain_retro.stores.base import (
    BaseStore,
    FunctionCall,
    IncompleteDetails,
    LastError,
    NewMessage,
    NewRun,
    RequiredAction,
    RequiredToolCall,
    RunSetup,
    RunStart,
    RunUpdate,
    RunUsage,
    StoredRun,
    SubmitToolOutputs,
)

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers", "_wire_store"]


@pytest.fixture(params=EVERY_BACKEND)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every backend, and `AssistantsAPIStore` over ``langchain-retro serve``.

    ``wire`` serves SQLite, ``wire-postgres`` PostgreSQL (``tests/_wire_store.py``).
    """
    return str(request.param)


UNKNOWN_THREAD = "thread_00000000000000000000000000"
TTL = 30.0
SHORT = 0.05
"""A lease that lapses during the test: the test sleeps `PAST` it."""
PAST = 0.15
ROOM = 0.5
"""A lease that lapses during the test but leaves room for one store call first,
even on a loaded machine: the test sleeps `PAST_ROOM` it."""
PAST_ROOM = ROOM + 0.15

CALL = RequiredToolCall(
    id="call_1", function=FunctionCall(name="lookup", arguments='{"q": "x"}')
)
WAITING = RequiredAction(submit_tool_outputs=SubmitToolOutputs(tool_calls=[CALL]))


def user(text: str, **fields: Any) -> NewMessage:
    return NewMessage(role="user", payload=to_payload(HumanMessage(text)), **fields)


def reply(text: str, run_id: str | None = None, **fields: Any) -> NewMessage:
    return NewMessage(
        role="assistant", payload=to_payload(AIMessage(text)), run_id=run_id, **fields
    )


def tool_result(text: str, **fields: Any) -> NewMessage:
    message = ToolMessage(text, tool_call_id=CALL.id)
    return NewMessage(role="tool", payload=to_payload(message), **fields)


def texts(rows: list[Any]) -> list[str]:
    return [json.loads(row.payload)["content"] for row in rows]


def near_now(stamp: int | None) -> bool:
    return stamp is not None and abs(stamp - time.time()) < 5


async def assistant_thread(call: Call, store: BaseStore) -> tuple[str, str]:
    """A thread whose ``assistant_id`` names an assistant: ``(thread, assistant)``."""
    assistant = await call(store, "create_assistant", {"model": "m"}, {})
    thread = await call(store, "create_thread", {"assistant_id": assistant.id})
    return thread.id, assistant.id


async def begin(
    call: Call, store: BaseStore, thread_id: str, owner: str, **kwargs: Any
) -> RunStart:
    kwargs.setdefault("ttl", TTL)
    start = await call(store, "begin_run", thread_id, owner=owner, **kwargs)
    assert start is not None, "the thread was busy"
    return start  # type: ignore[no-any-return]


async def finish(
    call: Call,
    store: BaseStore,
    thread_id: str,
    owner: str,
    status: str = "completed",
    *,
    run_id: str | None = None,
    **kwargs: Any,
) -> Any:
    fields = {
        k: kwargs.pop(k)
        for k in ("usage", "last_error", "incomplete_details", "required_action")
        if k in kwargs
    }
    return await call(
        store,
        "finish_run",
        thread_id,
        owner=owner,
        run_id=owner if run_id is None else run_id,
        update=RunUpdate(status=status, **fields),  # type: ignore[arg-type]
        **kwargs,
    )


async def free(call: Call, store: BaseStore, thread_id: str) -> bool:
    """Whether the thread's lease is free (taken for a moment, then given back)."""
    taken = await call(store, "acquire_lease", thread_id, "probe", TTL)
    if taken:
        await call(store, "release_lease", thread_id, "probe")
    return bool(taken)


# --- begin_run -----------------------------------------------------------------------


async def test_begin_run_creates_an_in_progress_run(
    store: BaseStore, call: Call
) -> None:
    tid, assistant_id = await assistant_thread(call, store)
    new = NewRun(
        id="run_a",
        model="gpt-x",
        instructions="Be brief.",
        tools=[{"type": "function", "function": {"name": "lookup"}}],
        temperature=0.5,
        metadata={"k": "v"},
    )
    start = await begin(call, store, tid, "run_a", run=new, messages=[user("q")])
    run = start.run
    assert isinstance(run, StoredRun)
    assert (run.id, run.thread_id, run.assistant_id, run.status) == (
        "run_a",
        tid,
        assistant_id,
        "in_progress",
    )
    assert (run.model, run.instructions, run.temperature, run.metadata) == (
        "gpt-x",
        "Be brief.",
        0.5,
        {"k": "v"},
    )
    assert run.tools == new.tools
    assert near_now(run.created_at)
    assert run.started_at == run.created_at
    assert run.expires_at is not None
    assert abs(run.expires_at - (time.time() + TTL)) < 5
    assert (run.completed_at, run.usage, run.required_action) == (None, None, None)
    assert start.resumed is False
    assert texts(start.appended) == ["q"]
    assert [m.run_id for m in start.appended] == [None]  # the input is left as given
    assert await call(store, "get_run", tid, "run_a") == run
    assert await call(store, "list_runs", tid) == [run]
    assert not await free(call, store, tid)


async def test_begin_run_without_a_run_creates_one_named_by_the_owner(
    store: BaseStore, call: Call
) -> None:
    tid, assistant_id = await assistant_thread(call, store)
    start = await begin(call, store, tid, "run_owner")
    assert (start.run.id, start.run.assistant_id) == ("run_owner", assistant_id)
    assert start.run.model is None  # from the assistant, when the run is made
    plain = await call(store, "create_thread", {})
    start = await begin(
        call, store, plain.id, "run_b", run=NewRun(id="run_b", assistant_id="asst_x")
    )
    assert start.run.assistant_id == "asst_x"
    assert start.assistant is None


async def test_get_run_setup_reads_the_thread_the_assistant_and_the_newest_run(
    store: BaseStore, call: Call
) -> None:
    tid, assistant_id = await assistant_thread(call, store)
    setup = await call(store, "get_run_setup", tid, assistant_id)
    assert isinstance(setup, RunSetup)
    assert setup.thread is not None
    assert setup.assistant is not None
    assert (setup.thread.id, setup.assistant.id) == (tid, assistant_id)
    assert setup.thread.metadata == {"assistant_id": assistant_id}
    assert (setup.assistant.model, setup.newest_run) == ("m", None)
    await begin(call, store, tid, "run_a")
    newest = (await call(store, "get_run_setup", tid, assistant_id)).newest_run
    assert (newest.id, newest.status) == ("run_a", "in_progress")
    await finish(call, store, tid, "run_a")
    await begin(call, store, tid, "run_b", ttl=SHORT)
    await asyncio.sleep(PAST)
    # The newest run, settled: its lease lapsed, so it reads expired.
    newest = (await call(store, "get_run_setup", tid, assistant_id)).newest_run
    assert (newest.id, newest.status) == ("run_b", "expired")
    # What does not exist is None; the others are still read.
    missing = await call(store, "get_run_setup", tid, "asst_missing")
    assert missing.assistant is None
    assert (missing.thread.id, missing.newest_run.id) == (tid, "run_b")
    nothing = await call(store, "get_run_setup", UNKNOWN_THREAD, assistant_id)
    assert (nothing.thread, nothing.newest_run) == (None, None)
    assert nothing.assistant.id == assistant_id


async def test_begin_run_on_a_busy_thread_creates_no_run(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_a")
    busy = await call(store, "begin_run", tid, owner="run_b", ttl=TTL)
    assert busy is None
    assert [r.id for r in await call(store, "list_runs", tid)] == ["run_a"]


async def test_a_run_id_already_stored_is_refused_with_nothing_written(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_same")
    await finish(call, store, tid, "run_same")
    other = await call(store, "create_thread", {})
    for thread_id, owner, run in (
        (tid, "run_same", None),  # the owner's id, as the run's
        (tid, "run_new", NewRun(id="run_same")),
        (other.id, "run_new", NewRun(id="run_same")),  # unique across threads too
    ):
        with pytest.raises(RetroValueError) as caught:
            await call(
                store,
                "begin_run",
                thread_id,
                owner=owner,
                ttl=TTL,
                run=run,
                messages=[user("lost")],
            )
        assert "run_same" in str(caught.value)
        assert await free(call, store, thread_id)  # no lease kept
        assert await call(store, "count_messages", thread_id) == 0
    assert [r.id for r in await call(store, "list_runs", tid)] == ["run_same"]
    assert await call(store, "list_runs", other.id) == []


# --- finish_run ----------------------------------------------------------------------


async def test_finish_run_completed_writes_messages_patch_and_usage(
    store: BaseStore, call: Call
) -> None:
    tid, assistant_id = await assistant_thread(call, store)
    start = await begin(call, store, tid, "run_1", messages=[user("q1")])
    question = start.appended[0]
    saved = await finish(
        call,
        store,
        tid,
        "run_1",
        messages=[
            reply("a1", "run_1", assistant_id=assistant_id, reply_to=question.id)
        ],
        thread_patch=MetadataPatch(set={"hwm": question.id}),
        usage=RunUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
    )
    assert texts(saved.messages) == ["a1"]
    assert (await call(store, "list_messages", tid))[-1] == saved.messages[0]
    assert saved.messages[0].run_id == "run_1"
    assert (await call(store, "get_thread", tid)).metadata["hwm"] == question.id
    run = saved.run
    assert (run.status, run.expires_at) == ("completed", None)
    assert near_now(run.completed_at)
    assert run.usage == RunUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    assert await call(store, "get_run", tid, "run_1") == run
    assert await free(call, store, tid)
    assert await call(store, "renew_run", tid, owner="run_1", ttl=TTL) == "lost"

    # A second run: its own usage, added to the thread's running total.
    await begin(call, store, tid, "run_2", messages=[user("q2")])
    saved = await finish(
        call,
        store,
        tid,
        "run_2",
        messages=[reply("a2", "run_2")],
        usage=RunUsage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
    )
    assert saved.run.usage == RunUsage(
        prompt_tokens=1, completion_tokens=2, total_tokens=3
    )
    assert await call(store, "get_thread_usage", tid) == RunUsage(
        prompt_tokens=11, completion_tokens=7, total_tokens=18
    )
    assert (await call(store, "get_run", tid, "run_1")).usage.total_tokens == 15


async def test_a_step_keeps_the_lease_and_adds_up(store: BaseStore, call: Call) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1", messages=[user("q")])
    step = await finish(
        call,
        store,
        tid,
        "run_1",
        "in_progress",
        messages=[reply("calling a tool", "run_1"), tool_result("42", run_id="run_1")],
        usage=RunUsage(prompt_tokens=4, completion_tokens=1, total_tokens=5),
    )
    assert step.run.status == "in_progress"
    assert step.run.expires_at is not None
    assert step.run.usage.total_tokens == 5
    assert len(step.messages) == 2
    assert not await free(call, store, tid)
    assert await call(store, "renew_run", tid, owner="run_1", ttl=TTL) == "held"
    assert (await call(store, "get_run", tid, "run_1")).status == "in_progress"
    done = await finish(
        call,
        store,
        tid,
        "run_1",
        messages=[reply("done", "run_1")],
        usage=RunUsage(prompt_tokens=6, completion_tokens=2, total_tokens=8),
    )
    assert done.run.usage == RunUsage(
        prompt_tokens=10, completion_tokens=3, total_tokens=13
    )
    assert await call(store, "get_thread_usage", tid) == done.run.usage
    assert await free(call, store, tid)


@pytest.mark.parametrize(
    ("status", "fields", "stamp"),
    [
        (
            "failed",
            {"last_error": LastError(code="server_error", message="boom")},
            "failed_at",
        ),
        (
            "incomplete",
            {"incomplete_details": IncompleteDetails(reason="max_steps")},
            None,
        ),
    ],
)
async def test_a_run_ends_failed_or_incomplete(
    store: BaseStore,
    call: Call,
    status: str,
    fields: dict[str, Any],
    stamp: str | None,
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1", messages=[user("q")])
    saved = await finish(call, store, tid, "run_1", status, **fields)
    run = saved.run
    assert run.status == status
    for name, value in fields.items():
        assert getattr(run, name) == value
    if stamp is not None:
        assert near_now(getattr(run, stamp))
    assert (run.completed_at, run.expires_at) == (None, None)
    assert saved.messages == []
    assert await call(store, "get_run", tid, "run_1") == run
    assert await free(call, store, tid)
    assert await call(store, "get_thread_usage", tid) == RunUsage()


async def test_requires_action_then_resume_continues_the_same_run(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1", messages=[user("q")])
    waiting = await finish(
        call,
        store,
        tid,
        "run_1",
        "requires_action",
        messages=[reply("calling", "run_1")],
        required_action=WAITING,
    )
    assert waiting.run.status == "requires_action"
    assert waiting.run.required_action == WAITING
    assert waiting.run.expires_at is None
    assert await free(call, store, tid)  # nothing runs while it waits
    assert await call(store, "get_run", tid, "run_1") == waiting.run

    start = await begin(
        call,
        store,
        tid,
        "attempt_2",
        resume=True,
        messages=[tool_result("42"), user("tagged", run_id="run_other")],
    )
    assert start.resumed is True
    assert (start.run.id, start.run.status) == ("run_1", "in_progress")
    # Kept until the run's next write (resumed_run), which replaces it.
    assert start.run.required_action == WAITING
    assert start.run.created_at == waiting.run.created_at
    assert start.run.started_at is not None
    assert start.run.expires_at is not None
    assert [m.run_id for m in start.appended] == ["run_1", "run_other"]
    assert [r.id for r in await call(store, "list_runs", tid)] == ["run_1"]
    assert await call(store, "renew_run", tid, owner="attempt_2", ttl=TTL) == "held"
    done = await finish(
        call,
        store,
        tid,
        "attempt_2",
        run_id="run_1",
        messages=[reply("answer", "run_1")],
    )
    assert done.run.status == "completed"
    assert done.run.required_action is None
    assert await free(call, store, tid)  # the resuming owner gave it back
    written = await call(store, "list_run_messages", tid, "run_1")
    assert texts(written) == ["calling", "42", "answer"]


async def test_without_resume_a_waiting_run_is_left_alone(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1")
    await finish(call, store, tid, "run_1", "requires_action", required_action=WAITING)
    start = await begin(call, store, tid, "run_2", messages=[user("new input")])
    assert start.resumed is False
    assert start.run.id == "run_2"
    assert [m.run_id for m in start.appended] == [None]
    assert (await call(store, "get_run", tid, "run_1")).status == "requires_action"
    await finish(call, store, tid, "run_2")
    # resume=True when the newest run does not wait: a new run, as without it.
    start = await begin(call, store, tid, "run_3", resume=True, messages=[user("x")])
    assert (start.resumed, start.run.id) == (False, "run_3")
    assert [m.run_id for m in start.appended] == [None]
    assert [r.id for r in await call(store, "list_runs", tid)] == [
        "run_3",
        "run_2",
        "run_1",
    ]


async def test_finish_run_of_an_unknown_run_writes_nothing(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    other, _ = await assistant_thread(call, store)
    await begin(call, store, other, "run_elsewhere")
    await begin(call, store, tid, "run_1", messages=[user("q")])
    before = await call(store, "get_thread", tid)
    for run_id in ("run_unknown", "run_elsewhere"):
        with pytest.raises(RunNotFoundError) as caught:
            await finish(
                call,
                store,
                tid,
                "run_1",
                run_id=run_id,
                messages=[reply("a")],
                thread_patch=MetadataPatch(set={"hwm": "x"}),
                usage=RunUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
            )
        assert caught.value.object_id == run_id
        assert run_id in str(caught.value)
    assert await call(store, "get_thread", tid) == before
    assert texts(await call(store, "list_messages", tid)) == ["q"]
    assert await call(store, "get_thread_usage", tid) == RunUsage()
    assert not await free(call, store, tid)  # run_1 still holds it
    assert (await call(store, "get_run", other, "run_elsewhere")).status == (
        "in_progress"
    )
    with pytest.raises(ThreadNotFoundError):
        await finish(call, store, UNKNOWN_THREAD, "run_1")


# --- cancel --------------------------------------------------------------------------


async def test_cancel_of_a_running_run_ends_it_at_its_next_write(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1", messages=[user("q")])
    before = await call(store, "get_thread", tid)
    asked = await call(store, "cancel_run", tid, "run_1")
    assert asked.status == "cancelling"
    assert asked.cancelled_at is None
    assert await call(store, "get_run", tid, "run_1") == asked
    assert await call(store, "cancel_run", tid, "run_1") == asked  # asked twice
    assert await call(store, "renew_run", tid, owner="run_1", ttl=TTL) == "cancelling"
    assert not await free(call, store, tid)  # it holds the thread until it stops
    saved = await finish(
        call,
        store,
        tid,
        "run_1",
        messages=[reply("too late", "run_1")],
        thread_patch=MetadataPatch(set={"hwm": "x"}),
        usage=RunUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
    )
    assert saved.messages == []
    assert saved.run.status == "cancelled"
    assert near_now(saved.run.cancelled_at)
    assert saved.run.usage is None
    assert texts(await call(store, "list_messages", tid)) == ["q"]
    assert await call(store, "get_thread", tid) == before
    assert await call(store, "get_thread_usage", tid) == RunUsage()
    assert await call(store, "get_run", tid, "run_1") == saved.run
    assert await free(call, store, tid)
    with pytest.raises(RunStateError):
        await call(store, "cancel_run", tid, "run_1")


async def test_cancel_of_a_waiting_run_is_immediate(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1")
    await finish(call, store, tid, "run_1", "requires_action", required_action=WAITING)
    cancelled = await call(store, "cancel_run", tid, "run_1")
    assert cancelled.status == "cancelled"
    assert cancelled.required_action is None
    assert near_now(cancelled.cancelled_at)
    assert await call(store, "get_run", tid, "run_1") == cancelled
    # Nothing waits any more: resume starts a new run.
    start = await begin(call, store, tid, "run_2", resume=True)
    assert (start.resumed, start.run.id) == (False, "run_2")


@pytest.mark.parametrize("status", ["completed", "failed", "incomplete"])
async def test_cancel_of_an_ended_run_is_refused(
    store: BaseStore, call: Call, status: str
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1")
    ended = (await finish(call, store, tid, "run_1", status)).run
    with pytest.raises(RunStateError) as caught:
        await call(store, "cancel_run", tid, "run_1")
    assert (caught.value.run_id, caught.value.thread_id, caught.value.status) == (
        "run_1",
        tid,
        status,
    )
    assert "run_1" in str(caught.value)
    assert await call(store, "get_run", tid, "run_1") == ended


async def test_cancel_of_unknown_runs(store: BaseStore, call: Call) -> None:
    tid, _ = await assistant_thread(call, store)
    with pytest.raises(RunNotFoundError):
        await call(store, "cancel_run", tid, "run_unknown")
    with pytest.raises(NotFoundError):
        await call(store, "cancel_run", UNKNOWN_THREAD, "run_unknown")


# --- lapsed leases -------------------------------------------------------------------


async def test_a_run_whose_lease_lapsed_reads_as_expired(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    start = await begin(call, store, tid, "run_old", ttl=SHORT)
    assert start.run.status == "in_progress"
    await asyncio.sleep(PAST)
    got = await call(store, "get_run", tid, "run_old")
    assert (got.status, got.expires_at) == ("expired", None)
    assert await call(store, "list_runs", tid) == [got]
    with pytest.raises(RunStateError):
        await call(store, "cancel_run", tid, "run_old")  # a lapsed run has ended

    # Another run takes the thread over: the old one is written expired.
    new = await begin(call, store, tid, "run_new")
    assert new.run.status == "in_progress"
    assert await call(store, "renew_run", tid, owner="run_old", ttl=TTL) == "lost"
    assert await call(store, "renew_run", tid, owner="run_new", ttl=TTL) == "held"
    runs = await call(store, "list_runs", tid)
    assert [(r.id, r.status) for r in runs] == [
        ("run_new", "in_progress"),
        ("run_old", "expired"),
    ]
    # What the old run writes late is still kept; the new run keeps the lease.
    late = await finish(call, store, tid, "run_old", messages=[reply("late")])
    assert texts(late.messages) == ["late"]
    assert not await free(call, store, tid)
    assert await call(store, "renew_run", tid, owner="run_new", ttl=TTL) == "held"


async def test_a_lapsed_cancelling_run_ends_cancelled(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_old", ttl=ROOM)
    assert (await call(store, "cancel_run", tid, "run_old")).status == "cancelling"
    await asyncio.sleep(PAST_ROOM)
    got = await call(store, "get_run", tid, "run_old")
    assert got.status == "cancelled"
    assert near_now(got.cancelled_at)
    await begin(call, store, tid, "run_new")
    taken = await call(store, "get_run", tid, "run_old")
    assert taken.status == "cancelled"
    assert near_now(taken.cancelled_at)
    # Its process, stopping late, writes nothing and leaves the new lease alone.
    saved = await finish(call, store, tid, "run_old", messages=[reply("late")])
    assert (saved.messages, saved.run.status) == ([], "cancelled")
    assert await call(store, "count_messages", tid) == 0
    assert await call(store, "renew_run", tid, owner="run_new", ttl=TTL) == "held"


async def test_renewing_extends_the_run(store: BaseStore, call: Call) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1", ttl=ROOM)
    assert await call(store, "renew_run", tid, owner="run_1", ttl=TTL) == "held"
    await asyncio.sleep(PAST_ROOM)
    got = await call(store, "get_run", tid, "run_1")
    assert got.status == "in_progress"
    assert got.expires_at is not None
    assert got.expires_at > time.time() + TTL / 2
    assert await call(store, "renew_run", tid, owner="someone", ttl=TTL) == "lost"
    assert await call(store, "renew_run", UNKNOWN_THREAD, owner="run_1", ttl=1) == (
        "lost"
    )
    await call(store, "delete_thread", tid)
    assert await call(store, "renew_run", tid, owner="run_1", ttl=TTL) == "lost"


# --- reading runs --------------------------------------------------------------------


async def five_runs(call: Call, store: BaseStore) -> tuple[str, list[str]]:
    tid, _ = await assistant_thread(call, store)
    ids = [f"run_{i}" for i in range(5)]
    for run_id in ids:
        await begin(call, store, tid, run_id)
        await finish(call, store, tid, run_id)
    return tid, ids


async def test_list_runs_order_cursors_and_limit(store: BaseStore, call: Call) -> None:
    tid, ids = await five_runs(call, store)

    async def listed(**kwargs: Any) -> list[str]:
        return [r.id for r in await call(store, "list_runs", tid, **kwargs)]

    assert await listed() == ids[::-1]
    assert await listed(order="asc") == ids
    assert await listed(limit=2) == ids[:2:-1]
    assert await listed(order="asc", limit=2) == ids[:2]
    assert await listed(order="asc", after=ids[1]) == ids[2:]
    assert await listed(after=ids[1], limit=2) == [ids[4], ids[3]]
    assert await listed(before=ids[3]) == [ids[2], ids[1], ids[0]]
    # A limited page before a cursor is the one nearest it, in the order asked.
    assert await listed(order="asc", before=ids[3], limit=2) == ids[1:3]
    assert await listed(before=ids[3], limit=2) == [ids[2], ids[1]]
    assert await listed(order="asc", after=ids[0], before=ids[4]) == ids[1:4]
    assert await listed(order="asc", after=ids[4]) == []
    runs = await call(store, "list_runs", tid)
    for run in runs:
        assert run == await call(store, "get_run", tid, run.id)


async def test_list_runs_unknown_cursors_and_threads(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await five_runs(call, store)
    other, _ = await assistant_thread(call, store)
    await begin(call, store, other, "run_other")
    for cursor in ("run_unknown", "run_other"):
        for side in ("after", "before"):
            with pytest.raises(RunNotFoundError) as caught:
                await call(store, "list_runs", tid, **{side: cursor})
            assert caught.value.object_id == cursor
    with pytest.raises(ThreadNotFoundError):
        await call(store, "list_runs", UNKNOWN_THREAD)
    assert (
        await call(store, "list_runs", (await call(store, "create_thread", {})).id)
        == []
    )


async def test_get_run_of_another_thread_is_not_found(
    store: BaseStore, call: Call
) -> None:
    one, _ = await assistant_thread(call, store)
    two, _ = await assistant_thread(call, store)
    await begin(call, store, one, "run_one")
    for thread_id, run_id in ((two, "run_one"), (one, "run_unknown")):
        with pytest.raises(RunNotFoundError) as caught:
            await call(store, "get_run", thread_id, run_id)
        assert caught.value.object_id == run_id
    with pytest.raises(NotFoundError):
        await call(store, "get_run", UNKNOWN_THREAD, "run_one")
    assert (await call(store, "get_run", one, "run_one")).thread_id == one


async def test_list_run_messages_is_the_runs_own_in_order(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1", messages=[user("q1")])
    await finish(
        call,
        store,
        tid,
        "run_1",
        "in_progress",
        messages=[reply("step", "run_1"), tool_result("out", run_id="run_1")],
    )
    await call(store, "add_messages", tid, [user("in between")])
    await finish(call, store, tid, "run_1", messages=[reply("a1", "run_1")])
    await begin(call, store, tid, "run_2", messages=[user("q2")])
    await finish(call, store, tid, "run_2", messages=[reply("a2", "run_2")])
    one = await call(store, "list_run_messages", tid, "run_1")
    assert texts(one) == ["step", "out", "a1"]
    assert all(m.thread_id == tid and m.run_id == "run_1" for m in one)
    all_rows = {m.id: m for m in await call(store, "list_messages", tid)}
    assert one == [all_rows[m.id] for m in one]
    assert texts(await call(store, "list_run_messages", tid, "run_2")) == ["a2"]
    assert await call(store, "list_run_messages", tid, "run_none") == []
    with pytest.raises(ThreadNotFoundError):
        await call(store, "list_run_messages", UNKNOWN_THREAD, "run_1")


async def test_thread_usage_of_a_new_and_an_unknown_thread(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {})
    assert await call(store, "get_thread_usage", thread.id) == RunUsage()
    with pytest.raises(ThreadNotFoundError):
        await call(store, "get_thread_usage", UNKNOWN_THREAD)


# --- what hangs off a thread ---------------------------------------------------------


async def test_delete_thread_removes_its_runs(store: BaseStore, call: Call) -> None:
    tid, _ = await assistant_thread(call, store)
    keep, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_gone")
    await begin(call, store, keep, "run_kept")
    await call(store, "delete_thread", tid)
    with pytest.raises(NotFoundError):
        await call(store, "get_run", tid, "run_gone")
    assert [r.id for r in await call(store, "list_runs", keep)] == ["run_kept"]
    # The id is free again: the run's row went with its thread.
    fresh, _ = await assistant_thread(call, store)
    start = await begin(call, store, fresh, "run_gone")
    assert start.run.thread_id == fresh


async def test_clear_messages_leaves_runs(store: BaseStore, call: Call) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1", messages=[user("q")])
    saved = await finish(
        call,
        store,
        tid,
        "run_1",
        messages=[reply("a", "run_1")],
        usage=RunUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2),
    )
    assert await call(store, "clear_messages", tid) == 2
    assert await call(store, "get_run", tid, "run_1") == saved.run
    assert await call(store, "list_run_messages", tid, "run_1") == []
    assert (await call(store, "get_thread_usage", tid)).total_tokens == 2


# --- add_messages_if_idle ------------------------------------------------------------


async def test_add_if_idle_writes_on_an_idle_thread(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    stored = await call(store, "add_messages_if_idle", tid, [user("a"), user("b")])
    assert texts(stored) == ["a", "b"]
    assert texts(await call(store, "list_messages", tid)) == ["a", "b"]
    assert await free(call, store, tid)  # the write left no lease behind


async def test_add_if_idle_is_refused_while_a_run_is_active(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1", messages=[user("q")])
    with pytest.raises(ThreadBusyError) as caught:
        await call(store, "add_messages_if_idle", tid, [user("late")])
    assert (caught.value.thread_id, caught.value.run_id) == (tid, "run_1")
    assert "run_1" in str(caught.value)
    assert tid in str(caught.value)
    assert texts(await call(store, "list_messages", tid)) == ["q"]
    assert await call(store, "renew_run", tid, owner="run_1", ttl=TTL) == "held"

    await finish(call, store, tid, "run_1", messages=[reply("a", "run_1")])
    await call(store, "add_messages_if_idle", tid, [user("next")])
    assert texts(await call(store, "list_messages", tid)) == ["q", "a", "next"]


async def test_add_if_idle_is_refused_while_a_run_waits_for_tool_outputs(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_1", messages=[user("q")])
    await finish(
        call,
        store,
        tid,
        "run_1",
        "requires_action",
        messages=[reply("calling", "run_1")],
        required_action=WAITING,
    )
    assert await free(call, store, tid)  # no lease: the waiting run still refuses
    with pytest.raises(ThreadBusyError) as caught:
        await call(store, "add_messages_if_idle", tid, [user("late")])
    assert caught.value.run_id == "run_1"
    assert "requires_action" in str(caught.value)
    assert texts(await call(store, "list_messages", tid)) == ["q", "calling"]

    await call(store, "cancel_run", tid, "run_1")
    await call(store, "add_messages_if_idle", tid, [user("after")])
    assert texts(await call(store, "list_messages", tid))[-1] == "after"


async def test_add_if_idle_after_a_run_lapsed_writes(
    store: BaseStore, call: Call
) -> None:
    tid, _ = await assistant_thread(call, store)
    await begin(call, store, tid, "run_dead", ttl=SHORT)
    await asyncio.sleep(PAST)
    await call(store, "add_messages_if_idle", tid, [user("revived")])
    assert texts(await call(store, "list_messages", tid)) == ["revived"]
    assert (await call(store, "get_run", tid, "run_dead")).status == "expired"


async def test_add_if_idle_checks_like_add_messages(
    store: BaseStore, call: Call
) -> None:
    with pytest.raises(ThreadNotFoundError):
        await call(store, "add_messages_if_idle", UNKNOWN_THREAD, [user("x")])
    tid, _ = await assistant_thread(call, store)
    await call(store, "add_messages_if_idle", tid, [user("a", id="msg_a")])
    with pytest.raises(MessageIdConflictError):
        await call(
            store, "add_messages_if_idle", tid, [user("b"), user("a2", id="msg_a")]
        )
    assert texts(await call(store, "list_messages", tid)) == ["a"]
    assert await free(call, store, tid)


async def test_add_if_idle_in_scope_writes_and_out_of_scope_is_not_found(
    store: BaseStore, call: Call
) -> None:
    tid, assistant_id = await assistant_thread(call, store)
    scope = {"assistant_id": assistant_id}
    stored = await call(store, "add_messages_if_idle", tid, [user("a")], scope=scope)
    assert texts(stored) == ["a"]
    for other in ({"assistant_id": "asst_other"}, {"team": "x"}, {**scope, "t": "1"}):
        with pytest.raises(ThreadNotFoundError) as caught:
            await call(store, "add_messages_if_idle", tid, [user("b")], scope=other)
        assert caught.value.object_id == tid
    with pytest.raises(ThreadNotFoundError):
        await call(
            store, "add_messages_if_idle", UNKNOWN_THREAD, [user("x")], scope=scope
        )
    # Out of scope wins over busy: the thread is not found, not named busy.
    await begin(call, store, tid, "run_1", messages=[user("q")])
    with pytest.raises(ThreadNotFoundError):
        await call(store, "add_messages_if_idle", tid, [user("c")], scope={"t": "1"})
    with pytest.raises(ThreadBusyError):
        await call(store, "add_messages_if_idle", tid, [user("c")], scope=scope)
    assert texts(await call(store, "list_messages", tid)) == ["a", "q"]
    await finish(call, store, tid, "run_1", messages=[reply("r", "run_1")])
    assert await free(call, store, tid)
