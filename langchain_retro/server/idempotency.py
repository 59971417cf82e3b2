"""``Idempotency-Key``: a retried ``POST`` is carried out once.

The ``openai`` SDK retries a request whose answer was lost (a timeout, a dropped
connection, a 5xx). A ``POST`` the server carried out before the answer was lost
would be carried out again: a second message, thread or run. A client that sends
``Idempotency-Key: K`` on a ``POST`` (`AssistantsAPIStore` does: one key per
operation, the same on each of its retries) gets, for a repeat of ``K`` on the same
path by the same owner within `TTL` seconds, the first answer again (with
``Idempotent-Replayed: true``), and the request is not carried out twice; a repeat
that comes while the first is still running waits for its answer. A repeat whose
body differs from the first is a 400.

Only answers worth repeating are kept: JSON with a status below 500 (a server error
is worth retrying for real); streams and requests without the header pass through
untouched. The keys are kept in the worker's memory, at most `MAX_KEYS`: with
``--workers N``, a retry that reaches another worker is carried out again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langchain_retro.server.errors import error_body

__all__ = ["HEADER", "MAX_KEYS", "TTL", "IdempotencyMiddleware"]

HEADER = b"idempotency-key"
"""The request header, as ASGI spells it."""
TTL = 600.0
"""Seconds a key is remembered."""
MAX_KEYS = 10_000
"""Keys a worker remembers at most (the oldest are forgotten first)."""

_Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


@dataclass
class _Entry:
    digest: str
    """The first request's body, hashed."""
    expires: float
    """When the key is forgotten."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the first request has answered."""
    answer: _Answer | None = None
    """Its answer, if worth repeating."""


class IdempotencyMiddleware:
    """Answers a repeated ``POST`` with its first answer (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._keys: OrderedDict[tuple[object, str, bytes], _Entry] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a request: once, or again from its first answer."""
        key = _key_of(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        body, receive = await _read_body(receive)
        digest = hashlib.sha256(body).hexdigest()
        self._forget_old()
        entry = self._keys.get(key)
        if entry is not None:
            if entry.digest != digest:
                await _refuse(send)
                return
            await entry.done.wait()
            if entry.answer is not None:
                await _replay(entry.answer, send)
                return
        entry = self._keys[key] = _Entry(digest, time.monotonic() + TTL)
        try:
            entry.answer = await _answered(self.app, scope, receive, send)
        finally:
            if entry.answer is None:
                self._keys.pop(key, None)
            entry.done.set()

    def _forget_old(self) -> None:
        now = time.monotonic()
        while self._keys:
            oldest = next(iter(self._keys.values()))
            if oldest.expires > now and len(self._keys) < MAX_KEYS:
                break
            self._keys.popitem(last=False)


def _key_of(scope: Scope) -> tuple[object, str, bytes] | None:
    """``(owner, path, key)`` of a ``POST`` with the header, else ``None``."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    for name, value in scope["headers"]:
        if name == HEADER and value:
            return scope.get("retro.owner"), scope["path"], value
    return None


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The request's body, and a ``receive`` that hands it to the app again."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, again


async def _answered(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> _Answer | None:
    """Run the request; its answer if worth repeating (JSON, below 500, whole)."""
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []
    json_answer = finished = False

    async def sending(message: Message) -> None:
        nonlocal status, headers, json_answer, finished
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
            kind = dict(headers).get(b"content-type", b"")
            # Streams (server-sent events) pass through, never kept in memory.
            json_answer = kind.startswith(b"application/json")
        elif message["type"] == "http.response.body":
            if json_answer:
                chunks.append(message.get("body", b""))
            finished = not message.get("more_body", False)
        await send(message)

    await app(scope, receive, sending)
    if status >= 500 or not json_answer or not finished:
        return None
    return status, headers, b"".join(chunks)


async def _replay(answer: _Answer, send: Send) -> None:
    status, headers, body = answer
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"idempotent-replayed", b"true")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send) -> None:
    body = json.dumps(
        error_body(
            "This Idempotency-Key was used for another request: send a new key "
            "with a new request.",
            param="Idempotency-Key",
        )
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
