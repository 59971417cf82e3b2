"""The run engine: one run of a thread, from taking its lease to its last write.

`ThreadRunner` is the LCEL face of this engine, and the Assistants server completes
its runs with it too. A run is written once, as a generator of effects (`Effect`):
store calls, a pause while the thread is busy, holding the lease, a model call,
executing tools, a chunk to show. Four thin drivers perform them: `RunEngine.invoke`,
`RunEngine.ainvoke`, `RunEngine.stream` and `RunEngine.astream`.

A run, step by step:

1. take the thread's lease and create the run record (`BaseStore.begin_run`, waiting
   up to ``wait_timeout`` for a busy thread), appending the input; when the thread's
   newest run waits for tool results (``requires_action``), the input must be those
   results and the run continues;
2. plan (`_planning`): what is pending, the context in conversation order;
3. call the model (a cancel asked from any process stops the call);
4. with tool calls and ``execute_tools``: run the tools, store the step (the call
   and its results, `BaseStore.finish_run` keeping the lease) and go back to 3, up to
   ``max_steps`` model calls; without ``execute_tools`` the run ends
   ``requires_action``;
5. store the reply, move ``hwm``, end the run and give the lease back: one
   `BaseStore.finish_run`.

A failure ends the run ``failed`` with its ``last_error``; the thread keeps the input
and nothing else. A run whose process dies ends ``expired`` when its lease lapses.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages import BaseMessage as LCBaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool

from langchain_retro import _messages
from langchain_retro._drivers import (
    AsyncDriver,
    Cancelled,
    Complete,
    Effect,
    Emit,
    Hold,
    RunTools,
    Sleep,
    SyncDriver,
    Unhold,
)
from langchain_retro._ids import new_id
from langchain_retro._planning import (
    Plan,
    hwm_patch,
    plan_run,
    retried,
)
from langchain_retro._steps import Steps, call
from langchain_retro.errors import (
    AssistantNotFoundError,
    ModelCallError,
    RecordClassError,
    RunCancelledError,
    RunIncompleteError,
    RunStateError,
    ThreadBusyError,
    ToolOutputsError,
)
from langchain_retro.records import BaseAssistant, ChatCompletionThread
from langchain_retro.stores.base import (
    BaseStore,
    FunctionCall,
    IncompleteDetails,
    LastError,
    MessageRow,
    NewMessage,
    NewRun,
    RequiredAction,
    RequiredToolCall,
    RunSaved,
    RunStart,
    RunUpdate,
    RunUsage,
    StoredMessage,
    StoredRun,
    SubmitToolOutputs,
    TruncationStrategy,
)

__all__ = [
    "RUN_OPTIONS",
    "EngineSettings",
    "RunEngine",
    "RunRequest",
    "RunResult",
    "required_action",
    "usage_of",
]

_READ_SLACK = 8
"""Rows read beyond the window, so that a reply stored after messages posted while
its run was in flight still finds the message it answered."""
_POLL_FIRST = 0.005
_POLL_MAX = 0.25

RUN_OPTIONS = frozenset(
    {
        "instructions",
        "additional_instructions",
        "max_prompt_tokens",
        "truncation_strategy",
        "metadata",
    }
)
"""Keyword arguments of a run that shape the run, not the model request."""

_RECORDED_CALL_OPTIONS = (
    "model",
    "temperature",
    "top_p",
    "max_completion_tokens",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
)
"""Model request parameters a run records when given per run."""


# --- what a run asks for and gives back ---------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One run to complete."""

    thread_id: str
    """The thread to run on."""
    messages: Sequence[NewMessage] = ()
    """The input, appended to the thread by the run."""
    instructions: Sequence[LCBaseMessage] = ()
    """Additional instructions (system messages), sent in this run only."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Run options (`RUN_OPTIONS`), checked by `RunEngine.request`."""
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Model request parameters of this run; they win over the assistant's."""
    config: RunnableConfig | None = None
    """The LangChain config the model and tool calls run with."""


