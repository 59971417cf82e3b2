"""`ThreadRunner`: runs on threads, completed through Chat Completions.

The runner is the LCEL face of the run engine (``_engine``): it checks its options,
the input and the config, and hands each run to the engine, which takes the
thread's lease, records the run, plans the context (``_planning``), calls the model,
executes tools when asked, and stores the reply with the run's end in one write.
"""

from __future__ import annotations

import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, Self, TypeAlias, cast

from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    MessageLikeRepresentation,
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
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
    set_config_context,
)
from langchain_core.runnables.utils import coro_with_context
from langchain_core.tools import BaseTool
from langchain_core.tools import tool as as_tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import ConfigDict, Field, PrivateAttr, SkipValidation, ValidationError
from typing_extensions import override

from langchain_retro import _messages
from langchain_retro._completions import run_model
from langchain_retro._engine import RUN_OPTIONS, EngineSettings, RunEngine, RunRequest
from langchain_retro._inputs import (
    THREAD_ID_KEY,
    check_call_kwargs,
    check_config,
    check_run_options,
    run_input,
    thread_id_of,
)
from langchain_retro._planning import CHAT_COMPLETION_PARAMETERS
from langchain_retro.errors import RetroValueError
from langchain_retro.records import BaseAssistant
from langchain_retro.stores.base import BaseStore

__all__ = ["CHAT_COMPLETION_PARAMETERS", "THREAD_ID_KEY", "RunnerInput", "ThreadRunner"]

RunnerInput: TypeAlias = (
    str | LCBaseMessage | PromptValue | Sequence[MessageLikeRepresentation] | None
)
"""What a run accepts: text, a message, messages, a prompt value, or ``None``."""


def _check_llm(llm: object) -> None:
    if isinstance(llm, BaseChatOpenAI):
        return
    raise RetroValueError(
        f"ThreadRunner needs a ChatOpenAI (or another langchain-openai chat model) as "
        f"llm, got {type(llm).__name__}: runs are completed through Chat Completions "
        "with per-call settings only that family takes. For an OpenAI-compatible "
        'server, use ChatOpenAI(base_url="http://.../v1", model=...).'
    )


def _tool_specs(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """``tools`` as OpenAI tool dicts, each form checked as ``bind_tools`` converts it.

    Raises:
        RetroValueError: For ``tools`` that are not a list, or a tool it cannot bind.
    """
    if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Sequence):
        raise RetroValueError(
            f"ThreadRunner's tools must be a list, got {type(tools).__name__}. Pass "
            "tools=[...] (OpenAI tool dicts, functions, pydantic models, TypedDicts "
            "or BaseTools)."
        )
    specs: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        try:
            specs.append(convert_to_openai_tool(tool))
        except Exception as exc:
            raise RetroValueError(
                f"ThreadRunner cannot bind tool {index} ({type(tool).__name__}: "
                f"{str(tool)[:60]!r}): {type(exc).__name__}: {exc}. A tool is an "
                'OpenAI tool dict ({"type": "function", "function": {...}}), a JSON '
                "schema, a function with a docstring, a pydantic model, a TypedDict "
                "or a BaseTool."
            ) from exc
    return specs


