"""The I/O side of a run: its effects, and the drivers that perform them.

The run engine (``_engine``) writes a run once, as a generator of the effects below;
`SyncDriver` performs them with blocking calls and `AsyncDriver` on an event loop,
each either returning the run's result (``run``) or streaming the model's chunks as
they come (``stream``). A driver also holds the run's lease renewals (``_leases``),
stops a model call when a renewal finds that the run was cancelled, executes tool
calls in parallel, and gives back the lease of a run abandoned midway (a stream
closed early, an interrupt): that run ends ``cancelled``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import json
import queue
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar, cast

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ToolCall,
    ToolMessage,
    message_chunk_to_message,
)
from langchain_core.messages import BaseMessage as LCBaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool

from langchain_retro._leases import KEEPER, AsyncLeaseKeeper, HeldLease
from langchain_retro._steps import Call, Steps
from langchain_retro.stores.base import BaseStore, RunUpdate

__all__ = [
    "AsyncDriver",
    "Cancelled",
    "Complete",
    "Effect",
    "Emit",
    "Engine",
    "Hold",
    "RunTools",
    "Sleep",
    "SyncDriver",
    "Unhold",
]

R = TypeVar("R")


class Engine(Protocol):
    """What a driver needs of the engine whose effects it performs."""

    store: BaseStore
    model: Runnable[LanguageModelInput, LCBaseMessage]
    tools: Mapping[str, BaseTool]

    @property
    def lease_ttl(self) -> float:
        """Seconds a run's lease lasts unless renewed."""

    @property
    def max_tool_concurrency(self) -> int:
        """How many tool calls run at once."""


# --- effects ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait before trying a busy thread again."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Hold:
    """The run took the lease: keep it renewed. Answered with nothing."""

    thread_id: str
    owner: str
    run_id: str


@dataclass(frozen=True, slots=True)
class Unhold:
    """Stop renewing: the run's last write comes next."""


@dataclass(frozen=True, slots=True)
class Complete:
    """Call the model; answered with its `AIMessage` (or its error, thrown in)."""

    messages: list[LCBaseMessage]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunTools:
    """Execute tool calls; answered with their `ToolMessage`s, in order."""

    calls: list[ToolCall]


@dataclass(frozen=True, slots=True)
class Emit:
    """Show a chunk to a stream (ignored by invoke)."""

    chunk: AIMessageChunk


Effect: TypeAlias = Call[Any] | Sleep | Hold | Unhold | Complete | RunTools | Emit


class Cancelled(Exception):  # noqa: N818
    """Thrown into a run when its keeper saw a cancel."""


def _merged(chunks: Sequence[AIMessageChunk]) -> AIMessage:
    total = chunks[0] + list(chunks[1:]) if len(chunks) > 1 else chunks[0]
    return cast("AIMessage", message_chunk_to_message(total))


# --- drivers ---------------------------------------------------------------------


class _DaemonPool:
    """Daemon worker threads for sync model calls and tools.

    Unlike ``ThreadPoolExecutor``'s, its threads never hold the process open: a call
    abandoned after a cancel may still be waiting on the network when the program
    ends. Idle workers are reused; a new one starts when none is idle.
    """

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, fn: Callable[[], R]) -> concurrent.futures.Future[R]:
        """Run ``fn`` (in a copy of the caller's context) on a worker."""
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        context = contextvars.copy_context()
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        self._tasks.put((lambda: context.run(fn), future))
        if start:
            threading.Thread(
                target=self._work, name="langchain-retro-run", daemon=True
            ).start()
        return future

    def _work(self) -> None:
        while True:
            fn, future = self._tasks.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the waiter
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1


_POOL = _DaemonPool()
_END = object()
"""Marks the end of a model's stream."""
"""Threads for sync model calls (so a cancel can stop waiting) and tools."""


@dataclass(eq=False)
class _Active:
    """The lease a driver holds for its run, to give back if the run is abandoned."""

    thread_id: str
    owner: str
    run_id: str


