"""`AssistantsAPIStore` on a server that speaks only the Assistants API.

``AssistantsAPIStore(protocol="assistants")`` (or ``"auto"`` on a server without
the ``/v1/retro`` routes) keeps the data plane in the server's assistants, threads
and messages, through ``client.beta``'s endpoints and nothing else:

* assistants and threads keep their metadata (keys escaped, `_plain_ops`);
* messages are ``user`` / ``assistant`` text, whatever the wire has no field for
  in their metadata (`langchain_retro.stores._wire`), the caller's id, the run and
  the assistant included: a message given an id is read back under that id;
* threads are listed through ``GET /v1/threads`` where the server has it
  (``langchain-retro serve`` does), otherwise through the local ``index`` store
  (`_plain_index`); without either, listing raises `StoreError` naming both;
* run leases, run records and usage live in the index store when there is one,
  shared by every process that shares it, else in this process (`_plain_runs`).

What a server without transactions cannot give, this mode does not claim: a
batch of messages is written one request at a time (a failure part-way leaves the
first ones), a patch of metadata is a read then a write (two writers may lose one
change), and one active run per thread, like a run's records and usage, holds
among the processes that share the index (within one process without an index).
Every check runs before the first request, so a refused write writes nothing.
``PLAIN_EXCEPTIONS`` in the tests lists the contract statements that do not hold,
each with its reason.

Reads per windowed turn are constant in the thread's length: the context of a
run is the newest ``context_limit`` messages, one ``order=desc&limit=N`` page.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import openai

from langchain_retro._metadata import (
    CLASS_KEY,
    OPENAI_LIMITS,
    MetadataLimits,
    MetadataPatch,
    unencodable_error,
)
from langchain_retro.errors import (
    AssistantInUseError,
    AssistantNotFoundError,
    MessageIdConflictError,
    MessageNotFoundError,
    RetroError,
    RetroValueError,
    RunNotFoundError,
    StoreError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from langchain_retro.stores._plain_index import ThreadIndex
from langchain_retro.stores._plain_ledger import Ledger, ledger_for
from langchain_retro.stores._plain_ops import (
    ESCAPE,
    PAGE,
    Call,
    Http,
    OnIndex,
    Op,
    assistant_of,
    escaped,
    foreign,
    message_of,
    plain_limits,
    seg,
    thread_of,
    unescaped,
)
from langchain_retro.stores._plain_runs import IndexedRuns, LocalRuns, RunPlane
from langchain_retro.stores._wire import plain_message
from langchain_retro.stores._wire_requests import Request
from langchain_retro.stores.assistants_api import (
    AssistantsAPIStore,
    WireProtocol,
    _store_error,
    idempotent,
)
from langchain_retro.stores.base import (
    THREAD_ASSISTANT_KEY,
    AssistantThreads,
    BaseStore,
    Lease,
    MessageRow,
    NewMessage,
    NewRun,
    Order,
    RunLeaseState,
    RunSaved,
    RunStart,
    RunUpdate,
    RunUsage,
    StoredAssistant,
    StoredMessage,
    StoredRun,
    StoredThread,
    ThreadQuery,
    answered_in_batch,
    check_assistant_fields,
    check_hwm_key,
    check_metadata,
    check_new_ids,
    has_reply,
)

__all__ = ["PlainAssistantsAPIStore"]

T = TypeVar("T")

_Wired = tuple[str, str, dict[str, str]]
"""A message as it is sent: role, text, wire metadata (escaped)."""


class _UnservedError(StoreError):
    """A route the server does not have (a 404 on a listing)."""


def _busy(message: str) -> bool:
    return "while a run" in message and "is active" in message


def _plain_error(exc: openai.OpenAIError, call: Http) -> RetroError:
    """The error of our tree an SDK error on a plain call means."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, Mapping) else {}
        message = str(body.get("message") or exc.message)
        # A route a server lacks may answer 405 (its path serves another method).
        if exc.status_code in (404, 405) and call.missing is not None:
            return call.missing()
        if exc.status_code == 400 and (
            _busy(message) or body.get("code") == "thread_busy"
        ):
            return ThreadBusyError(
                f"The server refused the write: {message} Wait for the run to end "
                "(or cancel it), then try again.",
                thread_id=call.thread_id,
            )
        if exc.status_code == 400:
            return RetroValueError(f"The server refused the request: {message}")
        if exc.status_code == 404:
            return StoreError(
                f"The server does not answer {call.method.upper()} {call.path} "
                f"({message})."
            )
    return _store_error(exc, call.method, call.path)


def _thread_missing(thread_id: str) -> Callable[[], RetroError]:
    return lambda: ThreadNotFoundError(thread_id)


def _threads(thread_id: str) -> str:
    return f"/threads/{seg(thread_id)}"


