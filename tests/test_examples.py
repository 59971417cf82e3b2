"""Every script in ``examples/`` runs as is, offline, and says what it did.

Each runs in a subprocess with ``OPENAI_API_KEY`` removed, so it must fall back to the
offline echo model and say so; warnings are errors there too.
"""

from __future__ import annotations

import concurrent.futures
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("[!_]*.py"))  # _setup.py is shared code
OFFLINE = "offline echo model (OPENAI_API_KEY is not set)"

EXPECTED: dict[str, list[str]] = {
    "hello_world.py": [
        OFFLINE,
        "assistant> echo: Hello! Who are you?",
        "assistant> echo: What did I just ask you?",
        ": 4 messages, hwm msg_",
    ],
    "temperature.py": [
        OFFLINE,
        "assistant at temperature 0.0> echo: Invent a name",
        "assistant at temperature 1.2> echo: Invent a name",
        "  model=gpt-4o-mini temperature=0.0",
        "  model=gpt-4o-mini temperature=1.2",
        "the shared ChatOpenAI still has temperature=None",
    ],
    "lcel_pipeline.py": [
        OFFLINE,
        "  echo: Summarise this support ticket in at most eight words: My invoice",
        "  echo: Summarise this support ticket in at most eight words: The mobile",
        "  echo: Summarise this support ticket in at most eight words: Can I move",
        ": 2 messages",
    ],
    "openai_sdk_app.py": [
        "upstream: offline echo model (OPENAI_API_KEY is not set)",
        "server: langchain-retro serve on http://127.0.0.1:",
        ": completed",
        "assistant> echo: I need to solve the equation `3x + 11 = 14`.",
        "assistant (streamed)> echo: And what is x squared?",
        "run steps: ['message_creation']",
    ],
    "message_history.py": [
        OFFLINE,
        "tutor (history)> echo: Is 91 one?",
        "tutor (runner)> echo: And 97?",
        "holds 6 messages:",
        "     ai: echo: What is a prime number?",
    ],
}


def run(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own scripts, run with this interpreter
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )


def offline_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", "LANGCHAIN_RETRO_DB"}
    }
    env["TMPDIR"] = str(tmp_path)  # the scripts' temporary databases land here
    return env


Runs = list[subprocess.CompletedProcess[str]]


def _kept_database(name: str, tmp_path: Path) -> tuple[Path, Runs]:
    """The example run twice with ``LANGCHAIN_RETRO_DB`` naming one file."""
    database = tmp_path / "kept.db"
    env = {**offline_env(tmp_path), "LANGCHAIN_RETRO_DB": str(database)}
    runs = [run(EXAMPLES / name, env)]
    if runs[0].returncode == 0:  # a second run adds to the same file
        runs.append(run(EXAMPLES / name, env))
    return database, runs


def _printed_command(tmp_path: Path) -> tuple[Path, Runs]:
    """listable_threads.py, then the command it printed (when it printed one)."""
    # No activated virtualenv: PATH has no langchain-retro beside this interpreter.
    env = {**offline_env(tmp_path), "PATH": "/usr/bin:/bin"}
    env["PYTHONPATH"] = str(EXAMPLES.parent)  # this checkout's package
    database = tmp_path / "kept threads.db"  # a space: the command must quote it
    env["LANGCHAIN_RETRO_DB"] = str(database)
    runs = [run(EXAMPLES / "listable_threads.py", env)]
    lines = [x for x in runs[0].stdout.splitlines() if x.startswith("look inside: ")]
    if runs[0].returncode == 0 and len(lines) == 1:
        command = shlex.split(lines[0].removeprefix("look inside: "))
        listed = subprocess.run(  # noqa: S603 - the command our example printed
            command, capture_output=True, text=True, env=env, timeout=60, check=False
        )
        runs.append(listed)
    return database, runs


@pytest.fixture(scope="module")
def ran(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, concurrent.futures.Future[Any]]]:
    """Every subprocess of this module, started at once, each in a folder of its own.

    Each is mostly a Python starting up and importing; the two cores share them.
    The tests assert on the results, by key.
    """

    def folder() -> Path:
        return tmp_path_factory.mktemp("example")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        jobs = {
            **{
                f"offline {script.name}": pool.submit(
                    run, script, offline_env(folder())
                )
                for script in SCRIPTS
            },
            **{
                f"kept {name}": pool.submit(_kept_database, name, folder())
                for name in KEPT
            },
            "printed command": pool.submit(_printed_command, folder()),
        }
        yield jobs


def test_every_example_is_checked() -> None:
    assert set(EXPECTED) <= {script.name for script in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example_runs_offline(
    script: Path, ran: dict[str, concurrent.futures.Future[Any]]
) -> None:
    done = ran[f"offline {script.name}"].result()
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip()
    for line in EXPECTED.get(script.name, []):
        assert line in done.stdout, f"{line!r} not in the output:\n{done.stdout}"


KEPT = ["hello_world.py", "lcel_pipeline.py"]


@pytest.mark.parametrize("name", KEPT, ids=lambda name: name)
def test_example_uses_langchain_retro_db(
    name: str, ran: dict[str, concurrent.futures.Future[Any]]
) -> None:
    database, runs = ran[f"kept {name}"].result()
    for done in runs:
        assert done.returncode == 0, done.stderr
        assert f"database: {database}" in done.stdout
    assert len(runs) == 2
    assert database.stat().st_size > 0


def test_the_command_an_example_prints_works_as_printed(
    ran: dict[str, concurrent.futures.Future[Any]],
) -> None:
    database, runs = ran["printed command"].result()
    done = runs[0]
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("look inside: ")]
    command = shlex.split(line.removeprefix("look inside: "))
    assert command[-4:] == ["--db", str(database), "threads", "list"]
    (_, listed) = runs
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("ID ")  # the threads the example left
    assert "thread_" in listed.stdout
