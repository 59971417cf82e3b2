"""`AssistantsAPIStore(protocol="assistants")`: the store on the Assistants API alone.

The contract suite runs over this mode too (``plain`` and ``plain-postgres``);
here is what only it has: choosing the protocol, keys escaped beside the server's,
limits checked before any request, SDK errors mapped onto the tree, the local
index of threads and the crash windows between its writes and the server's, what
does not hold across processes, and runs completed on the client at a constant
number of requests per windowed turn.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_retro import (
    OPENAI_LIMITS,
    UNLIMITED,
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    MessageIdConflictError,
    MetadataLimitError,
    RetroValueError,
    SQLiteStore,
    StoreError,
    ThreadBusyError,
    ThreadNotFoundError,
    ThreadRunner,
)
from langchain_retro._messages import role_of, to_payload
from langchain_retro._metadata import MetadataPatch
from langchain_retro.server.routes._busy import message_refused
from langchain_retro.stores._assistants_plain import (
    PlainAssistantsAPIStore,
    _plain_error,
)
from langchain_retro.stores._plain_index import STATE
from langchain_retro.stores._plain_ops import Http
from langchain_retro.stores.assistants_api import AssistantsAPIStore
from langchain_retro.stores.base import BaseStore, NewMessage, ThreadQuery

if TYPE_CHECKING:
    from _helpers import Caller as Call

    from langchain_retro.testing import FakeChatServer

pytest_plugins = ["_helpers", "_wire_store"]

pytestmark = pytest.mark.filterwarnings(
    "ignore:The Assistants API is deprecated:DeprecationWarning"
)


@pytest.fixture(params=["plain"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """`AssistantsAPIStore(protocol="assistants")` on a server without /v1/retro."""
    return str(request.param)


def _postgres_unused() -> str:  # pragma: no cover - these servers serve SQLite
    raise AssertionError("no PostgreSQL server here")


def _url(kind: str) -> str:
    from _wire_store import served  # noqa: PLC0415

    return served(kind, _postgres_unused)


def _key() -> str:
    from _wire_store import KEY  # noqa: PLC0415

    return KEY


def _new(message: Any, **kwargs: Any) -> NewMessage:
    return NewMessage(role=role_of(message), payload=to_payload(message), **kwargs)


def _raw(kind: str = "plain") -> openai.OpenAI:
    return openai.OpenAI(base_url=_url(kind), api_key=_key(), max_retries=0)


# --- choosing the protocol -----------------------------------------------------------


def test_auto_probes_each_server_once() -> None:
    plain = AssistantsAPIStore.from_url(_url("plain"), api_key=_key(), protocol="auto")
    retro = AssistantsAPIStore.from_url(_url("wire"), api_key=_key(), protocol="auto")
    with plain, retro:
        assert isinstance(plain, PlainAssistantsAPIStore)
        assert type(retro) is AssistantsAPIStore
        assert repr(plain).endswith("protocol='assistants')")
    with pytest.raises(RetroValueError, match="protocol must be one of"):
        AssistantsAPIStore.from_url(_url("plain"), api_key=_key(), protocol="soap")  # type: ignore[arg-type]
    with pytest.raises(RetroValueError, match="protocol='assistants'"):
        AssistantsAPIStore.from_url(
            _url("wire"), api_key=_key(), index=SQLiteStore(":memory:")
        )


def test_auto_with_a_refused_key_says_so() -> None:
    url = _url("plain").replace("127.0.0.1", "localhost")  # not probed yet
    with pytest.raises(StoreError, match="refused the API key"):
        AssistantsAPIStore.from_url(url, api_key="wrong", protocol="auto")


# --- the wire form --------------------------------------------------------------------


async def test_keys_are_escaped_and_the_servers_own_are_kept(
    store: BaseStore, call: Call
) -> None:
    bot = await call(store, "create_assistant", {"model": "m"}, {})
    thread = await call(store, "create_thread", {"assistant_id": bot.id, "k": "v"})
    with _raw() as raw:
        seen = raw.beta.threads.retrieve(thread.id).metadata
        assert seen == {"~assistant_id": bot.id, "~k": "v"}
        # Another tool writes a key of its own; the store neither shows nor drops it.
        raw.beta.threads.update(thread.id, metadata={**seen, "theirs": "x"})
        assert (await call(store, "get_thread", thread.id)).metadata == {
            "assistant_id": bot.id,
            "k": "v",
        }
        await call(store, "update_thread", thread.id, MetadataPatch(set={"k": "w"}))
        assert raw.beta.threads.retrieve(thread.id).metadata == {
            "~assistant_id": bot.id,
            "~k": "w",
            "theirs": "x",
        }


async def test_messages_are_plain_text_with_their_extras_in_metadata(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {})
    call_ = {"name": "add", "args": {"a": 1}, "id": "c1"}
    sent = [
        _new(HumanMessage("1+1?"), metadata={"source": "app"}, id="mine-1"),
        _new(AIMessage("", tool_calls=[call_])),
        _new(ToolMessage("2", tool_call_id="c1")),
        _new(AIMessage("2"), run_id="run_1", assistant_id="asst_1"),
    ]
    rows = await call(store, "add_messages", thread.id, sent)
    assert rows[0].id == "mine-1"
    with _raw() as raw:
        listed = raw.beta.threads.messages.list(thread.id, order="asc").data
    assert [(m.role, m.content[0].text.value) for m in listed] == [  # type: ignore[union-attr]
        ("user", "1+1?"),
        ("assistant", ""),
        ("user", "2"),
        ("assistant", "2"),
    ]
    assert listed[0].metadata is not None
    assert listed[0].metadata["~source"] == "app"
    read = await call(store, "list_messages", thread.id)
    assert [(r.id, r.role, r.payload) for r in read] == [
        (rows[0].id, "user", sent[0].payload),
        (rows[1].id, "assistant", sent[1].payload),
        (rows[2].id, "tool", sent[2].payload),
        (rows[3].id, "assistant", sent[3].payload),
    ]
    assert (read[3].run_id, read[3].assistant_id) == ("run_1", "asst_1")
    assert (await call(store, "get_message", thread.id, "mine-1")).metadata == {
        "source": "app"
    }


async def test_a_caller_id_deleted_elsewhere_can_be_given_again(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {})
    (row,) = await call(
        store, "add_messages", thread.id, [_new(HumanMessage("a"), id="x")]
    )
    with pytest.raises(MessageIdConflictError):
        await call(store, "add_messages", thread.id, [_new(HumanMessage("b"), id="x")])
    with _raw() as raw:  # another tool deletes it, by the server's id
        (listed,) = raw.beta.threads.messages.list(thread.id).data
        raw.beta.threads.messages.delete(listed.id, thread_id=thread.id)
    again = await call(
        store, "add_messages", thread.id, [_new(HumanMessage("c"), id="x")]
    )
    assert [m.id for m in again] == [row.id]
    assert (await call(store, "get_message", thread.id, "x")).payload == again[
        0
    ].payload


def test_limits_raise_before_any_request() -> None:
    # Nothing listens on port 9: a request would raise StoreError, not these.
    store = AssistantsAPIStore.from_url(
        "http://127.0.0.1:9/v1", api_key="k", max_retries=0, protocol="assistants"
    )
    with store:
        # One character of each key goes to the escape: 63 of the wire's 64.
        assert store.limits == OPENAI_LIMITS.model_copy(update={"max_key_length": 63})
        with pytest.raises(MetadataLimitError) as caught:
            store.create_thread({"k" * 64: "v"})
        assert (caught.value.field, caught.value.limit, caught.value.size) == (
            "k" * 64,
            63,
            64,
        )
        big = AIMessage("x", additional_kwargs={"blob": "y" * 9000})
        with pytest.raises(MetadataLimitError, match="Nothing was written") as too:
            store.add_messages("thread_x", [_new(HumanMessage("a")), _new(big)])
        assert too.value.field == "message"
        with pytest.raises(StoreError, match="Could not reach the server"):
            store.get_thread("thread_x")


_REQUEST = httpx2.Request("POST", "http://server.test/v1/threads/t/messages")


def _status(status: int, message: str, **body: Any) -> openai.APIStatusError:
    response = httpx2.Response(status, request=_REQUEST)
    cls = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        404: openai.NotFoundError,
        405: openai.APIStatusError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError)
    return cls(message, response=response, body={"message": message, **body})


@pytest.mark.parametrize(
    ("exc", "error", "match"),
    [
        (_status(404, "No thread"), ThreadNotFoundError, "thread_t"),
        (_status(405, "Method Not Allowed"), ThreadNotFoundError, "thread_t"),
        (
            _status(400, str(message_refused("thread_t", "run_r"))),
            ThreadBusyError,
            "while a run run_r is active",
        ),
        (_status(400, "bad", code="thread_busy"), ThreadBusyError, "bad"),
        (_status(400, "Invalid 'metadata'"), RetroValueError, "Invalid 'metadata'"),
        (_status(401, "no key"), StoreError, "refused the API key"),
        (_status(429, "slow down"), StoreError, r"at its limit \(429\)"),
        (_status(503, "down"), StoreError, r"failed \(503\)"),
        (openai.APITimeoutError(request=_REQUEST), StoreError, "in time"),
        (
            openai.APIConnectionError(request=_REQUEST),
            StoreError,
            "Could not reach",
        ),
    ],
    ids=[
        "404",
        "405",
        "busy",
        "busy-code",
        "400",
        "401",
        "429",
        "5xx",
        "timeout",
        "conn",
    ],
)
def test_sdk_errors_map_onto_the_tree(
    exc: openai.OpenAIError, error: type[Exception], match: str
) -> None:
    call = Http(
        "post",
        "/threads/thread_t/messages",
        missing=lambda: ThreadNotFoundError("thread_t"),
        thread_id="thread_t",
    )
    mapped = _plain_error(exc, call)
    assert type(mapped) is error
    assert re.search(match, str(mapped))
    if isinstance(mapped, ThreadBusyError):
        assert mapped.thread_id == "thread_t"


async def test_errors_from_the_server_are_ours(store: BaseStore, call: Call) -> None:
    with pytest.raises(ThreadNotFoundError):
        await call(store, "get_thread", "thread_nope")
    refused = AssistantsAPIStore.from_url(
        _url("plain"), api_key="wrong", max_retries=0, protocol="assistants"
    )
    with pytest.raises(StoreError, match="refused the API key") as caught:
        await call(refused, "create_thread", {})
    assert isinstance(caught.value.__cause__, openai.AuthenticationError)
    await refused.aclose()


# --- a retried POST is carried out once --------------------------------------------


def test_a_repeated_key_is_answered_once() -> None:
    url = _url("plain")
    headers = {"Authorization": f"Bearer {_key()}", "Idempotency-Key": "k-1"}
    body = {"metadata": {"n": "1"}}
    with httpx2.Client(base_url=url, headers=headers) as http:
        first = http.post("/threads", json=body)
        again = http.post("/threads", json=body)
        assert first.status_code == again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        other = http.post("/threads", json={"metadata": {"n": "2"}})
        assert other.status_code == 400
        assert "Idempotency-Key" in other.json()["error"]["message"]
        # Without the header, every POST is its own.
        plain = {"Idempotency-Key": ""}
        one = http.post("/threads", json=body, headers=plain).json()["id"]
        two = http.post("/threads", json=body, headers=plain).json()["id"]
        assert one != two
        for thread_id in (first.json()["id"], one, two):
            http.delete(f"/threads/{thread_id}")


class _LosesFirstAnswer(httpx2.HTTPTransport):
    """The network: the first answer to a POST of messages never arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        if (
            request.method == "POST"
            and "messages" in request.url.path
            and not self.lost
        ):
            self.lost += 1
            response.read()
            response.close()
            raise httpx2.ReadTimeout("answer lost", request=request)
        return response


