"""Every Python block of README.md runs as written.

A block is skipped only if its first line is ``# not run``. Each block runs in its own
empty working directory, so the default store (``./langchain-retro.db``) starts empty.
Blocks using `PostgresStore` read ``DATABASE_URL``, set here to the test server's URL
(``RETRO_TEST_POSTGRES_URL``); like the other PostgreSQL tests they are skipped
locally without it, and fail under CI.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest
from conftest import postgres_url

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
    if "PostgresStore" in code:
        monkeypatch.setenv("DATABASE_URL", postgres_url())
    # A real module (runpy installs it as __main__ while it runs), so pydantic can
    # resolve the block's own classes in annotations.
    script = tmp_path / "readme_block.py"
    script.write_text(code, encoding="utf-8")
    runpy.run_path(str(script), run_name="__main__")


def _linked_examples() -> set[str]:
    text = README.read_text(encoding="utf-8")
    return set(re.findall(r"\]\((examples/[\w/]+\.py)\)", text))


def test_readme_links_every_example_and_only_existing_ones() -> None:
    # tests/test_examples.py runs them; this keeps the README's list whole and true.
    root = README.parent
    on_disk = {str(p.relative_to(root)) for p in (root / "examples").glob("[!_]*.py")}
    assert _linked_examples() == on_disk
