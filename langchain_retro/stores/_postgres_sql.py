"""The SQL of `PostgresStore`: pure functions from names and arguments to statements.

Everything here is free of I/O, so the sync and async methods of
`langchain_retro.stores.postgres.PostgresStore` share it and only the code that talks
to the server differs between them:

* the layout: the migrations that create the tables (`_MIGRATIONS`, `SCHEMA_VERSION`)
  and the constant fragments the statements use (`_FRAGMENTS`);
* names: `_Names` quotes and schema-qualifies one store's tables and indexes, and
  `_check_schema` and `_check_prefix` validate what goes into them;
* statements: each ``_q_*`` function returns a `_Q`, one statement with its
  parameters, for an operation (`_Op`) to yield to a driver (those of runs are in
  `langchain_retro.stores._postgres_runs`);
* rows to records: `_assistant` and `_message` decode rows of our own schema.

The module imports ``psycopg.sql`` to compose statements, so, like
`langchain_retro.stores.postgres`, it raises `MissingDependencyError` naming the
``postgres`` extra when psycopg is not installed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Generator, Hashable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from pydantic import ValidationError

from langchain_retro._metadata import CLASS_KEY
from langchain_retro.errors import (
    CorruptDataError,
    MissingDependencyError,
    RetroValueError,
)
from langchain_retro.stores.base import (
    ASSISTANT_FIELDS,
    THREAD_ASSISTANT_KEY,
    MessageRow,
    NewMessage,
    StoredAssistant,
    StoredMessage,
    StoredThread,
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
    "_ACTIVE",
    "_ACTIVE_SQL",
    "_DEFAULT_SCHEMA",
    "_FRAGMENTS",
    "_INSERT_AFTER_T",
    "_LEASED",
    "_MAX_SEQ",
    "_NO_SEQ",
    "_Q",
    "_THREAD_COLUMNS",
    "_Copy",
    "_Names",
    "_Op",
    "_Rows",
    "_Step",
    "_assistant",
    "_check_prefix",
    "_check_schema",
    "_clash",
    "_copy_messages",
    "_filters",
    "_for_update",
    "_insert_after_t",
    "_message",
    "_message_row",
    "_new_rows",
    "_q_assistant_delete",
    "_q_assistant_get",
    "_q_assistant_insert",
    "_q_assistant_threads",
    "_q_assistant_update",
    "_q_bulk_advance",
    "_q_bulk_clash",
    "_q_busy",
    "_q_create_layout",
    "_q_create_migrations_table",
    "_q_create_schema",
    "_q_last_asked",
    "_q_lease_acquire",
    "_q_lease_get",
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
    "_q_messages_partitioned",
    "_q_migrate",
    "_q_record_migration",
    "_q_record_version",
    "_q_schema_version",
    "_q_seq_of",
    "_q_setup_state",
    "_q_thread_cursors",
    "_q_thread_delete",
    "_q_thread_get",
    "_q_thread_insert",
    "_q_thread_set_metadata",
    "_q_thread_walk",
    "_q_threads_insert",
    "_q_threads_lock",
    "_seq_bound",
    "_thread",
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
        "m.id, m.created_at, NULLIF(m.metadata, '{}'::jsonb), m.role, m.payload, "
        "m.run_id, m.assistant_id, m.reply_to"
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

_V1: tuple[str, ...] = (
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
)
"""Version 1: the first layout."""

_THREAD_METADATA: tuple[str, ...] = (
    # One row per metadata entry: every filtered listing is driven from this key.
    """CREATE TABLE {thread_metadata} (
        key text NOT NULL,
        value text NOT NULL,
        thread_seq bigint NOT NULL REFERENCES {threads} (seq) ON DELETE CASCADE,
        PRIMARY KEY (key, value, thread_seq)
    )""",
    # For deleting a thread's entries. A hash index, so that no plan can walk it in
    # thread order: the primary key stays the one ordered path for every filter.
    "CREATE INDEX {thread_metadata_by_thread} ON {thread_metadata} "
    "USING hash (thread_seq)",
    # Triggers keep it in the transaction that writes threads.metadata, whichever
    # statement (or hand) writes it.
    "CREATE FUNCTION {on_thread_insert}() RETURNS trigger LANGUAGE plpgsql "
    "AS {on_thread_insert_body}",
    "CREATE FUNCTION {on_thread_update}() RETURNS trigger LANGUAGE plpgsql "
    "AS {on_thread_update_body}",
    "CREATE TRIGGER {threads_metadata_insert} AFTER INSERT ON {threads} "
    "REFERENCING NEW TABLE AS added FOR EACH STATEMENT "
    "EXECUTE FUNCTION {on_thread_insert}()",
    "CREATE TRIGGER {threads_metadata_update} AFTER UPDATE OF metadata ON {threads} "
    "FOR EACH ROW WHEN (OLD.metadata IS DISTINCT FROM NEW.metadata) "
    "EXECUTE FUNCTION {on_thread_update}()",
)

_ACTIVE: tuple[str, ...] = ("queued", "in_progress", "cancelling")
"""The statuses of a run holding its thread's lease (`ACTIVE_RUN_STATUSES`), in the
order the partial index ``runs_active_index`` names them."""

_ACTIVE_SQL = "status IN (" + ", ".join(f"'{status}'" for status in _ACTIVE) + ")"
"""The predicate of ``runs_active_index``; queries repeat it to use the index."""

_RUNS: tuple[str, ...] = (
    # The Assistants API's runs: the columns queries use, and the rest as one body.
    """CREATE TABLE {runs} (
        seq bigserial PRIMARY KEY,
        thread_seq bigint NOT NULL REFERENCES {threads} (seq) ON DELETE CASCADE,
        id text NOT NULL,
        status text NOT NULL,
        created_at bigint NOT NULL,
        lease_owner text,
        body jsonb NOT NULL,
        CONSTRAINT {runs_id_key} UNIQUE (id)
    )""",
    "CREATE INDEX {runs_thread_index} ON {runs} (thread_seq, seq)",
    # The few runs that may hold a thread's lease: what begin_run lapses.
    "CREATE INDEX {runs_active_index} ON {runs} (thread_seq) WHERE " + _ACTIVE_SQL,
    # A run's messages, without a scan of its thread.
    "CREATE INDEX {messages_run_index} ON {messages} (thread_seq, run_id) "
    "WHERE run_id IS NOT NULL",
)

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _V1,
    (
        # Every unique key of messages holds the thread, as a table partitioned by
        # thread requires; reply links; a maintained count; the metadata side table.
        "ALTER TABLE {messages} DROP CONSTRAINT {messages_id_key}, "
        "ADD COLUMN run_id text, ADD COLUMN assistant_id text, "
        "ADD COLUMN reply_to text, "
        "ADD CONSTRAINT {messages_thread_id_key} UNIQUE (thread_seq, id)",
        "ALTER TABLE {threads} ADD COLUMN message_count bigint NOT NULL DEFAULT 0",
        "UPDATE {threads} t SET message_count = c.n FROM (SELECT thread_seq, "
        "count(*) AS n FROM {messages} GROUP BY thread_seq) c "
        "WHERE t.seq = c.thread_seq",
        *_THREAD_METADATA[:2],
        "INSERT INTO {thread_metadata} (key, value, thread_seq) "
        "SELECT e.key, e.value, t.seq FROM {threads} t, "
        "jsonb_each_text({object_of_t}) e WHERE e.value IS NOT NULL",
        "DROP INDEX {threads_metadata_index_qualified}",
        "DROP INDEX {threads_class_index_qualified}",
        *_THREAD_METADATA[2:],
    ),
    (
        # Runs as records, and each thread's running sum of their tokens.
        "ALTER TABLE {threads} "
        "ADD COLUMN prompt_tokens bigint NOT NULL DEFAULT 0, "
        "ADD COLUMN completion_tokens bigint NOT NULL DEFAULT 0, "
        "ADD COLUMN total_tokens bigint NOT NULL DEFAULT 0",
        *_RUNS,
    ),
)
"""Forward migrations; entry N brings the schema from version N to N + 1."""

_LAYOUT: tuple[str, ...] = (
    _V1[0],
    """CREATE TABLE {threads} (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        created_at bigint NOT NULL,
        metadata jsonb NOT NULL,
        next_seq bigint NOT NULL DEFAULT 1,
        message_count bigint NOT NULL DEFAULT 0,
        prompt_tokens bigint NOT NULL DEFAULT 0,
        completion_tokens bigint NOT NULL DEFAULT 0,
        total_tokens bigint NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE {messages} (
        thread_seq bigint NOT NULL REFERENCES {threads} (seq) ON DELETE CASCADE,
        seq bigint NOT NULL,
        id text NOT NULL,
        created_at bigint NOT NULL,
        role text NOT NULL,
        payload text NOT NULL,
        metadata jsonb NOT NULL,
        run_id text,
        assistant_id text,
        reply_to text,
        PRIMARY KEY (thread_seq, seq),
        CONSTRAINT {messages_thread_id_key} UNIQUE (thread_seq, id)
    ){partitioning}""",
    _V1[-1],
    *_THREAD_METADATA,
    *_RUNS,
)
"""The current layout, created at once in a new schema (the same as the migrations
give, except that ``messages`` may be partitioned)."""

SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this package creates and reads."""


# --- SQL: pure functions from names and arguments to a statement and its parameters --


class _Q(NamedTuple):
    """One statement and its parameters."""

    query: sql.Composed
    params: Sequence[Any] | Mapping[str, Any] | None = None


class _Copy(NamedTuple):
    """A ``COPY ... FROM STDIN`` and the rows it sends (answered with no rows)."""

    statement: sql.Composed
    rows: Sequence[Sequence[Any]]


_Rows = list[tuple[Any, ...]]
_Step = _Q | _Copy | tuple[_Q, ...]
"""A statement, a copy, or a batch of statements sent in one round trip."""
_Op = Generator[_Step, Any, T]
"""An operation: yields statements, receives their rows, returns its result.

A batch is pipelined in one implicit transaction (each statement sees the writes of
those before it) and answered with a list of rows, one per statement.
"""


def _quoted(*parts: str) -> str:
    """A (qualified) identifier quoted as PostgreSQL quotes it, for function bodies."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def _object_of(value: str) -> str:
    """SQL for ``value`` if it is a jsonb object, else ``{}`` (hand-edited rows)."""
    return f"CASE WHEN jsonb_typeof({value}) = 'object' THEN {value} ELSE '{{}}' END"


def _sync_bodies(schema: str, prefix: str) -> dict[str, sql.Composable]:
    """The bodies of the trigger functions keeping ``thread_metadata`` in step."""
    side = _quoted(schema, prefix + "thread_metadata")
    old, new = _object_of("OLD.metadata"), _object_of("NEW.metadata")
    # Only quoted identifiers go into these bodies; they are passed as one literal.
    on_insert = (
        f"BEGIN INSERT INTO {side} (key, value, thread_seq) "  # noqa: S608
        f"SELECT e.key, e.value, a.seq FROM added a, "
        f"jsonb_each_text({_object_of('a.metadata')}) e WHERE e.value IS NOT NULL; "
        "RETURN NULL; END"
    )
    # Only the entries that changed: a run moving hwm rewrites one row, not all.
    on_update = (
        "DECLARE old_metadata jsonb; new_metadata jsonb; k text; v text; "  # noqa: S608
        f"BEGIN old_metadata := {old}; new_metadata := {new}; "
        "FOR k, v IN SELECT key, value FROM jsonb_each_text(old_metadata) LOOP "
        "IF v IS NOT NULL AND (new_metadata ->> k) IS DISTINCT FROM v THEN "
        f"DELETE FROM {side} "
        "WHERE key = k AND value = v AND thread_seq = OLD.seq; "
        "END IF; END LOOP; "
        "FOR k, v IN SELECT key, value FROM jsonb_each_text(new_metadata) LOOP "
        "IF v IS NOT NULL AND (old_metadata ->> k) IS DISTINCT FROM v THEN "
        f"INSERT INTO {side} (key, value, thread_seq) VALUES (k, v, NEW.seq); "
        "END IF; END LOOP; RETURN NULL; END"
    )
    return {
        "on_thread_insert_body": sql.Literal(on_insert),
        "on_thread_update_body": sql.Literal(on_update),
    }


_Composed = sql.Composed


class _Names:
    """The quoted, schema-qualified names of one store's tables and indexes."""

    def __init__(self, schema: str, prefix: str, *, partitions: int = 0) -> None:
        self.schema = schema
        self.prefix = prefix
        self.partitions = partitions
        self.by_name: dict[str, sql.Composable] = {
            name: sql.Identifier(schema, prefix + name)
            for name in (
                "assistants",
                "threads",
                "thread_metadata",
                "messages",
                "run_leases",
                "runs",
                "schema_migrations",
                "on_thread_insert",
                "on_thread_update",
            )
        }
        # Index, constraint and trigger names take their table's schema: they are
        # unqualified where they are created.
        for name in (
            "threads_metadata_index",
            "threads_class_index",
            "thread_metadata_by_thread",
            "messages_id_key",
            "messages_thread_id_key",
            "threads_metadata_insert",
            "threads_metadata_update",
            "runs_id_key",
            "runs_thread_index",
            "runs_active_index",
            "messages_run_index",
        ):
            self.by_name[name] = sql.Identifier(prefix + name)
        for index in ("threads_metadata_index", "threads_class_index"):
            self.by_name[index + "_qualified"] = sql.Identifier(schema, prefix + index)
        self.by_name["schema"] = sql.Identifier(schema)
        self.by_name["object_of_t"] = sql.SQL(_object_of("t.metadata"))
        self.by_name["partitioning"] = sql.SQL(
            " PARTITION BY HASH (thread_seq)" if partitions else ""
        )
        self.by_name.update(_sync_bodies(schema, prefix))
        self.by_name.update(_FRAGMENTS)
        self._built: dict[Hashable, _Composed] = {}

    def sql(self, template: str, **fragments: sql.Composable) -> sql.Composed:
        """Fill a template's ``{name}`` placeholders: tables, fragments, these."""
        return sql.SQL(template).format(**self.by_name, **fragments)

    def built(self, key: Hashable, build: Callable[[], _Composed]) -> _Composed:
        """The statement ``key`` names, built once per store by ``build``.

        For the statements of every run, which cost more to compose and render than
        to send: kept rendered, as one piece of SQL that psycopg only encodes.
        """
        statement = self._built.get(key)
        if statement is None:
            text = build().as_string(None)
            statement = self._built[key] = sql.Composed([sql.SQL(text)])
        return statement


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


def _q_create_layout(names: _Names) -> _Q:
    """Create the current layout in a new schema, ``messages`` partitioned if asked."""
    statements = [names.sql(s) for s in _LAYOUT]
    for remainder in range(names.partitions):
        statements.append(
            names.sql(
                "CREATE TABLE {partition} PARTITION OF {messages} "
                "FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})",
                partition=sql.Identifier(
                    names.schema, f"{names.prefix}messages_p{remainder}"
                ),
                modulus=sql.Literal(names.partitions),
                remainder=sql.Literal(remainder),
            )
        )
    return _Q(sql.SQL(";\n").join(statements))


def _q_record_version(names: _Names) -> _Q:
    """Record that a new schema was created at the current version."""
    return _Q(
        names.sql("INSERT INTO {schema_migrations} (version) VALUES (%s)"),
        (SCHEMA_VERSION,),
    )


def _q_messages_partitioned(names: _Names) -> _Q:
    """Whether the ``messages`` table is partitioned."""
    return _Q(
        names.sql(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_partitioned_table p "
            "JOIN pg_catalog.pg_class c ON c.oid = p.partrelid "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s)"
        ),
        (names.schema, names.prefix + "messages"),
    )


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
        names.sql(
            "SELECT thread_seq FROM {thread_metadata} "
            "WHERE key = {assistant_key} AND value = %s"
        ),
        (assistant_id,),
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


