"""`ThreadRunner`: runs on threads, completed through Chat Completions.

The runner is the execution plane: it reads a thread and its assistant from a store,
sends the conversation to ``ChatOpenAI`` and stores the reply, moving the thread's
high-water mark (``hwm``) in the same write. One run is active per thread at a time,
enforced by a lease kept in the store, so it holds across processes.

A run, step by step:

0. check the config and the input (``_inputs``): nothing is read or written for a
   run whose input is not message-like;
1. take the thread's run lease (waiting up to ``wait_timeout``), read the thread and
   its assistant, append the input messages as one batch, and read the thread's
   messages (the newest ``window`` of them, if set): one store call, `begin_run`;
2. plan (``_planning``): put the rows in conversation order; the pending messages
   are those after ``hwm`` that are not the assistant's; the last of them is the
   snapshot; the context ends at it;
3. call the model with the assistant's settings as per-call parameters;
4. store the reply (with its run, assistant and the snapshot it answered), set
   ``hwm`` to the snapshot and give the lease back: one store call, `finish_run`.

Step 2 is written once as the (rare) further store calls it may need, which a sync
and an async driver execute (`_prepare`); the planning itself and the reply's write
are pure functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    MessageLikeRepresentation,
    message_chunk_to_message,
)
from langchain_core.messages import BaseMessage as LCBaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import (
    ConfigurableFieldSpec,
    Runnable,
    RunnableConfig,
    RunnableSerializable,
)
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import ConfigDict, Field, PrivateAttr, SkipValidation, ValidationError
from typing_extensions import override

from langchain_retro import _messages
from langchain_retro._ids import new_id
from langchain_retro._inputs import (
    THREAD_ID_KEY,
    check_call_kwargs,
    check_config,
    run_input,
    thread_id_of,
)
from langchain_retro._metadata import MetadataPatch
from langchain_retro._planning import (
    AI_ROLE,
    CHAT_COMPLETION_PARAMETERS,
    Plan,
    plan_run,
    retried,
)
from langchain_retro.errors import (
    AssistantNotFoundError,
    ModelCallError,
    RecordClassError,
    RetroValueError,
    ThreadBusyError,
)
from langchain_retro.records import BaseAssistant, ChatCompletionThread
from langchain_retro.stores.base import BaseStore, NewMessage, RunStart, StoredMessage

__all__ = ["CHAT_COMPLETION_PARAMETERS", "THREAD_ID_KEY", "RunnerInput", "ThreadRunner"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

RunnerInput: TypeAlias = (
    str | LCBaseMessage | PromptValue | Sequence[MessageLikeRepresentation] | None
)
"""What a run accepts: text, a message, messages, a prompt value, or ``None``."""

_HWM = "hwm"
# ChatOpenAI settings that only the Responses API understands.
_RESPONSES_ONLY = (
    "reasoning",
    "include",
    "truncation",
    "context_management",
    "use_previous_response_id",
)
_READ_SLACK = 8
"""Rows read beyond the window, so that a reply stored after messages posted while
its run was in flight still finds the message it answered."""
_POLL_FIRST = 0.005
_POLL_MAX = 0.25


# --- pure steps ----------------------------------------------------------------------


def _reply_write(
    reply: LCBaseMessage, plan: Plan, run_id: str
) -> tuple[NewMessage, MetadataPatch]:
    """The store write of a run's end: the reply, and ``hwm`` moved to the snapshot.

    The reply records the run, its assistant and the message it answered.
    """
    if not isinstance(reply, AIMessage):
        raise TypeError(
            f"The model returned a {type(reply).__name__}, not an AIMessage"
        )
    new = NewMessage(
        role=AI_ROLE,
        payload=_messages.to_payload(reply),
        run_id=run_id,
        assistant_id=plan.assistant_id,
        reply_to=plan.snapshot,
    )
    patch = MetadataPatch(set={_HWM: plan.snapshot}, clear_fields=frozenset({_HWM}))
    return new, patch


def _stored_reply(stored: StoredMessage) -> AIMessage:
    return cast(
        "AIMessage",
        _messages.from_payload(stored.payload, stored.id, thread_id=stored.thread_id),
    )


def _merged(chunks: Sequence[AIMessageChunk]) -> AIMessage:
    total = chunks[0] + list(chunks[1:]) if len(chunks) > 1 else chunks[0]
    return cast("AIMessage", message_chunk_to_message(total))


def _id_chunk(reply: AIMessage) -> AIMessageChunk:
    """The stream's closing chunk: empty, carrying the stored reply's id."""
    empty: str | list[str | dict[str, Any]] = (
        "" if isinstance(reply.content, str) else []
    )
    return AIMessageChunk(content=empty, id=reply.id, chunk_position="last")


def _model_call_error(thread_id: str, exc: Exception) -> ModelCallError:
    return ModelCallError(
        f"The Chat Completions call of the run on thread {thread_id!r} failed: "
        f"{type(exc).__name__}: {exc}. The thread is unchanged apart from the run's "
        "input, which is kept: run again (with the same input or none) to retry.",
        thread_id=thread_id,
    )


def _busy_error(thread_id: str, timeout: float) -> ThreadBusyError:
    return ThreadBusyError(
        f"Thread {thread_id!r} is busy: another run held it for the whole "
        f"wait_timeout of {timeout:g}s. Retry later or raise wait_timeout.",
        thread_id=thread_id,
    )


def _next_poll(delay: float) -> float:
    return min(delay * 2, _POLL_MAX)


def _jittered(delay: float, remaining: float) -> float:
    # Jitter keeps waiting runs from polling in lockstep.
    return max(0.0, min(delay * (0.5 + random.random()), remaining))  # noqa: S311


def _chat_completions_model(llm: BaseChatOpenAI) -> BaseChatOpenAI:
    """``llm``, or a copy pinned to Chat Completions; the original is never changed."""
    responses_only = [name for name in _RESPONSES_ONLY if getattr(llm, name, None)]
    if responses_only:
        raise RetroValueError(
            f"ThreadRunner completes runs through Chat Completions, but the "
            f"{type(llm).__name__} "
            f"sets {responses_only}, which only the Responses API accepts. Remove "
            "them (use reasoning_effort= instead of reasoning=)."
        )
    if llm.use_responses_api is False:
        return llm
    return llm.model_copy(update={"use_responses_api": False})


def _check_llm(llm: object) -> None:
    if isinstance(llm, BaseChatOpenAI):
        return
    raise RetroValueError(
        f"ThreadRunner needs a ChatOpenAI (or another langchain-openai chat model) as "
        f"llm, got {type(llm).__name__}: runs are completed through Chat Completions "
        "with per-call settings only that family takes. For an OpenAI-compatible "
        'server, use ChatOpenAI(base_url="http://.../v1", model=...).'
    )


def _with_tools(
    llm: BaseChatOpenAI, tools: Sequence[Any]
) -> Runnable[LanguageModelInput, LCBaseMessage]:
    """``llm`` with ``tools`` bound, each form checked as ``bind_tools`` converts it."""
    if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Sequence):
        raise RetroValueError(
            f"ThreadRunner's tools must be a list, got {type(tools).__name__}. Pass "
            "tools=[...] (OpenAI tool dicts, functions, pydantic models, TypedDicts "
            "or BaseTools)."
        )
    if not tools:
        return llm
    for index, tool in enumerate(tools):
        try:
            convert_to_openai_tool(tool)
        except Exception as exc:
            raise RetroValueError(
                f"ThreadRunner cannot bind tool {index} ({type(tool).__name__}: "
                f"{str(tool)[:60]!r}): {type(exc).__name__}: {exc}. A tool is an "
                'OpenAI tool dict ({"type": "function", "function": {...}}), a JSON '
                "schema, a function with a docstring, a pydantic model, a TypedDict "
                "or a BaseTool."
            ) from exc
    return llm.bind_tools(list(tools))


# --- the run's store calls, written once ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _StoreCall:
    """One store call, made by `ThreadRunner._drive` or by its async twin."""

    method: str
    """The sync method's name; the async driver calls ``"a" + method``."""
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


