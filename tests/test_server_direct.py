"""Direct routes: the busiest endpoints, served without FastAPI's request machinery.

They must answer exactly as FastAPI's routes would: the same validation errors,
nothing stored on a refusal, the same 404 for a method they do not serve, the same
500 for an unexpected error, and the same keys and owners, mounted or not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from _server import mounted
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from langchain_retro import SQLiteStore
from langchain_retro.server import create_app
from langchain_retro.server.direct import DirectRouter
from langchain_retro.stores.base import NewMessage, StoredMessage
from langchain_retro.testing import FakeChatServer

KEYS = {"sk-ann": "ann", "sk-eve": "eve"}
ANN = {"Authorization": "Bearer sk-ann"}
EVE = {"Authorization": "Bearer sk-eve"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with (
        FakeChatServer() as upstream,
        SQLiteStore(tmp_path / "app.db") as store,
    ):
        app = create_app(store=store, llm=upstream.chat_model(), api_keys=KEYS)
        with TestClient(app) as http:
            yield http


def _messages(client: TestClient, thread_id: str) -> list[str]:
    listed = client.get(f"/v1/threads/{thread_id}/messages", headers=ANN).json()
    return [m["content"][0]["text"]["value"] for m in listed["data"]]


@pytest.mark.parametrize(
    ("body", "status", "message", "param"),
    [
        (
            b'{"role": "robot", "content": "x"}',
            400,
            "Invalid value for 'role': Input should be 'user' or 'assistant'.",
            "role",
        ),
        (
            b'{"role": "user", "content": "x", "colour": "red"}',
            400,
            "Unrecognized request argument supplied: colour",
            "colour",
        ),
        (b'{"content": "x"}', 400, "Missing required parameter: 'role'.", "role"),
        (
            b"{not json",
            400,
            "We could not parse the JSON body of your request. The body must be a "
            "JSON object.",
            None,
        ),
        (
            b'["a", "list"]',
            400,
            "We could not parse the JSON body of your request. The body must be a "
            "JSON object.",
            None,
        ),
    ],
)
def test_a_direct_route_refuses_a_bad_body_as_fastapi_does_with_nothing_stored(
    client: TestClient, body: bytes, status: int, message: str, param: str | None
) -> None:
    thread = client.post("/v1/threads", json={}, headers=ANN).json()
    answer = client.post(
        f"/v1/threads/{thread['id']}/messages",
        content=body,
        headers={**ANN, "content-type": "application/json"},
    )
    assert answer.status_code == status
    assert answer.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        }
    }
    assert _messages(client, thread["id"]) == []


def test_a_direct_route_keeps_owners_and_leaves_other_methods_to_fastapi(
    client: TestClient,
) -> None:
    thread = client.post("/v1/threads", json={}, headers=ANN).json()
    path = f"/v1/threads/{thread['id']}/messages"
    hello = {"role": "user", "content": "hello"}
    assert client.post(path, json=hello).status_code == 401
    hidden = client.post(path, json=hello, headers=EVE)
    assert hidden.status_code == 404
    assert (
        hidden.json()["error"]["message"]
        == f"No thread found with id '{thread['id']}'."
    )
    made = client.post(path, json=hello, headers=ANN)
    assert made.status_code == 200
    assert made.json()["thread_id"] == thread["id"]
    assert _messages(client, thread["id"]) == ["hello"]
    # A method no route serves is FastAPI's answer: OpenAI's 404 for the URL.
    wrong = client.put(path, json=hello, headers=ANN)
    assert wrong.status_code == 404
    assert wrong.json()["error"]["message"] == f"Invalid URL (PUT {path})"


class _FailingStore(SQLiteStore):
    """A store whose message writes fail as a broken disk would."""

    async def aadd_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        *,
        scope: Mapping[str, str] | None = None,
    ) -> list[StoredMessage]:
        raise RuntimeError("the disk is on fire")


def test_an_unexpected_error_in_a_direct_route_is_a_logged_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        FakeChatServer() as upstream,
        _FailingStore(tmp_path / "app.db") as store,
        TestClient(create_app(store=store, llm=upstream.chat_model())) as client,
        caplog.at_level(logging.ERROR, logger="langchain_retro.server"),
    ):
        thread = client.post("/v1/threads", json={}).json()
        answer = client.post(
            f"/v1/threads/{thread['id']}/messages",
            json={"role": "user", "content": "hi"},
        )
    assert answer.status_code == 500
    assert answer.json()["error"]["type"] == "server_error"
    assert "the disk is on fire" not in answer.text  # the cause stays in the log
    (record,) = [r for r in caplog.records if r.exc_info]
    assert "the disk is on fire" in str(record.exc_info[1])  # type: ignore[index]


def test_direct_routes_answer_under_a_mount(tmp_path: Path) -> None:
    with FakeChatServer() as upstream, SQLiteStore(tmp_path / "app.db") as store:
        retro = create_app(store=store, llm=upstream.chat_model(), api_keys=KEYS)

        parent = mounted(retro, "/retro")
        with TestClient(parent, base_url="http://test/retro") as client:
            assistant = client.post(
                "/v1/assistants", json={"model": "m"}, headers=ANN
            ).json()
            thread = client.post("/v1/threads", json={}, headers=ANN).json()
            path = f"/v1/threads/{thread['id']}/messages"
            made = client.post(
                path, json={"role": "user", "content": "hi"}, headers=ANN
            )
            assert made.status_code == 200
            run = client.post(
                f"/v1/threads/{thread['id']}/runs",
                json={"assistant_id": assistant["id"]},
                headers=ANN,
            ).json()
            read = client.get(
                f"/v1/threads/{thread['id']}/runs/{run['id']}", headers=ANN
            )
            assert read.status_code == 200
            assert read.json()["id"] == run["id"]
            assert (
                client.get(path, headers=ANN).json()["data"][-1]["id"]
                == made.json()["id"]
            )


def test_a_direct_route_binds_only_what_it_can_name() -> None:
    router = DirectRouter()

    async def endpoint(thread_id: str, limit: int) -> JSONResponse:
        return JSONResponse({})

    with pytest.raises(TypeError, match=r"endpoint: cannot bind parameter 'limit'"):
        router.post("/v1/threads/{thread_id}/things")(endpoint)
    assert router.routes == []
