"""``langchain-retro serve``: the API with uvicorn, on SQLite or PostgreSQL.

The command checks its options, then hands them to each uvicorn worker through the
environment (`app_from_env` builds a worker's app from it), so ``--workers N``
starts N processes sharing one database::

    LANGCHAIN_RETRO_DB             the SQLite file (``--db``)
    LANGCHAIN_RETRO_POSTGRES_URL   a PostgreSQL URL instead (``--postgres-url``)
    LANGCHAIN_RETRO_POSTGRES_SCHEMA  its schema (``--postgres-schema``)
    LANGCHAIN_RETRO_API_KEYS       keys, comma-separated (``--api-key``, repeatable)
    LANGCHAIN_RETRO_LEASE_TTL      seconds a dead worker's run holds its thread
    LANGCHAIN_RETRO_METADATA_LIMITS  ``off`` lifts the ``/v1/retro`` routes' limits
    LANGCHAIN_RETRO_EXTENSIONS_OFF  ``retro``, ``thread-listing``: extensions left out
    OPENAI_API_KEY, OPENAI_BASE_URL  the upstream Chat Completions endpoint

Without a key the server is open to anyone who can reach it, so it then refuses
any host but a loopback address, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from langchain_retro._metadata import OPENAI_LIMITS, UNLIMITED
from langchain_retro.server.app import create_app
from langchain_retro.server.auth import parse_key
from langchain_retro.server.context import ServerSettings
from langchain_retro.stores.sqlite import DEFAULT_PATH, PATH_ENV, SQLiteStore

if TYPE_CHECKING:
    import httpx2
    from fastapi import FastAPI

    from langchain_retro.stores.base import BaseStore

__all__ = [
    "KEYS_ENV",
    "POSTGRES_ENV",
    "app_from_env",
    "check_host",
    "keys_from",
    "serve",
]

KEYS_ENV = "LANGCHAIN_RETRO_API_KEYS"
POSTGRES_ENV = "LANGCHAIN_RETRO_POSTGRES_URL"
SCHEMA_ENV = "LANGCHAIN_RETRO_POSTGRES_SCHEMA"
LEASE_ENV = "LANGCHAIN_RETRO_LEASE_TTL"
LIMITS_ENV = "LANGCHAIN_RETRO_METADATA_LIMITS"
EXTENSIONS_OFF_ENV = "LANGCHAIN_RETRO_EXTENSIONS_OFF"
LOG_LEVEL_ENV = "LANGCHAIN_RETRO_LOG_LEVEL"
FALLBACK_MODEL = "gpt-4o-mini"
"""The model ``ChatOpenAI`` is made with; every run sends its assistant's model."""

logger = logging.getLogger("langchain_retro.server")


def keys_from(flags: list[str] | None, environ: dict[str, str]) -> list[str]:
    """The server's keys: ``--api-key`` flags, else the comma-separated variable."""
    if flags:
        return [key for key in flags if key.strip()]
    return [key.strip() for key in environ.get(KEYS_ENV, "").split(",") if key.strip()]


def check_host(host: str, *, keyed: bool) -> str | None:
    """Why a host may not be served, or ``None``.

    An open server (no key) serves loopback only: anyone reaching another address
    could read and write every thread.
    """
    if keyed:
        return None
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"refusing to serve {host} without an API key: anyone who can reach it "
        f"could read and write every thread. Give keys with --api-key KEY (or "
        f"{KEYS_ENV}=KEY1,KEY2), or serve on 127.0.0.1."
    )


