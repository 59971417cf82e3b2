"""``/v1/retro``: the store protocol over HTTP, for `AssistantsAPIStore`.

An extension beside the Assistants API, under its own prefix. The API has no
transactions, caller ids, run leases or run records written by a client; a store
needs them to keep its promises (a batch of messages all or none, one run per
thread across processes, a run's reply and its status in one write). These routes
give each store operation one request, run as one call of the server's store, so it
is exactly as transactional over HTTP as in process.

What is kept from the API:

* keys and owners: a request sees only its owner's assistants and threads (another
  owner's is a 404, as in the API); the ``retro_owner`` entry is never shown and
  never accepted;
* messages cross in wire form (`langchain_retro.stores._wire`): role
  ``user``/``assistant``, text content, and what the wire has no field for in
  metadata; the server stores the LangChain message they rebuild, so a thread
  written here is the same thread the API and a `ThreadRunner` see;
* metadata limits: the server's (OpenAI's, unless ``serve --metadata-limits off``)
  and the client store's, whichever is tighter, checked before anything is written;
* errors: OpenAI's shape, with a ``retro`` entry naming the error of the tree and
  its attributes, so the client raises what the store raised.

Unlike the API, these routes show ``retro_class`` and the other typed-field
entries: they are the store's data. Operations on a collection are named with a
colon (``/threads/{id}/messages:list``), so no caller-chosen message or run id can
take their path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from langchain_retro._metadata import (
    OPENAI_LIMITS,
    MetadataLimits,
    MetadataPatch,
    check_limits,
)
from langchain_retro.errors import (
    AssistantNotFoundError,
    MetadataError,
    RetroError,
    RetroValueError,
    ThreadNotFoundError,
)
from langchain_retro.server.auth import OWNER_KEY, owned, owns
from langchain_retro.server.context import Context, context
from langchain_retro.server.errors import error_response_parts
from langchain_retro.stores._wire import (
    AddMessagesBody,
    BeginRunBody,
    BulkAddBody,
    FinishRunBody,
    ListBody,
    WireMessage,
    encode_error,
    message_object,
    new_message,
    path_id,
    stricter,
    wire_message,
)
from langchain_retro.stores.base import (
    AssistantThreads,
    NewMessage,
    Order,
    StoredAssistant,
    StoredMessage,
    StoredRun,
    StoredThread,
    ThreadCopy,
    ThreadQuery,
)

__all__ = ["LIMITS_STATE", "PREFIX", "router"]

PREFIX = "/v1/retro"
"""Where the extension lives."""

LIMITS_STATE = "retro_metadata_limits"
"""The ``app.state`` attribute holding the server's metadata limits."""

router = APIRouter(prefix=PREFIX)

Ctx = Annotated[Context, Depends(context)]


async def _server_limits(request: Request) -> MetadataLimits:
    limits = getattr(request.app.state, LIMITS_STATE, OPENAI_LIMITS)
    return limits if isinstance(limits, MetadataLimits) else OPENAI_LIMITS


ServerLimits = Annotated[MetadataLimits, Depends(_server_limits)]


async def _answer(work: Awaitable[Any]) -> JSONResponse:
    """Run a store call; its result as JSON, or its error with a ``retro`` entry."""
    try:
        return JSONResponse(await work)
    except RetroError as exc:
        status, body, headers = error_response_parts(exc)
        body["error"]["retro"] = encode_error(exc)
        return JSONResponse(body, status_code=status, headers=headers or None)


# --- what a request may see and write -------------------------------------------------


def _shown(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k != OWNER_KEY}


def _assistant_json(assistant: StoredAssistant) -> dict[str, Any]:
    data = assistant.model_dump(mode="json")
    data["metadata"] = _shown(assistant.metadata)
    return data


def _thread_json(thread: StoredThread) -> dict[str, Any]:
    data = thread.model_dump(mode="json")
    data["metadata"] = _shown(thread.metadata)
    return data


def _messages_json(messages: list[Any]) -> list[dict[str, Any]]:
    return [message_object(m) for m in messages if isinstance(m, StoredMessage)]


