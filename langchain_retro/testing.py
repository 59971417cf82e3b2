"""A deterministic chat server speaking the OpenAI Chat Completions wire format.

`FakeChatServer` replaces only the model's words. Tests talk to it with the real
`openai` SDK and the real `langchain_openai.ChatOpenAI` over real HTTP on
127.0.0.1, so request building, retries, streaming and error mapping are all
exercised exactly as in production.

Example:
    ```python
    from langchain_retro.testing import FakeChatServer, ScriptedReply

    with FakeChatServer(replies=["Hello!"]) as server:
        model = server.chat_model(temperature=0)
        assert model.invoke("Hi").content == "Hello!"
        assert model.invoke("Again").content == "echo: Again"
        assert server.requests[0].temperature == 0
    ```

Endpoints:
    - `POST /v1/chat/completions`: JSON or, with `"stream": true`, server-sent
      events (`chat.completion.chunk` objects, a usage chunk when
      `stream_options.include_usage` is true, then `data: [DONE]`).
    - `GET /v1/models` and `GET /v1/models/{id}`.
    - Anything else: 404 with an OpenAI-style error body.

The `/v1` prefix is optional, so a client pointed at the server's root works too.
Only the standard library is used; each connection is served by one daemon
thread of a `ThreadingHTTPServer`, with HTTP/1.1 keep-alive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from types import TracebackType

    import openai
    from langchain_openai import ChatOpenAI

__all__ = [
    "DEFAULT_MODEL",
    "FakeChatServer",
    "RecordedRequest",
    "ScriptedReply",
    "ScriptedToolCall",
    "echo_reply",
]

DEFAULT_MODEL = "fake-model"
"""The model name `FakeChatServer.chat_model` asks for and `/v1/models` lists."""

_REDACTED = "<redacted>"
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key"}
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}
# Splits before every word that follows whitespace, so the pieces of a reply
# concatenate back to exactly the reply.
_WORD_BOUNDARY = re.compile(r"(?<=\s)(?=\S)")
_ARGUMENT_PIECE = 16
_JSON_SEPARATORS = (",", ":")


class ScriptedToolCall(BaseModel):
    """One tool call the fake model makes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Name of the function to call."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Arguments, sent JSON-encoded as OpenAI does."""
    id: str | None = None
    """Tool call id; derived deterministically from the call when omitted."""


