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

Each cell is the median wall time of ``--repeat`` turns (at least 25 for turns under
50 ms) after a warm-up turn, with the ratio to the floor that sends the same messages.
Subjects take their turns round-robin, after a garbage collection, so background noise
spreads over all of them. Threads start with the given number of prior messages and
grow by two per turn.

Targets checked at the end: ThreadRunner within 1.3x of its floor at 10 messages and
1.05x at 1,000 and more; with a window, the turn at 10,000 messages within 1.1x of the
turn at 100; faster than every anchor that sends the same messages, at every length.

The last table is throughput: ``abatch`` over 100 threads of 10 messages each.

Run::

    python bench/runner.py                            # sizes 10,100,1000,10000
    python bench/runner.py --sizes 10,1000 --repeat 9
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
FAST = 0.05
"""Turns quicker than this (seconds) are sampled `FAST_REPEAT` times at least."""
FAST_REPEAT = 25

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


def measure(
    all_subjects: Sequence[Subject], sizes: Sequence[int], repeat: int
) -> dict[tuple[str, int], float]:
    """Median seconds per turn, by (subject, size)."""
    medians: dict[tuple[str, int], float] = {}
    with FakeChatServer() as server, tempfile.TemporaryDirectory() as tmp:
        llm = server.chat_model()
        for size in sizes:
            turns: dict[str, Turn] = {}
            setups: list[Setup] = []
            for subject in all_subjects:
                directory = Path(tmp) / f"{size}-{len(turns)}"
                directory.mkdir()
                setups.append(Setup(llm, server, directory, random.Random(size)))
                prior = conversation(random.Random(size), size)
                turns[subject.name] = subject.factory(setups[-1], prior)
            times: dict[str, list[float]] = {name: [] for name in turns}
            for round_ in range(1 + max(repeat, FAST_REPEAT)):
                for name, turn in turns.items():
                    if round_ > repeat and statistics.median(times[name]) > FAST:
                        continue  # slow turns vary less; quick ones get more samples
                    gc.collect()
                    started = time.perf_counter()
                    turn(f"Question {round_}: where is my order?")
                    if round_:  # the first round warms up
                        times[name].append(time.perf_counter() - started)
            for name, values in times.items():
                medians[name, size] = statistics.median(values)
            for setup in setups:
                for store in setup.opened:
                    store.close()
            print(f"  measured {size:,} prior messages", flush=True)
    return medians


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
    all_subjects: Sequence[Subject],
    sizes: Sequence[int],
    medians: dict[tuple[str, int], float],
) -> list[str]:
    """Print the per-turn table; return the targets missed."""
    rows = [["per turn, ms (x its floor)", *(f"{s:,} msgs" for s in sizes)]]
    for subject in all_subjects:
        cells = [subject.name]
        for size in sizes:
            ms = medians[subject.name, size] * 1000
            if subject.floor is None:
                cells.append(f"{ms:.1f}")
            else:
                ratio = medians[subject.name, size] / medians[subject.floor, size]
                cells.append(f"{ms:.1f} ({ratio:.2f}x)")
        rows.append(cells)
    print(table(rows))
    return targets(all_subjects, sizes, medians)


def targets(
    all_subjects: Sequence[Subject],
    sizes: Sequence[int],
    medians: dict[tuple[str, int], float],
) -> list[str]:
    missed: list[str] = []
    for subject in (s for s in all_subjects if s.ours):
        # Anchors sending the same messages: those measured against the same floor.
        anchors = [a for a in all_subjects if a.floor == subject.floor and not a.ours]
        for size in sizes:
            assert subject.floor is not None
            ratio = medians[subject.name, size] / medians[subject.floor, size]
            limit = 1.3 if size < 1000 else 1.05
            if (size == 10 or size >= 1000) and ratio > limit:
                missed.append(
                    f"{subject.name} at {size:,}: {ratio:.2f}x its floor "
                    f"(target {limit}x)"
                )
            slower = [
                a.name
                for a in anchors
                if medians[a.name, size] <= medians[subject.name, size]
            ]
            if slower:
                missed.append(
                    f"{subject.name} at {size:,}: not faster than {', '.join(slower)}"
                )
        if "window" in subject.name and 100 in sizes and 10_000 in sizes:
            flat = medians[subject.name, 10_000] / medians[subject.name, 100]
            print(f"{subject.name}: turn at 10,000 / turn at 100 = {flat:.2f}x")
            if flat > 1.1:
                missed.append(f"{subject.name}: 10,000 vs 100 is {flat:.2f}x (1.1x)")
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
    parser.add_argument("--repeat", type=int, default=5)
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
    print(
        f"per-turn cost, median of {args.repeat} turns "
        f"({FAST_REPEAT} for turns under {FAST * 1000:.0f} ms):",
        flush=True,
    )
    medians = measure(all_subjects, sizes, args.repeat)
    missed = report(all_subjects, sizes, medians)

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
