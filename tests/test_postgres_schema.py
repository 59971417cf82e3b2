"""PostgreSQL schema versions: upgrading a version-1 database keeps its data.

A schema is built at version 1 with the statements version 1 shipped, filled through
SQL as that version wrote it, then upgraded by `PostgresStore.setup`. The upgraded
layout must be the one a new schema gets, and the data must read back through the
store unchanged, with the new parts (per-thread message ids, counts, the metadata
index) filled in.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from conftest import postgres_url

from langchain_retro import MessageIdConflictError
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import NewMessage, ThreadQuery

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


def create_version_1(schema: str) -> None:
    """The schema as version 1 of the package created it."""
    names = sql_module._Names(schema, "retro_")
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(sql_module._q_create_schema(names).query)
        conn.execute(sql_module._q_create_migrations_table(names).query)
        conn.execute(sql_module._q_migrate(names, 0).query)
        record = sql_module._q_record_migration(names, 0)
        conn.execute(record.query, record.params)


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
        assert [v for (v,) in versions] == [1, 2]

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
        assert [v for (v,) in versions] == [1, 2]


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


def test_an_upgraded_schema_has_the_new_layout(schemas: Callable[[], str]) -> None:
    old, new = schemas(), schemas()
    create_version_1(old)
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
