"""``/v1/threads``: create, retrieve, modify and delete threads, and list them.

A thread made here is a `ChatCompletionThread` (its ``assistant_id`` is set by the
runs on it), so a `ThreadRunner` runs it as any other. ``GET /v1/threads`` goes
beyond OpenAI's API: it lists the caller's threads, of every record class, with
``metadata[key]=value`` and ``assistant_id`` filters and cursor pages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from langchain_retro.records import BaseThread, ChatCompletionThread, ThreadMessage
from langchain_retro.server.auth import OWNER_KEY, check_reserved, owned
from langchain_retro.server.context import Context, Ctx
from langchain_retro.server.errors import InvalidRequestError
from langchain_retro.server.objects import list_object, message_of, thread_object
from langchain_retro.server.pagination import ListParams
from langchain_retro.server.requests import (
    CreateMessage,
    CreateThread,
    ModifyThread,
    check_attachments,
    check_metadata,
    check_tool_resources,
)
from langchain_retro.server.routes._common import deleted, ok, replaced_metadata
from langchain_retro.stores.base import NewMessage

__all__ = ["create_thread", "listing_router", "new_messages", "router"]

router = APIRouter(prefix="/v1/threads")
listing_router = APIRouter(prefix="/v1/threads")
"""``GET /v1/threads``: an extension `create_app` can leave out (``thread_listing``)."""

_METADATA_FILTER = re.compile(r"^metadata\[(?P<key>[^\]]+)\]$")


def new_messages(
    ctx: Context, thread_id: str, bodies: Sequence[CreateMessage], param: str
) -> list[NewMessage]:
    """Messages to append, each checked before anything is written.

    Raises:
        InvalidRequestError: For metadata over the limits, attachments or files.
    """
    out: list[NewMessage] = []
    for index, body in enumerate(bodies):
        where = f"{param}[{index}]"
        check_metadata(body.metadata, f"{where}.metadata")
        check_attachments(body.attachments, f"{where}.attachments")
        record = ThreadMessage(
            thread_id=thread_id,
            message=message_of(body, where),
            metadata=body.metadata or {},
        )
        out.append(record._new(ctx.store.limits))
    return out


async def create_thread(ctx: Context, body: CreateThread, param: str) -> BaseThread:
    """Create a thread with its messages; everything is checked first."""
    check_metadata(body.metadata, f"{param}metadata")
    check_tool_resources(body.tool_resources, f"{param}tool_resources")
    # The messages are checked with a placeholder thread id, before the thread exists.
    messages = new_messages(ctx, "thread", body.messages, f"{param}messages")
    thread = await ChatCompletionThread.acreate(
        ctx.store, assistant_id="", metadata=owned(body.metadata or {}, ctx.owner)
    )
    if messages:
        await ctx.store.aadd_messages(thread.id, messages)
    return thread


@router.post("")
async def create(body: CreateThread, ctx: Ctx) -> JSONResponse:
    """Create a thread, with messages to start it."""
    return ok(thread_object(await create_thread(ctx, body, "")))


def _filters(query: Mapping[str, str], owner: str | None) -> dict[str, str]:
    """A thread listing's metadata filters, from its query, the owner's added."""
    filters: dict[str, str] = {}
    for name, value in query.items():
        match = _METADATA_FILTER.match(name)
        if match:
            filters[match.group("key")] = value
        elif name not in ("limit", "order", "after", "before", "assistant_id"):
            raise InvalidRequestError(
                f"Unrecognized query parameter {name!r}: threads are listed with "
                "limit, order, after, before, assistant_id and metadata[KEY]=VALUE.",
                param=name,
            )
    check_reserved(filters, "metadata")
    assistant_id = query.get("assistant_id")
    if assistant_id:
        filters["assistant_id"] = assistant_id
    if owner is not None:
        filters[OWNER_KEY] = owner
    return filters


@listing_router.get("")
async def list_threads(request: Request, ctx: Ctx) -> JSONResponse:
    """List the caller's threads, newest first (an extension of OpenAI's API)."""
    params = ListParams.of(request.query_params)
    page = await BaseThread.alist(
        ctx.store,
        metadata=_filters(request.query_params, ctx.owner),
        after=params.after,
        before=params.before,
        order=params.order,
        limit=params.limit,
    )
    return ok(list_object(page.data, has_more=page.has_more, item=thread_object))


@router.get("/{thread_id}")
async def retrieve(thread_id: str, ctx: Ctx) -> JSONResponse:
    """Read a thread."""
    return ok(thread_object(await ctx.thread(thread_id)))


@router.post("/{thread_id}")
async def modify(thread_id: str, body: ModifyThread, ctx: Ctx) -> JSONResponse:
    """Replace a thread's metadata."""
    check_metadata(body.metadata)
    check_tool_resources(body.tool_resources, "tool_resources")
    thread = await ctx.thread(thread_id)
    if "metadata" in body.model_fields_set:
        changes = replaced_metadata(thread.metadata, body.metadata)
        thread = await thread.aupdate(ctx.store, metadata=changes)
    return ok(thread_object(thread))


@router.delete("/{thread_id}")
async def delete(thread_id: str, ctx: Ctx) -> JSONResponse:
    """Delete a thread with its messages and runs."""
    thread = await ctx.thread(thread_id)
    await thread.adelete(ctx.store)
    return deleted(thread_id, "thread")