class RunResult:
    """What a completed (or ``requires_action``) run gives back.

    Args:
        stored: The reply as stored.
        run: The run as it ended.
        rebuild: Rebuilds a stored message, on the first read of `reply` (the
            server, which answers with the run, never asks for it).
    """

    __slots__ = ("_rebuild", "_reply", "_stored", "run")

    def __init__(
        self,
        stored: StoredMessage,
        run: StoredRun,
        rebuild: Callable[[StoredMessage], AIMessage],
    ) -> None:
        self._stored = stored
        self._rebuild = rebuild
        self._reply: AIMessage | None = None
        self.run = run
        """The run as it ended."""

    @property
    def reply(self) -> AIMessage:
        """The stored reply, with ``response_metadata`` naming its run."""
        if self._reply is None:
            self._reply = self._rebuild(self._stored)
        return self._reply


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How the engine runs: the runner's options."""

    window: int | None = None
    max_tokens_context: int | None = None
    token_counter: Callable[[list[LCBaseMessage]], int] | None = None
    assistant_class: type[BaseAssistant] = BaseAssistant
    wait_timeout: float = 30.0
    lease_ttl: float = 60.0
    execute_tools: bool = False
    max_steps: int = 10
    max_tool_concurrency: int = 8
    tool_specs: tuple[dict[str, Any], ...] = ()
    """The bound tools as OpenAI tool dicts, recorded on each run."""
    reply_ids: bool = False
    """Store each reply under the ``id`` its driver gave it (a driver that names a
    reply before storing it, as the server's streams do); else the store assigns
    one."""
    answer_again: bool = False
    """With nothing waiting for an answer, answer the newest message that is not
    the assistant's once more (as the Assistants API did), instead of raising
    `NothingToRunError`; the server's runs do."""


# --- pure helpers -------------------------------------------------------------------


def usage_of(reply: AIMessage) -> RunUsage | None:
    """A reply's token usage, from its ``usage_metadata``."""
    usage = reply.usage_metadata
    if not usage:
        return None
    return RunUsage(
        prompt_tokens=usage.get("input_tokens", 0),
        completion_tokens=usage.get("output_tokens", 0),
        total_tokens=usage.get("total_tokens", 0),
    )


def required_action(reply: AIMessage) -> RequiredAction:
    """The Assistants ``required_action`` of a reply with tool calls."""
    calls = [
        RequiredToolCall(
            id=tool_call["id"] or "",
            function=FunctionCall(
                name=tool_call["name"],
                arguments=json.dumps(tool_call["args"], ensure_ascii=False),
            ),
        )
        for tool_call in reply.tool_calls
    ]
    return RequiredAction(submit_tool_outputs=SubmitToolOutputs(tool_calls=calls))


@dataclass(frozen=True, slots=True)
class _Turn:
    """The run being completed, as its writes and errors name it."""

    thread_id: str
    owner: str
    run_id: str
    assistant_id: str
    reply_ids: bool = False

    def message(
        self, message: LCBaseMessage, reply_to: str | None = None
    ) -> NewMessage:
        """A message the run writes: its reply, a step's call or a tool result.

        The model's messages name their run and assistant in ``response_metadata``,
        so a reply read back from the store tells which run wrote it.
        """
        if isinstance(message, AIMessage):
            named = {
                **message.response_metadata,
                "run_id": self.run_id,
                "assistant_id": self.assistant_id,
            }
            message = message.model_copy(update={"response_metadata": named})
        keep_id = self.reply_ids and isinstance(message, AIMessage)
        return NewMessage(
            role=_messages.role_of(message),
            payload=_messages.to_payload(message),
            id=message.id if keep_id else None,
            run_id=self.run_id,
            assistant_id=self.assistant_id,
            reply_to=reply_to,
        )

    def cancelled(self) -> RunCancelledError:
        return RunCancelledError(
            f"Run {self.run_id!r} on thread {self.thread_id!r} was cancelled; no "
            "reply was stored and the thread is free.",
            thread_id=self.thread_id,
            run_id=self.run_id,
        )

    def incomplete(self, why: str, reason: str) -> RunIncompleteError:
        return RunIncompleteError(
            f"Run {self.run_id!r} on thread {self.thread_id!r} ended incomplete: "
            + why,
            thread_id=self.thread_id,
            run_id=self.run_id,
            reason=reason,
        )


