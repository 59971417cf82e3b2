"""What every example shares: where the data goes and which model answers.

Not an example itself: the scripts beside it import it (Python puts a script's own
folder first on ``sys.path``, so ``.venv/bin/python examples/NAME.py`` finds it from
anywhere).
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langchain_openai import ChatOpenAI

from langchain_retro.testing import FakeChatServer

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
"""The model assistants name: OPENAI_MODEL, else gpt-4o-mini."""


def database_path() -> str:
    """LANGCHAIN_RETRO_DB if set, else a new temporary file."""
    if os.environ.get("LANGCHAIN_RETRO_DB"):
        return os.environ["LANGCHAIN_RETRO_DB"]
    return str(Path(tempfile.mkdtemp(prefix="langchain-retro-")) / "example.db")


@contextmanager
def chat_model() -> Iterator[tuple[ChatOpenAI, FakeChatServer | None]]:
    """ChatOpenAI on OPENAI_API_KEY and OPENAI_BASE_URL, else the offline echo model.

    Yields the model and, offline, the local server that records what was sent.
    """
    if os.environ.get("OPENAI_API_KEY"):
        print(f"model: {MODEL} through ChatOpenAI")
        yield ChatOpenAI(model=MODEL), None
        return
    print("model: offline echo model (OPENAI_API_KEY is not set); replies are echoes")
    with FakeChatServer() as server:
        yield server.chat_model(model=MODEL), server


def cli_command(*words: str) -> str:
    """A ``langchain-retro`` command line that works as printed, in any shell.

    The console script beside this interpreter (``.venv/bin/langchain-retro``), so
    it needs no activated virtualenv; ``python -m langchain_retro`` if there is none.
    """
    script = Path(sys.executable).parent / "langchain-retro"
    program = (
        [str(script)] if script.exists() else [sys.executable, "-m", "langchain_retro"]
    )
    return shlex.join([*program, *words])
