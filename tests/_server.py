"""The server under test: ``langchain-retro serve`` in a subprocess, and the spec.

`Served` starts the real command (uvicorn, real sockets on 127.0.0.1) on a SQLite
file or a PostgreSQL schema, its upstream model a `FakeChatServer` in this process,
and hands out real openai SDK clients (``_strict_response_validation=True``) whose
every response is validated against the OpenAPI spec's schemas
(``../shared/openai-spec/assistants-v2.yaml``) with ``jsonschema``. The fixtures
over it (``fake``, ``api``, ``client``) are in `_server_fixtures`.

The spec is OpenAPI 3.1 but keeps OpenAPI 3.0's ``nullable: true`` in places; JSON
Schema ignores that keyword, so it is rewritten as ``anyOf [..., null]``. OpenAI
answered an empty page with ``first_id``/``last_id`` null where the spec says
string: those two may be null.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import openai
import pytest
import yaml
from fastapi import FastAPI
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from langchain_retro.testing import FakeChatServer

ROOT = Path(__file__).resolve().parent.parent
SPEC = next(
    (
        folder / "shared" / "openai-spec" / "assistants-v2.yaml"
        for folder in ROOT.parents
        if (folder / "shared" / "openai-spec" / "assistants-v2.yaml").exists()
    ),
    ROOT.parent / "shared" / "openai-spec" / "assistants-v2.yaml",
)
"""``../shared/openai-spec/assistants-v2.yaml``, beside the repository (or above)."""
SPEC_URI = "urn:assistants-v2"
KEY_A = "sk-test-alpha-0123456789"
KEY_B = "sk-test-bravo-9876543210"
KEYS = (f"alpha:{KEY_A}", f"bravo:{KEY_B}")
"""Two keys, owners ``alpha`` and ``bravo``."""


SDK_DEPRECATIONS = [
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings(
        "ignore:The Assistants API is deprecated:DeprecationWarning"
    ),
]
"""The openai SDK warns on every Assistants call: the API these tests serve."""


def mounted(app: FastAPI, prefix: str) -> FastAPI:
    """A parent app with ``app`` mounted at ``prefix``, entering its lifespan.

    Starlette runs no mounted app's lifespan: the parent enters it, as the README
    tells users to.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with app.router.lifespan_context(app):
            yield

    parent = FastAPI(lifespan=lifespan)
    parent.mount(prefix, app)
    return parent


def _nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable(value) for key, value in node.items()}
    if isinstance(node.get("allOf"), list) and {"nullable": True} in node["allOf"]:
        rest = [part for part in node["allOf"] if part != {"nullable": True}]
        node = {k: v for k, v in node.items() if k != "allOf"}
        return {**node, "anyOf": [{"allOf": rest}, {"type": "null"}]}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


@cache
def spec() -> dict[str, Any]:
    """The spec, with ``nullable`` rewritten and list cursors nullable."""
    document = _nullable(yaml.safe_load(SPEC.read_text(encoding="utf-8")))
    for name, schema in document["components"]["schemas"].items():
        if name.startswith("List") and name.endswith("Response"):
            for cursor in ("first_id", "last_id"):
                schema["properties"][cursor] = {"type": ["string", "null"]}
    return document


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(spec(), default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator of one component schema, its ``$ref``s resolved in the spec."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"},
        registry=_registry(),
    )


@cache
def _operations() -> list[tuple[str, re.Pattern[str], str]]:
    """(method, path pattern, 200 schema name) of every operation, literal first."""
    found = []
    for path, item in spec()["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", path)
        for method, operation in item.items():
            if method not in ("get", "post", "delete"):
                continue
            ref = operation["responses"]["200"]["content"]["application/json"][
                "schema"
            ]["$ref"]
            found.append(
                (method.upper(), re.compile(f"^/v1{pattern}$"), ref.rsplit("/", 1)[1])
            )
    found.sort(key=lambda op: op[1].pattern.count("[^/]+"))
    return found


def schema_of(method: str, path: str, status: int) -> str | None:
    """The schema a response must follow; ``None`` for paths outside the spec."""
    if status != 200:
        return "ErrorResponse"
    for op_method, pattern, name in _operations():
        if op_method == method and pattern.match(path):
            return name
    return None


THREAD_LIST = {
    "type": "object",
    "required": ["object", "data", "first_id", "last_id", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {"$ref": f"{SPEC_URI}#/components/schemas/ThreadObject"},
        },
        "has_more": {"type": "boolean"},
    },
}


def check_response(method: str, path: str, status: int, body: Any) -> list[str]:
    """What is wrong with one JSON response, by the spec; empty when nothing."""
    if method == "GET" and path == "/v1/threads" and status == 200:
        checker = jsonschema.Draft202012Validator(THREAD_LIST, registry=_registry())
    else:
        name = schema_of(method, path, status)
        if name is None:
            return [f"{method} {path}: not an operation of the spec"]
        checker = validator(name)
    return [
        f"{method} {path} -> {status}: {error.message} at {list(error.absolute_path)}"
        for error in checker.iter_errors(body)
    ]


