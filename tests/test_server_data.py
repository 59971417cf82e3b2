"""The data plane over HTTP: assistants, threads and messages through the openai SDK.

One ``langchain-retro serve`` process for the module (SQLite), the real openai SDK
(sync and async, strict), every response checked against the spec.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from _server import KEY_A, KEY_B, SDK_DEPRECATIONS, Served
from langchain_core.messages import AIMessage

from langchain_retro import (
    BaseThread,
    ChatCompletionThread,
    SQLiteStore,
    ThreadMessage,
    ThreadRunner,
)
from langchain_retro.testing import FakeChatServer

pytestmark = SDK_DEPRECATIONS


@pytest.fixture
def store(api: Served) -> Iterator[SQLiteStore]:
    """The server's database, opened by this process as a library user would."""
    with SQLiteStore(api.db) as opened:
        yield opened


def test_assistants_create_retrieve_modify_list_delete(client: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
            },
        },
    }
    made = client.beta.assistants.create(
        model="gpt-4o-mini",
        name="Weather",
        instructions="Be brief.",
        tools=[tool],  # type: ignore[list-item]
        temperature=0.3,
        metadata={"team": "support", "tier": "gold"},
    )
    assert made.id.startswith("asst_")
    assert made.tools[0].type == "function"
    assert made.metadata == {"team": "support", "tier": "gold"}
    read = client.beta.assistants.retrieve(made.id)
    assert read.model_dump() == made.model_dump()

    changed = client.beta.assistants.update(
        made.id, name="Weather 2", metadata={"team": "sales"}, top_p=0.5
    )
    assert (changed.name, changed.top_p, changed.temperature) == ("Weather 2", 0.5, 0.3)
    assert changed.metadata == {"team": "sales"}  # replaced, as OpenAI did
    assert changed.instructions == "Be brief."

    listed = [a.id for a in client.beta.assistants.list(limit=100)]
    assert made.id in listed
    gone = client.beta.assistants.delete(made.id)
    assert (gone.id, gone.deleted) == (made.id, True)
    with pytest.raises(openai.NotFoundError, match="No assistant found"):
        client.beta.assistants.retrieve(made.id)