def _no_owner_key(keys: object) -> None:
    if isinstance(keys, Mapping | set | frozenset | list) and OWNER_KEY in keys:
        raise MetadataError(
            f"Metadata key {OWNER_KEY!r} is the server's record of who owns an "
            "object; it cannot be written.",
            field=OWNER_KEY,
        )


def _check_patch(
    patch: MetadataPatch | None, current: Mapping[str, str], limits: MetadataLimits
) -> None:
    if patch is None:
        return
    _no_owner_key(patch.set)
    _no_owner_key(patch.remove)
    _no_owner_key(patch.clear_fields)
    patch.apply(_shown(current), limits)


def _check_messages(messages: list[WireMessage], limits: MetadataLimits) -> None:
    for message in messages:
        check_limits(message.metadata, limits)


async def _thread(ctx: Context, thread_id: str) -> StoredThread:
    thread = await ctx.store.aget_thread(thread_id)
    if not owns(thread.metadata, ctx.owner):
        raise ThreadNotFoundError(thread_id)
    return thread


async def _assistant(ctx: Context, assistant_id: str) -> StoredAssistant:
    assistant = await ctx.store.aget_assistant(assistant_id)
    if not owns(assistant.metadata, ctx.owner):
        raise AssistantNotFoundError(assistant_id)
    return assistant


def _owner_filter(ctx: Context, metadata: Mapping[str, str]) -> dict[str, str]:
    _no_owner_key(metadata)
    if ctx.owner is None:
        return dict(metadata)
    return {**metadata, OWNER_KEY: ctx.owner}


def _new(messages: list[WireMessage]) -> list[NewMessage]:
    return [new_message(m) for m in messages]


# --- bodies -------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limits: MetadataLimits = MetadataLimits()
    """The client store's limits."""


class AssistantBody(_Body):
    """Create or change an assistant."""

    fields: dict[str, Any] = Field(default_factory=dict)
    """Native fields."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Metadata of a new assistant."""
    patch: MetadataPatch | None = None
    """A metadata patch, for a change."""


class AssistantsQuery(BaseModel):
    """List assistants."""

    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, str] = Field(default_factory=dict)
    """Equality filters."""
    classes: list[str] | None = None
    """Record class markers."""
    after: str | None = None
    """Cursor."""
    order: Order = "desc"
    """Order by creation."""
    limit: int = 20
    """Page size."""


class ThreadsBody(_Body):
    """Create threads, all or none."""

    metadatas: list[dict[str, str]]
    """One metadata map per thread."""


class PatchBody(_Body):
    """A metadata patch."""

    patch: MetadataPatch
    """The patch."""


class ClearBody(_Body):
    """Clear a thread's messages."""

    thread_patch: MetadataPatch | None = None
    """A patch applied with it."""


class LeaseBody(BaseModel):
    """Take or renew a lease."""

    model_config = ConfigDict(extra="forbid")

    owner: str
    """Who takes it."""
    ttl: float
    """For how many seconds."""


class RunMetadataBody(BaseModel):
    """Replace a run's metadata."""

    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, str]
    """The new metadata."""


# --- assistants -----------------------------------------------------------------------


