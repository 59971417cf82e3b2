"""Typed records: assistants, threads and messages whose extra fields live in metadata.

Subclass `BaseAssistant`, `BaseThread` or `BaseMessage` and declare fields: every field
the subclass adds is written to the object's ``metadata`` and comes back typed::

    class SupportThread(BaseThread):
        customer_id: str
        priority: int = 0

    thread = SupportThread.create(store, customer_id="c-42", priority=2)
    urgent = SupportThread.list(store, priority=2).data

Records are immutable snapshots. ``update`` writes only the changed fields and returns
the new snapshot. Every operation has an ``a``-prefixed async twin.

Each record remembers its class (the ``retro_class`` metadata entry, by default the
class's module and qualified name; set ``record_class`` in the class body to keep it
stable across a move). Listing through a class returns that class and its subclasses;
listing through a ``Base*`` class returns every record, each as its own class when that
class has been imported, else as the base class with all metadata in ``metadata``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

from langchain_core.messages import BaseMessage as LCBaseMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langchain_retro import _messages
from langchain_retro._metadata import (
    CLASS_KEY,
    FieldCodec,
    MetadataLimits,
    MetadataPatch,
    check_free_keys,
    check_limits,
    decode_fields,
    encode_fields,
    split_metadata,
)
from langchain_retro.errors import (
    CorruptDataError,
    MetadataError,
    MetadataLimitError,
    RecordClassError,
    RetroValueError,
)
from langchain_retro.stores.base import (
    ASSISTANT_FIELDS,
    AssistantThreads,
    BaseStore,
    NewMessage,
    Order,
    StoredAssistant,
    StoredMessage,
    StoredRun,
    StoredThread,
    ThreadQuery,
    check_message_id,
)

__all__ = [
    "Assistant",
    "BaseAssistant",
    "BaseMessage",
    "BaseThread",
    "ChatCompletionThread",
    "Page",
    "ThreadMessage",
]

R = TypeVar("R", bound="_Record | StoredRun")
"""What a page holds: records, or runs (`langchain_retro.runs.Run`)."""
S = TypeVar("S")

_WRITTEN_BY_RUNS = ("run_id", "assistant_id")
"""A message's fields a run writes, read-only for everyone else."""

MAX_PAGE = 10_000
"""The largest page a listing returns."""


def _fetch_limit(limit: int) -> int:
    """Rows to fetch for a page of ``limit``: one more tells whether more follow."""
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or not 1 <= limit <= MAX_PAGE
    ):
        raise RetroValueError(
            f"limit must be a page size from 1 to {MAX_PAGE:,}, not {limit!r}."
        )
    return limit + 1


class Page(BaseModel, Generic[R]):
    """One page of a listing, shaped like the Assistants API's list responses."""

    data: list[R]
    """The records on this page."""
    has_more: bool
    """Whether more records follow; pass ``after=page.last_id`` for the next page."""
    first_id: str | None
    """The id of the first record on the page."""
    last_id: str | None
    """The id of the last record on the page: the cursor for the next page."""

    @classmethod
    def of(cls, items: list[R], limit: int, *, toward_start: bool = False) -> Page[R]:
        """Build a page from ``limit + 1`` fetched items.

        Args:
            items: Up to ``limit + 1`` items in listing order; the extra one only says
                that more follow.
            limit: The page size.
            toward_start: Whether the page was read backwards from a ``before``
                cursor, so the extra item, if any, is the first one.
        """
        data = items[-limit:] if toward_start and len(items) > limit else items[:limit]
        return cls(
            data=data,
            has_more=len(items) > limit,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )

    @classmethod
    def of_rows(
        cls,
        rows: Sequence[S],
        limit: int,
        build: Callable[[S], R],
        *,
        toward_start: bool = False,
    ) -> Page[R]:
        """Like `of`, from stored rows: only the rows on the page are rebuilt.

        The extra row that says more follow belongs to the next page, and a row
        there that no longer rebuilds must not make this page unreadable.
        """
        kept = rows[-limit:] if toward_start and len(rows) > limit else rows[:limit]
        data = [build(row) for row in kept]
        return cls(
            data=data,
            has_more=len(rows) > limit,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )


