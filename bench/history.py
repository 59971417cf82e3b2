"""Chat history speed: langchain-retro against the histories LangChain users plug in.

Times, for one thread of 10, 1,000 and 10,000 stored messages in a database that also
holds other threads of the same size:

* ``full read``: every message of the thread (``history.messages``), read again: in a
  process that read it before, langchain-retro reuses the messages it rebuilt then;
* ``cold read``: the same with that cache off, as a process's first read (the same as
  ``full read`` for the other histories);
* ``newest 50``: the newest 50 messages (``window=50`` here; slicing the full read for
  histories that cannot ask their store for fewer);
* ``append 2``: ``add_messages([human, ai])``.

Each cell is the median of ``--repeat`` runs after a warm-up, with the speed-up against
the anchor, langchain-community's ``SQLChatMessageHistory`` on a SQLite file.
``InMemoryChatMessageHistory`` shows the floor: a Python list. With ``--postgres URL``,
langchain-retro's `PostgresStore` runs on that server, next to its own anchor there:
langchain-postgres' ``PostgresChatMessageHistory`` (one table in a schema of its own,
with the same number of other sessions), and a second table compares the two.

Run::

    python bench/history.py                      # sizes 10,1000,10000
    python bench/history.py --sizes 10,1000 --repeat 9 --others 5
    python bench/history.py --profile            # where retro's time goes
    python bench/history.py --postgres postgresql://user@host/db

Adding a backend is adding a ``(name, factory)`` pair to `backends`.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import pstats
import random
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage

# The community and core histories are deprecated upstream; they are the anchors here.
warnings.simplefilter("ignore", DeprecationWarning)

from _conversations import conversation  # noqa: E402
from langchain_core.chat_history import InMemoryChatMessageHistory  # noqa: E402

from langchain_retro import (  # noqa: E402
    AssistantThreadChatMessageHistory,
    BaseThread,
    SQLiteStore,
    chat_message_histories,
)
from langchain_retro.stores.base import BaseStore  # noqa: E402

ANCHOR = "community sqlite"
POSTGRES_ANCHOR = "langchain-postgres"
WINDOW = 50
GROW_BATCH = 1_000
BUDGET = 0.25
MAX_RUNS = 100

# --- the histories under test --------------------------------------------------------


class Subject:
    """One history implementation over one database holding many sessions."""

    def new_session(self) -> str:
        raise NotImplementedError

    def grow(self, session: str, messages: Sequence[BaseMessage]) -> None:
        """Add messages in bulk (setup, not timed)."""
        self.history(session).add_messages(messages)

    def history(self, session: str) -> Any:
        raise NotImplementedError

    def read_all(self, session: str) -> list[BaseMessage]:
        return list(self.history(session).messages)

    def read_newest(self, session: str, count: int) -> list[BaseMessage]:
        return list(self.history(session).messages[-count:])

    def append(self, session: str, messages: Sequence[BaseMessage]) -> None:
        self.history(session).add_messages(messages)

    def cold(self) -> contextlib.AbstractContextManager[object]:
        """A block in which reads rebuild every message, as a new process's would."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """Release the database."""


class RetroSubject(Subject):
    """`AssistantThreadChatMessageHistory` over any langchain-retro store."""

    def __init__(
        self, store: BaseStore, cleanup: Callable[[], None] | None = None
    ) -> None:
        self.store = store
        self.cleanup = cleanup
        self.histories: dict[str, AssistantThreadChatMessageHistory] = {}
        self.windows: dict[str, AssistantThreadChatMessageHistory] = {}

    @classmethod
    def sqlite(cls, workdir: Path) -> RetroSubject:
        return cls(SQLiteStore(workdir / "retro.db"))

    @classmethod
    def postgres(cls, url: str, workdir: Path) -> RetroSubject:
        import psycopg  # noqa: PLC0415

        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        store = PostgresStore.from_connection_string(url, schema=schema)
        store.setup()

        def drop() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

        return cls(store, drop)

    def new_session(self) -> str:
        thread_id = BaseThread.create(self.store).id
        self.histories[thread_id] = AssistantThreadChatMessageHistory(
            self.store, thread_id
        )
        self.windows[thread_id] = AssistantThreadChatMessageHistory(
            self.store, thread_id, window=WINDOW
        )
        return thread_id

    def history(self, session: str) -> AssistantThreadChatMessageHistory:
        return self.histories[session]

    def read_newest(self, session: str, count: int) -> list[BaseMessage]:
        assert count == WINDOW
        return self.windows[session].messages

    @contextlib.contextmanager
    def cold(self) -> Iterator[object]:
        # The histories' per-process cache of rebuilt messages, turned off.
        cache = chat_message_histories._CACHE
        size, cache.size = cache.size, 0
        try:
            yield None
        finally:
            cache.size = size

    def close(self) -> None:
        self.store.close()
        if self.cleanup is not None:
            self.cleanup()


