"""Runs in the background of a worker, completed by the run engine.

A request that creates a run hands `RunService.start` a `RunRequest`; the run is
completed by `RunEngine` (the engine `ThreadRunner` uses) on the worker's event
loop, as a task that outlives the request. ``start`` returns as soon as the engine
has created the run (or continued it with its tool outputs), so the response
carries the run; a busy thread raises `ThreadBusyError` at once instead of waiting.

`ServedDriver` is the engine's async driver with two additions: it reports the run
as soon as it exists, and, for a stream, it streams each model call itself, giving
the reply its message id first and reporting every chunk to `RunEvents`.

One active run per thread holds across workers through the store's run lease; a
cancel reaches a run of this worker at once and one of another worker at its next
lease renewal (every third of ``lease_ttl``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any, NamedTuple, cast

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, message_chunk_to_message
from langchain_core.messages import BaseMessage as LCBaseMessage
from langchain_core.runnables import Runnable
from langchain_openai.chat_models.base import BaseChatOpenAI

from langchain_retro._completions import run_model
from langchain_retro._drivers import AsyncDriver, Cancelled, Complete, Effect
from langchain_retro._engine import EngineSettings, RunEngine, RunRequest
from langchain_retro._messages import MessageCache
from langchain_retro.errors import RetroError
from langchain_retro.server.context import ServerSettings
from langchain_retro.server.errors import RateLimitError
from langchain_retro.server.events import RunEvents
from langchain_retro.stores.base import BaseStore, RunSaved, RunStart, StoredRun

__all__ = ["RunService", "ServedDriver"]

logger = logging.getLogger("langchain_retro.server.runs")

_CACHE_SIZE = 20_000


class ServedDriver(AsyncDriver):
    """The engine's async driver, reporting the run to a server (and a stream)."""

    def __init__(self, engine: RunEngine, events: RunEvents | None) -> None:
        super().__init__(engine, None)
        self.events = events
        self.started: asyncio.Future[StoredRun] = (
            asyncio.get_running_loop().create_future()
        )
        """Resolved with the run once the engine created (or continued) it."""
        self.created: StoredRun | None = None
        """The run as the engine created (or continued) it."""
        self.saved: StoredRun | None = None
        """The run as the engine's last write left it."""

    async def perform(self, effect: Effect) -> Any:
        """Perform an effect; report a run created, and a reply or an end written.

        A stream's run is reported on the loop's next turn: by then the run has
        sent its model call, which goes on while the response starts.
        """
        if isinstance(effect, Complete) and self.events is not None:
            return await self._streamed(effect)
        result = await super().perform(effect)
        if isinstance(result, RunStart):
            self.created = result.run
            if self.events is None:
                self.report(None)
            else:
                self.events.started(result)
                asyncio.get_running_loop().call_soon(self.report, None)
        elif isinstance(result, RunSaved):
            self.saved = result.run
            if self.events is not None:
                self.events.saved(result)
        return result

    def report(self, failure: BaseException | None) -> None:
        """Resolve `started`, once: the run if it exists, else the failure.

        Args:
            failure: Why the run ended before it was reported, if it did.
        """
        if self.started.done():
            return
        if self.created is not None:
            self.started.set_result(self.created)
        elif failure is not None:
            self.started.set_exception(failure)

    def cancel(self) -> None:
        """Stop the run's model call now: a cancel asked through this worker."""
        if self.keeper is not None:
            self.keeper.cancel_event.set()

    async def _streamed(self, effect: Complete) -> AIMessage:
        """One model call, streamed to the events; a cancel stops it."""
        events = cast("RunEvents", self.events)
        reply_id = events.reply_id()
        chunks: list[AIMessageChunk] = []

        async def read() -> None:
            stream = self.engine.model.astream(
                effect.messages, None, **{"stream_usage": True, **effect.kwargs}
            )
            try:
                async for chunk in stream:
                    piece = cast("AIMessageChunk", chunk)
                    chunks.append(piece)
                    events.chunk(piece)
            finally:
                with contextlib.suppress(Exception):
                    await cast("Any", stream).aclose()

        await self.until_cancelled(read())
        if not chunks:
            raise ValueError("the model's stream was empty")
        total = chunks[0] + chunks[1:] if len(chunks) > 1 else chunks[0]
        reply = cast("AIMessage", message_chunk_to_message(total))
        return reply.model_copy(update={"id": reply_id})


class _Running(NamedTuple):
    """A run this worker completes, and who asked for it.

    Its driver, the task that drives it, and the thread and owner of the request
    that started (or continued) it.
    """

    driver: ServedDriver
    task: asyncio.Task[None]
    thread_id: str
    owner: str | None


