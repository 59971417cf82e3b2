"""Every Python block of README.md runs as written.

A block is skipped only if its first line is ``# not run``. Each block runs in its own
empty working directory, so the default store (``./langchain-retro.db``) starts empty.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 2, match.group(1))
        for match in _BLOCK.finditer(text)
        if not match.group(1).startswith("# not run")
    ]


def test_readme_has_python_blocks() -> None:
    assert len(_blocks()) >= 5


@pytest.mark.parametrize(("line", "code"), _blocks(), ids=lambda v: str(v)[:12])
def test_readme_block_runs(
    line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("LANGCHAIN_RETRO_DB", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    # A real module (runpy installs it as __main__ while it runs), so pydantic can
    # resolve the block's own classes in annotations.
    script = tmp_path / f"README_line_{line}.py"
    script.write_text(code, encoding="utf-8")
    runpy.run_path(str(script), run_name="__main__")
