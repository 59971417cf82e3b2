"""The SQL of runs in `PostgresStore`: pure functions from arguments to statements.

Like `langchain_retro.stores._postgres_sql`, whose names and fragments it uses, this
module is free of I/O. A run's row keeps the columns queries use (thread, id,
status, creation time, lease owner) and the rest as the JSON ``body`` of `run_body`;
`_run_of` rebuilds it with `run_from_row`, and `_lease_of` reads what `settle` needs
beside it (the thread's lease and the database clock).

The rules of `langchain_retro.stores._runs` are applied in Python. SQL does only the
parts that save a round trip, and gives what the rules give:

* a new run's row is built by `new_run_row` with placeholders; the statement that
  inserts it fills in the database's time (``created_at``, ``started_at``) and, if
  the run names no assistant, the thread's ``assistant_id``, as `new_run_row` would
  with the thread it reads;
* the runs a new lease takes over are lapsed in SQL: their status from
  `lapsed_status`, ``expires_at`` dropped and ``cancelled_at`` stamped, as `settle`
  reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from langchain_retro.errors import MissingDependencyError
from langchain_retro.stores._postgres_sql import (
    _ACTIVE,
    _ACTIVE_SQL,
    _LEASED,
    _Q,
    _Names,
)
from langchain_retro.stores.base import (
    StoredRun,
    lapsed_status,
    run_body,
    run_from_row,
    settle,
)

try:
    from psycopg import sql
except ImportError as exc:
    raise MissingDependencyError(
        "PostgresStore needs psycopg 3 and psycopg-pool: "
        'pip install "langchain-retro[postgres]"'
    ) from exc

__all__ = [
    "_LeaseState",
    "_lease_of",
    "_q_lease_lock",
    "_q_run_context",
    "_q_run_cursors",
    "_q_run_get",
    "_q_run_insert",
    "_q_run_messages",
    "_q_run_newest",
    "_q_run_renew",
    "_q_run_thread",
    "_q_run_undo",
    "_q_run_write",
    "_q_runs_lapse",
    "_q_runs_list",
    "_q_thread_usage",
    "_run_of",
    "_stored_body",
]

# id, status, created_at, body, lease_owner: what `_run_of` reads.
_RUN_COLUMNS = sql.SQL("r.id, r.status, r.created_at, r.body, r.lease_owner")

# The thread's lease and the clocks, after the run's columns: what `_lease_of` reads.
# settle compares the lease's expiry with the clock that the lease code uses.
_LEASE_COLUMNS = (
    "l.owner, extract(epoch FROM l.expires_at)::float8, "
    "extract(epoch FROM clock_timestamp())::float8, {now}"
)


class _LeaseState(NamedTuple):
    """What `settle` needs besides the run, read in the same statement."""

    holder: str | None
    """The owner of the thread's lease row, expired or not."""
    expires_at: float | None
    """When that lease lapses, in Unix seconds."""
    clock: float
    """The database's clock as the lease code reads it."""
    now: int
    """The database's time as rows are stamped with it (the transaction's start)."""

    def held_by(self, lease_owner: str | None) -> bool:
        """Whether the lease row is ``lease_owner``'s (a run's lease owner)."""
        return lease_owner is not None and self.holder == lease_owner

    def settled(self, run: StoredRun, lease_owner: str | None) -> StoredRun:
        """``run``, whose lease owner is ``lease_owner``, settled as read now."""
        return settle(
            run,
            held=self.held_by(lease_owner),
            lease_expires_at=self.expires_at,
            now=self.clock,
        )


def _run_of(row: Sequence[Any], thread_id: str) -> StoredRun:
    """A run from a row starting with `_RUN_COLUMNS`, unsettled.

    Raises:
        CorruptDataError: If the row no longer rebuilds.
    """
    return run_from_row(row[0], thread_id, row[1], row[2], row[3])


def _lease_of(row: Sequence[Any]) -> _LeaseState:
    """The lease and clocks of a row of `_RUN_COLUMNS` then `_LEASE_COLUMNS`."""
    return _LeaseState(row[5], row[6], row[7], row[8])


def _stored_body(run: StoredRun) -> str:
    """The body stored for ``run``: without ``expires_at``, which reads derive."""
    return run_body(run.model_copy(update={"expires_at": None}))


# --- begin_run -------------------------------------------------------------------


def _q_runs_lapse(names: _Names, thread_id: str, owner: str) -> _Q:
    """Lapse the thread's other runs that still count as holding its lease.

    Only if ``owner`` holds the lease (which it has just taken): each active run
    with another lease owner takes its `lapsed_status`, as `settle` reads it.
    """
    statuses = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(
            sql.Literal(status), sql.Literal(lapsed_status(status))
        )
        for status in _ACTIVE
    )
    stamped = [s for s in _ACTIVE if lapsed_status(s) == "cancelled"]
    return _Q(
        names.sql(
            "UPDATE {runs} SET status = CASE status {statuses} END, "
            "body = (body - 'expires_at') || CASE WHEN status IN ({stamped}) "
            "THEN jsonb_build_object('cancelled_at', {now}) ELSE '{{}}'::jsonb END "
            "WHERE thread_seq = (SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
            "AND {active} AND lease_owner IS DISTINCT FROM %(owner)s AND {leased}",
            statuses=statuses,
            stamped=sql.SQL(", ").join(map(sql.Literal, stamped)),
            active=sql.SQL(_ACTIVE_SQL),
            leased=names.sql(_LEASED),
        ),
        {"thread_id": thread_id, "owner": owner},
    )


