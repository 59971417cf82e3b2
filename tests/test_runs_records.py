"""Runs as records: Run and its steps, read from every store, sync and async."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from _run_records import (
    MODEL,
    ai,
    begin,
    completed_run,
    finish,
    required,
    tool,
    usage_of,
)
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_retro import (
    Assistant,
    BaseMessage,
    ChatCompletionThread,
    MetadataError,
    RetroValueError,
    Run,
    RunNotFoundError,
    RunStateError,
    RunStep,
    RunUsage,
    StoreClosedError,
    ThreadMessage,
    ThreadNotFoundError,
)
from langchain_retro.runs import (
    MessageCreationDetails,
    ToolCallsDetails,
    steps_of,
)
from langchain_retro.stores.base import IncompleteDetails, LastError, StoredRun

if TYPE_CHECKING:
    from _helpers import Caller as Call

    from langchain_retro.stores.base import BaseStore

pytest_plugins = ["_helpers"]


@pytest.fixture
async def thread(store: BaseStore, call: Call) -> ChatCompletionThread:
    bot = await call(Assistant, "create", store, model=MODEL)
    thread: ChatCompletionThread = await call(
        ChatCompletionThread, "create", store, assistant_id=bot.id
    )
    return thread


def _details(step: RunStep) -> ToolCallsDetails:
    assert isinstance(step.step_details, ToolCallsDetails)
    return step.step_details


# --- retrieve, list, cancel, usage ---------------------------------------------------


async def test_retrieve_reads_the_run_as_the_assistants_object(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    stored = await completed_run(call, store, thread.id, "run_one")
    run = await call(Run, "retrieve", store, thread.id, "run_one")
    assert isinstance(run, Run)
    assert run.object == "thread.run"
    assert run.model_dump(exclude={"object"}) == stored.model_dump()
    assert (run.status, run.model, run.assistant_id) == (
        "completed",
        MODEL,
        thread.assistant_id,
    )
    assert run.usage == RunUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    assert run.model_dump(mode="json")["object"] == "thread.run"


async def test_retrieve_unknown_run_or_thread_raises_not_found(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    with pytest.raises(RunNotFoundError, match="run_nope"):
        await call(Run, "retrieve", store, thread.id, "run_nope")
    other = await call(ChatCompletionThread, "create", store, assistant_id="asst_x")
    await completed_run(call, store, thread.id, "run_here")
    with pytest.raises(RunNotFoundError):  # a run is read on its own thread only
        await call(Run, "retrieve", store, other.id, "run_here")


async def test_list_pages_newest_first_with_cursors(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    ids = [f"run_{i}" for i in range(5)]
    for run_id in ids:
        await completed_run(call, store, thread.id, run_id)
    newest = ids[::-1]

    first = await call(Run, "list", store, thread.id, limit=2)
    assert [r.id for r in first.data] == newest[:2]
    assert all(isinstance(r, Run) for r in first.data)
    assert (first.has_more, first.first_id, first.last_id) == (True, *newest[:2])
    second = await call(Run, "list", store, thread.id, limit=2, after=first.last_id)
    assert [r.id for r in second.data] == newest[2:4]
    last = await call(Run, "list", store, thread.id, limit=2, after=second.last_id)
    assert [r.id for r in last.data] == newest[4:]
    assert last.has_more is False

    everything = await call(Run, "list", store, thread.id)
    assert [r.id for r in everything.data] == newest
    assert everything.has_more is False


async def test_list_oldest_first_and_before(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    ids = [f"run_{i}" for i in range(5)]
    for run_id in ids:
        await completed_run(call, store, thread.id, run_id)

    oldest = await call(Run, "list", store, thread.id, order="asc", limit=3)
    assert [r.id for r in oldest.data] == ids[:3]
    assert oldest.has_more is True
    rest = await call(
        Run, "list", store, thread.id, order="asc", limit=3, after=oldest.last_id
    )
    assert [r.id for r in rest.data] == ids[3:]
    assert rest.has_more is False

    # The page before a cursor is the one nearest it, in the listing's order.
    back = await call(Run, "list", store, thread.id, limit=2, before=ids[1])
    assert [r.id for r in back.data] == ids[3:1:-1]
    assert back.has_more is True
    newer = await call(Run, "list", store, thread.id, limit=2, before=back.first_id)
    assert [r.id for r in newer.data] == [ids[4]]
    assert newer.has_more is False
    between = await call(Run, "list", store, thread.id, after=ids[4], before=ids[0])
    assert [r.id for r in between.data] == ids[3:0:-1]
    oldest_between = await call(
        Run, "list", store, thread.id, order="asc", after=ids[0], before=ids[4]
    )
    assert [r.id for r in oldest_between.data] == ids[1:4]
    with pytest.raises(RunNotFoundError, match="run_nope"):
        await call(Run, "list", store, thread.id, after="run_nope")


async def test_list_of_a_thread_without_runs_is_empty(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    page = await call(Run, "list", store, thread.id)
    assert (page.data, page.has_more, page.first_id, page.last_id) == (
        [],
        False,
        None,
        None,
    )
    with pytest.raises(ThreadNotFoundError):
        await call(Run, "list", store, "thread_nope")


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((), {"limit": 0}, "limit"),
        ((), {"limit": 10_001}, "limit"),
        ((), {"limit": True}, "limit"),
        ((), {"order": "newest"}, "order"),
        ((), {"after": 7}, "after"),
        ((), {"before": ["run_1"]}, "before"),
    ],
)
async def test_list_refuses_bad_arguments_before_any_store_call(
    store: BaseStore,
    call: Call,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    match: str,
) -> None:
    await call(store, "close")  # any store call would now raise StoreClosedError
    with pytest.raises(RetroValueError, match=match):
        await call(Run, "list", store, "thread_1", *args, **kwargs)


@pytest.mark.parametrize("method", ["retrieve", "cancel"])
async def test_ids_must_be_strings_before_any_store_call(
    store: BaseStore, call: Call, method: str
) -> None:
    await call(store, "close")
    with pytest.raises(RetroValueError, match="thread_id"):
        await call(Run, method, store, 1, "run_1")
    with pytest.raises(RetroValueError, match="run_id"):
        await call(Run, method, store, "thread_1", None)
    with pytest.raises(RetroValueError, match="thread_id"):
        await call(Run, "thread_usage", store, b"thread_1")
    with pytest.raises(StoreClosedError):  # and well-typed ids do reach the store
        await call(Run, method, store, "thread_1", "run_1")


async def test_cancel_a_running_run_makes_it_cancelling(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    await begin(call, store, thread.id, "run_busy", HumanMessage("hi"))
    cancelled = await call(Run, "cancel", store, thread.id, "run_busy")
    assert isinstance(cancelled, Run)
    assert cancelled.status == "cancelling"
    again = await call(Run, "cancel", store, thread.id, "run_busy")
    assert again.status == "cancelling"
    read = await call(Run, "retrieve", store, thread.id, "run_busy")
    assert read.status == "cancelling"


async def test_cancel_a_waiting_run_cancels_it_and_its_waiting_step(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    start = await begin(call, store, thread.id, "run_wait", HumanMessage("2+3?"))
    calls = [("call_1", "add", {"a": 2, "b": 3})]
    await finish(
        call,
        store,
        start.run,
        "requires_action",
        ai(calls=calls, tokens=(5, 1)),
        required_action=required(*calls),
    )
    run = await call(Run, "retrieve", store, thread.id, "run_wait")
    assert run.required_action == required(*calls)
    (waiting,) = await call(run, "steps", store)
    assert (waiting.type, waiting.status, waiting.completed_at) == (
        "tool_calls",
        "in_progress",
        None,
    )

    cancelled = await call(Run, "cancel", store, thread.id, "run_wait")
    assert cancelled.status == "cancelled"
    assert cancelled.cancelled_at is not None
    assert cancelled.required_action is None
    (step,) = await call(cancelled, "steps", store)
    assert step.status == "cancelled"
    assert _details(step).tool_calls[0].function.output is None


async def test_cancel_an_ended_run_raises_run_state_error(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    await completed_run(call, store, thread.id, "run_done")
    with pytest.raises(RunStateError, match="run_done") as caught:
        await call(Run, "cancel", store, thread.id, "run_done")
    assert (caught.value.run_id, caught.value.status) == ("run_done", "completed")
    with pytest.raises(RunNotFoundError):
        await call(Run, "cancel", store, thread.id, "run_nope")
    run = await call(Run, "retrieve", store, thread.id, "run_done")
    assert run.status == "completed"


async def test_thread_usage_adds_up_every_run(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    assert await call(Run, "thread_usage", store, thread.id) == RunUsage()
    first = [ai("a", tokens=(10, 4))]
    second = [ai(calls=[("c", "f", {})], tokens=(7, 3)), ai("b", tokens=(12, 5))]
    await completed_run(call, store, thread.id, "run_a", *first)
    await completed_run(call, store, thread.id, "run_b", *second)
    usage = await call(Run, "thread_usage", store, thread.id)
    assert usage == usage_of(*first, *second)
    assert usage.total_tokens == 41
    run_b = await call(Run, "retrieve", store, thread.id, "run_b")
    assert run_b.usage == usage_of(*second)


# --- what a run wrote: messages and steps --------------------------------------------


async def test_a_run_with_tools_inside_has_a_step_per_reply(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    start = await begin(call, store, thread.id, "run_tools", HumanMessage("2+3, 4+4?"))
    calls = [("call_a", "add", {"a": 2, "b": 3}), ("call_b", "add", {"a": 4, "b": 4})]
    asked = ai("adding", calls=calls, tokens=(20, 8))
    answer = ai("5 and 8", tokens=(30, 4))
    await finish(call, store, start.run, "in_progress", asked)
    await finish(
        call, store, start.run, "in_progress", tool("call_b", "8"), tool("call_a", "5")
    )
    await finish(call, store, start.run, "completed", answer)

    run = await call(Run, "retrieve", store, thread.id, "run_tools")
    messages = await call(run, "messages", store)
    assert [type(m.message) for m in messages] == [
        AIMessage,
        ToolMessage,
        ToolMessage,
        AIMessage,
    ]
    assert all(isinstance(m, ThreadMessage) for m in messages)
    assert {(m.run_id, m.assistant_id) for m in messages} == {
        ("run_tools", thread.assistant_id)
    }

    called, replied = await call(run, "steps", store)
    assert called.id == "step_" + messages[0].id.removeprefix("msg_")
    assert (called.object, called.run_id, called.thread_id) == (
        "thread.run.step",
        "run_tools",
        thread.id,
    )
    assert (called.type, called.status) == ("tool_calls", "completed")
    assert called.assistant_id == thread.assistant_id
    assert called.created_at == messages[0].created_at
    assert called.completed_at == max(m.created_at for m in messages[:3])
    assert [
        (c.id, c.function.name, c.function.arguments, c.function.output)
        for c in _details(called).tool_calls
    ] == [
        ("call_a", "add", '{"a": 2, "b": 3}', "5"),
        ("call_b", "add", '{"a": 4, "b": 4}', "8"),
    ]
    assert called.usage == usage_of(asked)

    assert (replied.type, replied.status) == ("message_creation", "completed")
    assert isinstance(replied.step_details, MessageCreationDetails)
    assert replied.step_details.message_creation.message_id == messages[3].id
    assert replied.usage == usage_of(answer)
    assert run.usage == usage_of(asked, answer)


async def test_a_resumed_run_gets_its_outputs_from_the_tool_results(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    start = await begin(call, store, thread.id, "run_resume", HumanMessage("2+3?"))
    calls = [("call_1", "add", {"a": 2, "b": 3})]
    await finish(
        call,
        store,
        start.run,
        "requires_action",
        ai(calls=calls),
        required_action=required(*calls),
    )
    resumed = await begin(
        call, store, thread.id, "owner_2", tool("call_1", "5"), resume=True
    )
    assert (resumed.resumed, resumed.run.id) == (True, "run_resume")
    await finish(call, store, resumed.run, "completed", ai("It is 5."), owner="owner_2")

    run = await call(Run, "retrieve", store, thread.id, "run_resume")
    assert run.status == "completed"
    called, replied = await call(run, "steps", store)
    assert called.status == "completed"
    assert _details(called).tool_calls[0].function.output == "5"
    assert called.usage is None  # the crafted reply reported no usage
    assert replied.type == "message_creation"
    messages = await call(run, "messages", store)
    assert [m.role for m in messages] == ["assistant", "tool", "assistant"]
    assert {m.run_id for m in messages} == {"run_resume"}


async def test_failed_and_incomplete_runs_keep_why(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    start = await begin(call, store, thread.id, "run_fail", HumanMessage("x"))
    error = LastError(code="server_error", message="upstream 500")
    await finish(call, store, start.run, "failed", last_error=error)
    failed = await call(Run, "retrieve", store, thread.id, "run_fail")
    assert (failed.status, failed.last_error) == ("failed", error)
    assert failed.failed_at is not None
    assert await call(failed, "steps", store) == []

    start = await begin(call, store, thread.id, "run_short", HumanMessage("y"))
    calls = [("call_9", "look", {"q": "y"})]
    await finish(
        call,
        store,
        start.run,
        "incomplete",
        ai(calls=calls),
        incomplete_details=IncompleteDetails(reason="max_steps"),
    )
    short = await call(Run, "retrieve", store, thread.id, "run_short")
    assert short.incomplete_details == IncompleteDetails(reason="max_steps")
    (step,) = await call(short, "steps", store)
    assert step.status == "completed"  # the model's calls were made; none ran


async def test_messages_of_other_writes_have_no_run(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    posted = await call(
        ThreadMessage, "create", store, thread_id=thread.id, message=HumanMessage("x")
    )
    assert (posted.run_id, posted.assistant_id) == (None, None)
    await completed_run(call, store, thread.id, "run_reply")
    page = await call(BaseMessage, "list", store, thread.id)
    assert [(m.role, m.run_id) for m in page.data] == [
        ("user", None),
        ("user", None),
        ("assistant", "run_reply"),
    ]
    reply = page.data[-1]
    assert reply.assistant_id == thread.assistant_id
    again = await call(ThreadMessage, "retrieve", store, thread.id, reply.id)
    assert (again.run_id, again.assistant_id) == ("run_reply", thread.assistant_id)


async def test_run_fields_of_a_message_are_read_only(
    store: BaseStore, call: Call, thread: ChatCompletionThread
) -> None:
    with pytest.raises(RetroValueError, match=r"run_id.*only a run writes"):
        await call(
            ThreadMessage,
            "create",
            store,
            thread_id=thread.id,
            message=HumanMessage("x"),
            run_id="run_fake",
        )
    with pytest.raises(RetroValueError, match="assistant_id"):
        await call(
            ThreadMessage,
            "create",
            store,
            thread_id=thread.id,
            message=HumanMessage("x"),
            assistant_id="asst_fake",
        )
    assert await call(store, "count_messages", thread.id) == 0
    await completed_run(call, store, thread.id, "run_1")
    reply = (await call(BaseMessage, "list", store, thread.id)).data[-1]
    for field in ("run_id", "assistant_id"):
        with pytest.raises(MetadataError, match=field):
            await call(reply, "update", store, **{field: "other"})
    kept = await call(ThreadMessage, "retrieve", store, thread.id, reply.id)
    assert kept.run_id == "run_1"


# --- steps_of: pure, over hand-built messages ----------------------------------------

RUN = "run_pure"


def _run(status: str = "completed", assistant_id: str | None = "asst_1") -> Run:
    return Run(
        id=RUN,
        thread_id="thread_1",
        status=status,  # type: ignore[arg-type]
        created_at=100,
        assistant_id=assistant_id,
    )


def _msg(
    message_id: str,
    message: AIMessage | ToolMessage | HumanMessage,
    at: int,
    *,
    run_id: str | None = RUN,
    assistant_id: str | None = None,
) -> ThreadMessage:
    return ThreadMessage(
        id=message_id,
        thread_id="thread_1",
        created_at=at,
        message=message,
        run_id=run_id,
        assistant_id=assistant_id,
    )


def test_steps_of_a_plain_reply() -> None:
    reply = _msg("msg_abc", ai("hi", tokens=(9, 2)), 105, assistant_id="asst_2")
    (step,) = steps_of(_run(), [_msg("msg_in", HumanMessage("hi"), 101), reply])
    assert step == RunStep(
        id="step_abc",
        run_id=RUN,
        thread_id="thread_1",
        assistant_id="asst_2",  # the message's own, over the run's
        type="message_creation",
        status="completed",
        created_at=105,
        completed_at=105,
        step_details=MessageCreationDetails(
            message_creation={"message_id": "msg_abc"}  # type: ignore[arg-type]
        ),
        usage=RunUsage(prompt_tokens=9, completion_tokens=2, total_tokens=11),
    )
    assert step.model_dump(mode="json")["object"] == "thread.run.step"


def test_step_id_of_a_caller_given_message_id() -> None:
    (step,) = steps_of(_run(), [_msg("reply-7", ai("x"), 1)])
    assert step.id == "step_reply-7"
    assert step.usage is None
    assert step.assistant_id == "asst_1"  # the run's, as the message names none


def test_outputs_come_from_the_first_answer_to_each_call() -> None:
    calls = [("c1", "f", {"x": 1}), ("c2", "g", {})]
    messages = [
        _msg("msg_1", ai(calls=calls), 10),
        _msg("msg_2", tool("c2", "two"), 11),
        _msg("msg_3", tool("c1", "one"), 12),
        _msg("msg_4", tool("c1", "again"), 13),  # a second answer is ignored
        _msg("msg_5", tool("c_unknown", "?"), 14),
        _msg("msg_6", ToolMessage("other run", tool_call_id="c1"), 15, run_id="run_x"),
    ]
    (step,) = steps_of(_run(), messages)
    assert step.status == "completed"
    assert step.completed_at == 12
    assert [c.function.output for c in _details(step).tool_calls] == ["one", "two"]
    assert [c.function.arguments for c in _details(step).tool_calls] == [
        '{"x": 1}',
        "{}",
    ]


def test_a_reused_call_id_is_answered_in_its_latest_reply() -> None:
    messages = [
        _msg("msg_1", ai(calls=[("call_0", "f", {})]), 1),
        _msg("msg_2", tool("call_0", "first"), 2),
        _msg("msg_3", ai(calls=[("call_0", "f", {"n": 2})]), 3),
        _msg("msg_4", tool("call_0", "second"), 4),
        _msg("msg_5", ai("done"), 5),
    ]
    steps = steps_of(_run(), messages)
    assert [s.type for s in steps] == ["tool_calls", "tool_calls", "message_creation"]
    assert [_details(s).tool_calls[0].function.output for s in steps[:2]] == [
        "first",
        "second",
    ]


def test_messages_of_another_run_make_no_steps() -> None:
    messages = [
        _msg("msg_1", ai("mine"), 1),
        _msg("msg_2", ai("theirs"), 2, run_id="run_other"),
        _msg("msg_3", ai("posted"), 3, run_id=None),
    ]
    assert [s.id for s in steps_of(_run(), messages)] == ["step_1"]


def test_a_structured_tool_output_is_json_text() -> None:
    messages = [
        _msg("msg_1", ai(calls=[("c", "f", {})]), 1),
        _msg(
            "msg_2", ToolMessage([{"type": "text", "text": "é"}], tool_call_id="c"), 2
        ),
    ]
    (step,) = steps_of(_run(), messages)
    output = _details(step).tool_calls[0].function.output
    assert output == '[{"type": "text", "text": "é"}]'


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("queued", "in_progress"),
        ("in_progress", "in_progress"),
        ("requires_action", "in_progress"),
        ("cancelling", "in_progress"),
        ("cancelled", "cancelled"),
        ("failed", "failed"),
        ("expired", "expired"),
        ("completed", "completed"),
        ("incomplete", "completed"),
    ],
)
def test_a_step_without_all_its_outputs_takes_its_runs_state(
    status: str, expected: str
) -> None:
    calls = [("c1", "f", {}), ("c2", "f", {})]
    messages = [_msg("msg_1", ai(calls=calls), 1), _msg("msg_2", tool("c1", "ok"), 2)]
    (step,) = steps_of(_run(status), messages)
    assert step.status == expected
    assert step.completed_at == (2 if expected == "completed" else None)
    outputs = [c.function.output for c in _details(step).tool_calls]
    assert outputs == ["ok", None]


def test_a_step_with_all_its_outputs_is_completed_whatever_its_run() -> None:
    messages = [
        _msg("msg_1", ai(calls=[("c", "f", {})]), 1),
        _msg("m2", tool("c", "x"), 3),
    ]
    (step,) = steps_of(_run("cancelled"), messages)
    assert (step.status, step.completed_at) == ("completed", 3)


def test_no_messages_no_steps() -> None:
    assert steps_of(_run(), []) == []


def test_run_is_a_stored_run_with_its_object_name() -> None:
    run = _run("in_progress")
    assert isinstance(run, StoredRun)
    assert Run.model_validate(run.model_dump()) == run
    with pytest.raises(ValueError, match="object"):
        Run(id="r", thread_id="t", status="completed", created_at=1, object="run")  # type: ignore[arg-type]