def _final_update(
    reply: AIMessage,
    usage: RunUsage | None,
    resolved: Mapping[str, Any],
    call_kwargs: Mapping[str, Any],
) -> RunUpdate:
    """How a run ends after a reply the runner does not act on."""
    if reply.tool_calls:
        return RunUpdate(
            status="requires_action",
            usage=usage,
            required_action=required_action(reply),
            **resolved,
        )
    cut = reply.response_metadata.get("finish_reason") == "length"
    if cut and "max_completion_tokens" in call_kwargs:
        return RunUpdate(
            status="incomplete",
            usage=usage,
            incomplete_details=IncompleteDetails(reason="max_completion_tokens"),
            **resolved,
        )
    return RunUpdate(status="completed", usage=usage, **resolved)


def _id_chunk(reply: AIMessage, stored: StoredMessage) -> AIMessageChunk:
    """A model call's closing chunk: empty, carrying the stored message's id.

    Args:
        reply: The model's reply (its content's type is the chunk's).
        stored: The reply as stored.
    """
    empty: str | list[str | dict[str, Any]] = (
        "" if isinstance(reply.content, str) else []
    )
    return AIMessageChunk(content=empty, id=stored.id, chunk_position="last")


def _model_call_error(
    thread_id: str, run_id: str, exc: BaseException
) -> ModelCallError:
    return ModelCallError(
        f"The Chat Completions call of run {run_id!r} on thread {thread_id!r} failed: "
        f"{type(exc).__name__}: {exc}. The run is failed; the thread is unchanged "
        "apart from the run's input, which is kept: run again (with the same input "
        "or none) to retry.",
        thread_id=thread_id,
        run_id=run_id,
    )


def _busy_error(thread_id: str, timeout: float) -> ThreadBusyError:
    return ThreadBusyError(
        f"Thread {thread_id!r} is busy: another run held it for the whole "
        f"wait_timeout of {timeout:g}s. Retry later or raise wait_timeout.",
        thread_id=thread_id,
    )


def _last_error(exc: BaseException) -> LastError:
    name = type(exc).__name__
    code: Any = "rate_limit_exceeded" if "RateLimit" in name else "server_error"
    return LastError(code=code, message=f"{name}: {exc}"[:2000])


def _as_run_thread(stored: Any, thread_id: str) -> ChatCompletionThread:
    try:
        return ChatCompletionThread._from(stored)
    except RecordClassError as exc:
        raise RecordClassError(
            f"Thread {thread_id!r} is not a ChatCompletionThread, so it names no "
            "assistant to run with. Create run threads with "
            "ChatCompletionThread.create(store, assistant_id=...) or a subclass, "
            "and import that subclass before running."
        ) from exc


