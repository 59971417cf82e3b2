"""`AssistantsAPIStore`: the data plane on ``langchain-retro serve``, over HTTP.

A fleet of LangChain apps can share one data plane without database credentials:
each app's store talks to the server with the ``openai`` SDK (its retries, timeouts
and connection pool), and the server keeps the records in its own SQLite or
PostgreSQL store.

Setup:
    ``pip install langchain-retro[server]`` on the server's host, then
    ``langchain-retro serve --api-key KEY``; the app needs only ``openai``.

Instantiate:
    .. code-block:: python

        from langchain_retro import AssistantsAPIStore

        store = AssistantsAPIStore.from_url("http://127.0.0.1:8000/v1", api_key="KEY")
        # or AssistantsAPIStore(client=OpenAI(...), async_client=AsyncOpenAI(...))

Async:
    Every method has an ``a``-prefixed twin sent with the ``AsyncOpenAI`` client.
    An async client the store makes serves one event loop (its connections belong
    to it): close the store with ``aclose()`` on that loop.

What crosses the wire (`langchain_retro.stores._wire`): assistants and threads with
their metadata; messages as the API's ``user`` / ``assistant`` text, whatever the API
has no field for in the message's metadata. The wire's metadata limits apply (16
keys, 64-character keys, 512-character values) unless both sides lift them
(``limits=UNLIMITED`` here, ``serve --metadata-limits off`` there); a write over them
raises before any request, naming the field, the limit and the size.

Every operation is one request to the server's ``/v1/retro`` routes, which run it as
one call of the server's store: a batch of messages is written all or none, a run
takes and keeps its thread's lease across every process and host that talks to the
same server, a run's reply and its status are one write. With this default protocol
(``retro``), servers that speak only the Assistants API are refused with an error
saying so.

With ``protocol="assistants"`` the store needs only the Assistants API, so it
works with any Assistants-compatible server; ``protocol="auto"`` asks the server
once which it is. What holds in that mode, and what does not, is told in
`langchain_retro.stores._assistants_plain`.

Errors: what the server's store raised is raised here (`ThreadNotFoundError`,
`MetadataLimitError`, `RunStateError`...); a refused key, a rate limit that outlasted
the SDK's retries, a server error or no connection raise `StoreError`, the SDK's
error chained as the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import openai

from langchain_retro._metadata import (
    OPENAI_LIMITS,
    MetadataLimits,
    MetadataPatch,
    unencodable_error,
)
from langchain_retro.errors import (
    RetroError,
    RetroValueError,
    StoreClosedError,
    StoreError,
)
from langchain_retro.stores._wire import decode_error
from langchain_retro.stores._wire_requests import Request, Requests
from langchain_retro.stores.base import (
    AssistantThreads,
    BaseStore,
    Lease,
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
    ThreadCopy,
    ThreadQuery,
)

if TYPE_CHECKING:
    from openai._types import RequestOptions

__all__ = ["AssistantsAPIStore", "WireProtocol"]

T = TypeVar("T")

WireProtocol = Literal["retro", "assistants", "auto"]
"""How `AssistantsAPIStore` talks to its server: see its ``protocol`` option."""

_PROTOCOLS: tuple[str, ...] = ("retro", "assistants", "auto")
_probed: dict[str, str] = {}
"""The protocol ``auto`` found, by base URL: each server is probed once."""


def idempotent() -> RequestOptions:
    """Options of a ``POST``: a new ``Idempotency-Key``.

    The SDK's retries of the request repeat it, so the server carries it out once.
    """
    return {"headers": {"Idempotency-Key": f"retro-{uuid.uuid4().hex}"}}


def _store_error(  # noqa: PLR0911 - one mapping, read top to bottom
    exc: openai.OpenAIError, method: str, path: str
) -> RetroError:
    """The error of our tree an SDK error means."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, Mapping) else {}
        decoded = decode_error(body.get("retro"))
        if decoded is not None:
            return decoded
        message = str(body.get("message") or exc.message)
        status = exc.status_code
        if status == 404:
            return StoreError(
                f"The server does not answer {method.upper()} /v1{path} ({message}). "
                "AssistantsAPIStore's default protocol needs the /v1/retro routes of "
                "`langchain-retro serve`; for a server that speaks only the "
                "Assistants API, pass protocol='assistants' (or 'auto'), which keeps "
                "fewer of a store's promises (see the README)."
            )
        if status == 400:
            return RetroValueError(f"The server refused the request: {message}")
        if status in (401, 403):
            return StoreError(
                f"The server refused the API key ({status}): {message} Pass one of "
                "the keys `langchain-retro serve` was started with."
            )
        if status == 429:
            return StoreError(
                f"The server is at its limit (429) after the SDK's retries: {message} "
                "Raise max_retries on the client or try again later."
            )
        return StoreError(f"The server failed ({status}): {message}")
    if isinstance(exc, openai.APITimeoutError):
        return StoreError(f"The server did not answer {method.upper()} {path} in time.")
    if isinstance(exc, openai.APIConnectionError):
        return StoreError(
            f"Could not reach the server for {method.upper()} {path}: {exc}. Check "
            "the base URL and that `langchain-retro serve` is running."
        )
    return StoreError(f"The openai SDK failed: {exc}")


