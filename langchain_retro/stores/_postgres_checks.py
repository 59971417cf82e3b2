"""Pure checks and helpers of `PostgresStore`'s writes: everything before the I/O.

Input is checked here before any statement is built (metadata maps, assistant
fields, ``hwm_key``, ``message_partitions``), message ids are chosen, what a reply
answers is found, the rows of a bulk append are laid out, and a clash the unique key
reported is turned into `MessageIdConflictError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_retro._ids import new_id
from langchain_retro._metadata import MetadataLimits, check_limits, dumps
from langchain_retro.errors import (
    MessageIdConflictError,
    MetadataError,
    MissingDependencyError,
    RetroValueError,
)
from langchain_retro.stores._postgres_sql import _Names
from langchain_retro.stores.base import ASSISTANT_FIELDS, NewMessage

try:
    import psycopg
except ImportError as exc:
    raise MissingDependencyError(
        "PostgresStore needs psycopg 3 and psycopg-pool: "
        'pip install "langchain-retro[postgres]"'
    ) from exc

__all__ = [
    "MAX_MESSAGE_PARTITIONS",
    "_answered",
    "_bulk_rows",
    "_check_fields",
    "_check_hwm_key",
    "_check_partitions",
    "_checked_metadata",
    "_conflict",
    "_has_reply",
    "_message_ids",
]

MAX_MESSAGE_PARTITIONS = 1024
"""The most hash partitions `PostgresStore` creates for ``messages``."""

_CLASHING_ID = re.compile(r"=\(\d+, (.*)\)", re.DOTALL)


def _check_partitions(message_partitions: object) -> int:
    """Check the ``message_partitions`` option; 0 means not partitioned."""
    if message_partitions is None:
        return 0
    if (
        isinstance(message_partitions, bool)
        or not isinstance(message_partitions, int)
        or not 1 <= message_partitions <= MAX_MESSAGE_PARTITIONS
    ):
        raise RetroValueError(
            f"message_partitions must be a whole number from 1 to "
            f"{MAX_MESSAGE_PARTITIONS}, or None for an unpartitioned table; got "
            f"{message_partitions!r}."
        )
    return message_partitions


def _checked_metadata(
    metadata: object, limits: MetadataLimits, owner: str
) -> dict[str, str]:
    """Metadata as a new dict, checked to map strings to strings within the limits.

    Raises:
        MetadataError: If it is not a mapping of strings to strings.
        MetadataLimitError: If it is over a limit.
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


def _check_fields(fields: Mapping[str, Any]) -> None:
    """Refuse assistant fields that are not native ones (they would be dropped)."""
    unknown = set(fields) - set(ASSISTANT_FIELDS)
    if unknown:
        raise RetroValueError(
            f"Not native assistant fields: {sorted(unknown)}; native fields are "
            f"{list(ASSISTANT_FIELDS)}. Put other values in metadata; nothing was "
            "written."
        )


def _check_hwm_key(hwm_key: object, limits: MetadataLimits) -> None:
    """Check ``add_messages``'s ``hwm_key``: a non-empty key within the limits."""
    if not isinstance(hwm_key, str) or not hwm_key:
        raise RetroValueError(
            f"hwm_key must be a non-empty metadata key, not {hwm_key!r}."
        )
    check_limits({hwm_key: ""}, limits)


def _message_ids(messages: Sequence[NewMessage]) -> list[str]:
    """The ids the messages are stored under: the caller's, or a new ``msg_...``."""
    return [new_id("msg") if m.id is None else m.id for m in messages]


def _answered(messages: Sequence[NewMessage], ids: Sequence[str]) -> str | None:
    """The id a batch's last reply answers within the batch, if any (see hwm_key)."""
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=0)
    for i in range(last - 1, -1, -1):
        if messages[i].role != "assistant":
            return ids[i]
    return None


def _bulk_rows(
    batches: Sequence[tuple[str, Sequence[NewMessage]]],
    seqs: Mapping[str, int],
    next_seqs: dict[str, int],
    now: int,
) -> tuple[list[tuple[Any, ...]], list[int], list[str]]:
    """The rows a bulk append copies in, and the caller ids to look for first.

    Args:
        batches: The ``(thread_id, messages)`` pairs, in order.
        seqs: Each thread's ``seq``.
        next_seqs: Each thread's next message ``seq``; moved past the rows.
        now: The database clock, for messages without a ``created_at``.

    Returns:
        The rows (`_MESSAGE_COPY_COLUMNS`), and the ``(thread_seq, id)`` of every
        caller id as two lists.
    """
    rows: list[tuple[Any, ...]] = []
    clash_seqs: list[int] = []
    clash_ids: list[str] = []
    for thread_id, messages in batches:
        thread_seq = seqs[thread_id]
        for message in messages:
            message_id = message.id
            if message_id is None:
                message_id = new_id("msg")
            else:
                clash_seqs.append(thread_seq)
                clash_ids.append(message_id)
            rows.append(
                (
                    thread_seq,
                    next_seqs[thread_id],
                    message_id,
                    now if message.created_at is None else message.created_at,
                    message.role,
                    message.payload,
                    dumps(message.metadata),
                    message.run_id,
                    message.assistant_id,
                    message.reply_to,
                )
            )
            next_seqs[thread_id] += 1
    return rows, clash_seqs, clash_ids


def _has_reply(messages: Sequence[NewMessage]) -> bool:
    return any(m.role == "assistant" for m in messages)


def _conflict(
    exc: psycopg.errors.UniqueViolation,
    names: _Names,
    thread_id: str,
    messages: Sequence[NewMessage],
) -> MessageIdConflictError:
    """A clash on ``(thread_seq, id)`` that a concurrent append won, as our error.

    Raises:
        psycopg.errors.UniqueViolation: ``exc`` again, if another key was violated.
    """
    if exc.diag.constraint_name != names.prefix + "messages_thread_id_key":
        raise exc
    found = _CLASHING_ID.search(exc.diag.message_detail or "")
    caller_ids = [m.id for m in messages if m.id is not None]
    message_id = found.group(1) if found else (caller_ids or ["?"])[0]
    return MessageIdConflictError(thread_id, message_id)
