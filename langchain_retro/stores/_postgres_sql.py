"""The SQL of `PostgresStore`: pure functions from names and arguments to statements.

Everything here is free of I/O, so the sync and async methods of
`langchain_retro.stores.postgres.PostgresStore` share it and only the code that talks
to the server differs between them:

* the layout: the migrations that create the tables (`_MIGRATIONS`, `SCHEMA_VERSION`)
  and the constant fragments the statements use (`_FRAGMENTS`);
* names: `_Names` quotes and schema-qualifies one store's tables and indexes, and
  `_check_schema` and `_check_prefix` validate what goes into them;
* statements: each ``_q_*`` function returns a `_Q`, one statement with its
  parameters, for an operation (`_Op`) to yield to a driver;
* rows to records: `_assistant` and `_message` decode rows of our own schema.

The module imports ``psycopg.sql`` to compose statements, so, like
`langchain_retro.stores.postgres`, it raises `MissingDependencyError` naming the
``postgres`` extra when psycopg is not installed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Generator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from langchain_retro._metadata import CLASS_KEY, MetadataPatch, dumps
from langchain_retro.errors import MissingDependencyError
from langchain_retro.stores.base import (
    ASSISTANT_FIELDS,
    THREAD_ASSISTANT_KEY,
    NewMessage,
    StoredAssistant,
    StoredMessage,
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
    "SCHEMA_VERSION",
    "_DEFAULT_SCHEMA",
    "_FRAGMENTS",
    "_MAX_SEQ",
    "_NO_SEQ",
    "_Q",
    "_THREAD_COLUMNS",
    "_Names",
    "_Op",
    "_Rows",
    "_Step",
    "_assistant",
    "_check_prefix",
    "_check_schema",
    "_filters",
    "_message",
    "_q_assistant_delete",
    "_q_assistant_get",
    "_q_assistant_insert",
    "_q_assistant_threads",
    "_q_assistant_update",
    "_q_create_migrations_table",
    "_q_create_schema",
    "_q_lease_acquire",
    "_q_lease_release",
    "_q_listing",
    "_q_lock",
    "_q_message_cursors",
    "_q_message_delete",
    "_q_message_get",
    "_q_message_get_for_update",
    "_q_message_set_metadata",
    "_q_messages_append",
    "_q_messages_clear",
    "_q_messages_count",
    "_q_messages_list",
    "_q_migrate",
    "_q_record_migration",
    "_q_run_context",
    "_q_run_finish",
    "_q_run_thread",
    "_q_schema_version",
    "_q_seq_of",
    "_q_setup_state",
    "_q_thread_cursors",
    "_q_thread_delete",
    "_q_thread_get",
    "_q_thread_insert",
    "_q_thread_set_metadata",
    "_seq_bound",
]

T = TypeVar("T")

_PREFIX_RE = re.compile(r"[a-z_][a-z0-9_]{0,29}|")
_DEFAULT_SCHEMA = "public"
_NO_SEQ = 0
_MAX_SEQ = 2**63 - 1
_THREAD_COLUMNS = sql.SQL("id, created_at, metadata")

_FRAGMENTS = {
    # Unix seconds by the database clock, as every created_at.
    "now": sql.SQL("floor(extract(epoch FROM now()))::bigint"),
    "assistant_columns": sql.SQL(", ").join(
        map(sql.Identifier, ("id", "created_at", "metadata", *ASSISTANT_FIELDS))
    ),
    # Empty metadata comes back as NULL, sparing a JSON decode per message.
    "message_columns": sql.SQL(
        "m.id, m.created_at, NULLIF(m.metadata, '{}'::jsonb), m.role, m.payload"
    ),
    "assistant_assignments": sql.SQL(", ").join(
        sql.SQL("{} = %s").format(sql.Identifier(name)) for name in ASSISTANT_FIELDS
    ),
    "joined_assistant_columns": sql.SQL(", ").join(
        sql.Identifier("a", name)
        for name in ("id", "created_at", "metadata", *ASSISTANT_FIELDS)
    ),
    "assistant_key": sql.Literal(THREAD_ASSISTANT_KEY),
}
"""Constant SQL fragments the templates refer to by name."""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE {assistants} (
            seq bigserial PRIMARY KEY,
            id text NOT NULL UNIQUE,
            created_at bigint NOT NULL,
            name text,
            description text,
            instructions text,
            model text NOT NULL,
            temperature double precision,
            top_p double precision,
            metadata jsonb NOT NULL
        )""",
        """CREATE TABLE {threads} (
            seq bigserial PRIMARY KEY,
            id text NOT NULL UNIQUE,
            created_at bigint NOT NULL,
            metadata jsonb NOT NULL,
            next_seq bigint NOT NULL DEFAULT 1
        )""",
        "CREATE INDEX {threads_metadata_index} ON {threads} "
        "USING gin (metadata jsonb_path_ops)",
        "CREATE INDEX {threads_class_index} ON {threads} "
        "((metadata ->> 'retro_class'), seq)",
        """CREATE TABLE {messages} (
            thread_seq bigint NOT NULL REFERENCES {threads} (seq) ON DELETE CASCADE,
            seq bigint NOT NULL,
            id text NOT NULL UNIQUE,
            created_at bigint NOT NULL,
            role text NOT NULL,
            payload text NOT NULL,
            metadata jsonb NOT NULL,
            PRIMARY KEY (thread_seq, seq)
        )""",
        """CREATE TABLE {run_leases} (
            thread_id text PRIMARY KEY REFERENCES {threads} (id) ON DELETE CASCADE,
            owner text NOT NULL,
            expires_at timestamptz NOT NULL
        )""",
    ),
)
"""Forward migrations; entry N brings the schema from version N to N + 1."""

SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this package creates and reads."""


# --- SQL: pure functions from names and arguments to a statement and its parameters --


class _Q(NamedTuple):
    """One statement and its parameters."""

    query: sql.Composed
    params: Sequence[Any] | Mapping[str, Any] | None = None


_Rows = list[tuple[Any, ...]]
_Step = _Q | tuple[_Q, ...]
"""A statement, or a batch of statements sent in one round trip."""
_Op = Generator[_Step, Any, T]
"""An operation: yields statements, receives their rows, returns its result.

A batch is pipelined in one implicit transaction (each statement sees the writes of
those before it) and answered with a list of rows, one per statement.
"""


class _Names:
    """The quoted, schema-qualified names of one store's tables and indexes."""

    def __init__(self, schema: str, prefix: str) -> None:
        self.schema = schema
        self.prefix = prefix
        self.by_name: dict[str, sql.Composable] = {
            name: sql.Identifier(schema, prefix + name)
            for name in (
                "assistants",
                "threads",
                "messages",
                "run_leases",
                "schema_migrations",
            )
        }
        # Index names take the table's schema; they are unqualified in CREATE INDEX.
        for index in ("threads_metadata_index", "threads_class_index"):
            self.by_name[index] = sql.Identifier(prefix + index)
        self.by_name["schema"] = sql.Identifier(schema)
        self.by_name.update(_FRAGMENTS)

    def sql(self, template: str, **fragments: sql.Composable) -> sql.Composed:
        """Fill a template's ``{name}`` placeholders: tables, fragments, these."""
        return sql.SQL(template).format(**self.by_name, **fragments)


def _for_update(lock: bool) -> sql.SQL:
    """`` FOR UPDATE`` if ``lock``, else nothing."""
    return sql.SQL(" FOR UPDATE" if lock else "")


def _q_lock(names: _Names) -> _Q:
    """Take the transaction-level advisory lock `setup` migrates a schema under."""
    digest = hashlib.blake2b(
        f"langchain-retro setup {names.schema}".encode(), digest_size=8
    ).digest()
    key = int.from_bytes(digest, "big", signed=True)
    return _Q(names.sql("SELECT pg_advisory_xact_lock(%s)"), (key,))


