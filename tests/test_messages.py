"""Every LangChain message type round-trips losslessly through every store."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    ToolMessageChunk,
)
from langchain_core.messages import BaseMessage as LCBaseMessage

from langchain_retro import (
    AssistantThreadChatMessageHistory,
    BaseThread,
    CorruptDataError,
    MessageConversionError,
    ThreadMessage,
)
from langchain_retro.stores.base import BaseStore, NewMessage

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers"]

USAGE = {
    "input_tokens": 12,
    "output_tokens": 30,
    "total_tokens": 42,
    "input_token_details": {"cache_read": 4},
    "output_token_details": {"reasoning": 10},
}

MESSAGES: dict[str, LCBaseMessage] = {
    "human-text": HumanMessage("What's the weather in Paris?"),
    "human-parts": HumanMessage(
        [
            "plain part",
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        ],
        name="ann",
        additional_kwargs={"trace": [1, 2.5, None, True, {"deep": ["x"]}]},
        response_metadata={"source": "web"},
    ),
    "human-unicode": HumanMessage('ünïcødé 😀 \u2028 \x00 "quotes" \\ back'),
    "ai-full": AIMessage(
        content="Let me check.",
        name="bot",
        id="run-123",  # replaced by the store's id
        tool_calls=[
            {
                "name": "get_weather",
                "args": {"city": "Paris", "days": 3, "units": None},
                "id": "call_1",
                "type": "tool_call",
            },
            {"name": "noop", "args": {}, "id": "call_2", "type": "tool_call"},
        ],
        invalid_tool_calls=[
            {
                "name": "broken",
                "args": '{"city": ',
                "id": "call_3",
                "error": "bad json",
                "type": "invalid_tool_call",
            }
        ],
        usage_metadata=USAGE,
        response_metadata={
            "model_name": "gpt-4o-mini",
            "finish_reason": "tool_calls",
            "logprobs": None,
            "system_fingerprint": "fp_1",
        },
        additional_kwargs={"refusal": None},
    ),
    "ai-empty-content": AIMessage(
        "", tool_calls=[{"name": "f", "args": {"x": 1}, "id": "c", "type": "tool_call"}]
    ),
    "ai-parts": AIMessage(
        [{"type": "text", "text": "part one"}, {"type": "text", "text": " two"}]
    ),
    "system": SystemMessage("You are terse.", name="policy"),
    "tool": ToolMessage(
        "18°C", tool_call_id="call_1", name="get_weather", artifact={"raw": [18, "C"]}
    ),
    "tool-error": ToolMessage("boom", tool_call_id="call_2", status="error"),
    "chat": ChatMessage(role="critic", content="Could be shorter."),
    "function": FunctionMessage(name="lookup", content='{"result": 1}'),
}

ROLES = {
    "human-text": "user",
    "human-parts": "user",
    "human-unicode": "user",
    "ai-full": "assistant",
    "ai-empty-content": "assistant",
    "ai-parts": "assistant",
    "system": "system",
    "tool": "tool",
    "tool-error": "tool",
    "chat": "critic",
    "function": "function",
}


def expected(message: LCBaseMessage, message_id: str) -> LCBaseMessage:
    return message.model_copy(update={"id": message_id})


def assert_same(restored: LCBaseMessage, original: LCBaseMessage) -> None:
    assert type(restored) is type(original)
    assert restored.id is not None
    if original.id is None:
        assert restored.id.startswith("msg_")
    else:  # a caller's id is kept
        assert restored.id == original.id
    assert restored == expected(original, restored.id)


class CustomMessage(LCBaseMessage):
    type: Literal["custom"] = "custom"


class TaggedHuman(HumanMessage):
    """A subclass whose extra field the stored form cannot keep."""

    tag: str = ""


class PlainHuman(HumanMessage):
    """A subclass without fields of its own: it is stored as a HumanMessage."""


class Crafted:
    """Payloads written past the message layer, as a foreign writer could."""

    CONSTRUCTOR = json.dumps(
        {
            "lc": 1,
            "type": "constructor",
            "id": ["langchain", "schema", "messages", "HumanMessage"],
            "kwargs": {"content": "injected"},
        }
    )
    UNKNOWN = json.dumps({"type": "remove", "content": "x"})
    UNTYPED = json.dumps({"content": "x"})
    NOT_OBJECT = json.dumps(["human", "x"])
    NOT_JSON = "{not json"
    BAD_FIELDS = json.dumps({"type": "human", "content": 42})


# --- round trips ---------------------------------------------------------------------


async def test_history_round_trips_every_type(store: BaseStore, call: Call) -> None:
    thread = await call(BaseThread, "create", store)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    await call(history, "add_messages", list(MESSAGES.values()))
    restored = await call.messages(history)
    assert len(restored) == len(MESSAGES)
    for got, original in zip(restored, MESSAGES.values(), strict=True):
        assert_same(got, original)
    rows = await call(store, "list_messages", thread.id)
    assert [r.role for r in rows] == list(ROLES.values())
    assert [r.id for r in rows] == [m.id for m in restored]


@pytest.mark.parametrize("name", list(MESSAGES))
async def test_records_round_trip(store: BaseStore, call: Call, name: str) -> None:
    original = MESSAGES[name]
    thread = await call(BaseThread, "create", store)
    created = await call(
        ThreadMessage, "create", store, thread_id=thread.id, message=original
    )
    assert created.role == ROLES[name]
    assert_same(created.message, original)
    assert created.message.id == created.id
    back = await call(ThreadMessage, "retrieve", store, thread.id, created.id)
    assert_same(back.message, original)
    assert back == created


def test_originals_are_not_changed(store: BaseStore) -> None:
    thread = BaseThread.create(store)
    original = MESSAGES["ai-full"]
    before = original.model_dump()
    AssistantThreadChatMessageHistory(store, thread.id).add_messages([original])
    assert original.model_dump() == before
    assert original.id == "run-123"


async def test_chunk_sums_stored_as_complete_messages(
    store: BaseStore, call: Call
) -> None:
    chunks = [
        AIMessageChunk(
            content="The ",
            id="run-9",
            tool_call_chunks=[
                {"name": "add", "args": '{"a": ', "id": "call_9", "index": 0}
            ],
        ),
        AIMessageChunk(
            content="answer",
            tool_call_chunks=[{"name": None, "args": "1}", "id": None, "index": 0}],
        ),
        AIMessageChunk(
            content=".",
            usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            response_metadata={"finish_reason": "stop", "model_name": "m"},
        ),
    ]
    total = chunks[0] + chunks[1] + chunks[2]
    human = HumanMessageChunk(content="hi ") + HumanMessageChunk(content="there")
    tool = ToolMessageChunk(content="4", tool_call_id="call_9")

    thread = await call(BaseThread, "create", store)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    await call(history, "add_messages", [human, total, tool])
    got_human, got_ai, got_tool = await call.messages(history)
    assert_same(got_human, HumanMessage("hi there"))
    assert_same(
        got_ai,
        AIMessage(
            content="The answer.",
            tool_calls=[
                {"name": "add", "args": {"a": 1}, "id": "call_9", "type": "tool_call"}
            ],
            usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            response_metadata={"finish_reason": "stop", "model_name": "m"},
            id="run-9",  # the first chunk's id is the sum's, and is kept
        ),
    )
    assert_same(got_tool, ToolMessage("4", tool_call_id="call_9"))
    roles = [r.role for r in await call(store, "list_messages", thread.id)]
    assert roles == ["user", "assistant", "tool"]


async def test_non_json_artifact_dropped_with_warning(
    store: BaseStore, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    thread = await call(BaseThread, "create", store)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    message = ToolMessage("done", tool_call_id="call_7", artifact=object())
    with caplog.at_level(logging.WARNING, logger="langchain_retro"):
        await call(history, "add_messages", [message])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "call_7" in warnings[0].getMessage()
    assert "artifact" in warnings[0].getMessage()
    (got,) = await call.messages(history)
    assert_same(got, ToolMessage("done", tool_call_id="call_7"))


# --- refused before any write --------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        RemoveMessage(id="msg_x"),
        CustomMessage(content="custom"),
        TaggedHuman("tagged", tag="important"),
        HumanMessage("x", additional_kwargs={"when": object()}),
        AIMessage("x", response_metadata={"raw": b"bytes"}),
    ],
    ids=[
        "remove",
        "custom-subclass",
        "subclass-with-fields",
        "non-json-kwargs",
        "non-json-metadata",
    ],
)
async def test_refused_before_any_write(
    store: BaseStore, call: Call, bad: LCBaseMessage
) -> None:
    thread = await call(BaseThread, "create", store)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    with pytest.raises(MessageConversionError) as caught:
        await call(history, "add_messages", [HumanMessage("fine"), bad])
    assert isinstance(caught.value, ValueError)
    with pytest.raises(MessageConversionError):
        await call(ThreadMessage, "create", store, thread_id=thread.id, message=bad)
    assert await call(store, "count_messages", thread.id) == 0


async def test_subclass_without_fields_stored_as_its_base(
    store: BaseStore, call: Call
) -> None:
    thread = await call(BaseThread, "create", store)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    await call(history, "add_messages", [PlainHuman("plain", name="ann")])
    (got,) = await call.messages(history)
    assert_same(got, HumanMessage("plain", name="ann"))


@pytest.mark.parametrize(
    "payload",
    [
        Crafted.CONSTRUCTOR,
        Crafted.UNKNOWN,
        Crafted.UNTYPED,
        Crafted.NOT_OBJECT,
        Crafted.NOT_JSON,
        Crafted.BAD_FIELDS,
    ],
    ids=["constructor", "unknown-type", "no-type", "not-object", "not-json", "fields"],
)
async def test_foreign_payloads_refused_on_read(
    store: BaseStore, call: Call, payload: str
) -> None:
    thread = await call(BaseThread, "create", store)
    (row,) = await call(
        store,
        "add_messages",
        thread.id,
        [NewMessage(role="user", payload=payload)],
    )
    other = await call(BaseThread, "create", store)
    fine = AssistantThreadChatMessageHistory(store, other.id)
    await call(fine, "add_messages", [HumanMessage("fine")])
    history = AssistantThreadChatMessageHistory(store, thread.id)
    for window in (None, 1):
        history.window = window
        with pytest.raises(CorruptDataError) as caught:
            await call.messages(history)
        assert (caught.value.object_id, caught.value.thread_id) == (row.id, thread.id)
        assert row.id in str(caught.value)
        assert thread.id in str(caught.value)
    with pytest.raises(CorruptDataError) as caught:
        await call(ThreadMessage, "retrieve", store, thread.id, row.id)
    assert (caught.value.object_id, caught.value.thread_id) == (row.id, thread.id)
    with pytest.raises(CorruptDataError):
        await call(ThreadMessage, "list", store, thread.id)
    assert "injected" not in str(await call.messages(fine))
    assert [m.content for m in await call.messages(fine)] == ["fine"]


def test_stored_payload_is_plain_json(store: BaseStore) -> None:
    thread = BaseThread.create(store)
    AssistantThreadChatMessageHistory(store, thread.id).add_messages(
        [MESSAGES["ai-full"]]
    )
    (row,) = store.list_messages(thread.id)
    data = json.loads(row.payload)
    assert data["type"] == "ai"
    assert "lc" not in data
    assert "id" not in data  # the store's id is the message's id
    assert data["tool_calls"][0]["args"] == {"city": "Paris", "days": 3, "units": None}
    assert data["additional_kwargs"] == {"refusal": None}
    # Fields at their defaults are not stored.
    AssistantThreadChatMessageHistory(store, thread.id).add_message(HumanMessage("hi"))
    newest = store.list_messages(thread.id, order="desc", limit=1)[0]
    assert json.loads(newest.payload) == {"type": "human", "content": "hi"}


@pytest.mark.parametrize(
    "payload",
    [
        '{"type":"human","content":"What is the capital of France?"}',
        '{"content":"","type":"ai"}',
        '{"type":"system","content":"é \\u2028 \\ud83d\\ude00 \\u0000"}',
        '{"type":"ai","content":[]}',
        '{"type":"ai","content":[{"type":"text","text":"x"}]}',
        '{"type":"human","content":"x","name":"ada"}',
        '{"type":"human","content":"x","bogus":1}',
        '{"type":"chat","content":"x"}',
        '{"type":"chat","content":"x","role":"critic"}',
        '{"type":"function","content":"x"}',
        '{"type":"tool","content":"x"}',
        '{"type":"ai","content":"x","tool_calls":[{"x":1}]}',
        '{"type":"ai","content":"x","tool_calls":"zz"}',
        '{"type":"ai","content":"x","additional_kwargs":5}',
        '{"type":"human","content":null}',
        '{"type":"human","content":5}',
        '{"type":"human"}',
        '{"type":"evil","content":"x"}',
        '{"type":["human"],"content":"x"}',
        '{"type":"human","content":"x","type":"evil"}',
        '{"type":"human","content":"\\ud800"}',
        '{"content":"x"}',
        "null",
        '["human","x"]',
        "not json",
    ],
)
def test_checking_a_payload_accepts_exactly_what_rebuilds(payload: str) -> None:
    # An import checks every payload without rebuilding the common ones; it must
    # refuse exactly the payloads that reading would refuse.
    from langchain_retro._messages import check_payload, from_payload  # noqa: PLC0415

    def refusal(check: Callable[..., object]) -> str | None:
        try:
            check(payload, "msg_a", thread_id="thread_a")
        except CorruptDataError as exc:
            return str(exc)
        return None

    assert refusal(check_payload) == refusal(from_payload)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = st.sampled_from(
    [
        "content",
        "tool_calls",
        "invalid_tool_calls",
        "tool_call_id",
        "additional_kwargs",
        "response_metadata",
        "usage_metadata",
        "name",
        "role",
        "status",
        "artifact",
        "example",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["human", "ai", "system", "tool", "chat", "function"]),
    fields=st.dictionaries(_FIELDS, _JSON | st.just([{"name": "f", "args": {}}])),
)
def test_a_stored_payload_rebuilds_or_is_named_corrupt(
    kind: str, fields: dict[str, object]
) -> None:
    # Whatever a row was edited to, reading it either rebuilds a message or raises
    # CorruptDataError naming the row, never another error from LangChain's
    # validators (a KeyError for a missing tool_call_id, say).
    from langchain_retro._messages import check_payload, from_payload  # noqa: PLC0415

    payload = json.dumps({"type": kind, **fields})
    for check in (from_payload, check_payload):
        refused: CorruptDataError | None = None
        try:
            check(payload, "msg_a", thread_id="thread_a")
        except CorruptDataError as exc:
            refused = exc
        assert refused is None or "'msg_a' of thread 'thread_a'" in str(refused)