def _q_threads_insert(names: _Names, thread_ids: list[str], metadatas: list[str]) -> _Q:
    """Insert threads in one statement; returns the ``created_at`` they share."""
    return _Q(
        names.sql(
            "WITH added AS (INSERT INTO {threads} (id, created_at, metadata) "
            "SELECT new.id, {now}, new.metadata::jsonb "
            "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY "
            "AS new (id, metadata, ord) ORDER BY new.ord RETURNING 1) "
            "SELECT {now}, (SELECT count(*) FROM added)"
        ),
        (thread_ids, metadatas),
    )


_WALK = """WITH RECURSIVE walk (bound, hit, found) AS (
SELECT %(start)s::bigint, NULL::bigint, 0
UNION ALL
SELECT CASE WHEN s.near = s.far THEN s.near {step} 1 ELSE s.far END,
CASE WHEN s.near = s.far THEN s.near END,
w.found + CASE WHEN s.near = s.far THEN 1 ELSE 0 END
FROM walk w CROSS JOIN LATERAL (
SELECT {nearest}({probes}) AS near, {farthest}({probes}) AS far
FROM (SELECT {probe_columns} OFFSET 0) p WHERE {all_found}
) s
WHERE w.found < %(limit)s)
SELECT t.id, t.created_at, t.metadata FROM walk w
CROSS JOIN LATERAL (SELECT th.id, th.created_at, th.metadata FROM {threads} th
WHERE th.seq = w.hit LIMIT 1) t
ORDER BY w.hit {direction}"""

