"""The plain Assistants API as the store sees it: calls, escaping and decoding.

`AssistantsAPIStore`'s ``assistants`` protocol writes each store operation as a
generator (`Op`) that yields the calls it needs, a request to the server (`Http`)
or a call of the local index store (`OnIndex`), and gets each one's answer back;
the store drives it with the sync or the async client. So the logic is written
once, and the I/O twice in a few lines.

Metadata keys are escaped on the wire: the store's key ``k`` is sent as ``~k``. A
server keeps keys of its own (``langchain-retro serve`` reserves ``retro_...`` and
the names of its records' typed fields), and other tools may write theirs; the
store reads only its own (``~...``) entries and sends the others back unchanged.
So its keys may be one character shorter than the wire's (`plain_limits`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from langchain_retro._metadata import MetadataLimits, unencodable_error
from langchain_retro.errors import RetroError
from langchain_retro.stores._wire import decode_message
from langchain_retro.stores.base import (
    BaseStore,
    StoredAssistant,
    StoredMessage,
    StoredThread,
)

__all__ = [
    "ESCAPE",
    "PAGE",
    "Call",
    "Http",
    "OnIndex",
    "Op",
    "assistant_of",
    "escaped",
    "foreign",
    "message_of",
    "plain_limits",
    "seg",
    "thread_of",
    "unescaped",
]

T = TypeVar("T")

ESCAPE = "~"
"""The prefix of the store's metadata keys on the wire."""

PAGE = 100
"""The largest page the Assistants API lists (``limit`` is 1 to 100)."""


@dataclass(frozen=True)
class Http:
    """One request to the server."""

    method: Literal["get", "post", "delete"]
    """The HTTP method."""
    path: str
    """The path under the client's ``base_url`` (``/threads/...``)."""
    body: dict[str, Any] | None = None
    """The JSON body."""
    params: dict[str, Any] = field(default_factory=dict)
    """The query."""
    missing: Callable[[], RetroError] | None = None
    """The error a 404 (or a 405) means (``ThreadNotFoundError(...)``)."""
    thread_id: str | None = None
    """The thread a 400 "run is active" names, for `ThreadBusyError`."""


@dataclass(frozen=True)
class OnIndex:
    """One call of the local index store, sync and async."""

    call: Callable[[BaseStore], Any]
    """The sync call."""
    acall: Callable[[BaseStore], Awaitable[Any]]
    """The async call."""


Call = Http | OnIndex
Op = Generator[Call, Any, T]
"""A store operation: yields calls, gets their answers, returns its result."""


def seg(object_id: str) -> str:
    """An id as one path segment.

    Raises:
        RetroValueError: If the id is not valid Unicode text.
    """
    try:
        return quote(object_id, safe="")
    except UnicodeEncodeError as exc:
        raise unencodable_error(exc) from exc


def plain_limits(limits: MetadataLimits) -> MetadataLimits:
    """The store's limits on a wire with ``limits``: keys one shorter (`ESCAPE`)."""
    length = limits.max_key_length
    return limits.model_copy(
        update={"max_key_length": None if length is None else length - 1}
    )


def escaped(metadata: Mapping[str, str]) -> dict[str, str]:
    """The store's metadata as the wire keeps it."""
    return {ESCAPE + key: value for key, value in metadata.items()}


def unescaped(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The store's entries of the wire's metadata."""
    return {
        key[len(ESCAPE) :]: value
        for key, value in (metadata or {}).items()
        if key.startswith(ESCAPE)
    }


def foreign(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The wire's entries that are not the store's (kept as they are)."""
    return {k: v for k, v in (metadata or {}).items() if not k.startswith(ESCAPE)}


def assistant_of(data: Mapping[str, Any]) -> StoredAssistant:
    """An ``assistant`` object as the store's `StoredAssistant`."""
    return StoredAssistant(
        id=data["id"],
        created_at=data["created_at"],
        metadata=unescaped(data.get("metadata")),
        name=data.get("name"),
        description=data.get("description"),
        instructions=data.get("instructions"),
        model=data.get("model") or "",
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
    )


def thread_of(data: Mapping[str, Any]) -> StoredThread:
    """A ``thread`` object as the store's `StoredThread`."""
    return StoredThread(
        id=data["id"],
        created_at=data["created_at"],
        metadata=unescaped(data.get("metadata")),
    )


def message_of(data: Mapping[str, Any]) -> StoredMessage:
    """A ``thread.message`` object as the store's `StoredMessage`."""
    return decode_message(data, unescaped(data.get("metadata")))
