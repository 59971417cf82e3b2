"""PostgreSQL schema versions: upgrading a version 1 or 2 database keeps its data.

A schema is built at an older version with the statements that version shipped,
filled through SQL as that version wrote it, then upgraded by `PostgresStore.setup`.
The upgraded layout must be the one a new schema gets (partitioned too), and the data
must read back through the store unchanged, with the new parts filled in: per-thread
message ids, counts and the metadata index (version 2), runs and the threads' token
sums (version 3).
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from conftest import postgres_url

from langchain_retro import MessageIdConflictError
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import (
    ACTIVE_RUN_STATUSES,
    NewMessage,
    RunUpdate,
    RunUsage,
    ThreadQuery,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")
postgres_module = pytest.importorskip("langchain_retro.stores.postgres")
sql_module = pytest.importorskip("langchain_retro.stores._postgres_sql")
PostgresStore = postgres_module.PostgresStore


@pytest.fixture
def schemas() -> Iterator[Callable[[], str]]:
    """Fresh schema names; each schema is dropped after the test."""
    url = postgres_url()
    made: list[str] = []

    def fresh() -> str:
        made.append(f"test_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield fresh
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in made:
            conn.execute(
                psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    psycopg.sql.Identifier(schema)
                )
            )


def run(query: Any, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        cursor = conn.execute(query, params or None)
        return cursor.fetchall() if cursor.description is not None else []


def create_version(schema: str, version: int) -> None:
    """The schema as a version of the package migrated it from version 1."""
    names = sql_module._Names(schema, "retro_")
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(sql_module._q_create_schema(names).query)
        conn.execute(sql_module._q_create_migrations_table(names).query)
        for number in range(version):
            conn.execute(sql_module._q_migrate(names, number).query)
            record = sql_module._q_record_migration(names, number)
            conn.execute(record.query, record.params)


def create_version_1(schema: str) -> None:
    """The schema as version 1 of the package created it."""
    create_version(schema, 1)


# The threads table as version 2 created it in a new schema; its other tables were
# created as version 3 creates them.
THREADS_V2 = """CREATE TABLE {threads} (
    seq bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    metadata jsonb NOT NULL,
    next_seq bigint NOT NULL DEFAULT 1,
    message_count bigint NOT NULL DEFAULT 0
)"""


def create_partitioned_version_2(schema: str, partitions: int) -> None:
    """A new schema as version 2 created it with ``message_partitions``."""
    names = sql_module._Names(schema, "retro_", partitions=partitions)
    layout = [
        THREADS_V2 if "CREATE TABLE {threads}" in statement else statement
        for statement in sql_module._LAYOUT
        if statement not in sql_module._RUNS
    ]
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(sql_module._q_create_schema(names).query)
        conn.execute(sql_module._q_create_migrations_table(names).query)
        for statement in layout:
            conn.execute(names.sql(statement))
        for remainder in range(partitions):
            conn.execute(
                f'CREATE TABLE "{schema}".retro_messages_p{remainder} PARTITION OF '
                f'"{schema}".retro_messages FOR VALUES WITH (MODULUS {partitions}, '
                f"REMAINDER {remainder})"
            )
        conn.execute(f'INSERT INTO "{schema}".retro_schema_migrations VALUES (2)')


def payload(text: str) -> str:
    return json.dumps({"type": "human", "data": {"content": text}})


def fill_version_1(schema: str) -> None:
    """Two threads, five messages, a lease: written as version 1 wrote them."""
    q = f'"{schema}".'
    run(
        f"INSERT INTO {q}retro_threads (id, created_at, metadata, next_seq) VALUES "
        '(\'thread_a\', 100, \'{"customer": "c1", "retro_class": "Ticket"}\', 4), '
        "('thread_b', 200, '{\"customer\": \"c2\"}', 3)"
    )
    run(
        f"INSERT INTO {q}retro_messages (thread_seq, seq, id, created_at, role, "
        "payload, metadata) VALUES "
        "(1, 1, 'msg_a1', 101, 'user', %s, '{}'), "
        "(1, 2, 'msg_a2', 102, 'assistant', %s, '{\"k\": \"v\"}'), "
        "(1, 3, 'msg_a3', 103, 'user', %s, '{}'), "
        "(2, 1, 'msg_b1', 201, 'user', %s, '{}'), "
        "(2, 2, 'msg_b2', 202, 'user', %s, '{}')",
        *(payload(t) for t in ("a1", "a2", "a3", "b1", "b2")),
    )
    run(
        f"INSERT INTO {q}retro_run_leases (thread_id, owner, expires_at) "
        "VALUES ('thread_a', 'run_1', now() + interval '1 hour')"
    )


def test_upgrade_from_version_1_keeps_the_data(schemas: Callable[[], str]) -> None:
    schema = schemas()
    create_version_1(schema)
    fill_version_1(schema)
    with PostgresStore.from_connection_string(postgres_url(), schema=schema) as store:
        store.setup()
        versions = run(f'SELECT version FROM "{schema}".retro_schema_migrations')
        assert [v for (v,) in versions] == [1, 2, 3]

        a = store.get_thread("thread_a")
        assert (a.created_at, a.metadata) == (
            100,
            {"customer": "c1", "retro_class": "Ticket"},
        )
        rows = store.list_messages("thread_a")
        assert [(r.id, r.created_at, r.role, r.metadata) for r in rows] == [
            ("msg_a1", 101, "user", {}),
            ("msg_a2", 102, "assistant", {"k": "v"}),
            ("msg_a3", 103, "user", {}),
        ]
        assert [r.payload for r in rows] == [payload(t) for t in ("a1", "a2", "a3")]
        assert all((r.run_id, r.assistant_id, r.reply_to) == (None,) * 3 for r in rows)
        # Counts were filled in, and are kept from here on.
        assert store.count_messages("thread_a") == 3
        assert store.count_messages("thread_b") == 2
        # The metadata index was filled in: filters find the old threads.
        found = store.list_threads(ThreadQuery(metadata={"customer": "c2"}))
        assert [t.id for t in found] == ["thread_b"]
        found = store.list_threads(ThreadQuery(classes=("Ticket",)))
        assert [t.id for t in found] == ["thread_a"]
        lease = store.get_lease("thread_a")
        assert lease is not None
        assert lease.owner == "run_1"

        # Message ids are now unique per thread, not across threads.
        (copy,) = store.add_messages(
            "thread_b", [NewMessage(role="user", payload=payload("x"), id="msg_a1")]
        )
        assert copy.id == "msg_a1"
        with pytest.raises(MessageIdConflictError):
            store.add_messages(
                "thread_a", [NewMessage(role="user", payload=payload("y"), id="msg_a1")]
            )
        # Appends go on after the old sequence; a patched thread stays findable.
        store.add_messages("thread_a", [NewMessage(role="user", payload=payload("a4"))])
        assert [r.id for r in store.list_messages("thread_a")][:3] == [
            "msg_a1",
            "msg_a2",
            "msg_a3",
        ]
        assert store.count_messages("thread_a") == 4
        store.update_thread("thread_a", MetadataPatch(set={"customer": "c9"}))
        assert store.list_threads(ThreadQuery(metadata={"customer": "c1"})) == []
        found = store.list_threads(ThreadQuery(metadata={"customer": "c9"}))
        assert [t.id for t in found] == ["thread_a"]
        # A second setup is a no-op.
        store.setup()
        versions = run(f'SELECT version FROM "{schema}".retro_schema_migrations')
        assert [v for (v,) in versions] == [1, 2, 3]


def layout(schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Columns, constraints, indexes and triggers of a schema, names made relative."""

    def rows(query: str) -> list[tuple[Any, ...]]:
        found = run(query, schema)
        return sorted(
            tuple(
                str(v).replace(f'"{schema}".', "").replace(f"{schema}.", "")
                for v in row
            )
            for row in found
        )

    return {
        "columns": rows(
            "SELECT table_name, ordinal_position, column_name, data_type, "
            "is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = %s"
        ),
        "constraints": rows(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = %s"
        ),
        "indexes": rows(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = %s"
        ),
        "triggers": rows(
            "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND NOT t.tgisinternal"
        ),
    }


