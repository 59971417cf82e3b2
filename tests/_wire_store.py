"""The store contract over the wire: `AssistantsAPIStore` -> ``langchain-retro serve``.

Test modules load this file as a plugin (``pytest_plugins = ["_wire_store"]``) and
list `WIRE_BACKENDS` among their ``store_kind`` parameters (spelled out: a module
cannot import its own plugin). Then the backend
``wire`` is an `AssistantsAPIStore` talking to a real ``langchain-retro serve`` (a
subprocess on 127.0.0.1, on SQLite, started once for the session), and
``wire-postgres`` the same on PostgreSQL.

One server per backend serves the session (it takes seconds to start); its
database is emptied after each test, so every test starts on a fresh store (run ids
are unique across a store, so tests could not share one otherwise). Stores made by
one test share the server and its key, as several processes of one app would.

`WIRE_EXCEPTIONS` lists the contract's statements that cannot hold on the wire,
each with the reason, in one place; those tests are skipped for the wire backends.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from langchain_retro import UNLIMITED, SQLiteStore
from langchain_retro.stores._plain_ledger import forget_server
from langchain_retro.stores.base import BaseStore

WIRE_BACKENDS = ("wire", "wire-postgres")
PLAIN_BACKENDS = ("plain", "plain-postgres", "plain-indexed")
"""`AssistantsAPIStore(protocol="assistants")` on a server without ``/v1/retro``;
``plain-indexed`` on one without ``GET /v1/threads`` either (OpenAI's API), with a
local index (a SQLite file), which then lists the threads and keeps the runs."""

KEY = "sk-wire-test-0123456789"
"""The key of the test stores (one owner: the server's owner checks run too)."""
OTHER_KEY = "sk-wire-other-9876543210"
"""Another owner's key, which must see nothing of `KEY`'s."""

WIRE_EXCEPTIONS: dict[str, str] = {}
"""Contract tests that cannot hold over the wire, by name, with the reason.

Empty: every statement of the contract holds over ``/v1/retro``, because each store
operation is one request run as one call of the server's store. What the wire does
change is outside the contract: the metadata limits (the wire's unless lifted on
both sides, ``tests/test_stores_assistants_api.py``), and one active run per thread
across processes holding only among clients of the same server.
"""


PLAIN_EXCEPTIONS: dict[str, str] = {
    "BaseStore.add_messages, bulk_add_messages, create_threads, clear_messages, "
    "delete_assistant(threads='delete'): all or none": (
        "the Assistants API writes one object a request and has no transaction: "
        "every check (limits, caller ids, the threads) runs before the first "
        "request, but a server failure part-way leaves the first writes "
        "(test_a_batch_is_written_one_message_at_a_time)"
    ),
    "BaseStore.begin_run, finish_run: one transaction": (
        "the lease and the run record are the process's, the input, the reply and "
        "the thread's hwm are requests: a failed begin_run takes its run and lease "
        "back, but input already written stays"
    ),
    "BaseStore.acquire_lease, begin_run: one active run per thread": (
        "the API has no lease: it holds among the processes that share the index "
        "store, and among the stores of one process without an index "
        "(test_a_lease_holds_within_a_process_not_across, "
        "test_with_an_index_runs_and_leases_are_shared_across_processes)"
    ),
    "BaseStore.get_run, list_runs, cancel_run, get_thread_usage: from any process": (
        "runs the client completes are no runs of the server: their records and "
        "the usage totals live in the index store (read by the processes sharing "
        "it), or without one in the process, ending with it"
    ),
    "BaseStore.update_thread, update_message, update_assistant, add_messages(hwm_key)"
    ": a patch applied in the store's transaction": (
        "the API replaces metadata whole: a patch is a read then a write, so two "
        "concurrent writers may lose one change"
    ),
    "BaseStore.count_messages: the same cost at any thread length; "
    "list_run_messages: read by an index": (
        "the API has no count and no filter by run: both read pages of 100 (back "
        "to the run's start for a run this process made)"
    ),
    "BaseStore.add_messages with caller ids: cost O(new)": (
        "the server knows messages by its own ids: a batch that names ids reads "
        "the thread once to refuse ids it already has (batches without ids read "
        "nothing)"
    ),
}
"""What `AssistantsAPIStore(protocol="assistants")` does not keep of the store
contract, with the reason: the one list (the README's section points here).

A key naming a contract test skips it for the ``plain`` backends; none does today,
as every contract test passes on the plain wire. The other keys name statements of
the protocol (`langchain_retro.stores.base`) the suite does not reach; the tests
named in the reasons show them.
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SQLITE_TABLES = (
    "runs",
    "run_leases",
    "messages",
    "thread_metadata",
    "threads",
    "assistants",
)
"""The tables a served SQLite database is emptied of between tests."""


class _Server:
    """A ``langchain-retro serve`` subprocess for the session, on one database."""

    def __init__(self, kind: str, postgres_url: Callable[[], str]) -> None:
        plain = kind.startswith("plain")
        self.folder = Path(tempfile.mkdtemp(prefix="retro-wire-"))
        self.port = _free_port()
        argv = [
            sys.executable,
            "-m",
            "langchain_retro",
            "serve",
            "--port",
            str(self.port),
            "--metadata-limits",
            "off",
            "--log-level",
            "warning",
        ]
        if plain:
            argv.append("--no-retro-routes")
        if kind == "plain-unlisted":
            argv.append("--no-thread-listing")
        self.db = self.folder / "wire.db"
        self.postgres: str | None = None
        self.schema: str | None = None
        if kind.endswith("-postgres"):
            self.postgres = postgres_url()
            self.schema = f"test_{kind[:5]}_{uuid.uuid4().hex[:12]}"
            argv += ["--postgres-url", self.postgres, "--postgres-schema", self.schema]
        else:
            argv += ["--db", str(self.db)]
        env = {
            **os.environ,
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "OPENAI_API_KEY": "unused-upstream-key",
            "LANGCHAIN_RETRO_API_KEYS": f"{KEY},{OTHER_KEY}",
        }
        self.log = self.folder / "serve.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603
                argv, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log.read_text()}")
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"{self.root}/healthz").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {self.log.read_text()}")
            time.sleep(0.05)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def empty(self) -> None:
        """Empty the database: the next test starts on a fresh store."""
        if self.postgres is None:
            connection = sqlite3.connect(self.db, timeout=30)
            with contextlib.closing(connection) as conn, conn:
                for table in SQLITE_TABLES:
                    conn.execute(f"DELETE FROM {table}")
            return
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.postgres, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s "
                "AND tablename NOT LIKE '%%schema_migrations'",
                (self.schema,),
            ).fetchall()
            names = ", ".join(f'"{self.schema}"."{name}"' for (name,) in tables)
            conn.execute(f"TRUNCATE {names}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.schema is not None and self.postgres is not None:
            import psycopg  # noqa: PLC0415

            with psycopg.connect(self.postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            self.schema = None


_servers: dict[str, _Server] = {}


def wire_url(kind: str = "wire") -> str:
    """The ``/v1`` URL of the session's server of a wire backend (started)."""
    return f"{_servers[kind].root}/v1"


def served(kind: str, postgres_url: Callable[[], str]) -> str:
    """The ``/v1`` URL of the session's server of ``kind``, started if need be.

    ``plain-unlisted`` is a server without ``/v1/retro`` nor ``GET /v1/threads``
    (OpenAI's API as it was).
    """
    if kind not in _servers:
        _servers[kind] = _Server(kind, postgres_url)
    return wire_url(kind)


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


@contextlib.contextmanager
def wire_stores(
    kind: str, postgres_url: Callable[[], str]
) -> Iterator[Callable[..., BaseStore]]:
    """Make `AssistantsAPIStore`s on the session's server, emptied after the test."""
    from langchain_retro.stores.assistants_api import (  # noqa: PLC0415
        AssistantsAPIStore,
    )

    served_kind = "plain-unlisted" if kind == "plain-indexed" else kind
    served(served_kind, postgres_url)
    server = _servers[served_kind]
    made: list[BaseStore] = []
    index: SQLiteStore | None = None
    if kind == "plain-indexed":
        index = SQLiteStore(Path(tempfile.mkdtemp(prefix="retro-index-")) / "i.db")

    clients: list[openai.OpenAI] = []

    def make(**kwargs: Any) -> BaseStore:
        url = f"{server.root}/v1"
        # Loading the certificates costs ~50 ms a client: one context serves all.
        sync_http = openai.DefaultHttpxClient(verify=_tls())
        client = openai.OpenAI(base_url=url, api_key=KEY, http_client=sync_http)
        clients.append(client)
        # The sync teardown cannot close an async client on a test's loop, which
        # is gone by then: this one keeps no connection open between requests.
        http = openai.DefaultAsyncHttpxClient(
            verify=_tls(), limits=httpx2.Limits(max_keepalive_connections=0)
        )
        async_client = openai.AsyncOpenAI(base_url=url, api_key=KEY, http_client=http)
        if kind.startswith("plain"):
            if index is not None:
                kwargs.setdefault("index", index)
            store = AssistantsAPIStore(
                client=client,
                async_client=async_client,
                protocol="assistants",
                **kwargs,
            )
        else:
            store = AssistantsAPIStore(
                client=client,
                async_client=async_client,
                limits=kwargs.pop("limits", UNLIMITED),
            )
        made.append(store)
        return store

    try:
        yield make
    finally:
        for store in made:
            store.close()
        for client in clients:
            client.close()
        server.empty()
        # Runs of the plain mode live in the process: the next test starts afresh.
        forget_server(f"{server.root}/v1")
        if index is not None:
            index.close()


@pytest.fixture(autouse=True)
def _wire_exceptions(request: pytest.FixtureRequest) -> None:
    """Skip the contract tests of `WIRE_EXCEPTIONS` / `PLAIN_EXCEPTIONS` there."""
    if "store_kind" not in request.fixturenames:
        return
    kind = request.getfixturevalue("store_kind")
    name = request.node.originalname
    if kind in WIRE_BACKENDS and name in WIRE_EXCEPTIONS:
        pytest.skip(f"not on the wire: {WIRE_EXCEPTIONS[name]}")
    if kind in PLAIN_BACKENDS and name in PLAIN_EXCEPTIONS:
        pytest.skip(f"not on the plain Assistants API: {PLAIN_EXCEPTIONS[name]}")


@dataclass(frozen=True)
class Wire:
    """The session's SQLite-backed server, for tests beyond the contract."""

    url: str
    """Its ``/v1`` URL."""
    key: str
    """The key the test stores use."""
    other_key: str
    """Another owner's key."""


@pytest.fixture
def wire(store: BaseStore) -> Wire:
    """The server behind the test's wire ``store``."""
    return Wire(url=wire_url(), key=KEY, other_key=OTHER_KEY)