class InMemorySubject(Subject):
    """``InMemoryChatMessageHistory``: a list per session, the speed floor."""

    def __init__(self, workdir: Path) -> None:
        self.histories: dict[str, InMemoryChatMessageHistory] = {}

    def new_session(self) -> str:
        session = uuid.uuid4().hex
        self.histories[session] = InMemoryChatMessageHistory()
        return session

    def history(self, session: str) -> InMemoryChatMessageHistory:
        return self.histories[session]


class CommunitySQLSubject(Subject):
    """langchain-community's ``SQLChatMessageHistory`` on one SQLite file."""

    def __init__(self, workdir: Path) -> None:
        from langchain_community.chat_message_histories.sql import (  # noqa: PLC0415
            SQLChatMessageHistory,
        )
        from sqlalchemy import create_engine  # noqa: PLC0415

        self.engine = create_engine(f"sqlite:///{workdir / 'community.db'}")
        self.factory = SQLChatMessageHistory
        self.histories: dict[str, Any] = {}

    def new_session(self) -> str:
        session = uuid.uuid4().hex
        self.histories[session] = self.factory(session, connection=self.engine)
        return session

    def history(self, session: str) -> Any:
        return self.histories[session]

    def close(self) -> None:
        self.engine.dispose()


class LangchainPostgresSubject(Subject):
    """langchain-postgres' ``PostgresChatMessageHistory``: one table, one connection.

    Set up as its README does: a psycopg connection and ``create_tables``. Its table
    name is not schema-qualified, so the connection's ``search_path`` points at a
    schema of the bench's own, dropped on close.
    """

    def __init__(self, url: str) -> None:
        import psycopg  # noqa: PLC0415
        from langchain_postgres import PostgresChatMessageHistory  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415

        self.url = url
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema))
            )
        self.conn = psycopg.connect(url, options=f"-c search_path={self.schema}")
        self.table = "chat_history"
        PostgresChatMessageHistory.create_tables(self.conn, self.table)
        self.factory = PostgresChatMessageHistory
        self.histories: dict[str, Any] = {}

    def new_session(self) -> str:
        session = str(uuid.uuid4())
        self.histories[session] = self.factory(
            self.table, session, sync_connection=self.conn
        )
        return session

    def history(self, session: str) -> Any:
        return self.histories[session]

    def close(self) -> None:
        import psycopg  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415

        self.conn.close()
        with psycopg.connect(self.url, autocommit=True) as conn:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
            conn.execute(drop.format(sql.Identifier(self.schema)))


Factory = Callable[[Path], Subject]


def backends(args: argparse.Namespace) -> list[tuple[str, Factory]]:
    """The columns of the table, in order; the anchor must be among them."""
    out: list[tuple[str, Factory]] = [
        ("retro sqlite", RetroSubject.sqlite),
        ("in-memory", InMemorySubject),
        (ANCHOR, CommunitySQLSubject),
    ]
    if args.postgres:
        url = args.postgres
        out.insert(1, ("retro postgres", lambda wd: RetroSubject.postgres(url, wd)))
        out.append((POSTGRES_ANCHOR, lambda wd: LangchainPostgresSubject(url)))
    return out


