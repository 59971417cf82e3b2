"""Every script in ``examples/`` runs as is, offline, and says what it did.

Each runs in a subprocess with ``OPENAI_API_KEY`` removed, so it must fall back to the
offline echo model and say so; warnings are errors there too.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", "LANGCHAIN_RETRO_DB"}
    }
    env["TMPDIR"] = str(tmp_path)  # the scripts' temporary databases land here
    return env


def test_every_example_is_checked() -> None:
    assert set(EXPECTED) <= {script.name for script in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example_runs_offline(script: Path, offline_env: dict[str, str]) -> None:
    done = run(script, offline_env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip()
    for line in EXPECTED.get(script.name, []):
        assert line in done.stdout, f"{line!r} not in the output:\n{done.stdout}"


@pytest.mark.parametrize(
    "name", ["hello_world.py", "lcel_pipeline.py"], ids=lambda name: name
)
def test_example_uses_langchain_retro_db(
    name: str, offline_env: dict[str, str], tmp_path: Path
) -> None:
    database = tmp_path / "kept.db"
    env = {**offline_env, "LANGCHAIN_RETRO_DB": str(database)}
    for _ in range(2):  # a second run adds to the same file
        done = run(EXAMPLES / name, env)
        assert done.returncode == 0, done.stderr
        assert f"database: {database}" in done.stdout
    assert database.stat().st_size > 0


def test_the_command_an_example_prints_works_as_printed(
    offline_env: dict[str, str], tmp_path: Path
) -> None:
    # No activated virtualenv: PATH has no langchain-retro beside this interpreter.
    env = {**offline_env, "PATH": "/usr/bin:/bin"}
    env["PYTHONPATH"] = str(EXAMPLES.parent)  # this checkout's package
    database = tmp_path / "kept threads.db"  # a space: the command must quote it
    env["LANGCHAIN_RETRO_DB"] = str(database)
    done = run(EXAMPLES / "listable_threads.py", env)
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("look inside: ")]
    command = shlex.split(line.removeprefix("look inside: "))
    assert command[-4:] == ["--db", str(database), "threads", "list"]
    listed = subprocess.run(  # noqa: S603 - the command our example printed
        command, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("ID ")  # the threads the example left
    assert "thread_" in listed.stdout