def _q_run_insert(names: _Names, thread_id: str, owner: str, row: StoredRun) -> _Q:
    """Insert a new run for ``owner``, if it holds the lease; its ``created_at``.

    ``row`` is `new_run_row` of the run without the thread's metadata: the statement
    stamps it with the database's time and, if it names no assistant, gives it the
    thread's ``assistant_id``.
    """
    return _Q(
        names.sql(
            "INSERT INTO {runs} (thread_seq, id, status, created_at, lease_owner, "
            "body) SELECT t.seq, %(id)s, %(status)s, {now}, %(owner)s, "
            "%(body)s::jsonb || jsonb_build_object('started_at', {now}) "
            "|| CASE WHEN %(fill)s THEN jsonb_strip_nulls(jsonb_build_object("
            "'assistant_id', t.metadata ->> {assistant_key})) "
            "ELSE '{{}}'::jsonb END "
            "FROM {threads} t WHERE t.id = %(thread_id)s AND {leased} "
            "RETURNING created_at",
            leased=names.sql(_LEASED),
        ),
        {
            "id": row.id,
            "status": row.status,
            "owner": owner,
            "body": _stored_body(row),
            "fill": row.assistant_id is None,
            "thread_id": thread_id,
        },
    )


def _q_run_newest(names: _Names, thread_id: str, owner: str) -> _Q:
    """The thread's newest run (`_RUN_COLUMNS`), locked, if ``owner`` holds it."""
    return _Q(
        names.sql(
            "SELECT {run_columns} FROM {runs} r "
            "WHERE r.thread_seq = (SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
            "AND {leased} ORDER BY r.seq DESC LIMIT 1 FOR UPDATE",
            run_columns=_RUN_COLUMNS,
            leased=names.sql(_LEASED),
        ),
        {"thread_id": thread_id, "owner": owner},
    )


def _q_run_thread(
    names: _Names, thread_id: str, owner: str, *, lock: bool = False
) -> _Q:
    """A thread, its assistant's columns and now, if ``owner`` holds the lease.

    With ``lock``, the thread's row is locked as an append locks it.
    """
    return _Q(
        names.sql(
            "SELECT t.created_at, t.metadata, {joined_assistant_columns}, {now} "
            "FROM {threads} t "
            "LEFT JOIN {assistants} a ON a.id = t.metadata ->> {assistant_key} "
            "WHERE t.id = %(thread_id)s AND {leased}{lock}",
            leased=names.sql(_LEASED),
            lock=sql.SQL(" FOR NO KEY UPDATE OF t" if lock else ""),
        ),
        {"thread_id": thread_id, "owner": owner},
    )


def _q_run_context(names: _Names, thread_id: str, owner: str, limit: int | None) -> _Q:
    """A thread's newest messages, newest first, if ``owner`` holds the lease."""
    return _Q(
        names.sql(
            "SELECT {message_columns} FROM {messages} m "
            "WHERE m.thread_seq = (SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
            "AND {leased} ORDER BY m.seq DESC LIMIT %(limit)s",
            leased=names.sql(_LEASED),
        ),
        {"thread_id": thread_id, "owner": owner, "limit": limit},
    )


def _q_run_undo(names: _Names, thread_id: str, owner: str, run_id: str) -> _Q:
    """Delete a run just created and give its lease back (its thread is unreadable)."""
    return _Q(
        names.sql(
            "WITH gone AS (DELETE FROM {runs} WHERE id = %(run_id)s "
            "AND lease_owner = %(owner)s) "
            "DELETE FROM {run_leases} WHERE thread_id = %(thread_id)s "
            "AND owner = %(owner)s"
        ),
        {"run_id": run_id, "owner": owner, "thread_id": thread_id},
    )


# --- reading, writing and renewing runs -----------------------------------------


def _q_run_get(names: _Names, thread_id: str, run_id: str, *, lock: bool) -> _Q:
    """A run, its thread's lease and the clocks.

    Without ``lock``: one row if the thread exists, the run's columns NULL if the run
    is not on it. With ``lock``: the run's row, locked for update, if on the thread.
    """
    return _Q(
        names.sql(
            "SELECT {run_columns}, {lease_columns} FROM {threads} t "
            "{join} {runs} r ON r.thread_seq = t.seq AND r.id = %(run_id)s "
            "LEFT JOIN {run_leases} l ON l.thread_id = t.id "
            "WHERE t.id = %(thread_id)s{lock}",
            run_columns=_RUN_COLUMNS,
            lease_columns=names.sql(_LEASE_COLUMNS),
            join=sql.SQL("JOIN" if lock else "LEFT JOIN"),
            lock=sql.SQL(" FOR UPDATE OF r" if lock else ""),
        ),
        {"thread_id": thread_id, "run_id": run_id},
    )


