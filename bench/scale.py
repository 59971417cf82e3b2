"""Scale: do listing, counting and appends stay flat as a store grows?

Loads a store through its public bulk path (``create_threads`` and
``bulk_add_messages``) to 1,000, then 10,000, then 100,000 threads with 10 messages
each (1,000,000 messages at the end), and at each size prints the median time of:

* ``first page``: the newest 20 threads of the class;
* ``deep page``: the 20 threads after a cursor half-way down the listing;
* ``filter common``: a typed field held by half the threads;
* ``filter rare``: a typed field value held by 0.1% of the threads;
* ``filter 20 oldest``: a typed field value held by the 20 oldest threads only: the
  same 20 matches at every size, the farthest from the newest-first start;
* ``filter absent``: a typed field value no thread holds;
* ``two fields``: the rare value and a second typed field together;
* ``two fields, oldest``: the 20 oldest threads' value and a second field (4 match);
* ``free metadata``: a free metadata value held by 1% of the threads;
* ``free, 20 oldest``: a free metadata value held by the 20 oldest threads;
* ``newest 50``: a thread's newest 50 messages (threads of 60 messages are sampled);
* ``append 2``: ``add_messages`` of two messages to a random thread;
* ``count``: ``count_messages`` of a 60-message thread;

with the spread of each cell ((p90 - p10) / median over the samples), its growth
against the first size (``x1k``), the load rates of the bulk path and of one call per
thread, and the bytes a message takes on disk. The targets (issue "Scale") are a
growth of at most 2x from 1,000 to 100,000 threads for every row that returns the same
number of threads at every size. The ``rare``, ``two fields`` and ``free metadata``
values are held by a share of the threads, so their pages fill up as the store grows
(one thread at 1,000, twenty at 100,000): they grow with the page, not the store.

PostgreSQL is measured on a durable server (default fsync settings): start one with
``RETRO_PG_DURABLE=1 scripts/postgres.sh start`` and pass the URL it prints. Never
pass the test server (fsync off flatters every write).

Run::

    python bench/scale.py                                # SQLite only
    python bench/scale.py --postgres postgresql://postgres@127.0.0.1:54339/retro_test
    python bench/scale.py --sizes 1000,10000 --repeat 15 # quicker
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.messages import AIMessage, HumanMessage

from langchain_retro import BaseThread, SQLiteStore
from langchain_retro._messages import to_payload
from langchain_retro.stores.base import BaseStore, NewMessage

MESSAGES_PER_THREAD = 10
LONG_THREAD = 60
LONG_EVERY = 500  # one thread in this many gets LONG_THREAD messages
RARE_EVERY = 1_000  # 0.1% of threads hold the rare customer
RARE_AT = 507  # which one in each RARE_EVERY (not among the oldest)
TAG_EVERY = 100  # 1% of threads hold the free metadata tag
BATCH_THREADS = 1_000
PAGE = 20
SINGLE_LOAD = 2_000  # threads loaded one call each, for the per-call rate
FIRST = 20  # the oldest threads hold a value of their own: 20 matches at every size


class Ticket(BaseThread):
    """The bench's thread class: typed fields with common, rare and absent values."""

    record_class: ClassVar[str] = "bench.Ticket"

    customer: str
    """Half the threads have ``common``, 0.1% ``rare``, the rest one of 1,000."""
    region: str
    """One of ten regions."""
    priority: int = 0
    """A typed int, stored as JSON text."""


ROWS = (
    "first page",
    "deep page",
    "filter common",
    "filter rare",
    "filter 20 oldest",
    "filter absent",
    "two fields",
    "two fields, oldest",
    "free metadata",
    "free, 20 oldest",
    "newest 50",
    "append 2",
    "count",
)


# --- loading -------------------------------------------------------------------------


def ticket_metadata(index: int, rng: random.Random, store: BaseStore) -> dict[str, str]:
    if index < FIRST:
        customer = "first"
    elif index % RARE_EVERY == RARE_AT:
        customer = "rare"
    elif index % 2 == 0:
        customer = "common"
    else:
        customer = f"c{rng.randrange(1_000)}"
    if index < FIRST:
        free = {"tag": "early"}
    elif index % TAG_EVERY == 3:
        free = {"tag": "flagged"}
    else:
        free = {"tag": "plain"}
    ticket = Ticket(
        customer=customer,
        region=f"r{index % 10}",
        priority=index % 5,
        metadata=free,
    )
    return ticket._encoded_metadata(store.limits)  # bench loads in bulk


