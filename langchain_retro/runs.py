"""Runs as records: the Assistants API's Run and RunStep objects, read from a store.

A run is written by `ThreadRunner` through the store (`BaseStore.begin_run` and
`BaseStore.finish_run`); here it is read back, listed, cancelled, and taken apart
into its steps::

    run = Run.retrieve(store, thread.id, run_id)
    page = Run.list(store, thread.id, limit=10)       # newest first
    for step in run.steps(store):                     # what the run did, in order
        print(step.type, step.status, step.usage)
    Run.cancel(store, thread.id, run_id)              # cancelling, or cancelled
    print(Run.thread_usage(store, thread.id).total_tokens)

A run's steps are not stored: `steps_of` derives them from the messages the run
wrote. Each reply of the model is one step: ``tool_calls`` if it called tools (their
outputs are the run's tool messages answering each call), else ``message_creation``.
Every operation has an ``a``-prefixed async twin.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self, TypeVar

from langchain_core.messages import AIMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field

from langchain_retro.records import (
    BaseMessage,
    Page,
    _backwards,
    _check_listing,
    _check_str,
    _fetch_limit,
)
from langchain_retro.stores.base import BaseStore, Order, RunUsage, StoredRun

R = TypeVar("R", bound=StoredRun)

__all__ = [
    "MessageCreation",
    "MessageCreationDetails",
    "Run",
    "RunStep",
    "RunStepStatus",
    "RunUsage",
    "StepFunction",
    "StepToolCall",
    "ToolCallsDetails",
    "steps_of",
]

RunStepStatus = Literal["in_progress", "cancelled", "failed", "completed", "expired"]
"""A run step's status, as the Assistants API named them."""

_STEP_ENDS: dict[str, RunStepStatus] = {
    "cancelled": "cancelled",
    "failed": "failed",
    "expired": "expired",
    "completed": "completed",
    "incomplete": "completed",
}
"""The status of a tool_calls step whose outputs never came, by its run's end.

A run still going (or waiting in ``requires_action``) leaves it ``in_progress``;
one that ended completed or incomplete stopped after the model's calls, which the
step made."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MessageCreation(_Frozen):
    """The message a ``message_creation`` step wrote."""

    message_id: str
    """The message's id."""


class MessageCreationDetails(_Frozen):
    """The details of a step that wrote a message."""

    type: Literal["message_creation"] = "message_creation"
    """Always ``message_creation``."""
    message_creation: MessageCreation
    """The message written."""


class StepFunction(_Frozen):
    """A function a step called, and what it returned."""

    name: str
    """The function's name."""
    arguments: str
    """Its arguments, as JSON text."""
    output: str | None = None
    """What it returned (the tool message answering the call); ``None`` until then."""


class StepToolCall(_Frozen):
    """One tool call of a ``tool_calls`` step."""

    id: str
    """The tool call's id; its result answers it with this ``tool_call_id``."""
    type: Literal["function"] = "function"
    """Always ``function``."""
    function: StepFunction
    """The function, its arguments and its output."""


class ToolCallsDetails(_Frozen):
    """The details of a step that called tools."""

    type: Literal["tool_calls"] = "tool_calls"
    """Always ``tool_calls``."""
    tool_calls: list[StepToolCall]
    """The calls, in the order the model made them."""


class RunStep(_Frozen):
    """One step of a run, the Assistants API's RunStep: a reply of the model.

    Derived from the messages the run wrote (`steps_of`), never stored itself.
    """

    id: str
    """``step_`` and the id of the reply it stands for, less a leading ``msg_``."""
    object: Literal["thread.run.step"] = "thread.run.step"
    """Always ``thread.run.step``."""
    run_id: str
    """The run."""
    thread_id: str
    """The run's thread."""
    assistant_id: str | None
    """The assistant of the run."""
    type: Literal["message_creation", "tool_calls"]
    """``tool_calls`` for a reply that called tools, else ``message_creation``."""
    status: RunStepStatus
    """``completed``; a ``tool_calls`` step whose outputs have not all come is
    ``in_progress`` while its run goes on, or has its run's end status
    (``cancelled``, ``failed``, ``expired``)."""
    created_at: int
    """When the reply was stored, in Unix seconds."""
    completed_at: int | None
    """When the step completed: its reply, or its last tool output, was stored."""
    step_details: Annotated[
        MessageCreationDetails | ToolCallsDetails, Field(discriminator="type")
    ]
    """The message written, or the tool calls with their outputs."""
    usage: RunUsage | None
    """The tokens of the model call that gave the reply; ``None`` if not reported."""


