"""LangChain messages <-> the stored form.

A message is stored as a JSON object of its non-default fields plus its ``type``.
Reading rebuilds it from an allowlist of message classes keyed by that ``type``;
``langchain_core.load`` is never used, so stored data cannot name a class to import.
Streaming aggregates (``AIMessageChunk`` and friends) are stored as the complete message
class they add up to.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import pydantic_core
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)
from pydantic import ValidationError

from langchain_retro.errors import MessageConversionError

__all__ = [
    "ROLES",
    "MessageCache",
    "from_payload",
    "role_of",
    "to_payload",
    "to_payloads",
]

logger = logging.getLogger(__name__)

_ALLOWED: dict[str, type[BaseMessage]] = {
    "human": HumanMessage,
    "ai": AIMessage,
    "system": SystemMessage,
    "tool": ToolMessage,
    "chat": ChatMessage,
    "function": FunctionMessage,
}
"""The message classes that can be stored and rebuilt, by their ``type``."""

_CHUNKS: dict[type[BaseMessage], str] = {
    AIMessageChunk: "ai",
    HumanMessageChunk: "human",
    SystemMessageChunk: "system",
    ToolMessageChunk: "tool",
    ChatMessageChunk: "chat",
    FunctionMessageChunk: "function",
}

ROLES: dict[str, str] = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "function",
}
"""Assistants-style roles of the stored message types (``chat`` keeps its own)."""

_SKIP = frozenset({"type", "id"})


def _defaults(cls: type[BaseMessage]) -> dict[str, Any]:
    return {
        name: info.get_default(call_default_factory=True)
        for name, info in cls.model_fields.items()
        if name not in _SKIP and not info.is_required()
    }


_DEFAULTS = {kind: _defaults(cls) for kind, cls in _ALLOWED.items()}
"""Default field values by type: fields at their default are not stored."""


def _type_of(message: BaseMessage) -> str:
    kind = _CHUNKS.get(type(message))
    if kind is not None:
        return kind
    kind = message.type
    if kind not in _ALLOWED or not isinstance(message, _ALLOWED[kind]):
        allowed = ", ".join(cls.__name__ for cls in _ALLOWED.values())
        raise MessageConversionError(
            f"Cannot store a {type(message).__name__} (type {kind!r}): only {allowed} "
            "and their chunks can be stored. Convert it to one of those first."
        )
    cls = _ALLOWED[kind]
    if type(message) is not cls:
        # Only the allowed class's fields are stored: any others would be lost.
        extra = set(type(message).model_fields).difference(cls.model_fields)
        if extra:
            raise MessageConversionError(
                f"Cannot store a {type(message).__name__}: it adds fields "
                f"{sorted(extra)} to {cls.__name__}, which would be lost. Store a "
                f"{cls.__name__} (put extra data in additional_kwargs)."
            )
    return kind


def role_of(message: BaseMessage) -> str:
    """The Assistants-style role of a message (``user``, ``assistant``, ...)."""
    if isinstance(message, ChatMessage | ChatMessageChunk):
        return message.role
    return ROLES[_type_of(message)]


def _not_json(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def to_payload(message: BaseMessage) -> str:
    """Serialise a message to its stored JSON text.

    Args:
        message: Any message of an allowed type, or a chunk of one.

    Returns:
        JSON text holding the message's type and its non-empty fields; its ``id`` is
        left out, since the store gives every message its own id.

    Raises:
        MessageConversionError: If the type is not allowed or a field is not JSON.
    """
    kind = _type_of(message)
    data: dict[str, Any] = {"type": kind}
    defaults = _DEFAULTS[kind]
    for name in _ALLOWED[kind].model_fields:
        if name in _SKIP:
            continue
        value = getattr(message, name, None)
        if name in defaults and value == defaults[name]:
            continue
        data[name] = value
    if "artifact" in data:
        try:
            json.dumps(data["artifact"])
        except (TypeError, ValueError):
            logger.warning(
                "Not storing the artifact of a ToolMessage (tool_call_id=%s): "
                "a %s is not JSON-serialisable.",
                getattr(message, "tool_call_id", None),
                type(data["artifact"]).__name__,
            )
            del data["artifact"]
    try:
        return json.dumps(
            data, ensure_ascii=False, separators=(",", ":"), default=_not_json
        )
    except (TypeError, ValueError) as exc:
        raise MessageConversionError(
            f"Cannot store this {type(message).__name__}: {exc}. Keep message fields "
            "(content, additional_kwargs, response_metadata) to JSON values."
        ) from exc


def to_payloads(messages: Sequence[BaseMessage]) -> list[tuple[str, str]]:
    """Serialise messages to (role, payload) pairs; all are checked before any write."""
    return [(role_of(m), to_payload(m)) for m in messages]


def from_payload(payload: str, message_id: str) -> BaseMessage:
    """Rebuild a message from its stored JSON text.

    Args:
        payload: The stored JSON text.
        message_id: The store's id of the message, set as the message's ``id``.

    Raises:
        MessageConversionError: If the stored type is not in the allowlist, or the
            payload is not a message of that type (not JSON, not an object, or fields
            that do not validate).
    """
    try:
        data = pydantic_core.from_json(payload)  # ~3x faster than json.loads here
    except ValueError as exc:
        raise MessageConversionError(
            f"Stored message {message_id!r} is not JSON ({exc}); it was not written "
            "by langchain-retro."
        ) from exc
    if not isinstance(data, dict):
        raise MessageConversionError(
            f"Stored message {message_id!r} is a JSON {type(data).__name__}, not an "
            "object; it was not written by langchain-retro."
        )
    kind = data.pop("type", None)
    cls = _ALLOWED.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageConversionError(
            f"Stored message {message_id!r} has type {kind!r}, which is not one of "
            f"{sorted(_ALLOWED)}; it was not written by langchain-retro."
        )
    data["id"] = message_id
    try:
        return cls.__pydantic_validator__.validate_python(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise MessageConversionError(
            f"Stored message {message_id!r} is not a valid {cls.__name__}: {exc}"
        ) from exc


class MessageCache:
    """Messages rebuilt from stored rows, by id; the least recently used go first.

    A stored message's content never changes (only its metadata can), and ids are
    never reused, so a message rebuilt once stands for its row for good: reading a
    long thread again still reads every row, but rebuilds only the new ones.
    Thread-safe.
    """

    def __init__(self, size: int) -> None:
        """Keep up to ``size`` messages; 0 turns the cache off."""
        self.size = size
        self._items: OrderedDict[str, BaseMessage] = OrderedDict()
        self._lock = threading.Lock()

    def rebuild(
        self, rows: Sequence[tuple[str, str]], *, copy: bool = False
    ) -> list[BaseMessage]:
        """Rebuild ``(id, payload)`` rows into messages, in order, cached where it can.

        Args:
            rows: Stored messages' ids and payloads.
            copy: Whether to hand out shallow copies, so that a caller reassigning a
                message's field cannot change what later reads return.
        """
        if self.size == 0:
            return [from_payload(payload, message_id) for message_id, payload in rows]
        out: list[BaseMessage] = []
        with self._lock:
            items = self._items
            for message_id, payload in rows:
                message = items.get(message_id)
                if message is None:
                    message = from_payload(payload, message_id)
                    items[message_id] = message
                else:
                    items.move_to_end(message_id)
                out.append(message)
            while len(items) > self.size:
                items.popitem(last=False)
        return [m.model_copy() for m in out] if copy else out