class ScriptedReply(BaseModel):
    """What the fake model answers to one request.

    A reply is either an assistant message (`content` and/or `tool_calls`) or,
    when `status` is set, an HTTP error with an OpenAI-style error body.
    Plain dicts are accepted for `tool_calls`, e.g.
    `ScriptedReply(tool_calls=[{"name": "add", "args": {"a": 1}}])`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str = ""
    """Assistant text; streamed word by word."""
    tool_calls: list[ScriptedToolCall] | None = None
    """Tool calls to make, in order."""
    finish_reason: str | None = None
    """Overrides the finish reason (default `tool_calls` or `stop`)."""
    status: int | None = None
    """When set, answer with this HTTP error status instead of a message."""
    error_message: str | None = None
    """Message of the error body; a default naming the status when omitted."""
    error_type: str | None = None
    """`type` of the error body; derived from the status when omitted."""
    error_code: str | None = None
    """`code` of the error body."""
    retry_after: float | None = None
    """Seconds a retrying client should wait, sent as `retry-after-ms`."""

    @field_validator("status")
    @classmethod
    def _check_status(cls, value: int | None) -> int | None:
        if value is not None and not 400 <= value <= 599:
            msg = f"status must be an HTTP error status (400-599), got {value}"
            raise ValueError(msg)
        return value


class RecordedRequest(BaseModel):
    """One request received by `FakeChatServer`, recorded before it was answered."""

    model_config = ConfigDict(frozen=True)

    method: str
    """HTTP method, e.g. `POST`."""
    path: str
    """Request path without the query string, e.g. `/v1/chat/completions`."""
    headers: dict[str, str]
    """Headers with lower-cased names; credentials replaced by `<redacted>`."""
    body: dict[str, Any]
    """The parsed JSON body."""

    @property
    def model(self) -> str | None:
        """The requested model name."""
        return self.body.get("model")

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The messages sent, in OpenAI's dict form."""
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def temperature(self) -> float | None:
        """The sampling temperature, if sent."""
        return self.body.get("temperature")

    @property
    def top_p(self) -> float | None:
        """Nucleus sampling mass, if sent."""
        return self.body.get("top_p")

    @property
    def max_tokens(self) -> int | None:
        """`max_completion_tokens` or the legacy `max_tokens`, if sent."""
        value = self.body.get("max_completion_tokens")
        return value if value is not None else self.body.get("max_tokens")

    @property
    def stop(self) -> str | list[str] | None:
        """Stop sequences, if sent."""
        return self.body.get("stop")

    @property
    def stream(self) -> bool:
        """Whether a streamed answer was asked for."""
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer should end with a usage chunk."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    @property
    def tools(self) -> list[dict[str, Any]]:
        """Tool definitions sent, empty when none."""
        tools = self.body.get("tools")
        return tools if isinstance(tools, list) else []

    @property
    def tool_choice(self) -> str | dict[str, Any] | None:
        """The tool choice, if sent."""
        return self.body.get("tool_choice")

    @property
    def system_prompt(self) -> str | None:
        """Text of the system and developer messages, or None when there are none."""
        parts = [
            _text_of(message.get("content"))
            for message in self.messages
            if message.get("role") in {"system", "developer"}
        ]
        return "\n".join(parts) if parts else None

    @property
    def last_user_text(self) -> str:
        """Text of the last user message; empty when there is none."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""


def echo_reply(request: RecordedRequest) -> str:
    """Answer `echo: <text of the last user message>`, the server's default.

    Args:
        request: The request to answer.

    Returns:
        The reply text.
    """
    return f"echo: {request.last_user_text}"


class FakeChatServer:
    """OpenAI-wire chat server on 127.0.0.1 for tests (context manager, sync).

    Replies come from the queue (`replies`, then `enqueue`) first in, first out;
    when it is empty, from `default`, which by default echoes the last user
    message. Every chat request is recorded in `requests` before it is answered.

    Setup:
        Nothing to install: the server uses only the standard library.
        `chat_model` needs `langchain-openai`, a dependency of this package.

    Instantiate:
        ```python
        server = FakeChatServer(replies=["first", ScriptedReply(content="second")])
        server.start()  # or `with FakeChatServer() as server:`
        ```

    Invoke:
        ```python
        model = server.chat_model()
        model.invoke("Hi").content  # "first"
        ```

    Stream:
        ```python
        for chunk in model.stream("Hi there"):
            print(chunk.content)  # "echo: ", "Hi ", "there"
        ```

    Async:
        ```python
        await model.ainvoke("Hi")
        ```

    Failures and latency:
        ```python
        server.fail_next(429)  # the next request gets RateLimitError
        server.set_delay(0.5)  # every answer waits half a second
        ```
    """

    def __init__(
        self,
        *,
        replies: Sequence[str | ScriptedReply] | None = None,
        default: Callable[[RecordedRequest], str | ScriptedReply] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = (DEFAULT_MODEL,),
    ) -> None:
        """Create a stopped server.

        Args:
            replies: Replies answered first, in order.
            default: Answers requests once the queue is empty; echoes the last
                user message when None.
            host: IPv4 address to bind.
            port: Port to bind; 0 picks a free one.
            models: Model ids listed by `GET /v1/models`.
        """
        self.default: Callable[[RecordedRequest], str | ScriptedReply] = (
            default or echo_reply
        )
        """Answers requests once the queue is empty."""
        self.models: tuple[str, ...] = tuple(models)
        """Model ids listed by `GET /v1/models`."""
        self.requests: list[RecordedRequest] = []
        """Every chat completion request with a JSON object body, in arrival order."""
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._queue: deque[ScriptedReply] = deque(_as_reply(r) for r in replies or ())
        self._failures: deque[ScriptedReply] = deque()
        self._delay = 0.0
        self._chunk_delay = 0.0
        self._counter = 0
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Self:
        """Bind the socket and serve in a daemon thread.

        Returns:
            The server itself, for chaining.

        Raises:
            RuntimeError: If the server is already running.
        """
        if self._httpd is not None:
            msg = "FakeChatServer is already running; call stop() first"
            raise RuntimeError(msg)
        self._stopping.clear()
        httpd = _HTTPServer((self._host, self._port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            # A short poll interval keeps stop() fast.
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeChatServer:{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and close the socket.

        Safe to call twice or on a server that never started.
        """
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port.

        Raises:
            RuntimeError: If the server is not running.
        """
        if self._httpd is None:
            msg = "FakeChatServer is not running; call start() or use `with`"
            raise RuntimeError(msg)
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. `http://127.0.0.1:54321/v1`."""
        return f"http://{self._host}:{self.port}/v1"

    # -- scripting ---------------------------------------------------------------

    def enqueue(self, *replies: str | ScriptedReply) -> None:
        """Queue replies; they are answered first in, first out, before `default`.

        Args:
            *replies: Reply texts or scripted replies.
        """
        items = [_as_reply(reply) for reply in replies]
        with self._lock:
            self._queue.extend(items)

    def fail_next(
        self,
        status: int = 500,
        *,
        count: int = 1,
        message: str | None = None,
        error_type: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `count` chat requests with an OpenAI-style error.

        Failures take precedence over queued replies, which are not consumed, so
        a client that retries gets the queued reply on its next attempt.

        Args:
            status: HTTP status, 400-599. The openai SDK maps 400 to
                `BadRequestError`, 429 to `RateLimitError`, 5xx to
                `InternalServerError`.
            count: How many requests fail.
            message: Error message; a default naming the status when None.
            error_type: `type` of the error body; derived from the status when None.
            code: `code` of the error body.
            retry_after: Seconds a retrying client should wait, sent as the
                `retry-after-ms` header the openai SDK honours; a small value
                keeps retry tests fast.
        """
        failure = ScriptedReply(
            status=status,
            error_message=message,
            error_type=error_type,
            error_code=code,
            retry_after=retry_after,
        )
        with self._lock:
            self._failures.extend([failure] * count)

    def set_delay(self, seconds: float, *, per_chunk: float = 0.0) -> None:
        """Wait before answering, to exercise timeouts and concurrency.

        Args:
            seconds: Delay before the response starts.
            per_chunk: Extra delay before each streamed chunk after the first.
        """
        with self._lock:
            self._delay = max(0.0, seconds)
            self._chunk_delay = max(0.0, per_chunk)

    def drop_connections(self) -> None:
        """Cut every open client connection, as a network failure would.

        A response being streamed stops where it is: the client sees the connection
        end mid-answer (a stream without its last chunk and ``[DONE]``). New
        requests are served as usual.
        """
        if self._httpd is not None:
            self._httpd.close_connections()

    def reset(self) -> None:
        """Forget recorded requests, queued replies, pending failures and delays."""
        with self._lock:
            self.requests.clear()
            self._queue.clear()
            self._failures.clear()
            self._delay = 0.0
            self._chunk_delay = 0.0

    # -- clients -------------------------------------------------------------

    def chat_model(self, **kwargs: Any) -> ChatOpenAI:
        """Build a `ChatOpenAI` pointed at this server.

        Defaults: `model="fake-model"`, `api_key="test-key"`, `max_retries=0` and
        `stream_usage=True` (langchain-openai only turns streamed usage on by
        itself for the default OpenAI URL). Any of them can be overridden.

        Args:
            **kwargs: Further `ChatOpenAI` arguments.

        Returns:
            The chat model.
        """
        from langchain_openai import ChatOpenAI  # noqa: PLC0415 - optional at import

        params: dict[str, Any] = {
            "model": DEFAULT_MODEL,
            "api_key": "test-key",
            "max_retries": 0,
            "stream_usage": True,
            **kwargs,
            "base_url": self.base_url,
        }
        return ChatOpenAI(**params)

    @contextlib.asynccontextmanager
    async def achat_model(self, **kwargs: Any) -> AsyncIterator[ChatOpenAI]:
        """Build a `ChatOpenAI` whose async HTTP client closes with the block.

        langchain-openai shares one async HTTP client per base URL for the life
        of the process. Its pooled connections belong to the event loop that
        opened them, so when each test runs in its own loop (pytest-asyncio's
        default) a later test reusing them fails with "Event loop is closed",
        and the leftovers are reported as unclosed transports at exit. Use this
        in async tests:

        ```python
        async with server.achat_model() as model:
            await model.ainvoke("Hi")
        ```

        Args:
            **kwargs: Further `ChatOpenAI` arguments, as for `chat_model`.

        Yields:
            The chat model, usable until the block ends.
        """
        import openai  # noqa: PLC0415 - keep importing this module cheap

        async with openai.DefaultAsyncHttpxClient() as http_client:
            yield self.chat_model(http_async_client=http_client, **kwargs)

    def openai_client(self, **kwargs: Any) -> openai.OpenAI:
        """Build an `openai.OpenAI` client pointed at this server.

        Args:
            **kwargs: Further client arguments; `api_key` defaults to `test-key`
                and `max_retries` to 0.

        Returns:
            The client.
        """
        import openai  # noqa: PLC0415 - keep importing this module cheap

        params: dict[str, Any] = {"api_key": "test-key", "max_retries": 0, **kwargs}
        return openai.OpenAI(base_url=self.base_url, **params)

    def async_openai_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """Build an `openai.AsyncOpenAI` client pointed at this server.

        Args:
            **kwargs: Further client arguments; `api_key` defaults to `test-key`
                and `max_retries` to 0.

        Returns:
            The client.
        """
        import openai  # noqa: PLC0415 - keep importing this module cheap

        params: dict[str, Any] = {"api_key": "test-key", "max_retries": 0, **kwargs}
        return openai.AsyncOpenAI(base_url=self.base_url, **params)

    # -- used by the request handler -------------------------------------------

    def _record(self, request: RecordedRequest) -> int:
        with self._lock:
            self.requests.append(request)
            self._counter += 1
            return self._counter

    def _next_reply(self, request: RecordedRequest) -> ScriptedReply:
        with self._lock:
            if self._failures:
                return self._failures.popleft()
            queued = self._queue.popleft() if self._queue else None
        if queued is not None:
            return queued
        try:
            return _as_reply(self.default(request))
        except Exception as exc:
            return ScriptedReply(
                status=500, error_message=f"default reply failed: {exc!r}"
            )

    def _delays(self) -> tuple[float, float]:
        with self._lock:
            return self._delay, self._chunk_delay

    def _sleep(self, seconds: float) -> bool:
        """Wait, returning False if the server is stopping."""
        return seconds <= 0 or not self._stopping.wait(seconds)


# -- the HTTP layer ------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    fake: FakeChatServer

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]
    ) -> None:
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def close_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections."""
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            # OSError: the client already closed it.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (e.g. an abandoned stream) are routine in tests;
        # anything else is a bug worth a traceback on stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "langchain-retro-fake"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the client already hung up
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet and fast

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    # -- routing ---------------------------------------------------------------

    def do_GET(self) -> None:
        """Serve `/v1/models` and `/v1/models/{id}`."""
        self._read_body()
        route = _route(self.path)
        fake = self.server.fake
        if route == "/models":
            data = [_model_object(model) for model in fake.models]
            self._send_json(200, {"object": "list", "data": data})
        elif route.startswith("/models/") and route[8:] in fake.models:
            self._send_json(200, _model_object(route[8:]))
        else:
            self._send_not_found("GET")

    def do_POST(self) -> None:
        """Serve `/v1/chat/completions`."""
        raw = self._read_body()
        if _route(self.path) != "/chat/completions":
            self._send_not_found("POST")
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            self._send_error(400, f"We could not parse the JSON body: {exc}")
            return
        if not isinstance(body, dict):
            self._send_error(400, "The request body must be a JSON object.")
            return
        self._chat(body)

    def do_DELETE(self) -> None:
        """Answer 404: nothing here can be deleted."""
        self._read_body()
        self._send_not_found("DELETE")

    def do_PUT(self) -> None:
        """Answer 404: nothing here can be replaced."""
        self._read_body()
        self._send_not_found("PUT")

    def do_PATCH(self) -> None:
        """Answer 404: nothing here can be patched."""
        self._read_body()
        self._send_not_found("PATCH")

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        request = RecordedRequest(
            method="POST",
            path=self.path.partition("?")[0],
            headers=_redacted_headers(self.headers.items()),
            body=body,
        )
        number = fake._record(request)
        if not isinstance(body.get("messages"), list):
            self._send_error(
                400, "Missing required parameter: 'messages'.", param="messages"
            )
            return
        reply = fake._next_reply(request)
        delay, chunk_delay = fake._delays()
        if not fake._sleep(delay):
            self.close_connection = True
            return
        request_id = f"req_fake{number:08d}"
        if reply.status is not None:
            self._send_error(
                reply.status,
                reply.error_message or _default_error_message(reply.status),
                error_type=reply.error_type,
                code=reply.error_code,
                request_id=request_id,
                retry_after=reply.retry_after,
            )
            return
        completion = _Completion.build(request, reply, number)
        if request.stream:
            self._send_stream(completion, chunk_delay, request_id)
        else:
            self._send_json(200, completion.as_json(), request_id=request_id)

    # -- writing -----------------------------------------------------------------

    def _read_body(self) -> bytes:
        # Always drain the body: leftover bytes would corrupt the next request
        # on a keep-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        # Built by hand rather than with send_response()/send_header() so that
        # headers and body leave in one send() call.
        lines = [f"HTTP/1.1 {status} {_reason(status)}", *map(": ".join, headers)]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_json(
        self,
        status: int,
        payload: dict[str, Any],
        *,
        request_id: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        data = json.dumps(payload, separators=_JSON_SEPARATORS).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *extra_headers,
        ]
        if request_id is not None:
            headers.append(("x-request-id", request_id))
        self.wfile.write(self._head(status, headers) + data)

    def _send_stream(
        self, completion: _Completion, chunk_delay: float, request_id: str
    ) -> None:
        headers = [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Cache-Control", "no-cache"),
            ("x-request-id", request_id),
        ]
        chunked = self.request_version != "HTTP/1.0"
        if chunked:
            # Chunked encoding keeps the connection reusable after the stream.
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            self.close_connection = True
        events = [_sse(chunk) for chunk in completion.chunks()]
        events.append(b"data: [DONE]\n\n")
        if chunked:
            events = [_http_chunk(event) for event in events]
            events.append(b"0\r\n\r\n")
        head = self._head(200, headers)
        fake = self.server.fake
        try:
            if chunk_delay <= 0:
                self.wfile.write(head + b"".join(events))
                return
            self.wfile.write(head + events[0])
            for event in events[1:]:
                if not fake._sleep(chunk_delay):
                    self.close_connection = True
                    return
                self.wfile.write(event)
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _send_not_found(self, method: str) -> None:
        self._send_error(404, f"Invalid URL ({method} {self.path.partition('?')[0]})")

    def _send_error(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        error = {
            "message": message,
            "type": error_type or _ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
        headers = []
        if retry_after is not None:
            headers.append(("retry-after-ms", str(max(1, round(retry_after * 1000)))))
        self._send_json(
            status, {"error": error}, request_id=request_id, extra_headers=headers
        )


# -- building completions (pure) -------------------------------------------------


class _Completion:
    """One answer, rendered as a completion object or as stream chunks."""

    __slots__ = (
        "content",
        "created",
        "finish_reason",
        "id",
        "include_usage",
        "model",
        "tool_calls",
        "usage",
    )

    def __init__(
        self,
        *,
        id: str,
        model: str,
        content: str,
        tool_calls: list[dict[str, Any]],
        finish_reason: str,
        usage: dict[str, int],
        include_usage: bool,
    ) -> None:
        self.id = id
        self.created = int(time.time())
        self.model = model
        self.content = content
        self.tool_calls = tool_calls
        self.finish_reason = finish_reason
        self.usage = usage
        self.include_usage = include_usage

    @classmethod
    def build(
        cls, request: RecordedRequest, reply: ScriptedReply, number: int
    ) -> _Completion:
        tool_calls = [
            _tool_call_object(index, call)
            for index, call in enumerate(reply.tool_calls or ())
        ]
        prompt_tokens = max(
            1, sum(_count_words(_text_of(m.get("content"))) for m in request.messages)
        )
        completion_tokens = _count_words(reply.content) + sum(
            _count_words(call["function"]["name"])
            + _count_words(call["function"]["arguments"])
            for call in tool_calls
        )
        model = request.model
        return cls(
            id=f"chatcmpl-fake{number:08d}",
            model=model if isinstance(model, str) else DEFAULT_MODEL,
            content=reply.content,
            tool_calls=tool_calls,
            finish_reason=reply.finish_reason
            or ("tool_calls" if tool_calls else "stop"),
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            include_usage=request.include_usage,
        )

    def as_json(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            # OpenAI sends null content alongside tool calls.
            "content": self.content if self.content or not self.tool_calls else None,
            "refusal": None,
        }
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": self.usage,
            "system_fingerprint": "fp_fake",
        }

    def chunks(self) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": "", "refusal": None}
        ]
        if self.content:
            deltas.extend(
                {"content": piece} for piece in _WORD_BOUNDARY.split(self.content)
            )
        for index, call in enumerate(self.tool_calls):
            function = call["function"]
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": ""},
            }
            deltas.append({"tool_calls": [head]})
            arguments = function["arguments"]
            for start in range(0, len(arguments), _ARGUMENT_PIECE):
                piece = arguments[start : start + _ARGUMENT_PIECE]
                deltas.append(
                    {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                )
        chunks = [self._chunk(delta, None) for delta in deltas]
        chunks.append(self._chunk({}, self.finish_reason))
        if self.include_usage:
            usage_chunk = self._chunk({}, None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self.usage
            chunks.append(usage_chunk)
        return chunks

    def _chunk(
        self, delta: dict[str, Any], finish_reason: str | None
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
        }
        if self.include_usage:
            # OpenAI sends `usage: null` on every chunk but the last.
            chunk["usage"] = None
        return chunk


def _as_reply(reply: str | ScriptedReply) -> ScriptedReply:
    return reply if isinstance(reply, ScriptedReply) else ScriptedReply(content=reply)


def _tool_call_object(index: int, call: ScriptedToolCall) -> dict[str, Any]:
    arguments = json.dumps(call.args, separators=(", ", ": "), sort_keys=True)
    call_id = call.id
    if call_id is None:
        digest = hashlib.sha256(f"{index}:{call.name}:{arguments}".encode())
        call_id = f"call_{digest.hexdigest()[:24]}"
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def _text_of(content: Any) -> str:
    """Text of a message's content: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _count_words(text: str) -> int:
    return len(text.split())


def _route(path: str) -> str:
    route = path.partition("?")[0].rstrip("/")
    return route[3:] if route.startswith("/v1/") else route


def _redacted_headers(items: Any) -> dict[str, str]:
    return {
        name.lower(): _REDACTED if name.lower() in _SECRET_HEADERS else value
        for name, value in items
    }


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "langchain-retro"}


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _default_error_message(status: int) -> str:
    return f"Fake failure: {status} {_reason(status)}"


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=_JSON_SEPARATORS).encode() + b"\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