@pytest.mark.parametrize("protocol", ["assistants", "retro"])
def test_a_write_retried_by_the_sdk_is_written_once(
    protocol: str, store: BaseStore
) -> None:
    network = _LosesFirstAnswer()
    http = httpx2.Client(transport=network)
    client = openai.OpenAI(
        base_url=_url("plain" if protocol == "assistants" else "wire"),
        api_key=_key(),
        http_client=http,
        max_retries=2,
    )
    retried = AssistantsAPIStore(client=client, protocol=protocol)  # type: ignore[arg-type]
    thread = retried.create_thread({})
    (row,) = retried.add_messages(thread.id, [_new(HumanMessage("once"))])
    assert network.lost == 1
    assert [m.id for m in retried.list_messages(thread.id)] == [row.id]
    retried.delete_thread(thread.id)
    retried.close()
    client.close()


# --- what does not hold on the plain wire, shown -------------------------------------


async def test_a_batch_is_written_one_message_at_a_time(
    store_factory: Callable[..., BaseStore], call: Call
) -> None:
    # Limits lifted on this side only: the server refuses the second message,
    # after the first was written. (With the wire's limits, the check runs first.)
    lifted = store_factory(limits=UNLIMITED)
    thread = await call(lifted, "create_thread", {})
    batch = [
        _new(HumanMessage("first")),
        _new(HumanMessage("x"), metadata={"n": "9" * 600}),
    ]
    with pytest.raises(RetroValueError, match="refused"):
        await call(lifted, "add_messages", thread.id, batch)
    assert [m.payload for m in await call(lifted, "list_messages", thread.id)] == [
        batch[0].payload
    ]


