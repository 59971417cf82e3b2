"""``langchain-retro serve``: what it refuses before serving, and a missing extra."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn

from langchain_retro.cli import main
from langchain_retro.server.auth import Keyring, parse_key
from langchain_retro.server.errors import AuthenticationError
from langchain_retro.server.serve import app_from_env, check_host
from langchain_retro.testing import FakeChatServer

ROOT = Path(__file__).resolve().parents[1]


SERVE_ENV = (
    "LANGCHAIN_RETRO_API_KEYS",
    "LANGCHAIN_RETRO_DB",
    "LANGCHAIN_RETRO_POSTGRES_URL",
    "LANGCHAIN_RETRO_POSTGRES_SCHEMA",
    "LANGCHAIN_RETRO_LEASE_TTL",
    "LANGCHAIN_RETRO_EXTENSIONS_OFF",
    "LANGCHAIN_RETRO_LOG_LEVEL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)
"""What ``serve`` reads, or sets for its workers: restored after each test."""


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in SERVE_ENV:
        monkeypatch.delenv(name, raising=False)


def _serving(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``uvicorn.run`` replaced: the calls, each its options and the workers' env."""
    calls: list[dict[str, Any]] = []

    def run(app: str, **options: Any) -> None:
        calls.append({"app": app, **options, "env": dict(os.environ)})

    monkeypatch.setattr(uvicorn, "run", run)
    return calls


def test_api_keys_from_flags_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _serving(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "upstream-key")
    monkeypatch.setenv("LANGCHAIN_RETRO_API_KEYS", "sk-from-env")
    argv = ["serve", "--api-key", "team:sk-one", "--api-key", "sk-two"]
    assert main([*argv, "--workers", "3", "--db", "x.db"]) == 0
    (call,) = calls
    # The flags win over the variable; the workers read them from the environment.
    assert call["env"]["LANGCHAIN_RETRO_API_KEYS"] == "team:sk-one,sk-two"
    assert (call["host"], call["workers"], call["factory"]) == ("127.0.0.1", 3, True)
    assert call["env"]["LANGCHAIN_RETRO_DB"] == "x.db"
    banner = capsys.readouterr().err
    assert "2 API key(s)" in banner
    assert "sk-" not in banner
    monkeypatch.setenv("LANGCHAIN_RETRO_API_KEYS", "sk-from-env")
    assert main(["serve", "--host", "0.0.0.0"]) == 0  # noqa: S104 - keyed by env
    assert calls[1]["env"]["LANGCHAIN_RETRO_API_KEYS"] == "sk-from-env"


def test_without_a_key_it_says_it_serves_loopback_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = _serving(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "upstream-key")
    assert main(["serve", "--postgres-url", "postgresql://h/db"]) == 0
    assert "LANGCHAIN_RETRO_API_KEYS" not in calls[0]["env"]
    assert calls[0]["env"]["LANGCHAIN_RETRO_POSTGRES_URL"] == "postgresql://h/db"
    banner = capsys.readouterr().err
    assert "http://127.0.0.1:" in banner
    assert "open to any request (loopback only)" in banner


def test_extensions_can_be_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _serving(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "upstream-key")
    assert main(["serve", "--no-retro-routes", "--no-thread-listing"]) == 0
    assert main(["serve", "--no-retro-routes"]) == 0
    assert main(["serve"]) == 0
    off = [call["env"]["LANGCHAIN_RETRO_EXTENSIONS_OFF"] for call in calls]
    assert off == ["retro,thread-listing", "retro", ""]


def test_the_log_level_governs_the_access_lines_as_uvicorn_s_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _serving(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "upstream-key")
    assert main(["serve", "--log-level", "warning", "--db", "x.db"]) == 0
    assert main(["serve", "--db", "x.db"]) == 0
    levels = [call["env"]["LANGCHAIN_RETRO_LOG_LEVEL"] for call in calls]
    assert levels == ["warning", "info"]
    access = logging.getLogger("langchain_retro.server.access")
    before = logging.getLogger("langchain_retro.server").level
    try:
        for level, logged in (("warning", False), ("info", True)):
            monkeypatch.setenv("LANGCHAIN_RETRO_LOG_LEVEL", level)
            monkeypatch.setenv("LANGCHAIN_RETRO_DB", "x.db")
            app = app_from_env()
            app.state.retro.store.close()
            assert access.isEnabledFor(logging.INFO) is logged
    finally:
        logging.getLogger("langchain_retro.server").setLevel(before)


