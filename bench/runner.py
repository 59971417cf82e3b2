"""Cost of a turn: ThreadRunner against the LangChain patterns it replaces.

One turn is "append the user's message, send the conversation to the model through
``ChatOpenAI.invoke``, store the reply". Every subject runs its turns against the same
`FakeChatServer` over real HTTP, so the model's work is the same for all and small:
what differs is the work around the call. Subjects:

* ``floor``: a bare ``ChatOpenAI.invoke`` on a Python list of the same messages
  (``floor, window 50``: on the newest 50): no storage at all;
* ``RWMH in-memory``: ``RunnableWithMessageHistory`` over
  ``InMemoryChatMessageHistory``;
* ``RWMH community SQL``: the same over langchain-community's ``SQLChatMessageHistory``
  on a SQLite file;
* ``RWMH SQL, trim 50``: the same, with ``trim_messages`` keeping the newest 50 (the
  usual way to bound the context: it still reads the whole history);
* ``ThreadRunner <store>``: ours, whole thread and ``window=50``.

Each subject takes ``--repeat`` turns per size (after a warm-up), in a rotated order
each round and after a garbage collection, so background noise spreads over all of
them. A cell is the median wall time of a turn and the median of its turn-by-turn
ratios to the floor that sends the same messages (paired within a round), with the
spread: the lowest and highest median of three consecutive blocks of turns. Threads
start with the given number of prior messages and grow by two a turn; under 1,000
messages every subject starts a fresh thread every ten rounds.

Targets checked at the end: ThreadRunner within 1.15x of its floor at 10 messages on
SQLite and 1.4x on PostgreSQL, 1.05x at 1,000 and more; with ``window=50``, within
1.1x of its own floor at every length (at 10 messages, where the window sends all,
the 10-message targets); faster than every anchor that sends the same messages.
Run PostgreSQL with its durable defaults (``RETRO_PG_DURABLE=1 scripts/postgres.sh
start``): the test server runs with fsync off, which flatters every write.

The last table is throughput: ``abatch`` over 100 threads of 10 messages each.

Run::

    python bench/runner.py                            # sizes 10,100,1000,10000
    python bench/runner.py --sizes 10,1000 --repeat 30
    python bench/runner.py --postgres postgresql://user@host/db   # adds PostgresStore
    python bench/runner.py --profile 1000             # where ThreadRunner's time goes

Adding a subject is adding a ``(name, factory)`` pair to `subjects`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib.util
import io
import pstats
import random
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    trim_messages,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnablePassthrough
from langchain_openai import ChatOpenAI

# The core and community histories are deprecated upstream; they are the anchors here.
warnings.simplefilter("ignore", DeprecationWarning)

from _conversations import conversation  # noqa: E402
from langchain_community.chat_message_histories import (  # noqa: E402
    SQLChatMessageHistory,
)
from langchain_core.chat_history import InMemoryChatMessageHistory  # noqa: E402
from langchain_core.runnables.history import RunnableWithMessageHistory  # noqa: E402

from langchain_retro import (  # noqa: E402
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    SQLiteStore,
    ThreadRunner,
)
from langchain_retro.stores.base import BaseStore  # noqa: E402
from langchain_retro.testing import FakeChatServer  # noqa: E402

INSTRUCTIONS = "You are a support assistant. Answer in one short paragraph."
WINDOW = 50
BATCH_THREADS = 100
BATCH_PRIOR = 10
BATCH_CONCURRENCY = 16
LIMIT: dict[str, Any] = {"max_concurrency": BATCH_CONCURRENCY}
RESET_EVERY = 10
"""Under 1,000 messages, rounds between fresh threads (a thread grows 20 messages)."""
BLOCKS = 3
"""Consecutive blocks of turns whose medians give a ratio's spread."""

# --- subjects ------------------------------------------------------------------------


