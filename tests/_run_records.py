"""Runs written through the store protocol, as a runner writes them, for the tests.

``begin_run`` then ``finish_run`` with crafted replies: AI messages with tool calls
and ``usage_metadata``, and the tool messages answering them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.messages import BaseMessage as LCBaseMessage

from langchain_retro import _messages
from langchain_retro.stores.base import (
    FunctionCall,
    NewMessage,
    NewRun,
    RequiredAction,
    RequiredToolCall,
    RunSaved,
    RunStart,
    RunUpdate,
    RunUsage,
    StoredRun,
    SubmitToolOutputs,
)

if TYPE_CHECKING:
    from _helpers import Caller

    from langchain_retro.stores.base import BaseStore, RunStatus

MODEL = "gpt-4o-mini"
TTL = 60.0


def ai(
    text: str = "",
    *,
    calls: Sequence[tuple[str, str, dict[str, Any]]] = (),
    tokens: tuple[int, int] | None = None,
) -> AIMessage:
    """An AI reply; ``calls`` as ``(id, name, args)``; ``tokens`` as (in, out)."""
    usage = None
    if tokens is not None:
        usage = {
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "total_tokens": sum(tokens),
        }
    return AIMessage(
        text,
        tool_calls=[{"id": i, "name": n, "args": a} for i, n, a in calls],
        usage_metadata=usage,
    )


def tool(call_id: str, output: str) -> ToolMessage:
    """A tool result answering ``call_id``."""
    return ToolMessage(output, tool_call_id=call_id)


def usage_of(*messages: AIMessage) -> RunUsage:
    """The tokens the replies report."""
    total = RunUsage()
    for message in messages:
        meta = message.usage_metadata
        assert meta is not None
        total += RunUsage(
            prompt_tokens=meta["input_tokens"],
            completion_tokens=meta["output_tokens"],
            total_tokens=meta["total_tokens"],
        )
    return total


def written(
    run_id: str | None, *messages: LCBaseMessage, assistant_id: str | None = None
) -> list[NewMessage]:
    """Messages as a run writes them: tagged with the run and its assistant."""
    return [
        NewMessage(
            role=_messages.role_of(m),
            payload=_messages.to_payload(m),
            run_id=run_id,
            assistant_id=assistant_id if run_id is not None else None,
        )
        for m in messages
    ]


def required(*calls: tuple[str, str, dict[str, Any]]) -> RequiredAction:
    """What a run waits for: the results of these ``(id, name, args)`` calls."""
    return RequiredAction(
        submit_tool_outputs=SubmitToolOutputs(
            tool_calls=[
                RequiredToolCall(id=i, function=FunctionCall(name=n, arguments=str(a)))
                for i, n, a in calls
            ]
        )
    )


async def begin(
    call: Caller,
    store: BaseStore,
    thread_id: str,
    run_id: str,
    *inputs: LCBaseMessage,
    resume: bool = False,
) -> RunStart:
    """Start run ``run_id`` (or, with ``resume``, continue the waiting one)."""
    start: RunStart | None = await call(
        store,
        "begin_run",
        thread_id,
        owner=run_id,
        ttl=TTL,
        run=None if resume else NewRun(id=run_id, model=MODEL),
        messages=written(None, *inputs),
        resume=resume,
    )
    assert start is not None, "the thread's lease is held"
    return start


async def finish(
    call: Caller,
    store: BaseStore,
    run: StoredRun,
    status: RunStatus,
    *replies: LCBaseMessage,
    owner: str | None = None,
    **update: Any,
) -> RunSaved:
    """Write a step (``in_progress``) or the end of ``run`` with its messages."""
    usage = [m for m in replies if isinstance(m, AIMessage) and m.usage_metadata]
    saved: RunSaved = await call(
        store,
        "finish_run",
        run.thread_id,
        owner=owner or run.id,
        run_id=run.id,
        update=RunUpdate(
            status=status, usage=usage_of(*usage) if usage else None, **update
        ),
        messages=written(run.id, *replies, assistant_id=run.assistant_id),
    )
    assert saved.run.id == run.id
    return saved


async def completed_run(
    call: Caller, store: BaseStore, thread_id: str, run_id: str, *replies: AIMessage
) -> StoredRun:
    """A run answering "hi" with ``replies`` (a plain reply if none), completed."""
    start = await begin(call, store, thread_id, run_id, HumanMessage("hi"))
    saved = await finish(
        call, store, start.run, "completed", *(replies or (ai("hello", tokens=(3, 2)),))
    )
    return saved.run