def test_without_a_key_only_loopback_is_served(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 2  # noqa: S104
    err = capsys.readouterr().err
    assert "refusing to serve 0.0.0.0 without an API key" in err
    assert "--api-key" in err
    assert check_host("127.0.0.1", keyed=False) is None
    assert check_host("::1", keyed=False) is None
    assert check_host("localhost", keyed=False) is None
    assert check_host("10.1.2.3", keyed=False) is not None
    assert check_host("0.0.0.0", keyed=True) is None  # noqa: S104


def test_serve_needs_an_upstream_key_and_one_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve"]) == 2
    assert "OPENAI_API_KEY is not set" in capsys.readouterr().err
    code = main(["serve", "--db", "x.db", "--postgres-url", "postgresql://h/db"])
    assert code == 2
    assert "--db or --postgres-url" in capsys.readouterr().err
    assert main(["serve", "--json"]) == 2
    assert "do not apply to serve" in capsys.readouterr().err


def test_keys_name_owners_and_are_never_echoed() -> None:
    keyring = Keyring.of(["team:sk-one", "team:sk-two", "sk-solo"])
    assert keyring.owner("Bearer sk-one") == keyring.owner("Bearer sk-two") == "team"
    solo = keyring.owner("Bearer sk-solo")
    assert solo is not None
    assert solo.startswith("key_")
    assert "sk-solo" not in solo
    for header in (None, "Bearer", "Basic sk-one", "Bearer sk-three"):
        with pytest.raises(AuthenticationError) as raised:
            keyring.owner(header)
        assert "sk-" not in str(raised.value)
    assert Keyring.of(None).owner(None) is None
    assert parse_key("sk:with:colons") == ("sk", "with:colons")
    with pytest.raises(ValueError, match="empty"):
        parse_key(" ")


def test_a_missing_fastapi_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from langchain_retro import MissingDependencyError\n"
        "try:\n"
        "    import langchain_retro.server\n"
        "except MissingDependencyError as exc:\n"
        "    print('missing:', exc)\n"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "missing:" in result.stdout
    assert "pip install 'langchain-retro[server]'" in result.stdout


def test_the_server_package_api_is_pinned() -> None:
    from langchain_retro import server  # noqa: PLC0415

    assert sorted(server.__all__) == ["ServedAssistant", "ServerSettings", "create_app"]
    for name in server.__all__:
        assert getattr(server, name).__module__.startswith("langchain_retro.server")


def test_the_server_extra_is_fastapi_and_uvicorn() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extra = project["project"]["optional-dependencies"]["server"]
    # uvicorn with its own speedups: the C HTTP parser and uvloop's event loop;
    # the openai SDK with its aiohttp transport.
    names = ["fastapi", "httptools", "openai", "uvicorn", "uvloop"]
    assert sorted(re.split(r"[<>=!~ ;\[]", spec)[0] for spec in extra) == names
    assert [spec for spec in extra if spec.startswith("openai[aiohttp]")]
    # The base install does not pull them in.
    base = project["project"]["dependencies"]
    names.remove("openai")
    assert not [spec for spec in base if spec.startswith((*names, "aiohttp"))]
    assert not [spec for spec in base if "aiohttp" in spec]  # nor openai[aiohttp]


async def test_a_worker_calls_its_model_through_aiohttp_and_closes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with FakeChatServer() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "upstream-key")
        monkeypatch.setenv("LANGCHAIN_RETRO_DB", str(tmp_path / "retro.db"))
        app = app_from_env()
        model = app.state.retro.runs.model
        http = model.http_async_client
        assert isinstance(http, openai.DefaultAioHttpClient)
        async with app.router.lifespan_context(app):
            reply = await model.ainvoke("hello")
        assert reply.content == "echo: hello"
        assert fake.requests[-1].last_user_text == "hello"
        assert http.is_closed  # the worker's shutdown closed it


def test_uvicorn_serves_with_its_speedups_installed() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise NotImplementedError

    # What `serve` leaves to uvicorn ("auto") picks the extra's parser and loop.
    config = uvicorn.Config(app)
    config.load()
    assert config.http_protocol_class.__module__.endswith("httptools_impl")
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
