"""Runs: ``/v1/threads/{thread_id}/runs...``, ``/v1/threads/runs``, and run steps.

A run is completed in the background by the run engine with its assistant's model,
temperature, top_p, instructions and tools, the run's overrides winning. Without
``stream`` the run is answered at once and polled (``GET`` answers with an
``openai-poll-after-ms`` header while it goes on; a ``GET`` of the SDK's polling
helpers waits for the run to stop first, see `retrieve_run`); with ``stream: true``
the answer is its server-sent events (`events`). Function tools end a run in
``requires_action``; ``submit_tool_outputs`` continues it.

A thread runs one run at a time, across workers: a run asked for while another is
active (queued, in progress, cancelling or waiting for tool outputs) is a 400
naming the active run, as OpenAI answered (`_busy`).

A run never reads ``queued`` here, unlike OpenAI's: the engine creates the record
in the transaction that takes the thread's lease, as it starts the run, so there
is no moment a stored run waits for a worker (a worker at ``max_runs`` answers
429 instead of queueing). A stream still sends ``thread.run.queued`` first, as
OpenAI's did.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.messages import ToolMessage

from langchain_retro._engine import RunRequest
from langchain_retro._metadata import MetadataLimits
from langchain_retro.errors import (
    RunNotFoundError,
    RunStateError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from langchain_retro.records import (
    BaseAssistant,
    BaseThread,
    ChatCompletionThread,
    ThreadMessage,
)
from langchain_retro.runs import Run
from langchain_retro.server.context import Context, Ctx
from langchain_retro.server.direct import DirectRouter
from langchain_retro.server.errors import InvalidRequestError, not_found
from langchain_retro.server.events import RunEvents
from langchain_retro.server.objects import (
    list_object,
    run_object,
    step_object,
    thread_object,
)
from langchain_retro.server.pagination import ListParams, page_of
from langchain_retro.server.requests import (
    CreateRun,
    CreateThread,
    CreateThreadAndRun,
    ModifyMetadata,
    SubmitToolOutputs,
    check_metadata,
    check_tool_resources,
    function_tools,
)
from langchain_retro.server.routes._busy import (
    LeaseWait,
    busy_run,
    run_refused,
)
from langchain_retro.server.routes._common import ok
from langchain_retro.server.routes.threads import create_thread, new_messages
from langchain_retro.stores.base import (
    ACTIVE_RUN_STATUSES,
    BUSY_RUN_STATUSES,
    NewMessage,
    RequiredAction,
    StoredRun,
    TruncationStrategy,
)

__all__ = ["direct", "router"]

router = APIRouter()
direct = DirectRouter()
"""The routes served directly (`langchain_retro.server.direct`): creating a run on
a thread and reading one, what the openai SDK's ``create_and_poll`` repeats."""

_SHORTEST_POLL_WAIT = 0.05
"""A polling helper's wait (seconds) below which a ``GET`` answers at once."""
_STORE_POLL_FIRST = 0.005
"""Seconds before re-reading a waited-for run of another worker, at first..."""
_STORE_POLL_LONGEST = 0.1
"""...doubling up to this."""

_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


# --- what a run is made of ---------------------------------------------------------


def _call_kwargs(
    assistant: BaseAssistant,
    thread: ChatCompletionThread,
    body: CreateRun | CreateThreadAndRun,
    tools: list[dict[str, Any]],
) -> dict[str, Any]:
    """The model request's parameters: the run's, else the assistant's."""
    call: dict[str, Any] = {
        "model": body.model or thread.chat_completion_model or assistant.model
    }
    for name in (
        "temperature",
        "top_p",
        "max_completion_tokens",
        "reasoning_effort",
        "response_format",
    ):
        value = getattr(body, name)
        if value is None:
            value = getattr(assistant, name, None)
        if value is not None and value != "auto":
            call[name] = value
    call.update(_tool_kwargs(tools, body.tool_choice, body.parallel_tool_calls))
    return call