class AssistantsAPIStore(BaseStore):
    """A store kept by ``langchain-retro serve``, reached with the ``openai`` SDK.

    Example:
        .. code-block:: python

            store = AssistantsAPIStore.from_url("http://127.0.0.1:8000/v1", api_key="K")
            thread = ChatCompletionThread.create(store, assistant_id=assistant.id)
    """

    def __new__(
        cls,
        *,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        limits: MetadataLimits = OPENAI_LIMITS,
        protocol: WireProtocol = "retro",
        index: BaseStore | None = None,
    ) -> AssistantsAPIStore:
        """The store of the protocol asked for (``auto`` probes the server once)."""
        if cls is AssistantsAPIStore and _protocol(protocol, client, async_client) == (
            "assistants"
        ):
            from langchain_retro.stores._assistants_plain import (  # noqa: PLC0415
                PlainAssistantsAPIStore,
            )

            return super().__new__(PlainAssistantsAPIStore)
        return super().__new__(cls)

    def __init__(
        self,
        *,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        limits: MetadataLimits = OPENAI_LIMITS,
        protocol: WireProtocol = "retro",
        index: BaseStore | None = None,
    ) -> None:
        """A store over clients you own (the store never closes them).

        Args:
            client: The sync client; ``None`` makes one like ``async_client``.
            async_client: The async client; ``None`` makes one like ``client``.
            limits: The metadata limits writes are checked against before any
                request: the wire's by default; ``UNLIMITED`` with a server started
                with ``--metadata-limits off`` (``retro`` protocol only: the
                Assistants API keeps the wire's).
            protocol: ``retro`` (the default): every operation is one request to
                the ``/v1/retro`` routes of ``langchain-retro serve``, which keep
                every promise of a store. ``assistants``: only the Assistants API
                (``client.beta``'s assistants, threads and messages), so any
                Assistants-compatible server; runs' leases and records live in
                the ``index`` if given, else in this process. ``auto``: ask the
                server once (one request when the store is made) and take
                ``retro`` where it has those routes.
            index: With ``assistants``, a store of your own (e.g. ``SQLiteStore``)
                that the store keeps in step with the server: it lists threads on
                servers without ``GET /v1/threads`` (OpenAI's), and keeps run
                leases, records and usage for every process that shares it.

        Raises:
            RetroValueError: If neither client is given, or for an unknown
                ``protocol`` or an ``index`` the ``retro`` protocol cannot use.
        """
        if client is None and async_client is None:
            raise RetroValueError(
                "AssistantsAPIStore needs a client: pass client=OpenAI(...) and/or "
                "async_client=AsyncOpenAI(...), or use "
                "AssistantsAPIStore.from_url(base_url, api_key=...)."
            )
        if index is not None and type(self) is AssistantsAPIStore:
            raise RetroValueError(
                "index= lists threads for protocol='assistants' (servers without "
                "the /v1/retro routes); the retro protocol lists them on the server. "
                "Pass protocol='assistants', or leave index out."
            )
        self.limits = limits
        like: openai.OpenAI | openai.AsyncOpenAI = (
            client if client is not None else async_client  # type: ignore[assignment]
        )
        self._settings: dict[str, Any] = {
            "base_url": str(like.base_url),
            "api_key": like.api_key,
            "timeout": like.timeout,
            "max_retries": like.max_retries,
        }
        self._client = client
        self._async_client = async_client
        self._owns_client = False
        self._loop_clients: dict[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = {}
        self._closed = False
        self._requests = Requests(lambda: self.limits)

    def __repr__(self) -> str:
        return f"AssistantsAPIStore({self._settings['base_url']!r})"

    @classmethod
    def from_url(
        cls,
        base_url: str,
        *,
        api_key: str,
        limits: MetadataLimits = OPENAI_LIMITS,
        timeout: float = 60.0,
        max_retries: int = 2,
        protocol: WireProtocol = "retro",
        index: BaseStore | None = None,
    ) -> AssistantsAPIStore:
        """A store on the server at ``base_url`` (``http://host:8000/v1``).

        The store makes its own clients and closes them with `close` / `aclose`.
        ``protocol`` and ``index`` are as for the constructor.
        """
        store = cls(
            client=openai.OpenAI(
                base_url=base_url,
                api_key=api_key,
                timeout=timeout,
                max_retries=max_retries,
            ),
            limits=limits,
            protocol=protocol,
            index=index,
        )
        store._owns_client = True
        return store

    # --- I/O: one request, sync or async ------------------------------------------

    @property
    def _sync(self) -> openai.OpenAI:
        if self._client is None:
            self._client = openai.OpenAI(**self._settings)
            self._owns_client = True
        return self._client

    @property
    def _async(self) -> openai.AsyncOpenAI:
        if self._async_client is not None:
            return self._async_client
        # A client the store makes serves one event loop: its connections belong
        # to the loop they were opened on.
        loop = asyncio.get_running_loop()
        client = self._loop_clients.get(loop)
        if client is None:
            for old in [old for old in self._loop_clients if old.is_closed()]:
                del self._loop_clients[old]
            client = self._loop_clients[loop] = openai.AsyncOpenAI(**self._settings)
        return client

    def _open(self) -> None:
        if self._closed:
            raise StoreClosedError("This AssistantsAPIStore is closed; open a new one.")

    def _send(self, request: Request[T]) -> T:
        self._open()
        client = self._sync
        params: RequestOptions = {"params": request.params}
        try:
            data: Any
            if request.method == "get":
                data = client.get(request.path, cast_to=object, options=params)
            elif request.method == "post":
                data = client.post(
                    request.path,
                    cast_to=object,
                    body=request.body,
                    options=idempotent(),
                )
            else:
                data = client.delete(request.path, cast_to=object, options=params)
        except UnicodeEncodeError as exc:
            raise unencodable_error(exc) from exc
        except openai.OpenAIError as exc:
            raise _store_error(exc, request.method, request.path) from exc
        return request.parse(data)

    async def _asend(self, request: Request[T]) -> T:
        self._open()
        client = self._async
        params: RequestOptions = {"params": request.params}
        try:
            data: Any
            if request.method == "get":
                data = await client.get(request.path, cast_to=object, options=params)
            elif request.method == "post":
                data = await client.post(
                    request.path,
                    cast_to=object,
                    body=request.body,
                    options=idempotent(),
                )
            else:
                data = await client.delete(request.path, cast_to=object, options=params)
        except UnicodeEncodeError as exc:
            raise unencodable_error(exc) from exc
        except openai.OpenAIError as exc:
            raise _store_error(exc, request.method, request.path) from exc
        return request.parse(data)

    # --- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the clients this store made; further calls raise `StoreClosedError`.

        An async client the store made is closed on its event loop when that loop
        is still open (`aclose` is the way from async code).
        """
        self._closed = True
        if self._owns_client and self._client is not None:
            self._client.close()
        clients, self._loop_clients = self._loop_clients, {}
        for loop, client in clients.items():
            _close_on(loop, client)

    async def aclose(self) -> None:
        """Async twin of `close`."""
        self._closed = True
        if self._owns_client and self._client is not None:
            self._client.close()
        clients, self._loop_clients = self._loop_clients, {}
        current = asyncio.get_running_loop()
        for loop, client in clients.items():
            if loop is current:
                await client.close()
            else:
                _close_on(loop, client)

    # --- assistants ------------------------------------------------------------------

    def create_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Create an assistant from its native fields and its metadata."""
        return self._send(self._requests.create_assistant(fields, metadata))

    async def acreate_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Async twin of `create_assistant`."""
        return await self._asend(self._requests.create_assistant(fields, metadata))

    def get_assistant(self, assistant_id: str) -> StoredAssistant:
        """Read an assistant; raises `AssistantNotFoundError`."""
        return self._send(self._requests.get_assistant(assistant_id))

    async def aget_assistant(self, assistant_id: str) -> StoredAssistant:
        """Async twin of `get_assistant`."""
        return await self._asend(self._requests.get_assistant(assistant_id))

    def update_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Change native fields and apply a metadata patch, in one request."""
        return self._send(self._requests.update_assistant(assistant_id, fields, patch))

    async def aupdate_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Async twin of `update_assistant`."""
        return await self._asend(
            self._requests.update_assistant(assistant_id, fields, patch)
        )

    def delete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Delete an assistant; returns how many of its threads were deleted."""
        return self._send(self._requests.delete_assistant(assistant_id, threads))

    async def adelete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Async twin of `delete_assistant`."""
        return await self._asend(self._requests.delete_assistant(assistant_id, threads))

    def list_assistants(
        self,
        *,
        metadata: Mapping[str, str] | None = None,
        classes: Sequence[str] | None = None,
        after: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredAssistant]:
        """List assistants, newest first by default, after an optional cursor id."""
        return self._send(
            self._requests.list_assistants(metadata, classes, after, order, limit)
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
        return await self._asend(
            self._requests.list_assistants(metadata, classes, after, order, limit)
        )

    # --- threads ---------------------------------------------------------------------

    def create_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Create a thread with the given metadata."""
        return self._send(self._requests.create_threads([metadata]))[0]

    async def acreate_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Async twin of `create_thread`."""
        return (await self._asend(self._requests.create_threads([metadata])))[0]

    def create_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Create many threads in one request, all or none, in the given order."""
        return self._send(self._requests.create_threads(metadatas))

    async def acreate_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Async twin of `create_threads`."""
        return await self._asend(self._requests.create_threads(metadatas))

    def get_thread(self, thread_id: str) -> StoredThread:
        """Read a thread; raises `ThreadNotFoundError`."""
        return self._send(self._requests.get_thread(thread_id))

    async def aget_thread(self, thread_id: str) -> StoredThread:
        """Async twin of `get_thread`."""
        return await self._asend(self._requests.get_thread(thread_id))

    def update_thread(self, thread_id: str, patch: MetadataPatch) -> StoredThread:
        """Apply a metadata patch to a thread, in one request."""
        return self._send(self._requests.update_thread(thread_id, patch))

    async def aupdate_thread(
        self, thread_id: str, patch: MetadataPatch
    ) -> StoredThread:
        """Async twin of `update_thread`."""
        return await self._asend(self._requests.update_thread(thread_id, patch))

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread with all its messages and runs."""
        self._send(self._requests.delete_thread(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        """Async twin of `delete_thread`."""
        await self._asend(self._requests.delete_thread(thread_id))

    def list_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """List the threads matching a query, in the query's order."""
        return self._send(self._requests.list_threads(query))

    async def alist_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """Async twin of `list_threads`."""
        return await self._asend(self._requests.list_threads(query))

    # --- messages --------------------------------------------------------------------

    def add_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
        hwm_key: str | None = None,
    ) -> list[StoredMessage]:
        """Append messages to a thread in one request, all or none, in order."""
        return self._send(
            self._requests.add_messages(thread_id, messages, thread_patch, hwm_key)
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
        return await self._asend(
            self._requests.add_messages(thread_id, messages, thread_patch, hwm_key)
        )

    def add_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        scope: Mapping[str, str] | None = None,
    ) -> list[StoredMessage]:
        """Append unless a run keeps the thread busy, in one request.

        The server's store checks and writes in one transaction.
        """
        return self._send(
            self._requests.add_messages_if_idle(thread_id, messages, scope)
        )

    async def aadd_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        scope: Mapping[str, str] | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `add_messages_if_idle`."""
        return await self._asend(
            self._requests.add_messages_if_idle(thread_id, messages, scope)
        )

    def bulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Append messages to many threads in one request, all or none."""
        return self._send(self._requests.bulk_add_messages(batches))

    async def abulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Async twin of `bulk_add_messages`."""
        return await self._asend(self._requests.bulk_add_messages(batches))

    def get_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Read a message of a thread; raises `MessageNotFoundError`."""
        return self._send(self._requests.get_message(thread_id, message_id))

    async def aget_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Async twin of `get_message`."""
        return await self._asend(self._requests.get_message(thread_id, message_id))

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
        return self._send(
            self._requests.list_messages(thread_id, after, before, order, limit)
        )

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
        return await self._asend(
            self._requests.list_messages(thread_id, after, before, order, limit)
        )

    def update_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Apply a metadata patch to a message."""
        return self._send(self._requests.update_message(thread_id, message_id, patch))

    async def aupdate_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Async twin of `update_message`."""
        return await self._asend(
            self._requests.update_message(thread_id, message_id, patch)
        )

    def delete_message(self, thread_id: str, message_id: str) -> None:
        """Delete one message of a thread."""
        self._send(self._requests.delete_message(thread_id, message_id))

    async def adelete_message(self, thread_id: str, message_id: str) -> None:
        """Async twin of `delete_message`."""
        await self._asend(self._requests.delete_message(thread_id, message_id))

    def clear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Delete all of a thread's messages (the thread stays); returns how many."""
        return self._send(self._requests.clear_messages(thread_id, thread_patch))

    async def aclear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Async twin of `clear_messages`."""
        return await self._asend(self._requests.clear_messages(thread_id, thread_patch))

    def count_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Count a thread's messages, or those after the message ``after``."""
        return self._send(self._requests.count_messages(thread_id, after))

    async def acount_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Async twin of `count_messages`."""
        return await self._asend(self._requests.count_messages(thread_id, after))

    # --- run leases ------------------------------------------------------------------

    def acquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Take the thread's run lease for ``ttl`` seconds if free, expired or ours."""
        return self._send(self._requests.acquire_lease(thread_id, owner, ttl))

    async def aacquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Async twin of `acquire_lease`."""
        return await self._asend(self._requests.acquire_lease(thread_id, owner, ttl))

    def release_lease(self, thread_id: str, owner: str) -> None:
        """Give the lease back if ``owner`` still holds it."""
        self._send(self._requests.release_lease(thread_id, owner))

    async def arelease_lease(self, thread_id: str, owner: str) -> None:
        """Async twin of `release_lease`."""
        await self._asend(self._requests.release_lease(thread_id, owner))

    def get_lease(self, thread_id: str) -> Lease | None:
        """The thread's run lease if one is held and not expired, else ``None``."""
        return self._send(self._requests.get_lease(thread_id))

    async def aget_lease(self, thread_id: str) -> Lease | None:
        """Async twin of `get_lease`."""
        return await self._asend(self._requests.get_lease(thread_id))

    # --- runs ------------------------------------------------------------------------

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
        """Start a run in one request (see `BaseStore.begin_run`)."""
        return self._send(
            self._requests.begin_run(
                thread_id,
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
        return await self._asend(
            self._requests.begin_run(
                thread_id,
                owner=owner,
                ttl=ttl,
                run=run,
                messages=messages,
                context_limit=context_limit,
                resume=resume,
            )
        )

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
        """Write a run's step or end in one request (see `BaseStore.finish_run`)."""
        return self._send(
            self._requests.finish_run(
                thread_id,
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
        return await self._asend(
            self._requests.finish_run(
                thread_id,
                owner=owner,
                run_id=run_id,
                update=update,
                messages=messages,
                thread_patch=thread_patch,
            )
        )

    def renew_run(self, thread_id: str, *, owner: str, ttl: float) -> RunLeaseState:
        """Renew a running run's lease, and say if it may go on."""
        return self._send(self._requests.renew_run(thread_id, owner, ttl))

    async def arenew_run(
        self, thread_id: str, *, owner: str, ttl: float
    ) -> RunLeaseState:
        """Async twin of `renew_run`."""
        return await self._asend(self._requests.renew_run(thread_id, owner, ttl))

    def get_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Read a run of a thread; raises `RunNotFoundError`."""
        return self._send(self._requests.get_run(thread_id, run_id))

    async def aget_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `get_run`."""
        return await self._asend(self._requests.get_run(thread_id, run_id))

    def list_runs(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredRun]:
        """List a thread's runs by creation, newest first by default."""
        return self._send(
            self._requests.list_runs(thread_id, after, before, order, limit)
        )

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
        return await self._asend(
            self._requests.list_runs(thread_id, after, before, order, limit)
        )

    def cancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Ask a run to stop (see `BaseStore.cancel_run`)."""
        return self._send(self._requests.cancel_run(thread_id, run_id))

    async def acancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `cancel_run`."""
        return await self._asend(self._requests.cancel_run(thread_id, run_id))

    def update_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Replace a run's ``metadata``."""
        return self._send(
            self._requests.update_run_metadata(thread_id, run_id, metadata)
        )

    async def aupdate_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Async twin of `update_run_metadata`."""
        return await self._asend(
            self._requests.update_run_metadata(thread_id, run_id, metadata)
        )

    def list_run_messages(self, thread_id: str, run_id: str) -> list[StoredMessage]:
        """The messages a run wrote, in thread order."""
        return self._send(self._requests.list_run_messages(thread_id, run_id))

    async def alist_run_messages(
        self, thread_id: str, run_id: str
    ) -> list[StoredMessage]:
        """Async twin of `list_run_messages`."""
        return await self._asend(self._requests.list_run_messages(thread_id, run_id))

    def get_thread_usage(self, thread_id: str) -> RunUsage:
        """The tokens of all the thread's runs."""
        return self._send(self._requests.get_thread_usage(thread_id))

    async def aget_thread_usage(self, thread_id: str) -> RunUsage:
        """Async twin of `get_thread_usage`."""
        return await self._asend(self._requests.get_thread_usage(thread_id))

    # --- copies that keep ids (migrate, import) --------------------------------------

    keeps_ids = True

    def import_assistants(self, assistants: Sequence[StoredAssistant]) -> list[str]:
        """Write assistants under their ids: one request, one transaction."""
        return self._send(self._requests.import_assistants(assistants))

    async def aimport_assistants(
        self, assistants: Sequence[StoredAssistant]
    ) -> list[str]:
        """Async twin of `import_assistants`."""
        return await self._asend(self._requests.import_assistants(assistants))

    def import_threads(self, threads: Sequence[ThreadCopy]) -> list[str]:
        """Write threads under their ids: one request, one transaction."""
        return self._send(self._requests.import_threads(threads))

    async def aimport_threads(self, threads: Sequence[ThreadCopy]) -> list[str]:
        """Async twin of `import_threads`."""
        return await self._asend(self._requests.import_threads(threads))

    def import_runs(self, runs: Sequence[StoredRun]) -> list[str]:
        """Write run records under their ids: one request, one transaction."""
        return self._send(self._requests.import_runs(runs))

    async def aimport_runs(self, runs: Sequence[StoredRun]) -> list[str]:
        """Async twin of `import_runs`."""
        return await self._asend(self._requests.import_runs(runs))


def _protocol(
    protocol: object,
    client: openai.OpenAI | None,
    async_client: openai.AsyncOpenAI | None,
) -> str:
    """The protocol to speak: as asked, or (``auto``) as the server answers.

    Raises:
        RetroValueError: For an unknown protocol.
        StoreError: If ``auto`` cannot reach the server or its key is refused.
    """
    if protocol not in _PROTOCOLS:
        raise RetroValueError(
            f"protocol must be one of {list(_PROTOCOLS)}, not {protocol!r}."
        )
    like: openai.OpenAI | openai.AsyncOpenAI | None = client or async_client
    if protocol != "auto" or like is None:
        return str(protocol)
    base_url = str(like.base_url)
    if base_url not in _probed:
        _probed[base_url] = _probe(client, like)
    return _probed[base_url]


def _probe(
    client: openai.OpenAI | None, like: openai.OpenAI | openai.AsyncOpenAI
) -> str:
    """Whether the server has the ``/v1/retro`` routes: one cheap ``GET``."""
    probe = client or openai.OpenAI(
        base_url=str(like.base_url),
        api_key=like.api_key,
        timeout=like.timeout,
        max_retries=like.max_retries,
    )
    path = "/retro/assistants/asst_protocol_probe"
    try:
        probe.get(path, cast_to=object)
    except openai.NotFoundError as exc:
        body = exc.body if isinstance(exc.body, Mapping) else {}
        return "retro" if decode_error(body.get("retro")) is not None else "assistants"
    except openai.OpenAIError as exc:
        raise _store_error(exc, "get", path) from exc
    finally:
        if probe is not client:
            probe.close()
    return "retro"  # pragma: no cover - no assistant has the probe's id


_closing: set[asyncio.Task[None]] = set()


def _close_on(loop: asyncio.AbstractEventLoop, client: openai.AsyncOpenAI) -> None:
    """Close an async client on the loop its connections belong to, if it can be."""
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        task = loop.create_task(client.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(client.close(), loop)
    else:
        with contextlib.suppress(RuntimeError):
            loop.run_until_complete(client.close())
