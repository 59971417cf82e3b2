"""Cost of a turn over HTTP: ThreadRunner on AssistantsAPIStore, against SQLite.

One turn is ``ThreadRunner.invoke``: append the user's message, read the context,
call the model, store the reply. The model is a `FakeChatServer` on 127.0.0.1, the
same for every subject, so what differs is the store. Subjects:

* ``SQLiteStore``: the embedded store, in process (no HTTP);
* ``retro``: `AssistantsAPIStore` (the default protocol) on a ``langchain-retro
  serve`` over SQLite, one request per store operation through ``/v1/retro``;
* ``assistants``: `AssistantsAPIStore(protocol="assistants")` on the same server,
  through the plain Assistants API (``/v1/threads/.../messages``) only.

Each subject runs with the whole thread as context and with ``window=50``, on
threads of 10, 1,000 and 10,000 prior messages (seeded in one bulk write, not
counted). A cell is the median over ``--repeat`` turns (after a warm-up) of the
wall time of a turn and of the HTTP requests it sent, counted at the client by an
``httpx`` event hook on the SDK's client, with the fewest and most requests a turn
took.

Target checked at the end: a windowed turn over HTTP sends the same number of
requests at every thread length (the newest 50 are read through ``order=desc&
limit=N``, one page); the whole-thread turns are shown for comparison (the plain
Assistants API reads them 100 a page).

Run::

    python bench/wire.py                          # sizes 10,1000,10000
    python bench/wire.py --sizes 10,1000 --repeat 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import openai

warnings.simplefilter("ignore", DeprecationWarning)

from _conversations import conversation  # noqa: E402

from langchain_retro import (  # noqa: E402
    Assistant,
    AssistantsAPIStore,
    ChatCompletionThread,
    SQLiteStore,
    ThreadRunner,
)
from langchain_retro._messages import role_of, to_payload  # noqa: E402
from langchain_retro.stores.base import BaseStore, NewMessage  # noqa: E402
from langchain_retro.testing import FakeChatServer  # noqa: E402

INSTRUCTIONS = "You are a support assistant. Answer in one short paragraph."
WINDOW = 50
KEY = "sk-bench-wire"
SEED_BATCH = 2_000
"""Messages per bulk write while seeding a thread."""


@dataclass
class Counter:
    """HTTP requests sent by the stores' SDK clients (not the model's)."""

    sent: int = 0

    def hook(self, request: Any) -> None:
        self.sent += 1


@dataclass
class Cell:
    """One subject at one size: per-turn times and request counts."""

    times: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """A ``langchain-retro serve`` on a SQLite file; yields its ``/v1`` URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "OPENAI_API_KEY": "unused-upstream-key",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    argv = [
        sys.executable,
        "-m",
        "langchain_retro",
        "serve",
        "--port",
        str(port),
        "--db",
        str(directory / "served.db"),
        "--api-key",
        KEY,
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)  # noqa: S603
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"{root}/healthz").status_code == 200:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("langchain-retro serve did not start")
            time.sleep(0.05)
        yield f"{root}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def over_http(url: str, protocol: str, counter: Counter) -> BaseStore:
    http = openai.DefaultHttpxClient(event_hooks={"request": [counter.hook]})
    client = openai.OpenAI(base_url=url, api_key=KEY, http_client=http)
    return AssistantsAPIStore(client=client, protocol=protocol)  # type: ignore[arg-type]


def seed(store: BaseStore, thread_id: str, size: int, rng: random.Random) -> None:
    """``size`` prior messages in bulk writes (their own ids left out)."""
    rows = [
        NewMessage(role=role_of(m), payload=to_payload(m))
        for m in conversation(rng, size)
    ]
    for start in range(0, len(rows), SEED_BATCH):
        store.bulk_add_messages([(thread_id, rows[start : start + SEED_BATCH])])


def turns(
    store: BaseStore,
    seeder: BaseStore,
    llm: Any,
    size: int,
    window: int | None,
) -> Callable[[str], Any]:
    """A thread of ``size`` prior messages, seeded through ``seeder``; its turn."""
    assistant = Assistant.create(store, model="fake-model", instructions=INSTRUCTIONS)
    thread = ChatCompletionThread.create(store, assistant_id=assistant.id)
    seed(seeder, thread.id, size, random.Random(size))
    runner = ThreadRunner(store=store, llm=llm, window=window)
    config: Any = {"configurable": {"thread_id": thread.id}}
    return lambda text: runner.invoke(text, config)


class Cells(dict[tuple[str, str, int], Cell]):
    """Cells made on first use."""

    def __missing__(self, key: tuple[str, str, int]) -> Cell:
        self[key] = Cell()
        return self[key]


def measure(sizes: list[int], repeat: int) -> dict[tuple[str, str, int], Cell]:
    cells = Cells()
    with (
        FakeChatServer() as model,
        tempfile.TemporaryDirectory() as tmp,
        serve(Path(tmp)) as url,
    ):
        llm = model.chat_model()
        counter = Counter()
        local = SQLiteStore(Path(tmp) / "local.db")
        retro = over_http(url, "retro", counter)
        plain = over_http(url, "assistants", counter)
        subjects = [("SQLiteStore", local, local), ("retro", retro, retro)]
        # The plain subject's threads are seeded through /v1/retro: one request a
        # batch rather than one a message; it reads them through the plain API.
        subjects.append(("assistants", plain, retro))
        for size in sizes:
            for name, store, seeder in subjects:
                for window in (None, WINDOW):
                    turn = turns(store, seeder, llm, size, window)
                    turn("warm-up")
                    cell = cells[name, "all" if window is None else str(window), size]
                    for i in range(repeat):
                        counter.sent = 0
                        started = time.perf_counter()
                        turn(f"question {i}")
                        cell.times.append(time.perf_counter() - started)
                        cell.requests.append(counter.sent)
            print(f"  measured {size:,} prior messages", flush=True)
        for store in (plain, retro, local):
            store.close()
    return cells


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    ]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def report(sizes: list[int], cells: dict[tuple[str, str, int], Cell]) -> list[str]:
    rows = [["subject", "context", *[f"{s:,} msgs: requests, ms" for s in sizes]]]
    keys = dict.fromkeys((name, context) for name, context, _ in cells)
    for name, context in keys:
        row = [name, "whole thread" if context == "all" else f"window={context}"]
        for size in sizes:
            cell = cells[name, context, size]
            low, high = min(cell.requests), max(cell.requests)
            spread = f"{low}" if low == high else f"{low}-{high}"
            ms = statistics.median(cell.times) * 1000
            row.append(f"{spread}, {ms:.1f}")
        rows.append(row)
    print(table(rows))
    missed = []
    for name, context in keys:
        if name == "SQLiteStore" or context == "all":
            continue
        counts = {
            size: sorted(set(cells[name, context, size].requests)) for size in sizes
        }
        if len({tuple(c) for c in counts.values()}) != 1:
            missed.append(f"{name} window={context}: requests per turn {counts}")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"per-turn cost, {args.repeat} turns per subject and size:", flush=True)
    cells = measure(sizes, args.repeat)
    missed = report(sizes, cells)
    print(
        "\ntarget (a windowed turn sends the same requests at every length): "
        + ("met" if not missed else "MISSED")
    )
    for line in missed:
        print(f"  - {line}")
    if missed:
        sys.exit(1)


if __name__ == "__main__":
    main()
