"""The plans PostgreSQL runs for filtered thread pages, custom and generic.

Every filtered page is driven from ``thread_metadata``'s ``(key, value, thread_seq)``
key: for a common, a rare and an absent value, two fields, a class and free
metadata, and in both plan cache modes (``force_custom_plan`` plans with the values
known; ``force_generic_plan`` is what a prepared statement switches to after five
runs), with statistics and before any are gathered. No plan may scan a table or
walk the threads' primary key backwards, which is what made rare and absent values
cost a pass over every thread.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import explaining_store, stores_of

from langchain_retro.stores.base import NewMessage, ThreadQuery

pytestmark = pytest.mark.postgres

psycopg_pool = pytest.importorskip("psycopg_pool")
postgres_module = pytest.importorskip("langchain_retro.stores.postgres")
PostgresStore = postgres_module.PostgresStore

THREADS = 4000


def metadata(n: int) -> dict[str, str]:
    """Thread ``n``'s metadata: a common customer, a rare one, a tier, a class."""
    return {
        "customer": "rare" if n % 1000 == 7 else "acme" if n % 2 else "globex",
        "tier": "gold" if n % 3 == 0 else "free",
        "retro_class": "Escalation" if n % 500 == 11 else "Ticket",
        "note": f"n{n}",
    }


QUERIES = {
    "common": ThreadQuery(metadata={"customer": "acme"}),
    "rare": ThreadQuery(metadata={"customer": "rare"}),
    "absent": ThreadQuery(metadata={"customer": "nobody"}),
    "two fields": ThreadQuery(metadata={"customer": "acme", "tier": "gold"}),
    "rare pair": ThreadQuery(metadata={"customer": "rare", "tier": "gold"}),
    "class": ThreadQuery(classes=("Escalation",)),
    "class and field": ThreadQuery(classes=("Ticket",), metadata={"tier": "free"}),
    "free metadata": ThreadQuery(metadata={"note": "n1234"}),
    "oldest first": ThreadQuery(metadata={"customer": "rare"}, order="asc"),
}


def expected(query: ThreadQuery) -> list[int]:
    """The thread numbers a query should list, in its order (first page)."""
    numbers = range(THREADS, 0, -1) if query.order == "desc" else range(1, THREADS + 1)
    found = []
    for n in numbers:
        data = metadata(n)
        if all(data[k] == v for k, v in query.metadata.items()) and (
            query.classes is None or data["retro_class"] in query.classes
        ):
            found.append(n)
    return found[: query.limit]


@pytest.fixture(scope="module", params=["analysed", "no statistics"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Any:
    """A store of a few thousand threads, and each thread's number.

    Once analysed, once as loaded (before autovacuum gathers statistics).
    """
    with stores_of("postgres", tmp_path_factory.mktemp("plans")) as make:
        store = make()
        made = store.create_threads([metadata(n) for n in range(1, THREADS + 1)])
        number = {thread.id: n for n, thread in enumerate(made, start=1)}
        if request.param == "analysed":
            with store._pools.connection() as conn:
                conn.execute(f'ANALYZE "{store.schema}"."retro_threads"')
                conn.execute(f'ANALYZE "{store.schema}"."retro_thread_metadata"')
        yield store, number


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize("kind", list(QUERIES))
def test_filtered_pages_walk_the_metadata_key(
    loaded: Any, mode: str, kind: str
) -> None:
    store, number = loaded
    with explaining_store(store.schema, f"plan_cache_mode = {mode}") as (
        explained,
        plans,
    ):
        query = QUERIES[kind]
        first = explained.list_threads(query)
        assert [number[t.id] for t in first] == expected(query)
        plan = plans[-1]
        if mode == "force_generic_plan":
            assert "$1" in plan  # the statement was planned without its values
        assert "retro_thread_metadata_pkey" in plan
        assert "retro_thread_metadata_by_thread" not in plan
        assert "Seq Scan" not in plan
        assert "Bitmap" not in plan
        assert "Index Scan Backward using retro_threads_pkey" not in plan
        assert "Sort Key: f.thread_seq" not in plan
        if first:  # the next page, after a cursor, takes the same path
            cursor = query.model_copy(update={"after": first[-1].id})
            second = explained.list_threads(cursor)
            numbers = expected(query.model_copy(update={"limit": 40}))
            assert [number[t.id] for t in second] == numbers[20:40]
            assert "retro_thread_metadata_pkey" in plans[-1]
            assert "Seq Scan" not in plans[-1]


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_message_lookups_by_thread_and_id_use_the_unique_key(
    loaded: Any, mode: str
) -> None:
    store, _ = loaded
    threads = store.create_threads([{} for _ in range(100)])
    batches = [(t.id, [user(i) for i in range(200)]) for t in threads]
    assert store.bulk_add_messages(batches) == 20_000
    thread = threads[42]
    wanted = store.list_messages(thread.id)[150]
    with explaining_store(store.schema, f"plan_cache_mode = {mode}") as (
        explained,
        plans,
    ):
        assert explained.get_message(thread.id, wanted.id) == wanted
        assert "retro_messages_thread_id_key" in plans[-1]
        assert "Seq Scan on retro_messages" not in plans[-1]
        after = explained.list_messages(thread.id, after=wanted.id, limit=5)
        assert len(after) == 5
        cursors = [p for p in plans if "retro_messages_thread_id_key" in p]
        assert len(cursors) >= 2  # the cursor was found by the unique key too
        assert not any("Seq Scan on retro_messages" in p for p in plans)


def user(i: int) -> NewMessage:
    return NewMessage(role="user", payload=f'{{"n": {i}}}')