# --- timing --------------------------------------------------------------------------


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call.

    Runs at least ``repeat`` times, and fast calls more often (up to `MAX_RUNS`, within
    `BUDGET` seconds), so sub-millisecond cells are not at the mercy of one hiccup.
    """
    fn()
    times: list[float] = []
    gc.collect()  # once: a full collection walks every message the run holds
    gc.disable()  # as timeit does, so no cell pays for another's garbage
    try:
        while len(times) < repeat or (sum(times) < BUDGET and len(times) < MAX_RUNS):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return statistics.median(times) * 1000


@dataclass
class Population:
    """A backend's sessions: the measured one first, then the others."""

    subject: Subject
    sessions: list[str]
    sizes: list[int]

    def grow_to(self, size: int, rng: random.Random) -> None:
        for index, session in enumerate(self.sessions):
            while self.sizes[index] < size:
                count = min(GROW_BATCH, size - self.sizes[index])
                batch = conversation(rng, count)
                self.subject.grow(session, batch)
                self.sizes[index] += len(batch)


OPERATIONS = ("full read", "cold read", f"newest {WINDOW}", "append 2")


def measure(
    population: Population, repeat: int, rng: random.Random
) -> dict[str, float]:
    subject, session = population.subject, population.sessions[0]
    turns = conversation(rng, 2 * (max(repeat, MAX_RUNS) + 1))
    pairs = iter(zip(turns[::2], turns[1::2], strict=True))

    def append() -> None:
        subject.append(session, list(next(pairs)))
        population.sizes[0] += 2

    newest = subject.read_newest(session, WINDOW)
    assert len(newest) == min(WINDOW, population.sizes[0]), "wrong window"

    def cold_read() -> object:
        with subject.cold():
            return subject.read_all(session)

    return {
        "full read": median_ms(lambda: subject.read_all(session), repeat),
        "cold read": median_ms(cold_read, repeat),
        f"newest {WINDOW}": median_ms(
            lambda: subject.read_newest(session, WINDOW), repeat
        ),
        "append 2": median_ms(append, repeat),
    }


def profile_full_read(population: Population) -> str:
    profiler = cProfile.Profile()
    session = population.sessions[0]
    profiler.enable()
    for _ in range(5):
        population.subject.read_all(session)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    return out.getvalue()


# --- the table -----------------------------------------------------------------------


def duration(ms: float) -> str:
    return f"{ms * 1000:7.1f} us" if ms < 1 else f"{ms:7.2f} ms"


def cell(ms: float, anchor_ms: float, is_anchor: bool) -> str:
    if is_anchor:
        return f"{duration(ms)}         "
    ratio = anchor_ms / ms
    return (
        f"{duration(ms)} {ratio:7.1f}x" if ratio < 1000 else f"{duration(ms)}  >1000x"
    )


def print_table(
    names: list[str], results: dict[int, dict[str, dict[str, float]]], others: int
) -> None:
    width = 22
    print(
        f"\nOne thread among {others} others of the same size; median of repeats; "
        f"Nx = times faster than {ANCHOR}.\n"
    )
    header = f"{'messages':>9}  {'operation':<10}" + "".join(
        f"{name:>{width}}" for name in names
    )
    print(header)
    print("-" * len(header))
    for size, by_backend in results.items():
        for operation in OPERATIONS:
            anchor = by_backend[ANCHOR][operation]
            row = f"{size:>9,}  {operation:<10}" + "".join(
                f"{cell(by_backend[n][operation], anchor, n == ANCHOR):>{width}}"
                for n in names
            )
            print(row)
    print()


def print_pair(
    results: dict[int, dict[str, dict[str, float]]], subject: str, anchor: str
) -> None:
    """``subject`` against ``anchor`` on the same server, cell by cell."""
    print(f"{subject} against {anchor} (same server; Nx = times faster):\n")
    header = f"{'messages':>9}  {'operation':<10}{subject:>16}{anchor:>22}{'ratio':>10}"
    print(header)
    print("-" * len(header))
    for size, by_backend in results.items():
        for operation in OPERATIONS:
            ours, theirs = by_backend[subject][operation], by_backend[anchor][operation]
            print(
                f"{size:>9,}  {operation:<10}{duration(ours):>16}{duration(theirs):>22}"
                f"{theirs / ours:>9.1f}x"
            )
    print()


