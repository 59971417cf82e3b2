"""``langchain-retro serve``: what it refuses before serving, and a missing extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_retro.cli import main
from langchain_retro.server.auth import Keyring, parse_key
from langchain_retro.server.errors import AuthenticationError
from langchain_retro.server.serve import check_host

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("LANGCHAIN_RETRO_API_KEYS", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


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
