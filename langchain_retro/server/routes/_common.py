"""What the routes share: JSON answers and metadata replaced as OpenAI did."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from langchain_retro.server.auth import visible_metadata

__all__ = ["deleted", "ok", "replaced_metadata"]


def ok(content: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A 200 JSON answer."""
    return JSONResponse(content, headers=dict(headers) if headers else None)


def deleted(object_id: str, kind: str) -> JSONResponse:
    """The answer to a delete: ``{"id", "object": "<kind>.deleted", "deleted"}``."""
    return ok({"id": object_id, "object": f"{kind}.deleted", "deleted": True})


def replaced_metadata(
    current: Mapping[str, str], given: Mapping[str, str] | None
) -> dict[str, str | None]:
    """A record update's ``metadata``: the visible entries replaced by ``given``.

    Entries the API does not show (``retro_...``) are kept.
    """
    new: dict[str, str | None] = dict(given or {})
    for key in visible_metadata(current):
        if key not in new:
            new[key] = None
    return new
