"""`AssistantThreadChatMessageHistory` on every store, and inside LCEL."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    UsageMetadata,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    BaseThread,
    ChatCompletionThread,
    MessageConversionError,
    MessageIdConflictError,
    RetroValueError,
    ThreadNotFoundError,
)
from langchain_retro.stores.base import BaseStore

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers"]

UNKNOWN_THREAD = "thread_00000000000000000000000000"
USAGE: UsageMetadata = {"input_tokens": 5, "output_tokens": 8, "total_tokens": 13}


async def new_history(
    call: Call, store: BaseStore, **kwargs: Any
) -> AssistantThreadChatMessageHistory:
    thread = await call(BaseThread, "create", store)
    return AssistantThreadChatMessageHistory(store, thread.id, **kwargs)


def contents(messages: list[BaseMessage]) -> list[Any]:
    return [m.content for m in messages]


# --- reading and writing -------------------------------------------------------------


async def test_empty_history(store: BaseStore, call: Call) -> None:
    history = await new_history(call, store)
    assert await call.messages(history) == []


async def test_add_and_read(store: BaseStore, call: Call) -> None:
    history = await new_history(call, store)
    await call(history, "add_messages", [SystemMessage("sys"), HumanMessage("q1")])
    await call(history, "add_messages", [AIMessage("a1")])
    got = await call.messages(history)
    assert [(type(m), m.content) for m in got] == [
        (SystemMessage, "sys"),
        (HumanMessage, "q1"),
        (AIMessage, "a1"),
    ]
    rows = await call(store, "list_messages", history.thread_id)
    assert [m.id for m in got] == [r.id for r in rows]
    assert all(m.id is not None and m.id.startswith("msg_") for m in got)
    assert len({m.id for m in got}) == 3


def test_add_message_and_helpers(store: BaseStore) -> None:
    history = AssistantThreadChatMessageHistory(store, BaseThread.create(store).id)
    history.add_message(HumanMessage("one"))
    history.add_user_message("two")
    history.add_ai_message("three")
    assert [(m.type, m.content) for m in history.messages] == [
        ("human", "one"),
        ("human", "two"),
        ("ai", "three"),
    ]


async def test_add_messages_is_one_atomic_batch(store: BaseStore, call: Call) -> None:
    history = await new_history(call, store)
    await call(history, "add_messages", [HumanMessage("kept")])
    bad = AIMessage("x", additional_kwargs={"obj": object()})
    with pytest.raises(MessageConversionError):
        await call(history, "add_messages", [HumanMessage("a"), AIMessage("b"), bad])
    assert contents(await call.messages(history)) == ["kept"]


async def test_two_histories_on_one_thread(store: BaseStore, call: Call) -> None:
    one = await new_history(call, store)
    two = AssistantThreadChatMessageHistory(store, one.thread_id)
    await call(one, "add_messages", [HumanMessage("from one")])
    await call(two, "add_messages", [AIMessage("from two")])
    assert contents(await call.messages(one)) == ["from one", "from two"]
    other = await new_history(call, store)
    assert await call.messages(other) == []


async def test_caller_ids_are_kept(store: BaseStore, call: Call) -> None:
    history = await new_history(call, store)
    await call(
        history,
        "add_messages",
        [HumanMessage("q", id="client-1"), AIMessage("a"), AIMessage("b", id="resp_9")],
    )
    got = await call.messages(history)
    assert [m.id for m in got][::2] == ["client-1", "resp_9"]
    assert got[1].id is not None
    assert got[1].id.startswith("msg_")
    rows = await call(store, "list_messages", history.thread_id)
    assert [r.id for r in rows] == [m.id for m in got]


async def test_a_clashing_id_writes_nothing(store: BaseStore, call: Call) -> None:
    history = await new_history(call, store)
    await call(history, "add_messages", [HumanMessage("q", id="client-1")])
    batch = [HumanMessage("new"), AIMessage("dup", id="client-1")]
    with pytest.raises(MessageIdConflictError) as caught:
        await call(history, "add_messages", batch)
    assert (caught.value.thread_id, caught.value.message_id) == (
        history.thread_id,
        "client-1",
    )
    twice = [HumanMessage("x", id="k"), HumanMessage("y", id="k")]
    with pytest.raises(MessageIdConflictError):
        await call(history, "add_messages", twice)
    assert contents(await call.messages(history)) == ["q"]


@pytest.mark.parametrize("bad", ["", " padded ", "x" * 257, "nul\x00"])
async def test_unusable_caller_ids_write_nothing(
    store: BaseStore, call: Call, bad: str
) -> None:
    history = await new_history(call, store)
    with pytest.raises(RetroValueError, match="Message id"):
        await call(
            history, "add_messages", [HumanMessage("ok"), HumanMessage("x", id=bad)]
        )
    assert await call.messages(history) == []


async def test_one_id_in_two_threads_reads_back_each_message(
    store: BaseStore, call: Call
) -> None:
    one = await new_history(call, store)
    two = await new_history(call, store)
    await call(one, "add_messages", [HumanMessage("in one", id="same")])
    assert contents(await call.messages(one)) == ["in one"]  # now cached
    await call(two, "add_messages", [AIMessage("in two", id="same")])
    got = await call.messages(two)
    assert [(type(m), m.content, m.id) for m in got] == [(AIMessage, "in two", "same")]
    assert [(type(m), m.content) for m in await call.messages(one)] == [
        (HumanMessage, "in one")
    ]


async def test_a_readded_id_reads_back_the_new_message(
    store: BaseStore, call: Call
) -> None:
    history = await new_history(call, store)
    await call(history, "add_messages", [HumanMessage("old", id="m1")])
    assert contents(await call.messages(history)) == ["old"]
    await call(store, "delete_message", history.thread_id, "m1")
    await call(history, "add_messages", [HumanMessage("new", id="m1")])
    assert contents(await call.messages(history)) == ["new"]


async def test_a_reply_on_a_run_thread_marks_what_it_answers(
    store: BaseStore, call: Call
) -> None:
    assistant = await call(Assistant, "create", store, model="m")
    thread = await call(
        ChatCompletionThread, "create", store, assistant_id=assistant.id
    )
    history = AssistantThreadChatMessageHistory(store, thread.id)
    await call(history, "add_messages", [HumanMessage("q1", id="h1")])
    assert (await call(ChatCompletionThread, "retrieve", store, thread.id)).hwm is None
    await call(history, "add_messages", [AIMessage("a1"), HumanMessage("q2", id="h2")])
    assert (await call(ChatCompletionThread, "retrieve", store, thread.id)).hwm == "h1"
    await call(history, "add_messages", [AIMessage("a2")])
    assert (await call(ChatCompletionThread, "retrieve", store, thread.id)).hwm == "h2"


async def test_a_plain_thread_gets_no_hwm(store: BaseStore, call: Call) -> None:
    history = await new_history(call, store)
    await call(history, "add_messages", [HumanMessage("q"), AIMessage("a")])
    assert (await call(store, "get_thread", history.thread_id)).metadata == {
        "retro_class": BaseThread.record_class
    }


@pytest.mark.parametrize(("window", "expected"), [(1, 9), (3, 7), (10, 0), (50, 0)])
async def test_window_returns_newest_in_order(
    store: BaseStore, call: Call, window: int, expected: int
) -> None:
    full = await new_history(call, store)
    await call(full, "add_messages", [HumanMessage(f"m{i}") for i in range(10)])
    windowed = AssistantThreadChatMessageHistory(store, full.thread_id, window=window)
    got = await call.messages(windowed)
    assert contents(got) == [f"m{i}" for i in range(expected, 10)]
    everything = await call.messages(full)
    assert [m.id for m in got] == [m.id for m in everything[expected:]]


@pytest.mark.parametrize("window", [0, -1])
def test_window_must_be_positive(store: BaseStore, window: int) -> None:
    with pytest.raises(RetroValueError, match="window"):
        AssistantThreadChatMessageHistory(store, "thread_x", window=window)


async def test_clear_keeps_thread_and_resets_hwm(store: BaseStore, call: Call) -> None:
    assistant = await call(Assistant, "create", store, model="m")
    thread = await call(
        ChatCompletionThread,
        "create",
        store,
        assistant_id=assistant.id,
        chat_completion_model="x",
        metadata={"k": "v"},
    )
    history = AssistantThreadChatMessageHistory(store, thread.id)
    await call(history, "add_messages", [HumanMessage("q"), AIMessage("a")])
    last = (await call.messages(history))[-1]
    thread = await call(thread, "update", store, hwm=last.id)
    assert thread.hwm == last.id

    await call(history, "clear")
    assert await call.messages(history) == []
    after = await call(ChatCompletionThread, "retrieve", store, thread.id)
    assert after.hwm is None
    assert (after.assistant_id, after.chat_completion_model) == (assistant.id, "x")
    assert after.metadata == {"k": "v"}

    await call(history, "add_messages", [HumanMessage("again")])
    assert contents(await call.messages(history)) == ["again"]


async def test_clear_plain_thread(store: BaseStore, call: Call) -> None:
    history = await new_history(call, store)
    await call(history, "add_messages", [HumanMessage("q")])
    await call(history, "clear")
    assert await call.messages(history) == []
    await call(history, "clear")  # clearing an empty thread is fine
    assert (await call(BaseThread, "retrieve", store, history.thread_id)).id


@pytest.mark.parametrize("window", [None, 5])
async def test_unknown_thread(store: BaseStore, call: Call, window: int | None) -> None:
    history = AssistantThreadChatMessageHistory(store, UNKNOWN_THREAD, window=window)
    for method, args in (("add_messages", ([HumanMessage("x")],)), ("clear", ())):
        with pytest.raises(ThreadNotFoundError) as caught:
            await call(history, method, *args)
        assert caught.value.object_id == UNKNOWN_THREAD
        assert isinstance(caught.value, LookupError)
        assert "for_session" in str(caught.value)
    with pytest.raises(ThreadNotFoundError, match="for_session"):
        await call.messages(history)


# --- inside RunnableWithMessageHistory -----------------------------------------------


def replies() -> Iterator[AIMessage]:
    for turn in count(1):
        yield AIMessage(
            f"Reply number {turn} has several words in it.",
            usage_metadata=USAGE,
            response_metadata={"model_name": "fake"},
        )


def chain(
    store: BaseStore, seen: list[list[BaseMessage]]
) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a test."),
            MessagesPlaceholder("history"),
            ("human", "{input}"),
        ]
    )

    def record(value: Any) -> Any:
        seen.append(value.to_messages())
        return value

    model = GenericFakeChatModel(messages=replies())
    return RunnableWithMessageHistory(
        prompt | RunnableLambda(record) | model,
        lambda session_id: AssistantThreadChatMessageHistory(store, session_id),
        input_messages_key="input",
        history_messages_key="history",
    )


async def run_turn(runnable: Any, how: str, text: str, thread_id: str) -> str:
    config = {"configurable": {"session_id": thread_id}}
    payload = {"input": text}
    if how == "invoke":
        return str(runnable.invoke(payload, config).content)
    if how == "ainvoke":
        return str((await runnable.ainvoke(payload, config)).content)
    if how == "stream":
        chunks = list(runnable.stream(payload, config))
    else:
        chunks = [chunk async for chunk in runnable.astream(payload, config)]
    assert len(chunks) > 1  # really streamed
    return "".join(str(c.content) for c in chunks)


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
async def test_runnable_with_message_history(store: BaseStore, how: str) -> None:
    thread = await BaseThread.acreate(store)
    seen: list[list[BaseMessage]] = []
    runnable = chain(store, seen)

    first = await run_turn(runnable, how, "Hello there", thread.id)
    second = await run_turn(runnable, how, "And again", thread.id)
    assert first == "Reply number 1 has several words in it."
    assert second == "Reply number 2 has several words in it."

    stored = AssistantThreadChatMessageHistory(store, thread.id).messages
    assert [(type(m), m.content) for m in stored] == [
        (HumanMessage, "Hello there"),
        (AIMessage, first),
        (HumanMessage, "And again"),
        (AIMessage, second),
    ]
    # Input messages come without ids and get the store's; the model's replies
    # keep the ids LangChain gave them, as in InMemoryChatMessageHistory.
    assert all(m.id is not None and m.id.startswith("msg_") for m in stored[::2])
    assert all(m.id is not None and not m.id.startswith("msg_") for m in stored[1::2])
    if how in ("invoke", "ainvoke"):  # the fake model streams words only
        assert isinstance(stored[1], AIMessage)
        assert stored[1].usage_metadata == USAGE
        assert stored[1].response_metadata == {"model_name": "fake"}
    # The model saw the stored history on the second turn.
    assert [m.content for m in seen[1]] == [
        "You are a test.",
        "Hello there",
        first,
        "And again",
    ]
    assert store.count_messages(thread.id) == 4


# --- rebuilt messages are cached, handed out as copies ------------------------------


async def test_changing_a_read_message_changes_neither_store_nor_later_reads(
    store: BaseStore, call: Call
) -> None:
    history = await new_history(call, store)
    await call(history, "add_messages", [HumanMessage("q1"), AIMessage("a1")])
    first = await call.messages(history)
    first[0].content = "tampered"  # reassigned fields stay with this reader
    first[1].response_metadata = {"y": 2}
    again = await call.messages(history)
    assert contents(again) == ["q1", "a1"]
    assert again[1].response_metadata == {}
    assert again[0] is not first[0]
    stored = await call(store, "list_messages", history.thread_id)
    assert [r.payload for r in stored] == [
        '{"type":"human","content":"q1"}',
        '{"type":"ai","content":"a1"}',
    ]


async def test_a_deleted_message_is_not_served_from_the_cache(
    store: BaseStore, call: Call
) -> None:
    history = await new_history(call, store)
    await call(history, "add_messages", [HumanMessage("q1"), AIMessage("a1")])
    read = await call.messages(history)
    assert read[0].id is not None
    await call(store, "delete_message", history.thread_id, read[0].id)
    assert contents(await call.messages(history)) == ["a1"]
    await call(history, "clear")
    assert await call.messages(history) == []


def test_message_cache_evicts_the_least_recently_used() -> None:
    from langchain_retro._messages import MessageCache, to_payload  # noqa: PLC0415

    rows = [(f"msg_{i}", to_payload(HumanMessage(f"m{i}"))) for i in range(3)]
    cache = MessageCache(2)
    first = cache.rebuild(rows[:2])
    assert cache.rebuild(rows[:1])[0] is first[0]  # served, and now most recent
    cache.rebuild(rows[2:])  # evicts msg_1, the least recently used
    assert cache.rebuild(rows[:1])[0] is first[0]
    assert cache.rebuild(rows[1:2])[0] is not first[1]
    copies = cache.rebuild(rows[:1], copy=True)
    assert copies[0] == first[0]
    assert copies[0] is not first[0]
    assert MessageCache(0).rebuild(rows[:1])[0] is not first[0]