def payloads(count: int) -> list[NewMessage]:
    out = []
    for i in range(count):
        if i % 2 == 0:
            message: Any = HumanMessage(f"Question {i}: how do I reset my password?")
            role = "user"
        else:
            message = AIMessage(
                f"Answer {i}: open Settings, then Security, then Reset."
            )
            role = "assistant"
        out.append(NewMessage(role=role, payload=to_payload(message)))
    return out


@dataclass
class Loaded:
    """What has been loaded into one store so far."""

    store: BaseStore
    threads: int = 0
    messages: int = 0
    long_threads: list[str] = field(default_factory=list)
    all_ids: list[str] = field(default_factory=list)
    bulk_seconds: float = 0.0
    single_rate: tuple[float, float] | None = None

    def grow_to(self, size: int, rng: random.Random) -> None:
        short, long_ = payloads(MESSAGES_PER_THREAD), payloads(LONG_THREAD)
        while self.threads < size:
            count = min(BATCH_THREADS, size - self.threads)
            metas = [
                ticket_metadata(self.threads + i, rng, self.store) for i in range(count)
            ]
            start = time.perf_counter()
            made = self.store.create_threads(metas)
            batches = []
            for i, thread in enumerate(made):
                is_long = (self.threads + i) % LONG_EVERY == 0
                batches.append((thread.id, long_ if is_long else short))
                if is_long:
                    self.long_threads.append(thread.id)
            self.messages += self.store.bulk_add_messages(batches)
            self.bulk_seconds += time.perf_counter() - start
            self.all_ids.extend(t.id for t in made)
            self.threads += count

    def measure_single_calls(self) -> None:
        """Threads and messages per second with one call per thread (not bulk)."""
        rng = random.Random(7)
        metas = [ticket_metadata(i, rng, self.store) for i in range(SINGLE_LOAD)]
        start = time.perf_counter()
        made = [self.store.create_thread(m) for m in metas]
        threads_rate = len(made) / (time.perf_counter() - start)
        short = payloads(MESSAGES_PER_THREAD)
        start = time.perf_counter()
        for thread in made:
            self.store.add_messages(thread.id, short)
        messages_rate = len(made) * len(short) / (time.perf_counter() - start)
        self.single_rate = (threads_rate, messages_rate)
        for thread in made:
            self.store.delete_thread(thread.id)


# --- timing --------------------------------------------------------------------------


@dataclass
class Cell:
    median_ms: float
    spread: float


def sample(fn: Callable[[], object], repeat: int) -> Cell:
    fn()  # warm-up
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
    finally:
        gc.enable()
    median = statistics.median(times)
    deciles = (
        statistics.quantiles(times, n=10) if len(times) >= 10 else [min(times)] * 9
    )
    spread = (deciles[-1] - deciles[0]) / median if median else 0.0
    return Cell(median, spread)


