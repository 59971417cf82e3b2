"""``/v1/assistants``: create, list, retrieve, modify and delete assistants."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from langchain_retro.records import BaseAssistant
from langchain_retro.server.auth import OWNER_KEY, owned
from langchain_retro.server.context import Ctx
from langchain_retro.server.errors import InvalidRequestError
from langchain_retro.server.objects import assistant_object, list_object
from langchain_retro.server.pagination import ListParams
from langchain_retro.server.records import ServedAssistant
from langchain_retro.server.requests import (
    CreateAssistant,
    ModifyAssistant,
    check_metadata,
    check_tool_resources,
    function_tools,
)
from langchain_retro.server.routes._common import deleted, ok, replaced_metadata

__all__ = ["router"]

router = APIRouter(prefix="/v1/assistants")

_NATIVE = ("model", "name", "description", "instructions", "temperature", "top_p")
_TYPED = ("tools", "response_format", "reasoning_effort")


def _typed_values(body: CreateAssistant, given: set[str]) -> dict[str, Any]:
    """The given fields a `ServedAssistant` keeps as typed fields."""
    values: dict[str, Any] = {}
    if "tools" in given:
        values["tools"] = function_tools(body.tools)
    if "response_format" in given:
        fmt = body.response_format
        values["response_format"] = None if fmt == "auto" else fmt
    if "reasoning_effort" in given:
        values["reasoning_effort"] = body.reasoning_effort
    return values


@router.post("")
async def create_assistant(body: CreateAssistant, ctx: Ctx) -> JSONResponse:
    """Create an assistant (a `ServedAssistant` record)."""
    check_metadata(body.metadata)
    check_tool_resources(body.tool_resources, "tool_resources")
    given = body.model_fields_set
    fields = {name: getattr(body, name) for name in _NATIVE}
    assistant = await ServedAssistant.acreate(
        ctx.store,
        **fields,
        **_typed_values(body, given),
        metadata=owned(body.metadata or {}, ctx.owner),
    )
    return ok(assistant_object(assistant))


@router.get("")
async def list_assistants(request: Request, ctx: Ctx) -> JSONResponse:
    """List assistants, newest first."""
    params = ListParams.of(request.query_params)
    filters = {} if ctx.owner is None else {OWNER_KEY: ctx.owner}
    page = await BaseAssistant.alist(
        ctx.store,
        metadata=filters,
        after=params.before if params.backwards else params.after,
        order=params.reading_order,
        limit=params.limit,
    )
    data = list(reversed(page.data)) if params.backwards else page.data
    return ok(list_object(data, has_more=page.has_more, item=assistant_object))


@router.get("/{assistant_id}")
async def retrieve_assistant(assistant_id: str, ctx: Ctx) -> JSONResponse:
    """Read an assistant."""
    return ok(assistant_object(await ctx.assistant(assistant_id)))


@router.post("/{assistant_id}")
async def modify_assistant(
    assistant_id: str, body: ModifyAssistant, ctx: Ctx
) -> JSONResponse:
    """Change the fields given; ``metadata`` replaces the assistant's metadata."""
    check_metadata(body.metadata)
    check_tool_resources(body.tool_resources, "tool_resources")
    assistant = await ctx.assistant(assistant_id)
    given = body.model_fields_set
    if "model" in given and body.model is None:
        raise InvalidRequestError("Invalid 'model': it cannot be null.", param="model")
    changes: dict[str, Any] = {name: getattr(body, name) for name in _NATIVE}
    changes = {name: value for name, value in changes.items() if name in given}
    typed = _typed_values(body, given)
    if typed and not isinstance(assistant, ServedAssistant):
        raise InvalidRequestError(
            f"Assistant {assistant_id!r} is a {type(assistant).__name__} record made "
            f"through the library; it has no {sorted(typed)} to change. Give it "
            "those fields in Python, or create the assistant through this API.",
            param=sorted(typed)[0],
        )
    changes.update(typed)
    if "metadata" in given:
        changes["metadata"] = replaced_metadata(assistant.metadata, body.metadata)
    if changes:
        assistant = await assistant.aupdate(ctx.store, **changes)
    return ok(assistant_object(assistant))


@router.delete("/{assistant_id}")
async def delete_assistant(assistant_id: str, ctx: Ctx) -> JSONResponse:
    """Delete an assistant; its threads stay, as with OpenAI."""
    assistant = await ctx.assistant(assistant_id)
    await assistant.adelete(ctx.store, threads="keep")
    return deleted(assistant_id, "assistant")