def _checked_outputs(start: RunStart, thread_id: str) -> None:
    """Check that a continued run's input answers exactly its tool calls.

    Raises:
        RunStateError: If the input holds anything but tool results.
        ToolOutputsError: If a call is left unanswered or an unknown one answered.
    """
    run = start.run
    action = run.required_action
    wanted = [c.id for c in action.submit_tool_outputs.tool_calls] if action else []
    given: list[str] = []
    for message in start.appended:
        rebuilt = _messages.from_payload(message.payload, message.id)
        if not isinstance(rebuilt, ToolMessage):
            raise RunStateError(
                f"Run {run.id!r} on thread {thread_id!r} waits for the results of "
                f"its tool calls {wanted}: give ToolMessages answering them (and "
                f"nothing else), or cancel the run (Run.cancel). Got a "
                f"{type(rebuilt).__name__}; nothing was stored.",
                thread_id=thread_id,
                run_id=run.id,
                status="requires_action",
            )
        given.append(rebuilt.tool_call_id)
    answered_before = {
        cast("ToolMessage", m).tool_call_id
        for m in (
            _messages.from_payload(row.payload, row.id)
            for row in start.context
            if row.role == "tool" and row.run_id == run.id
        )
    } - set(given)
    missing = tuple(i for i in wanted if i not in given and i not in answered_before)
    unknown = tuple(i for i in given if i not in wanted)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"leave {list(missing)} unanswered")
        if unknown:
            parts.append(f"answer unknown calls {list(unknown)}")
        raise ToolOutputsError(
            f"The tool results given to run {run.id!r} on thread {thread_id!r} "
            f"{' and '.join(parts)}; it waits for {wanted}. Give one ToolMessage "
            "per call, with its tool_call_id; nothing was stored.",
            thread_id=thread_id,
            run_id=run.id,
            missing=missing,
            unknown=unknown,
        )


# --- the engine ---------------------------------------------------------------------