_PROBE = (
    "(SELECT {aggregate}(f.thread_seq) FROM unnest(%(values{i})s::text[]) AS v (value) "
    "CROSS JOIN LATERAL (SELECT f.thread_seq FROM {thread_metadata} f "
    "WHERE f.key = %(key{i})s AND f.value = v.value AND f.thread_seq {towards} w.bound "
    "AND f.thread_seq >= %(lo)s AND f.thread_seq <= %(hi)s "
    "ORDER BY f.thread_seq {direction} LIMIT 1) f)"
)
"""A filter's nearest thread at or beyond the bound, for one of several values."""

_PROBE_ONE = (
    "(SELECT f.thread_seq FROM {thread_metadata} f "
    "WHERE f.key = %(key{i})s AND f.value = %(values{i})s "
    "AND f.thread_seq {towards} w.bound "
    "AND f.thread_seq >= %(lo)s AND f.thread_seq <= %(hi)s "
    "ORDER BY f.thread_seq {direction} LIMIT 1)"
)
"""The same for a filter of one value (a metadata filter): one index descent."""


def _q_thread_walk(
    names: _Names,
    filters: Sequence[tuple[str, Sequence[str]]],
    lo: int,
    hi: int,
    *,
    desc: bool,
    limit: int,
) -> _Q:
    """A filtered page of threads, driven from ``thread_metadata``'s primary key.

    Each filter is a key and the values it may take (one for a metadata filter, the
    class names for a class filter). The walk is a leapfrog join over the filters:
    each step probes every filter for its nearest thread at or beyond the bound (one
    descent of the ``(key, value, thread_seq)`` index per value), takes the thread if
    all agree and otherwise jumps to the farthest of them. A page costs
    O((page + skips) log N) whatever the values' frequencies, and every probe is an
    index descent with ``LIMIT 1``, so no statistics or generic plan turn it into a
    scan. ``lo`` and ``hi`` bound the thread ``seq`` (inclusive).
    """
    if not filters:
        raise ValueError("a walk needs at least one filter")
    params: dict[str, Any] = {
        "start": hi if desc else lo,
        "lo": lo,
        "hi": hi,
        "limit": limit,
    }
    probes: list[sql.Composable] = []
    for i, (key, values) in enumerate(filters):
        params[f"key{i}"] = key
        params[f"values{i}"] = values[0] if len(values) == 1 else list(values)
        probes.append(
            names.sql(
                (_PROBE_ONE if len(values) == 1 else _PROBE).replace("{i}", str(i)),
                aggregate=sql.SQL("max" if desc else "min"),
                towards=sql.SQL("<=" if desc else ">="),
                direction=sql.SQL("DESC" if desc else "ASC"),
            )
        )
    columns = [sql.Identifier(f"p{i}") for i in range(len(filters))]
    return _Q(
        names.sql(
            _WALK,
            step=sql.SQL("-" if desc else "+"),
            nearest=sql.SQL("greatest" if desc else "least"),
            farthest=sql.SQL("least" if desc else "greatest"),
            probes=sql.SQL(", ").join(columns),
            probe_columns=sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(probe, column)
                for probe, column in zip(probes, columns, strict=True)
            ),
            all_found=sql.SQL(" AND ").join(
                sql.SQL("{} IS NOT NULL").format(column) for column in columns
            ),
            direction=sql.SQL("DESC" if desc else "ASC"),
        ),
        params,
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
def _insert_after_t(run_id: str = "new.run_id") -> str:
    """`_INSERT_AFTER_T`, with another expression for the messages' ``run_id``."""
    return _INSERT_AFTER_T.replace(
        "new.metadata, new.run_id,", f"new.metadata, {run_id},"
    )