@router.post("/assistants")
async def create_assistant(
    ctx: Ctx, body: AssistantBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.create_assistant`."""

    async def work() -> Any:
        _no_owner_key(body.metadata)
        check_limits(body.metadata, stricter(limits, body.limits))
        created = await ctx.store.acreate_assistant(
            body.fields, owned(body.metadata, ctx.owner)
        )
        return _assistant_json(created)

    return await _answer(work())


@router.post("/assistants:list")
async def list_assistants(ctx: Ctx, body: AssistantsQuery) -> JSONResponse:
    """`BaseStore.list_assistants`."""

    async def work() -> Any:
        found = await ctx.store.alist_assistants(
            metadata=_owner_filter(ctx, body.metadata),
            classes=body.classes,
            after=body.after,
            order=body.order,
            limit=body.limit,
        )
        return {"data": [_assistant_json(a) for a in found]}

    return await _answer(work())


@router.get("/assistants/{assistant_id}")
async def get_assistant(ctx: Ctx, assistant_id: str) -> JSONResponse:
    """`BaseStore.get_assistant`."""
    assistant_id = path_id(assistant_id)

    async def work() -> Any:
        return _assistant_json(await _assistant(ctx, assistant_id))

    return await _answer(work())


@router.post("/assistants/{assistant_id}")
async def update_assistant(
    ctx: Ctx, assistant_id: str, body: AssistantBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.update_assistant`."""
    assistant_id = path_id(assistant_id)

    async def work() -> Any:
        current = await _assistant(ctx, assistant_id)
        _check_patch(body.patch, current.metadata, stricter(limits, body.limits))
        updated = await ctx.store.aupdate_assistant(
            assistant_id, body.fields, body.patch
        )
        return _assistant_json(updated)

    return await _answer(work())


@router.delete("/assistants/{assistant_id}")
async def delete_assistant(
    ctx: Ctx, assistant_id: str, threads: AssistantThreads = "refuse"
) -> JSONResponse:
    """`BaseStore.delete_assistant`."""
    assistant_id = path_id(assistant_id)

    async def work() -> Any:
        await _assistant(ctx, assistant_id)
        count = await ctx.store.adelete_assistant(assistant_id, threads=threads)
        return {"deleted_threads": count}

    return await _answer(work())


# --- threads --------------------------------------------------------------------------


@router.post("/threads")
async def create_threads(
    ctx: Ctx, body: ThreadsBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.create_threads` (and `BaseStore.create_thread`)."""

    async def work() -> Any:
        for metadata in body.metadatas:
            _no_owner_key(metadata)
            check_limits(metadata, stricter(limits, body.limits))
        created = await ctx.store.acreate_threads(
            [owned(m, ctx.owner) for m in body.metadatas]
        )
        return {"data": [_thread_json(t) for t in created]}

    return await _answer(work())


@router.post("/threads:query")
async def list_threads(ctx: Ctx, query: ThreadQuery) -> JSONResponse:
    """`BaseStore.list_threads`."""

    async def work() -> Any:
        mine = query.model_copy(update={"metadata": _owner_filter(ctx, query.metadata)})
        found = await ctx.store.alist_threads(mine)
        return {"data": [_thread_json(t) for t in found]}

    return await _answer(work())


@router.get("/threads/{thread_id}")
async def get_thread(ctx: Ctx, thread_id: str) -> JSONResponse:
    """`BaseStore.get_thread`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        return _thread_json(await _thread(ctx, thread_id))

    return await _answer(work())


@router.post("/threads/{thread_id}")
async def update_thread(
    ctx: Ctx, thread_id: str, body: PatchBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.update_thread`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        current = await _thread(ctx, thread_id)
        _check_patch(body.patch, current.metadata, stricter(limits, body.limits))
        return _thread_json(await ctx.store.aupdate_thread(thread_id, body.patch))

    return await _answer(work())


@router.delete("/threads/{thread_id}")
async def delete_thread(ctx: Ctx, thread_id: str) -> JSONResponse:
    """`BaseStore.delete_thread`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        await ctx.store.adelete_thread(thread_id)
        return {"id": thread_id, "deleted": True}

    return await _answer(work())


# --- messages -------------------------------------------------------------------------


@router.post("/threads/{thread_id}/messages")
async def add_messages(
    ctx: Ctx, thread_id: str, body: AddMessagesBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.add_messages`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        both = stricter(limits, body.limits)
        _check_messages(body.messages, both)
        messages = _new(body.messages)
        if body.if_idle:
            if body.thread_patch is not None or body.hwm_key is not None:
                raise RetroValueError(
                    "if_idle takes no thread_patch nor hwm_key: send them apart."
                )
            # The owner is part of the scope: one call checks it and writes.
            scope = _owner_filter(ctx, body.scope or {})
            stored = await ctx.store.aadd_messages_if_idle(
                thread_id, messages, scope=scope or None
            )
        else:
            if body.scope is not None:
                raise RetroValueError("scope goes with if_idle only.")
            current = await _thread(ctx, thread_id)
            _check_patch(body.thread_patch, current.metadata, both)
            stored = await ctx.store.aadd_messages(
                thread_id,
                messages,
                thread_patch=body.thread_patch,
                hwm_key=body.hwm_key,
            )
        return {"data": _messages_json(stored)}

    return await _answer(work())


@router.post("/messages:bulk")
async def bulk_add_messages(
    ctx: Ctx, body: BulkAddBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.bulk_add_messages`."""

    async def work() -> Any:
        both = stricter(limits, body.limits)
        batches = []
        for thread_id, messages in body.batches:
            _check_messages(messages, both)
            batches.append((thread_id, _new(messages)))
        for thread_id in {thread_id for thread_id, _ in batches}:
            await _thread(ctx, thread_id)
        return {"written": await ctx.store.abulk_add_messages(batches)}

    return await _answer(work())


@router.post("/threads/{thread_id}/messages:list")
async def list_messages(ctx: Ctx, thread_id: str, body: ListBody) -> JSONResponse:
    """`BaseStore.list_messages`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        found = await ctx.store.alist_messages(
            thread_id,
            after=body.after,
            before=body.before,
            order=body.order,
            limit=body.limit,
        )
        return {"data": _messages_json(found)}

    return await _answer(work())


@router.get("/threads/{thread_id}/messages:count")
async def count_messages(
    ctx: Ctx, thread_id: str, after: str | None = None
) -> JSONResponse:
    """`BaseStore.count_messages`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        return {"count": await ctx.store.acount_messages(thread_id, after=after)}

    return await _answer(work())


@router.post("/threads/{thread_id}/messages:clear")
async def clear_messages(
    ctx: Ctx, thread_id: str, body: ClearBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.clear_messages`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        current = await _thread(ctx, thread_id)
        _check_patch(body.thread_patch, current.metadata, stricter(limits, body.limits))
        count = await ctx.store.aclear_messages(
            thread_id, thread_patch=body.thread_patch
        )
        return {"deleted": count}

    return await _answer(work())


@router.get("/threads/{thread_id}/messages/{message_id}")
async def get_message(ctx: Ctx, thread_id: str, message_id: str) -> JSONResponse:
    """`BaseStore.get_message`."""
    thread_id = path_id(thread_id)
    message_id = path_id(message_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        return message_object(await ctx.store.aget_message(thread_id, message_id))

    return await _answer(work())


@router.post("/threads/{thread_id}/messages/{message_id}")
async def update_message(
    ctx: Ctx, thread_id: str, message_id: str, body: PatchBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.update_message`."""
    thread_id = path_id(thread_id)
    message_id = path_id(message_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        current = await ctx.store.aget_message(thread_id, message_id)
        wire_message(
            NewMessage(
                role=current.role,
                payload=current.payload,
                metadata=body.patch.apply(current.metadata, MetadataLimits()),
                reply_to=current.reply_to,
            ),
            stricter(limits, body.limits),
        )
        updated = await ctx.store.aupdate_message(thread_id, message_id, body.patch)
        return message_object(updated)

    return await _answer(work())


@router.delete("/threads/{thread_id}/messages/{message_id}")
async def delete_message(ctx: Ctx, thread_id: str, message_id: str) -> JSONResponse:
    """`BaseStore.delete_message`."""
    thread_id = path_id(thread_id)
    message_id = path_id(message_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        await ctx.store.adelete_message(thread_id, message_id)
        return {"id": message_id, "deleted": True}

    return await _answer(work())


# --- leases ---------------------------------------------------------------------------


@router.post("/threads/{thread_id}/lease")
async def acquire_lease(ctx: Ctx, thread_id: str, body: LeaseBody) -> JSONResponse:
    """`BaseStore.acquire_lease`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        taken = await ctx.store.aacquire_lease(thread_id, body.owner, body.ttl)
        return {"acquired": taken}

    return await _answer(work())


@router.delete("/threads/{thread_id}/lease")
async def release_lease(ctx: Ctx, thread_id: str, owner: str) -> JSONResponse:
    """`BaseStore.release_lease`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        await ctx.store.arelease_lease(thread_id, owner)
        return {"released": True}

    return await _answer(work())


@router.get("/threads/{thread_id}/lease")
async def get_lease(ctx: Ctx, thread_id: str) -> JSONResponse:
    """`BaseStore.get_lease`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        lease = await ctx.store.aget_lease(thread_id)
        return {"lease": None if lease is None else lease.model_dump(mode="json")}

    return await _answer(work())


# --- runs -----------------------------------------------------------------------------


@router.post("/threads/{thread_id}/runs:begin")
async def begin_run(
    ctx: Ctx, thread_id: str, body: BeginRunBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.begin_run`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        _check_messages(body.messages, stricter(limits, body.limits))
        messages = _new(body.messages)
        await _thread(ctx, thread_id)
        start = await ctx.store.abegin_run(
            thread_id,
            owner=body.owner,
            ttl=body.ttl,
            run=body.run,
            messages=messages,
            context_limit=body.context_limit,
            resume=body.resume,
        )
        if start is None:
            return {"start": None}
        # The rest is written out below: not dumped twice (a context may be long).
        data = start.model_dump(
            mode="json", exclude={"thread", "assistant", "appended", "context"}
        )
        data["thread"] = _thread_json(start.thread)
        assistant = start.assistant
        # A thread may name any id: another owner's assistant is none to this run.
        if assistant is not None and owns(assistant.metadata, ctx.owner):
            data["assistant"] = _assistant_json(assistant)
        else:
            data["assistant"] = None
        data["appended"] = _messages_json(start.appended)
        data["context"] = _messages_json([row.stored() for row in start.context])
        return {"start": data}

    return await _answer(work())


@router.post("/threads/{thread_id}/runs:renew")
async def renew_run(ctx: Ctx, thread_id: str, body: LeaseBody) -> JSONResponse:
    """`BaseStore.renew_run`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        try:
            await _thread(ctx, thread_id)
        except ThreadNotFoundError:
            return {"state": "lost"}
        state = await ctx.store.arenew_run(thread_id, owner=body.owner, ttl=body.ttl)
        return {"state": state}

    return await _answer(work())


@router.post("/threads/{thread_id}/runs:list")
async def list_runs(ctx: Ctx, thread_id: str, body: ListBody) -> JSONResponse:
    """`BaseStore.list_runs`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        found = await ctx.store.alist_runs(
            thread_id,
            after=body.after,
            before=body.before,
            order=body.order,
            limit=20 if body.limit is None else body.limit,
        )
        return {"data": [run.model_dump(mode="json") for run in found]}

    return await _answer(work())


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(ctx: Ctx, thread_id: str, run_id: str) -> JSONResponse:
    """`BaseStore.get_run`."""
    thread_id = path_id(thread_id)
    run_id = path_id(run_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        return (await ctx.store.aget_run(thread_id, run_id)).model_dump(mode="json")

    return await _answer(work())


@router.post("/threads/{thread_id}/runs/{run_id}/finish")
async def finish_run(
    ctx: Ctx, thread_id: str, run_id: str, body: FinishRunBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.finish_run`."""
    thread_id = path_id(thread_id)
    run_id = path_id(run_id)

    async def work() -> Any:
        both = stricter(limits, body.limits)
        _check_messages(body.messages, both)
        messages = _new(body.messages)
        current = await _thread(ctx, thread_id)
        _check_patch(body.thread_patch, current.metadata, both)
        saved = await ctx.store.afinish_run(
            thread_id,
            owner=body.owner,
            run_id=run_id,
            update=body.update,
            messages=messages,
            thread_patch=body.thread_patch,
        )
        return {
            "messages": _messages_json(saved.messages),
            "run": saved.run.model_dump(mode="json"),
        }

    return await _answer(work())


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(ctx: Ctx, thread_id: str, run_id: str) -> JSONResponse:
    """`BaseStore.cancel_run`."""
    thread_id = path_id(thread_id)
    run_id = path_id(run_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        run = await ctx.store.acancel_run(thread_id, run_id)
        return run.model_dump(mode="json")

    return await _answer(work())


@router.post("/threads/{thread_id}/runs/{run_id}/metadata")
async def update_run_metadata(
    ctx: Ctx, thread_id: str, run_id: str, body: RunMetadataBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.update_run_metadata`."""
    thread_id = path_id(thread_id)
    run_id = path_id(run_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        check_limits(body.metadata, limits)
        run = await ctx.store.aupdate_run_metadata(thread_id, run_id, body.metadata)
        return run.model_dump(mode="json")

    return await _answer(work())


@router.get("/threads/{thread_id}/runs/{run_id}/messages")
async def list_run_messages(ctx: Ctx, thread_id: str, run_id: str) -> JSONResponse:
    """`BaseStore.list_run_messages`."""
    thread_id = path_id(thread_id)
    run_id = path_id(run_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        found = await ctx.store.alist_run_messages(thread_id, run_id)
        return {"data": _messages_json(found)}

    return await _answer(work())


@router.get("/threads/{thread_id}/usage")
async def get_thread_usage(ctx: Ctx, thread_id: str) -> JSONResponse:
    """`BaseStore.get_thread_usage`."""
    thread_id = path_id(thread_id)

    async def work() -> Any:
        await _thread(ctx, thread_id)
        usage = await ctx.store.aget_thread_usage(thread_id)
        return usage.model_dump(mode="json")

    return await _answer(work())


# --- copies that keep ids (migrate, import) -------------------------------------------


class AssistantsImportBody(_Body):
    """Assistants to write under their own ids."""

    assistants: list[StoredAssistant]
    """The assistants, as a store holds them."""


class ThreadsImportBody(_Body):
    """Threads to write under their own ids."""

    threads: list[ThreadCopy]
    """The threads, with their token totals."""


class RunsImportBody(_Body):
    """Run records to write under their own ids."""

    runs: list[StoredRun]
    """The runs, as a store holds them."""


async def _not_taken(ctx: Context, kind: str, object_id: str) -> None:
    """Refuse, before any write, an id another owner's object already has."""
    if ctx.owner is None:
        return  # no keys: every object is the caller's
    try:
        present = await (
            ctx.store.aget_assistant(object_id)
            if kind == "Assistant"
            else ctx.store.aget_thread(object_id)
        )
    except (AssistantNotFoundError, ThreadNotFoundError):
        return
    if not owns(present.metadata, ctx.owner):
        raise RetroValueError(
            f"{kind} id {object_id!r} is already used on this server by data this "
            "key does not own; nothing was written. Import with the key that owns "
            "it, or into another server."
        )


_Imported = TypeVar("_Imported", StoredAssistant, ThreadCopy)


async def _owned_imports(
    ctx: Context, kind: str, records: Sequence[_Imported], limits: MetadataLimits
) -> list[_Imported]:
    """Records to import as this key's: checked, ids free, marked with the owner.

    Raises:
        RetroValueError: A record's metadata names an owner, is over ``limits``, or
            its id is already another key's; nothing was written.
    """
    for record in records:
        _no_owner_key(record.metadata)
        check_limits(record.metadata, limits)
    for record in records:
        await _not_taken(ctx, kind, record.id)
    return [
        r.model_copy(update={"metadata": owned(r.metadata, ctx.owner)}) for r in records
    ]


@router.post("/assistants:import")
async def import_assistants(
    ctx: Ctx, body: AssistantsImportBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.import_assistants`: this key's assistants, ids kept."""

    async def work() -> Any:
        both = stricter(limits, body.limits)
        mine = await _owned_imports(ctx, "Assistant", body.assistants, both)
        return {"written": await ctx.store.aimport_assistants(mine)}

    return await _answer(work())


@router.post("/threads:import")
async def import_threads(
    ctx: Ctx, body: ThreadsImportBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.import_threads`: this key's threads, ids kept."""

    async def work() -> Any:
        both = stricter(limits, body.limits)
        mine = await _owned_imports(ctx, "Thread", body.threads, both)
        return {"written": await ctx.store.aimport_threads(mine)}

    return await _answer(work())


@router.post("/runs:import")
async def import_runs(
    ctx: Ctx, body: RunsImportBody, limits: ServerLimits
) -> JSONResponse:
    """`BaseStore.import_runs`: runs on this key's threads, ids kept."""

    async def work() -> Any:
        for run in body.runs:
            check_limits(run.metadata, stricter(limits, body.limits))
        for thread_id in dict.fromkeys(r.thread_id for r in body.runs):
            await _thread(ctx, thread_id)
        return {"written": await ctx.store.aimport_runs(body.runs)}

    return await _answer(work())
