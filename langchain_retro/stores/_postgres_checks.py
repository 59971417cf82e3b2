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
from langchain_retro._metadata import dumps
from langchain_retro.errors import (
    MessageIdConflictError,
    MissingDependencyError,
    RetroValueError,
)
from langchain_retro.stores._postgres_sql import _Names
from langchain_retro.stores.base import NewMessage

try:
    import psycopg
except ImportError as exc:
    raise MissingDependencyError(
        "PostgresStore needs psycopg 3 and psycopg-pool: "
        'pip install "langchain-retro[postgres]"'
    ) from exc

__all__ = [
    "MAX_MESSAGE_PARTITIONS",
    "_bulk_rows",
    "_check_partitions",
    "_conflict",
    "_message_ids",
    "_run_taken",
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


def _message_ids(messages: Sequence[NewMessage]) -> list[str]:
    """The ids the messages are stored under: the caller's, or a new ``msg_...``."""
    return [new_id("msg") if m.id is None else m.id for m in messages]


def _bulk_rows(
    batches: Sequence[tuple[str, Sequence[NewMessage]]],
    seqs: Mapping[str, int],
    next_seqs: dict[str, int],
    now: int,
) -> tuple[list[tuple[Any, ...]], list[int], list[str]]:
    """The rows a bulk append copies in, and the caller ids to look for first.

    A thread whose next ``seq`` is still 1 has never held a message, so none of
    its caller ids can be taken there (the batch's own repeats are checked before):
    its ids are not looked for. A copy into a new store looks for none.

    Args:
        batches: The ``(thread_id, messages)`` pairs, in order.
        seqs: Each thread's ``seq``.
        next_seqs: Each thread's next message ``seq`` (read under the threads'
            locks); moved past the rows.
        now: The database clock, for messages without a ``created_at``.

    Returns:
        The rows (`_MESSAGE_COPY_COLUMNS`), and the ``(thread_seq, id)`` of every
        caller id that may be taken, as two lists.
    """
    rows: list[tuple[Any, ...]] = []
    clash_seqs: list[int] = []
    clash_ids: list[str] = []
    empty = {thread_id for thread_id, next_seq in next_seqs.items() if next_seq == 1}
    for thread_id, messages in batches:
        thread_seq = seqs[thread_id]
        look = thread_id not in empty
        for message in messages:
            message_id = message.id
            if message_id is None:
                message_id = new_id("msg")
            elif look:
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


def _conflict(
    exc: psycopg.errors.UniqueViolation,
    names: _Names,
    thread_id: str,
    messages: Sequence[NewMessage],
    *,
    run_id: str | None = None,
) -> RetroValueError:
    """A clash on a unique key as our error: a message id, or a run id, taken.

    A clash on ``(thread_seq, id)`` of ``messages`` (the table's key, or the key of
    one of its partitions) becomes `MessageIdConflictError`; one on the runs' ``id``
    a `RetroValueError` naming ``run_id``.

    Raises:
        psycopg.errors.UniqueViolation: ``exc`` again, if another key was violated.
    """
    diag = exc.diag
    if run_id is not None and diag.constraint_name == names.prefix + "runs_id_key":
        return _run_taken(thread_id, run_id)
    detail = diag.message_detail or ""
    on_messages = diag.constraint_name == names.prefix + "messages_thread_id_key" or (
        (diag.table_name or "").startswith(names.prefix + "messages")
        and detail.startswith("Key (thread_seq, id)=")
    )
    if not on_messages:
        raise exc
    found = _CLASHING_ID.search(detail)
    caller_ids = [m.id for m in messages if m.id is not None]
    message_id = found.group(1) if found else (caller_ids or ["?"])[0]
    return MessageIdConflictError(thread_id, message_id)


def _run_taken(thread_id: str, run_id: str) -> RetroValueError:
    """The error of a new run whose id another run has."""
    return RetroValueError(
        f"A run with id {run_id!r} already exists in this store, so a new run on "
        f"thread {thread_id!r} cannot take it; nothing was written and the thread's "
        "lease was not taken. Run ids are unique across the store: give the new run "
        "an unused id (without a NewRun, the run takes the owner's id, so use a new "
        "owner per attempt)."
    )