@dataclass
class Setup:
    """What a subject needs: the model, the server, a fresh directory, the seed."""

    llm: ChatOpenAI
    server: FakeChatServer
    directory: Path
    rng: random.Random
    opened: list[BaseStore] = field(default_factory=list)
    """Stores the subject opened, closed when it is done."""


Turn = Callable[[str], Any]
"""One turn: given the user's text, append it, call the model, store the reply."""

Factory = Callable[[Setup, list[BaseMessage]], Turn]
"""Builds a subject's thread with the given prior messages; returns its turn."""


def floor(window: int | None) -> Factory:
    def make(setup: Setup, prior: list[BaseMessage]) -> Turn:
        history = list(prior)
        system = SystemMessage(INSTRUCTIONS)

        def turn(text: str) -> Any:
            history.append(HumanMessage(text))
            context = history if window is None else history[-window:]
            history.append(setup.llm.invoke([system, *context]))

        return turn

    return make


def history_chain(llm: ChatOpenAI, trim: int | None) -> Any:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", INSTRUCTIONS),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    if trim is None:
        return prompt | llm
    trimmer = trim_messages(max_tokens=trim, token_counter=len, strategy="last")
    keep = RunnablePassthrough.assign(history=itemgetter("history") | trimmer)
    return keep | prompt | llm


def rwmh(kind: str, trim: int | None = None) -> Factory:
    def make(setup: Setup, prior: list[BaseMessage]) -> Turn:
        if kind == "memory":
            history: Any = InMemoryChatMessageHistory()
        else:
            url = f"sqlite:///{setup.directory / 'community.db'}"
            history = SQLChatMessageHistory(str(uuid.uuid4()), connection=url)
        history.add_messages(prior)
        chain = RunnableWithMessageHistory(
            history_chain(setup.llm, None if trim is None else trim - 1),
            lambda session_id: history,
            input_messages_key="question",
            history_messages_key="history",
        )
        config = {"configurable": {"session_id": "s"}}
        return lambda text: chain.invoke({"question": text}, config)

    return make


def ours(open_store: Callable[[Path], BaseStore], window: int | None) -> Factory:
    def make(setup: Setup, prior: list[BaseMessage]) -> Turn:
        store = open_store(setup.directory)
        setup.opened.append(store)
        assistant = Assistant.create(
            store, model="fake-model", instructions=INSTRUCTIONS
        )
        thread = ChatCompletionThread.create(store, assistant_id=assistant.id)
        AssistantThreadChatMessageHistory(store, thread.id).add_messages(prior)
        runner = ThreadRunner(store=store, llm=setup.llm, window=window)
        config = {"configurable": {"thread_id": thread.id}}
        return lambda text: runner.invoke(text, config)

    return make


def sqlite_store(directory: Path) -> BaseStore:
    return SQLiteStore(directory / "retro.db")


SCHEMAS: list[tuple[str, str]] = []
"""PostgreSQL (url, schema) pairs the bench created, dropped at the end."""


def postgres_store(url: str) -> Callable[[Path], BaseStore]:
    def open_store(directory: Path) -> BaseStore:
        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        SCHEMAS.append((url, schema))
        store = PostgresStore.from_connection_string(url, schema=schema)
        store.setup()
        return store

    return open_store


def drop_schemas() -> None:
    if not SCHEMAS:
        return
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
    for url, schema in SCHEMAS:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(drop.format(sql.Identifier(schema)))


Batch = Callable[[], Awaitable[Any]]
BatchFactory = Callable[[Setup, list[BaseMessage]], Awaitable[Batch]]
"""Builds `BATCH_THREADS` threads with the given prior messages; returns an ``abatch``
of one turn on each."""


async def floor_batch(setup: Setup, prior: list[BaseMessage]) -> Batch:
    inputs = [[SystemMessage(INSTRUCTIONS), *prior, HumanMessage("Hi")]]
    return lambda: setup.llm.abatch(inputs * BATCH_THREADS, LIMIT)


def has_aiosqlite() -> bool:
    return importlib.util.find_spec("aiosqlite") is not None