class _Record(BaseModel):
    """What assistants, threads and messages share: id, time, metadata, typed fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    _native: ClassVar[frozenset[str]] = frozenset({"id", "created_at", "metadata"})
    _codecs: ClassVar[tuple[FieldCodec, ...]] = ()
    _typed_names: ClassVar[frozenset[str]] = frozenset()
    _registry: ClassVar[dict[str, type[_Record]]]
    _kind: ClassVar[str] = "record"
    _unmarked: ClassVar[str | None] = None
    record_class: ClassVar[str]
    """The class marker written to ``metadata['retro_class']``."""

    id: str = ""
    """The store's id; empty until the record is created."""
    created_at: int = 0
    """When the object was created, in Unix seconds; 0 until created."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Free-form metadata, besides the typed fields (which the store keeps here too)."""

    def __init__(self, /, **data: Any) -> None:
        """Validate the fields; raises `RetroValueError` naming each bad field."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _invalid(type(self), exc) from exc

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "record_class" not in cls.__dict__:
            cls.record_class = f"{cls.__module__}.{cls.__qualname__}"
        cls._codecs = tuple(
            FieldCodec.for_field(name, info)
            for name, info in cls.model_fields.items()
            if name not in cls._native
        )
        cls._typed_names = frozenset(c.name for c in cls._codecs)
        cls._registry[cls.record_class] = cls

    # --- pure steps shared by the sync and async operations --------------------------

    @classmethod
    def _is_base(cls) -> bool:
        return cls.__dict__.get("_is_kind_base", False) is True

    @classmethod
    def _classes(cls) -> tuple[str, ...] | None:
        """Class markers a listing through this class matches; ``None`` for all."""
        if cls._is_base():
            return None
        return tuple(
            marker for marker, sub in cls._registry.items() if issubclass(sub, cls)
        )

    def _encoded_metadata(self, limits: MetadataLimits) -> dict[str, str]:
        check_free_keys(self.metadata, self._typed_names)
        values = {name: getattr(self, name) for name in self._typed_names}
        metadata = {
            **self.metadata,
            **encode_fields(self._codecs, values, limits),
            CLASS_KEY: self.record_class,
        }
        check_limits(metadata, limits)
        return metadata

    @classmethod
    def _decode(cls, stored: Any, native: Mapping[str, Any]) -> Self:
        """Rebuild a record of this class, or of the subclass that wrote it."""
        marker = stored.metadata.get(CLASS_KEY, cls._unmarked)
        target = cls._registry.get(marker) if marker is not None else None
        if target is None or not issubclass(target, cls):
            if not cls._is_base():
                what = f"record class {marker!r}" if marker else "no record class"
                raise RecordClassError(
                    f"{cls._kind.capitalize()} {stored.id!r} has {what}, not "
                    f"{cls.record_class!r} or a subclass of it. Read it through "
                    f"{_base_name(cls)}, or import the class that wrote it."
                )
            # Unknown class: read it through the base, every entry kept in metadata.
            target = cls
        typed, free = split_metadata(stored.metadata, target._typed_names)
        try:
            values = decode_fields(target._codecs, typed)
            return target.model_validate(
                {
                    **values,
                    **native,
                    "id": stored.id,
                    "created_at": stored.created_at,
                    "metadata": free,
                }
            )
        except (ValueError, TypeError) as exc:  # MetadataError, ValidationError
            raise _corrupt(cls._kind, stored, target, exc) from exc

    def _patch(
        self, changes: Mapping[str, Any], limits: MetadataLimits
    ) -> tuple[Self, MetadataPatch]:
        """Validate changes and build the metadata patch that writes only them."""
        unknown = set(changes) - set(type(self).model_fields)
        fixed = unknown | ({"id", "created_at"} & set(changes))
        if fixed:
            raise MetadataError(
                f"Cannot update {sorted(fixed)}"
                f" of {type(self).__name__} {self.id!r}: not an updatable field."
            )
        free_changes: Mapping[str, str | None] = _check_metadata(
            changes.get("metadata"), "metadata", removable=True
        )
        check_free_keys(dict.fromkeys(free_changes, ""), self._typed_names)
        merged = {
            k: v
            for k, v in self.metadata.items()
            if free_changes.get(k, "") is not None
        }
        merged.update({k: v for k, v in free_changes.items() if v is not None})
        try:
            updated = type(self).model_validate(
                {
                    **{name: getattr(self, name) for name in type(self).model_fields},
                    **{k: v for k, v in changes.items() if k != "metadata"},
                    "metadata": merged,
                }
            )
        except ValidationError as exc:
            raise _invalid(type(self), exc) from exc
        typed = frozenset(changes) & self._typed_names
        patch = MetadataPatch(
            set={
                **{k: v for k, v in free_changes.items() if v is not None},
                **encode_fields(
                    [c for c in self._codecs if c.name in typed],
                    {name: getattr(updated, name) for name in typed},
                    limits,
                ),
            },
            remove=frozenset(k for k, v in free_changes.items() if v is None),
            clear_fields=typed,
        )
        return updated, patch

    @classmethod
    def _filters(
        cls,
        typed: Mapping[str, Any],
        metadata: Mapping[str, str] | None,
        limits: MetadataLimits,
    ) -> dict[str, str]:
        """Metadata equality filters from typed field values and free-form entries."""
        unknown = set(typed) - cls._typed_names
        if unknown:
            raise MetadataError(
                f"{cls.__name__} has no typed field {sorted(unknown)} to filter on; "
                f"its typed fields are {sorted(cls._typed_names)}. "
                "Use metadata={...} for free-form keys."
            )
        out = dict(_check_metadata(metadata, "metadata filter"))
        for codec in cls._codecs:
            if codec.name in typed:
                text = codec.encode_filter(typed[codec.name])
                if text is None:
                    raise MetadataError(
                        f"Cannot filter {cls.__name__} on {codec.name}=None: absent "
                        "values are not indexed.",
                        field=codec.name,
                    )
                size = limits.max_value_length
                if size is not None and len(text) > size:
                    raise MetadataLimitError(
                        f"Cannot filter {cls.__name__} on {codec.name}: its encoded "
                        f"value has {len(text)} characters and spans several keys "
                        f"(this store keeps {size} per key); only single-key values "
                        "can be filtered on. Filter on a shorter field instead.",
                        field=codec.name,
                        limit=size,
                        size=len(text),
                    )
                out[codec.name] = text
        return out


def _invalid(cls: type[_Record], exc: ValidationError) -> RetroValueError:
    """The error for field values a record class refuses, listing each problem."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )
    return RetroValueError(
        f"Invalid {cls.__name__}: {problems}. Fix these fields and retry."
    )


