"""Cost of the Assistants API server: ``langchain-retro serve`` under load.

A load generator in its own process drives a server on 127.0.0.1 with concurrent
requests and prints requests per second and p50/p99 latency; the server's upstream
model is a `FakeChatServer` (in this process), so the model's work is small and the
same for every subject. Side by side, in the same run:

* ``bare FastAPI``: a FastAPI endpoint on the same uvicorn returning a small JSON,
  doing nothing else: the ceiling of any FastAPI server here;
* ``raw ASGI message``: an ASGI callable on the same uvicorn that appends a message
  through the server's store call on SQLite and answers, with nothing else (no
  FastAPI, keys, log, validation): what a message endpoint costs when it does only
  the work (`raw_message_app`);
* ``messages``: ``POST /v1/threads/{id}/messages`` spread over 50 threads;
* ``run (polled)``: create a run, then ``GET`` it until it completes, as the openai
  SDK's ``create_and_poll`` does;
* ``run (streamed)``: create a run with ``stream: true`` and read it to ``done``;
* ``ThreadRunner in process``: the same runs, invoked (or streamed, for the
  streamed runs) in the load generator's process on the server's own store (its
  SQLite file, or its PostgreSQL schema): the floor a run through HTTP adds to.
  It takes turns with the one-at-a-time runs over HTTP, one run each on the same
  thread, so both send the model as many messages and meet the machine alike.

Each server subject runs with 1 and 4 workers, on SQLite and, with ``--postgres``,
on PostgreSQL. Targets printed at the end: message creation at least half the bare
endpoint's requests per second; a polled or streamed run at most 3 ms p50 over the
same run through ThreadRunner; 4 workers at least 1.5x one worker on PostgreSQL, or
the CPU count says two cores are the ceiling.

Each cell also shows how busy the machine's cores were and the server's CPU
milliseconds per request (all its workers); with ``--rounds`` (default 3) every
cell runs that many times, interleaved, and the targets are printed as the median
of the rounds with their lowest and highest.

Run::

    python bench/server.py                          # SQLite, 3 s per cell
    python bench/server.py --postgres postgresql://user@host/db --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import httpx2

from langchain_retro.testing import FakeChatServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench"
POLL_HELPER = {"X-Stainless-Poll-Helper": "true"}
"""The header of the openai SDK's polling helpers' requests."""


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


# --- the bare FastAPI ceiling ------------------------------------------------------


def bare_app() -> Any:
    """A FastAPI app whose only endpoint returns a small JSON (uvicorn factory)."""
    from fastapi import FastAPI  # noqa: PLC0415
    from fastapi.responses import JSONResponse  # noqa: PLC0415

    app = FastAPI()

    @app.post("/v1/bare")
    async def bare() -> JSONResponse:
        return JSONResponse({"id": "msg_bare", "object": "thread.message"})

    @app.get("/healthz")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


RAW_THREADS = 50
"""Threads the raw message app writes to (``/v1/raw/{index}/messages``)."""


def raw_message_app() -> Any:
    """A message endpoint with nothing but the work (uvicorn factory).

    A bare ASGI callable on the same uvicorn: it reads the body, decodes its JSON,
    appends the message through the same store call as the server
    (`ThreadMessage.acreate_if_idle` on a `SQLiteStore` with the server's default
    settings) and answers a small JSON. No FastAPI, no middleware, no keys, no
    access log, no validation, no records beyond the message: what a message costs
    on this uvicorn and store when nothing else is asked of it.
    """
    from langchain_core.messages import HumanMessage  # noqa: PLC0415

    from langchain_retro import ChatCompletionThread, ThreadMessage  # noqa: PLC0415
    from langchain_retro.stores import SQLiteStore  # noqa: PLC0415

    store = SQLiteStore(os.environ["RETRO_BENCH_RAW_DB"])
    threads: list[str] = []

    async def answer(send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json")]
        start = {"type": "http.response.start", "status": status, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    for _ in range(RAW_THREADS):
                        made = await ChatCompletionThread.acreate(
                            store, assistant_id=""
                        )
                        threads.append(made.id)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await store.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/healthz":
            await answer(send, 200, b'{"status":"ok"}')
            return
        body = b""
        more = True
        while more:
            event = await receive()
            body += event.get("body", b"")
            more = event.get("more_body", False)
        thread_id = threads[int(scope["path"].split("/")[3])]
        content = json.loads(body)["content"]
        made = await ThreadMessage.acreate_if_idle(
            store, thread_id=thread_id, message=HumanMessage(content)
        )
        reply = {"id": made.id, "object": "thread.message", "thread_id": thread_id}
        await answer(send, 200, json.dumps(reply).encode())

    return app


# --- the load generator (its own process) ------------------------------------------


async def _drive(
    base: str, kind: str, targets: list[str], seconds: float, concurrency: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    async with _session(base, concurrency) as http:

        async def one(index: int) -> None:
            nonlocal errors
            # Each task its own threads: a thread runs one run at a time.
            mine = targets[index::concurrency] or targets[index % len(targets) :][:1]
            n = 0
            while time.monotonic() < stop:
                target = mine[n % len(mine)]
                n += 1
                started = time.perf_counter()
                ok = await _request(http, kind, target)
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok

        began = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(concurrency)))
        elapsed = time.monotonic() - began
    return {"errors": errors, "rps": len(latencies) / elapsed, **_latency(latencies)}


def _latency(latencies: list[float]) -> dict[str, Any]:
    """How many requests a cell timed, and their p50 and p99 (ms)."""
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "p50": statistics.median(ordered) if ordered else 0.0,
        "p99": ordered[int(len(ordered) * 0.99) - 1] if ordered else 0.0,
    }


def _session(base: str, connections: int) -> aiohttp.ClientSession:
    """The load generator's HTTP client: aiohttp, whose parser is in C.

    A request of the openai SDK's own client (httpx) costs about 0.5 ms more on
    this side of the wire; the load generator measures the server, not itself.
    """
    return aiohttp.ClientSession(
        base,
        headers={"Authorization": f"Bearer {KEY}"},
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def _request(http: aiohttp.ClientSession, kind: str, target: str) -> bool:
    if kind == "bare":
        async with http.post("/v1/bare", json={}) as response:
            await response.read()
            return response.status == 200
    if kind in ("messages", "raw"):
        message = {"role": "user", "content": "hello"}
        path = f"/v1/threads/{target}/messages"
        if kind == "raw":
            path = f"/v1/raw/{target}/messages"
        async with http.post(path, json=message) as made:
            await made.read()
            return made.status == 200
    thread_id, assistant_id = target.split(" ")
    # Each run brings the message it answers.
    body: dict[str, Any] = {
        "assistant_id": assistant_id,
        "additional_messages": [{"role": "user", "content": "hi"}],
    }
    if kind == "polled":
        async with http.post(f"/v1/threads/{thread_id}/runs", json=body) as made:
            if made.status != 200:
                return False
            run = await made.json()
        # As the SDK's create_and_poll: GET at once, saying it polls, then again
        # after as long as the first GET's answer said, until the run stops.
        path = f"/v1/threads/{thread_id}/runs/{run['id']}"
        after: float | None = None
        while True:
            async with http.get(path, headers=POLL_HELPER) as polled:
                run = await polled.json()
                wait = polled.headers.get("openai-poll-after-ms", "1000")
            if run["status"] not in ("queued", "in_progress", "cancelling"):
                break
            if after is None:
                after = int(wait) / 1000
            await asyncio.sleep(after)
        return bool(run["status"] == "completed")
    body["stream"] = True
    async with http.post(f"/v1/threads/{thread_id}/runs", json=body) as response:
        text = await response.text()
    return "thread.run.completed" in text


async def _paired(
    base: str, kind: str, targets: list[str], seconds: float, floor: dict[str, str]
) -> dict[str, Any]:
    """One run at a time over HTTP, taking turns with the same run in process.

    Each turn runs one thread's run through the server and one through
    `ThreadRunner` on the server's store, in alternating order: both see the same
    machine, the same threads and as many messages. A first run over HTTP on each
    thread points it at the assistant, and the first turns warm up.
    """
    from langchain_openai import ChatOpenAI  # noqa: PLC0415

    from langchain_retro import ThreadRunner  # noqa: PLC0415

    # As `FakeChatServer.chat_model`, in this process.
    params: dict[str, Any] = {
        "model": "fake-model",
        "base_url": floor["upstream"],
        "api_key": "bench",
        "max_retries": 0,
        "stream_usage": True,
    }
    llm = ChatOpenAI(**params)
    store = _floor_store(floor)
    runner = ThreadRunner(store=store, llm=llm)
    over_http: list[float] = []
    in_process: list[float] = []
    errors = 0
    try:
        async with _session(base, 1) as http:
            for target in targets:
                errors += not await _request(http, kind, target)
            turn = 0
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                target = targets[turn % len(targets)]
                config: Any = {"configurable": {"thread_id": target.split(" ")[0]}}
                for side in ("http", "runner") if turn % 2 else ("runner", "http"):
                    started = time.perf_counter()
                    if side == "http":
                        errors += not await _request(http, kind, target)
                    elif kind == "streamed":
                        for _ in runner.stream("hi", config):
                            pass
                    else:
                        runner.invoke("hi", config)
                    took = (time.perf_counter() - started) * 1000
                    (over_http if side == "http" else in_process).append(took)
                turn += 1
    finally:
        store.close()
    over_http, in_process = over_http[_WARM_TURNS:], in_process[_WARM_TURNS:]
    return {
        "errors": errors,
        "rps": len(over_http) * 1000 / max(sum(over_http), 1e-9),
        **_latency(over_http),
        "floor p50": statistics.median(in_process),
        "served": len(targets) + turn,
    }


_WARM_TURNS = 5
"""Turns of a paired cell left out of its figures."""


def _floor_store(floor: dict[str, str]) -> Any:
    """The server's store, opened in the load generator for `ThreadRunner`."""
    if "postgres" in floor:
        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore.from_connection_string(
            floor["postgres"], schema=floor["schema"]
        )
    from langchain_retro import SQLiteStore  # noqa: PLC0415

    return SQLiteStore(floor["db"])