_INSERT_AFTER_T = (
    "added AS ("
    "INSERT INTO {messages} (thread_seq, seq, id, created_at, role, payload, "
    "metadata, run_id, assistant_id, reply_to) "
    "SELECT t.seq, t.first_seq + new.ord - 1, new.id, "
    "COALESCE(new.created_at, t.created_at), new.role, new.payload, "
    "new.metadata, new.run_id, new.assistant_id, new.reply_to "
    "FROM t, ROWS FROM (json_to_recordset(%(rows)s::json) AS (id text, "
    "created_at bigint, role text, payload text, metadata jsonb, run_id text, "
    "assistant_id text, reply_to text)) WITH ORDINALITY "
    "AS new (id, created_at, role, payload, metadata, run_id, assistant_id, "
    "reply_to, ord))"
)

# The first of the caller's ids already in the thread: if any, nothing is written.
# The unique key (thread_seq, id) still refuses one that a concurrent append adds.
_CLASH = (
    "clash AS (SELECT m.id FROM {messages} m "
    "WHERE m.thread_seq = (SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
    "AND m.id = ANY(%(caller_ids)s::text[]) LIMIT 1)"
)

# Whether %(owner)s holds the thread's lease (ours if we just took it).
_LEASED = (
    "EXISTS (SELECT FROM {run_leases} "
    "WHERE thread_id = %(thread_id)s AND owner = %(owner)s)"
)


