"""Errors as the Assistants API answered them: ``{"error": {...}}`` with a status.

The server raises the package's errors (`langchain_retro.errors`) and the three
below, and `error_response` turns each into OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with the status OpenAI used::

    RetroError
    ├── NotFoundError (LookupError)            404 invalid_request_error
    ├── RetroValueError (ValueError)           400 invalid_request_error
    │   └── InvalidRequestError                400, naming the ``param``
    ├── ThreadBusyError (RunError)             400: the thread has an active run
    ├── AuthenticationError (PermissionError)  401 invalid_request_error
    ├── RateLimitError (RuntimeError)          429 rate_limit_exceeded
    └── anything else                          500 server_error

A thread with an active run is a 400, not a 409: OpenAI answered 400, and the
openai SDK retries a 409.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse

from langchain_retro.errors import (
    AssistantInUseError,
    MetadataError,
    NotFoundError,
    RetroError,
    RetroValueError,
    RunError,
    ThreadBusyError,
)

__all__ = [
    "AuthenticationError",
    "InvalidRequestError",
    "RateLimitError",
    "error_body",
    "error_json",
    "error_response_parts",
    "not_found",
    "validation_error_json",
]

logger = logging.getLogger("langchain_retro.server")


class InvalidRequestError(RetroValueError):
    """A request the server refuses before anything is written; names the param."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        self.param = param
        self.code = code
        super().__init__(message)


class AuthenticationError(RetroError, PermissionError):
    """No API key, or one the server does not know (401)."""

    def __init__(self, message: str, *, code: str | None = "invalid_api_key") -> None:
        self.code = code
        super().__init__(message)


class RateLimitError(RetroError, RuntimeError):
    """The server runs as many runs as it may; retry after ``retry_after`` (429)."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


_KINDS = {
    "assistant": "assistant",
    "thread": "thread",
    "message": "message",
    "run": "run",
}


def not_found(kind: str, object_id: str) -> InvalidRequestError:
    """OpenAI's 404 message for an id that names nothing visible to the caller."""
    return _NotFoundError(f"No {_KINDS.get(kind, kind)} found with id '{object_id}'.")


class _NotFoundError(InvalidRequestError):
    """A 404 raised by the server itself (another key's object counts as none)."""


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response_parts(  # noqa: PLR0911 - one mapping, read top to bottom
    exc: BaseException,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, JSON body and headers answering an error raised by a request.

    Args:
        exc: The error.

    Returns:
        ``(status, body, headers)``.
    """
    if isinstance(exc, _NotFoundError):
        return 404, error_body(str(exc)), {}
    if isinstance(exc, NotFoundError):
        return (
            404,
            error_body(f"No {exc.kind} found with id '{exc.object_id}'."),
            {},
        )
    if isinstance(exc, InvalidRequestError):
        return 400, error_body(str(exc), param=exc.param, code=exc.code), {}
    if isinstance(exc, MetadataError):
        return 400, error_body(str(exc), param="metadata"), {}
    if isinstance(exc, RetroValueError | ThreadBusyError | AssistantInUseError):
        return 400, error_body(str(exc)), {}
    if isinstance(exc, AuthenticationError):
        return 401, error_body(str(exc), code=exc.code), {}
    if isinstance(exc, RateLimitError):
        milliseconds = max(1, int(exc.retry_after * 1000))
        headers = {
            "retry-after-ms": str(milliseconds),
            "retry-after": str(max(1, round(exc.retry_after))),
        }
        return (
            429,
            error_body(str(exc), type="requests", code="rate_limit_exceeded"),
            headers,
        )
    if isinstance(exc, RunError):
        return 400, error_body(str(exc)), {}
    return (
        500,
        error_body(
            "The server had an error while processing your request.",
            type="server_error",
        ),
        {},
    )


def error_json(exc: BaseException) -> JSONResponse:
    """The JSON answer to an error raised by a request, logged if unexpected (500)."""
    status, body, headers = error_response_parts(exc)
    if status == 500:
        logger.error("Unexpected error answering a request", exc_info=exc)
    return JSONResponse(body, status_code=status, headers=headers or None)


def _param(loc: Sequence[Any]) -> str | None:
    """A validation error's location as OpenAI named params: ``a.b[0].c``."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or None


def validation_error_json(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    """The 400 answering a request body that does not validate, naming the param.

    Args:
        errors: Pydantic's (or FastAPI's) errors; the first is answered.
    """
    first = errors[0] if errors else {}
    param = _param(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif kind == "json_invalid" or param is None:
        message = (
            "We could not parse the JSON body of your request. The body must be "
            "a JSON object."
        )
    elif kind == "missing":
        message = f"Missing required parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    return JSONResponse(error_body(message, param=param), status_code=400)