@pytest.mark.parametrize("version", [1, 2])
def test_an_upgraded_schema_has_the_new_layout(
    schemas: Callable[[], str], version: int
) -> None:
    old, new = schemas(), schemas()
    create_version(old, version)
    for schema in (old, new):
        with PostgresStore.from_connection_string(
            postgres_url(), schema=schema
        ) as store:
            store.setup()
    upgraded, created = layout(old), layout(new)
    assert upgraded == created
    # The unique keys of messages all hold the thread.
    keys = [c for c in created["constraints"] if c[0] == "retro_messages"]
    unique = [d for _, _, d in keys if d.startswith(("PRIMARY", "UNIQUE"))]
    assert sorted(unique) == [
        "PRIMARY KEY (thread_seq, seq)",
        "UNIQUE (thread_seq, id)",
    ]
    indexes = {name: definition for _, name, definition in created["indexes"]}
    assert indexes["retro_runs_active_index"].endswith(
        "(thread_seq) WHERE (status = ANY (ARRAY['queued'::text, "
        "'in_progress'::text, 'cancelling'::text]))"
    )
    assert indexes["retro_messages_run_index"].endswith(
        "(thread_seq, run_id) WHERE (run_id IS NOT NULL)"
    )


def test_the_active_statuses_are_the_runs_rules() -> None:
    assert set(sql_module._ACTIVE) == ACTIVE_RUN_STATUSES