_Steps: TypeAlias = Generator[_StoreCall, Any, T]


def _read_step(thread_id: str, limit: int | None) -> _Steps[list[StoredMessage]]:
    if limit is None:
        rows: list[StoredMessage] = yield _StoreCall("list_messages", (thread_id,))
        return rows
    newest: list[StoredMessage] = yield _StoreCall(
        "list_messages", (thread_id,), {"order": "desc", "limit": limit}
    )
    return newest[::-1]


def _delete_step(thread_id: str, messages: Sequence[StoredMessage]) -> _Steps[None]:
    for message in messages:
        yield _StoreCall("delete_message", (thread_id, message.id))


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


# --- lease renewal -------------------------------------------------------------------


@dataclass(eq=False)
class _Held:
    store: BaseStore
    thread_id: str
    owner: str
    ttl: float
    due: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    dropped: bool = False


class _Renewals:
    """One daemon thread renewing the leases of this process's sync runs in flight.

    A run's lease is renewed every third of its time to live, so it expires only when
    the process holding it is gone.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: set[_Held] = set()
        self._thread: threading.Thread | None = None
        self._wake = float("inf")  # when the loop wakes up next

    def hold(self, store: BaseStore, thread_id: str, owner: str, ttl: float) -> _Held:
        held = _Held(store, thread_id, owner, ttl, time.monotonic() + ttl / 3)
        with self._cond:
            self._held.add(held)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="langchain-retro-leases", daemon=True
                )
                self._thread.start()
            if held.due < self._wake:  # else the loop wakes in time anyway
                self._cond.notify()
        return held

    def drop(self, held: _Held) -> None:
        with held.lock:  # waits for a renewal in flight, so none lands after release
            held.dropped = True
        with self._cond:
            self._held.discard(held)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [h for h in self._held if h.due <= now]
                if not due:
                    self._wake = min((h.due for h in self._held), default=float("inf"))
                    timeout = self._wake - now if self._held else None
                    self._cond.wait(timeout)
                    self._wake = 0.0  # awake: hold() need not notify
                    continue
            for held in due:
                with held.lock:
                    if not held.dropped:
                        _renew(held)
                        held.due = time.monotonic() + held.ttl / 3


def _renew(held: _Held) -> None:
    try:
        kept = held.store.acquire_lease(held.thread_id, held.owner, held.ttl)
    except Exception:
        logger.exception("Cannot renew the run lease of thread %s", held.thread_id)
        return
    if not kept:
        _lease_lost(held.thread_id)


def _lease_lost(thread_id: str) -> None:
    logger.warning(
        "The run lease of thread %s expired and was taken by another run; two runs "
        "may now answer the same messages. Raise lease_ttl.",
        thread_id,
    )


_RENEWALS = _Renewals()


@dataclass(eq=False)
class _Run:
    """A run holding its thread's lease, from `begin_run` to `finish_run`."""

    thread_id: str
    owner: str
    """The lease's owner: this run's unique id."""
    start: RunStart
    """What `begin_run` read and wrote."""
    held: _Held | None = None
    """A sync run's lease renewals."""
    renewals: tuple[asyncio.Event, asyncio.Task[None]] | None = None
    """An async run's lease renewals: the event that stops them, and their task."""
    finished: bool = False
    """Whether `finish_run` stored the reply and gave the lease back."""

    def stop_renewals(self) -> None:
        if self.held is not None:
            _RENEWALS.drop(self.held)

    async def astop_renewals(self) -> None:
        if self.renewals is not None:
            stop, task = self.renewals
            stop.set()
            await task  # a renewal in flight lands before the lease is given back