def rwmh_batch(kind: str) -> BatchFactory:
    async def make(setup: Setup, prior: list[BaseMessage]) -> Batch:
        histories: dict[str, Any] = {}
        # The community history's async methods need an async driver.
        url = f"sqlite+aiosqlite:///{setup.directory / 'community.db'}"
        for _ in range(BATCH_THREADS):
            session = str(uuid.uuid4())
            if kind == "memory":
                histories[session] = InMemoryChatMessageHistory()
            else:
                histories[session] = SQLChatMessageHistory(
                    session, connection=url, async_mode=True
                )
            await histories[session].aadd_messages(prior)
        chain = RunnableWithMessageHistory(
            history_chain(setup.llm, None),
            lambda session_id: histories[session_id],
            input_messages_key="question",
            history_messages_key="history",
        )
        configs = [{"configurable": {"session_id": s}, **LIMIT} for s in histories]
        return lambda: chain.abatch([{"question": "Hi"}] * BATCH_THREADS, configs)

    return make


def ours_batch(open_store: Callable[[Path], BaseStore]) -> BatchFactory:
    async def make(setup: Setup, prior: list[BaseMessage]) -> Batch:
        store = open_store(setup.directory)
        setup.opened.append(store)
        assistant = await Assistant.acreate(
            store, model="fake-model", instructions=INSTRUCTIONS
        )
        configs: list[Any] = []
        for _ in range(BATCH_THREADS):
            thread = await ChatCompletionThread.acreate(
                store, assistant_id=assistant.id
            )
            await AssistantThreadChatMessageHistory(store, thread.id).aadd_messages(
                prior
            )
            configs.append({"configurable": {"thread_id": thread.id}, **LIMIT})
        runner = ThreadRunner(store=store, llm=setup.llm)
        return lambda: runner.abatch(["Hi"] * BATCH_THREADS, configs)

    return make


@dataclass(frozen=True)
class Subject:
    name: str
    factory: Factory
    floor: str | None
    """The subject whose time this one's is divided by; ``None`` for a floor."""
    batch: BatchFactory | None = None
    """Its throughput run, if it has one."""
    ours: bool = False


FLOOR, FLOOR_W = "floor", f"floor, window {WINDOW}"


def subjects(postgres_url: str | None) -> list[Subject]:
    out = [
        Subject(FLOOR, floor(None), None, floor_batch),
        Subject(FLOOR_W, floor(WINDOW), None),
        Subject("RWMH in-memory", rwmh("memory"), FLOOR, rwmh_batch("memory")),
        Subject(
            "RWMH community SQL",
            rwmh("sql"),
            FLOOR,
            rwmh_batch("sql") if has_aiosqlite() else None,
        ),
        Subject(f"RWMH SQL, trim {WINDOW}", rwmh("sql", WINDOW), FLOOR_W),
    ]
    stores: list[tuple[str, Callable[[Path], BaseStore]]] = [("SQLite", sqlite_store)]
    if postgres_url:
        stores.append(("Postgres", postgres_store(postgres_url)))
    for label, open_store in stores:
        out.append(
            Subject(
                f"ThreadRunner {label}",
                ours(open_store, None),
                FLOOR,
                ours_batch(open_store),
                ours=True,
            )
        )
        out.append(
            Subject(
                f"ThreadRunner {label}, window {WINDOW}",
                ours(open_store, WINDOW),
                FLOOR_W,
                ours=True,
            )
        )
    return out


# --- measuring -----------------------------------------------------------------------


@dataclass
class Samples:
    """Per-turn seconds by subject, and each subject's turn-by-turn ratio to its floor.

    A ratio pairs a subject's turn with its floor's turn of the same round (the same
    messages, taken moments apart), so slow drift of the machine cancels out.
    """

    times: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)


def _fresh(
    all_subjects: Sequence[Subject], setup: Callable[[], Setup], size: int
) -> dict[str, Turn]:
    """Every subject's turn on a new thread of ``size`` prior messages."""
    turns: dict[str, Turn] = {}
    for subject in all_subjects:
        turns[subject.name] = subject.factory(
            setup(), conversation(random.Random(size), size)
        )
    return turns


