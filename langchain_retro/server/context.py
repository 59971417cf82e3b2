"""What a request works with: the store, its owner, and objects read as visible.

Every route takes a `Context` (a FastAPI dependency: a parameter typed `Ctx`; a
direct route, `direct`, names it `Context`).
Reading an assistant or a thread through it checks ownership, so another owner's
object is a 404 exactly as an unknown id is, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from starlette.types import Scope

from langchain_retro.errors import AssistantNotFoundError, ThreadNotFoundError
from langchain_retro.records import BaseAssistant, BaseThread
from langchain_retro.server.auth import owns
from langchain_retro.server.errors import not_found
from langchain_retro.stores.base import BaseStore, StoredAssistant, StoredThread

if TYPE_CHECKING:
    from langchain_retro.server.execution import RunService

__all__ = [
    "Context",
    "Ctx",
    "ServerSettings",
    "ServerState",
    "context",
    "context_of",
]


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs; see `create_app`."""

    lease_ttl: float = 15.0
    """Seconds a run's lease outlives a dead worker (its run then ends expired)."""
    poll_after_ms: int = 200
    """The ``openai-poll-after-ms`` header of a run still going: how long the
    openai SDK's polling helpers wait before asking again."""
    poll_wait: float = 10.0
    """Seconds a polling helper's ``GET`` of a run still going may wait for it to
    stop before answering (``X-Stainless-Poll-Helper: true``: the SDK's
    ``create_and_poll`` and kin, which ask until it stops anyway); 0 answers at
    once. Never more than half the client's read timeout."""
    max_runs: int = 64
    """Runs one worker completes at once; more get 429 (the SDK retries)."""
    shutdown_grace: float = 10.0
    """Seconds a stopping worker lets its runs and streams finish; runs still
    going then end ``cancelled``."""


@dataclass
class ServerState:
    """What the app holds: set on ``app.state.retro`` by `create_app`."""

    store: BaseStore
    settings: ServerSettings
    runs: RunService


@dataclass(frozen=True)
class Context:
    """One request's view: the store, and the owner whose objects it sees."""

    store: BaseStore
    owner: str | None
    """The owner of the request's key; ``None`` on an open server."""
    state: ServerState

    async def assistant(self, assistant_id: str) -> BaseAssistant:
        """An assistant the request may see.

        Raises:
            InvalidRequestError: 404 if there is none (or another owner's).
        """
        try:
            found = await self.store.aget_assistant(assistant_id)
        except AssistantNotFoundError:
            found = None
        return self.seen_assistant(assistant_id, found)

    def seen_assistant(
        self, assistant_id: str, stored: StoredAssistant | None
    ) -> BaseAssistant:
        """An assistant read from the store, as the request may see it.

        Raises:
            InvalidRequestError: 404 if it is ``None`` or another owner's.
        """
        if stored is None or not owns(stored.metadata, self.owner):
            raise not_found("assistant", assistant_id)
        return BaseAssistant._from(stored)

    async def thread(self, thread_id: str) -> BaseThread:
        """A thread the request may see.

        Raises:
            InvalidRequestError: 404 if there is none (or another owner's).
        """
        try:
            found = await self.store.aget_thread(thread_id)
        except ThreadNotFoundError:
            found = None
        return self.seen_thread(thread_id, found)

    def seen_thread(self, thread_id: str, stored: StoredThread | None) -> BaseThread:
        """A thread read from the store, as the request may see it.

        Raises:
            InvalidRequestError: 404 if it is ``None`` or another owner's.
        """
        if stored is None or not owns(stored.metadata, self.owner):
            raise not_found("thread", thread_id)
        return BaseThread._from(stored)


def context_of(state: ServerState, scope: Scope) -> Context:
    """A request's `Context`, from the app's state and the request's ASGI scope.

    The owner is the one the auth middleware put in the scope.
    """
    owner: str | None = scope.get("retro.owner")
    return Context(store=state.store, owner=owner, state=state)


async def context(request: Request) -> Context:
    """The FastAPI dependency: the request's `Context` (auth ran in middleware).

    A coroutine, so FastAPI calls it on the event loop, not in a worker thread.
    """
    return context_of(request.app.state.retro, request.scope)


Ctx = Annotated[Context, Depends(context)]
"""A route's parameter type: the request's `Context`."""
