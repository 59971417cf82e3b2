"""Shared fixtures: a fresh store of every backend for each test.

The ``store`` fixture is parametrised over the backends: ``sqlite`` (a real file in a
temporary directory) and ``postgres`` (an empty schema on the server named by
``RETRO_TEST_POSTGRES_URL``, which ``scripts/postgres.sh start`` prints and CI sets:
new, or an earlier test's emptied when it is exactly as a new one, `_pg_schemas`).
Without that variable the PostgreSQL cases are skipped locally; under CI (``CI`` set)
its absence is an error, so CI never skips them.

``server`` is a `FakeChatServer` on 127.0.0.1 and ``llm`` a real ``ChatOpenAI`` talking
to it, for the runner and history tests.
"""

from __future__ import annotations

import functools
import os
import ssl
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from langchain_retro import SQLiteStore
from langchain_retro.stores.base import BaseStore
from langchain_retro.testing import FakeChatServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from langchain_openai import ChatOpenAI

pytest_plugins = ["_server_fixtures"]
"""The server tests' fixtures (``fake``, ``api``, ``client``), used only there."""

POSTGRES_URL_ENV = "RETRO_TEST_POSTGRES_URL"

EVERY_BACKEND = (
    *("sqlite", "postgres"),
    *("wire", "wire-postgres"),
    *("plain", "plain-postgres", "plain-indexed"),
)
"""What the contract suites run on: both stores, and `AssistantsAPIStore` in front of
each, over the ``/v1/retro`` routes (``wire``) and the plain Assistants API (``plain``,
`tests/_wire_store.py`)."""
BACKENDS = ("sqlite", "postgres")


def postgres_url() -> str:
    """The test server's URL; skips locally, fails under CI, when it is unset."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        return url
    if os.environ.get("CI"):
        pytest.fail(
            f"{POSTGRES_URL_ENV} is not set under CI: start scripts/postgres.sh"
        )
    pytest.skip(f"{POSTGRES_URL_ENV} not set (run scripts/postgres.sh start)")


@contextmanager
def explaining_store(schema: str, *settings: str) -> Iterator[tuple[Any, list[str]]]:
    """A `PostgresStore` on ``schema`` whose every statement's plan is collected.

    auto_explain logs each plan as a notice on the store's one connection, which
    also runs ``SET`` for each of ``settings`` (``"plan_cache_mode =
    force_generic_plan"``). Yields the store and the list the plans are appended to.
    """
    import psycopg_pool  # noqa: PLC0415

    from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

    plans: list[str] = []

    def explain_everything(conn: Any) -> None:
        conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET auto_explain.log_min_duration = 0")
        conn.execute("SET client_min_messages = log")
        for setting in settings:
            conn.execute(f"SET {setting}")

    pool = psycopg_pool.ConnectionPool(
        postgres_url(),
        kwargs={"autocommit": True},
        configure=explain_everything,
        min_size=1,
        max_size=1,
        open=True,
    )
    try:
        with PostgresStore(pool, schema=schema) as store:
            yield store, plans
    finally:
        pool.close()


def _drop_schema(url: str, schema: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def stores_of(kind: str, tmp_path: Path) -> Iterator[Callable[..., BaseStore]]:
    """Make stores of one backend; all are closed (and the schema emptied) after.

    Stores made by one call share one database (one SQLite file, one PostgreSQL
    schema), as several processes of one app would. The ``wire`` kinds are
    `AssistantsAPIStore`s on a served database (``tests/_wire_store.py``).
    """
    if kind.startswith(("wire", "plain")):
        from _wire_store import wire_stores  # noqa: PLC0415

        with wire_stores(kind, postgres_url) as make_wire:
            yield make_wire
        return
    made: list[BaseStore] = []
    cleanup: list[Callable[[], None]] = []
    if kind == "sqlite":
        path = tmp_path / "retro.db"

        def make(**kwargs: Any) -> BaseStore:
            store = SQLiteStore(path, **kwargs)
            made.append(store)
            return store

    elif kind == "postgres":
        from _pg_schemas import LAYOUT_OPTIONS, schema_pool  # noqa: PLC0415

        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        pool = schema_pool(postgres_url())
        schema: list[str] = []  # taken by the first store made
        reusable = True

        def make(**kwargs: Any) -> BaseStore:
            nonlocal reusable
            if not schema:
                if LAYOUT_OPTIONS & kwargs.keys():
                    # setup() shapes only a new schema's tables.
                    schema.append(f"test_{uuid.uuid4().hex[:12]}")
                    reusable = False
                else:
                    schema.append(pool.take())
            store = PostgresStore.from_connection_string(
                pool.url, schema=schema[0], **kwargs
            )
            store.setup()
            made.append(store)
            return store

        def give_back() -> None:
            if schema:
                pool.give_back(schema[0], reusable=reusable)

        cleanup.append(give_back)

    else:  # pragma: no cover - a typo in a parametrisation
        raise ValueError(kind)
    try:
        yield make
    finally:
        for store in made:
            store.close()
        for step in cleanup:
            step()


@pytest.fixture(params=BACKENDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    return str(request.param)


@pytest.fixture
def store_factory(
    store_kind: str, tmp_path: Path
) -> Iterator[Callable[..., BaseStore]]:
    """Make more stores on the same database as `store` (other processes' view)."""
    with stores_of(store_kind, tmp_path) as make:
        yield make


@pytest.fixture
def store(store_factory: Callable[..., BaseStore]) -> BaseStore:
    """A fresh, empty store of each backend."""
    return store_factory()


@pytest.fixture(scope="session")
def shared_server() -> Iterator[FakeChatServer]:
    """The session's fake Chat Completions server; tests get it as `server`."""
    with FakeChatServer() as fake:
        yield fake


def _as_new(fake: FakeChatServer, new: FakeChatServer) -> None:
    """Make a used server answer as a new one does, with no connection open."""
    fake.reset()
    fake.drop_connections()
    fake.default = new.default
    fake.models = new.models


@pytest.fixture
def server(shared_server: FakeChatServer) -> Iterator[FakeChatServer]:
    """A fake Chat Completions server on 127.0.0.1, recording every request.

    One server serves the session (a new one per test cost ~50 ms to stop); it
    forgets its requests, replies, failures and delays, and drops its connections,
    before and after each test, so a test sees only its own requests.
    """
    new = FakeChatServer()
    if shared_server._httpd is None:  # a test stopped it
        shared_server.start()
    _as_new(shared_server, new)
    yield shared_server
    _as_new(shared_server, new)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for the test clients: loading the CA bundle takes ~50 ms."""
    return ssl.create_default_context()


@pytest.fixture
async def llm(server: FakeChatServer) -> AsyncIterator[ChatOpenAI]:
    """A real ``ChatOpenAI`` pointed at `server`."""
    import openai  # noqa: PLC0415

    async with openai.DefaultAsyncHttpxClient(verify=_tls()) as http_async_client:
        with openai.DefaultHttpxClient(verify=_tls()) as http_client:
            yield server.chat_model(
                http_client=http_client, http_async_client=http_async_client
            )
