"""Throughput of ThreadRunner from 1, 2 and 4 worker processes on one database.

The same work in every row: `THREADS` threads of `PRIOR` messages, each run
``--rounds`` times (after one untimed warm-up run) by ``ThreadRunner.abatch`` with
``window=None``. With N processes, each takes every Nth thread and runs its share; at
most ``--concurrency`` runs are in flight in all, split evenly between the processes,
so more processes means more cores, not more runs in flight. Every measurement starts
from fresh threads, so every row sends the same messages; afterwards each thread must
hold exactly its prior messages plus two per run, and the model must have been called
once per run.

The last table is the floor: ``ChatOpenAI.abatch`` alone on the same conversations,
kept in lists in memory, from 1, 2 and 4 processes.

One `FakeChatServer` answers every run at once (no delay). It runs in threads of this
process, which does nothing else while the workers run, so its CPU time per run is
this process's. Also shown (Linux only): PostgreSQL's CPU time (its processes', from
``/proc``), how many CPUs were busy (``/proc/stat``, time stolen by a hypervisor
excluded), and how many by anything but the bench (the kernel's own work and other
programs), so a row limited by the fake model, the database or the machine shows it.

Worker processes are started once, with ``spawn``, and reused. ``runs/s`` is all runs
over the wall time from the first worker's start to the last one's end, the median of
``--repeat`` measurements taken round-robin over the rows. A measurement during which
other work kept more than `NOISE` CPUs busy is taken again, up to `RETAKES` times,
once the machine is quiet; the last column shows what remained.

Target (PostgreSQL): 4 processes >= 1.6x the runs/s of 1 process on 2 cores.

Run::

    python bench/throughput.py                    # PostgreSQL, SQLite, model alone
    python bench/throughput.py --postgres postgresql://user@host/db --rounds 8
    python bench/throughput.py --no-sqlite --profile   # then where a worker's CPU goes

``--postgres`` defaults to ``$RETRO_TEST_POSTGRES_URL`` (see scripts/postgres.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import pstats
import random
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _conversations import conversation
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    SQLiteStore,
    ThreadRunner,
)
from langchain_retro.stores.base import BaseStore
from langchain_retro.testing import FakeChatServer

THREADS = 100
PRIOR = 10
PROCESSES = (1, 2, 4)
INSTRUCTIONS = "You are a support assistant. Answer in one short paragraph."
TARGET = 1.6
NOISE = 0.15
"""CPUs busy with other work above which a measurement is taken again."""
RETAKES = 3
MODEL_ALONE = "model alone"
"""The column without a store: ``ChatOpenAI.abatch`` on the same messages."""
TITLES = {
    "postgres": "ThreadRunner on PostgreSQL",
    "sqlite": "ThreadRunner on SQLite (one file)",
    MODEL_ALONE: "ChatOpenAI.abatch alone on the same messages, kept in lists",
}
# --- the databases -------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """Where a measurement's threads live: a SQLite file or a PostgreSQL schema."""

    kind: str
    """``sqlite`` or ``postgres``."""
    location: str
    """The SQLite file's path, or the PostgreSQL URL."""
    schema: str | None = None
    """The PostgreSQL schema."""
    pool_size: int = 10
    """Connections a worker's PostgreSQL pool may open."""

    def open(self) -> BaseStore:
        if self.kind == "sqlite":
            return SQLiteStore(self.location)
        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore.from_connection_string(
            self.location, schema=self.schema, max_size=self.pool_size
        )

    def drop(self) -> None:
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(self.location + suffix).unlink(missing_ok=True)
            return
        import psycopg  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415

        with psycopg.connect(self.location, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(str(self.schema))
                )
            )


def new_database(kind: str, where: str, pool_size: int) -> Database | None:
    if kind == MODEL_ALONE:
        return None
    if kind == "sqlite":
        return Database(kind, str(Path(where) / f"{uuid.uuid4().hex[:8]}.db"))
    database = Database(kind, where, f"bench_{uuid.uuid4().hex[:10]}", pool_size)
    store = database.open()
    try:
        store.setup()  # type: ignore[attr-defined]
    finally:
        store.close()
    return database


