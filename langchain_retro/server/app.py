"""`create_app`: the Assistants v2 API as a FastAPI app, over a store and a model.

The app is an ordinary ASGI app: ``langchain-retro serve`` runs it with uvicorn,
and it can be mounted in an existing app. Around the routes:

* authentication (`auth`): ``Authorization: Bearer KEY`` on every request but
  ``/healthz`` when keys are configured, 401 otherwise;
* an access log (logger ``langchain_retro.server.access``): method, path, status and
  time, never a header, so never a key;
* a ``POST`` repeated with its ``Idempotency-Key`` answered once (`idempotency`);
* errors answered in OpenAI's shape (`errors`), request validation included (400
  naming the ``param``), unknown routes included (404);
* innermost, the busiest routes (adding a message, creating and reading a run)
  served without FastAPI's request machinery (`direct`);
* on shutdown, runs in flight get ``shutdown_grace`` seconds to finish (their
  streams with them), then end ``cancelled``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from langchain_openai.chat_models.base import BaseChatOpenAI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langchain_retro._metadata import OPENAI_LIMITS, MetadataLimits
from langchain_retro.errors import RetroError
from langchain_retro.server.auth import Keyring
from langchain_retro.server.context import ServerSettings, ServerState
from langchain_retro.server.direct import DirectRoutes, route_path
from langchain_retro.server.errors import (
    AuthenticationError,
    error_body,
    error_json,
    validation_error_json,
)
from langchain_retro.server.execution import RunService
from langchain_retro.server.idempotency import IdempotencyMiddleware
from langchain_retro.server.routes import (
    assistants,
    messages,
    retro,
    runs,
    threads,
    unsupported,
)
from langchain_retro.stores.base import BaseStore

__all__ = ["create_app"]

access_log = logging.getLogger("langchain_retro.server.access")


def create_app(
    *,
    store: BaseStore,
    llm: BaseChatOpenAI,
    api_keys: Iterable[str] | Mapping[str, str] | None = None,
    settings: ServerSettings | None = None,
    metadata_limits: MetadataLimits = OPENAI_LIMITS,
    retro_routes: bool = True,
    thread_listing: bool = True,
) -> FastAPI:
    """The Assistants v2 API over ``store``, completing runs with ``llm``.

    Args:
        store: The store of assistants, threads, messages and runs; the app does
            not close it.
        llm: A ``ChatOpenAI`` (or another langchain-openai chat model): runs send
            it the model, temperature, top_p and instructions of their assistant
            and their own overrides, through Chat Completions.
        api_keys: The keys clients send as ``Authorization: Bearer KEY``: a list
            of keys (each its own owner) or ``OWNER:KEY`` entries (keys with one
            owner share objects), or a mapping of key to owner. ``None`` or empty:
            the app is open to any request; serve it on loopback only.
        settings: Leases, polling, run limits and shutdown (`ServerSettings`).
        metadata_limits: The limits of the ``/v1/retro`` routes (the store
            protocol `AssistantsAPIStore` speaks); ``UNLIMITED`` lifts them. The
            Assistants API routes keep OpenAI's.
        retro_routes: Serve the ``/v1/retro`` routes (the store protocol of
            `AssistantsAPIStore`'s ``retro`` mode). ``False`` leaves a server that
            speaks only the Assistants API, as other Assistants-compatible servers
            do (``serve --no-retro-routes``).
        thread_listing: Serve ``GET /v1/threads``, this server's listing
            extension; ``False`` answers it 404, as OpenAI does
            (``serve --no-thread-listing``).

    Returns:
        The FastAPI app. Mounted in another app (``parent.mount("/retro", app)``),
        its keys still guard every path but ``/healthz``; Starlette does not run a
        mounted app's lifespan, so enter ``app.router.lifespan_context(app)`` in
        the parent's for runs to end cleanly on shutdown.
    """
    keyring = Keyring.of(api_keys)
    settings = settings or ServerSettings()
    runs_service = RunService(store, llm, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await runs_service.shutdown()

    app = FastAPI(
        title="langchain-retro",
        description="The Assistants v2 API, with runs through Chat Completions.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    state = ServerState(store=store, settings=settings, runs=runs_service)
    app.state.retro = state
    # Routes are tried in order: the busiest first (messages, then runs), and
    # /threads/runs before /threads/{thread_id}, which would take it.
    routers = [messages.router, runs.router, threads.router, assistants.router]
    if thread_listing:
        routers.append(threads.listing_router)
    routers.append(unsupported.router)
    if retro_routes:
        routers.append(retro.router)
    for router in routers:
        app.include_router(router)
    setattr(app.state, retro.LIMITS_STATE, metadata_limits)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse(
            {"status": "ok", "worker": os.getpid(), "runs_in_flight": len(runs_service)}
        )

    _install_error_handlers(app)
    # Innermost: the busiest routes, served without FastAPI's request machinery.
    direct = [*messages.direct.routes, *runs.direct.routes]
    app.add_middleware(DirectRoutes, routes=direct, state=state)
    # It keys repeats by the owner the auth middleware found.
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(_AuthMiddleware, keyring=keyring)
    app.add_middleware(_AccessLogMiddleware)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's shape, validation and unknown routes too."""

    @app.exception_handler(RetroError)
    async def retro_error(request: Request, exc: RetroError) -> JSONResponse:
        return error_json(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_json(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            message = f"Invalid URL ({request.method} {request.url.path})"
            return JSONResponse(error_body(message), status_code=404)
        return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_json(exc)


class _AuthMiddleware:
    """Checks the key of every request but ``/healthz``; puts its owner in the scope.

    Every path but the health check needs the key, so a mounted app (whose
    ``scope["path"]`` keeps the mount's prefix) and unknown routes are covered too.
    """

    def __init__(self, app: ASGIApp, keyring: Keyring) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) == "/healthz":
            await self.app(scope, receive, send)
            return
        authorization: str | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            scope["retro.owner"] = self.keyring.owner(authorization)
        except AuthenticationError as exc:
            await error_json(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _AccessLogMiddleware:
    """One log line per request: method, path, status, milliseconds; no headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    scope["path"],
                    status,
                    (time.perf_counter() - started) * 1000,
                )