def _store_from_env() -> BaseStore:
    """The worker's store: PostgreSQL if a URL is set, else the SQLite file."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        store = PostgresStore.from_connection_string(
            url, schema=os.environ.get(SCHEMA_ENV) or None
        )
        store.setup()
        return store
    return SQLiteStore(os.environ.get(PATH_ENV) or DEFAULT_PATH)


def _upstream_http_client() -> httpx2.AsyncClient | None:
    """The openai SDK's aiohttp transport for the model calls, if aiohttp is there.

    The ``server`` extra installs it (``openai[aiohttp]``). A run's model call then
    costs the worker about half a millisecond less of CPU than through the SDK's
    default httpx transport (``bench/server.py``), with the SDK's defaults, its
    timeouts and retries unchanged. Without aiohttp, ``None``: the default.
    """
    try:
        from openai import DefaultAioHttpClient  # noqa: PLC0415

        return DefaultAioHttpClient()
    except (ImportError, RuntimeError):  # an older SDK, or aiohttp is missing
        return None


def app_from_env() -> FastAPI:
    """A worker's app, from the environment `serve` set (uvicorn's factory)."""
    from langchain_openai import ChatOpenAI  # noqa: PLC0415

    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logger.addHandler(handler)
    # As uvicorn's own: ``--log-level warning`` silences the access lines.
    level = (os.environ.get(LOG_LEVEL_ENV) or "info").upper()
    logger.setLevel(logging.getLevelNamesMapping().get(level, logging.INFO))
    store = _store_from_env()
    # OPENAI_API_KEY and OPENAI_BASE_URL are read by the SDK; every run sends the
    # model of its assistant, so this name is only a fallback.
    http = _upstream_http_client()
    options: dict[str, Any] = {"model": FALLBACK_MODEL}
    if http is not None:
        options["http_async_client"] = http
    settings = ServerSettings(
        lease_ttl=float(os.environ.get(LEASE_ENV) or ServerSettings.lease_ttl)
    )
    off = set(os.environ.get(EXTENSIONS_OFF_ENV, "").split(","))
    app = create_app(
        store=store,
        llm=ChatOpenAI(**options),
        api_keys=keys_from(None, dict(os.environ)),
        settings=settings,
        metadata_limits=(
            UNLIMITED if os.environ.get(LIMITS_ENV) == "off" else OPENAI_LIMITS
        ),
        retro_routes="retro" not in off,
        thread_listing="thread-listing" not in off,
    )
    serving = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with serving(app):
            yield
        if http is not None:
            await http.aclose()
        await store.aclose()

    app.router.lifespan_context = lifespan
    return app


def serve(args: argparse.Namespace) -> int:
    """Run ``langchain-retro serve``; returns the exit status.

    Raises:
        UsageError: For options that do not go together, a non-loopback host
            without a key, or no ``OPENAI_API_KEY``.
    """
    from langchain_retro._cli_common import UsageError  # noqa: PLC0415

    keys = keys_from(args.api_key, dict(os.environ))
    for key in keys:
        try:
            parse_key(key)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    why = check_host(args.host, keyed=bool(keys))
    if why is not None:
        raise UsageError(why)
    if args.postgres_url and args.db:
        raise UsageError("give --db or --postgres-url, not both")
    if not os.environ.get("OPENAI_API_KEY"):
        raise UsageError(
            "OPENAI_API_KEY is not set, so runs have no model to call. Set it (and "
            "OPENAI_BASE_URL for another OpenAI-compatible server, e.g. "
            "http://localhost:11434/v1 for Ollama)."
        )
    import uvicorn  # noqa: PLC0415

    if keys:
        os.environ[KEYS_ENV] = ",".join(keys)
    else:
        os.environ.pop(KEYS_ENV, None)
    if args.postgres_url:
        os.environ[POSTGRES_ENV] = args.postgres_url
        if args.postgres_schema:
            os.environ[SCHEMA_ENV] = args.postgres_schema
        where = "PostgreSQL" + (
            f" (schema {args.postgres_schema})" if args.postgres_schema else ""
        )
    else:
        from langchain_retro._cli_common import database  # noqa: PLC0415

        os.environ.pop(POSTGRES_ENV, None)
        os.environ[PATH_ENV] = database(args.db)
        where = os.environ[PATH_ENV]
    if args.lease_ttl is not None:
        os.environ[LEASE_ENV] = str(args.lease_ttl)
    if getattr(args, "metadata_limits", None) is not None:
        os.environ[LIMITS_ENV] = args.metadata_limits
    off = [
        name
        for name, flag in (
            ("retro", "no_retro_routes"),
            ("thread-listing", "no_thread_listing"),
        )
        if getattr(args, flag, False)
    ]
    os.environ[EXTENSIONS_OFF_ENV] = ",".join(off)
    os.environ[LOG_LEVEL_ENV] = args.log_level
    access = (
        "open to any request (loopback only)"
        if not keys
        else (f"{len(keys)} API key(s)")
    )
    print(
        f"langchain-retro serve: http://{args.host}:{args.port}/v1 on {where}, "
        f"{args.workers} worker(s), {access}",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            "langchain_retro.server.serve:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            access_log=False,
            log_level=args.log_level,
            timeout_graceful_shutdown=int(ServerSettings.shutdown_grace) + 5,
        )
    return 0