def measure(
    all_subjects: Sequence[Subject], sizes: Sequence[int], repeat: int
) -> dict[int, Samples]:
    """Time ``repeat`` rounds of one turn per subject at every size.

    Subjects take their turns in a rotated order each round (no one always goes first
    or last), after a garbage collection. Threads grow by two messages a turn: under
    1,000 messages every subject starts over on a fresh thread every `RESET_EVERY`
    rounds, so a size stays what it says.
    """
    out: dict[int, Samples] = {}
    floor_of = {s.name: s.floor for s in all_subjects}
    with FakeChatServer() as server, tempfile.TemporaryDirectory() as tmp:
        llm = server.chat_model()
        for size in sizes:
            setups: list[Setup] = []

            def setup(size: int = size, setups: list[Setup] = setups) -> Setup:
                directory = Path(tmp) / f"{size}-{len(setups)}"
                directory.mkdir()
                setups.append(Setup(llm, server, directory, random.Random(size)))
                return setups[-1]

            samples = Samples(
                times={s.name: [] for s in all_subjects},
                ratios={s.name: [] for s in all_subjects if s.floor},
            )
            turns = _fresh(all_subjects, setup, size)
            names = list(turns)
            for round_ in range(-1, repeat):  # round -1 warms up
                if round_ > 0 and size < 1000 and round_ % RESET_EVERY == 0:
                    turns = _fresh(all_subjects, setup, size)
                    for turn in turns.values():  # a warm-up turn on each
                        turn("Hello again")
                spent: dict[str, float] = {}
                shift = max(round_, 0) % len(names)
                for name in names[shift:] + names[:shift]:
                    gc.collect()
                    started = time.perf_counter()
                    turns[name](f"Question {round_}: where is my order?")
                    spent[name] = time.perf_counter() - started
                if round_ < 0:
                    continue
                for name, seconds in spent.items():
                    samples.times[name].append(seconds)
                    floor_name = floor_of[name]
                    if floor_name is not None:
                        samples.ratios[name].append(seconds / spent[floor_name])
            out[size] = samples
            for opened in setups:
                for store in opened.opened:
                    store.close()
            print(f"  measured {size:,} prior messages", flush=True)
    return out