def fill_version_2(schema: str) -> None:
    """A thread with a run's messages and a lease: written as version 2 wrote them."""
    q = f'"{schema}".'
    run(
        f"INSERT INTO {q}retro_threads (id, created_at, metadata, next_seq, "
        "message_count) VALUES ('thread_a', 100, '{\"hwm\": \"msg_1\"}', 3, 2)"
    )
    run(
        f"INSERT INTO {q}retro_messages (thread_seq, seq, id, created_at, role, "
        "payload, metadata, run_id, assistant_id, reply_to) VALUES "
        "(1, 1, 'msg_1', 101, 'user', %s, '{}', NULL, NULL, NULL), "
        "(1, 2, 'msg_2', 102, 'assistant', %s, '{}', 'run_old', 'asst_1', 'msg_1')",
        payload("q"),
        payload("a"),
    )
    run(
        f"INSERT INTO {q}retro_run_leases (thread_id, owner, expires_at) "
        "VALUES ('thread_a', 'run_old', now() - interval '1 hour')"
    )


def test_upgrade_from_version_2_keeps_the_data(schemas: Callable[[], str]) -> None:
    schema = schemas()
    create_version(schema, 2)
    fill_version_2(schema)
    with PostgresStore.from_connection_string(postgres_url(), schema=schema) as store:
        before = run(f'SELECT * FROM "{schema}".retro_messages ORDER BY seq')
        store.setup()
        versions = run(f'SELECT version FROM "{schema}".retro_schema_migrations')
        assert [v for (v,) in versions] == [1, 2, 3]
        assert run(f'SELECT * FROM "{schema}".retro_messages ORDER BY seq') == before
        rows = store.list_messages("thread_a")
        assert [(r.id, r.run_id, r.reply_to) for r in rows] == [
            ("msg_1", None, None),
            ("msg_2", "run_old", "msg_1"),
        ]
        assert store.get_thread("thread_a").metadata == {"hwm": "msg_1"}
        assert store.count_messages("thread_a") == 2
        # The thread has no runs and no tokens yet; runs start where messages end.
        assert store.list_runs("thread_a") == []
        assert store.get_thread_usage("thread_a") == RunUsage()
        start = store.begin_run(
            "thread_a", owner="run_new", ttl=30.0, messages=[user_message("more")]
        )
        assert start is not None
        assert [m.id for m in start.context][:2] == ["msg_1", "msg_2"]
        used = RunUsage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
        saved = store.finish_run(
            "thread_a",
            owner="run_new",
            run_id="run_new",
            update=RunUpdate(status="completed", usage=used),
            messages=[NewMessage(role="assistant", payload=payload("b"))],
        )
        assert saved.run.status == "completed"
        assert store.get_thread_usage("thread_a") == used
        assert store.count_messages("thread_a") == 4


def user_message(text: str) -> NewMessage:
    return NewMessage(role="user", payload=payload(text))


def test_a_partitioned_schema_upgrades_to_the_new_layout(
    schemas: Callable[[], str],
) -> None:
    old, new = schemas(), schemas()
    create_partitioned_version_2(old, 4)
    for schema in (old, new):
        with PostgresStore.from_connection_string(
            postgres_url(), schema=schema, message_partitions=4
        ) as store:
            store.setup()
            thread = store.create_thread({})
            start = store.begin_run(
                thread.id, owner="run_1", ttl=30.0, messages=[user_message("q")]
            )
            assert start is not None
            reply = NewMessage(role="assistant", payload=payload("a"), run_id="run_1")
            store.finish_run(
                thread.id,
                owner="run_1",
                run_id="run_1",
                update=RunUpdate(status="completed"),
                messages=[reply],
            )
            (written,) = store.list_run_messages(thread.id, "run_1")
            assert written.payload == reply.payload
    assert layout(old) == layout(new)
    indexes = [name for _, name, _ in layout(new)["indexes"]]
    # The run index of messages is on every partition.
    assert sum("run_id_idx" in name for name in indexes) == 4
