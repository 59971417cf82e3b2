"""`ThreadRunner` over real HTTP: what each run sends, stores and refuses.

Every test talks to `FakeChatServer` through a real `ChatOpenAI`, and asserts on the
requests the server recorded. Concurrency (leases, in-flight posts, batches) is in
``test_runnables_concurrency.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import openai
import pytest
from _runs import cfg, hwm, sent, stored
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from pydantic import BaseModel, ValidationError

from langchain_retro import (
    Assistant,
    AssistantNotFoundError,
    AssistantThreadChatMessageHistory,
    BaseAssistant,
    BaseThread,
    ChatCompletionThread,
    ModelCallError,
    NothingToRunError,
    RecordClassError,
    RetroValueError,
    SQLiteStore,
    ThreadMessage,
    ThreadNotFoundError,
    ThreadRunner,
)
from langchain_retro.runnables import CHAT_COMPLETION_PARAMETERS
from langchain_retro.stores.base import BaseStore
from langchain_retro.testing import FakeChatServer, ScriptedReply

if TYPE_CHECKING:
    from pathlib import Path

    from _helpers import Caller as Call
    from langchain_openai import ChatOpenAI

pytest_plugins = ["_helpers"]

UNKNOWN_THREAD = "thread_00000000000000000000000000"


# --- fixtures and helpers ------------------------------------------------------------


def new_thread(
    store: BaseStore, assistant: BaseAssistant | None = None, **thread_fields: Any
) -> ChatCompletionThread:
    if assistant is None:
        assistant = Assistant.create(
            store, model="gpt-test", instructions="Be brief.", temperature=0.2
        )
    return ChatCompletionThread.create(
        store, assistant_id=assistant.id, **thread_fields
    )


def kinds(messages: list[BaseMessage]) -> list[tuple[str, Any]]:
    return [(m.type, m.content) for m in messages]


async def collect(
    runner: Any, mode: str, value: Any, config: RunnableConfig, **kwargs: Any
) -> list[AIMessageChunk]:
    if mode == "sync":
        return list(runner.stream(value, config, **kwargs))
    return [chunk async for chunk in runner.astream(value, config, **kwargs)]


# --- what a run sends ----------------------------------------------------------------


async def test_run_sends_assistant_settings_and_stores_reply(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    assistant = Assistant.create(
        store, model="gpt-a", instructions="Be brief.", temperature=0.3, top_p=0.9
    )
    thread = new_thread(store, assistant)
    runner = ThreadRunner(store=store, llm=llm)

    reply = await call(runner, "invoke", "Hello there", cfg(thread))

    (request,) = server.requests
    assert request.model == "gpt-a"
    assert (request.temperature, request.top_p) == (0.3, 0.9)
    assert sent(request) == [("system", "Be brief."), ("user", "Hello there")]
    assert isinstance(reply, AIMessage)
    assert reply.content == "echo: Hello there"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["total_tokens"] > 0
    assert reply.response_metadata["model_name"] == "gpt-a"
    messages = stored(store, thread)
    assert kinds(messages) == [("human", "Hello there"), ("ai", "echo: Hello there")]
    assert reply == messages[1]
    assert reply.id is not None
    assert reply.id.startswith("msg_")
    assert hwm(store, thread) == messages[0].id


async def test_unset_settings_are_left_to_the_llm(
    store: BaseStore, server: FakeChatServer, call: Call
) -> None:
    assistant = Assistant.create(store, model="gpt-b")
    thread = new_thread(store, assistant)
    async with server.achat_model(temperature=0.7) as model:
        runner = ThreadRunner(store=store, llm=model)
        await call(runner, "invoke", "hi", cfg(thread))
    (request,) = server.requests
    assert request.model == "gpt-b"
    assert request.temperature == 0.7
    assert "top_p" not in request.body
    assert sent(request) == [("user", "hi")]


async def test_thread_model_overrides_assistant_model(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store, chat_completion_model="llama3.2")
    runner = ThreadRunner(store=store, llm=llm)
    await call(runner, "invoke", "hi", cfg(thread))
    assert server.requests[0].model == "llama3.2"


PROMPT = ChatPromptTemplate.from_messages([("human", "{x}")])


@pytest.mark.parametrize(
    "case",
    [
        ("text", [("human", "text")]),
        (HumanMessage("one message"), [("human", "one message")]),
        (
            [HumanMessage("a"), AIMessage("b"), HumanMessage("c")],
            [("human", "a"), ("ai", "b"), ("human", "c")],
        ),
        (
            [("user", "tuple"), {"role": "user", "content": "dict"}, ["human", "l"]],
            [("human", "tuple"), ("human", "dict"), ("human", "l")],
        ),
        (PROMPT.invoke({"x": "prompt value"}), [("human", "prompt value")]),
        ({"role": "user", "content": "one dict"}, [("human", "one dict")]),
        ({"type": "human", "content": "typed dict"}, [("human", "typed dict")]),
        (("user", "one tuple"), [("human", "one tuple")]),
        (("a", "b"), [("human", "a"), ("human", "b")]),
        ([PROMPT.invoke({"x": "p"}), "s"], [("human", "p"), ("human", "s")]),
    ],
    ids=[
        "str",
        "message",
        "messages",
        "message-likes",
        "prompt-value",
        "message-dict",
        "type-dict",
        "role-tuple",
        "str-tuple",
        "prompt-values",
    ],
)
async def test_input_kinds_are_appended_then_answered(
    store: BaseStore,
    server: FakeChatServer,
    llm: ChatOpenAI,
    call: Call,
    case: tuple[Any, list[tuple[str, Any]]],
) -> None:
    value, expected = case
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    await call(runner, "invoke", value, cfg(thread))
    messages = stored(store, thread)
    assert kinds(messages[:-1]) == expected
    assert messages[-1].type == "ai"
    roles = {"human": "user", "ai": "assistant"}
    assert sent(server.requests[0])[1:] == [
        (roles[kind], content) for kind, content in expected
    ]
    assert hwm(store, thread) == messages[-2].id


async def test_none_answers_what_others_posted(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    ThreadMessage.create(store, thread_id=thread.id, message=HumanMessage("posted"))
    ThreadMessage.create(store, thread_id=thread.id, message=HumanMessage("twice"))
    runner = ThreadRunner(store=store, llm=llm)

    reply = await call(runner, "invoke", None, cfg(thread))

    assert reply.content == "echo: twice"
    assert sent(server.requests[0])[1:] == [("user", "posted"), ("user", "twice")]
    assert hwm(store, thread) == stored(store, thread)[1].id
    with pytest.raises(NothingToRunError) as caught:
        await call(runner, "invoke", None, cfg(thread))
    assert caught.value.thread_id == thread.id
    assert len(server.requests) == 1


async def test_none_on_a_new_thread_has_nothing_to_run(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    for value in (None, []):
        with pytest.raises(NothingToRunError, match=thread.id):
            await call(runner, "invoke", value, cfg(thread))
    # An assistant message is not waiting for an answer either.
    with pytest.raises(NothingToRunError):
        await call(runner, "invoke", AIMessage("said by someone"), cfg(thread))
    assert server.requests == []
    assert kinds(stored(store, thread)) == [("ai", "said by someone")]


# --- refusals before any model call ---------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [None, {}, {"configurable": {}}, {"configurable": {"thread_id": ""}}],
    ids=["no-config", "empty", "no-key", "empty-id"],
)
async def test_missing_thread_id(
    store: BaseStore,
    server: FakeChatServer,
    llm: ChatOpenAI,
    call: Call,
    config: RunnableConfig | None,
) -> None:
    runner = ThreadRunner(store=store, llm=llm)
    with pytest.raises(RetroValueError, match=r'\["configurable"\]\["thread_id"\]'):
        await call(runner, "invoke", "hi", config)
    with pytest.raises(ValueError, match="thread_id"):
        await collect(runner, call.mode, "hi", config or {})
    assert server.requests == []


async def test_unknown_thread(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    runner = ThreadRunner(store=store, llm=llm)
    with pytest.raises(ThreadNotFoundError) as caught:
        await call(runner, "invoke", "hi", cfg(UNKNOWN_THREAD))
    assert caught.value.object_id == UNKNOWN_THREAD
    with pytest.raises(ThreadNotFoundError):
        await collect(runner, call.mode, "hi", cfg(UNKNOWN_THREAD))
    assert server.requests == []


async def test_thread_must_be_a_chat_completion_thread(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    plain = BaseThread.create(store)
    runner = ThreadRunner(store=store, llm=llm)
    with pytest.raises(RecordClassError, match=r"ChatCompletionThread\.create"):
        await call(runner, "invoke", "hi", cfg(plain))
    assert server.requests == []
    assert stored(store, plain) == []
    # The lease was given back: a good thread right after runs at once.
    runner = ThreadRunner(store=store, llm=llm, wait_timeout=0)
    await call(runner, "invoke", "hi", cfg(new_thread(store)))


async def test_missing_assistant(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    assistant = Assistant.create(store, model="m")
    thread = new_thread(store, assistant)
    assistant.delete(store, threads="keep")
    runner = ThreadRunner(store=store, llm=llm)
    with pytest.raises(AssistantNotFoundError) as caught:
        await call(runner, "invoke", "hi", cfg(thread))
    assert caught.value.object_id == assistant.id
    assert server.requests == []


def test_options_are_validated(store: BaseStore, server: FakeChatServer) -> None:
    llm = server.chat_model()
    for bad in ({"window": 0}, {"max_tokens_context": 0}, {"wait_timeout": -1}):
        # One error tree: the pydantic error is chained, not raised.
        with pytest.raises(RetroValueError, match=next(iter(bad))) as caught:
            ThreadRunner(store=store, llm=llm, **bad)
        assert isinstance(caught.value.__cause__, ValidationError)
    with pytest.raises(ValueError, match="reasoning_effort"):
        ThreadRunner(store=store, llm=server.chat_model(reasoning={"effort": "low"}))


# --- model settings per run ----------------------------------------------------------


class TunedAssistant(BaseAssistant):
    """An assistant subclass whose typed fields shape the request."""

    max_tokens: int
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    team: str = "support"


async def test_typed_assistant_fields_reach_the_request(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    assistant = TunedAssistant.create(
        store,
        model="gpt-json",
        max_tokens=64,
        response_format={"type": "json_object"},
    )
    thread = new_thread(store, assistant)
    runner = ThreadRunner(store=store, llm=llm)
    server.enqueue('{"ok": true}')
    reply = await call(runner, "invoke", "answer in JSON", cfg(thread))
    assert reply.content == '{"ok": true}'
    body = server.requests[0].body
    assert server.requests[0].max_tokens == 64
    assert body["response_format"] == {"type": "json_object"}
    assert "seed" not in body  # None is not sent
    assert "team" not in body  # not a Chat Completions parameter
    assert {"max_tokens", "response_format", "seed"} <= CHAT_COMPLETION_PARAMETERS


async def test_invoke_keyword_arguments_win(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    await call(runner.bind(temperature=1.5, stop=["\n"]), "invoke", "hi", cfg(thread))
    request = server.requests[0]
    assert (request.temperature, request.stop) == (1.5, ["\n"])


async def test_responses_api_llm_is_pinned_to_chat_completions(
    store: BaseStore, server: FakeChatServer, call: Call
) -> None:
    thread = new_thread(store)
    async with server.achat_model(model="gpt-5-pro") as model:
        assert model._use_responses_api({})
        before = model.model_dump()
        runner = ThreadRunner(store=store, llm=model)
        await call(runner, "invoke", "hi", cfg(thread))
        assert model.model_dump() == before
        assert runner.llm is model
    assert server.requests[0].path == "/v1/chat/completions"


# --- context: whole thread, window, token budget -------------------------------------


async def test_whole_thread_is_the_default_context(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    for turn in range(3):
        await call(runner, "invoke", f"q{turn}", cfg(thread))
    assert sent(server.requests[-1]) == [
        ("system", "Be brief."),
        ("user", "q0"),
        ("assistant", "echo: q0"),
        ("user", "q1"),
        ("assistant", "echo: q1"),
        ("user", "q2"),
    ]


async def test_window_sends_the_newest_messages(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    history.add_messages(
        [HumanMessage(f"m{i}") if i % 2 else AIMessage(f"m{i}") for i in range(2000)]
    )
    runner = ThreadRunner(store=store, llm=llm, window=4)
    await call(runner, "invoke", "last", cfg(thread))
    assert sent(server.requests[0]) == [
        ("system", "Be brief."),
        ("user", "m1997"),
        ("assistant", "m1998"),
        ("user", "m1999"),
        ("user", "last"),
    ]


async def test_window_drops_orphan_tool_results(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    call_ai = AIMessage(
        "", tool_calls=[{"name": "f", "args": {}, "id": "c1", "type": "tool_call"}]
    )
    AssistantThreadChatMessageHistory(store, thread.id).add_messages(
        [
            HumanMessage("q"),
            call_ai,
            ToolMessage("r1", tool_call_id="c1"),
            ToolMessage("r2", tool_call_id="c1"),
            AIMessage("done"),
        ]
    )
    runner = ThreadRunner(store=store, llm=llm, window=4)
    await call(runner, "invoke", "next", cfg(thread))
    assert sent(server.requests[0]) == [
        ("system", "Be brief."),
        ("assistant", "done"),
        ("user", "next"),
    ]


async def test_window_reaches_back_to_an_older_pending_message(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    # Notes stored as plain records answer nothing (the history's replies would).
    for message in [HumanMessage("old"), HumanMessage("question")] + [
        AIMessage(f"note {i}") for i in range(5)
    ]:
        ThreadMessage.create(store, thread_id=thread.id, message=message)
    runner = ThreadRunner(store=store, llm=llm, window=2)
    await call(runner, "invoke", None, cfg(thread))
    # The context ends at the last pending message, however old.
    assert sent(server.requests[0])[1:] == [("user", "old"), ("user", "question")]
    assert hwm(store, thread) == stored(store, thread)[1].id


@pytest.mark.parametrize("cache", [0, 1, 20_000])
async def test_message_cache_never_changes_what_is_sent(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call, cache: int
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, message_cache_size=cache)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    for turn in range(3):
        await call(runner, "invoke", f"q{turn}", cfg(thread))
        history.add_messages([HumanMessage(f"aside {turn}")])
    last = history.messages[-2]
    assert last.id is not None
    store.delete_message(thread.id, last.id)
    await call(runner, "invoke", None, cfg(thread))
    assert sent(server.requests[-1])[1:] == [
        ("user", "q0"),
        ("assistant", "echo: q0"),
        ("user", "aside 0"),
        ("user", "q1"),
        ("assistant", "echo: q1"),
        ("user", "aside 1"),
        ("user", "q2"),
        ("user", "aside 2"),
    ]


async def test_token_budget_keeps_the_newest_messages(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    AssistantThreadChatMessageHistory(store, thread.id).add_messages(
        [HumanMessage("x" * 400), AIMessage("y" * 400)]
    )

    def count(messages: list[BaseMessage]) -> int:
        return sum(len(str(m.content)) for m in messages)

    runner = ThreadRunner(
        store=store, llm=llm, max_tokens_context=450, token_counter=count
    )
    await call(runner, "invoke", "short", cfg(thread))
    assert sent(server.requests[0]) == [
        ("system", "Be brief."),
        ("assistant", "y" * 400),
        ("user", "short"),
    ]
    # The newest turn is sent even when it alone is over the budget.
    runner = ThreadRunner(
        store=store, llm=llm, max_tokens_context=5, token_counter=count
    )
    await call(runner, "invoke", "a longer question", cfg(thread))
    assert sent(server.requests[1])[1:] == [("user", "a longer question")]


# --- failures ------------------------------------------------------------------------


async def test_failed_call_leaves_the_thread_unanswered(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, wait_timeout=0)
    await call(runner, "invoke", "first", cfg(thread))
    before = hwm(store, thread)

    server.fail_next(500)
    with pytest.raises(ModelCallError) as caught:
        await call(runner, "invoke", "second", cfg(thread))
    assert isinstance(caught.value.__cause__, openai.InternalServerError)
    assert caught.value.thread_id == thread.id
    assert hwm(store, thread) == before
    assert kinds(stored(store, thread))[-1] == ("human", "second")  # input kept

    # The lease was given back, and a run with no input answers the kept input.
    reply = await call(runner, "invoke", None, cfg(thread))
    assert reply.content == "echo: second"
    assert [k for k, _ in kinds(stored(store, thread))] == ["human", "ai"] * 2


@pytest.mark.parametrize("window", [None, 1, 3])
async def test_rerun_with_the_same_input_does_not_append_it_twice(
    store: BaseStore,
    server: FakeChatServer,
    llm: ChatOpenAI,
    call: Call,
    window: int | None,
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, window=window)
    server.fail_next(503, count=2)
    question = [HumanMessage("a"), HumanMessage("b")]
    for _ in range(2):
        with pytest.raises(ModelCallError):
            await call(runner, "invoke", question, cfg(thread))
    await call(runner, "invoke", question, cfg(thread))
    assert kinds(stored(store, thread)) == [
        ("human", "a"),
        ("human", "b"),
        ("ai", "echo: b"),
    ]
    # Once answered, the same input is a new turn.
    await call(runner, "invoke", question, cfg(thread))
    assert len(stored(store, thread)) == 6
    # And the same input after someone else's message is a new turn too.
    server.fail_next(500)
    with pytest.raises(ModelCallError):
        await call(runner, "invoke", question, cfg(thread))
    ThreadMessage.create(store, thread_id=thread.id, message=HumanMessage("c"))
    await call(runner, "invoke", question, cfg(thread))
    assert [m.content for m in stored(store, thread)][6:] == [
        "a",
        "b",
        "c",
        "a",
        "b",
        "echo: b",
    ]


async def test_with_retry_retries_a_failed_call(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm).with_retry(
        stop_after_attempt=2, wait_exponential_jitter=False
    )
    server.fail_next(500)
    reply = await call(runner, "invoke", "hi", cfg(thread))
    assert reply.content == "echo: hi"
    assert len(server.requests) == 2
    assert kinds(stored(store, thread)) == [("human", "hi"), ("ai", "echo: hi")]


# --- streaming -----------------------------------------------------------------------


async def test_stream_yields_chunks_and_stores_one_reply(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    chunks = await collect(runner, call.mode, "tell me a long story", cfg(thread))

    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.content]) >= 4
    assert "".join(str(c.content) for c in chunks) == "echo: tell me a long story"
    messages = stored(store, thread)
    assert kinds(messages) == [
        ("human", "tell me a long story"),
        ("ai", "echo: tell me a long story"),
    ]
    # The last chunk carries the stored id, so the sum of the chunks has it too.
    total = chunks[0] + chunks[1:]
    assert chunks[-1].id == messages[1].id == total.id
    assert messages[1].usage_metadata == total.usage_metadata
    assert server.requests[0].stream
    assert hwm(store, thread) == messages[0].id


async def test_stream_of_a_failed_call(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, wait_timeout=0)
    server.fail_next(500)
    with pytest.raises(ModelCallError):
        await collect(runner, call.mode, "hi", cfg(thread))
    assert kinds(stored(store, thread)) == [("human", "hi")]
    assert hwm(store, thread) is None
    await collect(runner, call.mode, None, cfg(thread))
    assert kinds(stored(store, thread))[-1] == ("ai", "echo: hi")


async def test_abandoned_stream_stores_nothing_and_frees_the_thread(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, mode: str
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, wait_timeout=0)
    words = " ".join(f"w{i}" for i in range(50))
    if mode == "sync":
        stream = runner.stream(words, cfg(thread))
        taken = [next(stream) for _ in range(3)]
        stream.close()
    else:
        astream = runner.astream(words, cfg(thread))
        taken = [await anext(astream) for _ in range(3)]
        await astream.aclose()
    assert "".join(str(c.content) for c in taken) == "echo: w0 "
    assert kinds(stored(store, thread)) == [("human", words)]
    assert hwm(store, thread) is None
    # wait_timeout=0: this fails at once unless the abandoned run freed the lease.
    reply = runner.invoke(None, cfg(thread))
    assert reply.content == f"echo: {words}"


# --- tools ---------------------------------------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_tool_calls_round_trip_through_the_store(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, tools=[add])
    server.enqueue(
        ScriptedReply(
            tool_calls=[
                {"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1"},
                {"name": "add", "args": {"a": 1, "b": 1}, "id": "call_2"},
            ]
        ),
        "2 + 3 = 5 and 1 + 1 = 2",
    )
    reply = await call(runner, "invoke", "add 2 and 3, then 1 and 1", cfg(thread))
    assert [(c["name"], c["args"], c["id"]) for c in reply.tool_calls] == [
        ("add", {"a": 2, "b": 3}, "call_1"),
        ("add", {"a": 1, "b": 1}, "call_2"),
    ]
    assert server.requests[0].tools[0]["function"]["name"] == "add"
    assert stored(store, thread)[-1] == reply

    results = [
        ToolMessage(str(add.invoke(c["args"])), tool_call_id=c["id"])
        for c in reply.tool_calls
    ]
    final = await call(runner, "invoke", results, cfg(thread))
    assert final.content == "2 + 3 = 5 and 1 + 1 = 2"
    sent_messages = server.requests[1].messages
    assert [m["role"] for m in sent_messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
    ]
    assert [c["id"] for c in sent_messages[2]["tool_calls"]] == ["call_1", "call_2"]
    assert [(m["tool_call_id"], m["content"]) for m in sent_messages[3:]] == [
        ("call_1", "5"),
        ("call_2", "2"),
    ]
    messages = stored(store, thread)
    assert [m.type for m in messages] == ["human", "ai", "tool", "tool", "ai"]
    assert messages[1].tool_calls == reply.tool_calls
    assert hwm(store, thread) == messages[3].id


async def test_streamed_tool_calls_are_stored_whole(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)

    class Weather(BaseModel):
        """Look up the weather."""

        city: str

    runner = ThreadRunner(store=store, llm=llm, tools=[Weather])
    server.enqueue(
        ScriptedReply(tool_calls=[{"name": "Weather", "args": {"city": "Lyon"}}])
    )
    await collect(runner, call.mode, "weather in Lyon?", cfg(thread))
    (call_message,) = [m for m in stored(store, thread) if m.type == "ai"]
    assert isinstance(call_message, AIMessage)
    assert [(c["name"], c["args"]) for c in call_message.tool_calls] == [
        ("Weather", {"city": "Lyon"})
    ]


# --- inside LCEL ---------------------------------------------------------------------


async def test_composes_with_other_runnables(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    chain = (
        RunnableLambda(lambda topic: f"Say something about {topic}")
        | runner
        | StrOutputParser()
    )
    text = await call(chain, "invoke", "owls", cfg(thread))
    assert text == "echo: Say something about owls"
    pieces = await collect(chain, call.mode, "cats", cfg(thread))
    assert "".join(pieces) == "echo: Say something about cats"
    bound = runner.with_config(configurable={"thread_id": thread.id})
    assert (await call(bound, "invoke", "bound")).content == "echo: bound"
    assert len(stored(store, thread)) == 6


async def test_batch_over_threads_with_one_config_each(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    threads = [new_thread(store) for _ in range(5)]
    runner = ThreadRunner(store=store, llm=llm)
    replies = await call(
        runner,
        "batch",
        [f"q{i}" for i in range(5)],
        [{**cfg(t), "max_concurrency": 2} for t in threads],
    )
    assert [r.content for r in replies] == [f"echo: q{i}" for i in range(5)]
    for i, thread in enumerate(threads):
        assert kinds(stored(store, thread)) == [
            ("human", f"q{i}"),
            ("ai", f"echo: q{i}"),
        ]


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: list[str] = []
        self.chat_parents: list[Any] = []
        self.runner_ids: list[Any] = []
        self.errors: list[tuple[str, Any]] = []
        self.ends: list[Any] = []

    def on_chain_error(
        self, error: BaseException, *, run_id: Any, **kwargs: Any
    ) -> None:
        self.errors.append((type(error).__name__, run_id))

    def on_chain_end(self, outputs: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.ends.append(run_id)

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: Any, **kwargs: Any
    ) -> None:
        self.chains.append(kwargs.get("name", ""))
        if kwargs.get("name") == "ThreadRunner":
            self.runner_ids.append(run_id)

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, parent_run_id: Any, **kwargs: Any
    ) -> None:
        self.chat_parents.append(parent_run_id)


async def test_callbacks_see_the_run_and_its_model_call(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    recorder = Recorder()
    config: RunnableConfig = {**cfg(thread), "callbacks": [recorder]}
    await call(runner, "invoke", "traced", config)
    await collect(runner, call.mode, "streamed", config)
    assert recorder.chains == ["ThreadRunner", "ThreadRunner"]
    assert recorder.chat_parents == recorder.runner_ids
    assert recorder.ends == recorder.runner_ids
    assert recorder.errors == []

    server.fail_next(400)
    with pytest.raises(ModelCallError):
        await call(runner, "invoke", "fails", config)
    assert recorder.errors == [("ModelCallError", recorder.runner_ids[-1])]


def test_config_specs_name_the_thread_id(store: BaseStore, llm: ChatOpenAI) -> None:
    runner = ThreadRunner(store=store, llm=llm)
    assert [spec.id for spec in runner.config_specs] == ["thread_id"]
    assert (
        "thread_id"
        in runner.config_schema().model_json_schema()["$defs"]["Configurable"][
            "properties"
        ]
    )


async def test_astream_events_show_the_model_streaming_inside_the_run(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    events = [
        (event["event"], event["name"])
        async for event in runner.astream_events("hi there", cfg(thread))
    ]
    assert events[0] == ("on_chain_start", "ThreadRunner")
    assert events[-1] == ("on_chain_end", "ThreadRunner")
    assert ("on_chat_model_stream", "ChatOpenAI") in events
    assert kinds(stored(store, thread))[-1] == ("ai", "echo: hi there")


# --- the store side of a run ---------------------------------------------------------


async def test_a_run_that_cannot_start_stores_nothing(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    assistant = Assistant.create(store, model="m")
    orphan = new_thread(store, assistant)
    assistant.delete(store, threads="keep")
    untuned = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, wait_timeout=0)
    with pytest.raises(AssistantNotFoundError):
        await call(runner, "invoke", "hi", cfg(orphan))
    tuned = runner.model_copy(update={"assistant_class": TunedAssistant})
    with pytest.raises(RecordClassError):
        await call(tuned, "invoke", "hi", cfg(untuned))
    for thread in (orphan, untuned):
        assert stored(store, thread) == []
        assert store.acquire_lease(thread.id, "next run", 30.0)  # given back
    assert server.requests == []


async def test_a_turn_is_two_store_transactions(
    tmp_path: Path, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    with SQLiteStore(tmp_path / "turns.db") as store:
        thread = new_thread(store)
        runner = ThreadRunner(store=store, llm=llm, window=50)
        await call(runner, "invoke", "first", cfg(thread))
        statements: list[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)
        try:
            await call(runner, "invoke", "second", cfg(thread))
        finally:
            store._conn.set_trace_callback(None)
    # begin_run (lease, thread, assistant, input, context), then finish_run.
    assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"] * 2
