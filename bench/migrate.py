"""Moving data: migrate SQLite -> PostgreSQL, export and import, speed and memory.

For each size (messages over threads of 100 messages each, a run and a typed
metadata field per thread), builds a SQLite source through the bulk path, then
measures, each in a fresh process so its peak memory is its own:

* ``migrate``: ``migrate(sqlite, postgresql)`` into a new schema;
* ``export``: ``export_to_file(sqlite, FILE.jsonl.gz)``;
* ``import``: ``import_from_file(FILE.jsonl.gz, postgresql)`` into a new schema
  (the file is validated whole first, then written).

It prints messages per second and the peak resident memory of the process
(``ru_maxrss``, the interpreter and its imports included). The targets (issue
"Moving data"): at least 20,000 messages/s into PostgreSQL, and a peak under 200 MB
that does not grow with the store (compare the sizes).

PostgreSQL is measured on a durable server (default fsync settings): start one with
``RETRO_PG_DURABLE=1 scripts/postgres.sh start`` and pass the URL it prints.

Run::

    python bench/migrate.py --postgres postgresql://postgres@127.0.0.1:54339/retro_test
    python bench/migrate.py --postgres URL --sizes 20000,100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

PER_THREAD = 100
"""Messages per thread."""


def build(path: str, messages: int) -> None:
    """A SQLite source of ``messages`` messages, ``PER_THREAD`` to a thread."""
    from langchain_core.messages import AIMessage, HumanMessage  # noqa: PLC0415

    from langchain_retro import SQLiteStore  # noqa: PLC0415
    from langchain_retro._messages import to_payload  # noqa: PLC0415
    from langchain_retro.stores.base import NewMessage  # noqa: PLC0415

    human = to_payload(HumanMessage("What is the capital of France? " * 2))
    ai = to_payload(AIMessage("Paris is the capital of France. " * 3))
    with SQLiteStore(path) as store:
        assistant = store.create_assistant({"model": "gpt-4o-mini"}, {})
        threads_left = messages // PER_THREAD
        while threads_left:
            n = min(threads_left, 200)
            threads_left -= n
            made = store.create_threads(
                [
                    {"assistant_id": assistant.id, "retro_class": "chat", "user": "u"}
                    for _ in range(n)
                ]
            )
            store.bulk_add_messages(
                [
                    (
                        t.id,
                        [
                            NewMessage(
                                role="user" if i % 2 == 0 else "assistant",
                                payload=human if i % 2 == 0 else ai,
                                metadata={"n": str(i)} if i % 10 == 0 else {},
                            )
                            for i in range(PER_THREAD)
                        ],
                    )
                    for t in made
                ]
            )


def measure(operation: str, source: str, target: str) -> dict[str, float]:
    """Run one operation in this process; its seconds and peak memory."""
    from langchain_retro import (  # noqa: PLC0415
        export_to_file,
        import_from_file,
        migrate,
    )

    started = time.perf_counter()
    if operation == "migrate":
        report = migrate(source, target)
    elif operation == "export":
        report = export_to_file(source, target)
    else:
        report = import_from_file(source, target)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "messages": report.written["messages"],
        "peak_mb": peak_kb / 1024,
    }


def _child(*args: str) -> dict[str, float]:
    done = subprocess.run(  # noqa: S603 - this script
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.splitlines()[-1]))


def _drop(url: str, schema: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", required=False, help="a durable server's URL")
    parser.add_argument("--sizes", default="20000,100000", help="messages per store")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.child)))
        return 0
    if not args.postgres:
        parser.error("--postgres URL is needed (a durable server)")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            source = str(Path(folder) / f"source-{size}.db")
            build(source, size)
            file = str(Path(folder) / f"export-{size}.jsonl.gz")
            schemas = [f"bench_migrate_{uuid.uuid4().hex[:8]}" for _ in range(2)]
            try:
                into = f"{args.postgres}?schema={schemas[0]}"
                again = f"{args.postgres}?schema={schemas[1]}"
                for label, operation, src, dst in (
                    ("migrate SQLite -> PostgreSQL", "migrate", source, into),
                    ("export SQLite -> .jsonl.gz", "export", source, file),
                    ("import .jsonl.gz -> PostgreSQL", "import", file, again),
                ):
                    result = _child(operation, src, dst)
                    rows.append((size, label, result))
            finally:
                for schema in schemas:
                    _drop(args.postgres, schema)
    print(f"\n### Moving data: {PER_THREAD} messages a thread, durable PostgreSQL\n")
    print("| messages | operation | seconds | messages/s | peak RSS |")
    print("|---|---|---|---|---|")
    for size, label, result in rows:
        rate = result["messages"] / result["seconds"]
        print(
            f"| {size:,} | {label} | {result['seconds']:.2f} | {rate:,.0f} | "
            f"{result['peak_mb']:.0f} MB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