class PlainAssistantsAPIStore(AssistantsAPIStore):
    """`AssistantsAPIStore` over the plain Assistants API (``protocol="assistants"``).

    Made by `AssistantsAPIStore` itself; see `langchain_retro.stores._assistants_plain`
    for what holds and what does not.
    """

    def __init__(
        self,
        *,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        limits: MetadataLimits = OPENAI_LIMITS,
        protocol: WireProtocol = "assistants",
        index: BaseStore | None = None,
    ) -> None:
        """See `AssistantsAPIStore`."""
        super().__init__(
            client=client,
            async_client=async_client,
            limits=limits,
            protocol="retro",
        )
        self.limits = plain_limits(self.limits)
        self._ledger: Ledger = ledger_for(self._settings["base_url"])
        self._index = None if index is None else ThreadIndex(index)
        self._runs: RunPlane = (
            LocalRuns(self._ledger) if self._index is None else IndexedRuns(self._index)
        )
        self._server_lists: bool | None = None

    def __repr__(self) -> str:
        return (
            f"AssistantsAPIStore({self._settings['base_url']!r}, protocol='assistants')"
        )

    # --- what the plain API cannot do as the retro routes do --------------------

    keeps_ids = False
    """The Assistants API assigns its own ids: a copy into it needs an id map."""

    import_assistants = BaseStore.import_assistants
    aimport_assistants = BaseStore.aimport_assistants
    import_threads = BaseStore.import_threads
    aimport_threads = BaseStore.aimport_threads
    import_runs = BaseStore.import_runs
    aimport_runs = BaseStore.aimport_runs

    # The check and the write under the thread's lease (in this process, or in the
    # index): the runs the lease keeps out are the ones this store's runs take.
    add_messages_if_idle = BaseStore.add_messages_if_idle
    aadd_messages_if_idle = BaseStore.aadd_messages_if_idle

    # --- I/O: the drivers --------------------------------------------------------

    def _unplain(self, request: Request[Any]) -> StoreError:
        return StoreError(
            f"{request.method.upper()} /v1{request.path} is an operation of the "
            "/v1/retro routes of `langchain-retro serve`, which this store "
            "(protocol='assistants') does not speak. Use AssistantsAPIStore with "
            "protocol='retro' on such a server."
        )

    def _send(self, request: Request[T]) -> T:
        """Refuse what only the ``/v1/retro`` routes do (an operation not above)."""
        self._open()
        raise self._unplain(request)

    async def _asend(self, request: Request[T]) -> T:
        """Async twin of `_send`."""
        self._open()
        raise self._unplain(request)

    def _do(self, call: Call) -> Any:
        if isinstance(call, OnIndex):
            return call.call(self._need_index())
        client = self._sync
        options: Any = {"params": call.params}
        try:
            if call.method == "get":
                return client.get(call.path, cast_to=object, options=options)
            if call.method == "post":
                return client.post(
                    call.path, cast_to=object, body=call.body, options=idempotent()
                )
            return client.delete(call.path, cast_to=object)
        except UnicodeEncodeError as exc:
            raise unencodable_error(exc) from exc
        except openai.OpenAIError as exc:
            raise _plain_error(exc, call) from exc

    async def _ado(self, call: Call) -> Any:
        if isinstance(call, OnIndex):
            return await call.acall(self._need_index())
        client = self._async
        options: Any = {"params": call.params}
        try:
            if call.method == "get":
                return await client.get(call.path, cast_to=object, options=options)
            if call.method == "post":
                return await client.post(
                    call.path, cast_to=object, body=call.body, options=idempotent()
                )
            return await client.delete(call.path, cast_to=object)
        except UnicodeEncodeError as exc:
            raise unencodable_error(exc) from exc
        except openai.OpenAIError as exc:
            raise _plain_error(exc, call) from exc

    def _drive(self, op: Op[T]) -> T:
        self._open()
        value: Any = None
        error: RetroError | None = None
        while True:
            try:
                call = op.send(value) if error is None else op.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = self._do(call)
            except RetroError as exc:
                error = exc

    async def _adrive(self, op: Op[T]) -> T:
        self._open()
        value: Any = None
        error: RetroError | None = None
        while True:
            try:
                call = op.send(value) if error is None else op.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = await self._ado(call)
            except RetroError as exc:
                error = exc

    def _need_index(self) -> BaseStore:
        assert self._index is not None  # noqa: S101 - ops yield OnIndex only with one
        return self._index.store

    # --- shared steps (no I/O of their own) --------------------------------------

    def _wired(self, thread_id: str, messages: Sequence[NewMessage]) -> list[_Wired]:
        """Every message of a batch checked and encoded, before any request."""
        check_new_ids(thread_id, messages)
        out: list[_Wired] = []
        for index, message in enumerate(messages):
            role, text, metadata = plain_message(
                message, self.limits, where=f"Message {index} of the batch"
            )
            out.append((role, text, escaped(metadata)))
        return out

    def _refuse_taken(self, thread_id: str, messages: Sequence[NewMessage]) -> Op[None]:
        """Refuse caller ids the thread already has (one read of the thread).

        The server knows messages by its own ids only, so a batch that names ids
        reads the thread's messages once; batches without ids read nothing.
        """
        wanted = {m.id for m in messages if m.id is not None}
        if not wanted:
            return
        for message_id in sorted(wanted):
            known = self._ledger.server_id(thread_id, message_id)
            if known is None:
                continue
            # Seen in this process; another may have deleted it since.
            try:
                yield Http(
                    "get",
                    f"{_threads(thread_id)}/messages/{seg(known)}",
                    missing=partial(MessageNotFoundError, message_id),
                )
            except MessageNotFoundError:
                self._ledger.forget(thread_id, message_id)
            else:
                raise MessageIdConflictError(thread_id, message_id)
        taken = yield from self._pages(
            f"{_threads(thread_id)}/messages",
            order="desc",
            limit=1,
            keep=lambda item: message_of(item).id in wanted,
            missing=_thread_missing(thread_id),
        )
        if taken:
            raise MessageIdConflictError(thread_id, message_of(taken[0]).id)

    def _pages(
        self,
        path: str,
        *,
        order: Order,
        after: str | None = None,
        stop: str | None = None,
        limit: int | None = None,
        keep: Callable[[dict[str, Any]], bool] | None = None,
        params: Mapping[str, Any] | None = None,
        missing: Callable[[], RetroError] | None = None,
    ) -> Op[list[dict[str, Any]]]:
        """Objects of a listing from ``after`` on, up to ``stop`` or ``limit``."""
        out: list[dict[str, Any]] = []
        cursor = after
        if limit == 0:
            return out
        while True:
            size = PAGE
            if limit is not None and keep is None:
                size = min(PAGE, limit - len(out) + (stop is not None))
            query: dict[str, Any] = {**(params or {}), "order": order, "limit": size}
            if cursor is not None:
                query["after"] = cursor
            data = yield Http("get", path, params=query, missing=missing)
            items: list[dict[str, Any]] = list(data.get("data") or [])
            for item in items:
                if stop is not None and item["id"] == stop:
                    return out
                if keep is None or keep(item):
                    out.append(item)
                    if limit is not None and len(out) >= limit:
                        return out
            if not items or not data.get("has_more"):
                return out
            cursor = items[-1]["id"]

    def _resolve(self, thread_id: str, message_id: str) -> Op[str]:
        """The server's id of the message the store names ``message_id``."""
        known = self._ledger.server_id(thread_id, message_id)
        if known is not None:
            return known
        try:
            data = yield Http(
                "get",
                f"{_threads(thread_id)}/messages/{seg(message_id)}",
                missing=lambda: MessageNotFoundError(message_id),
            )
        except MessageNotFoundError:
            pass
        else:
            return str(data["id"])
        # A caller's id: the server knows the message by its own id only.
        found = yield from self._pages(
            f"{_threads(thread_id)}/messages",
            order="desc",
            limit=1,
            keep=lambda item: message_of(item).id == message_id,
            missing=_thread_missing(thread_id),
        )
        if not found:
            raise MessageNotFoundError(
                message_id, hint=f"(not on thread {thread_id!r})"
            )
        self._ledger.remember(thread_id, message_id, found[0]["id"])
        return str(found[0]["id"])

    def _read_thread(self, thread_id: str) -> Op[dict[str, Any]]:
        data = yield Http(
            "get", _threads(thread_id), missing=_thread_missing(thread_id)
        )
        return dict(data)

    def _write_thread(
        self, thread_id: str, current: dict[str, Any], metadata: Mapping[str, str]
    ) -> Op[StoredThread]:
        """Replace the thread's metadata: ours as given, the server's as they were."""
        body = {"metadata": {**foreign(current.get("metadata")), **escaped(metadata)}}
        if self._index is not None:
            yield from self._index.pending(thread_id)
        data = yield Http(
            "post", _threads(thread_id), body, missing=_thread_missing(thread_id)
        )
        thread = thread_of(data)
        if self._index is not None:
            yield from self._index.confirm(thread)
        return thread

    def _append(
        self, thread_id: str, wired: Sequence[_Wired]
    ) -> Op[list[StoredMessage]]:
        stored: list[StoredMessage] = []
        for role, text, metadata in wired:
            data = yield Http(
                "post",
                f"{_threads(thread_id)}/messages",
                {"role": role, "content": text, "metadata": metadata},
                missing=_thread_missing(thread_id),
                thread_id=thread_id,
            )
            message = message_of(data)
            self._ledger.remember(thread_id, message.id, str(data["id"]))
            stored.append(message)
        return stored

    def _hwm_target(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        stored: Sequence[StoredMessage],
    ) -> Op[str | None]:
        """The id a batch's last reply answers (see `answered_in_batch`)."""
        if not has_reply(messages):
            return None
        target = answered_in_batch(messages, [m.id for m in stored])
        if target is not None:
            return target
        first = self._ledger.server_id(thread_id, stored[0].id)
        before = yield from self._pages(
            f"{_threads(thread_id)}/messages",
            order="desc",
            after=first,
            limit=1,
            keep=lambda item: message_of(item).role != "assistant",
            missing=_thread_missing(thread_id),
        )
        return message_of(before[0]).id if before else None

    # --- assistants ------------------------------------------------------------------

    def _create_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> Op[StoredAssistant]:
        check_assistant_fields(fields)
        checked = check_metadata(metadata, self.limits, "Assistant")
        body = {**fields, "metadata": escaped(checked)}
        return assistant_of((yield Http("post", "/assistants", body)))

    def create_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Create an assistant from its native fields and its metadata."""
        return self._drive(self._create_assistant(fields, metadata))

    async def acreate_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Async twin of `create_assistant`."""
        return await self._adrive(self._create_assistant(fields, metadata))

    def _get_assistant(self, assistant_id: str) -> Op[dict[str, Any]]:
        data = yield Http(
            "get",
            f"/assistants/{seg(assistant_id)}",
            missing=lambda: AssistantNotFoundError(assistant_id),
        )
        return dict(data)

    def _get_assistant_record(self, assistant_id: str) -> Op[StoredAssistant]:
        return assistant_of((yield from self._get_assistant(assistant_id)))

    def get_assistant(self, assistant_id: str) -> StoredAssistant:
        """Read an assistant; raises `AssistantNotFoundError`."""
        return self._drive(self._get_assistant_record(assistant_id))

    async def aget_assistant(self, assistant_id: str) -> StoredAssistant:
        """Async twin of `get_assistant`."""
        return await self._adrive(self._get_assistant_record(assistant_id))

    def _update_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None,
    ) -> Op[StoredAssistant]:
        check_assistant_fields(fields)
        current = yield from self._get_assistant(assistant_id)
        body: dict[str, Any] = dict(fields)
        if patch is not None:
            metadata = patch.apply(unescaped(current.get("metadata")), self.limits)
            body["metadata"] = {
                **foreign(current.get("metadata")),
                **escaped(metadata),
            }
        if not body:
            return assistant_of(current)
        data = yield Http(
            "post",
            f"/assistants/{seg(assistant_id)}",
            body,
            missing=lambda: AssistantNotFoundError(assistant_id),
        )
        return assistant_of(data)

    def update_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Change native fields and apply a metadata patch (a read, then a write)."""
        return self._drive(self._update_assistant(assistant_id, fields, patch))

    async def aupdate_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Async twin of `update_assistant`."""
        return await self._adrive(self._update_assistant(assistant_id, fields, patch))

    def _delete_assistant(
        self, assistant_id: str, threads: AssistantThreads
    ) -> Op[int]:
        yield from self._get_assistant(assistant_id)
        deleted = 0
        if threads != "keep":
            query = ThreadQuery(
                metadata={THREAD_ASSISTANT_KEY: assistant_id}, limit=10_001
            )
            found = yield from self._list_threads(query)
            if found and threads == "refuse":
                raise AssistantInUseError(assistant_id, len(found))
            for thread in found:
                yield from self._delete_thread(thread.id)
                deleted += 1
        yield Http(
            "delete",
            f"/assistants/{seg(assistant_id)}",
            missing=lambda: AssistantNotFoundError(assistant_id),
        )
        return deleted

    def delete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Delete an assistant; ``refuse`` and ``delete`` list its threads first."""
        return self._drive(self._delete_assistant(assistant_id, threads))

    async def adelete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Async twin of `delete_assistant`."""
        return await self._adrive(self._delete_assistant(assistant_id, threads))

    def _list_assistants(
        self,
        metadata: Mapping[str, str] | None,
        classes: Sequence[str] | None,
        after: str | None,
        order: Order,
        limit: int,
    ) -> Op[list[StoredAssistant]]:
        wanted = dict(metadata or {})
        marks = None if classes is None else set(classes)

        def keep(item: dict[str, Any]) -> bool:
            mine = unescaped(item.get("metadata"))
            if any(mine.get(k) != v for k, v in wanted.items()):
                return False
            return marks is None or mine.get(CLASS_KEY) in marks

        if marks is not None and not marks:
            return []
        items = yield from self._pages(
            "/assistants",
            order=order,
            after=after,
            limit=limit,
            keep=keep if wanted or marks is not None else None,
            missing=lambda: AssistantNotFoundError(str(after), hint="(a cursor)"),
        )
        return [assistant_of(item) for item in items]

    def list_assistants(
        self,
        *,
        metadata: Mapping[str, str] | None = None,
        classes: Sequence[str] | None = None,
        after: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredAssistant]:
        """List assistants (filters applied here, over the server's pages)."""
        return self._drive(
            self._list_assistants(metadata, classes, after, order, limit)
        )

    async def alist_assistants(
        self,
        *,
        metadata: Mapping[str, str] | None = None,
        classes: Sequence[str] | None = None,
        after: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredAssistant]:
        """Async twin of `list_assistants`."""
        return await self._adrive(
            self._list_assistants(metadata, classes, after, order, limit)
        )

    # --- threads ---------------------------------------------------------------------

    def _create_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> Op[list[StoredThread]]:
        checked = [check_metadata(m, self.limits, "Thread") for m in metadatas]
        made: list[StoredThread] = []
        for metadata in checked:
            token = None
            if self._index is not None:
                token = yield from self._index.begin_create(metadata)
            data = yield Http("post", "/threads", {"metadata": escaped(metadata)})
            thread = thread_of(data)
            if self._index is not None and token is not None:
                yield from self._index.end_create(token, thread)
            made.append(thread)
        return made

    def create_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Create a thread with the given metadata."""
        return self._drive(self._create_threads([metadata]))[0]

    async def acreate_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Async twin of `create_thread`."""
        return (await self._adrive(self._create_threads([metadata])))[0]

    def create_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Create threads one request each (all checked first; not all or none)."""
        return self._drive(self._create_threads(metadatas))

    async def acreate_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Async twin of `create_threads`."""
        return await self._adrive(self._create_threads(metadatas))

    def _get_thread(self, thread_id: str) -> Op[StoredThread]:
        return thread_of((yield from self._read_thread(thread_id)))

    def get_thread(self, thread_id: str) -> StoredThread:
        """Read a thread; raises `ThreadNotFoundError`."""
        return self._drive(self._get_thread(thread_id))

    async def aget_thread(self, thread_id: str) -> StoredThread:
        """Async twin of `get_thread`."""
        return await self._adrive(self._get_thread(thread_id))

    def _update_thread(self, thread_id: str, patch: MetadataPatch) -> Op[StoredThread]:
        current = yield from self._read_thread(thread_id)
        metadata = patch.apply(unescaped(current.get("metadata")), self.limits)
        return (yield from self._write_thread(thread_id, current, metadata))

    def update_thread(self, thread_id: str, patch: MetadataPatch) -> StoredThread:
        """Apply a metadata patch to a thread (a read, then a write)."""
        return self._drive(self._update_thread(thread_id, patch))

    async def aupdate_thread(
        self, thread_id: str, patch: MetadataPatch
    ) -> StoredThread:
        """Async twin of `update_thread`."""
        return await self._adrive(self._update_thread(thread_id, patch))

    def _delete_thread(self, thread_id: str) -> Op[None]:
        if self._index is not None:
            yield from self._index.pending(thread_id)
        yield Http("delete", _threads(thread_id), missing=_thread_missing(thread_id))
        self._ledger.forget(thread_id)
        if self._index is not None:
            yield from self._index.remove(thread_id)

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread with its messages and its runs."""
        self._drive(self._delete_thread(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        """Async twin of `delete_thread`."""
        await self._adrive(self._delete_thread(thread_id))

    def _probe_listing(self) -> Op[bool]:
        if self._server_lists is None:
            try:
                yield Http(
                    "get",
                    "/threads",
                    params={"limit": 1},
                    missing=lambda: _UnservedError(""),
                )
            except _UnservedError:
                self._server_lists = False
            else:
                self._server_lists = True
        return self._server_lists

    def _list_threads(self, query: ThreadQuery) -> Op[list[StoredThread]]:
        if query.classes is not None and not query.classes:
            return []
        if not (yield from self._probe_listing()):
            if self._index is None:
                raise StoreError(
                    "This server does not list threads (no GET /v1/threads), so "
                    "AssistantsAPIStore cannot either. Give the store a local index "
                    "(AssistantsAPIStore(..., index=SQLiteStore('index.db'))), which "
                    "it keeps in step with the server, or use a server that lists "
                    "threads (`langchain-retro serve` does)."
                )
            return (yield from self._index.list(query, self._get_thread_or_none))
        params = {f"metadata[{ESCAPE}{k}]": v for k, v in query.metadata.items()}
        marks = None if query.classes is None else set(query.classes)
        keep = None
        if marks is not None and len(marks) == 1:
            params[f"metadata[{ESCAPE}{CLASS_KEY}]"] = next(iter(marks))
        elif marks is not None:

            def keep(item: dict[str, Any]) -> bool:
                return unescaped(item.get("metadata")).get(CLASS_KEY) in marks

        backwards = query.before is not None
        reading: Order = query.order
        if backwards:
            reading = "asc" if query.order == "desc" else "desc"
        cursor = query.before if backwards else query.after
        items = yield from self._pages(
            "/threads",
            order=reading,
            after=cursor,
            stop=query.after if backwards else None,
            limit=query.limit,
            keep=keep,
            params=params,
            missing=lambda: ThreadNotFoundError(str(cursor), hint="(a cursor)"),
        )
        threads = [thread_of(item) for item in items]
        return threads[::-1] if backwards else threads

    def _get_thread_or_none(self, thread_id: str) -> Op[StoredThread | None]:
        try:
            return (yield from self._get_thread(thread_id))
        except ThreadNotFoundError:
            return None

    def list_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """List threads: the server's ``GET /v1/threads``, else the local index."""
        return self._drive(self._list_threads(query))

    async def alist_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """Async twin of `list_threads`."""
        return await self._adrive(self._list_threads(query))

    # --- messages --------------------------------------------------------------------

    def _add_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        thread_patch: MetadataPatch | None,
        hwm_key: str | None,
    ) -> Op[list[StoredMessage]]:
        wired = self._wired(thread_id, messages)
        if hwm_key is not None:
            check_hwm_key(hwm_key, self.limits)
        yield from self._refuse_taken(thread_id, messages)
        current: dict[str, Any] | None = None
        metadata: dict[str, str] | None = None
        moves = hwm_key is not None and has_reply(messages)
        if thread_patch is not None or moves:
            current = yield from self._read_thread(thread_id)
            metadata = unescaped(current.get("metadata"))
            if thread_patch is not None:
                metadata = thread_patch.apply(metadata, self.limits)
        stored = yield from self._append(thread_id, wired)
        changed = thread_patch is not None
        if hwm_key is not None and metadata is not None:
            target = yield from self._hwm_target(thread_id, messages, stored)
            if target is not None:
                metadata = {**metadata, hwm_key: target}
                check_metadata(metadata, self.limits, "Thread")
                changed = True
        if changed and current is not None and metadata is not None:
            yield from self._write_thread(thread_id, current, metadata)
        return stored

    def add_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
        hwm_key: str | None = None,
    ) -> list[StoredMessage]:
        """Append messages one request each, in order (all checked first)."""
        return self._drive(
            self._add_messages(thread_id, messages, thread_patch, hwm_key)
        )

    async def aadd_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
        hwm_key: str | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `add_messages`."""
        return await self._adrive(
            self._add_messages(thread_id, messages, thread_patch, hwm_key)
        )

    def _bulk_add(self, batches: Sequence[tuple[str, Sequence[NewMessage]]]) -> Op[int]:
        wired = [(thread_id, self._wired(thread_id, m)) for thread_id, m in batches]
        seen: set[tuple[str, str]] = set()
        for thread_id, messages in batches:
            for message in messages:
                if message.id is not None and (thread_id, message.id) in seen:
                    raise MessageIdConflictError(thread_id, message.id)
                if message.id is not None:
                    seen.add((thread_id, message.id))
        # Every thread and caller id checked before the first write.
        for thread_id in dict.fromkeys(thread_id for thread_id, _ in batches):
            yield from self._read_thread(thread_id)
        for thread_id, messages in batches:
            yield from self._refuse_taken(thread_id, messages)
        total = 0
        for thread_id, batch in wired:
            total += len((yield from self._append(thread_id, batch)))
        return total

    def bulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Append messages to many threads, one request each (all checked first)."""
        return self._drive(self._bulk_add(batches))

    async def abulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Async twin of `bulk_add_messages`."""
        return await self._adrive(self._bulk_add(batches))

    def _get_message(self, thread_id: str, message_id: str) -> Op[dict[str, Any]]:
        server_id = yield from self._resolve(thread_id, message_id)
        data = yield Http(
            "get",
            f"{_threads(thread_id)}/messages/{seg(server_id)}",
            missing=lambda: MessageNotFoundError(message_id),
        )
        return dict(data)

    def _get_message_record(self, thread_id: str, message_id: str) -> Op[StoredMessage]:
        return message_of((yield from self._get_message(thread_id, message_id)))

    def get_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Read a message of a thread; raises `MessageNotFoundError`."""
        return self._drive(self._get_message_record(thread_id, message_id))

    async def aget_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Async twin of `get_message`."""
        return await self._adrive(self._get_message_record(thread_id, message_id))

    def _list_messages(
        self,
        thread_id: str,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int | None,
    ) -> Op[list[StoredMessage]]:
        if limit is not None and limit < 0:
            raise RetroValueError(f"limit must be >= 0, not {limit}")
        low = None if after is None else (yield from self._resolve(thread_id, after))
        high = None if before is None else (yield from self._resolve(thread_id, before))
        backwards = order == "asc" and high is not None and limit is not None
        if order == "desc" or backwards:
            reading: Order = "desc"
            cursor, stop = high, low
        else:
            reading, cursor, stop = "asc", low, high
        items = yield from self._pages(
            f"{_threads(thread_id)}/messages",
            order=reading,
            after=cursor,
            stop=stop,
            limit=limit,
            missing=_thread_missing(thread_id),
        )
        messages = [message_of(item) for item in items]
        for item, message in zip(items, messages, strict=True):
            if message.id != item["id"]:
                self._ledger.remember(thread_id, message.id, item["id"])
        return messages[::-1] if backwards else messages

    def list_messages(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        limit: int | None = None,
    ) -> list[StoredMessage]:
        """List a thread's messages in thread order (see `BaseStore.list_messages`)."""
        return self._drive(self._list_messages(thread_id, after, before, order, limit))

    async def alist_messages(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        limit: int | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `list_messages`."""
        return await self._adrive(
            self._list_messages(thread_id, after, before, order, limit)
        )

    def _update_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> Op[StoredMessage]:
        data = yield from self._get_message(thread_id, message_id)
        message = message_of(data)
        new = NewMessage(
            role=message.role,
            payload=message.payload,
            metadata=patch.apply(message.metadata, self.limits),
            id=None if message.id == data["id"] else message.id,
            created_at=(
                None if message.created_at == data["created_at"] else message.created_at
            ),
            run_id=None if data.get("run_id") else message.run_id,
            assistant_id=None if data.get("assistant_id") else message.assistant_id,
            reply_to=message.reply_to,
        )
        _, _, metadata = plain_message(
            new, self.limits, where=f"Message {message_id!r}"
        )
        body = {"metadata": {**foreign(data.get("metadata")), **escaped(metadata)}}
        updated = yield Http(
            "post",
            f"{_threads(thread_id)}/messages/{seg(str(data['id']))}",
            body,
            missing=lambda: MessageNotFoundError(message_id),
        )
        return message_of(updated)

    def update_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Apply a metadata patch to a message (a read, then a write)."""
        return self._drive(self._update_message(thread_id, message_id, patch))

    async def aupdate_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Async twin of `update_message`."""
        return await self._adrive(self._update_message(thread_id, message_id, patch))

    def _delete_message(self, thread_id: str, message_id: str) -> Op[None]:
        server_id = yield from self._resolve(thread_id, message_id)
        yield Http(
            "delete",
            f"{_threads(thread_id)}/messages/{seg(server_id)}",
            missing=lambda: MessageNotFoundError(message_id),
        )
        self._ledger.forget(thread_id, message_id)

    def delete_message(self, thread_id: str, message_id: str) -> None:
        """Delete one message of a thread."""
        self._drive(self._delete_message(thread_id, message_id))

    async def adelete_message(self, thread_id: str, message_id: str) -> None:
        """Async twin of `delete_message`."""
        await self._adrive(self._delete_message(thread_id, message_id))

    def _clear_messages(
        self, thread_id: str, thread_patch: MetadataPatch | None
    ) -> Op[int]:
        current = yield from self._read_thread(thread_id)
        metadata = None
        if thread_patch is not None:
            metadata = thread_patch.apply(
                unescaped(current.get("metadata")), self.limits
            )
        items = yield from self._pages(
            f"{_threads(thread_id)}/messages",
            order="asc",
            missing=_thread_missing(thread_id),
        )
        for item in items:
            yield Http(
                "delete",
                f"{_threads(thread_id)}/messages/{seg(item['id'])}",
                missing=_thread_missing(thread_id),
            )
            self._ledger.forget(thread_id, message_of(item).id)
        if metadata is not None:
            yield from self._write_thread(thread_id, current, metadata)
        return len(items)

    def clear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Delete all of a thread's messages, one request each; returns how many."""
        return self._drive(self._clear_messages(thread_id, thread_patch))

    async def aclear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Async twin of `clear_messages`."""
        return await self._adrive(self._clear_messages(thread_id, thread_patch))

    def _count_messages(self, thread_id: str, after: str | None) -> Op[int]:
        low = None if after is None else (yield from self._resolve(thread_id, after))
        items = yield from self._pages(
            f"{_threads(thread_id)}/messages",
            order="asc",
            after=low,
            missing=_thread_missing(thread_id),
        )
        return len(items)

    def count_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Count a thread's messages (pages of 100: the wire has no count)."""
        return self._drive(self._count_messages(thread_id, after))

    async def acount_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Async twin of `count_messages`."""
        return await self._adrive(self._count_messages(thread_id, after))

    # --- run leases and runs: the run plane (`_plain_runs`) ------------------------

    def _acquire(self, thread_id: str, owner: str, ttl: float) -> Op[bool]:
        thread = yield from self._get_thread(thread_id)
        return (yield from self._runs.acquire(thread, owner, ttl))

    def acquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Take the thread's run lease (in this process, or in the index)."""
        return self._drive(self._acquire(thread_id, owner, ttl))

    async def aacquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Async twin of `acquire_lease`."""
        return await self._adrive(self._acquire(thread_id, owner, ttl))

    def release_lease(self, thread_id: str, owner: str) -> None:
        """Give the lease back if ``owner`` still holds it."""
        self._drive(self._runs.release(thread_id, owner))

    async def arelease_lease(self, thread_id: str, owner: str) -> None:
        """Async twin of `release_lease`."""
        await self._adrive(self._runs.release(thread_id, owner))

    def get_lease(self, thread_id: str) -> Lease | None:
        """The thread's lease, if held and not expired."""
        return self._drive(self._runs.lease(thread_id))

    async def aget_lease(self, thread_id: str) -> Lease | None:
        """Async twin of `get_lease`."""
        return await self._adrive(self._runs.lease(thread_id))

    def _begin_run(
        self,
        *,
        thread_id: str,
        owner: str,
        ttl: float,
        run: NewRun | None,
        messages: Sequence[NewMessage],
        context_limit: int | None,
        resume: bool,
    ) -> Op[RunStart | None]:
        self._wired(thread_id, messages)
        thread = yield from self._get_thread(thread_id)
        yield from self._refuse_taken(thread_id, messages)
        new = NewRun(id=owner) if run is None else run
        assistant = None
        assistant_id = thread.metadata.get(THREAD_ASSISTANT_KEY)
        if assistant_id:
            try:
                assistant = yield from self._get_assistant_record(assistant_id)
            except AssistantNotFoundError:
                assistant = None
        began = yield from self._runs.begin(thread, owner, ttl, new, resume=resume)
        if began is None:
            return None
        started, resumed = began
        try:
            if resumed:
                messages = [
                    m
                    if m.run_id is not None
                    else m.model_copy(update={"run_id": started.id})
                    for m in messages
                ]
            appended = yield from self._append(
                thread_id, self._wired(thread_id, messages)
            )
            context = yield from self._list_messages(
                thread_id, None, None, "desc", context_limit
            )
        except RetroError:
            yield from self._runs.undo(thread_id, owner, started, resumed=resumed)
            raise
        # The lease lasts ``ttl`` from now, as if taken with the writes just made.
        yield from self._runs.renew(thread_id, owner, ttl)
        started = yield from self._runs.run(thread_id, started.id)
        return RunStart(
            thread=thread,
            assistant=assistant,
            appended=appended,
            context=[MessageRow.of(message) for message in reversed(context)],
            run=started,
            resumed=resumed,
        )

    def begin_run(
        self,
        thread_id: str,
        *,
        owner: str,
        ttl: float,
        run: NewRun | None = None,
        messages: Sequence[NewMessage] = (),
        context_limit: int | None = None,
        resume: bool = False,
    ) -> RunStart | None:
        """Start a run: lease and record in the run plane, the rest on the server."""
        return self._drive(
            self._begin_run(
                thread_id=thread_id,
                owner=owner,
                ttl=ttl,
                run=run,
                messages=messages,
                context_limit=context_limit,
                resume=resume,
            )
        )

    async def abegin_run(
        self,
        thread_id: str,
        *,
        owner: str,
        ttl: float,
        run: NewRun | None = None,
        messages: Sequence[NewMessage] = (),
        context_limit: int | None = None,
        resume: bool = False,
    ) -> RunStart | None:
        """Async twin of `begin_run`."""
        return await self._adrive(
            self._begin_run(
                thread_id=thread_id,
                owner=owner,
                ttl=ttl,
                run=run,
                messages=messages,
                context_limit=context_limit,
                resume=resume,
            )
        )

    def _known_run(self, thread_id: str, run_id: str) -> Op[StoredRun]:
        """The run, or the error for it (the thread's first if it is missing)."""
        if not (yield from self._runs.knows(thread_id)):
            yield from self._read_thread(thread_id)
        return (yield from self._runs.run(thread_id, run_id))

    def _finish_run(
        self,
        *,
        thread_id: str,
        owner: str,
        run_id: str,
        update: RunUpdate,
        messages: Sequence[NewMessage],
        thread_patch: MetadataPatch | None,
    ) -> Op[RunSaved]:
        wired = self._wired(thread_id, messages)
        known = yield from self._known_run(thread_id, run_id)
        if known.status in ("cancelling", "cancelled"):
            ended = yield from self._runs.finish(thread_id, owner, run_id, None)
            return RunSaved(messages=[], run=ended)
        yield from self._refuse_taken(thread_id, messages)
        current: dict[str, Any] | None = None
        metadata: dict[str, str] | None = None
        if thread_patch is not None:
            current = yield from self._read_thread(thread_id)
            metadata = thread_patch.apply(
                unescaped(current.get("metadata")), self.limits
            )
        saved = yield from self._append(thread_id, wired)
        if current is not None and metadata is not None:
            yield from self._write_thread(thread_id, current, metadata)
        ended = yield from self._runs.finish(thread_id, owner, run_id, update)
        return RunSaved(messages=saved, run=ended)

    def finish_run(
        self,
        thread_id: str,
        *,
        owner: str,
        run_id: str,
        update: RunUpdate,
        messages: Sequence[NewMessage] = (),
        thread_patch: MetadataPatch | None = None,
    ) -> RunSaved:
        """Write a run's step or end: its messages on the server, then the run."""
        return self._drive(
            self._finish_run(
                thread_id=thread_id,
                owner=owner,
                run_id=run_id,
                update=update,
                messages=messages,
                thread_patch=thread_patch,
            )
        )

    async def afinish_run(
        self,
        thread_id: str,
        *,
        owner: str,
        run_id: str,
        update: RunUpdate,
        messages: Sequence[NewMessage] = (),
        thread_patch: MetadataPatch | None = None,
    ) -> RunSaved:
        """Async twin of `finish_run`."""
        return await self._adrive(
            self._finish_run(
                thread_id=thread_id,
                owner=owner,
                run_id=run_id,
                update=update,
                messages=messages,
                thread_patch=thread_patch,
            )
        )

    def renew_run(self, thread_id: str, *, owner: str, ttl: float) -> RunLeaseState:
        """Renew a running run's lease, and say if it may go on."""
        return self._drive(self._runs.renew(thread_id, owner, ttl))

    async def arenew_run(
        self, thread_id: str, *, owner: str, ttl: float
    ) -> RunLeaseState:
        """Async twin of `renew_run`."""
        return await self._adrive(self._runs.renew(thread_id, owner, ttl))

    def get_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Read a run; raises `RunNotFoundError`."""
        return self._drive(self._known_run(thread_id, run_id))

    async def aget_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `get_run`."""
        return await self._adrive(self._known_run(thread_id, run_id))

    def _list_runs(
        self,
        thread_id: str,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int,
    ) -> Op[list[StoredRun]]:
        if limit < 0:
            raise RetroValueError(f"limit must be >= 0, not {limit}")
        if not (yield from self._runs.knows(thread_id)):
            yield from self._read_thread(thread_id)
        return (
            yield from self._runs.runs(
                thread_id, after=after, before=before, order=order, limit=limit
            )
        )

    def list_runs(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredRun]:
        """List a thread's runs, newest first by default."""
        return self._drive(self._list_runs(thread_id, after, before, order, limit))

    async def alist_runs(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredRun]:
        """Async twin of `list_runs`."""
        return await self._adrive(
            self._list_runs(thread_id, after, before, order, limit)
        )

    def _cancel_run(self, thread_id: str, run_id: str) -> Op[StoredRun]:
        yield from self._known_run(thread_id, run_id)
        return (yield from self._runs.cancel(thread_id, run_id))

    def cancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Ask a run to stop (see `BaseStore.cancel_run`)."""
        return self._drive(self._cancel_run(thread_id, run_id))

    async def acancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `cancel_run`."""
        return await self._adrive(self._cancel_run(thread_id, run_id))

    def _run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> Op[StoredRun]:
        checked = check_metadata(metadata, self.limits, "Run")
        yield from self._known_run(thread_id, run_id)
        return (yield from self._runs.set_metadata(thread_id, run_id, checked))

    def update_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Replace a run's ``metadata``."""
        return self._drive(self._run_metadata(thread_id, run_id, metadata))

    async def aupdate_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Async twin of `update_run_metadata`."""
        return await self._adrive(self._run_metadata(thread_id, run_id, metadata))

    def _run_messages(self, thread_id: str, run_id: str) -> Op[list[StoredMessage]]:
        since: int | None = None
        if (yield from self._runs.knows(thread_id)):
            try:
                since = (yield from self._runs.run(thread_id, run_id)).created_at
            except RunNotFoundError:
                since = None
        found: list[StoredMessage] = []
        cursor: str | None = None
        while True:
            page = yield from self._pages(
                f"{_threads(thread_id)}/messages",
                order="desc",
                after=cursor,
                limit=PAGE,
                missing=_thread_missing(thread_id),
            )
            for item in page:
                message = message_of(item)
                if message.run_id == run_id:
                    found.append(message)
            # A run's messages come after its start: older pages hold none.
            if len(page) < PAGE or (
                since is not None and page[-1]["created_at"] < since
            ):
                return found[::-1]
            cursor = page[-1]["id"]

    def list_run_messages(self, thread_id: str, run_id: str) -> list[StoredMessage]:
        """The messages a run wrote, in thread order (read back to the run's start)."""
        return self._drive(self._run_messages(thread_id, run_id))

    async def alist_run_messages(
        self, thread_id: str, run_id: str
    ) -> list[StoredMessage]:
        """Async twin of `list_run_messages`."""
        return await self._adrive(self._run_messages(thread_id, run_id))

    def _usage(self, thread_id: str) -> Op[RunUsage]:
        if not (yield from self._runs.knows(thread_id)):
            yield from self._read_thread(thread_id)
        return (yield from self._runs.usage(thread_id))

    def get_thread_usage(self, thread_id: str) -> RunUsage:
        """The tokens of this process's runs of the thread."""
        return self._drive(self._usage(thread_id))

    async def aget_thread_usage(self, thread_id: str) -> RunUsage:
        """Async twin of `get_thread_usage`."""
        return await self._adrive(self._usage(thread_id))
