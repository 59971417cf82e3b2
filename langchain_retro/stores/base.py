"""The store protocol every backend implements, sync and async.

A store keeps the data plane: assistants, threads and messages, each with a
``metadata`` map of strings. It knows nothing of typed records: the records layer
encodes typed fields into metadata and hands the store plain strings and patches.

Every sync method has an ``a``-prefixed async twin. Stores are context managers
(``with`` / ``async with``) and are closed with `BaseStore.close` / `BaseStore.aclose`.

What hangs off what:

* deleting a thread deletes its messages, its runs and its run lease;
* deleting an assistant looks at the threads whose ``assistant_id`` metadata names it
  and, as asked, refuses (`AssistantInUseError`), keeps them, or deletes them with
  their messages, all in one transaction.

A run's store side is two calls: `BaseStore.begin_run` (take the thread's lease, write
the run record, read the thread and its assistant, append the input, read the newest
messages) and `BaseStore.finish_run` (append the reply, patch the thread, write the
run's status and usage and, when the run ended, give the lease back), each one
transaction. A run is a record (`StoredRun`): it can be read, listed and cancelled from
any process (`BaseStore.get_run`, `BaseStore.list_runs`, `BaseStore.cancel_run`); a run
whose lease lapsed reads as ``expired``. The rules a run's status follows live once, in
`langchain_retro.stores._runs`, and every backend applies them.
"""

from __future__ import annotations

import asyncio
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, NamedTuple, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from langchain_retro._ids import new_id
from langchain_retro._metadata import (
    UNLIMITED,
    MetadataLimits,
    MetadataPatch,
    check_limits,
    unencodable_error,
)
from langchain_retro._steps import Call, Steps, adrive_calls, call, drive_calls
from langchain_retro.errors import (
    IdsNotKeptError,
    MessageIdConflictError,
    MetadataError,
    NotFoundError,
    RetroValueError,
    ThreadBusyError,
    ThreadNotFoundError,
)
from langchain_retro.stores._runs import (
    ACTIVE_RUN_STATUSES,
    ENDED_RUN_STATUSES,
    FunctionCall,
    IncompleteDetails,
    LastError,
    NewRun,
    RequiredAction,
    RequiredToolCall,
    RunLeaseState,
    RunSaved,
    RunStatus,
    RunUpdate,
    RunUsage,
    StoredRun,
    SubmitToolOutputs,
    TruncationStrategy,
    cancel_requested,
    lapsed_status,
    new_run_row,
    resumed_run,
    run_body,
    run_from_row,
    settle,
    updated_run,
)

T = TypeVar("T")

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "ASSISTANT_FIELDS",
    "BUSY_RUN_STATUSES",
    "ENDED_RUN_STATUSES",
    "MAX_MESSAGE_ID_LENGTH",
    "AssistantThreads",
    "BaseStore",
    "FunctionCall",
    "IncompleteDetails",
    "LastError",
    "Lease",
    "MessageRow",
    "MetadataPatch",
    "NewMessage",
    "NewRun",
    "Order",
    "RefusedBusy",
    "RequiredAction",
    "RequiredToolCall",
    "RunLeaseState",
    "RunSaved",
    "RunSetup",
    "RunStart",
    "RunStatus",
    "RunUpdate",
    "RunUsage",
    "StoredAssistant",
    "StoredMessage",
    "StoredRun",
    "StoredThread",
    "SubmitToolOutputs",
    "ThreadCopy",
    "ThreadQuery",
    "TruncationStrategy",
    "answered_in_batch",
    "busy_error",
    "busy_refusal",
    "cancel_requested",
    "check_assistant_fields",
    "check_copies",
    "check_hwm_key",
    "check_message_id",
    "check_metadata",
    "check_new_ids",
    "has_reply",
    "imported_run",
    "in_scope",
    "lapsed_status",
    "new_run_row",
    "newest_busy",
    "resumed_run",
    "run_body",
    "run_from_row",
    "settle",
    "unencodable_error",
    "updated_run",
]

Order = Literal["asc", "desc"]
"""Sort order of a listing, by creation."""

AssistantThreads = Literal["refuse", "keep", "delete"]
"""What deleting an assistant does to its threads."""

ASSISTANT_FIELDS = (
    "name",
    "description",
    "instructions",
    "model",
    "temperature",
    "top_p",
)
"""An assistant's native (non-metadata) fields besides ``id`` and ``created_at``."""

THREAD_ASSISTANT_KEY = "assistant_id"
"""The thread metadata key that links a thread to its assistant."""

THREAD_REPLY_ROLE = "assistant"
"""The role of a reply: what ``hwm_key`` marks as answering the messages before it."""

BUSY_RUN_STATUSES = ACTIVE_RUN_STATUSES | {"requires_action"}
"""Statuses of a thread's newest run that keep `BaseStore.add_messages_if_idle` out."""

_IDLE_WRITE_TTL = 30.0
"""Seconds the default `BaseStore.add_messages_if_idle` holds the lease at most."""

_IDLE_PATIENCE = 5.0
"""Seconds the default `BaseStore.add_messages_if_idle` waits out other writers."""


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


class RefusedBusy(BaseModel):
    """Why a thread refused a message: the run that keeps it busy, if one does."""

    model_config = ConfigDict(frozen=True)

    thread_id: str
    run_id: str | None = None
    status: str | None = None


