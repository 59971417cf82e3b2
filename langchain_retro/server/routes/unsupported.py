"""``/v1/files`` and ``/v1/vector_stores``: refused by name, not as unknown URLs.

This server completes runs through Chat Completions and keeps no files or vector
stores. An application that calls those APIs gets a 400 saying so, rather than
OpenAI's 404 for a URL it does not know, which would read as a typo.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from langchain_retro.server.errors import InvalidRequestError

__all__ = ["router"]

router = APIRouter()

_METHODS = ["GET", "POST", "DELETE"]
_WHAT = {"files": "files", "vector_stores": "vector stores"}


@router.api_route("/v1/files", methods=_METHODS)
@router.api_route("/v1/files/{rest:path}", methods=_METHODS)
@router.api_route("/v1/vector_stores", methods=_METHODS)
@router.api_route("/v1/vector_stores/{rest:path}", methods=_METHODS)
async def unsupported(request: Request) -> None:
    """Refuse every files and vector stores operation, naming it.

    Raises:
        InvalidRequestError: Always (400).
    """
    resource = request.url.path.split("/v1/", 1)[1].split("/", 1)[0]
    raise InvalidRequestError(
        f"{request.method} /v1/{resource} is not supported: this server keeps no "
        f"{_WHAT[resource]} (it serves assistants, threads, messages and runs, "
        "completed through Chat Completions, with function tools).",
        code="unsupported",
    )