class RunService:
    """The runs a worker completes in the background, and their cancels.

    Args:
        store: The store.
        llm: The chat model; pinned to Chat Completions as `ThreadRunner` does.
        settings: The server's settings.
    """

    def __init__(
        self, store: BaseStore, llm: BaseChatOpenAI, settings: ServerSettings
    ) -> None:
        self.store = store
        self.model: Runnable[LanguageModelInput, LCBaseMessage] = run_model(llm)
        self.settings = settings
        self.cache = MessageCache(_CACHE_SIZE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, _Running] = {}
        """This worker's runs still going, by id."""

    def __len__(self) -> int:
        """How many runs this worker is completing."""
        return len(self._tasks)

    async def start(
        self,
        request: RunRequest,
        *,
        tools: list[dict[str, Any]],
        owner: str | None,
        events: RunEvents | None = None,
    ) -> StoredRun:
        """Start a run in the background; returns it once created (or continued).

        Args:
            request: The run: its thread, input, options and model parameters.
            tools: The tools it offers (recorded on the run).
            owner: The owner of the request's key (who may `wait` for the run
                without reading it first); ``None`` on an open server.
            events: Where its stream goes, for ``stream: true``.

        Raises:
            RateLimitError: If the worker runs ``max_runs`` runs already.
            ThreadBusyError: If another run holds the thread.
            RetroError: What the engine raised before the run existed.
        """
        if len(self._tasks) >= self.settings.max_runs:
            raise RateLimitError(
                f"This server is completing {len(self._tasks)} runs, its limit per "
                "worker; retry shortly.",
                retry_after=1.0,
            )
        settings = EngineSettings(
            wait_timeout=0,
            lease_ttl=self.settings.lease_ttl,
            tool_specs=tuple(tools),
            reply_ids=events is not None,
            answer_again=True,
        )
        engine = RunEngine(self.store, self.model, settings, cache=self.cache)
        driver = ServedDriver(engine, events)
        # Read even if the request is gone, so an error is never left unretrieved.
        driver.started.add_done_callback(
            lambda future: future.cancelled() or future.exception()
        )
        task = asyncio.create_task(self._complete(driver, engine, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        run = await asyncio.shield(driver.started)
        if not task.done():
            self._running[run.id] = _Running(driver, task, run.thread_id, owner)
            task.add_done_callback(functools.partial(self._forget, run.id))
        return run

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        """Drop a run's entries once its task is done, unless a newer task holds it.

        A run waiting for tool outputs can be continued by a new task as soon as
        its pause is stored, before the task that paused it is done.
        """
        running = self._running.get(run_id)
        if running is not None and running.task is task:
            del self._running[run_id]

    async def _complete(
        self, driver: ServedDriver, engine: RunEngine, request: RunRequest
    ) -> None:
        """Run the engine to the run's end; a start that failed reaches `start`."""
        try:
            await driver.run(engine.steps(request))
            driver.report(None)
        except (RetroError, Cancelled) as exc:
            # The run's end (failed, cancelled, incomplete) is stored; or it never
            # started, and the request that asked for it answers the error.
            driver.report(exc)
        except asyncio.CancelledError:
            driver.report(None)
            if not driver.started.done():
                driver.started.cancel()
            raise
        except Exception as exc:
            logger.exception("Run on thread %s failed", request.thread_id)
            driver.report(exc)
        finally:
            if driver.events is not None:
                await self._close_stream(driver)

    async def _close_stream(self, driver: ServedDriver) -> None:
        """End a stream with the run's last event, as stored, if it did not go out."""
        events = cast("RunEvents", driver.events)
        created = driver.created
        if not events.ended and created is not None and events.run is not None:
            try:
                run = await self.store.aget_run(events.run.thread_id, created.id)
            except Exception:  # the thread was deleted meanwhile, say
                logger.exception("Cannot read run %s to end its stream", created.id)
            else:
                events.ended_with(run)
        events.close()

    def is_running(self, run_id: str) -> bool:
        """Whether this worker is completing the run (or continuing it)."""
        return run_id in self._running

    def started_by(self, thread_id: str, run_id: str, owner: str | None) -> bool:
        """Whether this worker completes the run, for a request like this one.

        That is, a run of that thread started (or continued) by a request of that
        owner: a request that may see it, with no need to read it.
        """
        running = self._running.get(run_id)
        return (
            running is not None
            and running.thread_id == thread_id
            and running.owner == owner
        )

    async def wait(self, run_id: str, seconds: float) -> StoredRun | None:
        """Wait until this worker's run stops or pauses, at most ``seconds``.

        The run's task ends once the engine has stored where the run stopped
        (completed, failed, cancelled, incomplete, or waiting for tool outputs).

        Args:
            run_id: The run.
            seconds: The longest wait.

        Returns:
            The run as the task's last write left it, once the task ended; ``None``
            if it goes on, is not this worker's, or ended without writing it.
        """
        running = self._running.get(run_id)
        if running is None:
            return None
        await asyncio.wait({running.task}, timeout=seconds)
        return running.driver.saved if running.task.done() else None

    def cancel(self, run_id: str) -> None:
        """Stop a run of this worker now, if it is one (after the store's cancel)."""
        running = self._running.get(run_id)
        if running is not None:
            running.driver.cancel()

    async def shutdown(self) -> None:
        """Let runs in flight finish within the grace period, then cancel them."""
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