async def test_threads_and_messages_async(api: Served) -> None:
    client = api.async_client(KEY_A)
    thread = await client.beta.threads.create(
        messages=[{"role": "user", "content": "Hello"}], metadata={"topic": "intro"}
    )
    assert thread.metadata == {"topic": "intro"}
    message = await client.beta.threads.messages.create(
        thread.id,
        role="user",
        content=[
            {"type": "text", "text": "Look:"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ],
        metadata={"k": "v"},
    )
    assert [part.type for part in message.content] == ["text", "image_url"]
    page = await client.beta.threads.messages.list(thread.id, order="asc")
    texts = [m.content[0].text.value for m in page.data]  # type: ignore[union-attr]
    assert texts == ["Hello", "Look:"]
    read = await client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    assert read.metadata == {"k": "v"}
    changed = await client.beta.threads.messages.update(
        message.id, thread_id=thread.id, metadata={"k2": "v2"}
    )
    assert changed.metadata == {"k2": "v2"}
    updated = await client.beta.threads.update(thread.id, metadata={"topic": "x"})
    assert updated.metadata == {"topic": "x"}
    assert (await client.beta.threads.retrieve(thread.id)).metadata == {"topic": "x"}
    removed = await client.beta.threads.messages.delete(message.id, thread_id=thread.id)
    assert removed.deleted is True
    assert len((await client.beta.threads.messages.list(thread.id)).data) == 1
    assert (await client.beta.threads.delete(thread.id)).deleted is True
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.retrieve(thread.id)
    await client.close()


def test_pagination_over_more_than_a_hundred_messages(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": f"m{i}"} for i in range(105)]
    )
    first = client.beta.threads.messages.list(thread.id, limit=100)
    assert len(first.data) == 100
    assert first.has_more is True
    assert first.data[0].content[0].text.value == "m104"  # type: ignore[union-attr]
    everything = [
        m.content[0].text.value  # type: ignore[union-attr]
        for m in client.beta.threads.messages.list(thread.id, limit=100)
    ]
    assert everything == [f"m{i}" for i in reversed(range(105))]
    ascending = client.beta.threads.messages.list(thread.id, order="asc", limit=7)
    assert [m.content[0].text.value for m in ascending.data] == [  # type: ignore[union-attr]
        f"m{i}" for i in range(7)
    ]
    # ``before`` is the page nearest the cursor on the other side.
    before = client.beta.threads.messages.list(
        thread.id, order="asc", limit=3, before=ascending.data[5].id
    )
    assert [m.content[0].text.value for m in before.data] == ["m2", "m3", "m4"]  # type: ignore[union-attr]
    assert client.beta.threads.messages.list(thread.id, limit=20).has_more is True


def test_assistants_pages_both_ways(client: openai.OpenAI) -> None:
    made = [
        client.beta.assistants.create(model="m", metadata={"batch": "pages"}).id
        for _ in range(5)
    ]
    newest_first = [a.id for a in client.beta.assistants.list(limit=100).data]
    ours = [i for i in newest_first if i in made]
    assert ours == list(reversed(made))
    page = client.beta.assistants.list(limit=2, after=ours[0])
    assert [a.id for a in page.data] == ours[1:3]
    back = client.beta.assistants.list(limit=2, before=ours[3])
    assert [a.id for a in back.data] == ours[1:3]


def test_thread_listing_filters_and_pages(api: Served, client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="m")
    ids = [
        client.beta.threads.create(metadata={"region": "eu", "n": str(i)}).id
        for i in range(4)
    ]
    client.beta.threads.create(metadata={"region": "us"})
    run_thread = client.beta.threads.create_and_run(
        assistant_id=assistant.id, thread={"metadata": {"region": "eu"}}
    ).thread_id
    with api.http(KEY_A) as http:
        page = http.get("/v1/threads", params={"metadata[region]": "eu", "limit": 3})
        assert page.status_code == 200, page.text
        body = page.json()
        assert [t["id"] for t in body["data"]] == [run_thread, ids[3], ids[2]]
        assert body["has_more"] is True
        rest = http.get(
            "/v1/threads",
            params={"metadata[region]": "eu", "after": body["last_id"]},
        ).json()
        assert [t["id"] for t in rest["data"]] == [ids[1], ids[0]]
        mine = http.get("/v1/threads", params={"assistant_id": assistant.id}).json()
        assert [t["id"] for t in mine["data"]] == [run_thread]
        for problem in api.problems:
            raise AssertionError(problem)
        bad = http.get("/v1/threads", params={"metadata[retro_owner]": "alpha"})
        assert bad.status_code == 400


def _snapshot(client: openai.OpenAI, thread_id: str) -> dict[str, Any]:
    return {
        "assistants": [a.model_dump() for a in client.beta.assistants.list(limit=100)],
        "thread": client.beta.threads.retrieve(thread_id).model_dump(),
        "messages": [
            m.model_dump() for m in client.beta.threads.messages.list(thread_id)
        ],
    }


LONG_KEY = "k" * 65


@pytest.mark.parametrize(
    ("call", "status", "param"),
    [
        ("metadata_17_keys", 400, "metadata"),
        ("metadata_long_key", 400, "metadata"),
        ("metadata_long_value", 400, "metadata"),
        ("message_metadata_17_keys", 400, "metadata"),
        ("thread_message_long_value", 400, "messages[0].metadata"),
        ("file_search_tool", 400, "tools[0]"),
        ("code_interpreter_tool", 400, "tools[0]"),
        ("tool_resources", 400, "tool_resources.file_search"),
        ("attachments", 400, "attachments"),
        ("image_file", 400, ".content[0]"),
        ("unknown_field", 400, "colour"),
        ("missing_model", 400, "model"),
        ("limit_zero", 400, "limit"),
        ("limit_101", 400, "limit"),
        ("bad_order", 400, "order"),
        ("unknown_thread", 404, None),
        ("unknown_message", 404, None),
        ("reserved_key", 400, "metadata"),
    ],
)
def test_errors_change_nothing(
    api: Served, client: openai.OpenAI, call: str, status: int, param: str | None
) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    before = _snapshot(client, thread.id)
    many = {f"k{i}": "v" for i in range(17)}
    requests: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "metadata_17_keys": (
            "POST",
            "/v1/assistants",
            {"model": "m", "metadata": many},
        ),
        "metadata_long_key": (
            "POST",
            f"/v1/threads/{thread.id}",
            {"metadata": {LONG_KEY: "v"}},
        ),
        "metadata_long_value": (
            "POST",
            "/v1/assistants",
            {"model": "m", "metadata": {"k": "v" * 513}},
        ),
        "message_metadata_17_keys": (
            "POST",
            f"/v1/threads/{thread.id}/messages",
            {"role": "user", "content": "hi", "metadata": many},
        ),
        "thread_message_long_value": (
            "POST",
            "/v1/threads",
            {
                "messages": [
                    {"role": "user", "content": "a", "metadata": {"k": "v" * 513}}
                ]
            },
        ),
        "file_search_tool": (
            "POST",
            "/v1/assistants",
            {"model": "m", "tools": [{"type": "file_search"}]},
        ),
        "code_interpreter_tool": (
            "POST",
            "/v1/assistants",
            {"model": "m", "tools": [{"type": "code_interpreter"}]},
        ),
        "tool_resources": (
            "POST",
            "/v1/threads",
            {"tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}}},
        ),
        "attachments": (
            "POST",
            f"/v1/threads/{thread.id}/messages",
            {
                "role": "user",
                "content": "see file",
                "attachments": [{"file_id": "file_1", "tools": []}],
            },
        ),
        "image_file": (
            "POST",
            f"/v1/threads/{thread.id}/messages",
            {
                "role": "user",
                "content": [{"type": "image_file", "image_file": {"file_id": "f"}}],
            },
        ),
        "unknown_field": ("POST", "/v1/assistants", {"model": "m", "colour": "red"}),
        "missing_model": ("POST", "/v1/assistants", {"name": "x"}),
        "limit_zero": ("GET", "/v1/assistants?limit=0", None),
        "limit_101": ("GET", f"/v1/threads/{thread.id}/messages?limit=101", None),
        "bad_order": ("GET", "/v1/assistants?order=sideways", None),
        "unknown_thread": ("GET", "/v1/threads/thread_nope", None),
        "unknown_message": ("GET", f"/v1/threads/{thread.id}/messages/msg_nope", None),
        "reserved_key": (
            "POST",
            "/v1/assistants",
            {"model": "m", "metadata": {"retro_owner": "bravo"}},
        ),
    }
    method, path, body = requests[call]
    with api.http(KEY_A) as http:
        response = http.request(method, path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] is not None
        assert error["param"].endswith(param)
    assert error["message"]
    assert _snapshot(client, thread.id) == before


def test_keys_are_required_and_never_echoed(api: Served) -> None:
    with api.http(None) as http:
        missing = http.get("/v1/assistants")
    with api.http("sk-wrong-key") as http:
        wrong = http.get("/v1/assistants")
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert "sk-wrong-key" not in wrong.text
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        api.client("sk-wrong-key").beta.assistants.list()
    with api.http(None) as http:
        assert http.get("/healthz").json()["status"] == "ok"


def test_two_keys_cannot_see_each_other(api: Served) -> None:
    alpha, bravo = api.client(KEY_A), api.client(KEY_B)
    assistant = alpha.beta.assistants.create(model="m", name="alpha's")
    thread = alpha.beta.threads.create(messages=[{"role": "user", "content": "secret"}])
    with pytest.raises(openai.NotFoundError):
        bravo.beta.assistants.retrieve(assistant.id)
    with pytest.raises(openai.NotFoundError):
        bravo.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.NotFoundError):
        bravo.beta.threads.messages.list(thread.id)
    with pytest.raises(openai.NotFoundError):
        bravo.beta.threads.messages.create(thread.id, role="user", content="hi")
    with pytest.raises(openai.NotFoundError):
        bravo.beta.assistants.delete(assistant.id)
    with pytest.raises(openai.NotFoundError):
        bravo.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    assert assistant.id not in [a.id for a in bravo.beta.assistants.list(limit=100)]
    with api.http(KEY_B) as http:
        listed = http.get("/v1/threads", params={"limit": 100}).json()["data"]
    assert thread.id not in [t["id"] for t in listed]
    # Nothing of bravo's attempts reached alpha's thread.
    assert len(alpha.beta.threads.messages.list(thread.id).data) == 1
    assert alpha.beta.assistants.retrieve(assistant.id).name == "alpha's"