# The thread's newest run does not wait for tool outputs (`add_messages_if_idle`).
_IDLE = (
    "AND (SELECT r.status FROM {runs} r WHERE r.thread_seq = "
    "(SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
    "ORDER BY r.seq DESC LIMIT 1) IS DISTINCT FROM 'requires_action' "
)


# The thread's metadata holds every pair of %(scope)s (`add_messages_if_idle`).
_IN_SCOPE = "AND metadata @> %(scope)s::jsonb "


def _q_in_scope(names: _Names, thread_id: str, scope: Mapping[str, str]) -> _Q:
    """One row: whether the thread exists with metadata holding ``scope``'s pairs."""
    return _Q(
        names.sql(
            "SELECT EXISTS (SELECT FROM {threads} WHERE id = %(thread_id)s "
            "AND metadata @> %(scope)s::jsonb)"
        ),
        {"thread_id": thread_id, "scope": Jsonb(dict(scope))},
    )


def _q_busy(names: _Names, thread_id: str) -> _Q:
    """Why a thread refused a message: whether it is leased, its newest run, status."""
    return _Q(
        names.sql(
            "SELECT EXISTS (SELECT FROM {run_leases} WHERE thread_id = %(thread_id)s "
            "AND expires_at >= clock_timestamp()), r.id, r.status "
            "FROM (SELECT) AS one LEFT JOIN (SELECT id, status FROM {runs} "
            "WHERE thread_seq = (SELECT seq FROM {threads} WHERE id = %(thread_id)s) "
            "ORDER BY seq DESC LIMIT 1) AS r ON true"
        ),
        {"thread_id": thread_id},
    )


