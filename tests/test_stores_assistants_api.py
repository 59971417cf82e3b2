"""`AssistantsAPIStore` beyond the store contract: the wire form, limits, errors, runs.

The contract suite (``tests/test_stores_contract*.py``) runs over this store too;
here is what only a store on the wire has: messages as the API shows them, limits
checked before any request, SDK errors mapped onto the tree, owners kept apart, and
a `ThreadRunner` completing runs on the client against the server's data.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langchain_retro import (
    OPENAI_LIMITS,
    UNLIMITED,
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    MessageConversionError,
    MetadataLimitError,
    MetadataLimits,
    StoreError,
    ThreadNotFoundError,
    ThreadRunner,
)
from langchain_retro._messages import from_payload, to_payload
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores._wire import (
    MESSAGE_KEY,
    decode_message,
    message_object,
    new_message,
    wire_message,
)
from langchain_retro.stores.assistants_api import AssistantsAPIStore
from langchain_retro.stores.base import (
    BaseStore,
    NewMessage,
    StoredMessage,
    ThreadQuery,
)

if TYPE_CHECKING:
    from _helpers import Caller as Call
    from _wire_store import Wire

    from langchain_retro.testing import FakeChatServer

pytest_plugins = ["_helpers", "_wire_store"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SDK_DEPRECATIONS = pytest.mark.filterwarnings(
    "ignore:The Assistants API is deprecated:DeprecationWarning"
)


@pytest.fixture(params=["wire"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """`AssistantsAPIStore` over ``langchain-retro serve`` on SQLite."""
    return str(request.param)


MESSAGES = [
    HumanMessage("plain text"),
    AIMessage("a plain reply"),
    HumanMessage("named", name="ada", additional_kwargs={"k": [1, 2]}),
    HumanMessage(
        content=[
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
        ]
    ),
    AIMessage(
        "",
        tool_calls=[{"name": "add", "args": {"a": 1}, "id": "call_1"}],
        usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        response_metadata={"model_name": "m", "finish_reason": "tool_calls"},
    ),
    ToolMessage("2", tool_call_id="call_1", artifact={"raw": 2}),
    SystemMessage("be brief"),
    ChatMessage("hi", role="critic"),
    FunctionMessage("3", name="add"),
]


def _new(message: Any, **kwargs: Any) -> NewMessage:
    from langchain_retro._messages import role_of  # noqa: PLC0415

    return NewMessage(role=role_of(message), payload=to_payload(message), **kwargs)


# --- the codec, without a server ------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_type_round_trips_through_the_wire_form(message: Any) -> None:
    new = _new(message, metadata={"note": "kept"}, reply_to="msg_1", run_id="run_1")
    wire = wire_message(new, OPENAI_LIMITS)
    assert wire.role == ("assistant" if message.type == "ai" else "user")
    assert new_message(wire) == new
    stored = new.stored("msg_2", "thread_1", 1_700_000_000)
    assert decode_message(message_object(stored)) == stored
    assert from_payload(stored.payload, "msg_2").content == message.content


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["human", "ai", "system", "tool"]),
    text=_TEXT,
    name=st.none() | _TEXT,
    extra=st.dictionaries(_TEXT.filter(bool).map(lambda k: k[:8]), _TEXT, max_size=3),
    metadata=st.dictionaries(
        st.text(
            st.characters(exclude_categories=["Cs"]), min_size=1, max_size=10
        ).filter(lambda k: not k.startswith(MESSAGE_KEY)),
        _TEXT.map(lambda v: v[:8]),
        max_size=4,
    ),
    value_length=st.integers(min_value=8, max_value=600),
)
def test_any_message_round_trips_at_any_value_limit(  # noqa: PLR0917
    kind: str,
    text: str,
    name: str | None,
    extra: dict[str, str],
    metadata: dict[str, str],
    value_length: int,
) -> None:
    classes: dict[str, Any] = {
        "human": HumanMessage,
        "ai": AIMessage,
        "system": SystemMessage,
    }
    if kind == "tool":
        message: Any = ToolMessage(text, tool_call_id="c", name=name)
    else:
        message = classes[kind](text, name=name, additional_kwargs=extra)
    limits = MetadataLimits(max_value_length=value_length)
    new = _new(message, metadata=metadata)
    wire = wire_message(new, limits)
    assert all(
        len(v) <= value_length for k, v in wire.metadata.items() if k not in metadata
    )
    assert new_message(wire) == new
    stored = new.stored("msg_1", "thread_1", 1)
    assert decode_message(message_object(stored)) == stored


def test_plain_text_is_plain_on_the_wire() -> None:
    wire = wire_message(_new(HumanMessage("hi"), metadata={"a": "b"}), OPENAI_LIMITS)
    assert (wire.role, wire.content, wire.metadata) == ("user", "hi", {"a": "b"})
    reply = wire_message(_new(AIMessage("hello")), OPENAI_LIMITS)
    assert (reply.role, reply.content, reply.metadata) == ("assistant", "hello", {})


def test_long_extras_span_metadata_values() -> None:
    message = AIMessage(
        "", tool_calls=[{"name": "f", "args": {"x": "y" * 1200}, "id": "c"}]
    )
    wire = wire_message(_new(message), OPENAI_LIMITS)
    pieces = [MESSAGE_KEY, f"{MESSAGE_KEY}#1", f"{MESSAGE_KEY}#2"]
    assert list(wire.metadata) == pieces
    assert all(len(v) <= 512 for v in wire.metadata.values())
    assert json.loads(new_message(wire).payload)["tool_calls"][0]["args"]["x"] == (
        "y" * 1200
    )


def test_extras_over_the_limits_raise_naming_field_limit_and_size() -> None:
    message = AIMessage(
        "", tool_calls=[{"name": "f", "args": {"x": "y" * 9000}, "id": "c"}]
    )
    with pytest.raises(MetadataLimitError) as caught:
        wire_message(_new(message), OPENAI_LIMITS)
    assert (caught.value.field, caught.value.limit) == ("message", 16)
    assert caught.value.size > 16
    assert "--metadata-limits off" in str(caught.value)
    assert wire_message(_new(message), UNLIMITED).metadata[MESSAGE_KEY]


def test_decoding_never_revives_a_class_outside_the_allowlist() -> None:
    wire = wire_message(_new(HumanMessage("x")), UNLIMITED).model_copy(
        update={
            "metadata": {
                MESSAGE_KEY: json.dumps(
                    {"type": "constructor", "id": ["os", "system"], "kwargs": {}}
                )
            }
        }
    )
    with pytest.raises(ValueError, match="constructor"):
        new_message(wire)


def test_crafted_extras_are_refused_as_conversion_errors() -> None:
    base = wire_message(_new(HumanMessage("x")), UNLIMITED)
    for extras in ([1, 2], {"_reply_to": 7}, {"_role": ["user"]}, {"type": "nope"}):
        crafted = base.model_copy(
            update={"metadata": {MESSAGE_KEY: json.dumps(extras)}}
        )
        with pytest.raises(MessageConversionError):
            new_message(crafted)


def test_limits_raise_before_any_request() -> None:
    # Nothing listens on port 9: a request would raise StoreError, not this.
    store = AssistantsAPIStore.from_url(
        "http://127.0.0.1:9/v1", api_key="k", max_retries=0
    )
    with store:
        with pytest.raises(MetadataLimitError) as caught:
            store.create_thread({"k": "v" * 513})
        assert (caught.value.field, caught.value.limit, caught.value.size) == (
            "k",
            512,
            513,
        )
        with pytest.raises(MetadataLimitError):
            store.add_messages(
                "thread_x", [_new(HumanMessage("x"), metadata={"n": "1" * 600})]
            )
        with pytest.raises(StoreError, match="Could not reach the server"):
            store.get_thread("thread_x")
        assert repr(store) == "AssistantsAPIStore('http://127.0.0.1:9/v1/')"


# --- on the server ----------------------------------------------------------------


@SDK_DEPRECATIONS
async def test_messages_are_the_apis_messages(
    store: BaseStore, call: Call, wire: Wire
) -> None:
    thread = await call(store, "create_thread", {"topic": "t"})
    await call(
        store,
        "add_messages",
        thread.id,
        [
            _new(HumanMessage("What is 1+1?"), metadata={"source": "app"}),
            _new(AIMessage("", tool_calls=[{"name": "add", "args": {}, "id": "c"}])),
            _new(ToolMessage("2", tool_call_id="c")),
            _new(AIMessage("2")),
        ],
    )
    client = openai.OpenAI(base_url=wire.url, api_key=wire.key)
    with client:
        listed = client.beta.threads.messages.list(thread.id, order="asc").data
    # The API never showed tool calls and results as messages: they are left out.
    assert [(m.role, m.content[0].text.value) for m in listed] == [  # type: ignore[union-attr]
        ("user", "What is 1+1?"),
        ("assistant", "2"),
    ]
    assert listed[0].metadata == {"source": "app"}
    stored = await call(store, "list_messages", thread.id)
    assert [row.role for row in stored] == ["user", "assistant", "tool", "assistant"]


async def test_another_key_sees_nothing(
    store: BaseStore, call: Call, wire: Wire
) -> None:
    thread = await call(store, "create_thread", {})
    other = AssistantsAPIStore.from_url(wire.url, api_key=wire.other_key)
    async with other:
        with pytest.raises(ThreadNotFoundError):
            await call(other, "get_thread", thread.id)
        assert await call(other, "list_threads", ThreadQuery()) == []
        with pytest.raises(ThreadNotFoundError):
            await call(other, "add_messages", thread.id, [_new(HumanMessage("x"))])
    assert await call(store, "count_messages", thread.id) == 0


async def test_sdk_errors_map_onto_the_tree(call: Call, wire: Wire) -> None:
    refused = AssistantsAPIStore(
        client=openai.OpenAI(base_url=wire.url, api_key="wrong", max_retries=0)
    )
    with pytest.raises(StoreError, match="refused the API key") as caught:
        await call(refused, "create_thread", {})
    assert isinstance(caught.value.__cause__, openai.AuthenticationError)
    await refused.aclose()


async def test_a_server_without_the_store_routes_is_named(
    server: FakeChatServer, call: Call
) -> None:
    plain = AssistantsAPIStore.from_url(server.base_url, api_key="k", limits=UNLIMITED)
    with pytest.raises(StoreError, match="/v1/retro"):
        await call(plain, "create_thread", {})
    await plain.aclose()


def test_a_runner_completes_runs_on_the_client(
    store: BaseStore, server: FakeChatServer
) -> None:
    bot = Assistant.create(store, model="fake-model", instructions="Be brief.")
    thread = ChatCompletionThread.create(store, assistant_id=bot.id)
    runner = ThreadRunner(store=store, llm=server.chat_model(), window=10)
    config: Any = {"configurable": {"thread_id": thread.id}}
    assert runner.invoke("Hello!", config).content == "echo: Hello!"
    assert runner.invoke("Again", config).content == "echo: Again"
    rows: list[StoredMessage] = store.list_messages(thread.id)
    assert [row.role for row in rows] == ["user", "assistant"] * 2
    runs = store.list_runs(thread.id)
    assert [run.status for run in runs] == ["completed", "completed"]


async def test_a_runner_completes_runs_on_the_client_async(
    store: BaseStore, llm: Any
) -> None:
    bot = await Assistant.acreate(store, model="fake-model")
    thread = await ChatCompletionThread.acreate(store, assistant_id=bot.id)
    runner = ThreadRunner(store=store, llm=llm)
    config: Any = {"configurable": {"thread_id": thread.id}}
    assert (await runner.ainvoke("Hi", config)).content == "echo: Hi"
    assert await store.acount_messages(thread.id) == 2


async def test_a_run_never_reads_another_owners_assistant(
    store: BaseStore, call: Call, wire: Wire
) -> None:
    other = AssistantsAPIStore.from_url(wire.url, api_key=wire.other_key)
    async with other:
        theirs = await call(
            other, "create_assistant", {"model": "m", "instructions": "secret"}, {}
        )
        thread = await call(store, "create_thread", {"assistant_id": theirs.id})
        start = await call(store, "begin_run", thread.id, owner="run_x", ttl=30.0)
        assert start is not None
        assert start.assistant is None


def test_a_windowed_turn_costs_the_same_requests_at_any_length(
    store: BaseStore, server: FakeChatServer, wire: Wire
) -> None:
    sent: list[str] = []

    def count(request: Any) -> None:
        path = re.sub(r"(thread|run)_[0-9A-Za-z]+", r"\1_ID", request.url.path)
        sent.append(f"{request.method} {path}")

    http = openai.DefaultHttpxClient(event_hooks={"request": [count]})
    counted = AssistantsAPIStore(
        client=openai.OpenAI(base_url=wire.url, api_key=wire.key, http_client=http),
        limits=UNLIMITED,
    )
    bot = Assistant.create(store, model="fake-model")
    short = ChatCompletionThread.create(store, assistant_id=bot.id)
    long = ChatCompletionThread.create(store, assistant_id=bot.id)
    history = [_new(HumanMessage(f"m{i}")) for i in range(300)]
    store.add_messages(long.id, history)
    runner = ThreadRunner(store=counted, llm=server.chat_model(), window=8)
    per_turn = []
    for thread in (short, long, long):
        sent.clear()
        runner.invoke("next", {"configurable": {"thread_id": thread.id}})
        per_turn.append(list(sent))
    # Two requests a turn on a new thread or after 300 messages: begin_run reads
    # the newest 8 messages, finish_run writes the reply.
    assert per_turn[0] == per_turn[1] == per_turn[2]
    assert per_turn[0] == [
        "POST /v1/retro/threads/thread_ID/runs:begin",
        "POST /v1/retro/threads/thread_ID/runs/run_ID/finish",
    ]
    counted.close()
    http.close()


async def test_caller_ids_never_take_a_routes_path(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {})
    names = ["count", "list", "clear", "a/b", "x:list", "?q=1", "%2F"]
    news = [_new(HumanMessage(name), id=name) for name in names]
    await call(store, "add_messages", thread.id, news)
    for name in names:
        assert (await call(store, "get_message", thread.id, name)).id == name
    patched = await call(
        store, "update_message", thread.id, "count", MetadataPatch(set={"k": "v"})
    )
    assert patched.metadata == {"k": "v"}
    await call(store, "delete_message", thread.id, "list")
    assert await call(store, "count_messages", thread.id) == len(names) - 1
    assert await call(store, "count_messages", thread.id, after="a/b") == 3


@pytest.mark.parametrize("name", ["hello_world.py", "listable_threads.py"])
def test_examples_run_unchanged_against_a_server(
    name: str, store: BaseStore, wire: Wire, tmp_path: Path
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", "LANGCHAIN_RETRO_DB"}
    }
    env |= {"RETRO_BASE_URL": wire.url, "RETRO_API_KEY": wire.key}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(  # noqa: S603 - our own example, with this interpreter
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"store: AssistantsAPIStore on {wire.url}" in done.stdout
    expected = {
        "hello_world.py": "assistant> echo: What did I just ask you?",
        "listable_threads.py": "threads left in the store: ['hooli']",
    }
    assert expected[name] in done.stdout, done.stdout
    assert not list(tmp_path.glob("**/*.db"))  # nothing written locally


async def test_a_chat_history_over_the_wire_keeps_every_message_type(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {})
    history = AssistantThreadChatMessageHistory(store, thread.id)
    await call(history, "add_messages", MESSAGES)
    read = await call.messages(history)
    assert [type(m) for m in read] == [type(m) for m in MESSAGES]
    assert [m.content for m in read] == [m.content for m in MESSAGES]
    assert read[4].tool_calls == MESSAGES[4].tool_calls  # type: ignore[attr-defined]
    assert read[5].artifact == {"raw": 2}  # type: ignore[attr-defined]
