"""The ``migrate``, ``export`` and ``import`` commands, and kill -9 at random points.

The commands run as subprocesses (``python -m langchain_retro``), as a user runs
them; the kill test sends SIGKILL at seeded random moments and checks that running
the command again ends with the destination equal to the source.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _migrate_data import fill, snapshot
from conftest import postgres_url

from langchain_retro import SQLiteStore
from langchain_retro.cli import main
from langchain_retro.stores.base import NewMessage, ThreadQuery

ROOT = Path(__file__).resolve().parents[1]
FIXED = [
    {"free": {"user": "ada"}, "typed": {}, "messages": [], "runs": 2},
    {"free": {}, "typed": {}, "messages": [], "runs": 0},
]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("LANGCHAIN_RETRO_DB", "LANGCHAIN_RETRO_API_KEY", "OPENAI_API_KEY"):
        env.pop(name, None)
    return env


@dataclass
class Done:
    """What a command did: its exit status and output."""

    returncode: int
    stdout: str
    stderr: str


Cli = Callable[..., Done]


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Cli:
    """Run the command line in this process (the kill test runs it as a process)."""
    monkeypatch.chdir(tmp_path)
    for name in ("LANGCHAIN_RETRO_DB", "LANGCHAIN_RETRO_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str) -> Done:
        code = main(list(args))
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return run


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.db"
    with SQLiteStore(path) as store:
        fill(store, FIXED)
    return path


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL on a fresh schema, dropped after."""
    import psycopg  # noqa: PLC0415

    base = postgres_url()
    schema = f"test_cli_{uuid.uuid4().hex[:12]}"
    yield f"{base}?schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _in_a_process(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line run as its own process, its output captured (not a tty)."""
    return subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "langchain_retro", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _pg_snapshot(url: str) -> dict[str, object]:
    from langchain_retro import open_store  # noqa: PLC0415

    with open_store(url) as store:
        return snapshot(store)


def _sqlite_snapshot(path: Path) -> dict[str, object]:
    with SQLiteStore(path) as store:
        return snapshot(store)


# --- kill -9 --------------------------------------------------------------------------


