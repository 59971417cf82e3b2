"""Fixtures of the server tests (``tests/test_server_*.py``), written once.

Registered by ``conftest.py`` as a plugin; only the server tests ask for them, and
this module imports the server helpers (`_server`) only when one is used.

* ``fake_upstream``: one `FakeChatServer` per module, the upstream model;
* ``fake``: the same server, its replies, delays and recorded requests reset
  before and after each test;
* ``api``: one ``langchain-retro serve`` per module (SQLite, in a temporary
  directory); a test that uses it fails if any response it saw broke the spec;
* ``client``: a strict sync openai client of ``api`` with the first key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from langchain_retro.testing import FakeChatServer

if TYPE_CHECKING:
    import openai
    from _server import Served


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeChatServer]:
    """The upstream model of a module's servers."""
    with FakeChatServer() as upstream:
        yield upstream


@pytest.fixture
def fake(fake_upstream: FakeChatServer) -> Iterator[FakeChatServer]:
    """The module's upstream model, reset around the test."""
    fake_upstream.reset()
    yield fake_upstream
    fake_upstream.reset()


@pytest.fixture(scope="module")
def served_module(
    fake_upstream: FakeChatServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Served]:
    """The module's ``langchain-retro serve`` on a SQLite file."""
    from _server import served  # noqa: PLC0415

    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    with served(fake_upstream, folder) as server:
        yield server


@pytest.fixture
def api(served_module: Served, fake: FakeChatServer) -> Iterator[Served]:
    """The module's server; the test fails if a response broke the spec."""
    yield served_module
    assert served_module.checked() == []


@pytest.fixture
def client(api: Served) -> openai.OpenAI:
    """A strict sync openai client of `api`, with the first key."""
    from _server import KEY_A  # noqa: PLC0415

    return api.client(KEY_A)
