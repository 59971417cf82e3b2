"""`SQLiteStore`'s filtered thread listing: O(log N + page) whatever the filter.

Every filtered page is driven from ``thread_metadata``'s ``(key, value, thread_seq)``
key in thread order, and the other filters are probed by primary key, so a rare
value, a value matching nothing, two fields together and free metadata all cost the
same at 1,000 threads as at 20,000.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from langchain_retro import SQLiteStore
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import StoredThread, ThreadQuery

RARE = {"customer": "rare"}  # held by 5 threads, whatever the store's size


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "retro.db") as opened:
        yield opened


def load(store: SQLiteStore, start: int, count: int) -> list[StoredThread]:
    """Threads with a common and a spread field, a class and free metadata."""
    return store.create_threads(
        [
            {
                "customer": f"c{i % 10}",
                "region": f"r{i % 7}",
                "retro_class": "Ticket" if i % 2 else "Chat",
                "note": f"n{i % 3}",
            }
            for i in range(start, start + count)
        ]
    )


def statements(store: SQLiteStore, action: Callable[[], Any]) -> list[str]:
    seen: list[str] = []
    assert store._conn is not None
    store._conn.set_trace_callback(seen.append)
    try:
        action()
    finally:
        store._conn.set_trace_callback(None)
    return [s for s in seen if s.lstrip().upper().startswith("SELECT")]


def plans(store: SQLiteStore, action: Callable[[], Any]) -> list[str]:
    assert store._conn is not None
    out = []
    for sql in statements(store, action):
        if "thread_metadata d" not in sql:
            continue
        rows = store._conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        out.append(" | ".join(row[-1] for row in rows))
    assert out
    return out


def steps(store: SQLiteStore, query: ThreadQuery) -> tuple[int, list[StoredThread]]:
    """SQLite VM steps (rows visited and compared) a listing takes."""
    assert store._conn is not None
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    store._conn.set_progress_handler(tick, 1)
    try:
        found = store.list_threads(query)
    finally:
        store._conn.set_progress_handler(None, 1)
    return count, found


QUERIES = {
    "rare": ThreadQuery(metadata=RARE),
    "absent": ThreadQuery(metadata={"customer": "nobody"}),
    "rare and common": ThreadQuery(metadata={**RARE, "region": "r1"}),
    "common and rare": ThreadQuery(metadata={"region": "r1", **RARE}),
    "rare of a class": ThreadQuery(metadata=RARE, classes=("Ticket", "Chat")),
    "free metadata absent": ThreadQuery(metadata={"note": "none"}),
    "common": ThreadQuery(metadata={"customer": "c3"}),
    "common, oldest first": ThreadQuery(metadata={"customer": "c3"}, order="asc"),
}


def test_filtered_listing_stays_flat_from_1k_to_20k(store: SQLiteStore) -> None:
    made = load(store, 0, 1_000)
    for thread in made[100:600:100]:  # 5 rare threads, old ones
        store.update_thread(thread.id, MetadataPatch(set=RARE))
    small = {name: steps(store, q) for name, q in QUERIES.items()}
    load(store, 1_000, 19_000)
    large = {name: steps(store, q) for name, q in QUERIES.items()}
    for name in QUERIES:
        (before, got_small), (after, got_large) = small[name], large[name]
        assert after <= 2 * before, (name, before, after)
        if name.startswith(("rare", "absent", "free")):
            assert got_small == got_large, name  # the new threads match none
    assert [len(large[n][1]) for n in ("rare", "absent", "rare and common")] == [
        5,
        0,
        len([t for t in made[100:600:100] if t.metadata["region"] == "r1"]),
    ]


def test_filtered_plans_seek_the_metadata_key(store: SQLiteStore) -> None:
    made = load(store, 0, 300)
    cursor = made[150].id
    for query in [
        *QUERIES.values(),
        ThreadQuery(metadata={"customer": "c3"}, after=cursor),
        ThreadQuery(metadata={"customer": "c3"}, before=cursor, order="asc"),
        ThreadQuery(classes=("Ticket",), after=cursor, order="asc"),
    ]:
        for plan in plans(store, lambda q=query: store.list_threads(q)):
            assert "SEARCH d USING PRIMARY KEY (key=? AND value=?" in plan, plan
            assert "SEARCH t USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
            assert "SCAN" not in plan, plan
            assert "TEMP B-TREE" not in plan, plan


def _expected(threads: list[StoredThread], query: ThreadQuery) -> list[str]:
    out = [
        t
        for t in threads
        if all(t.metadata.get(k) == v for k, v in query.metadata.items())
        and (query.classes is None or t.metadata.get("retro_class") in query.classes)
    ]
    return [t.id for t in (out[::-1] if query.order == "desc" else out)]


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize(
    "filters",
    [
        {"metadata": {"customer": "c3"}},
        {"metadata": {"customer": "c3", "region": "r2"}},
        {"classes": ("Ticket",)},
        {"classes": ("Ticket", "Chat"), "metadata": {"note": "n1"}},
        {"classes": ("Chat", "Other")},
    ],
    ids=["one", "two", "class", "classes-and-free", "class-and-absent"],
)
def test_filtered_cursor_pages(
    store: SQLiteStore, order: str, filters: dict[str, Any]
) -> None:
    threads = load(store, 0, 400)
    everything = _expected(threads, ThreadQuery(order=order, **filters))  # type: ignore[arg-type]
    assert len(everything) > 5
    # Forwards with `after`, page by page.
    pages: list[str] = []
    after = None
    while True:
        page = store.list_threads(
            ThreadQuery(order=order, limit=4, after=after, **filters)  # type: ignore[arg-type]
        )
        pages += [t.id for t in page]
        if len(page) < 4:
            break
        after = page[-1].id
    assert pages == everything
    # Backwards with `before`: each page is the one nearest the cursor, in order.
    for at in itertools.islice(range(len(everything) - 1, 0, -1), 0, None, 5):
        page = store.list_threads(
            ThreadQuery(order=order, limit=3, before=everything[at], **filters)  # type: ignore[arg-type]
        )
        assert [t.id for t in page] == everything[max(0, at - 3) : at]