def load_main(argv: list[str]) -> None:
    """``--load``: drive a server and print the figures as JSON.

    With a sixth argument (the store and upstream model, as JSON), one run at a
    time paired with the same run through `ThreadRunner` (`_paired`).
    """
    base, kind, seconds, concurrency, targets, *floor = argv
    if floor:
        work = _paired(
            base, kind, json.loads(targets), float(seconds), json.loads(floor[0])
        )
    else:
        work = _drive(base, kind, json.loads(targets), float(seconds), int(concurrency))
    print(json.dumps(asyncio.run(work)))


# --- the orchestra -----------------------------------------------------------------


class Server:
    """A server subprocess: ``langchain-retro serve``, or a ``factory`` of this module.

    A factory (`bare_app`, `raw_message_app`) runs on the same uvicorn, with its
    own SQLite file for the one that writes.
    """

    def __init__(
        self,
        upstream: FakeChatServer,
        *,
        workers: int,
        postgres: str | None = None,
        factory: str | None = None,
    ) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.floor: dict[str, str] = {"upstream": upstream.base_url}
        """Its store, for `ThreadRunner` in the load generator (`_paired`)."""
        env = {
            **os.environ,
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": "bench",
            "LANGCHAIN_RETRO_API_KEYS": KEY,
        }
        if factory is not None:
            folder = tempfile.mkdtemp(prefix="retro-bench-")
            env["RETRO_BENCH_RAW_DB"] = str(Path(folder) / "raw.db")
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                f"bench.server:{factory}",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
        else:
            command = [sys.executable, "-m", "langchain_retro", "serve"]
            command += ["--port", str(self.port), "--workers", str(workers)]
            command += ["--log-level", "warning"]
            if postgres:
                self.schema = f"bench_{uuid.uuid4().hex[:10]}"
                command += [
                    "--postgres-url",
                    postgres,
                    "--postgres-schema",
                    self.schema,
                ]
                self.floor.update(postgres=postgres, schema=self.schema)
            else:
                folder = tempfile.mkdtemp(prefix="retro-bench-")
                db = str(Path(folder) / "bench.db")
                command += ["--db", db]
                self.floor["db"] = db
        self.process = subprocess.Popen(  # noqa: S603 - our own commands
            command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL
        )
        _wait_ready(f"{self.base}/healthz", self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def _machine_busy() -> tuple[float, float]:
    """Seconds the machine's cores spent busy and in all, so far (Linux)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split()[1:8]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + fields[4]  # idle, iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def _tree_cpu(root: int) -> float:
    """CPU seconds used so far by a process and its live descendants (Linux)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[1])
        times[int(entry.name)] = (int(stat[11]) + int(stat[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def _load(
    base: str,
    kind: str,
    targets: list[str],
    args: argparse.Namespace,
    concurrency: int | None = None,
    *,
    server_pid: int | None = None,
    floor: dict[str, str] | None = None,
) -> Any:
    """Drive a server from a load generator process; figures, with CPU use.

    Besides requests per second and latencies: ``busy``, the share of the
    machine's cores busy during the cell (1.0: every core, whoever used it), and
    ``cpu_ms``, the server's CPU milliseconds per request (all its workers).
    With ``floor`` (a server's store), one run at a time, taking turns with
    `ThreadRunner` (`_paired`): ``floor p50`` is its p50.
    """
    server_before = _tree_cpu(server_pid) if server_pid else 0.0
    busy_before, all_before = _machine_busy()
    done = subprocess.run(  # noqa: S603 - this script, as the load generator
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--load",
            base,
            kind,
            str(args.seconds),
            str(concurrency or args.concurrency),
            json.dumps(targets),
            *([json.dumps(floor)] if floor else []),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    figures: dict[str, Any] = json.loads(done.stdout)
    busy_after, all_after = _machine_busy()
    figures["busy"] = (busy_after - busy_before) / max(all_after - all_before, 1e-9)
    if server_pid:
        used = _tree_cpu(server_pid) - server_before
        served = figures.get("served", figures["requests"])  # with warm-up runs
        figures["cpu_ms"] = used * 1000 / max(served, 1)
    return figures


def _setup(base: str, threads: int) -> tuple[list[str], list[str]]:
    """Threads for messages and for runs, with one assistant; their targets."""
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx2.Client(base_url=base, headers=headers, timeout=60) as http:
        assistant = http.post("/v1/assistants", json={"model": "fake-model"}).json()
        message_threads = [
            http.post("/v1/threads", json={}).json()["id"] for _ in range(threads)
        ]
        run_threads = [
            http.post(
                "/v1/threads", json={"messages": [{"role": "user", "content": "hi"}]}
            ).json()["id"]
            for _ in range(threads)
        ]
    return message_threads, [f"{t} {assistant['id']}" for t in run_threads]


def _row(name: str, figures: dict[str, Any]) -> str:
    return (
        f"{name:<34} {figures['rps']:>9.0f} {figures['p50']:>9.2f} "
        f"{figures['p99']:>9.2f} {figures['errors']:>6} "
        f"{figures['busy'] * 100:>6.0f}% {figures.get('cpu_ms', 0.0):>8.2f}"
    )


def _spread(values: list[float], unit: str = "") -> str:
    """The median of the rounds, with their lowest and highest."""
    ordered = sorted(values)
    return (
        f"{statistics.median(ordered):.2f}{unit} "
        f"({ordered[0]:.2f}-{ordered[-1]:.2f}, {len(ordered)} rounds)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    print(
        f"cores: {os.cpu_count()}; {args.seconds:g} s per cell, {args.concurrency} "
        f"requests in flight, {args.rounds} rounds; latencies in ms; busy: the "
        "machine's cores busy during the cell; server CPU: ms per request"
    )
    rounds = [_round(args, number) for number in range(1, args.rounds + 1)]
    print()
    ratios = [r["sqlite 1 messages"]["rps"] / r["bare 1"]["rps"] for r in rounds]
    print(f"messages / bare FastAPI (1 worker): {_spread(ratios)} (target >= 0.5)")
    cpu = [r["bare 1"]["cpu_ms"] / r["sqlite 1 messages"]["cpu_ms"] for r in rounds]
    print(f"  the same by server CPU per request: {_spread(cpu)}")
    raw = [r["raw 1"]["rps"] / r["bare 1"]["rps"] for r in rounds]
    raw_cpu = [r["bare 1"]["cpu_ms"] / r["raw 1"]["cpu_ms"] for r in rounds]
    print(
        "  raw ASGI message / bare FastAPI (its store call alone, through the "
        f"records): {_spread(raw)}; by CPU {_spread(raw_cpu)}"
    )
    for backend in ("sqlite", "postgres") if args.postgres else ("sqlite",):
        for kind in ("polled", "streamed"):
            cells = [r[f"{backend} alone {kind}"] for r in rounds]
            over = [cell["p50"] - cell["floor p50"] for cell in cells]
            print(
                f"{backend}, {kind} run p50 over ThreadRunner: "
                f"{_spread(over, ' ms')} (target <= 3)"
            )
    if args.postgres:
        scale = [
            r["postgres 4 messages"]["rps"] / r["postgres 1 messages"]["rps"]
            for r in rounds
        ]
        busy = [r["postgres 4 messages"]["busy"] * 100 for r in rounds]
        bare = [r["bare 4"]["rps"] / r["bare 1"]["rps"] for r in rounds]
        print(
            f"PostgreSQL messages, 4 workers / 1: {_spread(scale)} (target >= 1.5, "
            f"or {os.cpu_count()} cores the ceiling); cores busy at 4 workers: "
            f"{_spread(busy, '%')}; bare FastAPI 4 workers / 1: {_spread(bare)}"
        )


def _round(args: argparse.Namespace, number: int) -> dict[str, dict[str, Any]]:
    """One round of every cell, printed as it goes; the figures by cell."""
    print(
        f"round {number}\n{'subject':<34} {'req/s':>9} {'p50':>9} {'p99':>9} "
        f"{'errors':>6} {'busy':>7} {'srv CPU':>8}"
    )
    results: dict[str, dict[str, Any]] = {}
    with FakeChatServer() as upstream:
        for workers in (1, 4):
            bare = Server(upstream, workers=workers, factory="bare_app")
            try:
                results[f"bare {workers}"] = _load(
                    bare.base, "bare", ["x"], args, server_pid=bare.process.pid
                )
            finally:
                bare.stop()
            print(
                _row(f"bare FastAPI, {workers} worker(s)", results[f"bare {workers}"])
            )
        raw = Server(upstream, workers=1, factory="raw_message_app")
        try:
            targets = [str(index) for index in range(RAW_THREADS)]
            results["raw 1"] = _load(
                raw.base, "raw", targets, args, server_pid=raw.process.pid
            )
        finally:
            raw.stop()
        print(_row("raw ASGI message, 1 worker(s)", results["raw 1"]))
        backends = [("sqlite", None)] + (
            [("postgres", args.postgres)] * bool(args.postgres)
        )
        for backend, url in backends:
            for workers in (1, 4):
                server = Server(upstream, workers=workers, postgres=url)
                pid = server.process.pid
                try:
                    messages, runs = _setup(server.base, args.threads)
                    for kind in ("messages", "polled", "streamed"):
                        targets = messages if kind == "messages" else runs
                        figures = _load(
                            server.base, kind, targets, args, server_pid=pid
                        )
                        key = f"{backend} {workers} {kind}"
                        results[key] = figures
                        print(_row(f"{backend}, {workers} worker(s), {kind}", figures))
                    if workers == 1:
                        # One run at a time: the latency a run adds, not queueing;
                        # taking turns with the same runs through ThreadRunner.
                        for kind in ("polled", "streamed"):
                            figures = _load(
                                server.base,
                                kind,
                                runs,
                                args,
                                1,
                                server_pid=pid,
                                floor=server.floor,
                            )
                            results[f"{backend} alone {kind}"] = figures
                            print(_row(f"{backend}, one at a time, {kind}", figures))
                            name = f"ThreadRunner in process, {kind}"
                            print(f"{name:<34} {'':>9} {figures['floor p50']:>9.2f}")
                finally:
                    server.stop()
                    if url:
                        _drop(url, server.schema)
    return results


def _drop(url: str, schema: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