def spread(values: Sequence[float], blocks: int = BLOCKS) -> tuple[float, float, float]:
    """(median, lowest, highest block median): the median of all values, and the
    range of the medians of ``blocks`` consecutive slices of them."""
    size = max(1, len(values) // blocks)
    medians = [
        statistics.median(values[i : i + size])
        for i in range(0, size * blocks, size)
        if values[i : i + size]
    ]
    return statistics.median(values), min(medians), max(medians)


async def throughput(all_subjects: Sequence[Subject]) -> dict[str, float]:
    """Runs per second of ``abatch`` over `BATCH_THREADS` threads, by subject."""
    out: dict[str, float] = {}
    with FakeChatServer() as server, tempfile.TemporaryDirectory() as tmp:
        async with server.achat_model() as llm:
            for subject in all_subjects:
                if subject.batch is None:
                    continue
                directory = Path(tmp) / f"batch-{len(out)}"
                directory.mkdir()
                setup = Setup(llm, server, directory, random.Random(0))
                prior = conversation(setup.rng, BATCH_PRIOR)
                await (await subject.batch(setup, prior))()  # warm-up threads
                run = await subject.batch(setup, prior)
                gc.collect()
                started = time.perf_counter()
                await run()
                out[subject.name] = BATCH_THREADS / (time.perf_counter() - started)
                for store in setup.opened:
                    await store.aclose()
    return out


# --- reporting -----------------------------------------------------------------------


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report(
    all_subjects: Sequence[Subject], sizes: Sequence[int], samples: dict[int, Samples]
) -> list[str]:
    """Print the per-turn table; return the targets missed."""
    rows = [["per turn, ms (x its floor, spread)", *(f"{s:,} msgs" for s in sizes)]]
    for subject in all_subjects:
        cells = [subject.name]
        for size in sizes:
            ms = statistics.median(samples[size].times[subject.name]) * 1000
            if subject.floor is None:
                cells.append(f"{ms:.1f}")
            else:
                ratio, low, high = spread(samples[size].ratios[subject.name])
                cells.append(f"{ms:.1f} ({ratio:.2f}x, {low:.2f}-{high:.2f})")
        rows.append(cells)
    print(table(rows))
    print(
        f"x: the median of turn-by-turn ratios to the floor; spread: the lowest and "
        f"highest median of {BLOCKS} consecutive blocks of turns"
    )
    return targets(all_subjects, sizes, samples)


def limit(subject: Subject, size: int) -> float | None:
    """The issue's target for a subject of ours at a size, if it has one."""
    if size == 10:
        return 1.4 if "Postgres" in subject.name else 1.15
    if "window" in subject.name:
        return 1.1
    if size >= 1000:
        return 1.05
    return None


def targets(
    all_subjects: Sequence[Subject], sizes: Sequence[int], samples: dict[int, Samples]
) -> list[str]:
    missed: list[str] = []
    for subject in (s for s in all_subjects if s.ours):
        # Anchors sending the same messages: those measured against the same floor.
        anchors = [a for a in all_subjects if a.floor == subject.floor and not a.ours]
        for size in sizes:
            ratio, _, _ = spread(samples[size].ratios[subject.name])
            target = limit(subject, size)
            if target is not None and ratio > target:
                missed.append(
                    f"{subject.name} at {size:,}: {ratio:.2f}x its floor "
                    f"(target {target}x)"
                )
            ours = statistics.median(samples[size].times[subject.name])
            slower = [
                a.name
                for a in anchors
                if statistics.median(samples[size].times[a.name]) <= ours
            ]
            if slower:
                missed.append(
                    f"{subject.name} at {size:,}: not faster than {', '.join(slower)}"
                )
    return missed


def profile(size: int, open_store: Callable[[Path], BaseStore]) -> None:
    with FakeChatServer() as server, tempfile.TemporaryDirectory() as tmp:
        setup = Setup(server.chat_model(), server, Path(tmp), random.Random(size))
        turn = ours(open_store, None)(setup, conversation(setup.rng, size))
        turn("warm-up")
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(10):
            turn(f"question {i}")
        profiler.disable()
        for store in setup.opened:
            store.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
    print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--postgres", metavar="URL", help="add a PostgresStore column")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="SIZE",
        help="profile ThreadRunner's turns (on PostgreSQL with --postgres), then exit",
    )
    args = parser.parse_args()
    try:
        if args.profile:
            store = postgres_store(args.postgres) if args.postgres else sqlite_store
            profile(args.profile, store)
        else:
            run(args)
    finally:
        drop_schemas()


def run(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    all_subjects = subjects(args.postgres)
    print(f"per-turn cost, {args.repeat} turns per subject and size:", flush=True)
    samples = measure(all_subjects, sizes, args.repeat)
    missed = report(all_subjects, sizes, samples)

    print(
        f"\nthroughput: abatch over {BATCH_THREADS} threads of {BATCH_PRIOR} "
        f"messages, max_concurrency={BATCH_CONCURRENCY}",
        flush=True,
    )
    rates = asyncio.run(throughput(all_subjects))
    rows = [["subject", "runs/s", "x floor"]]
    rows += [
        [name, f"{rate:.0f}", f"{rate / rates[FLOOR]:.2f}x"]
        for name, rate in rates.items()
    ]
    print(table(rows))
    if not has_aiosqlite():
        print("(RWMH community SQL: its abatch needs aiosqlite, not installed)")
    print("\ntargets: " + ("all met" if not missed else "MISSED"))
    for line in missed:
        print(f"  - {line}")


if __name__ == "__main__":
    main()