class SyncDriver:
    def __init__(self, engine: Engine, config: RunnableConfig | None) -> None:
        self.engine = engine
        self.config = config
        self.active: _Active | None = None
        self.held: HeldLease | None = None

    def run(self, steps: Steps[Effect, R]) -> R:
        try:
            effect = next(steps)
            while True:
                try:
                    result = self.perform(effect)
                except BaseException as exc:  # thrown into the run, which decides
                    effect = steps.throw(exc)
                    continue
                effect = steps.send(result)
        except StopIteration as done:
            return cast("R", done.value)
        finally:
            steps.close()
            self.abandon()

    def stream(self, steps: Steps[Effect, Any]) -> Iterator[AIMessageChunk]:
        try:
            effect = next(steps)
            while True:
                result: Any = None
                try:
                    if isinstance(effect, Complete):
                        chunks: list[AIMessageChunk] = []
                        for chunk in self._stream_model(effect):
                            chunks.append(chunk)
                            yield chunk
                        if not chunks:
                            raise ValueError("the model's stream was empty")  # noqa: TRY301
                        result = _merged(chunks)
                    elif isinstance(effect, Emit):
                        yield effect.chunk
                    else:
                        result = self.perform(effect)
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    effect = steps.throw(exc)
                    continue
                effect = steps.send(result)
        except StopIteration:
            return
        finally:
            steps.close()
            self.abandon()

    def _stream_model(self, effect: Complete) -> Iterator[AIMessageChunk]:
        """The model's chunks, read by a worker so that a cancel stops the wait."""
        held = self.held
        model, config = self.engine.model, self.config
        chunks: queue.SimpleQueue[tuple[Any, BaseException | None]] = (
            queue.SimpleQueue()
        )
        stop = threading.Event()

        def pump() -> None:
            stream = model.stream(effect.messages, config, **effect.kwargs)
            try:
                for chunk in stream:
                    chunks.put((chunk, None))
                    if stop.is_set():
                        break
            except BaseException as exc:  # handed to the reader
                chunks.put((None, exc))
            else:
                chunks.put((_END, None))
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()

        _POOL.submit(pump)
        poll = _cancel_poll(held.ttl) if held is not None else None
        try:
            while True:
                try:
                    chunk, error = chunks.get(timeout=poll)
                except queue.Empty:
                    if held is not None and held.cancelled.is_set():
                        raise Cancelled from None
                    continue
                if error is not None:
                    raise error
                if chunk is _END:
                    return
                if held is not None and held.cancelled.is_set():
                    raise Cancelled
                yield cast("AIMessageChunk", chunk)
        finally:
            stop.set()

    def perform(self, effect: Effect) -> Any:
        """Perform one effect; returns what the run receives for it."""
        if isinstance(effect, Call):
            return effect.sync()
        if isinstance(effect, Complete):
            return self._complete(effect)
        if isinstance(effect, RunTools):
            return self._run_tools(effect)
        if isinstance(effect, Hold):
            engine = self.engine
            self.active = _Active(effect.thread_id, effect.owner, effect.run_id)
            self.held = KEEPER.hold(
                engine.store, effect.thread_id, effect.owner, engine.lease_ttl
            )
        elif isinstance(effect, Unhold):
            self._unhold()
        elif isinstance(effect, Sleep):
            time.sleep(effect.seconds)
        return None  # Emit: nothing to show

    def _unhold(self) -> None:
        if self.held is not None:
            KEEPER.drop(self.held)
            self.held = None
        self.active = None

    def _complete(self, effect: Complete) -> Any:
        held = self.held
        model = self.engine.model
        messages, kwargs, config = effect.messages, effect.kwargs, self.config
        future = _POOL.submit(lambda: model.invoke(messages, config, **kwargs))
        if held is None:
            return future.result()
        while True:
            try:
                # Wake up now and then to see whether a renewal found a cancel.
                return future.result(timeout=_cancel_poll(held.ttl))
            except concurrent.futures.TimeoutError:
                if held.cancelled.is_set():
                    future.cancel()
                    raise Cancelled from None

    def _run_tools(self, effect: RunTools) -> list[ToolMessage]:
        calls = effect.calls
        if len(calls) == 1:
            return [_run_tool(self.engine.tools, calls[0], self.config)]
        limit = self.engine.max_tool_concurrency
        tools, config = self.engine.tools, self.config
        results: list[ToolMessage] = []
        for offset in range(0, len(calls), limit):
            futures = [
                _POOL.submit(functools.partial(_run_tool, tools, tool_call, config))
                for tool_call in calls[offset : offset + limit]
            ]
            results += [future.result() for future in futures]
        return results

    def abandon(self) -> None:
        """Give back a lease still held by a run that ended abruptly (cancelled)."""
        active = self.active
        if active is None:
            return
        self._unhold()
        try:
            self.engine.store.finish_run(
                active.thread_id,
                owner=active.owner,
                run_id=active.run_id,
                update=RunUpdate(status="cancelled"),
            )
        except Exception:  # the lease lapses on its own
            return


