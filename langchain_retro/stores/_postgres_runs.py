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
* a run resumed is made ``in_progress`` from the database's time, as `resumed_run`
  makes it, in the statement that finds it waiting;
* the runs a new lease takes over are lapsed in SQL: their status from
  `lapsed_status`, ``expires_at`` dropped and ``cancelled_at`` stamped, as `settle`
  reports them.

A run that is changed after it was read (`finish_run`, `cancel_run`) is written by a
statement that writes only if the row is still the version read (``xmin``), so a
change made meanwhile is never overwritten: the store reads it again and retries.
`begin_run` returns the version it wrote, so a run's end is usually written without
reading it first (`_Begun`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

from langchain_retro.errors import MissingDependencyError
from langchain_retro.stores._postgres_sql import (
    _ACTIVE,
    _ACTIVE_SQL,
    _LEASED,
    _Q,
    _clash,
    _insert_after_t,
    _Names,
    _new_rows,
)
from langchain_retro.stores.base import (
    NewMessage,
    StoredRun,
    lapsed_status,
    run_body,
    run_from_row,
    settle,
)

try:
    from psycopg import sql
    from psycopg.types.json import Jsonb
except ImportError as exc:
    raise MissingDependencyError(
        "PostgresStore needs psycopg 3 and psycopg-pool: "
        'pip install "langchain-retro[postgres]"'
    ) from exc

__all__ = [
    "_Begun",
    "_BegunRuns",
    "_LeaseState",
    "_RunRead",
    "_lease_of",
    "_q_run_begin",
    "_q_run_context",
    "_q_run_cursors",
    "_q_run_finish",
    "_q_run_get",
    "_q_run_messages",
    "_q_run_renew",
    "_q_run_setup",
    "_q_run_thread",
    "_q_run_undo",
    "_q_run_write",
    "_q_runs_list",
    "_q_thread_usage",
    "_run_of",
    "_run_read",
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


class _RunRead(NamedTuple):
    """A row of `_q_run_get`, taken apart."""

    run: StoredRun
    """The run as stored."""
    lease_owner: str | None
    """Its lease owner."""
    lease: _LeaseState
    """The thread's lease and the clocks."""
    version: str
    """The run row's version, which every write of the row changes."""
    thread_created_at: int
    """The thread's ``created_at``."""
    thread_metadata: Any
    """The thread's metadata, as stored."""

    @property
    def settled(self) -> StoredRun:
        """The run as read now (`settle`)."""
        return self.lease.settled(self.run, self.lease_owner)


def _run_read(row: Sequence[Any], thread_id: str) -> _RunRead:
    """A `_q_run_get` row whose run was found, taken apart.

    Raises:
        CorruptDataError: If the run no longer rebuilds.
    """
    return _RunRead(
        _run_of(row, thread_id), row[4], _lease_of(row), row[9], row[10], row[11]
    )


def _stored_body(run: StoredRun) -> str:
    """The body stored for ``run``: without ``expires_at``, which reads derive."""
    return run_body(run.model_copy(update={"expires_at": None}))


class _Begun(NamedTuple):
    """A run as `begin_run` left it: enough to write its end without reading it."""

    thread_id: str
    """Its thread."""
    owner: str
    """The lease owner that began it."""
    run: StoredRun
    """The run as stored (``expires_at`` aside, which reads derive)."""
    version: str
    """The version of its row (``xmin``) after `begin_run`."""
    thread_created_at: int
    """The thread's ``created_at``."""
    thread_metadata: dict[str, str]
    """The thread's metadata after `begin_run`."""

    def as_read(self) -> _RunRead:
        """The run as `_q_run_get` reads it if nothing changed: its owner's lease.

        The clocks are the run's start: `finish_run` stamps a run's end with the
        database's time in the statement that writes it.
        """
        started = self.run.started_at or self.run.created_at
        lease = _LeaseState(self.owner, None, float(started), started)
        return _RunRead(
            self.run,
            self.owner,
            lease,
            self.version,
            self.thread_created_at,
            self.thread_metadata,
        )


class _BegunRuns:
    """The runs a store began and has not finished, newest last, at most ``size``.

    `finish_run` takes a run's entry and writes its end guarded by the version and
    thread metadata it holds. If either changed meanwhile (a cancel, a takeover, a
    metadata update), nothing is written and the store reads the run as usual: an
    entry saves a round trip and is never trusted. A run that never finishes here
    (its process moved on, another store finishes it) falls off the end.
    """

    def __init__(self, size: int = 1024) -> None:
        """Keep at most ``size`` runs."""
        self._size = size
        self._runs: dict[str, _Begun] = {}
        self._lock = threading.Lock()  # held for a dict operation only

    def put(self, begun: _Begun) -> None:
        """Remember a run just begun, forgetting the oldest beyond ``size``."""
        with self._lock:
            self._runs[begun.run.id] = begun
            while len(self._runs) > self._size:
                del self._runs[next(iter(self._runs))]

    def take(self, run_id: str, thread_id: str, owner: str) -> _Begun | None:
        """Forget a run and return it, if it was begun on ``thread_id`` by ``owner``."""
        with self._lock:
            begun = self._runs.pop(run_id, None)
        if begun is None or begun.thread_id != thread_id or begun.owner != owner:
            return None
        return begun


# --- begin_run -------------------------------------------------------------------


def _lapse(names: _Names, condition: str) -> sql.Composed:
    """``UPDATE``: lapse the thread's runs other than ``owner``'s, if ``condition``.

    Each run in an active status whose lease owner is not ``%(owner)s`` takes its
    `lapsed_status`, as `settle` reads it: ``expires_at`` dropped, ``cancelled_at``
    stamped for a cancelled one.
    """
    statuses = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(
            sql.Literal(status), sql.Literal(lapsed_status(status))
        )
        for status in _ACTIVE
    )
    stamped = [s for s in _ACTIVE if lapsed_status(s) == "cancelled"]
    return names.sql(
        "UPDATE {runs} SET status = CASE status {statuses} END, "
        "body = (body - 'expires_at') || CASE WHEN status IN ({stamped}) "
        "THEN jsonb_build_object('cancelled_at', {now}) ELSE '{{}}'::jsonb END "
        "WHERE thread_seq = (SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
        "AND {active} AND lease_owner IS DISTINCT FROM %(owner)s AND {condition}",
        statuses=statuses,
        stamped=sql.SQL(", ").join(map(sql.Literal, stamped)),
        active=sql.SQL(_ACTIVE_SQL),
        condition=names.sql(condition),
    )


def _run_values(owner: str, row: StoredRun) -> dict[str, Any]:
    """The parameters of `_INSERT_RUN` for the run ``row`` of ``owner``."""
    return {
        "run_id": row.id,
        "status": row.status,
        "owner": owner,
        "body": _stored_body(row),
        "fill": row.assistant_id is None,
    }


# Inserts a new run on the thread of ``t`` (the thread's row as updated):
# `new_run_row`'s placeholders stamped with the database's time and, if the run names
# no assistant, given the thread's.
_INSERT_RUN = (
    "INSERT INTO {runs} (thread_seq, id, status, created_at, lease_owner, body) "
    "SELECT t.seq, %(run_id)s, %(status)s, {now}, %(owner)s, "
    "%(body)s::jsonb || jsonb_build_object('started_at', {now}) "
    "|| CASE WHEN %(fill)s THEN jsonb_strip_nulls(jsonb_build_object("
    "'assistant_id', t.metadata ->> {assistant_key})) ELSE '{{}}'::jsonb END "
    "FROM t"
)


def _q_run_begin(
    names: _Names,
    thread_id: str,
    *,
    owner: str,
    row: StoredRun,
    ids: list[str],
    messages: Sequence[NewMessage],
    resume: bool,
) -> _Q:
    """The writes of a run that ``owner`` begins under the lease it holds.

    Runs after `_q_lease_acquire` in one batch, so it reads the thread as the lease
    left it. With ``resume`` and the thread's newest run in ``requires_action``, it
    continues that run (in progress again from now, for ``owner``, as `resumed_run`
    makes it) and gives it the input without a ``run_id``; otherwise it inserts the
    new run (``row``: `new_run_row` without the thread's metadata). Then it appends
    the input and lapses the thread's other active runs.

    A caller id already in the thread, or (for a new run) a run id already stored,
    writes nothing and gives the lease back: no unique key fails the batch. One row:
    whether ``owner`` held the lease, that caller id, whether the run id was taken,
    the waiting run's columns (`_RUN_COLUMNS`, NULLs if none), whether it was
    resumed, the time the rows were stamped with and the version of the run's row
    (both NULL if nothing was written).
    """
    # The run resumed or inserted, then the thread's row updated (and locked) as
    # appends do: the new run takes the assistant of the row as updated.
    return _Q(
        names.built(
            ("run_begin", _clash(messages)),
            lambda: names.sql(
                "WITH th AS (SELECT seq FROM {threads} WHERE id = %(thread_id)s), "
                "held AS (SELECT FROM {run_leases} "
                "WHERE thread_id = %(thread_id)s AND owner = %(owner)s), "
                "{clash}, "
                "waiting AS (SELECT * FROM (SELECT {run_columns} FROM {runs} r "
                "WHERE r.thread_seq = (SELECT seq FROM th) "
                "ORDER BY r.seq DESC LIMIT 1) "
                "newest WHERE %(resume)s AND newest.status = 'requires_action'), "
                "taken_id AS (SELECT FROM {runs} WHERE id = %(run_id)s "
                "AND NOT EXISTS (SELECT FROM waiting)), "
                "go AS (SELECT FROM held WHERE NOT EXISTS (SELECT FROM clash) "
                "AND NOT EXISTS (SELECT FROM taken_id)), "
                "resumed AS (UPDATE {runs} r SET status = 'in_progress', "
                "lease_owner = %(owner)s, "
                "body = r.body || jsonb_build_object('started_at', {now}) "
                "FROM waiting w WHERE r.id = w.id AND r.status = 'requires_action' "
                "AND EXISTS (SELECT FROM go) RETURNING r.id, r.xmin::text AS version), "
                "t AS (UPDATE {threads} SET next_seq = next_seq + %(n)s, "
                "message_count = message_count + %(n)s "
                "WHERE id = %(thread_id)s AND EXISTS (SELECT FROM go) "
                "AND (NOT EXISTS (SELECT FROM waiting) "
                "OR EXISTS (SELECT FROM resumed)) "
                "RETURNING seq, metadata, next_seq - %(n)s AS first_seq, "
                "{now} AS created_at), "
                "{insert}, "
                "run AS ({insert_run} WHERE NOT EXISTS (SELECT FROM waiting) "
                "RETURNING xmin::text AS version), "
                "lapsed AS ({lapse}), "
                "dropped AS (DELETE FROM {run_leases} WHERE thread_id = %(thread_id)s "
                "AND owner = %(owner)s AND NOT EXISTS (SELECT FROM go)) "
                "SELECT EXISTS (SELECT FROM held), (SELECT id FROM clash), "
                "EXISTS (SELECT FROM taken_id), w.*, EXISTS (SELECT FROM resumed), "
                "(SELECT created_at FROM t), "
                "COALESCE((SELECT version FROM run), (SELECT version FROM resumed)) "
                "FROM (SELECT 1) one LEFT JOIN waiting w ON true",
                clash=names.sql(_clash(messages)),
                run_columns=_RUN_COLUMNS,
                insert=names.sql(
                    _insert_after_t("COALESCE(new.run_id, (SELECT id FROM resumed))")
                ),
                insert_run=names.sql(_INSERT_RUN),
                lapse=_lapse(names, "EXISTS (SELECT FROM t)"),
            ),
        ),
        {
            **_new_rows(ids, messages),
            **_run_values(owner, row),
            "thread_id": thread_id,
            "resume": resume,
        },
    )


def _q_run_thread(names: _Names, thread_id: str, owner: str) -> _Q:
    """A thread and its assistant's columns, if ``owner`` holds the lease."""
    return _Q(
        names.built(
            "run_thread",
            lambda: names.sql(
                "SELECT t.created_at, t.metadata, {joined_assistant_columns} "
                "FROM {threads} t "
                "LEFT JOIN {assistants} a ON a.id = t.metadata ->> {assistant_key} "
                "WHERE t.id = %(thread_id)s AND {leased}",
                leased=names.sql(_LEASED),
            ),
        ),
        {"thread_id": thread_id, "owner": owner},
    )


def _q_run_context(names: _Names, thread_id: str, owner: str, limit: int | None) -> _Q:
    """A thread's newest messages, newest first, if ``owner`` holds the lease."""
    return _Q(
        names.built(
            "run_context",
            lambda: names.sql(
                "SELECT {message_columns} FROM {messages} m "
                "WHERE m.thread_seq = "
                "(SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
                "AND {leased} ORDER BY m.seq DESC LIMIT %(limit)s",
                leased=names.sql(_LEASED),
            ),
        ),
        {"thread_id": thread_id, "owner": owner, "limit": limit},
    )


def _q_run_undo(
    names: _Names,
    thread_id: str,
    owner: str,
    run_id: str,
    waiting: Sequence[Any] | None,
) -> _Q:
    """Undo a run just begun whose thread no longer rebuilds; give the lease back.

    A new run is deleted; a resumed one gets back its ``waiting`` columns
    (`_RUN_COLUMNS` as read before).
    """
    restored = None if waiting is None else (waiting[1], Jsonb(waiting[3]), waiting[4])
    return _Q(
        names.sql(
            "WITH gone AS (DELETE FROM {runs} WHERE id = %(run_id)s "
            "AND lease_owner = %(owner)s AND %(status)s::text IS NULL), "
            "restored AS (UPDATE {runs} SET status = %(status)s, "
            "body = %(body)s::jsonb, lease_owner = %(lease_owner)s "
            "WHERE id = %(run_id)s AND %(status)s::text IS NOT NULL) "
            "DELETE FROM {run_leases} WHERE thread_id = %(thread_id)s "
            "AND owner = %(owner)s"
        ),
        {
            "run_id": run_id,
            "owner": owner,
            "thread_id": thread_id,
            "status": None if restored is None else restored[0],
            "body": None if restored is None else restored[1],
            "lease_owner": None if restored is None else restored[2],
        },
    )


# --- reading, writing and renewing runs -----------------------------------------


def _q_run_get(names: _Names, thread_id: str, run_id: str) -> _Q:
    """A run, its thread's lease and the clocks, then its version and the thread's.

    One row if the thread exists, the run's columns NULL if the run is not on it:
    `_RUN_COLUMNS`, `_LEASE_COLUMNS`, the run row's version (``xmin``, which every
    write of the row changes), and the thread's ``created_at`` and metadata.
    """
    return _Q(
        names.built(
            "run_get",
            lambda: names.sql(
                "SELECT {run_columns}, {lease_columns}, r.xmin::text, t.created_at, "
                "t.metadata FROM {threads} t "
                "LEFT JOIN {runs} r ON r.thread_seq = t.seq AND r.id = %(run_id)s "
                "LEFT JOIN {run_leases} l ON l.thread_id = t.id "
                "WHERE t.id = %(thread_id)s",
                run_columns=_RUN_COLUMNS,
                lease_columns=names.sql(_LEASE_COLUMNS),
            ),
        ),
        {"thread_id": thread_id, "run_id": run_id},
    )


def _q_run_write(names: _Names, run: StoredRun, version: str) -> _Q:
    """Write a run's status and body if its row is still at ``version``; whether."""
    return _Q(
        names.built(
            "run_write",
            lambda: names.sql(
                "UPDATE {runs} SET status = %s, body = %s::jsonb "
                "WHERE id = %s AND xmin = %s::text::xid RETURNING 1"
            ),
        ),
        (run.status, _stored_body(run), run.id, version),
    )


def _q_run_finish(
    names: _Names,
    thread_id: str,
    *,
    owner: str,
    run: StoredRun,
    version: str,
    stamp: str | None,
    write: bool,
    release: bool,
    ids: list[str],
    messages: Sequence[NewMessage],
    metadata: tuple[dict[str, str], dict[str, str]] | None,
    usage: tuple[int, int, int],
) -> _Q:
    """A run's step or end, in one statement, if nothing changed since it was read.

    Only if the run's row is still at ``version`` and the thread's metadata is still
    the first of ``metadata`` (when a patch gives the second): appends the messages
    (none if a caller id is already in the thread), replaces the thread's metadata,
    adds the usage to its sums, writes the run (if ``write``; its field ``stamp``, if
    any, set to the database's time) and gives ``owner``'s lease back (if
    ``release``). One row: whether the run and the thread were as read, the time the
    messages and the stamp were given (NULL if nothing was written) and the first
    caller id already in the thread.
    """
    # Rows are locked lease, thread, run: the order begin_run takes them in, so the
    # two cannot deadlock. Each step reads the one before it to run after it.
    old, new = (None, None) if metadata is None else metadata
    return _Q(
        names.built(
            ("run_finish", _clash(messages)),
            lambda: names.sql(
                "WITH lease AS (SELECT FROM {run_leases} "
                "WHERE thread_id = %(thread_id)s "
                "AND owner = %(owner)s AND %(release)s FOR UPDATE), "
                "th AS (SELECT seq FROM {threads} WHERE id = %(thread_id)s "
                "AND (%(old)s::jsonb IS NULL OR metadata = %(old)s::jsonb) "
                "AND (SELECT count(*) FROM lease) >= 0 FOR UPDATE), "
                "r AS (SELECT FROM {runs} WHERE id = %(run_id)s "
                "AND xmin = %(version)s::text::xid AND EXISTS (SELECT FROM th) "
                "FOR UPDATE), "
                "{clash}, "
                "t AS (UPDATE {threads} SET next_seq = next_seq + %(n)s, "
                "message_count = message_count + %(n)s, "
                "metadata = COALESCE(%(metadata)s::jsonb, metadata), "
                "prompt_tokens = prompt_tokens + %(prompt_tokens)s, "
                "completion_tokens = completion_tokens + %(completion_tokens)s, "
                "total_tokens = total_tokens + %(total_tokens)s "
                "WHERE id = %(thread_id)s AND EXISTS (SELECT FROM r) "
                "AND NOT EXISTS (SELECT FROM clash) "
                "RETURNING seq, next_seq - %(n)s AS first_seq, {now} AS created_at), "
                "{insert}, "
                "w AS (UPDATE {runs} SET status = %(status)s, body = %(body)s::jsonb "
                "|| CASE WHEN %(stamp)s::text IS NULL THEN '{{}}'::jsonb "
                "ELSE jsonb_build_object(%(stamp)s::text, {now}) END "
                "WHERE id = %(run_id)s AND %(write)s AND EXISTS (SELECT FROM t)), "
                "released AS (DELETE FROM {run_leases} WHERE thread_id = %(thread_id)s "
                "AND owner = %(owner)s AND %(release)s AND EXISTS (SELECT FROM t)) "
                "SELECT EXISTS (SELECT FROM r), (SELECT created_at FROM t), "
                "(SELECT id FROM clash)",
                clash=names.sql(_clash(messages)),
                insert=names.sql(_insert_after_t()),
            ),
        ),
        {
            **_new_rows(ids, messages),
            "thread_id": thread_id,
            "owner": owner,
            "release": release,
            "old": None if old is None else Jsonb(old),
            "metadata": None if new is None else Jsonb(new),
            "run_id": run.id,
            "version": version,
            "status": run.status,
            "body": _stored_body(run),
            "stamp": stamp,
            "write": write,
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[2],
        },
    )


def _q_run_renew(names: _Names, thread_id: str, owner: str, ttl: float) -> _Q:
    """Renew ``owner``'s lease unless its run has ended expired; whether, and status.

    One row: whether the lease was renewed, and the status of the newest run whose
    lease owner is ``owner`` (NULL if none). A run already written ``expired`` (a
    cancel found its lease lapsed) has ended: its lease is dropped, not renewed.
    """
    # The renewal and the drop exclude each other, so no row is written twice.
    return _Q(
        names.built(
            "run_renew",
            lambda: names.sql(
                "WITH r AS (SELECT status FROM {runs} "
                "WHERE thread_seq = "
                "(SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
                "AND lease_owner = %(owner)s ORDER BY seq DESC LIMIT 1), "
                "renewed AS (UPDATE {run_leases} SET expires_at = clock_timestamp() "
                "+ make_interval(secs => %(ttl)s::float8) "
                "WHERE thread_id = %(thread_id)s AND owner = %(owner)s "
                "AND (SELECT status FROM r) IS DISTINCT FROM 'expired' RETURNING 1), "
                "dropped AS (DELETE FROM {run_leases} WHERE thread_id = %(thread_id)s "
                "AND owner = %(owner)s AND (SELECT status FROM r) = 'expired') "
                "SELECT EXISTS (SELECT FROM renewed), (SELECT status FROM r)"
            ),
        ),
        {"thread_id": thread_id, "owner": owner, "ttl": float(ttl)},
    )


def _q_run_cursors(
    names: _Names, thread_id: str, after: str | None, before: str | None
) -> _Q:
    """A thread's ``seq`` and those of the runs used as cursors."""
    return _Q(
        names.built(
            "run_cursors",
            lambda: names.sql(
                "SELECT t.seq, "
                "(SELECT seq FROM {runs} WHERE id = %s AND thread_seq = t.seq), "
                "(SELECT seq FROM {runs} WHERE id = %s AND thread_seq = t.seq) "
                "FROM {threads} t WHERE t.id = %s"
            ),
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
        names.built(
            ("runs_list", desc),
            lambda: names.sql(
                "SELECT {run_columns}, {lease_columns} FROM {runs} r "
                "LEFT JOIN {run_leases} l ON l.thread_id = %(thread_id)s "
                "WHERE (r.thread_seq, r.seq) > (%(thread_seq)s, %(after)s) "
                "AND (r.thread_seq, r.seq) < (%(thread_seq)s, %(before)s) "
                "ORDER BY r.thread_seq {order}, r.seq {order} LIMIT %(limit)s",
                run_columns=_RUN_COLUMNS,
                lease_columns=names.sql(_LEASE_COLUMNS),
                order=sql.SQL("DESC" if desc else "ASC"),
            ),
        ),
        {
            "thread_id": thread_id,
            "thread_seq": thread_seq,
            "after": after_seq,
            "before": before_seq,
            "limit": limit,
        },
    )


def _q_run_setup(names: _Names, thread_id: str, assistant_id: str) -> _Q:
    """What a new run is checked against, in one statement (so one snapshot).

    One row, NULLs for what does not exist: the thread's ``created_at`` and
    metadata, the assistant's columns (``assistant_columns``), then the thread's
    newest run (`_RUN_COLUMNS`) with the lease and clocks (`_LEASE_COLUMNS`).
    """
    return _Q(
        names.built(
            "run_setup",
            lambda: names.sql(
                "SELECT t.created_at, t.metadata, a.*, r.* FROM (SELECT) one "
                "LEFT JOIN LATERAL (SELECT seq, created_at, metadata FROM {threads} "
                "WHERE id = %(thread_id)s) t ON true "
                "LEFT JOIN LATERAL (SELECT {assistant_columns} FROM {assistants} "
                "WHERE id = %(assistant_id)s) a ON true "
                "LEFT JOIN LATERAL (SELECT {run_columns}, {lease_columns} "
                "FROM {runs} r LEFT JOIN {run_leases} l "
                "ON l.thread_id = %(thread_id)s WHERE r.thread_seq = t.seq "
                "ORDER BY r.thread_seq DESC, r.seq DESC LIMIT 1) r ON true",
                run_columns=_RUN_COLUMNS,
                lease_columns=names.sql(_LEASE_COLUMNS),
            ),
        ),
        {"thread_id": thread_id, "assistant_id": assistant_id},
    )


def _q_run_messages(names: _Names, thread_id: str, run_id: str) -> _Q:
    """The messages a run wrote, in thread order, by the run index of messages.

    No row if the thread does not exist; one row of NULLs if no message of the
    thread names the run.
    """
    return _Q(
        names.built(
            "run_messages",
            lambda: names.sql(
                "SELECT {message_columns} FROM {threads} t "
                "LEFT JOIN {messages} m ON m.thread_seq = t.seq "
                "AND m.run_id = %(run_id)s "
                "WHERE t.id = %(thread_id)s ORDER BY m.seq"
            ),
        ),
        {"thread_id": thread_id, "run_id": run_id},
    )


def _q_thread_usage(names: _Names, thread_id: str) -> _Q:
    """A thread's running sums of tokens."""
    return _Q(
        names.built(
            "thread_usage",
            lambda: names.sql(
                "SELECT prompt_tokens, completion_tokens, total_tokens FROM {threads} "
                "WHERE id = %s"
            ),
        ),
        (thread_id,),
    )