def print_targets(
    results: dict[int, dict[str, dict[str, float]]],
    subject: str,
    anchor: str,
    newest_under_ms: float | None,
) -> None:
    retro = {size: by_backend[subject] for size, by_backend in results.items()}
    newest = f"newest {WINDOW}"
    verdicts: list[tuple[str, bool, str]] = []
    if 10_000 in results:
        ratio = results[10_000][anchor]["full read"] / retro[10_000]["full read"]
        verdicts.append(
            (f"full read at 10,000 >= 4x {anchor}", ratio >= 4, f"{ratio:.1f}x")
        )
    if newest_under_ms is not None:
        worst = max(r[newest] for r in retro.values())
        verdicts.append(
            (
                f"{newest} < {newest_under_ms:g} ms at every size",
                worst < newest_under_ms,
                f"max {duration(worst).strip()}",
            )
        )
    # Flat: a thread that holds a full window reads it in the same time at any length.
    full_windows = [r[newest] for size, r in retro.items() if size >= WINDOW]
    if len(full_windows) > 1:
        spread = max(full_windows) / min(full_windows)
        verdicts.append(
            (
                f"{newest} flat over sizes >= {WINDOW} (max/min <= 2)",
                spread <= 2,
                f"{spread:.2f}",
            )
        )
    appends = [r["append 2"] for r in retro.values()]
    spread = max(appends) / min(appends)
    verdicts.append(
        ("append 2 flat over sizes (max/min <= 2)", spread <= 2, f"{spread:.2f}")
    )
    print(f"Targets ({subject}):")
    for label, ok, detail in verdicts:
        print(f"  [{'ok' if ok else 'MISS'}] {label}: {detail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="10,1000,10000",
        help="comma-separated thread lengths (default 10,1000,10000)",
    )
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per cell")
    parser.add_argument(
        "--others", type=int, default=20, help="other threads in each database"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run langchain-retro and langchain-postgres on PostgreSQL",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile retro's full read at the end"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the messages")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    chosen = backends(args)
    names = [name for name, _ in chosen]

    results: dict[int, dict[str, dict[str, float]]] = {s: {} for s in sizes}
    with tempfile.TemporaryDirectory(prefix="retro-bench-") as tmp:
        populations: dict[str, Population] = {}
        for name, factory in chosen:
            workdir = Path(tmp) / name.replace(" ", "-")
            workdir.mkdir()
            subject = factory(workdir)
            sessions = [subject.new_session() for _ in range(args.others + 1)]
            populations[name] = Population(subject, sessions, [0] * len(sessions))
        try:
            for size in sizes:
                for name in names:
                    population = populations[name]
                    started = time.perf_counter()
                    population.grow_to(size, random.Random(args.seed + size))
                    grown = time.perf_counter() - started
                    # A seed per size: the turns' AI ids are kept, so must not repeat.
                    results[size][name] = measure(
                        population,
                        args.repeat,
                        random.Random(f"{args.seed}-measure-{size}"),
                    )
                    print(
                        f"  {name:<18} {size:>7,} messages x {args.others + 1} "
                        f"threads (grown in {grown:.1f} s)",
                        file=sys.stderr,
                    )
            print_table(names, results, args.others)
            print_targets(results, "retro sqlite", ANCHOR, newest_under_ms=1)
            if args.postgres:
                print()
                print_pair(results, "retro postgres", POSTGRES_ANCHOR)
                print_targets(
                    results, "retro postgres", POSTGRES_ANCHOR, newest_under_ms=None
                )
            if args.profile:
                print(f"\ncProfile of 5 full reads at {sizes[-1]:,} (retro sqlite):")
                print(profile_full_read(populations["retro sqlite"]))
        finally:
            for population in populations.values():
                population.subject.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