def _check_str(value: object, what: str) -> None:
    if not isinstance(value, str):
        raise RetroValueError(f"{what} must be a string, not {value!r}.")


def _check_listing(order: object, cursors: Mapping[str, object], limit: object) -> None:
    """Refuse listing arguments of the wrong type or value, before any read."""
    if order not in ("asc", "desc"):
        raise RetroValueError(f"order must be 'asc' or 'desc', not {order!r}.")
    for name, cursor in cursors.items():
        if cursor is not None:
            _check_str(cursor, f"{name} (an id from a previous page)")
    _fetch_limit(limit)  # type: ignore[arg-type]


def _check_metadata(
    metadata: object, what: str, *, removable: bool = False
) -> Mapping[str, Any]:
    """Check a metadata map given by a caller: string keys, string values."""
    if metadata is None:
        return {}
    allowed = "strings or None (to remove a key)" if removable else "strings"
    if not isinstance(metadata, Mapping) or not all(
        isinstance(k, str) and (isinstance(v, str) or (removable and v is None))
        for k, v in metadata.items()
    ):
        raise RetroValueError(
            f"{what} must map string keys to {allowed}, not {metadata!r}."
        )
    return metadata


def _backwards(after: str | None, before: str | None) -> bool:
    """Whether a listing reads back from a ``before`` cursor (the previous page)."""
    return before is not None and after is None


def _corrupt(
    kind: str, stored: Any, target: type[_Record], exc: Exception
) -> CorruptDataError:
    """The error for a stored record that no longer validates as its class."""
    thread_id: str | None = getattr(stored, "thread_id", None)
    where = f" of thread {thread_id!r}" if thread_id is not None else ""
    why = str(exc).rstrip(".")
    return CorruptDataError(
        f"Stored {kind} {stored.id!r}{where} no longer reads as {target.__name__}: "
        f"{why}. It was edited outside langchain-retro, or the class's fields changed "
        "since it was written: fix or migrate the stored values (other objects are "
        "unaffected).",
        object_id=stored.id,
        thread_id=thread_id,
    )