# --- the runner ----------------------------------------------------------------------


class ThreadRunner(RunnableSerializable[RunnerInput, AIMessage]):
    """Runs on Assistants-style threads, completed through Chat Completions.

    The thread comes from ``config["configurable"]["thread_id"]`` (LangGraph's
    convention); it must be a `ChatCompletionThread` (or a subclass), whose assistant
    gives the model, temperature, top_p and instructions. A run appends its input to
    the thread, answers every message after the thread's ``hwm`` and stores the reply.

    Setup:
        .. code-block:: bash

            pip install langchain-retro
            export OPENAI_API_KEY="sk-..."  # or any OpenAI-compatible OPENAI_BASE_URL

    Instantiate:
        .. code-block:: python

            from langchain_openai import ChatOpenAI
            from langchain_retro import Assistant, ChatCompletionThread, SQLiteStore
            from langchain_retro import ThreadRunner

            store = SQLiteStore("app.db")
            assistant = Assistant.create(
                store, model="gpt-4o-mini", instructions="Be brief.", temperature=0.2
            )
            thread = ChatCompletionThread.create(store, assistant_id=assistant.id)
            runner = ThreadRunner(store=store, llm=ChatOpenAI(), window=50)

    Invoke:
        .. code-block:: python

            config = {"configurable": {"thread_id": thread.id}}
            reply = runner.invoke("Hello!", config)  # an AIMessage, stored
            reply.id                                 # "msg_...": its id in the store
            runner.invoke(None, config)  # answer what others posted to the thread

    Stream:
        .. code-block:: python

            for chunk in runner.stream("Tell me a story", config):
                print(chunk.content, end="")
            # The thread holds one complete reply; the last chunk carries its id.

    Async:
        .. code-block:: python

            reply = await runner.ainvoke("Hello!", config)
            async for chunk in runner.astream("More", config):
                ...
            replies = await runner.abatch(
                ["hi"] * len(ids),
                [{"configurable": {"thread_id": i}, "max_concurrency": 8} for i in ids],
            )

    Models and tools:
        ``llm`` is a ``ChatOpenAI`` (or another model of langchain-openai's
        ``BaseChatOpenAI`` family, all speaking Chat Completions); any other model
        raises `RetroValueError` at construction, as does any option of the wrong
        type or an unknown one. ``tools`` takes every form ``bind_tools`` accepts:
        OpenAI tool dicts, JSON schemas, functions, pydantic models, TypedDicts and
        BaseTools; one it cannot convert raises `RetroValueError` at construction.

    Model settings:
        The model is the thread's ``chat_completion_model``, else the assistant's
        ``model``; the assistant's ``temperature`` and ``top_p`` are sent when set. A
        typed field of an assistant subclass whose name is in
        `CHAT_COMPLETION_PARAMETERS` (``max_tokens``, ``response_format``, ``seed``,
        ``stop``...) is sent as that parameter. Keyword arguments given to ``invoke``
        (or bound with ``.bind``) are sent too, and win. All of them go with the one
        call: the shared ``llm`` is never changed, so concurrent runs never see each
        other's settings. The ``llm``'s own settings apply to whatever a run leaves
        unset. If the ``llm`` would use the Responses API, the runner uses a copy of
        it pinned to Chat Completions.

    Input:
        What LangChain calls message-like: ``None`` (answer what is pending), a
        ``str``, a message, a message dict (``{"role": "user", "content": "hi"}`` or
        ``{"type": "human", ...}``), a ``(role, content)`` tuple, a ``PromptValue``,
        or a list of these. Anything else (a dict of prompt variables, a number...)
        raises `RetroValueError` before the run takes the thread's lease, and
        nothing is stored. So does a malformed ``config``.

    Additional instructions:
        System messages in a run's input are that run's additional instructions
        (the Assistants API's ``additional_instructions``): sent right after the
        assistant's instructions, in that run only, and never stored. So a prompt
        in front of the runner keeps its system message out of the thread::

            prompt = ChatPromptTemplate.from_messages(
                [("system", "Answer in {language}."), ("human", "{text}")]
            )
            chain = prompt | runner  # stores the human message and the reply only

    Pending messages and the high-water mark:
        A run answers the messages appended after the thread's ``hwm`` that are not
        the assistant's; the last of them is the run's snapshot. The reply is stored
        with ``run_id`` (the run's ``run_...`` id, also its lease owner),
        ``assistant_id`` and ``reply_to`` (the snapshot), and ``hwm`` set to the
        snapshot, in one store call; so a message posted while a run is in flight is
        answered by the next run, and none is answered twice. With no input and
        nothing pending, a run raises `NothingToRunError`. If the ``hwm`` message was
        deleted, the messages after the thread's last assistant message are pending.
        Message ids are never compared: callers may choose them.

    Context and conversation order:
        Listings keep append order, but the context is in conversation order: each
        reply right after the message it answered (with the tool results answering
        it), before the messages posted while its run was in flight. The context is
        the conversation up to the snapshot, after the system messages; with
        ``window``, its newest ``window`` messages. Whatever the window or token
        budget, the tool-call message being answered and all its results are sent,
        so ``hwm`` never passes results the model did not see; tool results whose
        call is not in the context are dropped. Older pending messages outside the
        window are answered without being sent, as with the Assistants API's
        ``truncation_strategy``.

    Failures and retries:
        A failed model call raises `ModelCallError` (its cause chained); the thread
        keeps the input but gets no reply and its ``hwm`` does not move. Running
        again with no input answers it; running again with the same input does not
        store it twice: input equal to the unanswered messages right before it is a
        retry, and its new copy is dropped. So ``runner.with_retry()`` is safe. A
        stream closed before its end stores no reply and frees the thread.

    One run per thread:
        A run holds the thread's lease in the store (renewed while it runs, expiring
        ``lease_ttl`` seconds after a crash). Another run on the same thread waits up
        to ``wait_timeout`` seconds, then raises `ThreadBusyError` having stored
        nothing; this holds across processes sharing the database. Runs on different
        threads run in parallel.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    store: BaseStore
    """The store holding the threads, their assistants and their messages."""
    llm: SkipValidation[BaseChatOpenAI]
    """The chat model that completes runs (``ChatOpenAI`` or another model of
    langchain-openai's ``BaseChatOpenAI`` family); never changed by the runner."""
    window: int | None = Field(default=None, ge=1)
    """How many of the conversation's newest messages a run sends (more to complete
    the tool turn it answers); ``None`` for all."""
    max_tokens_context: int | None = Field(default=None, ge=1)
    """A token budget for system messages + context, trimmed oldest first; optional."""
    token_counter: Callable[[list[LCBaseMessage]], int] = count_tokens_approximately
    """Counts the tokens of a list of messages, for ``max_tokens_context``."""
    tools: SkipValidation[
        Sequence[Mapping[str, Any] | type | BaseTool | Callable[..., Any]]
    ] = ()
    """Tools bound to the model with ``llm.bind_tools``: anything it accepts (OpenAI
    tool dicts, JSON schemas, functions, pydantic models, TypedDicts, BaseTools)."""
    assistant_class: type[BaseAssistant] = BaseAssistant
    """The class assistants are read as; subclasses come back as themselves anyway."""
    wait_timeout: float = Field(default=30.0, ge=0)
    """Seconds a run waits for a busy thread before raising `ThreadBusyError`."""
    lease_ttl: float = Field(default=60.0, gt=0)
    """Seconds a run's lease outlives a crashed process; renewed while a run lives."""
    message_cache_size: int = Field(default=20_000, ge=0)
    """Messages kept rebuilt in memory, so a turn rebuilds only new ones; 0 for none."""

    _model: Runnable[LanguageModelInput, LCBaseMessage] = PrivateAttr()
    _cache: _messages.MessageCache = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        """Check every option; raise `RetroValueError` naming the bad ones.

        Raises:
            RetroValueError: For an option of the wrong type or out of range, an
                ``llm`` that is not a ``BaseChatOpenAI`` model, or ``tools`` it cannot
                bind.
        """
        _check_llm(data.get("llm"))
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise RetroValueError(f"Invalid ThreadRunner options: {exc}") from exc

    @override
    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        llm = _chat_completions_model(self.llm)
        self._model = _with_tools(llm, self.tools)
        self._cache = _messages.MessageCache(self.message_cache_size)

    @property
    @override
    def config_specs(self) -> list[ConfigurableFieldSpec]:
        return [
            ConfigurableFieldSpec(
                id=THREAD_ID_KEY,
                annotation=str,
                name="Thread ID",
                description="The id of the ChatCompletionThread to run.",
                default="",
                is_shared=True,
            )
        ]

    @property
    def _read_limit(self) -> int | None:
        """How many of a thread's newest messages a run reads first."""
        return None if self.window is None else self.window + _READ_SLACK

    # --- invoke ----------------------------------------------------------------------

    @override
    def invoke(
        self, input: RunnerInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        check_config(config)
        return self._call_with_config(self._run, input, config, **kwargs)

    @override
    async def ainvoke(
        self, input: RunnerInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        check_config(config)
        return await self._acall_with_config(self._arun, input, config, **kwargs)

    def _run(
        self,
        input: RunnerInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AIMessage:
        thread_id = thread_id_of(config)
        given = run_input(input)
        check_call_kwargs(kwargs)
        with self._leased(thread_id, given.messages) as run:
            plan = self._drive(self._prepare(run, given.instructions))
            try:
                reply = self._model.invoke(
                    plan.messages, config, **{**plan.kwargs, **kwargs}
                )
            except Exception as exc:
                raise _model_call_error(thread_id, exc) from exc
            return self._finish(run, plan, reply)

    async def _arun(
        self,
        input: RunnerInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AIMessage:
        thread_id = thread_id_of(config)
        given = run_input(input)
        check_call_kwargs(kwargs)
        async with self._aleased(thread_id, given.messages) as run:
            plan = await self._adrive(self._prepare(run, given.instructions))
            try:
                reply = await self._model.ainvoke(
                    plan.messages, config, **{**plan.kwargs, **kwargs}
                )
            except Exception as exc:
                raise _model_call_error(thread_id, exc) from exc
            return await self._afinish(run, plan, reply)

    # --- stream ----------------------------------------------------------------------

    @override
    def stream(
        self,
        input: RunnerInput,
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> Iterator[AIMessageChunk]:
        """Stream the reply's chunks; the thread gets one complete reply at the end.

        The last chunk is empty and carries the stored reply's ``id``, so the sum of
        the chunks has the store's id, as ``invoke``'s reply does. A stream closed
        before its end stores nothing and frees the thread.
        """
        check_config(config)
        runs: list[Generator[AIMessageChunk, None, None]] = []

        def transform(
            inputs: Iterator[RunnerInput],
            run_manager: CallbackManagerForChainRun,
            config: RunnableConfig,
            **kw: Any,
        ) -> Iterator[AIMessageChunk]:
            runs.append(self._stream_run(input, config, **kw))
            return runs[-1]

        chunks = self._transform_stream_with_config(
            iter([input]), transform, config, **kwargs
        )
        try:
            yield from cast("Iterator[AIMessageChunk]", chunks)
        finally:
            # Close the run now, not when collected, so its lease is freed at once.
            cast("Generator[AIMessage, None, None]", chunks).close()
            for run in runs:
                run.close()

    @override
    async def astream(
        self,
        input: RunnerInput,
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async twin of `stream`."""
        check_config(config)

        async def one() -> AsyncIterator[RunnerInput]:
            yield input

        def transform(
            inputs: AsyncIterator[RunnerInput],
            run_manager: AsyncCallbackManagerForChainRun,
            config: RunnableConfig,
            **kw: Any,
        ) -> AsyncIterator[AIMessageChunk]:
            return self._astream_run(input, config, **kw)

        chunks = self._atransform_stream_with_config(one(), transform, config, **kwargs)
        # Closing this stream closes the run at once, so its lease is freed.
        async with contextlib.aclosing(cast("AsyncGenerator[Any, None]", chunks)):
            async for chunk in chunks:
                yield cast("AIMessageChunk", chunk)

    def _stream_run(
        self, input: RunnerInput, config: RunnableConfig, **kwargs: Any
    ) -> Generator[AIMessageChunk, None, None]:
        thread_id = thread_id_of(config)
        given = run_input(input)
        check_call_kwargs(kwargs)
        with self._leased(thread_id, given.messages) as run:
            plan = self._drive(self._prepare(run, given.instructions))
            chunks: list[AIMessageChunk] = []
            model_stream = self._model.stream(
                plan.messages, config, **{**plan.kwargs, **kwargs}
            )
            with contextlib.closing(cast("Generator[Any, None, None]", model_stream)):
                while True:
                    try:
                        chunk = next(model_stream)
                    except StopIteration:
                        break
                    except Exception as exc:
                        raise _model_call_error(thread_id, exc) from exc
                    chunks.append(cast("AIMessageChunk", chunk))
                    yield chunks[-1]
            if not chunks:
                raise _model_call_error(thread_id, ValueError("empty stream"))
            reply = self._finish(run, plan, _merged(chunks))
        yield _id_chunk(reply)

    async def _astream_run(
        self, input: RunnerInput, config: RunnableConfig, **kwargs: Any
    ) -> AsyncGenerator[AIMessageChunk, None]:
        thread_id = thread_id_of(config)
        given = run_input(input)
        check_call_kwargs(kwargs)
        async with self._aleased(thread_id, given.messages) as run:
            plan = await self._adrive(self._prepare(run, given.instructions))
            chunks: list[AIMessageChunk] = []
            model_stream = self._model.astream(
                plan.messages, config, **{**plan.kwargs, **kwargs}
            )
            async with contextlib.aclosing(
                cast("AsyncGenerator[Any, None]", model_stream)
            ):
                while True:
                    try:
                        chunk = await anext(model_stream)
                    except StopAsyncIteration:
                        break
                    except Exception as exc:
                        raise _model_call_error(thread_id, exc) from exc
                    chunks.append(cast("AIMessageChunk", chunk))
                    yield chunks[-1]
            if not chunks:
                raise _model_call_error(thread_id, ValueError("empty stream"))
            reply = await self._afinish(run, plan, _merged(chunks))
        yield _id_chunk(reply)

    # --- the store side of a run -----------------------------------------------------

    def _prepare(
        self, run: _Run, instructions: Sequence[LCBaseMessage] = ()
    ) -> _Steps[Plan]:
        """Check what `begin_run` read, drop a retried input, plan the context.

        Written once as the further store calls it may make (rarely any); `_drive`
        and `_adrive` run it.
        """
        thread_id = run.thread_id
        start = run.start
        try:
            thread = _as_run_thread(start.thread, thread_id)
            if start.assistant is None:
                raise AssistantNotFoundError(thread.assistant_id)  # noqa: TRY301
            assistant = self.assistant_class._from(start.assistant)
        except Exception:
            # A run that cannot start stores nothing: take its input back out.
            yield from _delete_step(thread_id, start.appended)
            raise
        appended = start.appended
        rows = start.context
        limit = self._read_limit
        while True:
            complete = limit is None or len(rows) < limit
            if appended:
                is_retry = retried(rows, appended, thread.hwm, complete)
                if is_retry is None:
                    limit = 2 * cast("int", limit)
                    rows = yield from _read_step(thread_id, limit)
                    continue
                if is_retry:  # rare: deleting beats reading the tail on every run
                    yield from _delete_step(thread_id, appended)
                    dropped = {message.id for message in appended}
                    rows = [row for row in rows if row.id not in dropped]
                appended = []
            plan = plan_run(
                thread=thread,
                assistant=assistant,
                rows=rows,
                complete=complete,
                window=self.window,
                instructions=instructions,
                max_tokens_context=self.max_tokens_context,
                token_counter=self.token_counter,
                rebuild=lambda rows: self._cache.rebuild(
                    [(row.id, row.payload) for row in rows], thread_id=thread_id
                ),
            )
            if plan is not None:
                return plan
            limit = 2 * cast("int", limit)
            rows = yield from _read_step(thread_id, limit)

    def _drive(self, steps: _Steps[T]) -> T:
        result: Any = None
        while True:
            try:
                call = steps.send(result)
            except StopIteration as done:
                return cast("T", done.value)
            result = getattr(self.store, call.method)(*call.args, **call.kwargs)

    async def _adrive(self, steps: _Steps[T]) -> T:
        result: Any = None
        while True:
            try:
                call = steps.send(result)
            except StopIteration as done:
                return cast("T", done.value)
            method = getattr(self.store, "a" + call.method)
            result = await method(*call.args, **call.kwargs)

    def _finish(self, run: _Run, plan: Plan, reply: LCBaseMessage) -> AIMessage:
        new, patch = _reply_write(reply, plan, run.owner)
        run.stop_renewals()  # so that none lands after finish_run's release
        stored = self.store.finish_run(
            run.thread_id, owner=run.owner, reply=new, thread_patch=patch
        )
        run.finished = True
        return _stored_reply(stored)

    async def _afinish(self, run: _Run, plan: Plan, reply: LCBaseMessage) -> AIMessage:
        new, patch = _reply_write(reply, plan, run.owner)
        await run.astop_renewals()
        stored = await self.store.afinish_run(
            run.thread_id, owner=run.owner, reply=new, thread_patch=patch
        )
        run.finished = True
        return _stored_reply(stored)

    # --- the run lease ---------------------------------------------------------------

    @contextlib.contextmanager
    def _leased(self, thread_id: str, new: Sequence[NewMessage]) -> Iterator[_Run]:
        """Begin a run (waiting for a busy thread), then hold its lease until done."""
        owner = new_id("run")
        deadline = time.monotonic() + self.wait_timeout
        delay = _POLL_FIRST
        while True:
            start = self.store.begin_run(
                thread_id,
                owner=owner,
                ttl=self.lease_ttl,
                messages=new,
                context_limit=self._read_limit,
            )
            if start is not None:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _busy_error(thread_id, self.wait_timeout)
            time.sleep(_jittered(delay, remaining))
            delay = _next_poll(delay)
        held = _RENEWALS.hold(self.store, thread_id, owner, self.lease_ttl)
        run = _Run(thread_id, owner, start, held=held)
        try:
            yield run
        finally:
            run.stop_renewals()
            if not run.finished:  # finish_run gave the lease back with the reply
                self.store.release_lease(thread_id, owner)

    @contextlib.asynccontextmanager
    async def _aleased(
        self, thread_id: str, new: Sequence[NewMessage]
    ) -> AsyncIterator[_Run]:
        """Async twin of `_leased`."""
        owner = new_id("run")
        deadline = time.monotonic() + self.wait_timeout
        delay = _POLL_FIRST
        while True:
            start = await self.store.abegin_run(
                thread_id,
                owner=owner,
                ttl=self.lease_ttl,
                messages=new,
                context_limit=self._read_limit,
            )
            if start is not None:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _busy_error(thread_id, self.wait_timeout)
            await asyncio.sleep(_jittered(delay, remaining))
            delay = _next_poll(delay)
        stop = asyncio.Event()
        renewals = asyncio.create_task(self._arenew(thread_id, owner, stop))
        run = _Run(thread_id, owner, start, renewals=(stop, renewals))
        try:
            yield run
        finally:
            await run.astop_renewals()
            if not run.finished:
                await self.store.arelease_lease(thread_id, owner)

    async def _arenew(self, thread_id: str, owner: str, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), self.lease_ttl / 3)
            except TimeoutError:
                pass
            else:
                return
            try:
                kept = await self.store.aacquire_lease(thread_id, owner, self.lease_ttl)
            except Exception:
                logger.exception("Cannot renew the run lease of thread %s", thread_id)
                continue
            if not kept:
                _lease_lost(thread_id)