class SupportThread(BaseThread):
    """A typed thread made in Python."""

    customer_id: str
    priority: int = 0


def test_a_typed_python_thread_is_listed_and_read_over_http(
    api: Served, client: openai.OpenAI, store: SQLiteStore
) -> None:
    thread = SupportThread.create(
        store,
        customer_id="c-42",
        priority=2,
        metadata={"retro_owner": "alpha", "channel": "email"},
    )
    ThreadMessage.create(
        store, thread_id=thread.id, message=AIMessage("How can I help?")
    )
    read = client.beta.threads.retrieve(thread.id)
    assert read.metadata == {"channel": "email", "customer_id": "c-42", "priority": "2"}
    messages = client.beta.threads.messages.list(thread.id).data
    assert [m.role for m in messages] == ["assistant"]
    with api.http(KEY_A) as http:
        found = http.get(
            "/v1/threads", params={"metadata[customer_id]": "c-42"}
        ).json()["data"]
    assert [t["id"] for t in found] == [thread.id]


def test_an_http_thread_is_a_chat_completion_thread_a_runner_runs(
    client: openai.OpenAI, store: SQLiteStore, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="fake-model", instructions="Hi.")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Hello from HTTP"}]
    )
    record = ChatCompletionThread.retrieve(store, thread.id)
    record.update(store, assistant_id=assistant.id)
    runner = ThreadRunner(store=store, llm=fake.chat_model())
    reply = runner.invoke(None, {"configurable": {"thread_id": thread.id}})
    assert reply.content == "echo: Hello from HTTP"
    messages = client.beta.threads.messages.list(thread.id).data
    assert messages[0].id == reply.id
    assert messages[0].role == "assistant"
    assert messages[0].assistant_id == assistant.id
    assert messages[0].run_id is not None