def busy_error(refusal: RefusedBusy) -> ThreadBusyError:
    """The `ThreadBusyError` for a refused message, naming the run that keeps it.

    The wording is OpenAI's, whose servers refused a message on a thread with an
    active run the same way.
    """
    if refusal.run_id is None:
        return ThreadBusyError(
            f"Thread {refusal.thread_id!r} is busy: another writer holds its run "
            "lease. Retry shortly.",
            thread_id=refusal.thread_id,
        )
    return ThreadBusyError(
        f"Can't add messages to {refusal.thread_id} while a run {refusal.run_id} "
        f"is active ({refusal.status}). Wait for it to end, or cancel it.",
        thread_id=refusal.thread_id,
        run_id=refusal.run_id,
    )


def busy_refusal(
    thread_id: str, *, leased: bool, run_id: str | None, status: str | None
) -> RefusedBusy | None:
    """Whether a thread takes no message now, from what one transaction read.

    Args:
        thread_id: The thread.
        leased: Whether someone holds the thread's run lease (not expired).
        run_id: The thread's newest run, if any.
        status: Its stored status.

    Returns:
        The refusal, naming the run when one keeps the thread: a leased run still
        active, or one waiting for tool outputs. A lease without an active run
        (another writer's) refuses without a run. ``None`` if the thread is idle.
    """
    if run_id is not None and (
        status == "requires_action" or (leased and status in ACTIVE_RUN_STATUSES)
    ):
        return RefusedBusy(thread_id=thread_id, run_id=run_id, status=status)
    return RefusedBusy(thread_id=thread_id) if leased else None


def newest_busy(thread_id: str, newest: Sequence[StoredRun]) -> RefusedBusy | None:
    """The refusal if the thread's newest run (``newest[:1]``) keeps it busy."""
    if newest and newest[0].status in BUSY_RUN_STATUSES:
        run = newest[0]
        return RefusedBusy(thread_id=thread_id, run_id=run.id, status=run.status)
    return None


def in_scope(metadata: Mapping[str, str], scope: Mapping[str, str] | None) -> bool:
    """Whether an object's metadata holds every pair of ``scope`` (``None``: any)."""
    return scope is None or all(metadata.get(k) == v for k, v in scope.items())