def _q_lease_lock(names: _Names, thread_id: str) -> _Q:
    """Lock a thread's lease row: its owner and expiry (none if no lease)."""
    # Locked first, as begin_run takes it first: the two cannot deadlock.
    return _Q(
        names.sql(
            "SELECT owner, extract(epoch FROM expires_at)::float8 FROM {run_leases} "
            "WHERE thread_id = %s FOR UPDATE"
        ),
        (thread_id,),
    )


def _q_run_write(
    names: _Names, run: StoredRun, *, lease_owner: str | None = None
) -> _Q:
    """Write a run's status and body, and its lease owner if given."""
    return _Q(
        names.sql(
            "UPDATE {runs} SET status = %s, body = %s::jsonb, "
            "lease_owner = COALESCE(%s, lease_owner) WHERE id = %s"
        ),
        (run.status, _stored_body(run), lease_owner, run.id),
    )


def _q_run_renew(names: _Names, thread_id: str, owner: str, ttl: float) -> _Q:
    """Renew ``owner``'s lease unless its run has ended expired; whether, and status.

    One row: whether the lease was renewed, and the status of the newest run whose
    lease owner is ``owner`` (NULL if none). A run already written ``expired`` (a
    cancel found its lease lapsed) has ended: its lease is dropped, not renewed.
    """
    # The renewal and the drop exclude each other, so no row is written twice.
    return _Q(
        names.sql(
            "WITH r AS (SELECT status FROM {runs} "
            "WHERE thread_seq = (SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
            "AND lease_owner = %(owner)s ORDER BY seq DESC LIMIT 1), "
            "renewed AS (UPDATE {run_leases} SET expires_at = clock_timestamp() "
            "+ make_interval(secs => %(ttl)s::float8) "
            "WHERE thread_id = %(thread_id)s AND owner = %(owner)s "
            "AND (SELECT status FROM r) IS DISTINCT FROM 'expired' RETURNING 1), "
            "dropped AS (DELETE FROM {run_leases} WHERE thread_id = %(thread_id)s "
            "AND owner = %(owner)s AND (SELECT status FROM r) = 'expired') "
            "SELECT EXISTS (SELECT FROM renewed), (SELECT status FROM r)"
        ),
        {"thread_id": thread_id, "owner": owner, "ttl": float(ttl)},
    )


def _q_run_cursors(
    names: _Names, thread_id: str, after: str | None, before: str | None
) -> _Q:
    """A thread's ``seq`` and those of the runs used as cursors."""
    return _Q(
        names.sql(
            "SELECT t.seq, "
            "(SELECT seq FROM {runs} WHERE id = %s AND thread_seq = t.seq), "
            "(SELECT seq FROM {runs} WHERE id = %s AND thread_seq = t.seq) "
            "FROM {threads} t WHERE t.id = %s"
        ),
        (after, before, thread_id),
    )


def _q_runs_list(
    names: _Names,
    thread_id: str,
    thread_seq: int,
    after_seq: int,
    before_seq: int,
    *,
    desc: bool,
    limit: int,
) -> _Q:
    """A thread's runs strictly between two ``seq``, with the lease and clocks."""
    # The bounds and the order are on (thread_seq, seq) as a pair, which only the
    # thread's index gives: no plan can walk the primary key (seq) in order instead,
    # filtering out the runs of every other thread on the way.
    return _Q(
        names.sql(
            "SELECT {run_columns}, {lease_columns} FROM {runs} r "
            "LEFT JOIN {run_leases} l ON l.thread_id = %(thread_id)s "
            "WHERE (r.thread_seq, r.seq) > (%(thread_seq)s, %(after)s) "
            "AND (r.thread_seq, r.seq) < (%(thread_seq)s, %(before)s) "
            "ORDER BY r.thread_seq {order}, r.seq {order} LIMIT %(limit)s",
            run_columns=_RUN_COLUMNS,
            lease_columns=names.sql(_LEASE_COLUMNS),
            order=sql.SQL("DESC" if desc else "ASC"),
        ),
        {
            "thread_id": thread_id,
            "thread_seq": thread_seq,
            "after": after_seq,
            "before": before_seq,
            "limit": limit,
        },
    )


def _q_run_messages(names: _Names, thread_id: str, run_id: str) -> _Q:
    """The messages a run wrote, in thread order, by the run index of messages.

    No row if the thread does not exist; one row of NULLs if no message of the
    thread names the run.
    """
    return _Q(
        names.sql(
            "SELECT {message_columns} FROM {threads} t "
            "LEFT JOIN {messages} m ON m.thread_seq = t.seq "
            "AND m.run_id = %(run_id)s "
            "WHERE t.id = %(thread_id)s ORDER BY m.seq"
        ),
        {"thread_id": thread_id, "run_id": run_id},
    )


def _q_thread_usage(names: _Names, thread_id: str) -> _Q:
    """A thread's running sums of tokens."""
    return _Q(
        names.sql(
            "SELECT prompt_tokens, completion_tokens, total_tokens FROM {threads} "
            "WHERE id = %s"
        ),
        (thread_id,),
    )
