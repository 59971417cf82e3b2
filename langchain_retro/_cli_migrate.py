"""``migrate``, ``export`` and ``import``: moving data between stores from a shell.

Usage::

    langchain-retro migrate SOURCE DEST [--dry-run] [--verify] [--thread ID]...
        [--id-map FILE] [--batch-size N]
    langchain-retro export [--store URL] [--thread ID]... FILE
    langchain-retro import [--store URL] FILE

SOURCE, DEST and ``--store`` are store URLs (`langchain_retro.migration.open_store`):
a SQLite path or ``sqlite:///path``, ``postgresql://...``, ``http(s)://host/v1``
(key in ``LANGCHAIN_RETRO_API_KEY``). ``export`` and ``import`` default to the
``--db`` database. On a terminal a progress bar (tqdm) shows the messages copied;
otherwise a plain line at the first write, then every few seconds. A summary ends
every command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from langchain_retro._cli_common import EXIT_ERROR, PROG, database, print_json
from langchain_retro._steps import drive_calls
from langchain_retro._transfer import Progress, count
from langchain_retro.migration import (
    TransferReport,
    VerifyReport,
    export_to_file,
    import_from_file,
    migrate,
    open_store,
    verify_migration,
)
from langchain_retro.stores.base import BaseStore

__all__ = ["COMMANDS", "add_commands"]

COMMANDS = frozenset({"migrate", "export", "import"})
"""The commands this module runs; they open their own stores."""

_KINDS = ("assistants", "threads", "runs", "messages")
_EVERY = 2.0
"""Seconds between two plain progress lines (not on a terminal)."""


def add_commands(
    commands: Any, command: Callable[..., argparse.ArgumentParser]
) -> None:
    """Add ``migrate``, ``export`` and ``import`` to the command line."""
    move = command(
        commands,
        "migrate",
        run_migrate,
        "copy every assistant, thread, run and message from one store to another, "
        "keeping ids; safe to run again after an interruption",
    )
    move.add_argument(
        "source",
        metavar="SOURCE",
        help="store URL: a SQLite path, sqlite:///path, "
        "postgresql://..., or http(s)://host/v1 (key in $LANGCHAIN_RETRO_API_KEY)",
    )
    move.add_argument("dest", metavar="DEST", help="store URL, as SOURCE")
    move.add_argument(
        "--dry-run",
        action="store_true",
        help="write nothing: say what DEST lacks and what it already holds",
    )
    move.add_argument(
        "--verify",
        action="store_true",
        help="then compare counts and every thread's messages (sha256) on both "
        "sides; exit 1 if they differ (with --dry-run: only compare)",
    )
    _thread_option(move)
    move.add_argument(
        "--id-map",
        metavar="FILE",
        help="for a DEST that assigns its own ids: copy with new ids, rewrite every "
        "reference, append the old -> new map to FILE (JSON Lines)",
    )
    move.add_argument(
        "--batch-size",
        type=_positive,
        default=5_000,
        metavar="N",
        help="records per write (default 5000)",
    )
    out = command(
        commands,
        "export",
        run_export,
        "write a store (or some threads) to a JSON Lines file (.gz: compressed)",
    )
    _store_option(out)
    _thread_option(out)
    out.add_argument("file", metavar="FILE", help="the file to write")
    into = command(
        commands,
        "import",
        run_import,
        "validate an export file, then write it into a store, ids kept; safe to "
        "run again after an interruption",
    )
    _store_option(into)
    into.add_argument("file", metavar="FILE", help="a file written by export")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a positive number, not {text!r}")
    return value


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        help="store URL (default: the --db database)",
    )


def _thread_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--thread",
        action="append",
        metavar="ID",
        dest="threads",
        help="only this thread and the assistant it names (repeat for several)",
    )


# --- progress -------------------------------------------------------------------------


class _Progress:
    """A tqdm bar on a terminal, else plain lines: at the first write, then `_EVERY`."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what = what
        self.done = 0
        self._last: float | None = None
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm  # noqa: PLC0415

            columns, lines = _terminal_size()
            self._bar = tqdm(
                total=total,
                unit=" msg",
                unit_scale=True,
                desc=what,
                file=sys.stderr,
                ncols=columns,
                nrows=lines,
            )

    def __call__(self, kind: str, n: int) -> None:
        if kind != "messages":
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self._last is None or now - self._last >= _EVERY:
            self._last = now
            print(f"{self.what}: {self.done:,} messages", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _terminal_size() -> tuple[int, int]:
    """The terminal's columns and lines; 80 by 24 where it reports none.

    A fresh pseudo-terminal (``script``, ``docker exec -t``, CI) reports 0 by 0.
    tqdm then takes the screen to have -1 lines, and draws no bar at all.
    """
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        return 80, 24
    return size.columns or 80, size.lines or 24


def _total(store: BaseStore, threads: list[str] | None) -> int | None:
    """The messages to expect, for the bar (only on a terminal: it reads threads)."""
    if not sys.stderr.isatty():
        return None
    return drive_calls(count(store, threads)).messages


def _with_progress(
    what: str, total: int | None, work: Callable[[Progress], TransferReport]
) -> TransferReport:
    progress = _Progress(what, total)
    try:
        return work(progress)
    finally:
        progress.close()


# --- output ---------------------------------------------------------------------------


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts.get(kind, 0):,} {kind}" for kind in _KINDS)