def check_event(event: str, data: Any) -> list[str]:
    """What is wrong with one streamed event, by ``AssistantStreamEvent``."""
    payload = {"event": event, "data": data}
    return [
        f"event {event}: {error.message}"
        for error in validator("AssistantStreamEvent").iter_errors(payload)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A running ``langchain-retro serve`` and clients of it."""

    def __init__(
        self,
        fake: FakeChatServer,
        tmp: Path,
        *,
        keys: tuple[str, ...] = KEYS,
        workers: int = 1,
        postgres: tuple[str, str] | None = None,
        lease_ttl: float = 3.0,
        db: Path | None = None,
    ) -> None:
        self.fake = fake
        self.tmp = tmp
        self.keys = keys
        self.workers = workers
        self.postgres = postgres
        self.lease_ttl = lease_ttl
        self.db = db or tmp / "served.db"
        self.port = free_port()
        self.log = tmp / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.problems: list[str] = []
        """Spec violations seen in responses; a test's teardown asserts none."""
        self.opened: list[Any] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "langchain_retro",
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--lease-ttl",
            str(self.lease_ttl),
            "--log-level",
            "info",
        ]
        if self.postgres is not None:
            command += ["--postgres-url", self.postgres[0]]
            command += ["--postgres-schema", self.postgres[1]]
        else:
            command += ["--db", str(self.db)]
        return command

    def start(self) -> Served:
        """Start the server and wait until it answers."""
        return self.launch().ready()

    def launch(self) -> Served:
        """Start the server without waiting: launch several, then `ready` each."""
        env = {
            **os.environ,
            "OPENAI_BASE_URL": self.fake.base_url,
            "OPENAI_API_KEY": "upstream-key",
            "LANGCHAIN_RETRO_API_KEYS": ",".join(self.keys),
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603
                self.command(), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def ready(self) -> Served:
        """Wait until the launched server answers ``/healthz``."""
        assert self.process is not None, "launch() first"
        # Generous: several servers start at once on two shared cores.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log.read_text()}")
            with contextlib.suppress(httpx2.HTTPError):
                if (
                    httpx2.get(f"http://127.0.0.1:{self.port}/healthz").status_code
                    == 200
                ):
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"serve did not start: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop_async(self) -> None:
        """Ask the server to stop (SIGTERM) without waiting for it."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        """Wait for the server to exit; its exit status."""
        assert self.process is not None
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        """Kill the server and its workers at once, as a crash would."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait()

    def _hook(self, response: httpx2.Response) -> None:
        if "text/event-stream" in response.headers.get("content-type", ""):
            return
        response.read()
        request = response.request
        try:
            body = json.loads(response.content)
        except ValueError:
            self.problems.append(f"{request.url.path}: not JSON: {response.text!r}")
            return
        self.problems += check_response(
            request.method, request.url.path, response.status_code, body
        )

    def client(
        self,
        key: str | None = KEY_A,
        *,
        seen: list[httpx2.Response] | None = None,
        **kwargs: Any,
    ) -> openai.OpenAI:
        """A strict sync client; every JSON response is checked against the spec.

        Args:
            key: The API key.
            seen: Where to keep every response the client receives, if given.
            **kwargs: More options of ``openai.OpenAI``.
        """
        hooks: list[Any] = [self._hook]
        if seen is not None:
            hooks.append(seen.append)
        http = httpx2.Client(event_hooks={"response": hooks})
        self.opened.append(http)
        return openai.OpenAI(
            base_url=self.base_url,
            api_key=key or "",
            max_retries=0,
            http_client=http,
            _strict_response_validation=True,
            **kwargs,
        )

    def async_client(
        self, key: str | None = KEY_A, **kwargs: Any
    ) -> openai.AsyncOpenAI:
        """A strict async client; every JSON response is checked against the spec."""

        async def hook(response: httpx2.Response) -> None:
            if "text/event-stream" in response.headers.get("content-type", ""):
                return
            await response.aread()
            self._hook(response)

        http = httpx2.AsyncClient(event_hooks={"response": [hook]})
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=key or "",
            max_retries=0,
            http_client=http,
            _strict_response_validation=True,
            **kwargs,
        )

    def close_clients(self) -> None:
        """Close the sync clients handed out (async ones are closed by their test)."""
        for http in self.opened:
            http.close()
        self.opened.clear()

    def checked(self) -> list[str]:
        """The spec violations seen since the last call; clients closed."""
        self.close_clients()
        problems, self.problems[:] = list(self.problems), []
        return problems

    def http(self, key: str | None = KEY_A) -> httpx2.Client:
        """A plain HTTP client with the key, for what the SDK does not send."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx2.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers=headers, timeout=30
        )


@contextlib.contextmanager
def served(fake: FakeChatServer, tmp: Path, **kwargs: Any) -> Iterator[Served]:
    server = Served(fake, tmp, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def unique_schema() -> str:
    return f"test_srv_{uuid.uuid4().hex[:12]}"
