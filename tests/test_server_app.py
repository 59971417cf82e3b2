"""``create_app`` in process: limits, shutdown, mounting, unknown routes, health."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _server import mounted, spec
from fastapi.testclient import TestClient

from langchain_retro import SQLiteStore
from langchain_retro.server import ServerSettings, create_app
from langchain_retro.testing import FakeChatServer


@pytest.fixture
def http(tmp_path: Path) -> Iterator[tuple[TestClient, FakeChatServer]]:
    with (
        FakeChatServer() as upstream,
        SQLiteStore(tmp_path / "app.db") as store,
    ):
        app = create_app(
            store=store,
            llm=upstream.chat_model(),
            settings=ServerSettings(max_runs=1, shutdown_grace=0.5),
        )
        with TestClient(app) as client:
            yield client, upstream


def test_a_worker_at_its_run_limit_answers_429(
    http: tuple[TestClient, FakeChatServer],
) -> None:
    client, upstream = http
    assistant = client.post("/v1/assistants", json={"model": "m"}).json()
    threads = [
        client.post(
            "/v1/threads", json={"messages": [{"role": "user", "content": "hi"}]}
        ).json()
        for _ in range(2)
    ]
    upstream.set_delay(1.0)
    first = client.post(
        f"/v1/threads/{threads[0]['id']}/runs", json={"assistant_id": assistant["id"]}
    )
    assert first.status_code == 200
    assert client.get("/healthz").json()["runs_in_flight"] == 1
    second = client.post(
        f"/v1/threads/{threads[1]['id']}/runs", json={"assistant_id": assistant["id"]}
    )
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(second.headers["retry-after-ms"]) > 0
    assert client.get(f"/v1/threads/{threads[1]['id']}/runs").json()["data"] == []
    deadline = time.monotonic() + 10
    while client.get("/healthz").json()["runs_in_flight"] and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    upstream.set_delay(0)
    third = client.post(
        f"/v1/threads/{threads[1]['id']}/runs", json={"assistant_id": assistant["id"]}
    )
    assert third.status_code == 200


def test_unknown_routes_and_bad_bodies_are_openai_errors(
    http: tuple[TestClient, FakeChatServer],
) -> None:
    client, _ = http
    missing = client.get("/v1/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (GET /v1/nowhere)"
    wrong_method = client.put("/v1/assistants")
    assert wrong_method.status_code == 404
    not_json = client.post(
        "/v1/assistants",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    health = client.get("/healthz").json()
    assert health["status"] == "ok"


def test_a_stopping_app_ends_the_runs_it_could_not_finish_cancelled(
    tmp_path: Path,
) -> None:
    with FakeChatServer() as upstream, SQLiteStore(tmp_path / "app.db") as store:
        app = create_app(
            store=store,
            llm=upstream.chat_model(),
            settings=ServerSettings(shutdown_grace=0.2),
        )
        upstream.set_delay(30)
        with TestClient(app) as client:
            assistant = client.post("/v1/assistants", json={"model": "m"}).json()
            thread = client.post(
                "/v1/threads", json={"messages": [{"role": "user", "content": "hi"}]}
            ).json()
            run = client.post(
                f"/v1/threads/{thread['id']}/runs",
                json={"assistant_id": assistant["id"]},
            ).json()
            assert run["status"] == "in_progress"
            started = time.monotonic()
        # The app's shutdown waited its grace, then stopped the run and said so.
        assert time.monotonic() - started < 5
        ended = store.get_run(thread["id"], run["id"])
        assert ended.status == "cancelled"
        assert ended.cancelled_at is not None
        assert store.get_lease(thread["id"]) is None


def test_mounted_in_another_app_keys_still_guard_it(tmp_path: Path) -> None:
    with FakeChatServer() as upstream, SQLiteStore(tmp_path / "app.db") as store:
        retro = create_app(
            store=store,
            llm=upstream.chat_model(),
            api_keys={"sk-ann": "team", "sk-bob": "team", "sk-eve": "eve"},
        )

        parent = mounted(retro, "/retro")
        with TestClient(parent, base_url="http://test/retro") as client:

            def auth(key: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {key}"}

            assert client.get("/v1/assistants").status_code == 401
            assert client.get("/v1/nowhere").status_code == 401
            assert client.get("/healthz").status_code == 200
            made = client.post(
                "/v1/assistants", json={"model": "m"}, headers=auth("sk-ann")
            ).json()
            # Keys of one owner share objects; another owner's key sees none.
            path = f"/v1/assistants/{made['id']}"
            assert client.get(path, headers=auth("sk-bob")).status_code == 200
            assert client.get(path, headers=auth("sk-eve")).status_code == 404


def test_every_operation_of_the_spec_is_served(
    http: tuple[TestClient, FakeChatServer],
) -> None:
    client, _ = http
    operations = [
        (method.upper(), "/v1" + re.sub(r"\{[^}]+\}", "nope", path))
        for path, item in spec()["paths"].items()
        for method in item
        if method in ("get", "post", "delete")
    ]
    assert len(operations) == 23
    for method, path in operations:
        body = {} if method == "POST" else None
        answer = client.request(method, path, json=body)
        # Routed: answered, or an unknown id (404) or a bad body (400), never an
        # unknown URL.
        assert answer.status_code in (200, 400, 404), (method, path, answer.text)
        assert "Invalid URL" not in answer.text, (method, path)
