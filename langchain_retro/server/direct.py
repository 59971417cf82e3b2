"""Direct routes: the busiest endpoints, called without FastAPI's request machinery.

Adding a message, creating a run and reading one (what the openai SDK's
``create_and_poll`` repeats) are most of a server's requests. FastAPI's routing,
dependency solving and body handling cost those requests more than their own work
does: a message costs the server about twice the CPU through FastAPI. A
`DirectRouter` declares such endpoints as FastAPI routers do
(``@direct.post("/v1/threads/{thread_id}/messages")``), and `DirectRoutes`, the
innermost middleware, calls them itself:

* the parameters are bound once, from the signature: a name in the path is the
  path's segment, a pydantic model the JSON body (validated as FastAPI would, with
  the same 400 naming the ``param``), `Context` the request's context and
  ``Request`` the request;
* an error is answered as the app's exception handlers answer it (`error_json`);
* the middlewares outside it (authentication, the access log, idempotent repeats)
  and FastAPI's own (the body size limit, the server error fallback) still apply.

Every other request goes on to FastAPI.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from langchain_retro.server.context import Context, ServerState, context_of
from langchain_retro.server.errors import error_json, validation_error_json

__all__ = ["DirectRouter", "DirectRoutes", "route_path"]

Endpoint = Callable[..., Awaitable[Response]]
_Binder = Callable[[dict[str, str], "_Call"], Any]


@dataclass
class _Call:
    """What one request gives its endpoint's parameters."""

    scope: Scope
    receive: Receive
    ctx: Context
    body: bytes


@dataclass(frozen=True)
class _Route:
    method: str
    path: re.Pattern[str]
    endpoint: Endpoint
    binders: tuple[tuple[str, _Binder], ...]
    reads_body: bool


class DirectRouter:
    """Endpoints of a routes module that `DirectRoutes` serves."""

    def __init__(self) -> None:
        self.routes: list[_Route] = []

    def post(self, path: str) -> Callable[[Endpoint], Endpoint]:
        """Declare a ``POST`` endpoint at ``path`` (``{name}`` for a segment)."""
        return self._route("POST", path)

    def get(self, path: str) -> Callable[[Endpoint], Endpoint]:
        """Declare a ``GET`` endpoint at ``path`` (``{name}`` for a segment)."""
        return self._route("GET", path)

    def _route(self, method: str, path: str) -> Callable[[Endpoint], Endpoint]:
        def declare(endpoint: Endpoint) -> Endpoint:
            self.routes.append(_bind(method, path, endpoint))
            return endpoint

        return declare


def _bind(method: str, path: str, endpoint: Endpoint) -> _Route:
    """A route whose parameters are bound from the endpoint's signature, once."""
    names: list[str] = []
    pattern, last = "^", 0
    for segment in re.finditer(r"{(\w+)}", path):
        names.append(segment.group(1))
        pattern += re.escape(path[last : segment.start()])
        pattern += f"(?P<{segment.group(1)}>[^/]+)"
        last = segment.end()
    hints = typing.get_type_hints(endpoint)
    binders: list[tuple[str, _Binder]] = []
    reads_body = False
    for name in inspect.signature(endpoint).parameters:
        hint = hints.get(name)
        if name in names:
            binders.append((name, _path_value(name)))
        elif hint is Context:
            binders.append((name, _context))
        elif hint is Request:
            binders.append((name, _request))
        elif isinstance(hint, type) and issubclass(hint, BaseModel):
            binders.append((name, _body(hint)))
            reads_body = True
        else:
            raise TypeError(
                f"{endpoint.__qualname__}: cannot bind parameter {name!r} ({hint!r}) "
                "of a direct route; use a path segment, Context, Request or a "
                "pydantic model of the body."
            )
    compiled = re.compile(pattern + re.escape(path[last:]) + "$")
    return _Route(method, compiled, endpoint, tuple(binders), reads_body)


def _path_value(name: str) -> _Binder:
    return lambda params, call: params[name]


def _context(params: dict[str, str], call: _Call) -> Context:
    return call.ctx


def _request(params: dict[str, str], call: _Call) -> Request:
    return Request(call.scope, call.receive)


def _body(model: type[BaseModel]) -> _Binder:
    def parse(params: dict[str, str], call: _Call) -> BaseModel:
        return model.model_validate_json(call.body)

    return parse


def route_path(scope: Scope) -> str:
    """The request's path within the app: without the prefix it is mounted at."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path.removeprefix(root) if root and path.startswith(root) else path


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class DirectRoutes:
    """The middleware that serves `DirectRouter` endpoints; see the module."""

    def __init__(
        self, app: ASGIApp, *, routes: list[_Route], state: ServerState
    ) -> None:
        self.app = app
        self.state = state
        self.by_method: dict[str, list[_Route]] = {}
        for route in routes:
            self.by_method.setdefault(route.method, []).append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a direct route's request; hand any other to the app."""
        if scope["type"] == "http":
            path = route_path(scope)
            for route in self.by_method.get(scope["method"], ()):
                found = route.path.match(path)
                if found is not None:
                    params = found.groupdict()
                    response = await self._answer(route, params, scope, receive)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(
        self, route: _Route, params: dict[str, str], scope: Scope, receive: Receive
    ) -> Response:
        ctx = context_of(self.state, scope)
        body = await _read_body(receive) if route.reads_body else b""
        call = _Call(scope, receive, ctx, body)
        try:
            arguments = {name: bind(params, call) for name, bind in route.binders}
        except ValidationError as exc:
            return validation_error_json(exc.errors())
        try:
            return await route.endpoint(**arguments)
        except Exception as exc:  # answered as the app's handlers answer it
            return error_json(exc)