def _base_name(cls: type[_Record]) -> str:
    for klass in cls.__mro__:
        if klass.__dict__.get("_is_kind_base") is True:
            return klass.__name__
    return cls.__name__


# --- assistants ----------------------------------------------------------------------


class BaseAssistant(_Record):
    """An assistant: a model with its settings and instructions.

    Subclass it to add typed fields kept in metadata (for example a ``max_tokens``
    the runner honours). `Assistant` is the ready-made subclass.
    """

    _is_kind_base: ClassVar[bool] = True
    _registry: ClassVar[dict[str, type[_Record]]] = {}
    _kind: ClassVar[str] = "assistant"
    _native: ClassVar[frozenset[str]] = frozenset(
        {"id", "created_at", "metadata", *ASSISTANT_FIELDS}
    )

    model: str
    """The Chat Completions model, e.g. ``gpt-4o-mini`` or a local model's name."""
    name: str | None = Field(default=None, max_length=256)
    """A display name."""
    description: str | None = Field(default=None, max_length=512)
    """What the assistant is for."""
    instructions: str | None = Field(default=None, max_length=256_000)
    """The system message every run sends first."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature, 0 to 2; ``None`` leaves it to the model."""
    top_p: float | None = Field(default=None, ge=0, le=1)
    """Nucleus sampling mass, 0 to 1; ``None`` leaves it to the model."""

    def _native_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ASSISTANT_FIELDS}

    @classmethod
    def _from(cls, stored: StoredAssistant) -> Self:
        return cls._decode(
            stored, {name: getattr(stored, name) for name in ASSISTANT_FIELDS}
        )

    @classmethod
    def create(cls, store: BaseStore, /, **fields: Any) -> Self:
        """Validate the fields and create the assistant in the store."""
        draft = cls(**fields)
        stored = store.create_assistant(
            draft._native_values(), draft._encoded_metadata(store.limits)
        )
        return cls._from(stored)

    @classmethod
    async def acreate(cls, store: BaseStore, /, **fields: Any) -> Self:
        """Async twin of `create`."""
        draft = cls(**fields)
        stored = await store.acreate_assistant(
            draft._native_values(), draft._encoded_metadata(store.limits)
        )
        return cls._from(stored)

    @classmethod
    def retrieve(cls, store: BaseStore, assistant_id: str, /) -> Self:
        """Read an assistant; raises `AssistantNotFoundError` or `RecordClassError`."""
        _check_str(assistant_id, "assistant_id")
        return cls._from(store.get_assistant(assistant_id))

    @classmethod
    async def aretrieve(cls, store: BaseStore, assistant_id: str, /) -> Self:
        """Async twin of `retrieve`."""
        _check_str(assistant_id, "assistant_id")
        return cls._from(await store.aget_assistant(assistant_id))

    def _update_args(
        self, store: BaseStore, changes: Mapping[str, Any]
    ) -> tuple[dict[str, Any], MetadataPatch]:
        updated, patch = self._patch(changes, store.limits)
        native = {k: getattr(updated, k) for k in changes if k in ASSISTANT_FIELDS}
        return native, patch

    def update(self, store: BaseStore, /, **changes: Any) -> Self:
        """Write only the given changes; returns the updated assistant.

        ``metadata={...}`` merges free-form entries; a ``None`` value removes a key.
        """
        native, patch = self._update_args(store, changes)
        return self._from(store.update_assistant(self.id, native, patch))

    async def aupdate(self, store: BaseStore, /, **changes: Any) -> Self:
        """Async twin of `update`."""
        native, patch = self._update_args(store, changes)
        return self._from(await store.aupdate_assistant(self.id, native, patch))

    def delete(
        self, store: BaseStore, /, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Delete the assistant; returns how many of its threads were deleted.

        Args:
            store: The store.
            threads: What happens to threads whose ``assistant_id`` names it:
                ``refuse`` (default) raises `AssistantInUseError` if there are any;
                ``keep`` leaves them (runs on them will fail until reassigned);
                ``delete`` deletes them with their messages, in the same transaction.
        """
        return store.delete_assistant(self.id, threads=threads)

    async def adelete(
        self, store: BaseStore, /, *, threads: AssistantThreads = "refuse"
    ) -> int:
        """Async twin of `delete`."""
        return await store.adelete_assistant(self.id, threads=threads)

    @classmethod
    def list(
        cls,
        store: BaseStore,
        /,
        *,
        metadata: Mapping[str, str] | None = None,
        after: str | None = None,
        order: Order = "desc",
        limit: int = 20,
        **typed: Any,
    ) -> Page[Self]:
        """List assistants of this class, newest first; typed fields filter by value."""
        _check_listing(order, {"after": after}, limit)
        rows = store.list_assistants(
            metadata=cls._filters(typed, metadata, store.limits),
            classes=cls._classes(),
            after=after,
            order=order,
            limit=_fetch_limit(limit),
        )
        return Page.of_rows(rows, limit, cls._from)

    @classmethod
    async def alist(
        cls,
        store: BaseStore,
        /,
        *,
        metadata: Mapping[str, str] | None = None,
        after: str | None = None,
        order: Order = "desc",
        limit: int = 20,
        **typed: Any,
    ) -> Page[Self]:
        """Async twin of `list`."""
        _check_listing(order, {"after": after}, limit)
        rows = await store.alist_assistants(
            metadata=cls._filters(typed, metadata, store.limits),
            classes=cls._classes(),
            after=after,
            order=order,
            limit=_fetch_limit(limit),
        )
        return Page.of_rows(rows, limit, cls._from)


class Assistant(BaseAssistant):
    """The ready-made assistant: the Assistants API's fields, usable as is."""

    record_class: ClassVar[str] = "langchain_retro.Assistant"


# --- threads -------------------------------------------------------------------------


class BaseThread(_Record):
    """A thread of messages. Subclass it to add typed fields kept in metadata."""

    _is_kind_base: ClassVar[bool] = True
    _registry: ClassVar[dict[str, type[_Record]]] = {}
    _kind: ClassVar[str] = "thread"

    @classmethod
    def _from(cls, stored: StoredThread) -> Self:
        return cls._decode(stored, {})

    @classmethod
    def create(cls, store: BaseStore, /, **fields: Any) -> Self:
        """Validate the fields and create the thread in the store."""
        draft = cls(**fields)
        return cls._from(store.create_thread(draft._encoded_metadata(store.limits)))

    @classmethod
    async def acreate(cls, store: BaseStore, /, **fields: Any) -> Self:
        """Async twin of `create`."""
        draft = cls(**fields)
        stored = await store.acreate_thread(draft._encoded_metadata(store.limits))
        return cls._from(stored)

    @classmethod
    def retrieve(cls, store: BaseStore, thread_id: str, /) -> Self:
        """Read a thread; raises `ThreadNotFoundError` or `RecordClassError`."""
        _check_str(thread_id, "thread_id")
        return cls._from(store.get_thread(thread_id))

    @classmethod
    async def aretrieve(cls, store: BaseStore, thread_id: str, /) -> Self:
        """Async twin of `retrieve`."""
        _check_str(thread_id, "thread_id")
        return cls._from(await store.aget_thread(thread_id))

    def update(self, store: BaseStore, /, **changes: Any) -> Self:
        """Write only the given changes; returns the updated thread.

        ``metadata={...}`` merges free-form entries; a ``None`` value removes a key.
        """
        _, patch = self._patch(changes, store.limits)
        return self._from(store.update_thread(self.id, patch))

    async def aupdate(self, store: BaseStore, /, **changes: Any) -> Self:
        """Async twin of `update`."""
        _, patch = self._patch(changes, store.limits)
        return self._from(await store.aupdate_thread(self.id, patch))

    def delete(self, store: BaseStore, /) -> None:
        """Delete the thread and all of its messages."""
        store.delete_thread(self.id)

    async def adelete(self, store: BaseStore, /) -> None:
        """Async twin of `delete`."""
        await store.adelete_thread(self.id)

    @classmethod
    def _query(
        cls,
        *,
        limits: MetadataLimits,
        typed: Mapping[str, Any],
        metadata: Mapping[str, str] | None,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int,
    ) -> ThreadQuery:
        _check_listing(order, {"after": after, "before": before}, limit)
        return ThreadQuery(
            metadata=cls._filters(typed, metadata, limits),
            classes=cls._classes(),
            after=after,
            before=before,
            order=order,
            limit=_fetch_limit(limit),
        )

    @classmethod
    def list(
        cls,
        store: BaseStore,
        /,
        *,
        metadata: Mapping[str, str] | None = None,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
        **typed: Any,
    ) -> Page[Self]:
        """List threads of this class (and subclasses), newest first.

        Args:
            store: The store.
            metadata: Free-form metadata equality filters.
            after: A thread id from a previous page's ``last_id``.
            before: A thread id: list the threads before it.
            order: ``desc`` (newest first, default) or ``asc``.
            limit: Page size, 1 to 10,000.
            **typed: Typed field equality filters, e.g. ``assistant_id="asst_..."``.
        """
        query = cls._query(
            limits=store.limits,
            typed=typed,
            metadata=metadata,
            after=after,
            before=before,
            order=order,
            limit=limit,
        )
        rows = store.list_threads(query)
        return Page.of_rows(
            rows, limit, cls._from, toward_start=_backwards(after, before)
        )

    @classmethod
    async def alist(
        cls,
        store: BaseStore,
        /,
        *,
        metadata: Mapping[str, str] | None = None,
        after: str | None = None,
        before: str | None = None,
        order: Order = "desc",
        limit: int = 20,
        **typed: Any,
    ) -> Page[Self]:
        """Async twin of `list`."""
        query = cls._query(
            limits=store.limits,
            typed=typed,
            metadata=metadata,
            after=after,
            before=before,
            order=order,
            limit=limit,
        )
        rows = await store.alist_threads(query)
        return Page.of_rows(
            rows, limit, cls._from, toward_start=_backwards(after, before)
        )


class ChatCompletionThread(BaseThread):
    """A thread whose runs are completed through Chat Completions by its assistant."""

    record_class: ClassVar[str] = "langchain_retro.ChatCompletionThread"

    assistant_id: str
    """The assistant whose model, settings and instructions runs use."""
    hwm: str | None = None
    """High-water mark: the id of the last message a run answered; ``None`` if none."""
    chat_completion_model: str | None = None
    """Per-thread model override; ``None`` uses the assistant's model."""


# --- messages ------------------------------------------------------------------------


class BaseMessage(_Record):
    """A stored message: a LangChain message plus typed fields kept in metadata.

    Not to be confused with ``langchain_core.messages.BaseMessage``, which it wraps as
    its ``message`` field. Subclass it to add typed fields (a rating, a source...).
    """

    _is_kind_base: ClassVar[bool] = True
    _registry: ClassVar[dict[str, type[_Record]]] = {}
    _kind: ClassVar[str] = "message"
    _unmarked: ClassVar[str | None] = "langchain_retro.ThreadMessage"
    _native: ClassVar[frozenset[str]] = frozenset(
        {
            "id",
            "created_at",
            "metadata",
            "thread_id",
            "message",
            *_WRITTEN_BY_RUNS,
        }
    )

    thread_id: str
    """The thread the message belongs to."""
    message: LCBaseMessage
    """The LangChain message; its ``id`` is the message's id once stored."""
    run_id: str | None = None
    """The run that wrote the message (its reply, its tool calls and results);
    ``None`` for other writes. Read-only: runs write it."""
    assistant_id: str | None = None
    """The assistant of the run that wrote the message; ``None`` for other writes.
    Read-only: runs write it."""

    @property
    def role(self) -> str:
        """The Assistants-style role: ``user``, ``assistant``, ``system``, ``tool``."""
        return _messages.role_of(self.message)

    @classmethod
    def _from(cls, stored: StoredMessage) -> Self:
        return cls._decode(
            stored,
            {
                "thread_id": stored.thread_id,
                "message": _messages.from_payload(
                    stored.payload, stored.id, thread_id=stored.thread_id
                ),
                "run_id": stored.run_id,
                "assistant_id": stored.assistant_id,
            },
        )

    def _new(self, limits: MetadataLimits) -> NewMessage:
        """The row to append: the caller's id (record's or message's) is kept."""
        given = [name for name in _WRITTEN_BY_RUNS if getattr(self, name) is not None]
        if given:
            raise RetroValueError(
                f"{type(self).__name__} for thread {self.thread_id!r} sets "
                f"{' and '.join(given)}, which only a run writes: leave "
                f"{'them' if len(given) > 1 else 'it'} out (run the thread with "
                "ThreadRunner to have a run write its messages)."
            )
        own, inner = self.id or None, self.message.id or None
        if own is not None and inner is not None and own != inner:
            raise RetroValueError(
                f"{type(self).__name__} for thread {self.thread_id!r} has id {own!r} "
                f"but its message has id {inner!r}: give one id, or the same in both."
            )
        message_id = own if own is not None else inner
        if message_id is not None:
            check_message_id(message_id, self.thread_id)
        return NewMessage(
            role=_messages.role_of(self.message),
            payload=_messages.to_payload(self.message),
            metadata=self._encoded_metadata(limits),
            id=message_id,
        )

    @classmethod
    def create(cls, store: BaseStore, /, **fields: Any) -> Self:
        """Validate the fields and append the message to its thread.

        The message keeps the id it is given (``id=...``, or its LangChain message's
        ``id``); without one the store assigns a ``msg_...`` id. An id already in the
        thread raises `MessageIdConflictError` and nothing is written.
        """
        draft = cls(**fields)
        (stored,) = store.add_messages(draft.thread_id, [draft._new(store.limits)])
        return cls._from(stored)

    @classmethod
    async def acreate(cls, store: BaseStore, /, **fields: Any) -> Self:
        """Async twin of `create`."""
        draft = cls(**fields)
        (stored,) = await store.aadd_messages(
            draft.thread_id, [draft._new(store.limits)]
        )
        return cls._from(stored)

    @classmethod
    def create_if_idle(cls, store: BaseStore, /, **fields: Any) -> Self:
        """`create`, refused while a run keeps the thread busy, as OpenAI refused it.

        Raises:
            ThreadBusyError: A run on the thread is active or waits for tool
                outputs (its id is the error's ``run_id``); nothing is written.
        """
        draft = cls(**fields)
        (stored,) = store.add_messages_if_idle(
            draft.thread_id, [draft._new(store.limits)]
        )
        return cls._from(stored)

    @classmethod
    async def acreate_if_idle(cls, store: BaseStore, /, **fields: Any) -> Self:
        """Async twin of `create_if_idle`."""
        draft = cls(**fields)
        (stored,) = await store.aadd_messages_if_idle(
            draft.thread_id, [draft._new(store.limits)]
        )
        return cls._from(stored)

    @classmethod
    def retrieve(cls, store: BaseStore, thread_id: str, message_id: str, /) -> Self:
        """Read a message of a thread; raises `MessageNotFoundError`."""
        _check_str(thread_id, "thread_id")
        _check_str(message_id, "message_id")
        return cls._from(store.get_message(thread_id, message_id))

    @classmethod
    async def aretrieve(
        cls, store: BaseStore, thread_id: str, message_id: str, /
    ) -> Self:
        """Async twin of `retrieve`."""
        _check_str(thread_id, "thread_id")
        _check_str(message_id, "message_id")
        return cls._from(await store.aget_message(thread_id, message_id))

    def update(self, store: BaseStore, /, **changes: Any) -> Self:
        """Write only the given typed fields or metadata; the message stays as is."""
        _check_fixed(self, changes)
        _, patch = self._patch(changes, store.limits)
        return self._from(store.update_message(self.thread_id, self.id, patch))

    async def aupdate(self, store: BaseStore, /, **changes: Any) -> Self:
        """Async twin of `update`."""
        _check_fixed(self, changes)
        _, patch = self._patch(changes, store.limits)
        return self._from(await store.aupdate_message(self.thread_id, self.id, patch))

    def delete(self, store: BaseStore, /) -> None:
        """Delete the message from its thread."""
        store.delete_message(self.thread_id, self.id)

    async def adelete(self, store: BaseStore, /) -> None:
        """Async twin of `delete`."""
        await store.adelete_message(self.thread_id, self.id)

    @classmethod
    def _is_own(cls, stored: StoredMessage) -> bool:
        """Whether a listing through this class returns the row (class marker)."""
        if cls._is_base():
            return True
        marker = stored.metadata.get(CLASS_KEY, cls._unmarked)
        target = cls._registry.get(marker) if marker is not None else None
        return target is not None and issubclass(target, cls)

    @classmethod
    def list(
        cls,
        store: BaseStore,
        thread_id: str,
        /,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        limit: int = 20,
    ) -> Page[Self]:
        """List a thread's messages of this class (and subclasses), in thread order.

        Oldest first by default. A thread may hold messages of several classes (a
        history writes plain `ThreadMessage` ones): a subclass lists only its own,
        `BaseMessage` lists them all.
        """
        _check_str(thread_id, "thread_id")
        scan = _MessageScan(cls, after=after, before=before, order=order, limit=limit)
        while (request := scan.next_request()) is not None:
            scan.take(store.list_messages(thread_id, **request))
        return scan.page()

    @classmethod
    async def alist(
        cls,
        store: BaseStore,
        thread_id: str,
        /,
        *,
        after: str | None = None,
        before: str | None = None,
        order: Order = "asc",
        limit: int = 20,
    ) -> Page[Self]:
        """Async twin of `list`."""
        _check_str(thread_id, "thread_id")
        scan = _MessageScan(cls, after=after, before=before, order=order, limit=limit)
        while (request := scan.next_request()) is not None:
            scan.take(await store.alist_messages(thread_id, **request))
        return scan.page()


def _check_fixed(message: BaseMessage, changes: Mapping[str, Any]) -> None:
    """Refuse changes to what a stored message keeps for good."""
    if "message" in changes or "thread_id" in changes:
        raise MetadataError(
            f"A stored message's content and thread cannot change ({message.id!r}); "
            "delete it and add a new one."
        )
    fixed = sorted(set(_WRITTEN_BY_RUNS) & set(changes))
    if fixed:
        raise MetadataError(
            f"Cannot update {fixed} of message {message.id!r}: the run that wrote "
            "the message records them, and they stay as written."
        )


M = TypeVar("M", bound=BaseMessage)


class _MessageScan(Generic[M]):
    """A message listing through a class: reads on until a page of its messages.

    Stores list a thread's messages whatever their class, so a page through a
    subclass may take several reads, each continuing from the last row read. Listing
    through `BaseMessage` takes one read, as every row counts.
    """

    def __init__(
        self,
        cls: type[M],
        *,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int,
    ) -> None:
        _check_listing(order, {"after": after, "before": before}, limit)
        self.cls = cls
        self.fetch = _fetch_limit(limit)
        self.limit = limit
        self.after, self.before, self.order = after, before, order
        # Stores read an ascending page before a cursor backwards from the cursor,
        # so that it is the page nearest it.
        self.backwards = before is not None and order == "asc"
        self.found: list[StoredMessage] = []
        self.done = False

    def next_request(self) -> dict[str, Any] | None:
        """The next read's keyword arguments; ``None`` once the page is complete."""
        if self.done:
            return None
        return {
            "after": self.after,
            "before": self.before,
            "order": self.order,
            "limit": self.fetch,
        }

    def take(self, rows: Sequence[StoredMessage]) -> None:
        """Keep the rows of the class and move the cursor past the rows read."""
        own = [row for row in rows if self.cls._is_own(row)]
        if self.backwards:
            self.found[:0] = own
        else:
            self.found.extend(own)
        self.done = len(rows) < self.fetch or len(self.found) >= self.fetch
        if not rows:
            return
        if self.backwards:
            self.before = rows[0].id
        elif self.order == "asc":
            self.after = rows[-1].id
        else:
            self.before = rows[-1].id

    def page(self) -> Page[M]:
        """The page, rebuilding only its own rows."""
        return Page.of_rows(
            self.found, self.limit, self.cls._from, toward_start=self.backwards
        )


class ThreadMessage(BaseMessage):
    """The ready-made stored message, usable as is."""

    record_class: ClassVar[str] = "langchain_retro.ThreadMessage"