def test_kill_9_at_random_points_then_again_ends_equal(
    tmp_path: Path, pg_url: str
) -> None:
    path = tmp_path / "big.db"
    with SQLiteStore(path) as store:
        fill(store, FIXED)
        threads = store.create_threads([{"n": str(i)} for i in range(40)])
        store.bulk_add_messages(
            [
                (
                    t.id,
                    [
                        NewMessage(
                            role="user", payload=f'{{"type":"human","content":"{j}"}}'
                        )
                        for j in range(100)
                    ],
                )
                for t in threads
            ]
        )
        expected = snapshot(store)
        total = sum(store.count_messages(t.id) for t in store.list_threads(ALL))
    rng = random.Random(2024)
    argv = [sys.executable, "-m", "langchain_retro", "migrate", str(path), pg_url]
    kills = partial = 0
    copied = 0
    while kills < 12 and copied < total:
        process = subprocess.Popen(  # noqa: S603 - our own command
            [*argv, "--batch-size", str(rng.randrange(5, 20))],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait for this attempt's first write, then kill at a random moment after.
        while process.poll() is None and _pg_count(pg_url) <= copied:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        copied = _pg_count(pg_url)
        partial += 0 < copied < total
    assert kills >= 10
    assert partial >= 10, "kills must land in the middle of the copy"
    finished = _in_a_process(tmp_path, *argv[3:], "--verify")
    assert finished.returncode == 0, finished.stderr
    assert "verified" in finished.stdout
    assert _pg_snapshot(pg_url) == expected


def _pg_count(url: str) -> int:
    """Messages in the schema of a store URL (0 before its tables exist)."""
    import psycopg  # noqa: PLC0415

    base, schema = url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as conn:
        found = conn.execute(
            "SELECT to_regclass(%s)", (f'"{schema}".retro_messages',)
        ).fetchone()
        if found is None or found[0] is None:
            return 0
        row = conn.execute(f'SELECT count(*) FROM "{schema}".retro_messages').fetchone()
    return 0 if row is None else int(row[0])


ALL = ThreadQuery(order="asc", limit=10_000)


# --- the commands ---------------------------------------------------------------------


def test_migrate_prints_a_summary_and_verifies(
    source: Path, tmp_path: Path, pg_url: str, cli: Cli
) -> None:
    done = cli("migrate", str(source), pg_url, "--verify")
    assert done.returncode == 0, done.stderr
    assert "copied: 2 assistants, 2 threads, 2 runs, 4 messages" in done.stdout
    assert "verified: both hold" in done.stdout
    again = cli("--json", "migrate", str(source), pg_url)
    report = json.loads(again.stdout)
    assert report["written"]["messages"] == 0
    assert report["skipped"]["messages"] == 4
    assert _pg_snapshot(pg_url) == _sqlite_snapshot(source)


def test_a_dry_run_says_what_would_be_copied(
    source: Path, tmp_path: Path, cli: Cli
) -> None:
    dest = tmp_path / "dest.db"
    done = cli("migrate", str(source), f"sqlite:///{dest}", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would copy: 2 assistants, 2 threads, 2 runs, 4 messages" in done.stdout
    assert not dest.exists()  # not even an empty file
    assert cli("migrate", str(source), str(dest)).returncode == 0
    done = cli("migrate", str(source), str(dest), "--dry-run")
    assert "would copy: 0 assistants, 0 threads, 0 runs, 0 messages" in done.stdout
    assert "already there: 2 assistants, 2 threads, 2 runs, 4 messages" in done.stdout


def test_verify_fails_when_the_copy_differs(
    source: Path, tmp_path: Path, cli: Cli
) -> None:
    dest = tmp_path / "dest.db"
    assert cli("migrate", str(source), str(dest)).returncode == 0
    with SQLiteStore(dest) as store:
        thread = store.list_threads(ALL)[0]
        store.delete_message(thread.id, store.list_messages(thread.id)[0].id)
    done = cli("migrate", str(source), str(dest), "--dry-run", "--verify")
    assert done.returncode == 1
    assert f"thread {thread.id}: messages differ" in done.stderr


def test_export_and_import_gzip_through_the_db_option(
    source: Path, tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "backup.jsonl.gz"
    done = cli("--db", str(source), "export", str(out))
    assert done.returncode == 0, done.stderr
    assert "exported: 2 assistants, 2 threads, 2 runs, 4 messages" in done.stdout
    with gzip.open(out, "rt", encoding="utf-8") as file:
        assert json.loads(file.readline())["version"] == 1
    dest = tmp_path / "restored.db"
    done = cli("import", "--store", str(dest), str(out))
    assert done.returncode == 0, done.stderr
    assert "imported: 2 assistants" in done.stdout
    assert _sqlite_snapshot(dest) == _sqlite_snapshot(source)


def _exported(source: Path, tmp_path: Path, cli: Cli) -> list[str]:
    out = tmp_path / "all.jsonl"
    assert cli("--db", str(source), "export", str(out)).returncode == 0
    return out.read_text("utf-8").splitlines()


def _on_a_message(lines: list[str], change: Any) -> list[str]:
    """The lines with the last message line changed by ``change(dict)``."""
    index = max(i for i, line in enumerate(lines) if '"type":"message"' in line)
    record = json.loads(lines[index])
    change(record)
    return [*lines[:index], json.dumps(record), *lines[index + 1 :]]


def _evil_payload(record: dict[str, Any]) -> None:
    payload = json.loads(record["payload"])
    payload["type"] = "evil"
    record["payload"] = json.dumps(payload)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda lines: [
                json.dumps({**json.loads(lines[0]), "version": 2}),
                *lines[1:],
            ],
            "line 1: the file is export schema version 2, newer than the 1",
        ),
        (lambda lines: lines[:-3], "without its end line: it was cut short"),
        (
            lambda lines: [*lines[:3], '{"type": "thread", "id": 5}', *lines[3:]],
            "line 4: not a valid record",
        ),
        (
            lambda lines: _on_a_message(lines, lambda r: r.update(x=1)),
            "not a valid record (message.x: Extra inputs are not permitted)",
        ),
        (lambda lines: _on_a_message(lines, _evil_payload), "is not one of"),
        (
            lambda lines: _on_a_message(lines, lambda r: r.update(thread_id="t_x")),
            "does not follow its thread's line",
        ),
        (lambda lines: ["not json", *lines[1:]], "line 1: the first line is not"),
    ],
)
def test_import_refuses_a_bad_file_before_writing_anything(
    source: Path, tmp_path: Path, change: object, message: str, cli: Cli
) -> None:
    lines = _exported(source, tmp_path, cli)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(change(lines)) + "\n", "utf-8")  # type: ignore[operator]
    dest = tmp_path / "dest.db"
    done = cli("import", "--store", str(dest), str(bad))
    assert done.returncode == 1
    assert message in done.stderr
    assert "Nothing was imported" in done.stderr
    assert _sqlite_snapshot(dest) == {"assistants": [], "threads": []}