def _tool_kwargs(
    tools: list[dict[str, Any]], choice: Any, parallel: bool | None
) -> dict[str, Any]:
    """The model request's tool parameters; none without tools."""
    if not tools:
        return {}
    call: dict[str, Any] = {"tools": list(tools)}
    if choice is not None:
        call["tool_choice"] = choice
    if parallel is not None:
        call["parallel_tool_calls"] = parallel
    return call


def _run_request(
    thread_id: str,
    assistant: BaseAssistant,
    thread: ChatCompletionThread,
    body: CreateRun | CreateThreadAndRun,
    messages: list[NewMessage],
) -> tuple[RunRequest, list[dict[str, Any]]]:
    """The engine's request for a new run, and the tools it offers."""
    if body.tools is not None:
        tools = function_tools(body.tools)
    else:
        tools = list(getattr(assistant, "tools", []))
    options: dict[str, Any] = {}
    instructions = (
        body.instructions if body.instructions is not None else assistant.instructions
    )
    if instructions is not None:
        options["instructions"] = instructions
    extra = getattr(body, "additional_instructions", None)
    if extra:
        options["additional_instructions"] = extra
    if body.max_prompt_tokens is not None:
        options["max_prompt_tokens"] = body.max_prompt_tokens
    if body.truncation_strategy is not None:
        options["truncation_strategy"] = TruncationStrategy(
            **body.truncation_strategy.model_dump()
        )
    if body.metadata:
        options["metadata"] = dict(body.metadata)
    request = RunRequest(
        thread_id=thread_id,
        messages=messages,
        options=options,
        call_kwargs=_call_kwargs(assistant, thread, body, tools),
    )
    return request, tools


def _resumed_request(
    run: StoredRun, messages: list[NewMessage]
) -> tuple[RunRequest, list[dict[str, Any]]]:
    """The engine's request continuing a run with its tool outputs."""
    call: dict[str, Any] = {}
    for name in (
        "model",
        "temperature",
        "top_p",
        "max_completion_tokens",
        "response_format",
    ):
        value = getattr(run, name)
        if value is not None:
            call[name] = value
    call.update(_tool_kwargs(list(run.tools), run.tool_choice, run.parallel_tool_calls))
    options: dict[str, Any] = {}
    for name in ("instructions", "additional_instructions", "max_prompt_tokens"):
        value = getattr(run, name)
        if value is not None:
            options[name] = value
    if run.truncation_strategy is not None:
        options["truncation_strategy"] = run.truncation_strategy
    request = RunRequest(
        thread_id=run.thread_id, messages=messages, options=options, call_kwargs=call
    )
    return request, list(run.tools)


def _tool_messages(
    thread_id: str,
    action: RequiredAction,
    body: SubmitToolOutputs,
    limits: MetadataLimits,
) -> list[NewMessage]:
    """The tool outputs as the messages that continue a run waiting on ``action``.

    Raises:
        InvalidRequestError: Unless there is one output for each call the run
            waits for, naming the ids expected, unknown and missing.
    """
    calls = {c.id: c for c in action.submit_tool_outputs.tool_calls}
    given = [output.tool_call_id for output in body.tool_outputs]
    unknown = [i for i in given if i not in calls]
    missing = [i for i in calls if i not in given]
    if unknown or missing or len(set(given)) != len(given):
        raise InvalidRequestError(
            f"Expected tool outputs for call ids {sorted(calls)}, got {given}"
            + (f"; unknown: {unknown}" if unknown else "")
            + (f"; missing: {missing}" if missing else "")
            + ".",
            param="tool_outputs",
        )
    return [
        ThreadMessage(
            thread_id=thread_id,
            message=ToolMessage(
                content=output.output,
                tool_call_id=output.tool_call_id,
                name=calls[output.tool_call_id].function.name,
            ),
        )._new(limits)
        for output in body.tool_outputs
    ]


