"""Every Python block of README.md runs as written.

A block is skipped only if its first line is ``# not run``. Each block runs in its own
empty working directory, so the default store (``./langchain-retro.db``) starts empty.
Blocks using `PostgresStore` read ``DATABASE_URL``, set here to the test server's URL
(``RETRO_TEST_POSTGRES_URL``); like the other PostgreSQL tests they are skipped
locally without it, and fail under CI. A schema such a block names
(``schema="assistants"``) gets a fresh name for the run, dropped after, since the
server may be shared.

The README's first commands are pinned here too, and ``scripts/test.sh`` is run
without PostgreSQL to check it still tests the rest and says so in one line.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import _drop_schema, postgres_url

if TYPE_CHECKING:
    from collections.abc import Iterator

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _blocks() -> list[Any]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        code = match.group(1)
        if code.startswith("# not run"):
            continue
        line = text.count("\n", 0, match.start()) + 2
        marks = [pytest.mark.postgres] if "PostgresStore" in code else []
        blocks.append(pytest.param(code, id=f"README.md:{line}", marks=marks))
    return blocks


def test_readme_has_python_blocks() -> None:
    assert len(_blocks()) >= 8


@pytest.mark.parametrize("code", _blocks())
def test_readme_block_runs(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("LANGCHAIN_RETRO_DB", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    schemas: list[str] = []
    if "PostgresStore" in code:
        url = postgres_url()
        monkeypatch.setenv("DATABASE_URL", url)

        # The server is shared: a schema the block names gets a name of its own
        # for this run, so neither other runs nor older tables get in its way.
        def fresh(match: re.Match[str]) -> str:
            schemas.append(f"readme_{match.group(1)}_{uuid.uuid4().hex[:8]}")
            return f'schema="{schemas[-1]}"'

        code = re.sub(r'schema="(\w+)"', fresh, code)
    # A real module (runpy installs it as __main__ while it runs), so pydantic can
    # resolve the block's own classes in annotations.
    script = tmp_path / "readme_block.py"
    script.write_text(code, encoding="utf-8")
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        for schema in schemas:
            _drop_schema(url, schema)


REPO_URL = "https://github.com/langchain-retro/langchain-retro"
"""The repository, as pyproject.toml's project URLs name it."""
_CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.M | re.S)
_INLINE_LINK = re.compile(r"\]\(([^)\s]+)\)")
_REFERENCE = re.compile(r"\]\[([^\]]+)\]")
_DEFINITION = re.compile(r"^\[([^\]]+)\]:\s*(\S+)", re.M)


def _prose() -> str:
    return _CODE.sub("", README.read_text(encoding="utf-8"))


def _link_targets() -> list[str]:
    prose = _prose()
    return _INLINE_LINK.findall(prose) + [t for _, t in _DEFINITION.findall(prose)]


def test_readme_links_are_absolute() -> None:
    # The README is the package index's project page too, where a relative link
    # points nowhere.
    targets = _link_targets()
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "#"))]
    assert relative == []
    prose = _prose()
    defined = {name for name, _ in _DEFINITION.findall(prose)}
    assert set(_REFERENCE.findall(prose)) <= defined


def test_readme_links_into_the_repository_name_existing_files() -> None:
    with (README.parent / "pyproject.toml").open("rb") as f:
        urls = tomllib.load(f)["project"]["urls"]
    assert urls["Source"] == REPO_URL
    prefix = f"{REPO_URL}/blob/main/"
    for target in _link_targets():
        if target.startswith(REPO_URL):
            assert target.startswith(prefix), target
            assert (README.parent / target.removeprefix(prefix)).is_file(), target


def _linked_examples() -> set[str]:
    prefix = f"{REPO_URL}/blob/main/"
    return {
        t.removeprefix(prefix)
        for t in _link_targets()
        if t.startswith(f"{prefix}examples/")
    }


def test_readme_links_every_example_and_only_existing_ones() -> None:
    # tests/test_examples.py runs them; this keeps the README's list whole and true.
    root = README.parent
    on_disk = {str(p.relative_to(root)) for p in (root / "examples").glob("[!_]*.py")}
    assert _linked_examples() == on_disk


# --- the two commands -----------------------------------------------------------------

ROOT = README.parent
FIRST_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -e . "
    "&& .venv/bin/langchain-retro demo",
    "bash scripts/test.sh",
]
"""The README's first commands, exactly; each must work in a new shell."""
_BASH = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
ACTIVATE = ". .venv/bin/activate"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first_screen = text.split("\n## ", 1)[0]
    first_block = _BASH.search(first_screen)
    assert first_block, "the README's first screen has no bash block"
    assert first_block.group(1).splitlines() == FIRST_COMMANDS
    assert first_screen.index("```bash") < first_screen.index("```python")