_LEASE_IN_ANOTHER_PROCESS = """
import sys
from langchain_retro import AssistantsAPIStore
store = AssistantsAPIStore.from_url(
    sys.argv[1], api_key=sys.argv[2], protocol="assistants"
)
print(store.acquire_lease(sys.argv[3], "other-process", 30.0))
"""


def test_a_lease_holds_within_a_process_not_across(
    store_factory: Callable[..., BaseStore],
) -> None:
    one, two = store_factory(), store_factory()
    thread = one.create_thread({})
    assert one.acquire_lease(thread.id, "a", 30.0)
    assert not two.acquire_lease(thread.id, "b", 30.0)
    lease = two.get_lease(thread.id)
    assert lease is not None
    assert lease.owner == "a"
    done = subprocess.run(  # noqa: S603 - this interpreter, our own snippet
        [
            sys.executable,
            "-c",
            _LEASE_IN_ANOTHER_PROCESS,
            _url("plain"),
            _key(),
            thread.id,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "True"


_WITH_THE_INDEX = """
import sys
from langchain_retro import AssistantsAPIStore, SQLiteStore
url, key, index, thread_id = sys.argv[1:5]
store = AssistantsAPIStore.from_url(
    url, api_key=key, protocol="assistants", index=SQLiteStore(index)
)
print(store.acquire_lease(thread_id, "other-process", 30.0))
print(",".join(run.status for run in store.list_runs(thread_id)))
print(store.get_thread_usage(thread_id).total_tokens)
"""


def test_with_an_index_runs_and_leases_are_shared_across_processes(
    store_factory: Callable[..., BaseStore], server: FakeChatServer, tmp_path: Path
) -> None:
    path = tmp_path / "index.db"
    index = SQLiteStore(path)
    store = store_factory(index=index)
    bot = Assistant.create(store, model="fake-model")
    thread = ChatCompletionThread.create(store, assistant_id=bot.id)
    runner = ThreadRunner(store=store, llm=server.chat_model())
    runner.invoke("Hi", {"configurable": {"thread_id": thread.id}})
    assert store.acquire_lease(thread.id, "this-process", 30.0)

    def other() -> list[str]:
        done = subprocess.run(  # noqa: S603 - this interpreter, our own snippet
            [
                sys.executable,
                "-c",
                _WITH_THE_INDEX,
                _url("plain"),
                _key(),
                str(path),
                thread.id,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.split()

    held, runs, tokens = other()
    # The other process sees this one's lease, run and usage through the index.
    assert (held, runs) == ("False", "completed")
    assert int(tokens) == store.get_thread_usage(thread.id).total_tokens > 0
    store.release_lease(thread.id, "this-process")
    assert other()[0] == "True"
    index.close()


# --- threads listed without GET /v1/threads ------------------------------------------


@pytest.fixture
def unlisted() -> Iterator[Callable[..., BaseStore]]:
    """Stores on a server without ``/v1/retro`` nor ``GET /v1/threads``."""
    from _wire_store import wire_stores  # noqa: PLC0415

    with wire_stores("plain-unlisted", _postgres_unused) as make:
        yield make


async def test_listing_without_server_listing_or_index_names_both(
    unlisted: Callable[..., BaseStore], call: Call
) -> None:
    store = unlisted()
    await call(store, "create_thread", {})
    bot = await call(store, "create_assistant", {"model": "m"}, {})
    with pytest.raises(
        StoreError, match=r"index=SQLiteStore.*GET /v1/threads|GET /v1/threads.*index"
    ):
        await call(store, "list_threads", ThreadQuery())
    with pytest.raises(StoreError, match="index"):
        await call(store, "delete_assistant", bot.id, threads="delete")
    # Keeping the threads needs no listing.
    assert await call(store, "delete_assistant", bot.id, threads="keep") == 0


async def test_the_index_lists_what_the_server_has(
    unlisted: Callable[..., BaseStore], call: Call, tmp_path: Path
) -> None:
    index = SQLiteStore(tmp_path / "index.db")
    store = unlisted(index=index)
    a = await call(store, "create_thread", {"team": "a", "retro_class": "X"})
    b = await call(store, "create_thread", {"team": "b", "retro_class": "Y"})
    c = await call(store, "create_thread", {"team": "a", "retro_class": "Y"})

    async def ids(**query: Any) -> list[str]:
        found = await call(store, "list_threads", ThreadQuery(**query))
        return [t.id for t in found]

    assert await ids() == [c.id, b.id, a.id]
    assert await ids(metadata={"team": "a"}) == [c.id, a.id]
    assert await ids(classes=("Y",), order="asc") == [b.id, c.id]
    assert await ids(after=c.id, limit=1) == [b.id]
    assert await ids(before=a.id, limit=1) == [b.id]
    found = await call(store, "list_threads", ThreadQuery(metadata={"team": "b"}))
    assert found == [await call(store, "get_thread", b.id)]
    await call(store, "update_thread", b.id, MetadataPatch(set={"team": "a"}))
    assert await ids(metadata={"team": "a"}) == [c.id, b.id, a.id]
    await call(store, "delete_thread", c.id)
    assert await ids() == [b.id, a.id]
    with pytest.raises(ThreadNotFoundError):
        await ids(after=c.id)
    index.close()


_CRASH = """
import os, signal, sys
from unittest import mock
from langchain_retro import AssistantsAPIStore, SQLiteStore
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores import _plain_index

url, key, index_path, step, thread_id = sys.argv[1:6]
store = AssistantsAPIStore.from_url(
    url, api_key=key, protocol="assistants", index=SQLiteStore(index_path)
)
original = getattr(_plain_index.ThreadIndex, step)

def crash(self, *args):
    # The one point nothing else reaches: between the index's write and the
    # server's. "pending" and "begin_create" die after their own write, the
    # others before theirs.
    if step in ("pending", "begin_create"):
        yield from original(self, *args)
    os.kill(os.getpid(), signal.SIGKILL)
    yield from ()

with mock.patch.object(_plain_index.ThreadIndex, step, crash):
    if step in ("begin_create", "end_create"):
        store.create_thread({"team": "orphan"})
    elif step == "confirm":
        store.update_thread(thread_id, MetadataPatch(set={"team": "moved"}))
    else:
        store.delete_thread(thread_id)
"""


def _crash(index: Path, step: str, thread_id: str = "") -> None:
    done = subprocess.run(  # noqa: S603 - this interpreter, our own snippet
        [
            sys.executable,
            "-c",
            _CRASH,
            _url("plain-unlisted"),
            _key(),
            str(index),
            step,
            thread_id,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stderr


def test_a_crash_between_the_two_writes_never_misleads_a_listing(
    unlisted: Callable[..., BaseStore], tmp_path: Path
) -> None:
    path = tmp_path / "index.db"
    index = SQLiteStore(path)
    store = unlisted(index=index)
    kept = store.create_thread({"team": "a"})
    gone = store.create_thread({"team": "a"})
    stays = store.create_thread({"team": "a"})

    def listed(**metadata: str) -> list[str]:
        return [t.id for t in store.list_threads(ThreadQuery(metadata=metadata))]

    # Killed after the index's entry, before the server made the thread: the
    # entry waits, unlisted, to be removed after CREATING_GRACE.
    _crash(path, "begin_create")
    assert listed() == [stays.id, gone.id, kept.id]
    creating = index.list_threads(ThreadQuery(metadata={STATE: "creating"}))
    assert [t.metadata["team"] for t in creating] == ["orphan"]
    # Killed after the server made a thread, before the index learnt its id: the
    # thread's id was never returned, and it is not listed.
    _crash(path, "end_create")
    assert listed() == [stays.id, gone.id, kept.id]
    # Killed after the server changed a thread, before the index followed.
    _crash(path, "confirm", kept.id)
    assert listed(team="moved") == [kept.id]
    # Killed after the server deleted a thread, before the index dropped it.
    _crash(path, "remove", gone.id)
    with pytest.raises(ThreadNotFoundError):
        store.get_thread(gone.id)
    assert listed() == [stays.id, kept.id]
    # Killed after the index marked a delete, before the server deleted: it exists.
    _crash(path, "pending", stays.id)
    assert listed(team="a") == [stays.id]
    assert store.get_thread(stays.id).metadata == {"team": "a"}
    index.close()


# --- runs, completed on the client ----------------------------------------------------


def test_a_runner_completes_runs_on_the_client(
    store: BaseStore, server: FakeChatServer
) -> None:
    bot = Assistant.create(store, model="fake-model", instructions="Be brief.")
    thread = ChatCompletionThread.create(store, assistant_id=bot.id)
    runner = ThreadRunner(store=store, llm=server.chat_model(), window=10)
    config: Any = {"configurable": {"thread_id": thread.id}}
    assert runner.invoke("Hello!", config).content == "echo: Hello!"
    assert runner.invoke("Again", config).content == "echo: Again"
    assert [r.role for r in store.list_messages(thread.id)] == ["user", "assistant"] * 2
    assert [run.status for run in store.list_runs(thread.id)] == ["completed"] * 2
    with _raw() as raw:
        replies = raw.beta.threads.messages.list(thread.id, order="asc").data
    assert [m.content[0].text.value for m in replies] == [  # type: ignore[union-attr]
        "Hello!",
        "echo: Hello!",
        "Again",
        "echo: Again",
    ]


async def test_a_runner_completes_runs_on_the_client_async(
    store: BaseStore, llm: Any
) -> None:
    bot = await Assistant.acreate(store, model="fake-model")
    thread = await ChatCompletionThread.acreate(store, assistant_id=bot.id)
    runner = ThreadRunner(store=store, llm=llm)
    config: Any = {"configurable": {"thread_id": thread.id}}
    assert (await runner.ainvoke("Hi", config)).content == "echo: Hi"
    assert await store.acount_messages(thread.id) == 2
    usage = await store.aget_thread_usage(thread.id)
    assert usage.total_tokens > 0


def test_a_windowed_turn_costs_the_same_requests_at_any_length(
    store: BaseStore, server: FakeChatServer
) -> None:
    sent: list[str] = []

    def count(request: Any) -> None:
        path = re.sub(r"(thread|msg|asst)_[0-9A-Za-z]+", r"\1_ID", request.url.path)
        query = "?" + request.url.query.decode() if request.url.query else ""
        sent.append(f"{request.method} {path}{query}")

    http = openai.DefaultHttpxClient(event_hooks={"request": [count]})
    counted = AssistantsAPIStore(
        client=openai.OpenAI(base_url=_url("plain"), api_key=_key(), http_client=http),
        protocol="assistants",
    )
    bot = Assistant.create(store, model="fake-model")
    short = ChatCompletionThread.create(store, assistant_id=bot.id)
    long = ChatCompletionThread.create(store, assistant_id=bot.id)
    store.add_messages(long.id, [_new(HumanMessage(f"m{i}")) for i in range(250)])
    runner = ThreadRunner(store=counted, llm=server.chat_model(), window=8)
    per_turn = []
    for thread in (short, long, long):
        sent.clear()
        runner.invoke("next", {"configurable": {"thread_id": thread.id}})
        per_turn.append(list(sent))
    assert per_turn[0] == per_turn[1] == per_turn[2]
    # begin_run: the thread, its assistant, the input, the newest messages;
    # finish_run: the thread, the reply, the thread's hwm.
    assert sorted(per_turn[0]) == sorted(
        [
            "GET /v1/threads/thread_ID",
            "GET /v1/assistants/asst_ID",
            "POST /v1/threads/thread_ID/messages",
            # The window and the runner's slack of 8: one page, whatever the length.
            "GET /v1/threads/thread_ID/messages?order=desc&limit=16",
            "GET /v1/threads/thread_ID",
            "POST /v1/threads/thread_ID/messages",
            "POST /v1/threads/thread_ID",
        ]
    )
    counted.close()
    http.close()


@pytest.mark.parametrize("name", ["hello_world.py", "listable_threads.py"])
def test_examples_run_unchanged_on_the_plain_api(
    name: str, store: BaseStore, tmp_path: Path
) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", "LANGCHAIN_RETRO_DB"}
    }
    env |= {"RETRO_BASE_URL": _url("plain"), "RETRO_API_KEY": _key()}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(  # noqa: S603 - our own example, with this interpreter
        [sys.executable, "-W", "error", str(examples / name)],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    expected = {
        "hello_world.py": "assistant> echo: What did I just ask you?",
        "listable_threads.py": "threads left in the store: ['hooli']",
    }
    assert expected[name] in done.stdout, done.stdout
    with _raw() as raw:  # the data is on the server, as the plain API shows it
        listed: Any = raw.get("/assistants", cast_to=object)
        assert listed["data"]


async def test_a_chat_history_keeps_every_message_type(
    store: BaseStore, call: Call
) -> None:
    from test_stores_assistants_api import MESSAGES  # noqa: PLC0415

    thread = await call(store, "create_thread", {})
    history = AssistantThreadChatMessageHistory(store, thread.id)
    await call(history, "add_messages", MESSAGES)
    read = await call.messages(history)
    assert [type(m) for m in read] == [type(m) for m in MESSAGES]
    assert [m.content for m in read] == [m.content for m in MESSAGES]
    assert read[4].tool_calls == MESSAGES[4].tool_calls  # type: ignore[attr-defined]
    assert json.loads(to_payload(read[5]))["artifact"] == {"raw": 2}