def test_bad_urls_and_a_missing_key_are_named(
    source: Path, tmp_path: Path, cli: Cli
) -> None:
    done = cli("migrate", str(source), "ftp://host/x")
    assert done.returncode == 1
    assert "Unknown store URL scheme 'ftp'" in done.stderr
    done = cli("migrate", str(source), "http://127.0.0.1:9/v1")
    assert done.returncode == 1
    assert "set LANGCHAIN_RETRO_API_KEY" in done.stderr


def _on_a_terminal(
    args: list[str], cwd: Path, size: tuple[int, int] | None
) -> tuple[int, bytes, bytes]:
    """Run the command with stderr on a pseudo-terminal of ``(lines, columns)``.

    ``None`` leaves the terminal as a fresh one reports itself: 0 by 0, as under
    ``script`` or ``docker exec -t``. Returns the exit status, stdout, and all that
    the terminal received.
    """
    import fcntl  # noqa: PLC0415 - POSIX only, like the kill test
    import pty  # noqa: PLC0415
    import struct  # noqa: PLC0415
    import termios  # noqa: PLC0415

    leader, follower = pty.openpty()
    if size is not None:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    seen = bytearray()

    def drain() -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(leader, 65536):
                seen.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "langchain_retro", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=follower,
    ) as process:
        out, _ = process.communicate(timeout=60)
    os.close(follower)
    reader.join(timeout=10)
    os.close(leader)
    return process.returncode, out, bytes(seen)


def _frames(seen: bytes) -> list[str]:
    """The frames a bar drew: each starts with a carriage return."""
    text = seen.decode("utf-8", "replace")
    return [frame.strip("\r\n") for frame in text.split("\r") if frame.strip()]


@pytest.mark.parametrize(
    "size", [None, (30, 100)], ids=["fresh-terminal", "100-columns"]
)
def test_on_a_terminal_a_bar_is_drawn_and_the_summary_ends_the_run(
    source: Path, tmp_path: Path, size: tuple[int, int] | None
) -> None:
    dest = tmp_path / "dest.db"
    args = ["migrate", str(source), str(dest)]
    code, out, seen = _on_a_terminal(args, tmp_path, size)
    assert code == 0
    assert b"Traceback" not in seen
    # The bar (tqdm) is drawn on stderr, frame after frame, and never reaches stdout.
    frames = _frames(seen)
    assert frames[0].startswith("migrate:   0%|")
    assert any(f.startswith("migrate: 100%|") and "4.00/4.00" in f for f in frames)
    assert all("msg/s" in frame for frame in frames)
    assert max(len(frame) for frame in frames) <= (size[1] if size else 80)
    assert out.startswith(b"copied: 2 assistants, 2 threads, 2 runs, 4 messages")
    export = tmp_path / "all.jsonl.gz"
    assert main(["--db", str(source), "export", str(export)]) == 0
    again = tmp_path / "again.db"
    code, out, seen = _on_a_terminal(
        ["import", "--store", str(again), str(export)], tmp_path, size
    )
    assert code == 0
    frames = _frames(seen)
    assert frames[-1].startswith("import: 4.00 msg [")
    assert all("msg/s" in frame for frame in frames)
    assert out.startswith(b"imported: 2 assistants, 2 threads, 2 runs, 4 messages")


def test_through_a_pipe_plain_lines_tell_the_progress(
    source: Path, tmp_path: Path
) -> None:
    args = ["migrate", str(source), str(tmp_path / "dest.db")]
    for _ in range(2):
        piped = _in_a_process(tmp_path, *args)
        assert piped.returncode == 0
        # Not a terminal: no bar, no control characters; a line at the first write.
        assert "\r" not in piped.stderr
        assert piped.stderr.splitlines() == ["migrate: 4 messages"]
    assert "already there (left as they were)" in piped.stdout