def populate(
    database: Database | None, rng: random.Random
) -> tuple[list[str], list[list[BaseMessage]]]:
    """`THREADS` threads of `PRIOR` messages: their ids and messages."""
    priors = [conversation(rng, PRIOR) for _ in range(THREADS)]
    if database is None:
        return [f"thread-{i}" for i in range(THREADS)], priors
    with database.open() as store:
        assistant = Assistant.create(
            store, model="fake-model", instructions=INSTRUCTIONS
        )
        ids = []
        for prior in priors:
            thread = ChatCompletionThread.create(store, assistant_id=assistant.id)
            AssistantThreadChatMessageHistory(store, thread.id).add_messages(prior)
            ids.append(thread.id)
        return ids, priors


def message_counts(database: Database, thread_ids: list[str]) -> set[int]:
    with database.open() as store:
        return {store.count_messages(thread_id) for thread_id in thread_ids}


# --- the worker processes ------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One worker's share of a measurement."""

    database: Database | None
    """Where the threads are; ``None`` to call ``ChatOpenAI.abatch`` alone."""
    thread_ids: list[str]
    """The worker's threads."""
    prior: list[list[BaseMessage]]
    """Their prior messages, for the model alone (which has no store to read)."""
    rounds: int
    """Timed runs per thread."""
    concurrency: int
    """Runs in flight in this worker."""
    profile: str | None = None
    """Where to write a cProfile of the timed rounds, if anywhere."""


@dataclass(frozen=True)
class Done:
    """What a worker reports after its timed rounds."""

    started: float
    """``time.monotonic()`` at the start (the clock is shared by the processes)."""
    ended: float
    runs: int
    cpu: float
    """CPU seconds the worker process used (all its threads)."""


Round = Callable[[str], Awaitable[list[Any]]]
"""One run on each of a worker's threads, the user saying the given text."""


def runner_round(store: BaseStore, llm: Any, job: Job) -> Round:
    runner = ThreadRunner(store=store, llm=llm)
    configs: list[Any] = [
        {"configurable": {"thread_id": thread_id}, "max_concurrency": job.concurrency}
        for thread_id in job.thread_ids
    ]
    return lambda text: runner.abatch([text] * len(configs), configs)


def model_round(llm: Any, job: Job) -> Round:
    """The same requests as `runner_round`, from lists in memory: no store at all."""
    conversations = [[SystemMessage(INSTRUCTIONS), *prior] for prior in job.prior]
    config: Any = {"max_concurrency": job.concurrency}

    async def run(text: str) -> list[Any]:
        for messages in conversations:
            messages.append(HumanMessage(text))
        replies = await llm.abatch(conversations, config)
        for messages, reply in zip(conversations, replies, strict=True):
            messages.append(reply)
        return replies

    return run


def worker(base_url: str, tasks: Any, results: Any) -> None:
    """Serve jobs from ``tasks`` until ``None``: warm up, report, wait, run, report."""
    asyncio.run(_serve(base_url, tasks, results))


async def _serve(base_url: str, tasks: Any, results: Any) -> None:
    import openai  # noqa: PLC0415
    from langchain_openai import ChatOpenAI  # noqa: PLC0415

    async with openai.DefaultAsyncHttpxClient() as http_client:
        llm = ChatOpenAI(
            base_url=base_url,
            api_key="test-key",
            model="fake-model",
            max_retries=0,
            http_async_client=http_client,
        )
        while (job := await asyncio.to_thread(tasks.get)) is not None:
            try:
                await _run_job(llm, job, tasks, results)
            except Exception:
                results.put(("error", traceback.format_exc()))


async def _run_job(llm: Any, job: Job, tasks: Any, results: Any) -> None:
    store = None if job.database is None else job.database.open()
    try:
        run = model_round(llm, job) if store is None else runner_round(store, llm, job)
        await run("Hello, warming up.")
        results.put(("ready", None))
        await asyncio.to_thread(tasks.get)  # the go signal
        profiler = cProfile.Profile() if job.profile else None
        cpu, started = time.process_time(), time.monotonic()
        if profiler:
            profiler.enable()
        for round_ in range(job.rounds):
            replies = await run(f"Question {round_}: where is my order?")
            assert len(replies) == len(job.thread_ids)
        if profiler:
            profiler.disable()
        ended, cpu = time.monotonic(), time.process_time() - cpu
        if profiler and job.profile:
            profiler.dump_stats(job.profile)
        runs = len(job.thread_ids) * job.rounds
        results.put(("done", Done(started, ended, runs, cpu)))
        # Connections stay open until the parent has read the database's CPU time.
        await asyncio.to_thread(tasks.get)
    finally:
        if store is not None:
            await store.aclose()
    results.put(("closed", None))