async def _first_failure(*reads: Awaitable[Any]) -> list[Any]:
    """Run reads at once; raise the first failure in the order given, else results.

    A request's reads (its thread and its run...) do not depend on each other,
    and each may be a round trip: side by side, they cost one. Failures keep the
    order of the sequential checks: an unknown (or another owner's) thread is its
    404 whatever else failed.
    """
    results = await asyncio.gather(*reads, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def _run_thread(
    ctx: Context, thread: BaseThread, assistant_id: str
) -> ChatCompletionThread:
    """The thread as a run thread, its ``assistant_id`` the run's assistant."""
    if not isinstance(thread, ChatCompletionThread):
        raise InvalidRequestError(
            f"Thread {thread.id} is a {type(thread).__name__} record, not a "
            "ChatCompletionThread, so it cannot be run: only threads made through "
            "this API, or as ChatCompletionThread in Python, have runs.",
            param="thread_id",
        )
    if thread.assistant_id != assistant_id:
        thread = await thread.aupdate(ctx.store, assistant_id=assistant_id)
    return thread


async def _start(
    ctx: Context,
    request: RunRequest,
    tools: list[dict[str, Any]],
    *,
    stream: bool,
    first: tuple[str, dict[str, Any]] | None = None,
    resuming: bool = False,
) -> JSONResponse | StreamingResponse:
    """Start (or, ``resuming``, continue) the run; answer with it, or its stream.

    A lease taken by a message write is waited for; one held by a run is a 400.
    """
    statuses = ACTIVE_RUN_STATUSES if resuming else BUSY_RUN_STATUSES
    waiting = LeaseWait(ctx.store, request.thread_id, run_refused, statuses)
    while True:
        events = RunEvents() if stream else None
        if events is not None and first is not None:
            events.emit(*first)
        try:
            run = await ctx.state.runs.start(
                request, tools=tools, owner=ctx.owner, events=events
            )
        except ThreadBusyError:
            await waiting.wait()
        else:
            break
    if events is None:
        return ok(run_object(run), _poll_headers(ctx, run))
    return StreamingResponse(
        _stream(events), media_type="text/event-stream", headers=_STREAM_HEADERS
    )


async def _stream(events: RunEvents) -> AsyncIterator[str]:
    """A run's events, as the response's body, until the stream closes.

    The events already waiting go out together: one write for the server and one
    read for the client, not one each. A run's events come in bursts (three as it
    starts, five with the first delta, four at the end); later deltas still go out
    as they come.
    """
    queue = events.queue
    while True:
        item = await queue.get()
        if item is None:
            return
        ready = [item]
        while not queue.empty():
            item = queue.get_nowait()
            if item is None:
                yield "".join(ready)
                return
            ready.append(item)
        yield "".join(ready)


def _poll_headers(ctx: Context, run: StoredRun) -> dict[str, str]:
    """``openai-poll-after-ms`` while the run goes on; nothing once it ended."""
    if run.status in ACTIVE_RUN_STATUSES:
        return {"openai-poll-after-ms": str(ctx.state.settings.poll_after_ms)}
    return {}


def _check_run_body(body: CreateRun | CreateThreadAndRun, request: Request) -> None:
    """What a new run's request can be refused for before anything is read.

    Raises:
        InvalidRequestError: For metadata over the limits, ``include[]``, or tools
            other than function tools.
    """
    check_metadata(body.metadata)
    _check_no_include(request)
    if body.tools is not None:
        function_tools(body.tools)


# --- routes ----------------------------------------------------------------------


@direct.post("/v1/threads/{thread_id}/runs")
async def create_run(
    thread_id: str, body: CreateRun, request: Request, ctx: Context
) -> JSONResponse | StreamingResponse:
    """Create a run on a thread."""
    _check_run_body(body, request)
    additional = new_messages(
        ctx, thread_id, body.additional_messages or [], "additional_messages"
    )
    # One store call reads what the run is checked against; the failures keep the
    # order of the checks: an unknown (or another owner's) thread is its 404.
    setup = await ctx.store.aget_run_setup(thread_id, body.assistant_id)
    thread = ctx.seen_thread(thread_id, setup.thread)
    assistant = ctx.seen_assistant(body.assistant_id, setup.assistant)
    active = busy_run(setup.newest_run)
    if active is not None:  # refused before the thread is pointed at the assistant
        raise run_refused(thread_id, active.id)
    run_thread = await _run_thread(ctx, thread, assistant.id)
    run_request, tools = _run_request(
        thread_id, assistant, run_thread, body, additional
    )
    return await _start(ctx, run_request, tools, stream=bool(body.stream))


@router.post("/v1/threads/runs", response_model=None)
async def create_thread_and_run(
    body: CreateThreadAndRun, request: Request, ctx: Ctx
) -> JSONResponse | StreamingResponse:
    """Create a thread and run it."""
    _check_run_body(body, request)
    check_tool_resources(body.tool_resources, "tool_resources")
    assistant = await ctx.assistant(body.assistant_id)
    thread = await create_thread(ctx, body.thread or CreateThread(), "thread.")
    run_thread = await _run_thread(ctx, thread, assistant.id)
    run_request, tools = _run_request(thread.id, assistant, run_thread, body, [])
    first = ("thread.created", thread_object(run_thread))
    return await _start(ctx, run_request, tools, stream=bool(body.stream), first=first)


async def _run(ctx: Context, thread_id: str, run_id: str) -> StoredRun:
    """A run of a thread the request sees; 404 otherwise."""
    try:
        _, run = await _first_failure(
            ctx.thread(thread_id), ctx.store.aget_run(thread_id, run_id)
        )
    except RunNotFoundError:
        raise not_found("run", run_id) from None
    return cast("StoredRun", run)


@router.get("/v1/threads/{thread_id}/runs")
async def list_runs(thread_id: str, request: Request, ctx: Ctx) -> JSONResponse:
    """List a thread's runs, newest first."""
    params = ListParams.of(request.query_params)
    await ctx.thread(thread_id)
    page = await Run.alist(
        ctx.store,
        thread_id,
        after=params.after,
        before=params.before,
        order=params.order,
        limit=params.limit,
    )
    return ok(list_object(page.data, has_more=page.has_more, item=run_object))


def _poll_wait(ctx: Context, request: Request) -> float:
    """How long a ``GET`` of a run still going may wait for it to stop, in seconds.

    Only the SDK's polling helpers are waited for: they say so
    (``X-Stainless-Poll-Helper``) and ask again until the run stops anyway. The
    wait stays under half the client's read timeout (``X-Stainless-Read-Timeout``),
    so the answer always comes before the client gives up.
    """
    if request.headers.get("x-stainless-poll-helper") != "true":
        return 0.0
    wait = ctx.state.settings.poll_wait
    read_timeout = request.headers.get("x-stainless-read-timeout", "inf")
    with contextlib.suppress(ValueError):
        wait = min(wait, float(read_timeout) / 2)
    return wait if wait >= _SHORTEST_POLL_WAIT else 0.0


async def _stopped(ctx: Context, run: StoredRun, wait: float) -> StoredRun:
    """The run once it stops or pauses, or as it is after ``wait`` seconds.

    A run of this worker is awaited, and answered as its last write left it; one
    of another worker (or process) is read again at growing intervals.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    pause = _STORE_POLL_FIRST
    runs = ctx.state.runs
    while run.status in ACTIVE_RUN_STATUSES and (left := deadline - loop.time()) > 0:
        if runs.is_running(run.id):
            stopped = await runs.wait(run.id, left)
            if stopped is not None:
                run = stopped
                continue
        else:
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _STORE_POLL_LONGEST)
        try:
            run = await ctx.store.aget_run(run.thread_id, run.id)
        except (RunNotFoundError, ThreadNotFoundError):  # deleted meanwhile
            raise not_found("run", run.id) from None
    return run


@direct.get("/v1/threads/{thread_id}/runs/{run_id}")
async def retrieve_run(
    thread_id: str, run_id: str, request: Request, ctx: Context
) -> JSONResponse:
    """Read a run; while it goes on, ``openai-poll-after-ms`` says when to ask again.

    A polling helper's request waits for the run to stop first (`_poll_wait`); if
    it still goes on after that, the helper is told to ask again at once. A run
    this worker completes for a request of the same owner is awaited before it is
    read: its last write is the answer, and the request reads nothing while the
    run is going.
    """
    wait = left = _poll_wait(ctx, request)
    runs = ctx.state.runs
    if wait and runs.started_by(thread_id, run_id, ctx.owner):
        loop = asyncio.get_running_loop()
        began = loop.time()
        stopped = await runs.wait(run_id, wait)
        if stopped is not None:
            return ok(run_object(stopped))
        left = max(wait - (loop.time() - began), 0.0)
    run = await _run(ctx, thread_id, run_id)
    if not wait or run.status not in ACTIVE_RUN_STATUSES:
        return ok(run_object(run), _poll_headers(ctx, run))
    run = await _stopped(ctx, run, left)
    going = run.status in ACTIVE_RUN_STATUSES
    return ok(run_object(run), {"openai-poll-after-ms": "0"} if going else {})


@router.post("/v1/threads/{thread_id}/runs/{run_id}")
async def modify_run(
    thread_id: str, run_id: str, body: ModifyMetadata, ctx: Ctx
) -> JSONResponse:
    """Replace a run's metadata."""
    check_metadata(body.metadata)
    run = await _run(ctx, thread_id, run_id)
    if "metadata" in body.model_fields_set:
        run = await ctx.store.aupdate_run_metadata(
            thread_id, run_id, dict(body.metadata or {})
        )
    return ok(run_object(run), _poll_headers(ctx, run))


@router.post("/v1/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(thread_id: str, run_id: str, ctx: Ctx) -> JSONResponse:
    """Cancel a run: ``cancelling`` until its worker stops it, then ``cancelled``."""
    await _run(ctx, thread_id, run_id)
    try:
        run = await ctx.store.acancel_run(thread_id, run_id)
    except RunStateError as exc:
        raise InvalidRequestError(
            f"Cannot cancel run with status '{exc.status}'.", param=None
        ) from exc
    ctx.state.runs.cancel(run_id)
    return ok(run_object(run), _poll_headers(ctx, run))


@router.post(
    "/v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", response_model=None
)
async def submit_tool_outputs(
    thread_id: str, run_id: str, body: SubmitToolOutputs, ctx: Ctx
) -> JSONResponse | StreamingResponse:
    """Give a run in ``requires_action`` its tool outputs; the run goes on."""
    run = await _run(ctx, thread_id, run_id)
    if run.status != "requires_action" or run.required_action is None:
        raise InvalidRequestError(
            f'Runs in status "{run.status}" do not accept tool outputs.',
            param=None,
        )
    messages = _tool_messages(thread_id, run.required_action, body, ctx.store.limits)
    request, tools = _resumed_request(run, messages)
    return await _start(ctx, request, tools, stream=bool(body.stream), resuming=True)


@router.get("/v1/threads/{thread_id}/runs/{run_id}/steps")
async def list_run_steps(
    thread_id: str, run_id: str, request: Request, ctx: Ctx
) -> JSONResponse:
    """List a run's steps, newest first."""
    params = ListParams.of(request.query_params)
    _check_no_include(request)
    run = Run.model_validate(dict(await _run(ctx, thread_id, run_id)))
    steps = await run.asteps(ctx.store)
    data, has_more = page_of(steps, params, lambda step: step.id)
    return ok(list_object(data, has_more=has_more, item=step_object))


@router.get("/v1/threads/{thread_id}/runs/{run_id}/steps/{step_id}")
async def retrieve_run_step(
    thread_id: str, run_id: str, step_id: str, request: Request, ctx: Ctx
) -> JSONResponse:
    """Read a run step."""
    _check_no_include(request)
    run = Run.model_validate(dict(await _run(ctx, thread_id, run_id)))
    for step in await run.asteps(ctx.store):
        if step.id == step_id:
            return ok(step_object(step))
    raise not_found("run step", step_id)


def _check_no_include(request: Request) -> None:
    """Refuse ``include[]``: it asks for file_search results, which need files."""
    if request.scope["query_string"] and request.query_params.getlist("include[]"):
        raise InvalidRequestError(
            "include[] asks for file_search result content, which this server does "
            "not have: it keeps no files or vector stores. Remove it.",
            param="include[]",
        )