class RunEngine:
    """Completes runs on a store's threads with a chat model: the run, written once.

    Args:
        store: The store holding the threads.
        model: The chat model (tools bound) that completes runs.
        settings: The runner's options.
        tools: Executable tools by name (for ``execute_tools``).
        cache: Rebuilt messages, shared between runs.
    """

    def __init__(
        self,
        store: BaseStore,
        model: Runnable[LanguageModelInput, LCBaseMessage],
        settings: EngineSettings,
        *,
        tools: Mapping[str, BaseTool] | None = None,
        cache: _messages.MessageCache | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.settings = settings
        self.tools: Mapping[str, BaseTool] = dict(tools or {})
        self.cache = cache or _messages.MessageCache(0)

    @property
    def lease_ttl(self) -> float:
        """Seconds a run's lease lasts unless renewed."""
        return self.settings.lease_ttl

    @property
    def max_tool_concurrency(self) -> int:
        """How many tool calls of one reply run at once."""
        return self.settings.max_tool_concurrency

    # --- the run, written once -----------------------------------------------------

    def steps(self, request: RunRequest) -> Steps[Effect, RunResult]:
        """The run as effects; see the module docstring."""
        owner = new_id("run")
        start = yield from self._begin(request, owner)
        yield Hold(request.thread_id, owner, start.run.id)
        try:
            thread, assistant = self._checked(start, request)
        except BaseException as exc:
            # A run that cannot start keeps nothing of its input.
            yield Unhold()
            yield from self._abandon(start, owner, exc)
            raise
        turn = _Turn(
            request.thread_id,
            owner,
            start.run.id,
            assistant.id,
            self.settings.reply_ids,
        )
        try:
            plan = yield from self._prepare(start, request, thread, assistant)
        except Exception as exc:
            # Nothing to answer, say: the input stays, the run fails.
            yield from self._end(
                turn, RunUpdate(status="failed", last_error=_last_error(exc))
            )
            raise
        budget = request.options.get("max_prompt_tokens")
        if budget is not None and plan.over_budget:
            yield from self._end(
                turn,
                RunUpdate(
                    status="incomplete",
                    incomplete_details=IncompleteDetails(reason="max_prompt_tokens"),
                ),
            )
            raise turn.incomplete(
                f"the messages it must send go over max_prompt_tokens={budget}. "
                "Raise max_prompt_tokens; the input is kept.",
                "max_prompt_tokens",
            )
        kwargs = {**plan.kwargs, **request.call_kwargs}
        resolved = self._resolved(start, request, kwargs)
        messages = list(plan.messages)
        snapshot = plan.snapshot
        calls = 0
        while True:
            calls += 1
            reply = yield from self._complete(turn, messages, kwargs)
            new = turn.message(reply, reply_to=snapshot)
            usage = usage_of(reply)
            if not (reply.tool_calls and self.settings.execute_tools):
                break
            update = RunUpdate(status="in_progress", usage=usage, **resolved)
            saved = yield from self._tool_step(turn, reply, new, update, snapshot)
            messages += [self._rebuilt(message) for message in saved.messages]
            snapshot = saved.messages[-1].id
            if calls >= self.settings.max_steps:
                yield from self._end(
                    turn,
                    RunUpdate(
                        status="incomplete",
                        incomplete_details=IncompleteDetails(reason="max_steps"),
                    ),
                )
                raise turn.incomplete(
                    f"after max_steps={self.settings.max_steps} model calls, the "
                    "model still calling tools. Every step is stored: run again "
                    "(with no input) to go on, or raise max_steps.",
                    "max_steps",
                )
        update = _final_update(reply, usage, resolved, request.call_kwargs)
        saved = yield from self._end(turn, update, [new], snapshot)
        if saved.run.status == "cancelled":
            raise turn.cancelled()
        yield Emit(_id_chunk(reply, saved.messages[0]))
        if saved.run.status == "incomplete":
            raise turn.incomplete(
                "the reply reached max_completion_tokens and was cut short (it is "
                "stored). Raise max_completion_tokens.",
                "max_completion_tokens",
            )
        return RunResult(saved.messages[0], saved.run, self._rebuilt)

    def _tool_step(
        self,
        turn: _Turn,
        reply: AIMessage,
        new: NewMessage,
        update: RunUpdate,
        snapshot: str,
    ) -> Steps[Effect, RunSaved]:
        """Run a reply's tool calls and store the step: the call and its results."""
        try:
            results = yield RunTools(list(reply.tool_calls))
        except Cancelled:
            yield from self._end(turn, RunUpdate(status="cancelled"))
            raise turn.cancelled() from None
        saved = yield from self._write(
            turn, update, [new, *(turn.message(r) for r in results)], snapshot
        )
        if saved.run.status == "cancelled":
            yield Unhold()
            raise turn.cancelled()
        yield Emit(_id_chunk(reply, saved.messages[0]))
        return saved

    def _complete(
        self, turn: _Turn, messages: list[LCBaseMessage], kwargs: dict[str, Any]
    ) -> Steps[Effect, AIMessage]:
        """One model call; a failure or a cancel ends the run."""
        try:
            reply = yield Complete(messages, kwargs)
        except Cancelled:
            yield from self._end(turn, RunUpdate(status="cancelled"))
            raise turn.cancelled() from None
        except Exception as exc:
            yield from self._end(
                turn, RunUpdate(status="failed", last_error=_last_error(exc))
            )
            raise _model_call_error(turn.thread_id, turn.run_id, exc) from exc
        if not isinstance(reply, AIMessage):
            error = TypeError(
                f"The model returned a {type(reply).__name__}, not an AIMessage"
            )
            yield from self._end(
                turn, RunUpdate(status="failed", last_error=_last_error(error))
            )
            raise error
        return reply

    def _write(
        self,
        turn: _Turn,
        update: RunUpdate,
        messages: Sequence[NewMessage] = (),
        hwm: str | None = None,
    ) -> Steps[Effect, RunSaved]:
        """Store a step or the run's end: messages, ``hwm`` and the run, at once."""
        store = self.store
        saved = yield from call(
            store.finish_run,
            store.afinish_run,
            turn.thread_id,
            owner=turn.owner,
            run_id=turn.run_id,
            update=update,
            messages=messages,
            thread_patch=None if hwm is None else hwm_patch(hwm),
        )
        return saved

    def _end(
        self,
        turn: _Turn,
        update: RunUpdate,
        messages: Sequence[NewMessage] = (),
        hwm: str | None = None,
    ) -> Steps[Effect, RunSaved]:
        """The run's last write: renewals stop first, the lease goes with it."""
        yield Unhold()
        saved = yield from self._write(turn, update, messages, hwm)
        return saved

    def _resolved(
        self, start: RunStart, request: RunRequest, kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The settings the run used, recorded with its first write."""
        assistant = start.assistant
        instructions = request.options.get("instructions")
        if instructions is None and assistant is not None:
            instructions = assistant.instructions
        return {
            "model": kwargs.get("model"),
            "instructions": instructions,
            "tools": list(self.settings.tool_specs) or None,
            "temperature": kwargs.get("temperature"),
            "top_p": kwargs.get("top_p"),
        }

    def _rebuilt(self, stored: StoredMessage) -> Any:
        return _messages.from_payload(
            stored.payload, stored.id, thread_id=stored.thread_id
        )

    def _begin(self, request: RunRequest, owner: str) -> Steps[Effect, RunStart]:
        """Take the lease (waiting for a busy thread) and begin the run."""
        store = self.store
        settings = self.settings
        new_run = self._new_run(request, owner)
        deadline = time.monotonic() + settings.wait_timeout
        delay = _POLL_FIRST
        while True:
            start = yield from call(
                store.begin_run,
                store.abegin_run,
                request.thread_id,
                owner=owner,
                ttl=settings.lease_ttl,
                run=new_run,
                messages=request.messages,
                context_limit=self._read_limit(request.options),
                resume=True,
            )
            if start is not None:
                return start
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _busy_error(request.thread_id, settings.wait_timeout)
            # Jitter keeps waiting runs from polling in lockstep.
            yield Sleep(max(0.0, min(delay * (0.5 + random.random()), remaining)))  # noqa: S311
            delay = min(delay * 2, _POLL_MAX)

    def _new_run(self, request: RunRequest, owner: str) -> NewRun:
        options = request.options
        fields: dict[str, Any] = {
            name: request.call_kwargs[name]
            for name in _RECORDED_CALL_OPTIONS
            if request.call_kwargs.get(name) is not None
        }
        for name in ("instructions", "additional_instructions", "max_prompt_tokens"):
            if options.get(name) is not None:
                fields[name] = options[name]
        if options.get("truncation_strategy") is not None:
            fields["truncation_strategy"] = options["truncation_strategy"]
        if options.get("metadata"):
            fields["metadata"] = dict(options["metadata"])
        if self.settings.tool_specs:
            fields["tools"] = list(self.settings.tool_specs)
        return NewRun(id=owner, **fields)

    def _window(self, options: Mapping[str, Any]) -> int | None:
        strategy = options.get("truncation_strategy")
        if (
            isinstance(strategy, TruncationStrategy)
            and strategy.type == "last_messages"
        ):
            return strategy.last_messages
        return self.settings.window

    def _read_limit(self, options: Mapping[str, Any]) -> int | None:
        """How many of a thread's newest messages a run reads first."""
        window = self._window(options)
        return None if window is None else window + _READ_SLACK

    def _abandon(
        self, start: RunStart, owner: str, exc: BaseException
    ) -> Steps[Effect, None]:
        """Undo a run that could not start: its input out, its run ended."""
        store = self.store
        thread_id = start.thread.id
        for message in start.appended:
            yield from call(
                store.delete_message, store.adelete_message, thread_id, message.id
            )
        if start.resumed and isinstance(exc, RunStateError | ToolOutputsError):
            update = RunUpdate(
                status="requires_action", required_action=start.run.required_action
            )
        else:
            update = RunUpdate(status="failed", last_error=_last_error(exc))
        yield from call(
            store.finish_run,
            store.afinish_run,
            thread_id,
            owner=owner,
            run_id=start.run.id,
            update=update,
        )

    def _checked(
        self, start: RunStart, request: RunRequest
    ) -> tuple[ChatCompletionThread, BaseAssistant]:
        """What `begin_run` read, checked: a run thread, its assistant, the input."""
        thread = _as_run_thread(start.thread, request.thread_id)
        if start.assistant is None:
            raise AssistantNotFoundError(thread.assistant_id)
        assistant = self.settings.assistant_class._from(start.assistant)
        if request.options.get("instructions") is not None:
            assistant = assistant.model_copy(
                update={"instructions": request.options["instructions"]}
            )
        if start.resumed:
            _checked_outputs(start, request.thread_id)
        return thread, assistant

    def _prepare(
        self,
        start: RunStart,
        request: RunRequest,
        thread: ChatCompletionThread,
        assistant: BaseAssistant,
    ) -> Steps[Effect, Plan]:
        """Drop a retried input, plan the context (reading further back if needed)."""
        store = self.store
        thread_id = request.thread_id
        instructions = list(request.instructions)
        extra = request.options.get("additional_instructions")
        if extra:
            instructions.insert(0, SystemMessage(extra))
        window = self._window(request.options)
        limit = self._read_limit(request.options)
        appended = [] if start.resumed else start.appended
        rows = start.context
        budget = (
            request.options.get("max_prompt_tokens") or self.settings.max_tokens_context
        )
        counter = self.settings.token_counter
        if budget is not None and counter is None:
            counter = count_tokens_approximately
        while True:
            complete = limit is None or len(rows) < limit
            if appended:
                is_retry = retried(rows, appended, thread.hwm, complete)
                if is_retry is None:
                    limit = 2 * cast("int", limit)
                    rows = yield from self._read(thread_id, limit)
                    continue
                if is_retry:  # rare: deleting beats reading the tail on every run
                    for message in appended:
                        yield from call(
                            store.delete_message,
                            store.adelete_message,
                            thread_id,
                            message.id,
                        )
                    dropped = {message.id for message in appended}
                    rows = [row for row in rows if row.id not in dropped]
                appended = []
            plan = plan_run(
                thread=thread,
                assistant=assistant,
                rows=rows,
                complete=complete,
                window=window,
                instructions=instructions,
                max_tokens_context=budget,
                token_counter=counter,
                rebuild=lambda rows: self.cache.rebuild(
                    [(row.id, row.payload) for row in rows], thread_id=thread_id
                ),
                again=self.settings.answer_again,
            )
            if plan is not None:
                return plan
            limit = 2 * cast("int", limit)
            rows = yield from self._read(thread_id, limit)

    def _read(self, thread_id: str, limit: int) -> Steps[Effect, list[MessageRow]]:
        store = self.store
        newest = yield from call(
            store.list_messages,
            store.alist_messages,
            thread_id,
            order="desc",
            limit=limit,
        )
        return [MessageRow.of(message) for message in reversed(newest)]

    # --- the drivers ---------------------------------------------------------------

    def invoke(self, request: RunRequest) -> RunResult:
        """Complete a run; see the module docstring."""
        driver = SyncDriver(self, request.config)
        return driver.run(self.steps(request))

    async def ainvoke(self, request: RunRequest) -> RunResult:
        """Async twin of `invoke`."""
        driver = AsyncDriver(self, request.config)
        return await driver.run(self.steps(request))

    def stream(self, request: RunRequest) -> Iterator[AIMessageChunk]:
        """Complete a run, yielding each model call's chunks as they come.

        Each model call ends with an empty chunk carrying its stored message's id.
        Closing the stream early cancels the run: nothing more is stored.
        """
        driver = SyncDriver(self, request.config)
        return driver.stream(self.steps(request))

    def astream(self, request: RunRequest) -> AsyncIterator[AIMessageChunk]:
        """Async twin of `stream`."""
        driver = AsyncDriver(self, request.config)
        return driver.stream(self.steps(request))