# Without caller ids there is nothing to look for: a CTE the planner folds away.
_NO_CLASH = "clash AS (SELECT NULL::text AS id WHERE false)"


def _clash(messages: Sequence[NewMessage]) -> str:
    """The ``clash`` CTE for these messages: `_CLASH` only if one has a caller id."""
    return _CLASH if any(m.id is not None for m in messages) else _NO_CLASH


def _new_rows(ids: list[str], messages: Sequence[NewMessage]) -> dict[str, Any]:
    """The parameters `_INSERT_AFTER_T` reads: the new messages as one JSON array.

    One JSON text costs the client a ``json.dumps`` where eight arrays cost psycopg
    an escaping pass per element (about ten times as long), and the server one parse.
    """
    rows = [
        {
            "id": message_id,
            "created_at": m.created_at,
            "role": m.role,
            "payload": m.payload,
            "metadata": m.metadata,
            "run_id": m.run_id,
            "assistant_id": m.assistant_id,
            "reply_to": m.reply_to,
        }
        for message_id, m in zip(ids, messages, strict=True)
    ]
    return {
        "n": len(messages),
        "caller_ids": [m.id for m in messages if m.id is not None],
        "rows": json.dumps(rows, ensure_ascii=False, separators=(",", ":")),
    }


def _q_messages_append(
    names: _Names,
    thread_id: str,
    ids: list[str],
    messages: Sequence[NewMessage],
    thread_metadata: dict[str, str] | None,
    *,
    leased_by: str | None = None,
    usage: tuple[int, int, int] = (0, 0, 0),
    check_ids: bool = True,
    idle: bool = False,
    scope: Mapping[str, str] | None = None,
) -> _Q:
    """Append messages to a thread, replacing its metadata if given.

    One row: the ``created_at`` given to the messages (NULL if nothing was written),
    and the first caller id already in the thread (then nothing was written).

    Args:
        names: The store's names.
        thread_id: The thread.
        ids: The messages' ids.
        messages: The messages.
        thread_metadata: The thread's new metadata; ``None`` keeps it.
        leased_by: Append only if this owner holds the thread's lease.
        usage: Prompt, completion and total tokens added to the thread's sums.
        check_ids: Look for caller ids the thread already holds first, and write
            nothing if there is one; without it the unique key refuses them, which
            ends the statement's transaction with an error.
        idle: Append only if the thread's newest run does not wait for tool
            outputs (``requires_action``); with ``leased_by``, a thread no run holds.
        scope: Append only if the thread's metadata holds these pairs.
    """
    # The UPDATE takes the thread's row lock, so appenders to one thread take turns
    # and each gets a contiguous block of the sequence; the INSERT is in the same
    # statement, hence the same transaction, even in autocommit. With leased_by,
    # nothing is appended unless that owner holds the lease.
    return _Q(
        names.sql(
            "WITH {clash}, t AS ("
            "UPDATE {threads} SET next_seq = next_seq + %(n)s, "
            "message_count = message_count + %(n)s, "
            "metadata = COALESCE(%(metadata)s::jsonb, metadata), "
            "prompt_tokens = prompt_tokens + %(prompt_tokens)s, "
            "completion_tokens = completion_tokens + %(completion_tokens)s, "
            "total_tokens = total_tokens + %(total_tokens)s "
            "WHERE id = %(thread_id)s AND NOT EXISTS (SELECT FROM clash) "
            "AND (%(owner)s::text IS NULL OR {leased}) {idle}{scope}"
            "RETURNING seq, next_seq - %(n)s AS first_seq, {now} AS created_at"
            "), {insert} SELECT (SELECT created_at FROM t), (SELECT id FROM clash)",
            clash=names.sql(_clash(messages) if check_ids else _NO_CLASH),
            leased=names.sql(_LEASED),
            idle=names.sql(_IDLE if idle else ""),
            scope=names.sql(_IN_SCOPE if scope is not None else ""),
            insert=names.sql(_INSERT_AFTER_T),
        ),
        {
            "scope": None if scope is None else Jsonb(dict(scope)),
            **_new_rows(ids, messages),
            "metadata": None if thread_metadata is None else Jsonb(thread_metadata),
            "thread_id": thread_id,
            "owner": leased_by,
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[2],
        },
    )


def _q_last_asked(names: _Names, thread_seq: int) -> _Q:
    """The id of a thread's newest message that is not an assistant's."""
    return _Q(
        names.sql(
            "SELECT id FROM {messages} WHERE thread_seq = %s AND role <> 'assistant' "
            "ORDER BY seq DESC LIMIT 1"
        ),
        (thread_seq,),
    )


def _q_threads_lock(names: _Names, thread_ids: list[str]) -> _Q:
    """Lock threads in ``seq`` order: their id, ``seq``, ``next_seq``, and now."""
    # One order for every bulk writer, so two of them cannot deadlock.
    return _Q(
        names.sql(
            "SELECT id, seq, next_seq, {now} FROM {threads} "
            "WHERE id = ANY(%s::text[]) ORDER BY seq FOR NO KEY UPDATE"
        ),
        (thread_ids,),
    )