class Workers:
    """`max(PROCESSES)` spawned worker processes, each with its own task queue."""

    def __init__(self, base_url: str, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.results = context.Queue()
        self.tasks = [context.Queue() for _ in range(count)]
        self.processes = [
            context.Process(
                target=worker, args=(base_url, tasks, self.results), daemon=True
            )
            for tasks in self.tasks
        ]
        for process in self.processes:
            process.start()

    def send(self, count: int, messages: list[Any] | Any) -> None:
        """Send the first ``count`` workers a message each (or the same one)."""
        for index in range(count):
            message = messages[index] if isinstance(messages, list) else messages
            self.tasks[index].put(message)

    def collect(self, count: int, expected: str) -> list[Any]:
        """Wait for ``count`` reports of kind ``expected``; return their values."""
        out = []
        for _ in range(count):
            kind, value = self.results.get(timeout=600)
            if kind != expected:
                raise RuntimeError(
                    f"a worker sent {kind} instead of {expected}:\n{value}"
                )
            out.append(value)
        return out

    def close(self) -> None:
        for tasks in self.tasks:
            tasks.put(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


# --- measuring -----------------------------------------------------------------------


def _ticks(stat: str) -> int:
    """User plus system clock ticks from the text of ``/proc/<pid>/stat``."""
    fields = stat.rpartition(") ")[2].split()
    return int(fields[11]) + int(fields[12])


def postgres_cpu() -> float | None:
    """CPU seconds used so far by the live processes named ``postgres`` (Linux)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended
        if stat.partition(" (")[2].startswith("postgres) "):
            ticks += _ticks(stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float | None:
    """CPU seconds all CPUs spent busy so far: not idle, not waiting on I/O (Linux)."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split()[1:9]]
    except OSError:
        return None
    idle = fields[3] + fields[4] + fields[7]  # idle, iowait, stolen by the host
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _since(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


class CPUClocks:
    """CPU seconds of this process (the fake model), PostgreSQL and the machine."""

    def __init__(self) -> None:
        self.own, self.postgres, self.machine = (
            time.process_time(),
            postgres_cpu(),
            machine_cpu(),
        )

    def elapsed(self) -> tuple[float, float | None, float | None]:
        return (
            time.process_time() - self.own,
            _since(self.postgres, postgres_cpu()),
            _since(self.machine, machine_cpu()),
        )


def background_load(seconds: float = 1.0) -> float | None:
    """How many CPUs other work keeps busy, sampled before the bench starts."""
    before = machine_cpu()
    time.sleep(seconds)
    after = machine_cpu()
    return None if before is None or after is None else (after - before) / seconds


@dataclass(frozen=True)
class Sample:
    """One measurement: N processes running the same work."""

    runs: int
    wall: float
    client_cpu: float
    """CPU seconds of the worker processes."""
    server_cpu: float
    """CPU seconds of the fake model's process (this one)."""
    database_cpu: float | None
    """CPU seconds of PostgreSQL's processes; ``None`` for SQLite or off Linux."""
    machine_cpu: float | None
    """CPU seconds the machine was busy, whoever with."""

    @property
    def rate(self) -> float:
        return self.runs / self.wall

    @property
    def other_cpu(self) -> float | None:
        """CPUs kept busy by anything but the bench, on average: noise, if not 0."""
        if self.machine_cpu is None:
            return None
        ours = self.client_cpu + self.server_cpu + (self.database_cpu or 0)
        return max(0.0, self.machine_cpu - ours) / self.wall


def measure(
    workers: Workers,
    server: FakeChatServer,
    args: argparse.Namespace,
    kind: str,
    *,
    processes: int,
    profile: str | None = None,
) -> Sample:
    where = args.postgres if kind == "postgres" else args.workdir
    concurrency = max(1, args.concurrency // processes)
    database = new_database(kind, where, pool_size=concurrency)
    try:
        thread_ids, priors = populate(database, random.Random(args.seed))
        jobs = [
            Job(
                database,
                thread_ids[index::processes],
                priors[index::processes] if database is None else [],
                args.rounds,
                concurrency,
                profile,
            )
            for index in range(processes)
        ]
        workers.send(processes, jobs)
        workers.collect(processes, "ready")  # warmed up
        requests = len(server.requests)
        clocks = CPUClocks()
        workers.send(processes, "go")
        done: list[Done] = workers.collect(processes, "done")
        server_cpu, database_cpu, busy = clocks.elapsed()
        workers.send(processes, "close")
        workers.collect(processes, "closed")
        runs = sum(d.runs for d in done)
        # The same work in every column: one model call per run, two messages stored.
        assert runs == THREADS * args.rounds
        assert len(server.requests) - requests == runs
        if database is not None:
            counts = message_counts(database, thread_ids)
            assert counts == {PRIOR + 2 + 2 * args.rounds}, counts
        server.requests.clear()
        return Sample(
            runs=runs,
            wall=max(d.ended for d in done) - min(d.started for d in done),
            client_cpu=sum(d.cpu for d in done),
            server_cpu=server_cpu,
            database_cpu=database_cpu if kind == "postgres" else None,
            machine_cpu=busy,
        )
    finally:
        if database is not None:
            database.drop()


def quiet_measure(
    workers: Workers,
    server: FakeChatServer,
    args: argparse.Namespace,
    kind: str,
    processes: int,
) -> Sample:
    """`measure`, taken again (after the machine calms down) while other work shows.

    Returns the sample with the least other work of up to `RETAKES` + 1.
    """
    best: Sample | None = None
    for attempt in range(RETAKES + 1):
        if attempt:
            wait_for_quiet()
        sample = measure(workers, server, args, kind, processes=processes)
        if best is None or (sample.other_cpu or 0) < (best.other_cpu or 0):
            best = sample
        if (sample.other_cpu or 0) <= NOISE:
            break
    assert best is not None
    return best


def wait_for_quiet(within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        load = background_load()
        if load is None or load <= NOISE:
            return


def median_sample(samples: list[Sample]) -> Sample:
    return sorted(samples, key=lambda s: s.rate)[len(samples) // 2]


# --- reporting -----------------------------------------------------------------------


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report(kind: str, by_processes: dict[int, list[Sample]]) -> float:
    """Print one backend's table; return 4 processes' ratio to 1."""
    rows = [
        [
            "processes",
            "runs/s",
            "x 1 process",
            "spread",
            "client CPU ms/run",
            "fake model ms/run",
            "PostgreSQL ms/run",
            "CPUs busy",
            "by other work",
        ]
    ]
    base = median_sample(by_processes[1]).rate
    for processes, samples in by_processes.items():
        sample = median_sample(samples)
        rates = [s.rate for s in samples]
        rows.append(
            [
                str(processes),
                f"{sample.rate:.0f}",
                f"{sample.rate / base:.2f}x",
                f"{min(rates):.0f}-{max(rates):.0f}",
                f"{sample.client_cpu / sample.runs * 1000:.2f}",
                f"{sample.server_cpu / sample.runs * 1000:.2f}",
                "-"
                if sample.database_cpu is None
                else f"{sample.database_cpu / sample.runs * 1000:.2f}",
                "-"
                if sample.machine_cpu is None
                else f"{sample.machine_cpu / sample.wall:.2f}",
                "-" if sample.other_cpu is None else f"{sample.other_cpu:.2f}",
            ]
        )
    print(f"\n{TITLES[kind]}:")
    print(table(rows))
    return median_sample(by_processes[max(by_processes)]).rate / base


OWN_COST = frozenset({"asyncio", "selectors", "socket", "ssl", "threading", "queue"})
"""Standard modules whose time is their own: the event loop and the sockets."""


def package_of(filename: str) -> str | None:
    """The distribution or standard module a profiled function belongs to.

    ``None`` for helpers (built-ins, the standard library besides `OWN_COST`), whose
    time belongs to whoever called them.
    """
    parts = Path(filename).parts
    if "site-packages" in parts:
        top = parts[parts.index("site-packages") + 1]
        return top.removesuffix(".py").split(".")[0]
    if "langchain_retro" in parts:
        return "langchain_retro"
    lib = next((i for i, p in enumerate(parts) if p.startswith("python3")), None)
    if lib is not None and lib + 1 < len(parts):
        module = parts[lib + 1].removesuffix(".py")
        if module in OWN_COST:
            return f"{module} (stdlib)"
    return None


def by_package(stats: pstats.Stats) -> dict[str, float]:
    """Own time per package; helpers' time is charged to their callers, recursively."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    shares: dict[Any, dict[str, float]] = {}  # a function's second, by package

    def share_of(function: Any) -> dict[str, float]:
        if function in shares:
            return shares[function]
        package = package_of(function[0])
        callers = table.get(function, (0, 0, 0, 0, {}))[4]
        if package is not None or not callers:
            shares[function] = {package or "built-ins": 1.0}
            return shares[function]
        shares[function] = {"built-ins": 1.0}  # for calls in a cycle
        weights = {caller: edge[2] for caller, edge in callers.items()}
        whole = sum(weights.values()) or 1.0
        out: dict[str, float] = {}
        for caller, weight in weights.items():
            for name, part in share_of(caller).items():
                out[name] = out.get(name, 0.0) + part * weight / whole
        shares[function] = out
        return out

    totals: dict[str, float] = {}
    for function, (_, _, own, _, _) in table.items():
        for name, part in share_of(function).items():
            totals[name] = totals.get(name, 0.0) + own * part
    return totals


def print_profile(path: str, runs: int) -> None:
    stats = pstats.Stats(path)
    totals = by_package(stats)
    whole = sum(totals.values())
    print(
        f"\nWhere one worker's CPU goes (cProfile of its {runs} timed runs; own time "
        "by package, the standard library's charged to its callers; the profiler "
        "slows many small calls more than a few big ones, so the shares lean towards "
        "pure-Python code):"
    )
    rows = [["package", "share", "ms/run (profiled)"]]
    for package, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:15]:
        rows.append([package, f"{seconds / whole:.0%}", f"{seconds / runs * 1000:.2f}"])
    print(table(rows))
    print("\nFunctions with the most own time:")
    stats.strip_dirs().sort_stats("tottime").print_stats(20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=os.environ.get("RETRO_TEST_POSTGRES_URL"),
        help="PostgreSQL server (default $RETRO_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
    parser.add_argument(
        "--no-model-alone",
        action="store_true",
        help="skip the ChatOpenAI.abatch floor without a store",
    )
    parser.add_argument("--rounds", type=int, default=4, help="timed runs per thread")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="runs in flight in all, split between the processes (default 16)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="measurements per cell")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then profile one process's worker on the first backend",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    kinds = [
        kind
        for kind, wanted in (
            ("postgres", args.postgres is not None),
            ("sqlite", not args.no_sqlite),
            (MODEL_ALONE, not args.no_model_alone),
        )
        if wanted
    ]
    if not kinds:
        parser.error("nothing to measure")
    print(
        f"abatch over {THREADS} threads of {PRIOR} messages, window=None, "
        f"{args.rounds} timed runs per thread ({THREADS * args.rounds} runs), "
        f"{args.concurrency} runs in flight in all; fake model answers at once; "
        f"median of {args.repeat}; {os.cpu_count()} CPUs",
        flush=True,
    )
    missed = []
    with (
        tempfile.TemporaryDirectory(prefix="retro-throughput-") as workdir,
        FakeChatServer() as server,
    ):
        args.workdir = workdir
        workers = Workers(server.base_url, max(PROCESSES))
        try:
            for kind in kinds:
                samples: dict[int, list[Sample]] = {n: [] for n in PROCESSES}
                for _ in range(args.repeat):
                    for processes in PROCESSES:
                        samples[processes].append(
                            quiet_measure(workers, server, args, kind, processes)
                        )
                ratio = report(kind, samples)
                if kind == "postgres" and ratio < TARGET:
                    missed.append(f"PostgreSQL: 4 processes {ratio:.2f}x of 1")
            if args.profile:
                path = str(Path(workdir) / "worker.prof")
                measure(workers, server, args, kinds[0], processes=1, profile=path)
                print_profile(path, THREADS * args.rounds)
        finally:
            workers.close()
    print(
        f"\ntarget: 4 processes >= {TARGET}x 1 process on PostgreSQL: "
        + ("met" if not missed and "postgres" in kinds else "; ".join(missed) or "n/a")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
