"""``/v1/threads/{thread_id}/messages``: create, list, retrieve, modify, delete.

A thread also holds messages the Assistants API never showed as messages (tool
results, and the model's tool calls without text, which are run steps there):
listings skip them and reading one by id is a 404. A message is not added while a
run on the thread is active (or waits for tool outputs): a 400 naming the run, as
OpenAI answered.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from langchain_retro.errors import (
    MessageNotFoundError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from langchain_retro.records import BaseMessage, ThreadMessage
from langchain_retro.server.auth import owner_scope
from langchain_retro.server.context import Context, Ctx
from langchain_retro.server.direct import DirectRouter
from langchain_retro.server.errors import not_found
from langchain_retro.server.objects import (
    is_api_message,
    list_object,
    message_object,
    message_of,
)
from langchain_retro.server.pagination import ListParams, page_of
from langchain_retro.server.requests import (
    CreateMessage,
    ModifyMetadata,
    check_attachments,
    check_metadata,
)
from langchain_retro.server.routes._busy import message_busy
from langchain_retro.server.routes._common import deleted, ok, replaced_metadata
from langchain_retro.stores.base import BaseStore

__all__ = ["direct", "list_api_messages", "router"]

router = APIRouter(prefix="/v1/threads/{thread_id}/messages")
direct = DirectRouter()
"""The routes served directly (`langchain_retro.server.direct`): adding a message."""


async def _read(
    store: BaseStore,
    thread_id: str,
    direction: Literal["asc", "desc"],
    cursor: str | None,
    limit: int,
) -> list[BaseMessage]:
    """Up to ``limit`` stored messages from ``cursor`` on, in ``direction``."""
    if direction == "desc":
        rows = await store.alist_messages(
            thread_id, before=cursor, order="desc", limit=limit
        )
    else:
        rows = await store.alist_messages(
            thread_id, after=cursor, order="asc", limit=limit
        )
    return [BaseMessage._from(row) for row in rows]


async def list_api_messages(
    store: BaseStore, thread_id: str, params: ListParams
) -> tuple[list[BaseMessage], bool]:
    """A page of a thread's API messages, reading on past the messages skipped.

    Reads away from the cursor in listing order (or, for a ``before`` cursor
    alone, against it, then turns the page), until ``limit + 1`` API messages are
    found or the thread ends.
    """
    fetch = params.limit + 1
    direction = params.reading_order
    if params.backwards:
        cursor, bound = params.before, None
    else:
        cursor, bound = params.after, params.before
    found: list[BaseMessage] = []
    while len(found) < fetch:
        rows = await _read(store, thread_id, direction, cursor, fetch)
        for row in rows:
            if row.id == bound:
                rows = []
                break
            if is_api_message(row):
                found.append(row)
        else:
            if len(rows) == fetch:
                cursor = rows[-1].id
                continue
        break
    page = found[: params.limit]
    if params.backwards:
        page.reverse()
    return page, len(found) > params.limit


@direct.post("/v1/threads/{thread_id}/messages")
async def create_message(
    thread_id: str, body: CreateMessage, ctx: Context
) -> JSONResponse:
    """Append a message to a thread; 400 while a run on it is active (`_busy`)."""
    check_metadata(body.metadata)
    check_attachments(body.attachments, "attachments")
    draft = ThreadMessage(
        thread_id=thread_id,
        message=message_of(body, ""),
        metadata=body.metadata or {},
    )
    try:
        # One store call checks who may see the thread, that no run keeps it
        # busy, and writes.
        (stored,) = await ctx.store.aadd_messages_if_idle(
            thread_id,
            [draft._new(ctx.store.limits)],
            scope=owner_scope(ctx.owner),
        )
    except ThreadNotFoundError:
        raise not_found("thread", thread_id) from None
    except ThreadBusyError as exc:
        raise message_busy(exc) from exc
    return ok(message_object(ThreadMessage._from(stored)))


@router.get("")
async def list_messages(thread_id: str, request: Request, ctx: Ctx) -> JSONResponse:
    """List a thread's messages, newest first; ``run_id`` keeps one run's."""
    params = ListParams.of(request.query_params)
    await ctx.thread(thread_id)
    run_id = request.query_params.get("run_id")
    if run_id:
        rows = await ctx.store.alist_run_messages(thread_id, run_id)
        records = [BaseMessage._from(row) for row in rows]
        messages = [record for record in records if is_api_message(record)]
        data, has_more = page_of(messages, params, lambda m: m.id)
    else:
        data, has_more = await list_api_messages(ctx.store, thread_id, params)
    return ok(list_object(data, has_more=has_more, item=message_object))


async def _message(ctx: Context, thread_id: str, message_id: str) -> BaseMessage:
    """A message of the API on a thread the request sees; 404 otherwise."""
    await ctx.thread(thread_id)
    try:
        record = await BaseMessage.aretrieve(ctx.store, thread_id, message_id)
    except MessageNotFoundError:
        raise not_found("message", message_id) from None
    if not is_api_message(record):
        raise not_found("message", message_id)
    return record


@router.get("/{message_id}")
async def retrieve_message(thread_id: str, message_id: str, ctx: Ctx) -> JSONResponse:
    """Read a message."""
    return ok(message_object(await _message(ctx, thread_id, message_id)))


@router.post("/{message_id}")
async def modify_message(
    thread_id: str, message_id: str, body: ModifyMetadata, ctx: Ctx
) -> JSONResponse:
    """Replace a message's metadata."""
    check_metadata(body.metadata)
    record = await _message(ctx, thread_id, message_id)
    if "metadata" in body.model_fields_set:
        changes = replaced_metadata(record.metadata, body.metadata)
        record = await record.aupdate(ctx.store, metadata=changes)
    return ok(message_object(record))


@router.delete("/{message_id}")
async def delete_message(thread_id: str, message_id: str, ctx: Ctx) -> JSONResponse:
    """Delete a message."""
    record = await _message(ctx, thread_id, message_id)
    await record.adelete(ctx.store)
    return deleted(message_id, "thread.message")
