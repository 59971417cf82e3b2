"""The wire form of the data plane: messages as the Assistants API carries them.

Shared by `AssistantsAPIStore` (the client) and the server's ``/v1/retro`` routes,
so both sides encode and decode with one codec.

A message crosses the wire as a ``thread.message``: role ``user`` or ``assistant``
and text content. A human's or an AI's plain text needs nothing more. Whatever the
wire has no field for (tool calls and results, system messages, ``name``, usage,
response metadata, non-text content, the id of the message a reply answers) travels
in the message's metadata under `MESSAGE_KEY`, as compact JSON spanning
``lc_message``, ``lc_message#1``... when it is longer than a metadata value may be.
Reading rebuilds the stored form from the allowlist of message types
(``langchain_retro._messages``); ``langchain_core.load`` is never used.

Errors cross the ``/v1/retro`` routes as OpenAI-shaped bodies with a ``retro`` entry
naming the class of the tree (`langchain_retro.errors`) and carrying its attributes,
so the client raises the error the server's store raised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple, cast
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field

from langchain_retro import errors as _errors
from langchain_retro._messages import ROLES, from_payload
from langchain_retro._metadata import (
    MetadataLimits,
    MetadataPatch,
    _pieces,
    check_limits,
    field_keys,
    unencodable_error,
)
from langchain_retro.errors import (
    MessageConversionError,
    MetadataError,
    MetadataLimitError,
    RetroError,
)
from langchain_retro.stores.base import (
    NewMessage,
    NewRun,
    Order,
    RunUpdate,
    StoredMessage,
)

__all__ = [
    "CARRIED",
    "MESSAGE_KEY",
    "AddMessagesBody",
    "BeginRunBody",
    "BulkAddBody",
    "FinishRunBody",
    "ListBody",
    "WireMessage",
    "decode_error",
    "decode_message",
    "encode_error",
    "message_object",
    "new_message",
    "path_id",
    "plain_message",
    "quote_id",
    "stricter",
    "wire_message",
]

MESSAGE_KEY = "lc_message"
"""The message metadata key (with its ``#N`` pieces) holding what the wire lacks."""

_WIRE_ROLE = {"ai": "assistant"}
"""The wire role of a stored message type; every other type is sent as ``user``."""

_DEFAULT_ROLE = ROLES
"""The role a stored message of each type has unless it says otherwise."""

CARRIED = ("_id", "_run_id", "_assistant_id", "_created_at")
"""Extras a wire without those fields carries (the plain Assistants API's
``CreateMessage`` takes no id, run, assistant or time): the caller's id, the run and
assistant that wrote the message, and a copy's creation time."""


class WireMessage(BaseModel):
    """A message to write, as the wire carries it (a ``CreateMessage`` and more)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["user", "assistant"]
    """The wire's role."""
    content: str
    """The message's text."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """The caller's metadata and the `MESSAGE_KEY` entries."""
    id: str | None = None
    """The caller's id for the message; ``None`` lets the server assign one."""
    created_at: int | None = None
    """Creation time kept by copies; ``None`` for now."""
    run_id: str | None = None
    """The run writing the message."""
    assistant_id: str | None = None
    """The assistant of that run."""


# --- messages: the codec -----------------------------------------------------------


def _extras_of(
    message: NewMessage | StoredMessage, carried: Mapping[str, Any] | None = None
) -> tuple[str, str, dict[str, Any]]:
    """The wire role, the text and the extras (what the wire has no field for).

    ``carried`` adds entries (`CARRIED`) a wire without those fields keeps here.
    """
    try:
        data = json.loads(message.payload)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        # Opaque to this codec: kept whole, so it reads back byte for byte.
        return "user", "", {"_raw": message.payload, "_role": message.role}
    kind = data["type"]
    content = data.get("content")
    extras = dict(data)
    text = ""
    if isinstance(content, str):
        text = content
        del extras["content"]
    role = _WIRE_ROLE.get(kind, "user")
    if kind in ("human", "ai") and len(extras) == 1:
        extras = {}
    expected = data.get("role") if kind == "chat" else _DEFAULT_ROLE.get(kind)
    if message.role != expected:
        extras["_role"] = message.role
    if message.reply_to is not None:
        extras["_reply_to"] = message.reply_to
    extras.update({k: v for k, v in (carried or {}).items() if v is not None})
    return role, text, extras


def _wire_metadata(
    metadata: Mapping[str, str], extras: Mapping[str, Any], limits: MetadataLimits
) -> dict[str, str]:
    for key in metadata:
        if key == MESSAGE_KEY or key.startswith(f"{MESSAGE_KEY}#"):
            raise MetadataError(
                f"Message metadata key {key!r} is where the wire keeps what it has "
                "no field for; choose another key.",
                field=key,
            )
    out = dict(metadata)
    if not extras:
        return out
    text = json.dumps(extras, ensure_ascii=False, separators=(",", ":"))
    out.update(_pieces(MESSAGE_KEY, text, limits))
    return out


def _check_wire_limits(
    metadata: Mapping[str, str], limits: MetadataLimits, where: str
) -> None:
    try:
        check_limits(metadata, limits)
    except MetadataLimitError as exc:
        if exc.field != MESSAGE_KEY:
            raise
        pieces = len(field_keys(MESSAGE_KEY, metadata))
        raise MetadataLimitError(
            f"{where} does not fit the wire's metadata limits: what the wire has no "
            f"field for (tool calls, tool results, name, usage, non-text content...) "
            f"takes {pieces} metadata value(s) of {limits.max_value_length} "
            f"characters under {MESSAGE_KEY!r}, and the message's metadata would "
            f"then need {len(metadata)} keys where {limits.max_keys} are allowed. "
            "Shorten the message's extras or metadata, or lift the limits on both "
            "sides (`langchain-retro serve --metadata-limits off` and "
            "AssistantsAPIStore(limits=UNLIMITED)). Nothing was written.",
            field="message",
            limit=exc.limit,
            size=exc.size,
        ) from exc


def wire_message(
    message: NewMessage, limits: MetadataLimits, *, where: str = "A message"
) -> WireMessage:
    """A message to write, in wire form, checked against ``limits``.

    Raises:
        MetadataLimitError: If it does not fit, naming the field, limit and size.
        MetadataError: If the caller's metadata uses `MESSAGE_KEY`.
        RetroValueError: If the payload or metadata is not valid Unicode text.
    """
    role, text, extras = _extras_of(message)
    metadata = _wire_metadata(message.metadata, extras, limits)
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise unencodable_error(exc) from exc
    _check_wire_limits(metadata, limits, where)
    return WireMessage(
        role=role,  # type: ignore[arg-type]
        content=text,
        metadata=metadata,
        id=message.id,
        created_at=message.created_at,
        run_id=message.run_id,
        assistant_id=message.assistant_id,
    )


class _Rebuilt(NamedTuple):
    role: str
    payload: str
    metadata: dict[str, str]
    reply_to: str | None
    raw: bool
    """Whether the payload was opaque to the codec (kept as text, not a message)."""
    carried: dict[str, Any]
    """The `CARRIED` entries found."""


def _rebuilt(
    role: str, text: str, metadata: Mapping[str, str], object_id: str
) -> _Rebuilt:
    """What a wire message holds, its stored form rebuilt."""
    keys = field_keys(MESSAGE_KEY, metadata)
    free = {k: v for k, v in metadata.items() if k not in keys}
    if not keys:
        kind = "ai" if role == "assistant" else "human"
        payload = json.dumps(
            {"type": kind, "content": text}, ensure_ascii=False, separators=(",", ":")
        )
        return _Rebuilt(role, payload, free, None, False, {})
    try:
        extras = json.loads("".join(metadata[k] for k in keys))
    except ValueError as exc:
        raise MessageConversionError(
            f"Message {object_id!r}: its {MESSAGE_KEY!r} metadata is not JSON; it "
            "was not written by langchain-retro."
        ) from exc
    if not isinstance(extras, dict):
        raise MessageConversionError(
            f"Message {object_id!r}: its {MESSAGE_KEY!r} metadata is not an object."
        )
    reply_to = extras.pop("_reply_to", None)
    carried = {name: extras.pop(name) for name in CARRIED if name in extras}
    stored_role = extras.pop("_role", None)
    raw = extras.pop("_raw", None)
    kind = extras.pop("type", "ai" if role == "assistant" else "human")
    for name, value in (("_reply_to", reply_to), ("_role", stored_role), ("_raw", raw)):
        if value is not None and not isinstance(value, str):
            raise MessageConversionError(
                f"Message {object_id!r}: {name!r} in its {MESSAGE_KEY!r} metadata "
                "is not a string."
            )
    if raw is not None:
        return _Rebuilt(stored_role or role, raw, free, reply_to, True, carried)
    content = extras.pop("content", text)
    if stored_role is None:
        derived = extras.get("role") if kind == "chat" else _DEFAULT_ROLE.get(kind)
        stored_role = derived if isinstance(derived, str) else role
    # The order `to_payload` writes: type, content, then the other fields.
    extras = {"type": kind, "content": content, **extras}
    payload = json.dumps(extras, ensure_ascii=False, separators=(",", ":"))
    return _Rebuilt(stored_role, payload, free, reply_to, False, carried)


def new_message(wire: WireMessage) -> NewMessage:
    """The message a wire message stores: its LangChain message rebuilt.

    Only the allowlisted message types are rebuilt (the payload is checked with
    ``from_payload``), so a request cannot name a class to import. A payload that
    was opaque text to the codec (not a message) is kept as that text, as every
    store keeps a payload it is given.

    Raises:
        MessageConversionError: If the extras do not make an allowed message.
    """
    name = wire.id or "new message"
    rebuilt = _rebuilt(wire.role, wire.content, wire.metadata, name)
    if not rebuilt.raw:
        try:
            from_payload(rebuilt.payload, name)
        except RetroError as exc:
            raise MessageConversionError(str(exc)) from exc
    return NewMessage(
        role=rebuilt.role,
        payload=rebuilt.payload,
        metadata=rebuilt.metadata,
        id=wire.id,
        created_at=wire.created_at,
        run_id=wire.run_id,
        assistant_id=wire.assistant_id,
        reply_to=rebuilt.reply_to,
    )


def message_object(message: StoredMessage) -> dict[str, Any]:
    """A stored message as a ``thread.message`` object, extras in its metadata."""
    role, text, extras = _extras_of(message)
    metadata = _wire_metadata(message.metadata, extras, MetadataLimits())
    return {
        "id": message.id,
        "object": "thread.message",
        "created_at": message.created_at,
        "thread_id": message.thread_id,
        "status": "completed",
        "incomplete_details": None,
        "completed_at": None,
        "incomplete_at": None,
        "role": role,
        "content": [{"type": "text", "text": {"value": text, "annotations": []}}],
        "assistant_id": message.assistant_id,
        "run_id": message.run_id,
        "attachments": [],
        "metadata": metadata,
    }


def decode_message(
    data: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> StoredMessage:
    """A ``thread.message`` object read back as the store's `StoredMessage`.

    Args:
        data: The object.
        metadata: Its metadata as the codec reads it, if not ``data``'s own (the
            plain mode unescapes its keys first).

    Raises:
        MessageConversionError: If a `CARRIED` entry is not of its type.
    """
    text = "".join(
        part["text"]["value"]
        for part in data.get("content") or []
        if part.get("type") == "text"
    )
    if metadata is None:
        metadata = data.get("metadata") or {}
    rebuilt = _rebuilt(str(data["role"]), text, metadata, str(data["id"]))
    carried = rebuilt.carried
    for name in CARRIED:
        kind = int if name == "_created_at" else str
        if name in carried and not isinstance(carried[name], kind):
            raise MessageConversionError(
                f"Message {data['id']!r}: {name!r} in its {MESSAGE_KEY!r} metadata "
                f"is not a{'n int' if kind is int else ' string'}."
            )
    return StoredMessage(
        id=carried.get("_id", data["id"]),
        created_at=carried.get("_created_at", data["created_at"]),
        metadata=rebuilt.metadata,
        thread_id=data["thread_id"],
        role=rebuilt.role,
        payload=rebuilt.payload,
        run_id=data.get("run_id") or carried.get("_run_id"),
        assistant_id=data.get("assistant_id") or carried.get("_assistant_id"),
        reply_to=rebuilt.reply_to,
    )


def plain_message(
    message: NewMessage, limits: MetadataLimits, *, where: str = "A message"
) -> tuple[Literal["user", "assistant"], str, dict[str, str]]:
    """A message for a wire without ids, runs or times: role, text and metadata.

    As `wire_message`, with the caller's id, the run, the assistant and a copy's
    creation time carried in the extras (`CARRIED`).

    Raises:
        MetadataLimitError: If it does not fit, naming the field, limit and size.
        MetadataError: If the caller's metadata uses `MESSAGE_KEY`.
        RetroValueError: If the payload or metadata is not valid Unicode text.
    """
    carried = {
        "_id": message.id,
        "_run_id": message.run_id,
        "_assistant_id": message.assistant_id,
        "_created_at": message.created_at,
    }
    role, text, extras = _extras_of(message, carried)
    metadata = _wire_metadata(message.metadata, extras, limits)
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise unencodable_error(exc) from exc
    _check_wire_limits(metadata, limits, where)
    return ("assistant" if role == "assistant" else "user"), text, metadata


def quote_id(object_id: str) -> str:
    """An id as a path segment of the ``/v1/retro`` routes: percent-encoded twice.

    The server decodes a path once before routing, so an id holding ``/`` (a
    caller's message id may) would split its path; encoded twice it stays one
    segment, and `path_id` decodes it again.
    """
    return quote(quote(object_id, safe=""), safe="")


def path_id(segment: str) -> str:
    """An id back from its path segment (see `quote_id`)."""
    return unquote(segment)


def stricter(one: MetadataLimits, other: MetadataLimits) -> MetadataLimits:
    """The tighter of two limits, limit by limit."""

    def low(a: int | None, b: int | None) -> int | None:
        return b if a is None else a if b is None else min(a, b)

    return MetadataLimits(
        max_keys=low(one.max_keys, other.max_keys),
        max_key_length=low(one.max_key_length, other.max_key_length),
        max_value_length=low(one.max_value_length, other.max_value_length),
    )


# --- request bodies of the /v1/retro routes -------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: MetadataLimits = MetadataLimits()
    """The client store's limits; the server applies these and its own."""


class AddMessagesBody(_Body):
    """``POST /v1/retro/threads/{thread_id}/messages``."""

    messages: list[WireMessage]
    """The messages, in order."""
    thread_patch: MetadataPatch | None = None
    """A patch applied to the thread in the same transaction."""
    hwm_key: str | None = None
    """The thread metadata key a reply in the batch moves."""
    if_idle: bool = False
    """Refuse while a run keeps the thread busy (`BaseStore.add_messages_if_idle`)."""
    scope: dict[str, str] | None = None
    """With ``if_idle``: metadata pairs the thread must hold, else it is not found."""


class BulkAddBody(_Body):
    """``POST /v1/retro/messages:bulk``."""

    batches: list[tuple[str, list[WireMessage]]]
    """``(thread_id, messages)`` pairs."""


class BeginRunBody(_Body):
    """``POST /v1/retro/threads/{thread_id}/runs:begin``."""

    owner: str
    """Who takes the lease."""
    ttl: float
    """Seconds the lease lasts."""
    run: NewRun | None = None
    """The run to create."""
    messages: list[WireMessage] = Field(default_factory=list)
    """The run's input."""
    context_limit: int | None = None
    """How many of the newest messages to read."""
    resume: bool = False
    """Continue a ``requires_action`` run."""


class FinishRunBody(_Body):
    """``POST /v1/retro/threads/{thread_id}/runs/{run_id}/finish``."""

    owner: str
    """The lease's owner."""
    update: RunUpdate
    """The run's new status."""
    messages: list[WireMessage] = Field(default_factory=list)
    """The messages the run wrote."""
    thread_patch: MetadataPatch | None = None
    """A patch applied to the thread."""


class ListBody(BaseModel):
    """The cursors and page of a listing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    after: str | None = None
    """List what comes after this id."""
    before: str | None = None
    """List what comes before this id."""
    order: Order = "asc"
    """Order by creation."""
    limit: int | None = None
    """At most this many."""


# --- errors ---------------------------------------------------------------------------

_ERROR_CLASSES: dict[str, type[RetroError]] = {
    name: cls
    for name in _errors.__all__
    if isinstance(cls := getattr(_errors, name), type) and issubclass(cls, RetroError)
}
_ATTRIBUTES = (
    "object_id",
    "field",
    "limit",
    "size",
    "thread_id",
    "run_id",
    "message_id",
    "status",
    "missing",
    "unknown",
    "assistant_id",
    "thread_count",
    "reason",
)


def encode_error(exc: RetroError) -> dict[str, Any]:
    """The ``retro`` entry of an error body: the class and its attributes."""
    attrs = {name: getattr(exc, name) for name in _ATTRIBUTES if hasattr(exc, name)}
    return {
        "class": type(exc).__name__,
        "message": str(exc),
        "attributes": json.loads(json.dumps(attrs, default=list)),
    }


def _bare(cls: type[RetroError]) -> RetroError:
    """An instance of ``cls`` made without its ``__init__`` (its attributes follow).

    An error that is also an `OSError` (``ThreadBusyError`` is a `TimeoutError`)
    must be made by `OSError`'s ``__new__``: the first built-in base that makes it.
    """
    bases: tuple[Any, ...] = cls.__mro__
    for base in bases:
        try:
            return cast("RetroError", base.__new__(cls))
        except TypeError:
            continue
    raise TypeError(f"cannot make {cls.__name__}")


def decode_error(data: object) -> RetroError | None:
    """The error of the tree an error body's ``retro`` entry names; else ``None``."""
    if not isinstance(data, Mapping):
        return None
    cls = _ERROR_CLASSES.get(str(data.get("class")))
    if cls is None:
        return None
    error = _bare(cls)
    Exception.__init__(error, str(data.get("message", "")))
    attributes = data.get("attributes")
    for name, value in (attributes if isinstance(attributes, Mapping) else {}).items():
        if name in _ATTRIBUTES:
            setattr(error, name, tuple(value) if isinstance(value, list) else value)
    return error
