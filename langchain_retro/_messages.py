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

from langchain_retro.errors import CorruptDataError, MessageConversionError

__all__ = [
    "ROLES",
    "MessageCache",
    "check_payload",
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
    if kind is None and not isinstance(message, BaseMessage):
        raise MessageConversionError(
            f"Cannot store {message!r}: a {type(message).__name__} is not a LangChain "
            "message. Pass messages (HumanMessage, AIMessage, ...)."
        )
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
        left out: it is the row's id (the caller's, or one the store assigns).

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
        text = json.dumps(
            data, ensure_ascii=False, separators=(",", ":"), default=_not_json
        )
        text.encode()  # a lone surrogate is not text any database can store
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise MessageConversionError(
            f"Cannot store this {type(message).__name__}: {exc}. Keep message fields "
            "(content, additional_kwargs, response_metadata) to JSON values and "
            "valid Unicode text."
        ) from exc
    return text


def to_payloads(messages: Sequence[BaseMessage]) -> list[tuple[str, str]]:
    """Serialise messages to (role, payload) pairs; all are checked before any write."""
    return [(role_of(m), to_payload(m)) for m in messages]


def _corrupt(message_id: str, thread_id: str | None, why: str) -> CorruptDataError:
    where = f" of thread {thread_id!r}" if thread_id is not None else ""
    return CorruptDataError(
        f"Stored message {message_id!r}{where} no longer rebuilds: {why}. It was "
        "edited outside langchain-retro; fix or delete that row (the thread's other "
        "messages are intact).",
        object_id=message_id,
        thread_id=thread_id,
    )


def from_payload(
    payload: str, message_id: str, *, thread_id: str | None = None
) -> BaseMessage:
    """Rebuild a message from its stored JSON text.

    Only the message classes of the allowlist are ever built; stored data cannot name
    a class to import.

    Args:
        payload: The stored JSON text.
        message_id: The store's id of the message, set as the message's ``id``.
        thread_id: The message's thread, named in the error if the row is corrupt.

    Raises:
        CorruptDataError: If the payload is not a message of an allowed type (not
            JSON, not an object, a type outside the allowlist, or fields that do not
            validate): the row was edited outside langchain-retro.
    """
    try:
        data = pydantic_core.from_json(payload)  # ~3x faster than json.loads here
    except (ValueError, TypeError) as exc:
        raise _corrupt(message_id, thread_id, f"it is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise _corrupt(
            message_id, thread_id, f"it is a JSON {type(data).__name__}, not an object"
        )
    kind = data.pop("type", None)
    cls = _ALLOWED.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise _corrupt(
            message_id,
            thread_id,
            f"its type {kind!r} is not one of {sorted(_ALLOWED)}",
        )
    data["id"] = message_id
    try:
        return cls.__pydantic_validator__.validate_python(data)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise _corrupt(
            message_id, thread_id, f"it is not a valid {cls.__name__} ({exc})"
        ) from exc
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        # LangChain's own "before" validators read fields they expect to find
        # (a tool message's tool_call_id, a tool call's keys) and fail with these.
        raise _corrupt(
            message_id,
            thread_id,
            f"it is not a valid {cls.__name__} ({type(exc).__name__}: {exc})",
        ) from exc


_TEXT_ONLY = frozenset({"human", "ai", "system"})
"""Types whose class needs nothing but its text: ``{"type": ..., "content": TEXT}``
rebuilds for any text (a tool, chat or function message needs more fields)."""


def check_payload(
    payload: str, message_id: str, *, thread_id: str | None = None
) -> None:
    """Check that a payload rebuilds, as `from_payload` would, without rebuilding it.

    Building a message costs far more than reading its JSON, so the common payload
    that holds only the type and the text of a message that needs nothing else is
    accepted on sight; any other payload is rebuilt by `from_payload`. The two accept
    exactly the same payloads.

    Raises:
        CorruptDataError: As `from_payload`.
    """
    try:
        data = pydantic_core.from_json(payload)
    except ValueError:
        data = None  # from_payload names the error
    if type(data) is dict and data.keys() == {"type", "content"}:
        kind, content = data["type"], data["content"]
        if isinstance(kind, str) and kind in _TEXT_ONLY and type(content) is str:
            return
    from_payload(payload, message_id, thread_id=thread_id)


class MessageCache:
    """Messages rebuilt from stored rows, by id and payload; least recently used first.

    A message is a pure function of its id and its stored payload, so a message
    rebuilt once stands for every row with that id and payload: reading a long
    thread again still reads every row, but rebuilds only the new ones. Ids alone
    are not enough: callers choose message ids, so one id can name different
    messages in two threads, or a deleted message and the one added after it under
    the same id. An entry whose payload differs from the row is rebuilt and
    replaced. Thread-safe.
    """

    def __init__(self, size: int) -> None:
        """Keep up to ``size`` messages; 0 turns the cache off."""
        self.size = size
        self._items: OrderedDict[str, tuple[str, BaseMessage]] = OrderedDict()
        self._lock = threading.Lock()

    def rebuild(
        self,
        rows: Sequence[tuple[str, str]],
        *,
        copy: bool = False,
        thread_id: str | None = None,
    ) -> list[BaseMessage]:
        """Rebuild ``(id, payload)`` rows into messages, in order, cached where it can.

        Args:
            rows: Stored messages' ids and payloads.
            copy: Whether to hand out shallow copies, so that a caller reassigning a
                message's field cannot change what later reads return.
            thread_id: The rows' thread, named in the error if a row is corrupt.

        Raises:
            CorruptDataError: If a row no longer rebuilds (see `from_payload`).
        """
        if self.size == 0:
            return [
                from_payload(payload, message_id, thread_id=thread_id)
                for message_id, payload in rows
            ]
        out: list[BaseMessage] = []
        with self._lock:
            items = self._items
            for message_id, payload in rows:
                entry = items.get(message_id)
                if entry is None or entry[0] != payload:
                    message = from_payload(payload, message_id, thread_id=thread_id)
                    items[message_id] = (payload, message)
                    items.move_to_end(message_id)  # a replaced entry kept its place
                else:
                    message = entry[1]
                    items.move_to_end(message_id)
                out.append(message)
            while len(items) > self.size:
                items.popitem(last=False)
        return [m.model_copy() for m in out] if copy else out
