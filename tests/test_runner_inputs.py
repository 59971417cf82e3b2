"""`ThreadRunner` input, config and model checks, and a prompt's system message.

Bad input, a bad config or a model outside the ``BaseChatOpenAI`` family raises
`RetroValueError` before anything is stored or sent. System messages in a run's input
are that run's additional instructions: sent, never stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from _runs import cfg, sent, stored
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    ChatCompletionThread,
    NothingToRunError,
    RetroValueError,
    ThreadRunner,
)
from langchain_retro.testing import FakeChatServer

if TYPE_CHECKING:
    from _helpers import Caller as Call
    from langchain_openai import ChatOpenAI

    from langchain_retro.stores.base import BaseStore

pytest_plugins = ["_helpers"]


def new_thread(store: BaseStore) -> ChatCompletionThread:
    assistant = Assistant.create(store, model="gpt-test", instructions="Be brief.")
    return ChatCompletionThread.create(store, assistant_id=assistant.id)


async def consume(runner: ThreadRunner, mode: str, value: Any, config: Any) -> None:
    if mode == "sync":
        list(runner.stream(value, config))
    else:
        [chunk async for chunk in runner.astream(value, config)]


# --- item 1: what is message-like ----------------------------------------------------

NOT_MESSAGE_LIKE = [
    {"question": "What is 2+2?", "context": "math"},
    42,
    {"hi", "there"},
    b"bytes",
    3.5,
    object(),
    {"role": "user"},
    {"role": "bogus", "content": "x"},
    {"type": "text", "text": "a content block"},
    ["fine", 42],
    ["fine", {"question": "q"}],
    [("user", "a", "b")],
    [("user", 42)],
    [("bogus", "x")],
]


@pytest.mark.parametrize(
    "value",
    NOT_MESSAGE_LIKE,
    ids=[
        "variables-dict",
        "int",
        "set",
        "bytes",
        "float",
        "object",
        "dict-without-content",
        "unknown-role",
        "content-block",
        "list-with-int",
        "list-with-variables",
        "triple",
        "tuple-with-int",
        "tuple-with-unknown-role",
    ],
)
async def test_input_that_is_not_message_like_is_refused_and_nothing_stored(
    store: BaseStore,
    server: FakeChatServer,
    llm: ChatOpenAI,
    call: Call,
    value: Any,
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, wait_timeout=0)
    with pytest.raises(RetroValueError, match="not message-like") as caught:
        await call(runner, "invoke", value, cfg(thread))
    message = str(caught.value)
    assert "a message dict such as" in message
    assert "PromptValue" in message
    assert "Nothing was stored" in message
    with pytest.raises(RetroValueError, match="not message-like"):
        await consume(runner, call.mode, value, cfg(thread))
    assert stored(store, thread) == []
    assert server.requests == []
    # The lease was never taken: a good run right after goes at once.
    await call(runner, "invoke", "hi", cfg(thread))
    assert [m.content for m in stored(store, thread)] == ["hi", "echo: hi"]


async def test_a_dict_of_prompt_variables_gets_a_hint(
    store: BaseStore, llm: ChatOpenAI, call: Call
) -> None:
    runner = ThreadRunner(store=store, llm=llm)
    with pytest.raises(RetroValueError, match=r"keys \['question', 'context'\]") as e:
        await call(
            runner,
            "invoke",
            {"question": "q", "context": "c"},
            cfg(new_thread(store)),
        )
    assert "ChatPromptTemplate" in str(e.value)


async def test_a_message_dict_is_one_message_with_its_extra_keys(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    await call(
        runner, "invoke", {"role": "user", "content": "hi", "name": "ann"}, cfg(thread)
    )
    first = stored(store, thread)[0]
    assert isinstance(first, HumanMessage)
    assert (first.content, first.name) == ("hi", "ann")
    assert server.requests[0].messages[-1] == {
        "role": "user",
        "content": "hi",
        "name": "ann",
    }


# --- item 8 and kin: config, options and model ---------------------------------------


def with_thread(**config: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": "thread_abc"}, **config}


@pytest.mark.parametrize(
    "config",
    [
        "thread_abc",
        ["thread_abc"],
        {"configurable": "thread_abc"},
        with_thread(tags="urgent"),
        with_thread(tags=5),
        with_thread(callbacks=5),
        with_thread(metadata="x"),
        with_thread(run_name=5),
    ],
    ids=[
        "str",
        "list",
        "configurable-str",
        "tags-str",
        "tags",
        "callbacks",
        "meta",
        "name",
    ],
)
async def test_a_malformed_config_is_refused(
    store: BaseStore,
    server: FakeChatServer,
    llm: ChatOpenAI,
    call: Call,
    config: Any,
) -> None:
    runner = ThreadRunner(store=store, llm=llm)
    with pytest.raises(RetroValueError, match=r"(?i)config.* is a .*, not a"):
        await call(runner, "invoke", "hi", config)
    with pytest.raises(RetroValueError, match=r"(?i)config.* is a .*, not a"):
        await consume(runner, call.mode, "hi", config)
    assert server.requests == []


@pytest.mark.parametrize(
    "llm",
    [FakeListChatModel(responses=["x"]), "gpt-4o-mini", None],
    ids=["fake-list-chat-model", "str", "none"],
)
def test_a_model_outside_the_chat_openai_family_is_refused(
    store: BaseStore, llm: Any
) -> None:
    with pytest.raises(RetroValueError, match="needs a ChatOpenAI"):
        ThreadRunner(store=store, llm=llm)


def test_options_of_the_wrong_type_are_refused(
    store: BaseStore, llm: ChatOpenAI
) -> None:
    for bad in (
        {"window": "ten"},
        {"store": "retro.db"},
        {"wait_timeout": "soon"},
        {"tools": "add"},
        {"tools": {"type": "function"}},
        {"tools": [42]},
        {"windw": 5},  # a typo is not silently ignored
    ):
        options: dict[str, Any] = {"store": store, "llm": llm, **bad}
        with pytest.raises(RetroValueError, match="ThreadRunner"):
            ThreadRunner(**options)


async def test_keyword_arguments_the_request_cannot_take_are_refused(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm)
    with pytest.raises(RetroValueError, match=r"\['colour', 'foo'\]"):
        await call(runner, "invoke", "hi", cfg(thread), foo=1, colour="red")
    with pytest.raises(RetroValueError, match="foo"):
        await call(runner.bind(foo=1), "invoke", "hi", cfg(thread))
    with pytest.raises(RetroValueError, match="foo"):
        await consume(runner.bind(foo=1), call.mode, "hi", cfg(thread))
    assert stored(store, thread) == []
    assert server.requests == []
    # Request parameters and extra_body pass.
    await call(
        runner, "invoke", "hi", cfg(thread), seed=7, extra_body={"top_k": 3}, stop="x"
    )
    assert server.requests[0].body["seed"] == 7
    assert server.requests[0].body["top_k"] == 3


# --- item 7: system messages in the input are this run's instructions ----------------


async def test_a_prompt_in_front_sends_its_system_message_without_storing_it(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer in {language}."), ("human", "{text}")]
    )
    chain = prompt | ThreadRunner(store=store, llm=llm)
    await call(chain, "invoke", {"language": "French", "text": "one"}, cfg(thread))
    await call(chain, "invoke", {"language": "German", "text": "two"}, cfg(thread))

    assert [(m.type, m.content) for m in stored(store, thread)] == [
        ("human", "one"),
        ("ai", "echo: one"),
        ("human", "two"),
        ("ai", "echo: two"),
    ]
    assert sent(server.requests[0]) == [
        ("system", "Be brief."),
        ("system", "Answer in French."),
        ("user", "one"),
    ]
    # Each turn's instructions are its own: the first turn's are not repeated.
    assert sent(server.requests[1]) == [
        ("system", "Be brief."),
        ("system", "Answer in German."),
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
    ]


async def test_instructions_alone_answer_what_is_pending(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    runner = ThreadRunner(store=store, llm=llm, max_tokens_context=10_000)
    AssistantThreadChatMessageHistory(store, thread.id).add_messages(
        [HumanMessage("posted")]
    )
    await call(runner, "invoke", [SystemMessage("Be terse.")], cfg(thread))
    assert sent(server.requests[0]) == [
        ("system", "Be brief."),
        ("system", "Be terse."),
        ("user", "posted"),
    ]
    with pytest.raises(NothingToRunError):
        await call(runner, "invoke", SystemMessage("Be terse."), cfg(thread))
    assert [m.type for m in stored(store, thread)] == ["human", "ai"]


async def test_instructions_count_against_the_token_budget(
    store: BaseStore, server: FakeChatServer, llm: ChatOpenAI, call: Call
) -> None:
    thread = new_thread(store)
    AssistantThreadChatMessageHistory(store, thread.id).add_messages(
        [HumanMessage("old " * 50), AIMessage("reply " * 50)]
    )
    runner = ThreadRunner(store=store, llm=llm, max_tokens_context=200)
    await call(runner, "invoke", "new", cfg(thread))
    assert [role for role, _ in sent(server.requests[0])] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    await call(runner, "invoke", [SystemMessage("long " * 150), "newer"], cfg(thread))
    # The instructions take the budget: only the newest turn still fits.
    assert sent(server.requests[1])[:2] == [
        ("system", "Be brief."),
        ("system", "long " * 150),
    ]
    assert sent(server.requests[1])[2:] == [("user", "newer")]