def test_the_first_command_names_what_exists() -> None:
    # .venv/bin/langchain-retro is the console script pyproject.toml declares,
    # and demo is one of its commands.
    from langchain_retro.cli import build_parser  # noqa: PLC0415

    with (ROOT / "pyproject.toml").open("rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {"langchain-retro": "langchain_retro.cli:main"}
    assert build_parser().parse_args(["demo"]).command == "demo"
    # The second: a bash script that parses.
    done = subprocess.run(  # noqa: S603 - our own script
        ["bash", "-n", str(ROOT / "scripts" / "test.sh")],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    ci = ROOT / ".ci" / "run"
    if ci.exists():  # not in the sdist
        assert "scripts/test.sh" in ci.read_text(encoding="utf-8")


def test_readme_never_assumes_an_activated_virtualenv_unannounced() -> None:
    # In a new shell `python` and `langchain-retro` are not .venv's: a bare one is
    # fine only after the README has said to activate .venv.
    text = README.read_text(encoding="utf-8")
    bare = re.compile(r"^(?:\S+=\S+ )*(python|pip|langchain-retro) ", re.M)
    first_bare = min(
        (match.start(1) + block.start(1))
        for block in _BASH.finditer(text)
        for match in bare.finditer(block.group(1))
    )
    assert ACTIVATE in text[:first_bare]
    first_screen = text.split("\n## ", 1)[0]
    assert re.findall(r"`(python|langchain-retro) ", first_screen) == []
    assert "`.venv/bin/python examples/" in first_screen


def _fake_venv(tmp_path: Path) -> Path:
    """A virtualenv folder whose python is this one, marked as installed.

    test.sh then neither creates a virtualenv nor installs anything.
    """
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    with (ROOT / "pyproject.toml").open("rb") as f:
        cksum = subprocess.run(
            ["cksum"],  # noqa: S607 - as test.sh computes it
            stdin=f,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    (venv / ".langchain-retro-installed").write_text(cksum, encoding="utf-8")
    return venv


def _test_sh(tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    """scripts/test.sh on two quick test files, with no PostgreSQL to be had."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CI", "RETRO_TEST_POSTGRES_URL", "RETRO_CHECKS", "PYTEST_ADDOPTS"}
    }
    # Names a folder without the server's programs, so postgres.sh cannot start one.
    base["RETRO_PG_BINDIR"] = str(tmp_path / "no-postgres")
    base["RETRO_VENV"] = str(_fake_venv(tmp_path))
    return subprocess.Popen(  # noqa: S603 - our own script
        [  # noqa: S607
            "bash",
            str(ROOT / "scripts" / "test.sh"),
            "-p",
            "no:randomly",
            "tests/test_public_api.py",
            "tests/test_chat_message_histories.py",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def test_sh_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """test.sh run without PostgreSQL, locally and under CI: both at once.

    Each is mostly a Python starting up and importing; the two cores share them.
    """
    started = {
        "local": _test_sh(tmp_path_factory.mktemp("test_sh")),
        "ci": _test_sh(tmp_path_factory.mktemp("test_sh_ci"), CI="true"),
    }
    done: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        for name, process in started.items():
            out, err = process.communicate(timeout=300)
            done[name] = subprocess.CompletedProcess(
                process.args, process.returncode, out, err
            )
        yield done
    finally:
        for process in started.values():
            process.kill()
            process.wait()


def test_test_sh_without_postgres_runs_the_rest_and_says_so_in_one_line(
    test_sh_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    done = test_sh_runs["local"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\b\d+ passed", done.stdout)  # tests did run
    said = [line for line in done.stdout.splitlines() if "SKIPPED: " in line]
    assert len(said) == 1
    assert said[0].startswith("PostgreSQL tests SKIPPED: ")
    assert "RETRO_TEST_POSTGRES_URL=" in said[0]
    assert "apt-get install postgresql" in said[0]
    assert "All steps passed." in done.stdout
    # Said once, not once per skipped PostgreSQL case.
    assert "RETRO_TEST_POSTGRES_URL not set" not in done.stdout


def test_test_sh_under_ci_fails_when_postgres_is_missing(
    test_sh_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    done = test_sh_runs["ci"]
    assert done.returncode != 0
    assert re.search(r"\b\d+ passed", done.stdout)  # the rest still ran
    assert "FAILED: PostgreSQL did not start" in done.stdout
    assert "SKIPPED: " not in done.stdout