def _q_setup_state(names: _Names) -> _Q:
    """Whether the schema and the migrations table exist."""
    return _Q(
        names.sql(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s), "
            "EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
            "WHERE schemaname = %s AND tablename = %s)"
        ),
        (names.schema, names.schema, names.prefix + "schema_migrations"),
    )


def _q_create_schema(names: _Names) -> _Q:
    """Create the store's schema."""
    return _Q(names.sql("CREATE SCHEMA {schema}"))


def _q_schema_version(names: _Names) -> _Q:
    """The newest migration applied."""
    return _Q(names.sql("SELECT max(version) FROM {schema_migrations}"))


def _q_create_migrations_table(names: _Names) -> _Q:
    """Create the table recording the migrations applied."""
    return _Q(
        names.sql(
            "CREATE TABLE {schema_migrations} (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
    )


def _q_migrate(names: _Names, number: int) -> _Q:
    """Run migration ``number`` (version ``number`` to the next), all in one query."""
    statements = [names.sql(s) for s in _MIGRATIONS[number]]
    return _Q(sql.SQL(";\n").join(statements))


def _q_record_migration(names: _Names, number: int) -> _Q:
    """Record that the schema is at version ``number + 1``."""
    return _Q(
        names.sql("INSERT INTO {schema_migrations} (version) VALUES (%s)"),
        (number + 1,),
    )


def _q_assistant_insert(names: _Names, draft: StoredAssistant) -> _Q:
    """Insert an assistant; returns its ``created_at``, by the database clock."""
    return _Q(
        names.sql(
            "INSERT INTO {assistants} ({assistant_columns}) "
            "VALUES (%s, {now}, %s, %s, %s, %s, %s, %s, %s) RETURNING created_at"
        ),
        (
            draft.id,
            Jsonb(draft.metadata),
            *(getattr(draft, name) for name in ASSISTANT_FIELDS),
        ),
    )


def _q_assistant_get(names: _Names, assistant_id: str, *, lock: bool = False) -> _Q:
    """An assistant's row, locked for update if ``lock``."""
    return _Q(
        names.sql(
            "SELECT {assistant_columns} FROM {assistants} WHERE id = %s{lock}",
            lock=_for_update(lock),
        ),
        (assistant_id,),
    )


def _q_assistant_update(names: _Names, updated: StoredAssistant) -> _Q:
    """Write an assistant's fields and metadata."""
    return _Q(
        names.sql(
            "UPDATE {assistants} SET metadata = %s, {assistant_assignments} "
            "WHERE id = %s"
        ),
        (
            Jsonb(updated.metadata),
            *(getattr(updated, name) for name in ASSISTANT_FIELDS),
            updated.id,
        ),
    )


def _q_assistant_threads(names: _Names, assistant_id: str) -> _Q:
    """The ``seq`` of every thread naming the assistant."""
    return _Q(
        names.sql("SELECT seq FROM {threads} WHERE metadata @> %s"),
        (Jsonb({THREAD_ASSISTANT_KEY: assistant_id}),),
    )


def _q_assistant_delete(
    names: _Names, assistant_id: str, thread_seqs: Sequence[int]
) -> _Q:
    """Delete an assistant and the threads given."""
    # Messages and leases go with their threads (ON DELETE CASCADE).
    return _Q(
        names.sql(
            "WITH gone AS (DELETE FROM {threads} WHERE seq = ANY(%s::bigint[])) "
            "DELETE FROM {assistants} WHERE id = %s"
        ),
        (list(thread_seqs), assistant_id),
    )


def _q_seq_of(names: _Names, table: str, object_id: str) -> _Q:
    """The ``seq`` of the row of ``table`` with the given id."""
    return _Q(
        sql.SQL("SELECT seq FROM {} WHERE id = %s").format(names.by_name[table]),
        (object_id,),
    )


def _filters(
    metadata: Mapping[str, str] | None,
    classes: Sequence[str] | None,
    params: list[Any],
) -> list[sql.Composable]:
    """Conditions on metadata and classes for a listing; appends their parameters."""
    where: list[sql.Composable] = []
    if metadata:
        where.append(sql.SQL("metadata @> %s"))
        params.append(Jsonb(dict(metadata)))
    if classes is not None:
        where.append(sql.SQL("metadata ->> {} = ANY(%s::text[])").format(CLASS_KEY))
        params.append(list(classes))
    return where


def _q_listing(
    names: _Names,
    table: str,
    columns: sql.Composable,
    where: list[sql.Composable],
    params: list[Any],
    *,
    desc: bool,
    limit: int,
) -> _Q:
    """A page of ``table``, by ``seq``, under the conditions given."""
    query = sql.SQL("SELECT {} FROM {}").format(
        columns,
        names.by_name[table],
    )
    if where:
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
    query += sql.SQL(" ORDER BY seq DESC" if desc else " ORDER BY seq ASC")
    query += sql.SQL(" LIMIT %s")
    return _Q(query, (*params, limit))


def _q_thread_insert(names: _Names, thread_id: str, metadata: dict[str, str]) -> _Q:
    """Insert a thread; returns its ``created_at``, by the database clock."""
    return _Q(
        names.sql(
            "INSERT INTO {threads} (id, created_at, metadata) "
            "VALUES (%s, {now}, %s) RETURNING created_at"
        ),
        (thread_id, Jsonb(metadata)),
    )


def _q_thread_get(names: _Names, thread_id: str, *, lock: bool = False) -> _Q:
    """A thread's ``seq``, ``created_at`` and metadata, locked if ``lock``."""
    return _Q(
        names.sql(
            "SELECT seq, created_at, metadata FROM {threads} WHERE id = %s{lock}",
            lock=_for_update(lock),
        ),
        (thread_id,),
    )


def _q_thread_set_metadata(
    names: _Names, thread_seq: int, metadata: dict[str, str]
) -> _Q:
    """Replace a thread's metadata."""
    return _Q(
        names.sql("UPDATE {threads} SET metadata = %s WHERE seq = %s"),
        (Jsonb(metadata), thread_seq),
    )


def _q_thread_delete(names: _Names, thread_id: str) -> _Q:
    """Delete a thread; returns its ``seq`` if it existed."""
    # Messages and the lease go with the thread (ON DELETE CASCADE).
    return _Q(
        names.sql("DELETE FROM {threads} WHERE id = %s RETURNING seq"), (thread_id,)
    )


def _q_thread_cursors(names: _Names, after: str | None, before: str | None) -> _Q:
    """The ``seq`` of the threads used as cursors (NULL for a missing one)."""
    return _Q(
        names.sql(
            "SELECT (SELECT seq FROM {threads} WHERE id = %s), "
            "(SELECT seq FROM {threads} WHERE id = %s)"
        ),
        (after, before),
    )


# Inserts the messages after ``t``, the thread row an UPDATE moved ``next_seq`` on.
_INSERT_AFTER_T = (
    "added AS ("
    "INSERT INTO {messages} "
    "(thread_seq, seq, id, created_at, role, payload, metadata) "
    "SELECT t.seq, t.first_seq + new.ord - 1, new.id, t.created_at, "
    "new.role, new.payload, new.metadata::jsonb "
    "FROM t, unnest(%(ids)s::text[], %(roles)s::text[], %(payloads)s::text[], "
    "%(metadatas)s::text[]) WITH ORDINALITY "
    "AS new (id, role, payload, metadata, ord))"
)

# Whether %(owner)s holds the thread's lease (ours if we just took it).
_LEASED = (
    "EXISTS (SELECT FROM {run_leases} "
    "WHERE thread_id = %(thread_id)s AND owner = %(owner)s)"
)


def _new_rows(ids: list[str], messages: Sequence[NewMessage]) -> dict[str, Any]:
    """The parameters `_INSERT_AFTER_T` reads: the new messages, column by column."""
    return {
        "n": len(messages),
        "ids": ids,
        "roles": [m.role for m in messages],
        "payloads": [m.payload for m in messages],
        "metadatas": [dumps(m.metadata) for m in messages],
    }


def _q_messages_append(
    names: _Names,
    thread_id: str,
    ids: list[str],
    messages: Sequence[NewMessage],
    thread_metadata: dict[str, str] | None,
    *,
    leased_by: str | None = None,
) -> _Q:
    """Append messages to a thread, replacing its metadata if given."""
    # The UPDATE takes the thread's row lock, so appenders to one thread take turns
    # and each gets a contiguous block of the sequence; the INSERT is in the same
    # statement, hence the same transaction, even in autocommit. With leased_by,
    # nothing is appended unless that owner holds the lease.
    return _Q(
        names.sql(
            "WITH t AS ("
            "UPDATE {threads} SET next_seq = next_seq + %(n)s, "
            "metadata = COALESCE(%(metadata)s::jsonb, metadata) "
            "WHERE id = %(thread_id)s AND (%(owner)s::text IS NULL OR {leased}) "
            "RETURNING seq, next_seq - %(n)s AS first_seq, {now} AS created_at"
            "), {insert} SELECT created_at FROM t",
            leased=names.sql(_LEASED),
            insert=names.sql(_INSERT_AFTER_T),
        ),
        {
            **_new_rows(ids, messages),
            "metadata": None if thread_metadata is None else Jsonb(thread_metadata),
            "thread_id": thread_id,
            "owner": leased_by,
        },
    )


def _q_run_thread(names: _Names, thread_id: str, owner: str) -> _Q:
    """A thread and its assistant's columns, if ``owner`` holds the lease."""
    # The thread and the assistant it names, if the owner holds the lease.
    return _Q(
        names.sql(
            "SELECT t.created_at, t.metadata, {joined_assistant_columns} "
            "FROM {threads} t "
            "LEFT JOIN {assistants} a ON a.id = t.metadata ->> {assistant_key} "
            "WHERE t.id = %(thread_id)s AND {leased}",
            leased=names.sql(_LEASED),
        ),
        {"thread_id": thread_id, "owner": owner},
    )


def _q_run_context(names: _Names, thread_id: str, owner: str, limit: int | None) -> _Q:
    """A thread's newest messages, newest first, if ``owner`` holds the lease."""
    # The newest messages, newest first, if the owner holds the lease.
    return _Q(
        names.sql(
            "SELECT {message_columns} FROM {messages} m "
            "WHERE m.thread_seq = (SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
            "AND {leased} ORDER BY m.seq DESC LIMIT %(limit)s",
            leased=names.sql(_LEASED),
        ),
        {"thread_id": thread_id, "owner": owner, "limit": limit},
    )


def _q_run_finish(
    names: _Names,
    thread_id: str,
    owner: str,
    reply: tuple[str, NewMessage],
    patch: MetadataPatch,
) -> _Q:
    """Append the reply, patch the thread and release the lease, in one statement."""
    # MetadataPatch.apply in SQL, on the row the UPDATE locked: drop the removed keys
    # and the keys of cleared fields (``name`` and its pieces ``name#1``...), then
    # merge the entries set. Only for stores without limits: nothing checks them here.
    message_id, message = reply
    return _Q(
        names.sql(
            "WITH t AS ("
            "UPDATE {threads} th SET next_seq = next_seq + %(n)s, metadata = ("
            "SELECT COALESCE(jsonb_object_agg(e.key, e.value), jsonb_build_object()) "
            "FROM jsonb_each(th.metadata) e "
            "WHERE e.key <> ALL(%(remove)s::text[]) "
            "AND COALESCE(substring(e.key FROM '^(.+)#[1-9][0-9]*$'), e.key) "
            "<> ALL(%(clear)s::text[])"
            ") || %(set)s::jsonb "
            "WHERE id = %(thread_id)s "
            "RETURNING seq, next_seq - %(n)s AS first_seq, {now} AS created_at"
            "), {insert}, released AS (DELETE FROM {run_leases} "
            "WHERE thread_id = %(thread_id)s AND owner = %(owner)s) "
            "SELECT created_at FROM t",
            insert=names.sql(_INSERT_AFTER_T),
        ),
        {
            **_new_rows([message_id], [message]),
            "thread_id": thread_id,
            "owner": owner,
            "remove": sorted(patch.remove),
            "clear": sorted(patch.clear_fields),
            "set": Jsonb(patch.set),
        },
    )


def _q_message_get(names: _Names, thread_id: str, message_id: str) -> _Q:
    """A message's columns; NULLs if the thread exists but not the message."""
    # One row if the thread exists, with NULLs if the message is not in it.
    return _Q(
        names.sql(
            "SELECT {message_columns} FROM {threads} t "
            "LEFT JOIN {messages} m ON m.thread_seq = t.seq AND m.id = %s "
            "WHERE t.id = %s"
        ),
        (message_id, thread_id),
    )


def _q_message_cursors(
    names: _Names, thread_id: str, after: str | None, before: str | None
) -> _Q:
    """A thread's ``seq`` and those of the messages used as cursors."""
    return _Q(
        names.sql(
            "SELECT t.seq, "
            "(SELECT seq FROM {messages} WHERE id = %s AND thread_seq = t.seq), "
            "(SELECT seq FROM {messages} WHERE id = %s AND thread_seq = t.seq) "
            "FROM {threads} t WHERE t.id = %s"
        ),
        (after, before, thread_id),
    )


def _q_messages_list(
    names: _Names,
    thread_seq: int,
    after_seq: int,
    before_seq: int,
    *,
    desc: bool,
    limit: int | None,
) -> _Q:
    """A thread's messages strictly between two sequence numbers."""
    # Always both bounds and a LIMIT (NULL: none), so there are two statements to
    # prepare, not sixteen.
    return _Q(
        names.sql(
            "SELECT {message_columns} FROM {messages} m "
            "WHERE m.thread_seq = %s AND m.seq > %s AND m.seq < %s "
            "ORDER BY m.seq {order} LIMIT %s",
            order=sql.SQL("DESC" if desc else "ASC"),
        ),
        (thread_seq, after_seq, before_seq, limit),
    )


def _q_message_get_for_update(names: _Names, thread_id: str, message_id: str) -> _Q:
    """A message's row and its thread's ``seq``, locked for update."""
    return _Q(
        names.sql(
            "SELECT m.id, m.created_at, m.metadata, m.role, m.payload, m.thread_seq "
            "FROM {messages} m JOIN {threads} t ON t.seq = m.thread_seq "
            "WHERE t.id = %s AND m.id = %s FOR UPDATE OF m"
        ),
        (thread_id, message_id),
    )


def _q_message_set_metadata(
    names: _Names, thread_seq: int, message_id: str, metadata: dict[str, str]
) -> _Q:
    """Replace a message's metadata."""
    return _Q(
        names.sql(
            "UPDATE {messages} SET metadata = %s WHERE thread_seq = %s AND id = %s"
        ),
        (Jsonb(metadata), thread_seq, message_id),
    )


def _q_message_delete(names: _Names, thread_id: str, message_id: str) -> _Q:
    """Delete a message: whether the thread exists, whether it went."""
    return _Q(
        names.sql(
            "WITH t AS (SELECT seq FROM {threads} WHERE id = %s), "
            "gone AS (DELETE FROM {messages} m USING t "
            "WHERE m.thread_seq = t.seq AND m.id = %s RETURNING 1) "
            "SELECT EXISTS (SELECT FROM t), EXISTS (SELECT FROM gone)"
        ),
        (thread_id, message_id),
    )


def _q_messages_clear(
    names: _Names, thread_id: str, thread_metadata: dict[str, str] | None
) -> _Q:
    """Delete a thread's messages, replacing its metadata if given."""
    # The UPDATE locks the thread, so a clear and an append do not interleave.
    return _Q(
        names.sql(
            "WITH t AS (UPDATE {threads} "
            "SET metadata = COALESCE(%s::jsonb, metadata) WHERE id = %s "
            "RETURNING seq), "
            "gone AS (DELETE FROM {messages} m USING t "
            "WHERE m.thread_seq = t.seq RETURNING 1) "
            "SELECT (SELECT count(*) FROM gone) FROM t"
        ),
        (None if thread_metadata is None else Jsonb(thread_metadata), thread_id),
    )


def _q_messages_count(names: _Names, thread_id: str, after: str | None) -> _Q:
    """The cursor's ``seq`` and how many messages of the thread follow it."""
    return _Q(
        names.sql(
            "SELECT a.seq, (SELECT count(*) FROM {messages} m "
            "WHERE m.thread_seq = t.seq AND m.seq > COALESCE(a.seq, 0)) "
            "FROM {threads} t "
            "LEFT JOIN {messages} a ON a.thread_seq = t.seq AND a.id = %s "
            "WHERE t.id = %s"
        ),
        (after, thread_id),
    )


def _q_lease_acquire(names: _Names, thread_id: str, owner: str, ttl: float) -> _Q:
    """Take or renew a thread's lease: whether the thread exists, whether taken."""
    # clock_timestamp(), not the client's clock nor the transaction's start: hosts
    # with skewed clocks agree on when a lease expires.
    return _Q(
        names.sql(
            "WITH t AS (SELECT id FROM {threads} WHERE id = %(thread_id)s), "
            "taken AS (INSERT INTO {run_leases} AS l (thread_id, owner, expires_at) "
            "SELECT id, %(owner)s, "
            "clock_timestamp() + make_interval(secs => %(ttl)s::float8) FROM t "
            "ON CONFLICT (thread_id) DO UPDATE "
            "SET owner = excluded.owner, expires_at = excluded.expires_at "
            "WHERE l.expires_at < clock_timestamp() OR l.owner = excluded.owner "
            "RETURNING 1) "
            "SELECT EXISTS (SELECT FROM t), EXISTS (SELECT FROM taken)"
        ),
        {"thread_id": thread_id, "owner": owner, "ttl": float(ttl)},
    )


def _q_lease_release(names: _Names, thread_id: str, owner: str) -> _Q:
    """Drop a thread's lease if ``owner`` holds it."""
    return _Q(
        names.sql("DELETE FROM {run_leases} WHERE thread_id = %s AND owner = %s"),
        (thread_id, owner),
    )


# --- rows to records ---------------------------------------------------------------


def _assistant(row: Sequence[Any]) -> StoredAssistant:
    """A `StoredAssistant` from a row of ``assistant_columns``."""
    return StoredAssistant(
        id=row[0],
        created_at=row[1],
        metadata=row[2],
        **{name: row[i] for i, name in enumerate(ASSISTANT_FIELDS, start=3)},
    )


def _message(row: Sequence[Any], thread_id: str) -> StoredMessage:
    """A `StoredMessage` from a row of ``message_columns``."""
    # Empty metadata comes back as NULL, sparing a JSON decode per message. The
    # validating constructor is faster than model_construct in pydantic 2 here.
    return StoredMessage(
        id=row[0],
        created_at=row[1],
        metadata=row[2] or {},
        thread_id=thread_id,
        role=row[3],
        payload=row[4],
    )


def _check_prefix(table_prefix: str) -> None:
    """Check a table prefix.

    Raises:
        ValueError: If it is not lowercase letters, digits and underscores
            (not starting with a digit), at most 30 characters.
    """
    if not _PREFIX_RE.fullmatch(table_prefix):
        raise ValueError(
            f"table_prefix must be lowercase letters, digits and underscores, not "
            f"starting with a digit, at most 30 characters; got {table_prefix!r}"
        )


def _check_schema(schema: str) -> None:
    """Check a schema name.

    Raises:
        ValueError: If it is empty, longer than 63 bytes or holds a NUL.
    """
    if not schema or len(schema.encode()) > 63 or "\x00" in schema:
        raise ValueError(
            f"schema must be a PostgreSQL identifier of 1 to 63 bytes; got {schema!r}"
        )


def _seq_bound(newer: bool) -> sql.SQL:
    """A listing's condition on ``seq``: after a cursor if ``newer``, else before."""
    return sql.SQL("seq > %s" if newer else "seq < %s")