class Run(StoredRun):
    """A run of a thread, the Assistants API's Run object, read from a store.

    Runs are written by `ThreadRunner`; this class reads, lists and cancels them.
    """

    object: Literal["thread.run"] = "thread.run"
    """Always ``thread.run``."""

    @classmethod
    def _of(cls, stored: StoredRun) -> Self:
        return cls.model_validate(dict(stored))

    @classmethod
    def retrieve(cls, store: BaseStore, thread_id: str, run_id: str, /) -> Self:
        """Read a run of a thread; raises `RunNotFoundError`."""
        _check_ids(thread_id, run_id)
        return cls._of(store.get_run(thread_id, run_id))

    @classmethod
    async def aretrieve(cls, store: BaseStore, thread_id: str, run_id: str, /) -> Self:
        """Async twin of `retrieve`."""
        _check_ids(thread_id, run_id)
        return cls._of(await store.aget_run(thread_id, run_id))

    @classmethod
    def cancel(cls, store: BaseStore, thread_id: str, run_id: str, /) -> Self:
        """Ask a run to stop; returns it ``cancelling``, or ``cancelled``.

        A run in progress becomes ``cancelling`` and its process ends it
        ``cancelled``; a run waiting in ``requires_action`` is ``cancelled`` at once.

        Raises:
            RunStateError: If the run already ended.
            RunNotFoundError: If there is no such run on the thread.
        """
        _check_ids(thread_id, run_id)
        return cls._of(store.cancel_run(thread_id, run_id))

    @classmethod
    async def acancel(cls, store: BaseStore, thread_id: str, run_id: str, /) -> Self:
        """Async twin of `cancel`."""
        _check_ids(thread_id, run_id)
        return cls._of(await store.acancel_run(thread_id, run_id))

    @classmethod
    def thread_usage(cls, store: BaseStore, thread_id: str, /) -> RunUsage:
        """The tokens all the runs of a thread used; raises `ThreadNotFoundError`."""
        _check_str(thread_id, "thread_id")
        return store.get_thread_usage(thread_id)

    @classmethod
    async def athread_usage(cls, store: BaseStore, thread_id: str, /) -> RunUsage:
        """Async twin of `thread_usage`."""
        _check_str(thread_id, "thread_id")
        return await store.aget_thread_usage(thread_id)

    def messages(self, store: BaseStore, /) -> builtins.list[BaseMessage]:
        """The messages the run wrote, in thread order, each as its record class.

        A run's own writes (its replies, and tool results given to it) are plain
        `ThreadMessage` records.
        """
        rows = store.list_run_messages(self.thread_id, self.id)
        return [BaseMessage._from(row) for row in rows]

    async def amessages(self, store: BaseStore, /) -> builtins.list[BaseMessage]:
        """Async twin of `messages`."""
        rows = await store.alist_run_messages(self.thread_id, self.id)
        return [BaseMessage._from(row) for row in rows]

    def steps(self, store: BaseStore, /) -> builtins.list[RunStep]:
        """The run's steps, in order: one per reply of the model (`steps_of`)."""
        return steps_of(self, self.messages(store))

    async def asteps(self, store: BaseStore, /) -> builtins.list[RunStep]:
        """Async twin of `steps`."""
        return steps_of(self, await self.amessages(store))

    @classmethod
    def list(
        cls,
        store: BaseStore,
        thread_id: str,
        /,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> Page[Self]:
        """List a thread's runs by creation, newest first.

        Cursors follow the listing's order, as in the Assistants API: ``after`` is
        the next page in ``order`` (older runs when newest first), ``before`` the
        page nearest the cursor on the other side.

        Args:
            store: The store.
            thread_id: The thread.
            after: A run id from a previous page's ``last_id``: the next page.
            before: A run id from a page's ``first_id``: the page before it.
            order: ``desc`` (newest first, default) or ``asc``.
            limit: Page size, 1 to 10,000.

        Raises:
            ThreadNotFoundError: If the thread does not exist.
            RunNotFoundError: If a cursor names no run of the thread.
        """
        _check_str(thread_id, "thread_id")
        window = _Window.of(order, after=after, before=before, limit=limit)
        rows = store.list_runs(
            thread_id,
            after=window.after,
            before=window.before,
            order=window.order,
            limit=window.limit,
        )
        return window.page(rows, limit, cls._of)

    @classmethod
    async def alist(
        cls,
        store: BaseStore,
        thread_id: str,
        /,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> Page[Self]:
        """Async twin of `list`."""
        _check_str(thread_id, "thread_id")
        window = _Window.of(order, after=after, before=before, limit=limit)
        rows = await store.alist_runs(
            thread_id,
            after=window.after,
            before=window.before,
            order=window.order,
            limit=window.limit,
        )
        return window.page(rows, limit, cls._of)


@dataclass(frozen=True)
class _Window:
    """A page of runs in listing order, as the store's creation-order read.

    `BaseStore.list_runs` bounds runs by creation (``after``: created later), as
    for messages; a listing's cursors follow its own order, so newest first they
    swap, and the page nearest a ``before`` cursor is read oldest first, then turned.
    """

    after: str | None
    before: str | None
    order: Order
    limit: int
    turn: bool
    """Whether the rows come oldest first and the page wants them newest first."""
    toward_start: bool
    """Whether the extra row that says more follow is the first one."""

    @classmethod
    def of(
        cls, order: Order, *, after: str | None, before: str | None, limit: int
    ) -> _Window:
        _check_listing(order, {"after": after, "before": before}, limit)
        fetch = _fetch_limit(limit)
        backwards = _backwards(after, before)
        if order == "asc":
            return cls(after, before, "asc", fetch, turn=False, toward_start=backwards)
        if backwards:
            return cls(before, None, "asc", fetch, turn=True, toward_start=True)
        return cls(before, after, "desc", fetch, turn=False, toward_start=False)

    def page(
        self, rows: Sequence[StoredRun], limit: int, build: Callable[[StoredRun], R]
    ) -> Page[R]:
        ordered = list(reversed(rows)) if self.turn else rows
        return Page.of_rows(ordered, limit, build, toward_start=self.toward_start)


def _check_ids(thread_id: object, run_id: object) -> None:
    _check_str(thread_id, "thread_id")
    _check_str(run_id, "run_id")


# --- steps, derived from the run's messages ------------------------------------------


@dataclass
class _Reply:
    """A reply of the model while its step is put together: its calls' outputs."""

    record: BaseMessage
    message: AIMessage
    outputs: list[tuple[str, int] | None] = field(default_factory=list)
    """Per call: the output and when it was stored, or ``None`` if not (yet) given."""


def _text(content: str | list[Any]) -> str:
    """A tool message's content as the output string of its call."""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


def _usage(message: AIMessage) -> RunUsage | None:
    reported = message.usage_metadata
    if reported is None:
        return None
    return RunUsage(
        prompt_tokens=reported["input_tokens"],
        completion_tokens=reported["output_tokens"],
        total_tokens=reported["total_tokens"],
    )


def _step(run: StoredRun, reply: _Reply) -> RunStep:
    record, message = reply.record, reply.message
    details: MessageCreationDetails | ToolCallsDetails
    if not message.tool_calls:
        status: RunStepStatus = "completed"
        done = [record.created_at]
        details = MessageCreationDetails(
            message_creation=MessageCreation(message_id=record.id)
        )
    else:
        answered = [out for out in reply.outputs if out is not None]
        if len(answered) == len(reply.outputs):
            status = "completed"
        else:
            status = _STEP_ENDS.get(run.status, "in_progress")
        done = [record.created_at, *(at for _, at in answered)]
        details = ToolCallsDetails(
            tool_calls=[
                StepToolCall(
                    id=call["id"] or "",
                    function=StepFunction(
                        name=call["name"],
                        arguments=json.dumps(call["args"], ensure_ascii=False),
                        output=None if out is None else out[0],
                    ),
                )
                for call, out in zip(message.tool_calls, reply.outputs, strict=True)
            ]
        )
    return RunStep(
        id=f"step_{record.id.removeprefix('msg_')}",
        run_id=run.id,
        thread_id=run.thread_id,
        assistant_id=record.assistant_id or run.assistant_id,
        type=details.type,
        status=status,
        created_at=record.created_at,
        completed_at=max(done) if status == "completed" else None,
        step_details=details,
        usage=_usage(message),
    )


def steps_of(run: StoredRun, messages: Sequence[BaseMessage]) -> list[RunStep]:
    """A run's steps, derived from the messages it wrote.

    Each AI message with tool calls is a ``tool_calls`` step, each output the first
    later tool message answering that call (by ``tool_call_id``); each AI message
    without tool calls is a ``message_creation`` step. Steps come in message order.

    Args:
        run: The run.
        messages: Its messages in thread order (`Run.messages`); messages whose
            ``run_id`` is not the run's are skipped.
    """
    replies: list[_Reply] = []
    # The call each tool call id names now: a model may reuse an id in a later reply.
    waiting: dict[str, tuple[_Reply, int]] = {}
    for record in messages:
        if record.run_id != run.id:
            continue
        message = record.message
        if isinstance(message, AIMessage):
            reply = _Reply(record, message, [None] * len(message.tool_calls))
            replies.append(reply)
            for index, call in enumerate(message.tool_calls):
                if call["id"]:
                    waiting[call["id"]] = (reply, index)
        elif isinstance(message, ToolMessage):
            found = waiting.pop(message.tool_call_id, None)
            if found is not None:
                answered, index = found
                answered.outputs[index] = (_text(message.content), record.created_at)
    return [_step(run, reply) for reply in replies]