def _executable(tools: Sequence[Any]) -> dict[str, BaseTool]:
    """The tools a run executes itself, by name: BaseTools and plain functions.

    Raises:
        RetroValueError: For a tool that only describes a function (a dict, a JSON
            schema, a pydantic model, a TypedDict), or two tools of one name.
    """
    executable: dict[str, BaseTool] = {}
    for index, tool in enumerate(tools):
        if isinstance(tool, BaseTool):
            made = tool
        elif callable(tool) and not isinstance(tool, type):
            made = as_tool(tool)
        else:
            raise RetroValueError(
                f"execute_tools=True runs the tools itself, but tool {index} "
                f"({type(tool).__name__}) only describes a function. Pass a BaseTool "
                "or a function (with a docstring), or leave execute_tools off and "
                "answer the run's tool calls with ToolMessages."
            )
        if made.name in executable:
            raise RetroValueError(
                f"Two tools are named {made.name!r}; execute_tools needs unique names."
            )
        executable[made.name] = made
    return executable


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
    execute_tools: bool = False
    """Run the tools the model calls inside the run (BaseTools and functions), and
    send their results back, until a reply without calls; else a reply with tool
    calls ends the run ``requires_action``."""
    max_steps: int = Field(default=10, ge=1)
    """With ``execute_tools``: the most model calls a run makes; past it the run
    ends ``incomplete`` (`RunIncompleteError`) with every step stored."""
    max_tool_concurrency: int = Field(default=8, ge=1)
    """With ``execute_tools``: how many tool calls of one reply run at once."""

    _engine: RunEngine = PrivateAttr()

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
        llm = run_model(self.llm)
        specs = _tool_specs(self.tools)
        model: Runnable[LanguageModelInput, LCBaseMessage] = (
            llm.bind_tools(list[Any](self.tools)) if specs else llm
        )
        executable = _executable(self.tools) if self.execute_tools else {}
        settings = EngineSettings(
            window=self.window,
            max_tokens_context=self.max_tokens_context,
            token_counter=self.token_counter,
            assistant_class=self.assistant_class,
            wait_timeout=self.wait_timeout,
            lease_ttl=self.lease_ttl,
            execute_tools=self.execute_tools,
            max_steps=self.max_steps,
            max_tool_concurrency=self.max_tool_concurrency,
            tool_specs=tuple(specs),
        )
        self._engine = RunEngine(
            self.store,
            model,
            settings,
            tools=executable,
            cache=_messages.MessageCache(self.message_cache_size),
        )

    @override
    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Self:
        """A copy with ``update`` applied, its engine rebuilt from the new options."""
        copied = super().model_copy(update=update, deep=deep)
        copied.model_post_init(None)
        return copied

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

    # --- invoke ----------------------------------------------------------------------

    def _request(
        self, input: RunnerInput, config: RunnableConfig, kwargs: Mapping[str, Any]
    ) -> RunRequest:
        """Check a run's input, config and keyword arguments; nothing is written."""
        thread_id = thread_id_of(config)
        given = run_input(input)
        options = {k: v for k, v in kwargs.items() if k in RUN_OPTIONS}
        call_kwargs = {k: v for k, v in kwargs.items() if k not in RUN_OPTIONS}
        check_call_kwargs(call_kwargs)
        return RunRequest(
            thread_id=thread_id,
            messages=given.messages,
            instructions=given.instructions,
            options=check_run_options(options),
            call_kwargs=call_kwargs,
            config=config,
        )

    @override
    def invoke(
        self, input: RunnerInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        # What Runnable._call_with_config does, without inspecting _run's signature
        # on every call: the run is traced as a chain, its model call as its child.
        check_config(config)
        config = ensure_config(config)
        run_manager = get_callback_manager_for_config(config).on_chain_start(
            None,
            input,
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        try:
            child = patch_config(config, callbacks=run_manager.get_child())
            with set_config_context(child) as context:
                reply = context.run(self._run, input, child, kwargs)
        except BaseException as exc:
            run_manager.on_chain_error(exc)
            raise
        run_manager.on_chain_end(reply)
        return reply

    @override
    async def ainvoke(
        self, input: RunnerInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        check_config(config)
        config = ensure_config(config)
        manager = get_async_callback_manager_for_config(config)
        run_manager = await manager.on_chain_start(
            None,
            input,
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        try:
            child = patch_config(config, callbacks=run_manager.get_child())
            with set_config_context(child) as context:
                reply = await coro_with_context(
                    self._arun(input, child, kwargs), context
                )
        except BaseException as exc:
            await run_manager.on_chain_error(exc)
            raise
        await run_manager.on_chain_end(reply)
        return reply

    def _run(
        self, input: RunnerInput, config: RunnableConfig, kwargs: Mapping[str, Any]
    ) -> AIMessage:
        return self._engine.invoke(self._request(input, config, kwargs)).reply

    async def _arun(
        self, input: RunnerInput, config: RunnableConfig, kwargs: Mapping[str, Any]
    ) -> AIMessage:
        result = await self._engine.ainvoke(self._request(input, config, kwargs))
        return result.reply

    # --- stream ----------------------------------------------------------------------

    @override
    def stream(
        self,
        input: RunnerInput,
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> Iterator[AIMessageChunk]:
        """Stream the reply's chunks; the thread gets one complete reply at the end.

        Each model call's chunks end with an empty chunk carrying the id of the
        message it stored, so the sum of a reply's chunks has the store's id, as
        ``invoke``'s reply does. With ``execute_tools``, every model call of the run
        streams in turn. A stream closed before its end cancels the run: it stores
        nothing more and frees the thread.
        """
        check_config(config)
        runs: list[Generator[AIMessageChunk, None, None]] = []

        def transform(
            inputs: Iterator[RunnerInput],
            run_manager: CallbackManagerForChainRun,
            config: RunnableConfig,
            **kw: Any,
        ) -> Iterator[AIMessageChunk]:
            runs.append(self._stream_run(input, config, kw))
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
            return self._astream_run(input, config, kw)

        chunks = self._atransform_stream_with_config(one(), transform, config, **kwargs)
        # Closing this stream closes the run at once, so its lease is freed.
        async with contextlib.aclosing(cast("AsyncGenerator[Any, None]", chunks)):
            async for chunk in chunks:
                yield cast("AIMessageChunk", chunk)

    def _stream_run(
        self, input: RunnerInput, config: RunnableConfig, kwargs: Mapping[str, Any]
    ) -> Generator[AIMessageChunk, None, None]:
        # A generator, so that bad input raises where the stream is read.
        chunks = self._engine.stream(self._request(input, config, kwargs))
        with contextlib.closing(cast("Generator[AIMessageChunk, None, None]", chunks)):
            yield from chunks

    async def _astream_run(
        self, input: RunnerInput, config: RunnableConfig, kwargs: Mapping[str, Any]
    ) -> AsyncGenerator[AIMessageChunk, None]:
        chunks = self._engine.astream(self._request(input, config, kwargs))
        async with contextlib.aclosing(
            cast("AsyncGenerator[AIMessageChunk, None]", chunks)
        ):
            async for chunk in chunks:
                yield chunk