def test_access_log_names_requests_but_never_keys(api: Served) -> None:
    api.client(KEY_A).beta.assistants.list()
    api.client("sk-not-a-key-at-all").with_options(max_retries=0)
    with api.http("sk-not-a-key-at-all") as http:
        http.get("/v1/assistants")
    log = Path(api.log).read_text()
    assert "GET /v1/assistants 200" in log
    assert "GET /v1/assistants 401" in log
    for secret in (KEY_A, KEY_B, "sk-not-a-key-at-all", "upstream-key"):
        assert secret not in log


def test_messages_written_at_once_to_one_thread_all_go_in(api: Served) -> None:
    client = api.client(KEY_A)
    thread = client.beta.threads.create()

    def add(index: int) -> str:
        return client.beta.threads.messages.create(
            thread.id, role="user", content=f"m{index}"
        ).id

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(add, range(24)))
    listed = client.beta.threads.messages.list(thread.id, limit=100).data
    assert sorted(m.id for m in listed) == sorted(made)


def test_files_and_vector_stores_are_refused_by_name(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="keeps no files"):
        client.files.list()
    with pytest.raises(openai.BadRequestError, match="keeps no files"):
        client.files.retrieve("file-abc")
    with pytest.raises(openai.BadRequestError, match="keeps no vector stores"):
        client.vector_stores.create(name="docs")
    with pytest.raises(openai.BadRequestError, match="keeps no vector stores"):
        client.vector_stores.files.list("vs_1")