def measure(loaded: Loaded, repeat: int, rng: random.Random) -> dict[str, Cell]:
    store = loaded.store
    cursor = loaded.all_ids[len(loaded.all_ids) // 2]

    def page(**filters: Any) -> Callable[[], object]:
        def run() -> object:
            return Ticket.list(store, limit=PAGE, **filters)

        return run

    def check(fn: Callable[[], Any], minimum: int, maximum: int = PAGE) -> None:
        got = len(fn().data)
        assert minimum <= got <= maximum, f"{got} results, expected {minimum}-{maximum}"

    rare_count = sum(1 for i in range(loaded.threads) if i % RARE_EVERY == RARE_AT)
    check(page(customer="rare"), min(rare_count, PAGE))
    check(page(customer="absent-value"), 0, 0)
    check(page(customer="common"), PAGE)
    check(page(customer="first"), FIRST)
    check(page(customer="first", priority=0), FIRST // 5, FIRST // 5)

    long_ids = loaded.long_threads
    pairs = iter(payloads(2 * (repeat + 2)))

    def append() -> None:
        thread_id = rng.choice(loaded.all_ids)
        store.add_messages(thread_id, [next(pairs), next(pairs)])
        loaded.messages += 2

    rare_region = f"r{RARE_AT % 10}"
    return {
        "first page": sample(page(), repeat),
        "deep page": sample(page(after=cursor), repeat),
        "filter common": sample(page(customer="common"), repeat),
        "filter rare": sample(page(customer="rare"), repeat),
        "filter 20 oldest": sample(page(customer="first"), repeat),
        "filter absent": sample(page(customer="absent-value"), repeat),
        "two fields": sample(page(customer="rare", region=rare_region), repeat),
        "two fields, oldest": sample(page(customer="first", priority=0), repeat),
        "free metadata": sample(page(metadata={"tag": "flagged"}), repeat),
        "free, 20 oldest": sample(page(metadata={"tag": "early"}), repeat),
        "newest 50": sample(
            lambda: store.list_messages(rng.choice(long_ids), order="desc", limit=50),
            repeat,
        ),
        "append 2": sample(append, repeat),
        "count": sample(lambda: store.count_messages(rng.choice(long_ids)), repeat),
    }


# --- stores --------------------------------------------------------------------------


@contextmanager
def sqlite_store(workdir: Path) -> Iterator[tuple[BaseStore, Callable[[], int]]]:
    path = workdir / "scale.db"
    store = SQLiteStore(path)

    def size() -> int:
        store.list_threads  # noqa: B018 - keep the store referenced
        conn = __import__("sqlite3").connect(path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        return sum(
            os.path.getsize(p) for p in workdir.iterdir() if p.name.startswith("scale")
        )

    try:
        yield store, size
    finally:
        store.close()


@contextmanager
def postgres_store(url: str) -> Iterator[tuple[BaseStore, Callable[[], int]]]:
    import psycopg  # noqa: PLC0415

    from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

    schema = f"bench_scale_{uuid.uuid4().hex[:8]}"
    store = PostgresStore.from_connection_string(url, schema=schema)
    store.setup()

    def size() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            # VACUUM ANALYZE as autovacuum would have by then; sizes include indexes.
            conn.execute(f'VACUUM ANALYZE "{schema}"."{store.table_prefix}messages"')
            row = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') "
                "AND c.relname LIKE %s",
                (schema, f"{store.table_prefix}messages%"),
            ).fetchone()
        return int(row[0]) if row else 0

    try:
        yield store, size
    finally:
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --- report --------------------------------------------------------------------------


def report(
    name: str,
    sizes: Sequence[int],
    results: dict[int, dict[str, Cell]],
    loaded: Loaded,
    bytes_per_message: dict[int, float],
) -> None:
    first = sizes[0]
    print(f"\n### {name}: median ms per call (spread p10-p90 / median)\n")
    head = "| operation | " + " | ".join(f"{s:,} threads" for s in sizes)
    print(head + f" | x{first // 1000}k at {sizes[-1]:,} |")
    print("|---" * (len(sizes) + 2) + "|")
    for row in ROWS:
        cells = [results[s][row] for s in sizes]
        text = " | ".join(f"{c.median_ms:.3f} ({c.spread:.0%})" for c in cells)
        growth = cells[-1].median_ms / cells[0].median_ms if cells[0].median_ms else 0
        print(f"| {row} | {text} | {growth:.2f}x |")
    per = " | ".join(f"{bytes_per_message[s]:.0f}" for s in sizes)
    print(f"| bytes per message on disk | {per} | |")
    rate = loaded.messages / loaded.bulk_seconds if loaded.bulk_seconds else 0.0
    print(
        f"\nbulk load: {loaded.threads:,} threads and {loaded.messages:,} messages in "
        f"{loaded.bulk_seconds:.1f} s: {loaded.threads / loaded.bulk_seconds:,.0f} "
        f"threads/s with {rate:,.0f} messages/s"
    )
    if loaded.single_rate:
        threads_rate, messages_rate = loaded.single_rate
        print(
            f"one call per thread: {threads_rate:,.0f} threads/s (create_thread), "
            f"{messages_rate:,.0f} messages/s (add_messages of "
            f"{MESSAGES_PER_THREAD})"
        )


def run(
    name: str,
    store_cm: Any,
    sizes: Sequence[int],
    repeat: int,
) -> None:
    rng = random.Random(42)
    with store_cm as (store, size):
        loaded = Loaded(store)
        loaded.measure_single_calls()
        results: dict[int, dict[str, Cell]] = {}
        bytes_per_message: dict[int, float] = {}
        for target in sizes:
            loaded.grow_to(target, rng)
            bytes_per_message[target] = size() / max(loaded.messages, 1)
            results[target] = measure(loaded, repeat, rng)
            print(
                f"{name}: {target:,} threads, {loaded.messages:,} messages measured",
                file=sys.stderr,
            )
        report(name, sizes, results, loaded, bytes_per_message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=41)
    parser.add_argument("--postgres", help="URL of a durable PostgreSQL server")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"sizes {sizes}, {MESSAGES_PER_THREAD} messages a thread "
        f"(1 in {LONG_EVERY} has {LONG_THREAD}), {args.repeat} samples a cell"
    )
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as workdir:
            run("SQLite", sqlite_store(Path(workdir)), sizes, args.repeat)
    if args.postgres:
        run("PostgreSQL (durable)", postgres_store(args.postgres), sizes, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