class _Stored(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    """The store's id of the object."""
    created_at: int
    """When the object was created, in Unix seconds."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """The object's whole metadata, typed-field entries included."""


class StoredAssistant(_Stored):
    """An assistant as a store holds it."""

    name: str | None = None
    """The assistant's name."""
    description: str | None = None
    """What the assistant is for."""
    instructions: str | None = None
    """The system instructions a run sends first."""
    model: str
    """The Chat Completions model a run uses unless the thread overrides it."""
    temperature: float | None = None
    """Sampling temperature; ``None`` leaves it to the model's default."""
    top_p: float | None = None
    """Nucleus sampling mass; ``None`` leaves it to the model's default."""


class StoredThread(_Stored):
    """A thread as a store holds it."""


class StoredMessage(_Stored):
    """A message as a store holds it."""

    thread_id: str
    """The thread the message belongs to."""
    role: str
    """The Assistants-style role: ``user``, ``assistant``, ``system``, ``tool``..."""
    payload: str
    """The LangChain message as JSON text (see ``langchain_retro._messages``)."""
    run_id: str | None = None
    """The run that wrote the message (a run's reply); ``None`` for other writes."""
    assistant_id: str | None = None
    """The assistant whose run wrote the message; ``None`` for other writes."""
    reply_to: str | None = None
    """For a reply: the id of the last message it answered. A run's context places
    the reply right after that message, whatever was appended in between."""


class MessageRow(NamedTuple):
    """A stored message as a run reads it: `StoredMessage`'s fields, in a tuple.

    `BaseStore.begin_run` may read a whole thread. One tuple per message costs a
    fraction of a model (which is four objects: itself, its dict, its set of fields
    and its metadata) to build, to free and for the garbage collector to walk: at
    1,000 messages a turn that is several milliseconds. Stores build rows from
    columns they checked (`plain` for the common row without metadata); `of` and
    `stored` convert to and from `StoredMessage`, whose fields these are.
    """

    id: str
    created_at: int
    metadata: dict[str, str]
    thread_id: str
    role: str
    payload: str
    run_id: str | None = None
    assistant_id: str | None = None
    reply_to: str | None = None

    @staticmethod
    def plain(columns: Sequence[Any], thread_id: str) -> MessageRow:
        """The row of a message without metadata, from its columns.

        Args:
            columns: ``(id, created_at, metadata, role, payload, run_id,
                assistant_id, reply_to)``, as the stores select them, already
                checked; ``metadata`` is ignored.
            thread_id: The message's thread.
        """
        id_, created_at, _, role, payload, run_id, assistant_id, reply_to = columns
        # tuple.__new__ skips the named tuple's Python-level constructor: half the
        # cost of a row.
        return tuple.__new__(
            MessageRow,
            (
                id_,
                created_at,
                {},
                thread_id,
                role,
                payload,
                run_id,
                assistant_id,
                reply_to,
            ),
        )

    @classmethod
    def of(cls, message: StoredMessage) -> MessageRow:
        """The row of a `StoredMessage`."""
        return cls(
            message.id,
            message.created_at,
            message.metadata,
            message.thread_id,
            message.role,
            message.payload,
            message.run_id,
            message.assistant_id,
            message.reply_to,
        )

    def stored(self) -> StoredMessage:
        """The row as a `StoredMessage` (validated, with its own metadata dict)."""
        return StoredMessage(**{**self._asdict(), "metadata": dict(self.metadata)})


class NewMessage(BaseModel):
    """A message to append to a thread."""

    model_config = ConfigDict(frozen=True)

    role: str
    """The Assistants-style role."""
    payload: str
    """The LangChain message as JSON text."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """The message's metadata, already checked against the store's limits."""
    id: str | None = None
    """The caller's id for the message (checked by `check_message_id`), unique
    within its thread; ``None`` lets the store assign a ``msg_...`` id."""
    created_at: int | None = None
    """Creation time in Unix seconds, for copies that keep it; ``None`` for now."""
    run_id: str | None = None
    """The run writing the message, if a run writes it."""
    assistant_id: str | None = None
    """The assistant of that run."""
    reply_to: str | None = None
    """For a reply: the id of the last message it answers."""

    def stored(self, message_id: str, thread_id: str, created_at: int) -> StoredMessage:
        """The message as the store now holds it, under the id it was given."""
        return StoredMessage(
            id=message_id,
            created_at=created_at if self.created_at is None else self.created_at,
            metadata=self.metadata,
            thread_id=thread_id,
            role=self.role,
            payload=self.payload,
            run_id=self.run_id,
            assistant_id=self.assistant_id,
            reply_to=self.reply_to,
        )


MAX_MESSAGE_ID_LENGTH = 256
"""The longest message id a caller may give, in characters."""


def check_message_id(message_id: object, thread_id: str) -> str:
    """Check a caller-supplied message id before anything is written.

    Args:
        message_id: The id the caller gave the message.
        thread_id: The thread it goes to, named in the error.

    Returns:
        The id, unchanged.

    Raises:
        RetroValueError: If it is not a non-empty string of at most
            `MAX_MESSAGE_ID_LENGTH` characters without NUL or surrounding whitespace.
    """
    if (
        not isinstance(message_id, str)
        or not message_id
        or len(message_id) > MAX_MESSAGE_ID_LENGTH
        or "\x00" in message_id
        or message_id != message_id.strip()
    ):
        raise RetroValueError(
            f"Message id {message_id!r} for thread {thread_id!r} is not usable: a "
            f"message id is a non-empty string of at most {MAX_MESSAGE_ID_LENGTH} "
            "characters, without NUL or leading/trailing whitespace. Pass another "
            "id, or none to get a msg_... id."
        )
    return message_id


def check_metadata(
    metadata: object, limits: MetadataLimits, owner: str
) -> dict[str, str]:
    """Metadata given to a write, as a new dict: strings to strings, within limits.

    Args:
        metadata: The metadata map the caller gave.
        limits: The store's limits.
        owner: What the metadata is for (``"Thread"``), named in the error.

    Raises:
        MetadataError: If it is not a mapping of strings to strings.
        MetadataLimitError: If it is over a limit.
        RetroValueError: If a key or value is not valid Unicode text.
    """
    if not isinstance(metadata, Mapping):
        raise MetadataError(
            f"{owner} metadata must be a mapping of strings to strings, not "
            f"{type(metadata).__name__}."
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise MetadataError(
                f"{owner} metadata must map strings to strings; the entry "
                f"{key!r}: {value!r} holds a {type(key).__name__} key and a "
                f"{type(value).__name__} value. Store the value as a string, or "
                "declare it as a typed field of a record class.",
                field=key if isinstance(key, str) else None,
            )
    checked = dict(metadata)
    check_limits(checked, limits)
    return checked


def check_assistant_fields(fields: Mapping[str, Any]) -> None:
    """Refuse assistant fields that are not native ones (they would be dropped).

    Raises:
        RetroValueError: Naming the unknown fields and the native ones.
    """
    unknown = set(fields) - set(ASSISTANT_FIELDS)
    if unknown:
        raise RetroValueError(
            f"Not native assistant fields: {sorted(unknown)}; native fields are "
            f"{list(ASSISTANT_FIELDS)}. Put other values in metadata; nothing was "
            "written."
        )


def check_hwm_key(hwm_key: object, limits: MetadataLimits) -> None:
    """Check ``add_messages``'s ``hwm_key``: a non-empty key within the limits.

    Raises:
        RetroValueError: If it is not a non-empty string, or over the key limits.
    """
    if not isinstance(hwm_key, str) or not hwm_key:
        raise RetroValueError(
            f"hwm_key must be a non-empty metadata key, not {hwm_key!r}."
        )
    check_limits({hwm_key: ""}, limits)


def has_reply(messages: Sequence[NewMessage]) -> bool:
    """Whether a batch holds an ``assistant`` message (so ``hwm_key`` may move)."""
    return any(m.role == THREAD_REPLY_ROLE for m in messages)


def answered_in_batch(messages: Sequence[NewMessage], ids: Sequence[str]) -> str | None:
    """The id a batch's last reply answers, as far as the batch itself tells.

    Returns:
        The id (from ``ids``, the batch's stored ids) of the newest non-assistant
        message before the batch's last ``assistant`` message; ``None`` if the batch
        has none there (the store then looks back into the thread) or no reply.
    """
    last = max(
        (i for i, m in enumerate(messages) if m.role == THREAD_REPLY_ROLE), default=0
    )
    for i in range(last - 1, -1, -1):
        if messages[i].role != THREAD_REPLY_ROLE:
            return ids[i]
    return None


def check_new_ids(thread_id: str, messages: Sequence[NewMessage]) -> None:
    """Check the caller ids of a batch: each usable, none twice in the batch.

    Raises:
        RetroValueError: For an unusable id.
        MessageIdConflictError: For an id given twice in the batch.
    """
    seen: set[str] = set()
    for message in messages:
        if message.id is None:
            continue
        check_message_id(message.id, thread_id)
        if message.id in seen:
            raise MessageIdConflictError(thread_id, message.id)
        seen.add(message.id)


class RunStart(BaseModel):
    """What `BaseStore.begin_run` read and wrote under the run lease it took."""

    model_config = ConfigDict(frozen=True)

    thread: StoredThread
    """The thread, read under the lease."""
    assistant: StoredAssistant | None = None
    """The assistant the thread's ``assistant_id`` metadata names; ``None`` if it
    names none or that assistant does not exist."""
    appended: list[StoredMessage] = Field(default_factory=list)
    """The input messages, as stored."""
    context: list[MessageRow] = Field(default_factory=list)
    """The thread's newest ``context_limit`` messages (all if ``None``), oldest
    first, the appended ones included, as rows (cheap to build for a long thread:
    `MessageRow.stored` gives a `StoredMessage`)."""
    run: StoredRun
    """The run, as created or resumed: ``in_progress``, with the lease's owner."""
    resumed: bool = False
    """Whether ``run`` is a ``requires_action`` run continued (``resume=True``)."""


class RunSetup(NamedTuple):
    """What a new run is checked against, read at once (`BaseStore.get_run_setup`).

    Each is ``None`` if it does not exist.
    """

    thread: StoredThread | None
    """The thread."""
    assistant: StoredAssistant | None
    """The assistant the run asks for."""
    newest_run: StoredRun | None
    """The thread's newest run, settled (as ``list_runs(limit=1)`` reads it)."""


class Lease(BaseModel):
    """A thread's run lease, as `BaseStore.get_lease` reports it."""

    model_config = ConfigDict(frozen=True)

    thread_id: str
    """The thread the lease is on."""
    owner: str
    """Who holds it: a run's id."""
    expires_at: float
    """When it lapses unless renewed, in Unix seconds (the store's clock)."""


class ThreadQuery(BaseModel):
    """Which threads to list, and which page."""

    model_config = ConfigDict(frozen=True)

    metadata: dict[str, str] = Field(default_factory=dict)
    """Metadata equality filters, all of which must hold."""
    classes: tuple[str, ...] | None = None
    """Record class markers, one of which must match; ``None`` for any class."""
    after: str | None = None
    """A thread id: list the threads that come after it in this order."""
    before: str | None = None
    """A thread id: list the threads that come before it in this order.

    The page is the ``limit`` threads nearest it (the previous page), in this order.
    """
    order: Order = "desc"
    """Newest first (``desc``, the default) or oldest first."""
    limit: int = Field(default=20, ge=1, le=10_001)
    """At most this many threads: a page of 10,000, plus one that tells more follow."""


class BaseStore(ABC):
    """The protocol of a store: assistants, threads and messages CRUD, sync and async.

    Implementations must make `add_messages` all-or-nothing, give messages a strictly
    increasing per-thread order that never depends on clocks, read the newest N
    messages or those after a cursor in O(N) / O(new), and check metadata limits
    before writing anything.
    """

    limits: MetadataLimits = UNLIMITED
    """The store's metadata limits; typed values longer than a value span keys."""

    # --- lifecycle -------------------------------------------------------------------

    @abstractmethod
    def close(self) -> None:
        """Release the store's connections; further calls raise `StoreClosedError`."""

    @abstractmethod
    async def aclose(self) -> None:
        """Async twin of `close`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- assistants ------------------------------------------------------------------

    @abstractmethod
    def create_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Create an assistant from its native fields and its metadata."""

    @abstractmethod
    async def acreate_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> StoredAssistant:
        """Async twin of `create_assistant`."""

    @abstractmethod
    def get_assistant(self, assistant_id: str) -> StoredAssistant:
        """Read an assistant; raises `AssistantNotFoundError`."""

    @abstractmethod
    async def aget_assistant(self, assistant_id: str) -> StoredAssistant:
        """Async twin of `get_assistant`."""

    @abstractmethod
    def update_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Change native fields and apply a metadata patch, in one transaction."""

    @abstractmethod
    async def aupdate_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None = None,
    ) -> StoredAssistant:
        """Async twin of `update_assistant`."""

    @abstractmethod
    def delete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Delete an assistant; returns how many of its threads were deleted.

        Args:
            assistant_id: The assistant to delete.
            threads: ``refuse`` raises `AssistantInUseError` if any thread names the
                assistant; ``keep`` leaves them; ``delete`` deletes them too.
        """

    @abstractmethod
    async def adelete_assistant(
        self, assistant_id: str, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Async twin of `delete_assistant`."""

    @abstractmethod
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

    @abstractmethod
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

    # --- threads ---------------------------------------------------------------------

    @abstractmethod
    def create_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Create a thread with the given metadata."""

    @abstractmethod
    async def acreate_thread(self, metadata: Mapping[str, str]) -> StoredThread:
        """Async twin of `create_thread`."""

    @abstractmethod
    def get_thread(self, thread_id: str) -> StoredThread:
        """Read a thread; raises `ThreadNotFoundError`."""

    @abstractmethod
    async def aget_thread(self, thread_id: str) -> StoredThread:
        """Async twin of `get_thread`."""

    @abstractmethod
    def update_thread(self, thread_id: str, patch: MetadataPatch) -> StoredThread:
        """Apply a metadata patch to a thread, in one transaction."""

    @abstractmethod
    async def aupdate_thread(
        self, thread_id: str, patch: MetadataPatch
    ) -> StoredThread:
        """Async twin of `update_thread`."""

    @abstractmethod
    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread with all its messages."""

    @abstractmethod
    async def adelete_thread(self, thread_id: str) -> None:
        """Async twin of `delete_thread`."""

    @abstractmethod
    def list_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """List threads matching a query, in the query's order."""

    @abstractmethod
    async def alist_threads(self, query: ThreadQuery) -> list[StoredThread]:
        """Async twin of `list_threads`."""

    # --- messages --------------------------------------------------------------------

    @abstractmethod
    def add_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
        hwm_key: str | None = None,
    ) -> list[StoredMessage]:
        """Append messages to a thread, all or none, in the given order.

        A message with an ``id`` keeps it; the others get a new ``msg_...`` id. An id
        already in the thread, or given twice in the batch, raises
        `MessageIdConflictError` and nothing is written. Every check runs before any
        write.

        Args:
            thread_id: The thread to append to.
            messages: The messages, in order.
            thread_patch: A metadata patch applied to the thread in the same
                transaction (a run moves its ``hwm`` this way with its reply).
            hwm_key: If set and the batch holds an ``assistant`` message, the thread's
                metadata entry of this name is set, in the same transaction, to the id
                of the newest non-assistant message before the batch's last assistant
                message (looking back into the thread when the batch starts with
                replies), so what a reply answers counts as answered. Nothing changes
                when no such message exists. ``thread_patch`` is applied first.

        Returns:
            The stored messages, with their ids.
        """

    @abstractmethod
    async def aadd_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        thread_patch: MetadataPatch | None = None,
        hwm_key: str | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `add_messages`."""

    def add_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        scope: Mapping[str, str] | None = None,
    ) -> list[StoredMessage]:
        """Append messages unless a run keeps the thread busy, as OpenAI refused them.

        A thread is busy while a run holds its lease (``queued``, ``in_progress``,
        ``cancelling``) or while its newest run waits for tool outputs
        (``requires_action``). The check and the write are atomic: no run starts or
        resumes between them, in any process. Otherwise as `add_messages`.

        This default holds the thread's lease around the write (four calls, waiting
        a few seconds for other writers that hold it); stores override it with one
        transaction.

        Args:
            thread_id: The thread.
            messages: The messages, in order.
            scope: Metadata pairs the thread must hold (`in_scope`), such as a
                server's owner key: a thread without them is not found, so one
                call both checks who may write and writes. (This default reads
                the thread first; stores check it in the write's transaction.)

        Raises:
            ThreadNotFoundError: If the thread does not exist or is out of
                ``scope``. Nothing is written.
            ThreadBusyError: Naming the run (``run_id``) that keeps the thread busy,
                or, without a run, when other writers held the lease for seconds.
                Nothing is written.
        """
        return drive_calls(self._write_if_idle(thread_id, messages, scope))

    async def aadd_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        scope: Mapping[str, str] | None = None,
    ) -> list[StoredMessage]:
        """Async twin of `add_messages_if_idle`."""
        return await adrive_calls(self._write_if_idle(thread_id, messages, scope))

    def _write_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        scope: Mapping[str, str] | None,
    ) -> Steps[Call[Any], list[StoredMessage]]:
        """`add_messages_if_idle` as calls under the thread's lease, written once."""
        if scope is not None:
            thread = yield from call(self.get_thread, self.aget_thread, thread_id)
            if not in_scope(thread.metadata, scope):
                raise ThreadNotFoundError(thread_id)
        owner = new_id("write")
        deadline = time.monotonic() + _IDLE_PATIENCE
        delay = 0.002
        while not (
            yield from call(
                self.acquire_lease,
                self.aacquire_lease,
                thread_id,
                owner,
                _IDLE_WRITE_TTL,
            )
        ):
            newest = yield from call(
                self.list_runs, self.alist_runs, thread_id, limit=1
            )
            refusal = newest_busy(thread_id, newest)
            if refusal is not None or time.monotonic() >= deadline:
                raise busy_error(refusal or RefusedBusy(thread_id=thread_id))
            yield from call(_sleep, _asleep, delay)
            delay = min(delay * 2, 0.05)
        try:
            newest = yield from call(
                self.list_runs, self.alist_runs, thread_id, limit=1
            )
            refusal = newest_busy(thread_id, newest)
            if refusal is not None:
                raise busy_error(refusal)
            return (
                yield from call(
                    self.add_messages, self.aadd_messages, thread_id, messages
                )
            )
        finally:
            yield from call(self.release_lease, self.arelease_lease, thread_id, owner)

    @abstractmethod
    def get_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Read a message of a thread; raises `MessageNotFoundError`."""

    @abstractmethod
    async def aget_message(self, thread_id: str, message_id: str) -> StoredMessage:
        """Async twin of `get_message`."""

    @abstractmethod
    def list_messages(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        limit: int | None = None,
    ) -> list[StoredMessage]:
        """List a thread's messages in thread order.

        Args:
            thread_id: The thread.
            after: A message id: only messages that come after it in thread order.
            before: A message id: only messages that come before it in thread order.
                With a ``limit``, the ``limit`` messages nearest it (the previous
                page), in ``order``.
            order: ``asc`` (oldest first, the default) or ``desc`` (newest first).
            limit: At most this many messages; ``None`` for all.
        """

    @abstractmethod
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

    def list_message_payloads(
        self, thread_id: str, *, order: Order = "asc", limit: int | None = None
    ) -> list[tuple[str, str]]:
        """``(id, payload)`` of a thread's messages: a chat history's read.

        The same rows as `list_messages`, without their row objects; stores may
        override it to skip building them. ``limit`` keeps the first rows in
        ``order``.
        """
        rows = self.list_messages(thread_id, order=order, limit=limit)
        return [(row.id, row.payload) for row in rows]

    async def alist_message_payloads(
        self, thread_id: str, *, order: Order = "asc", limit: int | None = None
    ) -> list[tuple[str, str]]:
        """Async twin of `list_message_payloads`."""
        rows = await self.alist_messages(thread_id, order=order, limit=limit)
        return [(row.id, row.payload) for row in rows]

    @abstractmethod
    def update_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Apply a metadata patch to a message."""

    @abstractmethod
    async def aupdate_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> StoredMessage:
        """Async twin of `update_message`."""

    @abstractmethod
    def delete_message(self, thread_id: str, message_id: str) -> None:
        """Delete one message of a thread."""

    @abstractmethod
    async def adelete_message(self, thread_id: str, message_id: str) -> None:
        """Async twin of `delete_message`."""

    @abstractmethod
    def clear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Delete all of a thread's messages (the thread stays); returns how many."""

    @abstractmethod
    async def aclear_messages(
        self, thread_id: str, *, thread_patch: MetadataPatch | None = None
    ) -> int:
        """Async twin of `clear_messages`."""

    @abstractmethod
    def count_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Count a thread's messages, or those after the message ``after``.

        Without ``after`` it costs the same whatever the thread's length.
        """

    @abstractmethod
    async def acount_messages(self, thread_id: str, *, after: str | None = None) -> int:
        """Async twin of `count_messages`."""

    # --- bulk writes -----------------------------------------------------------------

    def create_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Create many threads in one transaction, all or none, in the given order.

        Every metadata map is checked before anything is written. This default makes
        one `create_thread` call per thread (not atomic); stores override it.
        """
        return [self.create_thread(metadata) for metadata in metadatas]

    async def acreate_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> list[StoredThread]:
        """Async twin of `create_threads`."""
        return [await self.acreate_thread(metadata) for metadata in metadatas]

    def bulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Append messages to many threads in one transaction, all or none.

        The path for imports and migrations: stores write it with as few statements
        as they can (multi-row inserts, PostgreSQL ``COPY``) and build no row objects.
        Each ``(thread_id, messages)`` pair appends as `add_messages` would (ids kept
        or assigned, order kept); a thread may appear more than once.

        This default makes one `add_messages` call per pair (not atomic); stores
        override it.

        Returns:
            How many messages were written.
        """
        return sum(
            len(self.add_messages(thread_id, messages))
            for thread_id, messages in batches
        )

    async def abulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> int:
        """Async twin of `bulk_add_messages`."""
        total = 0
        for thread_id, messages in batches:
            total += len(await self.aadd_messages(thread_id, messages))
        return total

    # --- run leases ------------------------------------------------------------------

    @abstractmethod
    def acquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Take the thread's run lease for ``ttl`` seconds if free, expired or ours.

        Leases expire, so a crashed worker cannot hold a thread forever.
        """

    @abstractmethod
    async def aacquire_lease(self, thread_id: str, owner: str, ttl: float) -> bool:
        """Async twin of `acquire_lease`."""

    @abstractmethod
    def release_lease(self, thread_id: str, owner: str) -> None:
        """Give the lease back if ``owner`` still holds it."""

    @abstractmethod
    async def arelease_lease(self, thread_id: str, owner: str) -> None:
        """Async twin of `release_lease`."""

    def get_lease(self, thread_id: str) -> Lease | None:
        """The thread's run lease if one is held and not expired, else ``None``.

        For telling a waiting user who holds a thread and until when; a run never
        relies on it (it takes the lease with `acquire_lease`).
        """
        raise NotImplementedError(f"{type(self).__name__} does not report leases")

    async def aget_lease(self, thread_id: str) -> Lease | None:
        """Async twin of `get_lease`."""
        raise NotImplementedError(f"{type(self).__name__} does not report leases")

    # --- runs ------------------------------------------------------------------------

    @abstractmethod
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
        """Start a run, in one transaction: lease, run record, input, context.

        Takes the thread's run lease for ``owner`` (as `acquire_lease`); marks any
        other run of the thread that still counts as holding the lease as lapsed
        (``expired``, or ``cancelled`` if it was ``cancelling``: see `lapsed_status`);
        reads the thread and the assistant its ``assistant_id`` metadata names;
        creates the run (`new_run_row`, lease owner ``owner``) or, with ``resume``
        and a thread whose newest run is in ``requires_action``, continues that run
        instead (`resumed_run`, lease owner now ``owner``); appends ``messages``
        (with ``resume``, those without a ``run_id`` get the resumed run's id); and
        reads the thread's newest ``context_limit`` messages. If it raises, it holds
        no lease and has written nothing.

        Args:
            thread_id: The thread to run on.
            owner: Who takes the lease: unique per attempt (a new run's id).
            ttl: Seconds the lease lasts unless renewed with `renew_run`.
            run: The run to create; ``None`` creates ``NewRun(id=owner)``.
            messages: The run's input, appended in order; may be empty.
            context_limit: How many of the newest messages to read; ``None`` for all.
            resume: Continue the thread's newest run if it is in ``requires_action``.

        Returns:
            What was read and written; ``None``, with nothing written, if another
            owner holds the lease.

        Raises:
            ThreadNotFoundError: If the thread does not exist.
        """

    @abstractmethod
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

    @abstractmethod
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
        """Write a run's step or end, in one transaction.

        Appends ``messages``, applies ``thread_patch`` to the thread, applies
        ``update`` to the run (`updated_run`) and adds its usage to the thread's
        running total. If ``update.status`` is not ``in_progress`` the lease is given
        back (if ``owner`` still holds it; another owner's lease is left alone).
        The messages are stored even if the lease lapsed meanwhile.

        If the run is ``cancelling`` (a cancel came while it ran), nothing of the
        above is written: the run becomes ``cancelled``, the lease is given back,
        and the result holds no messages. Check ``result.run.status``.

        Args:
            thread_id: The thread of the run.
            owner: The lease's owner, as given to `begin_run`.
            run_id: The run.
            update: The run's new status and what goes with it.
            messages: The messages the run wrote (a step's, or its reply).
            thread_patch: A metadata patch applied to the thread (a run moves its
                ``hwm`` this way).

        Returns:
            The stored messages and the run as it now is.

        Raises:
            RunNotFoundError: If the run does not exist on the thread.
        """

    @abstractmethod
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

    @abstractmethod
    def renew_run(self, thread_id: str, *, owner: str, ttl: float) -> RunLeaseState:
        """Renew a running run's lease for ``ttl`` seconds, and say if it may go on.

        Returns:
            ``held`` (renewed), ``cancelling`` (renewed, but a cancel was asked: the
            run should stop and end with status ``cancelled``), or ``lost`` (another
            owner holds the lease, or the thread is gone: nothing renewed).
        """

    @abstractmethod
    async def arenew_run(
        self, thread_id: str, *, owner: str, ttl: float
    ) -> RunLeaseState:
        """Async twin of `renew_run`."""

    @abstractmethod
    def get_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Read a run of a thread, settled (`settle`); raises `RunNotFoundError`."""

    @abstractmethod
    async def aget_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `get_run`."""

    @abstractmethod
    def list_runs(
        self,
        thread_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
    ) -> list[StoredRun]:
        """List a thread's runs by creation, newest first by default, settled.

        ``after`` / ``before`` are run ids, as for `list_messages`; an unknown one
        raises `RunNotFoundError`. Raises `ThreadNotFoundError` for an unknown
        thread. Costs O(limit) whatever the number of runs.
        """

    @abstractmethod
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

    def get_run_setup(self, thread_id: str, assistant_id: str) -> RunSetup:
        """A thread, an assistant and the thread's newest run, for a new run's checks.

        A server checks all three before it starts a run (who may see the thread and
        the assistant, and whether a run keeps the thread busy). This default reads
        them with three calls; stores override it with one.

        Args:
            thread_id: The thread.
            assistant_id: The assistant.
        """
        thread = _found_now(self.get_thread, thread_id)
        assistant = _found_now(self.get_assistant, assistant_id)
        newest = None
        if thread is not None:  # no thread, no runs to read
            newest = _found_now(functools.partial(self.list_runs, limit=1), thread_id)
        return RunSetup(thread, assistant, newest[0] if newest else None)

    async def aget_run_setup(self, thread_id: str, assistant_id: str) -> RunSetup:
        """Async twin of `get_run_setup`; this default makes its three calls at once."""
        thread, assistant, newest = await asyncio.gather(
            _found(self.aget_thread(thread_id)),
            _found(self.aget_assistant(assistant_id)),
            _found(self.alist_runs(thread_id, limit=1)),
        )
        return RunSetup(thread, assistant, newest[0] if newest else None)

    @abstractmethod
    def cancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Ask a run to stop, in one transaction (`cancel_requested`).

        A running run becomes ``cancelling`` (its process notices at its next
        `renew_run` and ends it ``cancelled``); a run in ``requires_action`` is
        ``cancelled`` at once. Raises `RunStateError` for a run that already ended
        (a lapsed run is ended: it settles first), `RunNotFoundError` for none.
        """

    @abstractmethod
    async def acancel_run(self, thread_id: str, run_id: str) -> StoredRun:
        """Async twin of `cancel_run`."""

    def update_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Replace a run's ``metadata`` (the Assistants API's modify run).

        The run is settled first (a lapsed run is written as it reads); nothing
        else of it changes. Raises `RunNotFoundError` for no such run and
        `MetadataError` for metadata that is not strings within the limits.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot change runs")

    async def aupdate_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> StoredRun:
        """Async twin of `update_run_metadata`."""
        raise NotImplementedError(f"{type(self).__name__} cannot change runs")

    @abstractmethod
    def list_run_messages(self, thread_id: str, run_id: str) -> list[StoredMessage]:
        """The messages a run wrote (``run_id`` equal to it), in thread order.

        Reads by an index, not a scan of the thread.
        """

    @abstractmethod
    async def alist_run_messages(
        self, thread_id: str, run_id: str
    ) -> list[StoredMessage]:
        """Async twin of `list_run_messages`."""

    @abstractmethod
    def get_thread_usage(self, thread_id: str) -> RunUsage:
        """The tokens of all the thread's runs: a running total, read in O(1)."""

    @abstractmethod
    async def aget_thread_usage(self, thread_id: str) -> RunUsage:
        """Async twin of `get_thread_usage`."""

    # --- copies that keep ids (migrate, import) --------------------------------------

    keeps_ids: bool = False
    """Whether the store writes records under the ids they already have.

    True for the stores that implement `import_assistants`, `import_threads` and
    `import_runs`; a store that assigns its own ids leaves it false, and those
    operations raise `IdsNotKeptError`.
    """

    def import_assistants(self, assistants: Sequence[StoredAssistant]) -> list[str]:
        """Write assistants as they are (id, ``created_at``, fields, metadata).

        One transaction, all or none, checked before any write. An id the store
        already holds is left as it is (so a copy run again writes nothing twice).

        Returns:
            The ids written, in the given order (those already present left out).

        Raises:
            IdsNotKeptError: If the store assigns its own ids.
        """
        raise IdsNotKeptError(_ids_not_kept(self, "assistants"))

    async def aimport_assistants(
        self, assistants: Sequence[StoredAssistant]
    ) -> list[str]:
        """Async twin of `import_assistants`."""
        raise IdsNotKeptError(_ids_not_kept(self, "assistants"))

    def import_threads(self, threads: Sequence[ThreadCopy]) -> list[str]:
        """Write threads as they are (id, ``created_at``, metadata, token totals).

        Threads keep the given order among themselves. One transaction, all or none,
        checked before any write; an id already present is left as it is. Messages
        follow with `bulk_add_messages`, which keeps their ids and ``created_at``.

        Returns:
            The ids written, in the given order (those already present left out).

        Raises:
            IdsNotKeptError: If the store assigns its own ids.
        """
        raise IdsNotKeptError(_ids_not_kept(self, "threads"))

    async def aimport_threads(self, threads: Sequence[ThreadCopy]) -> list[str]:
        """Async twin of `import_threads`."""
        raise IdsNotKeptError(_ids_not_kept(self, "threads"))

    def import_runs(self, runs: Sequence[StoredRun]) -> list[str]:
        """Write run records as they are, on their threads (which must exist).

        A run keeps its id, status, times, settings, usage and metadata; one that is
        still active in the copy (its lease stays behind) is written as it then
        reads, ``expired`` or ``cancelled`` (`imported_run`). Runs keep the given
        order within their thread. One transaction, all or none; an id already
        present is left as it is. Thread token totals are not touched: they come
        with `import_threads`.

        Returns:
            The ids written, in the given order (those already present left out).

        Raises:
            ThreadNotFoundError: If a run's thread does not exist; nothing written.
            IdsNotKeptError: If the store assigns its own ids.
        """
        raise IdsNotKeptError(_ids_not_kept(self, "runs"))

    async def aimport_runs(self, runs: Sequence[StoredRun]) -> list[str]:
        """Async twin of `import_runs`."""
        raise IdsNotKeptError(_ids_not_kept(self, "runs"))


def _ids_not_kept(store: BaseStore, what: str) -> str:
    return (
        f"{type(store).__name__} assigns its own ids, so it cannot import {what} "
        "under theirs. Copy into a store that keeps ids (SQLite, PostgreSQL, or "
        "langchain-retro serve's /v1/retro routes)."
    )


class ThreadCopy(StoredThread):
    """A thread with its runs' token totals, as `BaseStore.import_threads` takes it."""

    usage: RunUsage = Field(default_factory=RunUsage)
    """The thread's running token totals (`BaseStore.get_thread_usage`)."""


def imported_run(run: StoredRun, now: float) -> StoredRun:
    """A run as an import writes it: settled as if its lease were gone.

    The lease a run held stays with the source, so an active run is written with
    the status it would read with in the copy (`settle`): ``expired``, or
    ``cancelled`` if it was ``cancelling``.
    """
    return settle(run, held=False, lease_expires_at=None, now=now)


def check_copies(
    records: Sequence[_Stored | StoredRun], limits: MetadataLimits, owner: str
) -> None:
    """Check records to import: metadata within the limits, no id given twice.

    Raises:
        MetadataError: If a record's metadata is not strings within the limits.
        RetroValueError: If an id is given twice in the batch.
    """
    seen: set[str] = set()
    for record in records:
        check_metadata(record.metadata, limits, f"{owner} {record.id!r}")
        if record.id in seen:
            raise RetroValueError(
                f"{owner} id {record.id!r} is given twice in one import batch; "
                "nothing was written. Give each record once."
            )
        seen.add(record.id)


def _found_now(read: Callable[[str], T], object_id: str) -> T | None:
    """What ``read`` reads, or ``None`` if it does not exist."""
    try:
        return read(object_id)
    except NotFoundError:
        return None


async def _found(read: Awaitable[T]) -> T | None:
    """Async twin of `_found_now`."""
    try:
        return await read
    except NotFoundError:
        return None
