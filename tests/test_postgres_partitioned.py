"""PostgreSQL with ``messages`` hash-partitioned by thread.

The whole store contract (`test_stores_contract`, `test_stores_contract_messages`,
`test_stores_contract_runs`) runs again here, sync and async, on a store made with
``message_partitions=4``: the fixtures below replace the ``store_kind`` and
``store_factory`` of ``conftest.py`` for the tests this module imports. Then what
only a partitioned store has: the partitions, a thread's reads touching one of them,
and the option's checks.
"""

from __future__ import annotations

import re
import runpy
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pg_schemas import schema_pool
from conftest import explaining_store, postgres_url
from test_stores_contract import *  # noqa: F403 - the contract, run again here
from test_stores_contract_messages import *  # noqa: F403
from test_stores_contract_runs import *  # noqa: F403

from langchain_retro import MessageIdConflictError, RetroValueError, SchemaVersionError
from langchain_retro.stores.base import NewMessage

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from langchain_retro.stores.base import BaseStore

pytest_plugins = ["_helpers"]
pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")
psycopg_pool = pytest.importorskip("psycopg_pool")
postgres_module = pytest.importorskip("langchain_retro.stores.postgres")
PostgresStore = postgres_module.PostgresStore

PARTITIONS = 4


@pytest.fixture(params=["postgres-partitioned"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The one backend of this module."""
    return str(request.param)


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[Callable[..., BaseStore]]:
    """Stores on one empty schema whose ``messages`` is partitioned, as a new one's.

    The schema is new, or an earlier test's emptied (``tests/_pg_schemas.py``).
    """
    pool = schema_pool(postgres_url(), message_partitions=PARTITIONS)
    schema = pool.take()
    made: list[BaseStore] = []

    def make(**kwargs: Any) -> BaseStore:
        store = PostgresStore.from_connection_string(
            pool.url, schema=schema, message_partitions=PARTITIONS, **kwargs
        )
        store.setup()
        made.append(store)
        return store

    try:
        yield make
    finally:
        for store in made:
            store.close()
        pool.give_back(schema, reusable=True)


def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        cursor = conn.execute(query, params or None)
        return cursor.fetchall() if cursor.description is not None else []


def user(text: str, **fields: Any) -> NewMessage:
    return NewMessage(
        role="user", payload=f'{{"type": "human", "content": "{text}"}}', **fields
    )


def test_messages_are_spread_over_the_partitions(store: Any) -> None:
    partitions = run(
        "SELECT c.relname FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = %s AND p.relname = 'retro_messages' ORDER BY 1",
        store.schema,
    )
    assert [name for (name,) in partitions] == [
        f"retro_messages_p{i}" for i in range(PARTITIONS)
    ]
    threads = store.create_threads([{} for _ in range(40)])
    store.bulk_add_messages(
        [(t.id, [user("a", id="same"), user("b")]) for t in threads]
    )
    counts = run(
        f'SELECT tableoid::regclass::text, count(*) FROM "{store.schema}".'
        "retro_messages GROUP BY 1",
    )
    assert len(counts) == PARTITIONS  # every partition holds some threads
    assert sum(n for _, n in counts) == 80
    assert store.list_messages(threads[7].id)[0].id == "same"


def test_a_threads_reads_touch_one_partition(store: Any) -> None:
    thread = store.create_thread({})
    store.add_messages(thread.id, [user(f"m{i}") for i in range(5)])
    with explaining_store(store.schema, "auto_explain.log_analyze = on") as (
        explained,
        plans,
    ):
        rows = explained.list_messages(thread.id, order="desc", limit=3)
        assert len(rows) == 3
        plan = plans[-1]
        scanned = set(re.findall(r"on (retro_messages_p\d+)", plan))
        assert len(scanned) == 1, plan


@pytest.mark.parametrize("bad", [0, -1, 1025, 2.0, "4", True])
def test_message_partitions_is_checked(bad: object) -> None:
    with pytest.raises(RetroValueError, match="message_partitions"):
        PostgresStore.from_connection_string(postgres_url(), message_partitions=bad)


def test_partitions_are_not_added_to_an_existing_schema() -> None:
    schema = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres_url()
    try:
        with PostgresStore.from_connection_string(url, schema=schema) as plain:
            plain.setup()
            thread = plain.create_thread({"k": "v"})
        partitioned = PostgresStore.from_connection_string(
            url, schema=schema, message_partitions=PARTITIONS
        )
        with partitioned, pytest.raises(SchemaVersionError, match="not partitioned"):
            partitioned.setup()
        with PostgresStore.from_connection_string(url, schema=schema) as plain:
            assert plain.get_thread(thread.id) == thread
    finally:
        run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


DOC = Path(__file__).resolve().parents[1] / "docs" / "postgres-partitioning.md"


def test_the_documented_python_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (code,) = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.M | re.S)
    schema = re.search(r'schema="(\w+)"', code)
    assert schema is not None
    unique = f"test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("DATABASE_URL", postgres_url())
    script = tmp_path / "doc_block.py"
    script.write_text(code.replace(schema.group(0), f'schema="{unique}"'))
    try:
        runpy.run_path(str(script), run_name="__main__")
        assert run(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
            "JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = %s AND p.relname = 'retro_messages'",
            unique,
        ) == [(16,)]
    finally:
        run(f'DROP SCHEMA IF EXISTS "{unique}" CASCADE')


def test_the_documented_range_partitions_work() -> None:
    (ddl,) = re.findall(r"^```sql\n(.*?)^```", DOC.read_text(), re.M | re.S)
    schema = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres_url()
    try:
        with PostgresStore.from_connection_string(url, schema=schema) as store:
            store.setup()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(ddl.replace("app.", f'"{schema}".'))
            thread = store.create_thread({})
            store.add_messages(thread.id, [user("a", id="one"), user("b")])
            with pytest.raises(MessageIdConflictError):
                store.add_messages(thread.id, [user("c", id="one")])
            assert store.list_messages(thread.id)[0].id == "one"
            assert store.count_messages(thread.id) == 2
            table = f'"{schema}".retro_messages'
            where = run(f"SELECT DISTINCT tableoid::regclass::text FROM {table}")
            assert where == [(f"{schema}.retro_messages_r0",)]
    finally:
        run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