def _q_bulk_clash(names: _Names, thread_seqs: list[int], ids: list[str]) -> _Q:
    """The first ``(thread_seq, id)`` given that a message already has."""
    # Binary parameters: psycopg quotes each element of a text array in Python,
    # three times the cost of the binary form for a batch of thousands of ids.
    return _Q(
        names.sql(
            "SELECT c.thread_seq, c.id FROM unnest(%b::bigint[], %b::text[]) "
            "AS c (thread_seq, id) WHERE EXISTS (SELECT FROM {messages} m "
            "WHERE m.thread_seq = c.thread_seq AND m.id = c.id) LIMIT 1"
        ),
        (thread_seqs, ids),
    )


_MESSAGE_COPY_COLUMNS = (
    "thread_seq",
    "seq",
    "id",
    "created_at",
    "role",
    "payload",
    "metadata",
    "run_id",
    "assistant_id",
    "reply_to",
)
"""The columns of a row `_copy_messages` sends, in order."""


def _copy_messages(names: _Names, rows: Sequence[Sequence[Any]]) -> _Copy:
    """Copy message rows (`_MESSAGE_COPY_COLUMNS`, metadata as JSON text) in."""
    return _Copy(
        names.sql(
            "COPY {messages} ({columns}) FROM STDIN",
            columns=sql.SQL(", ").join(map(sql.Identifier, _MESSAGE_COPY_COLUMNS)),
        ),
        rows,
    )