def _summary(verb: str, report: TransferReport) -> None:
    rate = report.written.get("messages", 0) / max(report.seconds, 1e-9)
    if report.dry_run:
        print(f"would copy: {_counts(report.written)}")
        print(f"already there: {_counts(report.skipped)}")
        return
    print(
        f"{verb}: {_counts(report.written)} in {report.seconds:.1f} s "
        f"({rate:,.0f} messages/s)"
    )
    if any(report.skipped.values()):
        print(f"already there (left as they were): {_counts(report.skipped)}")


def _verified(report: VerifyReport) -> int:
    if report.ok:
        print(
            f"verified: both hold {_counts(report.source)}; every thread's "
            "messages match (sha256)"
        )
        return 0
    print(
        f"{PROG}: error: the copy differs from its source ({report.different} "
        f"record(s)); source {_counts(report.source)}, destination "
        f"{_counts(report.destination)}",
        file=sys.stderr,
    )
    for line in report.differences:
        print(f"  {line}", file=sys.stderr)
    print("Run migrate again to copy what is missing.", file=sys.stderr)
    return EXIT_ERROR


# --- the commands ---------------------------------------------------------------------


def run_migrate(args: argparse.Namespace) -> int:
    """``migrate SOURCE DEST``; a dry run creates nothing in the destination."""
    with (
        open_store(args.source, create=False) as source,
        open_store(args.dest, create=not args.dry_run) as dest,
    ):
        total = None if args.dry_run else _total(source, args.threads)
        report = _with_progress(
            "migrate",
            total,
            lambda progress: migrate(
                source,
                dest,
                thread_ids=args.threads,
                dry_run=args.dry_run,
                batch_size=args.batch_size,
                progress=progress,
                id_map=args.id_map,
            ),
        )
        checked = (
            verify_migration(source, dest, thread_ids=args.threads)
            if args.verify
            else None
        )
    if args.json:
        print_json(
            {
                **report.model_dump(),
                "verify": None if checked is None else checked.model_dump(),
            }
        )
        return 0 if checked is None or checked.ok else EXIT_ERROR
    _summary("copied", report)
    return 0 if checked is None else _verified(checked)


def _store(args: argparse.Namespace, *, create: bool) -> BaseStore:
    return open_store(args.store if args.store else database(args.db), create=create)


def run_export(args: argparse.Namespace) -> int:
    """``export FILE``."""
    with _store(args, create=False) as source:
        total = _total(source, args.threads)
        report = _with_progress(
            "export",
            total,
            lambda progress: export_to_file(
                source, args.file, thread_ids=args.threads, progress=progress
            ),
        )
    if args.json:
        print_json(report.model_dump())
    else:
        _summary("exported", report)
    return 0


def run_import(args: argparse.Namespace) -> int:
    """``import FILE``."""
    with _store(args, create=True) as dest:
        report = _with_progress(
            "import",
            None,
            lambda progress: import_from_file(args.file, dest, progress=progress),
        )
    if args.json:
        print_json(report.model_dump())
    else:
        _summary("imported", report)
    return 0
