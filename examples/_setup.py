"""What every example shares: where the data goes and which model answers.

Not an example itself: the scripts beside it import it (Python puts a script's own
folder first on ``sys.path``, so ``.venv/bin/python examples/NAME.py`` finds it from
anywhere).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from langchain_openai import ChatOpenAI

from langchain_retro import AssistantsAPIStore, SQLiteStore
from langchain_retro.stores.base import BaseStore
from langchain_retro.testing import FakeChatServer

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
"""The model assistants name: OPENAI_MODEL, else gpt-4o-mini."""


def database_path() -> str:
    """LANGCHAIN_RETRO_DB if set, else a new temporary file."""
    if os.environ.get("LANGCHAIN_RETRO_DB"):
        return os.environ["LANGCHAIN_RETRO_DB"]
    return str(Path(tempfile.mkdtemp(prefix="langchain-retro-")) / "example.db")


@contextmanager
def open_store() -> Iterator[BaseStore]:
    """The store the example keeps its data in, closed on the way out.

    With RETRO_BASE_URL set (and RETRO_API_KEY, a key it accepts): an
    `AssistantsAPIStore` on that server, so the example's data lives there: through
    the ``/v1/retro`` routes of a ``langchain-retro serve``, or through the plain
    Assistants API on a server without them (``protocol="auto"`` asks which).
    Otherwise a `SQLiteStore` on `database_path`.
    """
    url = os.environ.get("RETRO_BASE_URL")
    if url:
        print(f"store: AssistantsAPIStore on {url}")
        key = os.environ.get("RETRO_API_KEY") or "none"
        with AssistantsAPIStore.from_url(url, api_key=key, protocol="auto") as store:
            yield store
        return
    path = database_path()
    print(f"database: {path}")
    with SQLiteStore(path) as store:
        yield store


def look_inside(store: BaseStore) -> str:
    """A command that lists the threads the example left in its store."""
    if isinstance(store, SQLiteStore):
        return cli_command("--db", str(store.path), "threads", "list")
    url = os.environ.get("RETRO_BASE_URL", "")
    return f'curl -H "Authorization: Bearer $RETRO_API_KEY" {url}/threads'


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


@contextmanager
def assistants_server() -> Iterator[tuple[str, str]]:
    """The base URL and key of a ``langchain-retro serve`` to talk to.

    RETRO_BASE_URL and RETRO_API_KEY if set; else a server started here on
    127.0.0.1, its upstream the real model (OPENAI_API_KEY) or the offline echo
    model, its database a new temporary file, stopped on the way out.
    """
    if os.environ.get("RETRO_BASE_URL"):
        yield os.environ["RETRO_BASE_URL"], os.environ.get("RETRO_API_KEY", "")
        return
    import socket  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import time  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    key = "sk-retro-example"
    with contextlib.ExitStack() as stack:
        env = {**os.environ, "LANGCHAIN_RETRO_API_KEYS": key}
        if not os.environ.get("OPENAI_API_KEY"):
            upstream = stack.enter_context(FakeChatServer())
            env |= {"OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "offline"}
            print("upstream: offline echo model (OPENAI_API_KEY is not set)")
        command = [sys.executable, "-m", "langchain_retro", "serve"]
        command += ["--port", str(port), "--db", database_path()]
        command += ["--log-level", "warning"]
        server = subprocess.Popen(  # noqa: S603 - our own command
            command, env=env, stderr=subprocess.DEVNULL
        )
        stack.callback(server.wait, 30)
        stack.callback(server.terminate)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/healthz", timeout=1
                ):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        print(f"server: langchain-retro serve on http://127.0.0.1:{port}/v1")
        yield f"http://127.0.0.1:{port}/v1", key
