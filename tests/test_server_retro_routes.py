"""The ``/v1/retro`` routes in process: the server's limits, and what they refuse.

`AssistantsAPIStore` checks its own limits before sending; the server checks its
own too (OpenAI's unless ``serve --metadata-limits off``), whichever is tighter, so
a client that lifted its limits alone is refused with nothing written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from langchain_retro import OPENAI_LIMITS, UNLIMITED, MetadataLimits, SQLiteStore
from langchain_retro.server import create_app
from langchain_retro.server.routes.retro import LIMITS_STATE
from langchain_retro.server.serve import LIMITS_ENV, app_from_env
from langchain_retro.testing import FakeChatServer

LIFTED = UNLIMITED.model_dump()


def _client(tmp_path: Path, limits: MetadataLimits) -> Iterator[TestClient]:
    with (
        FakeChatServer() as upstream,
        SQLiteStore(tmp_path / "app.db") as store,
    ):
        app = create_app(
            store=store,
            llm=upstream.chat_model(),
            api_keys=["owner-a:key-a"],
            metadata_limits=limits,
        )
        with TestClient(app, headers={"Authorization": "Bearer key-a"}) as client:
            yield client


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    """The app with OpenAI's limits, its default."""
    yield from _client(tmp_path, OPENAI_LIMITS)


@pytest.fixture
def lifted(tmp_path: Path) -> Iterator[TestClient]:
    """The app with its limits lifted."""
    yield from _client(tmp_path, UNLIMITED)


def _thread(http: TestClient) -> str:
    answer = http.post("/v1/retro/threads", json={"metadatas": [{}]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["data"][0]["id"])


def test_the_servers_limits_hold_whatever_the_client_sends(http: TestClient) -> None:
    thread_id = _thread(http)
    body = {
        "messages": [{"role": "user", "content": "x", "metadata": {"k": "v" * 513}}],
        "limits": LIFTED,
    }
    answer = http.post(f"/v1/retro/threads/{thread_id}/messages", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["retro"]["class"] == "MetadataLimitError"
    assert error["retro"]["attributes"] == {"field": "k", "limit": 512, "size": 513}
    count = http.get(f"/v1/retro/threads/{thread_id}/messages:count").json()
    assert count == {"count": 0}


def test_lifted_limits_take_long_values(lifted: TestClient) -> None:
    thread_id = _thread(lifted)
    body = {
        "messages": [{"role": "user", "content": "x", "metadata": {"k": "v" * 513}}],
        "limits": LIFTED,
    }
    answer = lifted.post(f"/v1/retro/threads/{thread_id}/messages", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"][0]["metadata"] == {"k": "v" * 513}


def test_the_owner_entry_is_never_written_nor_shown(http: TestClient) -> None:
    answer = http.post(
        "/v1/retro/threads", json={"metadatas": [{"retro_owner": "owner-b"}]}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["retro"]["class"] == "MetadataError"
    thread_id = _thread(http)
    assert http.get(f"/v1/retro/threads/{thread_id}").json()["metadata"] == {}
    patch = {"patch": {"remove": ["retro_owner"]}}
    assert http.post(f"/v1/retro/threads/{thread_id}", json=patch).status_code == 400


def test_serve_lifts_the_limits_from_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGCHAIN_RETRO_DB", str(tmp_path / "served.db"))
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    monkeypatch.delenv("LANGCHAIN_RETRO_API_KEYS", raising=False)
    monkeypatch.delenv("LANGCHAIN_RETRO_POSTGRES_URL", raising=False)
    for value, expected in (("off", UNLIMITED), ("openai", OPENAI_LIMITS)):
        monkeypatch.setenv(LIMITS_ENV, value)
        app = app_from_env()
        with TestClient(app):
            assert getattr(app.state, LIMITS_STATE) == expected


def test_a_write_if_idle_is_scoped_to_its_owner(tmp_path: Path) -> None:
    with (
        FakeChatServer() as upstream,
        SQLiteStore(tmp_path / "app.db") as store,
        TestClient(
            create_app(
                store=store,
                llm=upstream.chat_model(),
                api_keys=["owner-a:key-a", "owner-b:key-b"],
            )
        ) as http,
    ):
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        made = http.post(
            "/v1/retro/threads", json={"metadatas": [{"k": "v"}]}, headers=a
        )
        thread_id = made.json()["data"][0]["id"]
        url = f"/v1/retro/threads/{thread_id}/messages"
        one = [{"role": "user", "content": "x"}]

        def sent(body: dict[str, object], headers: dict[str, str]) -> tuple[int, str]:
            answer = http.post(url, json={"messages": one, **body}, headers=headers)
            error = answer.json().get("error") or {"retro": {"class": ""}}
            return answer.status_code, error["retro"]["class"]

        # Another owner's thread is not found; the owner key cannot be scoped on.
        assert sent({"if_idle": True}, b) == (404, "ThreadNotFoundError")
        assert sent({"if_idle": True, "scope": {"k": "v"}}, b)[0] == 404
        owner = {"retro_owner": "owner-b"}
        assert sent({"if_idle": True, "scope": owner}, b) == (400, "MetadataError")
        assert sent({"if_idle": True, "scope": {"k": "w"}}, a)[0] == 404
        assert sent({"scope": {"k": "v"}}, a) == (400, "RetroValueError")
        assert store.count_messages(thread_id) == 0
        assert sent({"if_idle": True, "scope": {"k": "v"}}, a) == (200, "")
        assert store.count_messages(thread_id) == 1