class AsyncDriver:
    def __init__(self, engine: Engine, config: RunnableConfig | None) -> None:
        self.engine = engine
        self.config = config
        self.active: _Active | None = None
        self.keeper: AsyncLeaseKeeper | None = None

    async def run(self, steps: Steps[Effect, R]) -> R:
        try:
            effect = next(steps)
            while True:
                try:
                    result = await self.perform(effect)
                except BaseException as exc:
                    effect = steps.throw(exc)
                    continue
                effect = steps.send(result)
        except StopIteration as done:
            return cast("R", done.value)
        finally:
            steps.close()
            await self.abandon()

    async def stream(self, steps: Steps[Effect, Any]) -> AsyncIterator[AIMessageChunk]:
        try:
            effect = next(steps)
            while True:
                result: Any = None
                try:
                    if isinstance(effect, Complete):
                        chunks: list[AIMessageChunk] = []
                        async for chunk in self._stream_model(effect):
                            chunks.append(chunk)
                            yield chunk
                        if not chunks:
                            raise ValueError("the model's stream was empty")  # noqa: TRY301
                        result = _merged(chunks)
                    elif isinstance(effect, Emit):
                        yield effect.chunk
                    else:
                        result = await self.perform(effect)
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    effect = steps.throw(exc)
                    continue
                effect = steps.send(result)
        except StopIteration:
            return
        finally:
            steps.close()
            await self.abandon()

    async def _stream_model(self, effect: Complete) -> AsyncIterator[AIMessageChunk]:
        stream = self.engine.model.astream(
            effect.messages, self.config, **effect.kwargs
        )
        try:
            async for chunk in stream:
                if self.keeper is not None and self.keeper.cancel_event.is_set():
                    raise Cancelled
                yield cast("AIMessageChunk", chunk)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def perform(self, effect: Effect) -> Any:
        """Perform one effect; returns what the run receives for it."""
        if isinstance(effect, Call):
            return await effect.async_()
        if isinstance(effect, Complete):
            return await self._complete(effect)
        if isinstance(effect, RunTools):
            return await self._run_tools(effect)
        if isinstance(effect, Hold):
            engine = self.engine
            self.active = _Active(effect.thread_id, effect.owner, effect.run_id)
            self.keeper = AsyncLeaseKeeper(
                engine.store, effect.thread_id, effect.owner, engine.lease_ttl
            )
        elif isinstance(effect, Unhold):
            await self._unhold()
        elif isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
        return None  # Emit: nothing to show

    async def _unhold(self) -> None:
        if self.keeper is not None:
            await self.keeper.stop()
            self.keeper = None
        self.active = None

    async def _complete(self, effect: Complete) -> Any:
        return await self.until_cancelled(
            self.engine.model.ainvoke(effect.messages, self.config, **effect.kwargs)
        )

    async def until_cancelled(self, work: Awaitable[R]) -> R:
        """Await ``work``; a cancel the lease keeper sees first stops it.

        Raises:
            Cancelled: If the run was cancelled before ``work`` ended.
        """
        task = asyncio.ensure_future(work)
        keeper = self.keeper
        if keeper is None:
            return await task
        cancel_task = asyncio.ensure_future(keeper.cancel_event.wait())
        try:
            done, _ = await asyncio.wait(
                {task, cancel_task}, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            task.cancel()
            raise
        finally:
            cancel_task.cancel()
        if task in done:
            return task.result()
        task.cancel()
        raise Cancelled

    async def _run_tools(self, effect: RunTools) -> list[ToolMessage]:
        limit = asyncio.Semaphore(self.engine.max_tool_concurrency)

        async def one(tool_call: ToolCall) -> ToolMessage:
            async with limit:
                return await _arun_tool(self.engine.tools, tool_call, self.config)

        return list(await asyncio.gather(*(one(c) for c in effect.calls)))

    async def abandon(self) -> None:
        active = self.active
        if active is None:
            return
        await self._unhold()
        try:
            await self.engine.store.afinish_run(
                active.thread_id,
                owner=active.owner,
                run_id=active.run_id,
                update=RunUpdate(status="cancelled"),
            )
        except Exception:  # the lease lapses on its own
            return


def _cancel_poll(ttl: float) -> float:
    """How often a sync model call looks for a cancel seen by a renewal."""
    return max(0.01, min(0.25, ttl / 12))


def _tool_error(tool_call: ToolCall, why: str) -> ToolMessage:
    return ToolMessage(
        content=f"Error: {why}",
        tool_call_id=tool_call["id"] or "",
        name=tool_call["name"],
        status="error",
    )


def _tool_result(tool_call: ToolCall, output: Any) -> ToolMessage:
    if isinstance(output, ToolMessage):
        return output
    content = output if isinstance(output, str) else json.dumps(output, default=str)
    return ToolMessage(
        content=content, tool_call_id=tool_call["id"] or "", name=tool_call["name"]
    )


def _run_tool(
    tools: Mapping[str, BaseTool], tool_call: ToolCall, config: RunnableConfig | None
) -> ToolMessage:
    tool = tools.get(tool_call["name"])
    if tool is None:
        return _tool_error(
            tool_call, f"no tool named {tool_call['name']!r}; tools: {sorted(tools)}"
        )
    try:
        return _tool_result(
            tool_call, tool.invoke({**tool_call, "type": "tool_call"}, config)
        )
    except Exception as exc:  # the model is told, and may recover
        return _tool_error(tool_call, f"{type(exc).__name__}: {exc}")


async def _arun_tool(
    tools: Mapping[str, BaseTool], tool_call: ToolCall, config: RunnableConfig | None
) -> ToolMessage:
    tool = tools.get(tool_call["name"])
    if tool is None:
        return _tool_error(
            tool_call, f"no tool named {tool_call['name']!r}; tools: {sorted(tools)}"
        )
    try:
        output = await tool.ainvoke({**tool_call, "type": "tool_call"}, config)
    except Exception as exc:
        return _tool_error(tool_call, f"{type(exc).__name__}: {exc}")
    return _tool_result(tool_call, output)