def _q_bulk_advance(names: _Names, thread_seqs: list[int], counts: list[int]) -> _Q:
    """Move each thread's ``next_seq`` and ``message_count`` by its count."""
    return _Q(
        names.sql(
            "UPDATE {threads} t SET next_seq = t.next_seq + c.n, "
            "message_count = t.message_count + c.n "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS c (seq, n) WHERE t.seq = c.seq"
        ),
        (thread_seqs, counts),
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
    """A message's columns and its thread's ``seq``, locked for update."""
    return _Q(
        names.sql(
            "SELECT {message_columns}, m.thread_seq "
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


def _q_message_delete(names: _Names, thread_seq: int, message_id: str) -> _Q:
    """Delete a message of a locked thread, counting it; whether it went."""
    return _Q(
        names.sql(
            "WITH gone AS (DELETE FROM {messages} "
            "WHERE thread_seq = %(thread_seq)s AND id = %(id)s RETURNING 1), "
            "counted AS (UPDATE {threads} SET message_count = message_count - 1 "
            "WHERE seq = %(thread_seq)s AND EXISTS (SELECT FROM gone)) "
            "SELECT EXISTS (SELECT FROM gone)"
        ),
        {"thread_seq": thread_seq, "id": message_id},
    )


def _q_messages_clear(
    names: _Names, thread_seq: int, thread_metadata: dict[str, str] | None
) -> _Q:
    """Delete the messages of a locked thread, replacing its metadata if given."""
    # The thread was locked by an earlier statement of the transaction, so this one's
    # snapshot holds every message appended before: the count comes back to zero.
    return _Q(
        names.sql(
            "WITH gone AS (DELETE FROM {messages} WHERE thread_seq = %(thread_seq)s "
            "RETURNING 1), "
            "t AS (UPDATE {threads} SET message_count = 0, "
            "metadata = COALESCE(%(metadata)s::jsonb, metadata) "
            "WHERE seq = %(thread_seq)s) "
            "SELECT count(*) FROM gone"
        ),
        {
            "thread_seq": thread_seq,
            "metadata": None if thread_metadata is None else Jsonb(thread_metadata),
        },
    )


def _q_messages_count(names: _Names, thread_id: str, after: str | None) -> _Q:
    """The cursor's ``seq`` and how many messages of the thread follow it."""
    if after is None:
        # The maintained count: one row read, whatever the thread's length.
        return _Q(
            names.sql("SELECT NULL, message_count FROM {threads} WHERE id = %s"),
            (thread_id,),
        )
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
    """Take or renew a thread's lease: whether the thread exists; if taken, until when.

    One row: whether the thread exists, and the lease's expiry in Unix seconds (NULL
    if another owner holds it).
    """
    # clock_timestamp(), not the client's clock nor the transaction's start: hosts
    # with skewed clocks agree on when a lease expires.
    return _Q(
        names.built(
            "lease_acquire",
            lambda: names.sql(
                "WITH t AS (SELECT id FROM {threads} WHERE id = %(thread_id)s), "
                "taken AS (INSERT INTO {run_leases} AS l "
                "(thread_id, owner, expires_at) "
                "SELECT id, %(owner)s, "
                "clock_timestamp() + make_interval(secs => %(ttl)s::float8) FROM t "
                "ON CONFLICT (thread_id) DO UPDATE "
                "SET owner = excluded.owner, expires_at = excluded.expires_at "
                "WHERE l.expires_at < clock_timestamp() OR l.owner = excluded.owner "
                "RETURNING extract(epoch FROM l.expires_at)::float8 AS expires_at) "
                "SELECT EXISTS (SELECT FROM t), (SELECT expires_at FROM taken)"
            ),
        ),
        {"thread_id": thread_id, "owner": owner, "ttl": float(ttl)},
    )


def _q_lease_release(names: _Names, thread_id: str, owner: str) -> _Q:
    """Drop a thread's lease if ``owner`` holds it."""
    return _Q(
        names.sql("DELETE FROM {run_leases} WHERE thread_id = %s AND owner = %s"),
        (thread_id, owner),
    )


def _q_lease_get(names: _Names, thread_id: str) -> _Q:
    """A thread's lease if held and not expired: owner, expiry in Unix seconds."""
    return _Q(
        names.sql(
            "SELECT owner, extract(epoch FROM expires_at)::float8 FROM {run_leases} "
            "WHERE thread_id = %s AND expires_at >= clock_timestamp()"
        ),
        (thread_id,),
    )


# --- rows to records ---------------------------------------------------------------


def _corrupt(kind: str, object_id: str, thread_id: str | None, exc: Exception) -> str:
    """The message of a `CorruptDataError` for a row that no longer rebuilds."""
    where = "" if thread_id is None or kind == "Thread" else f" in thread {thread_id!r}"
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"{kind} {object_id!r}{where} is stored in a form this package cannot read "
        f"({reason}); it was changed outside langchain-retro. Restore the row from a "
        "backup or delete it; other rows stay readable."
    )


def _assistant(row: Sequence[Any]) -> StoredAssistant:
    """A `StoredAssistant` from a row of ``assistant_columns``."""
    try:
        return StoredAssistant(
            id=row[0],
            created_at=row[1],
            metadata=row[2],
            **{name: row[i] for i, name in enumerate(ASSISTANT_FIELDS, start=3)},
        )
    except ValidationError as exc:
        message = _corrupt("Assistant", row[0], None, exc)
        raise CorruptDataError(message, object_id=row[0]) from exc


def _thread(thread_id: str, created_at: Any, metadata: Any) -> StoredThread:
    """A `StoredThread` from its columns."""
    try:
        return StoredThread(id=thread_id, created_at=created_at, metadata=metadata)
    except ValidationError as exc:
        message = _corrupt("Thread", thread_id, thread_id, exc)
        raise CorruptDataError(
            message, object_id=thread_id, thread_id=thread_id
        ) from exc


def _message(row: Sequence[Any], thread_id: str) -> StoredMessage:
    """A `StoredMessage` from a row of ``message_columns``."""
    # Empty metadata comes back as NULL, sparing a JSON decode per message. The
    # validating constructor is faster than model_construct in pydantic 2 here.
    try:
        return StoredMessage(
            id=row[0],
            created_at=row[1],
            metadata=row[2] or {},
            thread_id=thread_id,
            role=row[3],
            payload=row[4],
            run_id=row[5],
            assistant_id=row[6],
            reply_to=row[7],
        )
    except ValidationError as exc:
        message = _corrupt("Message", row[0], thread_id, exc)
        raise CorruptDataError(message, object_id=row[0], thread_id=thread_id) from exc


def _message_row(row: Sequence[Any], thread_id: str) -> MessageRow:
    """A run's context row from a row of ``message_columns``: `_message`, as a tuple.

    The columns' types are the schema's; a row with metadata (rare) is checked by
    `_message`, which names what is wrong with it.
    """
    if row[2] is None:  # the metadata column
        return MessageRow.plain(row, thread_id)
    return MessageRow.of(_message(row, thread_id))


def _check_prefix(table_prefix: str) -> None:
    """Check a table prefix.

    Raises:
        RetroValueError: If it is not lowercase letters, digits and underscores
            (not starting with a digit), at most 30 characters.
    """
    if not _PREFIX_RE.fullmatch(table_prefix):
        raise RetroValueError(
            f"table_prefix must be lowercase letters, digits and underscores, not "
            f"starting with a digit, at most 30 characters; got {table_prefix!r}"
        )


def _check_schema(schema: str) -> None:
    """Check a schema name.

    Raises:
        RetroValueError: If it is empty, longer than 63 bytes or holds a NUL.
    """
    if not schema or len(schema.encode()) > 63 or "\x00" in schema:
        raise RetroValueError(
            f"schema must be a PostgreSQL identifier of 1 to 63 bytes; got {schema!r}"
        )


def _seq_bound(newer: bool) -> sql.SQL:
    """A listing's condition on ``seq``: after a cursor if ``newer``, else before."""
    return sql.SQL("seq > %s" if newer else "seq < %s")
