"""LangChain's own `RunnableWithMessageHistory` scenarios, run on our history.

The scenarios of langchain-core's unit tests for ``RunnableWithMessageHistory``
(``tests/unit_tests/runnables/test_history.py``), written again here with
`AssistantThreadChatMessageHistory` on every store in place of the in-memory history,
sync and async. Where that suite compares whole messages, these compare type and
content: our messages also carry their store ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.runnables.utils import ConfigurableFieldSpec

from langchain_retro import AssistantThreadChatMessageHistory, BaseThread
from langchain_retro.stores.base import BaseStore

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers"]


class Sessions:
    """A thread per session key, created on first use; the suite's history store."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store
        self.threads: dict[Any, str] = {}

    def history(self, *key: Any) -> AssistantThreadChatMessageHistory:
        if key not in self.threads:
            self.threads[key] = BaseThread.create(self.store).id
        return AssistantThreadChatMessageHistory(self.store, self.threads[key])

    def stored(self, *key: Any) -> list[tuple[str, Any]]:
        return [(m.type, m.content) for m in self.history(*key).messages]


def said(messages: list[BaseMessage]) -> str:
    return "\n".join(str(m.content) for m in messages if isinstance(m, HumanMessage))


def session(session_id: str) -> RunnableConfig:
    return {"configurable": {"session_id": session_id}}


async def two_turns(
    call: Call,
    runnable: RunnableWithMessageHistory,
    first: Any,
    second: Any,
    config: RunnableConfig,
) -> tuple[Any, Any]:
    one = await call(runnable, "invoke", first, config)
    two = await call(runnable, "invoke", second, config)
    return one, two


def test_interfaces(store: BaseStore) -> None:
    history = Sessions(store).history("0")
    history.add_message(SystemMessage(content="system"))
    history.add_user_message("human 1")
    history.add_ai_message("ai")
    history.add_message(HumanMessage(content="human 2"))
    assert str(history) == "System: system\nHuman: human 1\nAI: ai\nHuman: human 2"


async def test_input_messages(store: BaseStore, call: Call) -> None:
    sessions = Sessions(store)
    runnable = RunnableWithMessageHistory(
        RunnableLambda(lambda messages: "you said: " + said(messages)),
        sessions.history,
    )
    outputs = await two_turns(
        call,
        runnable,
        [HumanMessage(content="hello")],
        [HumanMessage(content="good bye")],
        session("1"),
    )
    assert outputs == ("you said: hello", "you said: hello\ngood bye")
    assert sessions.stored("1") == [
        ("human", "hello"),
        ("ai", "you said: hello"),
        ("human", "good bye"),
        ("ai", "you said: hello\ngood bye"),
    ]


async def test_input_dict(store: BaseStore, call: Call) -> None:
    sessions = Sessions(store)
    runnable = RunnableWithMessageHistory(
        RunnableLambda(lambda value: "you said: " + said(value["messages"])),
        sessions.history,
        input_messages_key="messages",
    )
    outputs = await two_turns(
        call,
        runnable,
        {"messages": [HumanMessage(content="hello")]},
        {"messages": [HumanMessage(content="good bye")]},
        session("2"),
    )
    assert outputs == ("you said: hello", "you said: hello\ngood bye")


def _reply_to(value: dict[str, Any]) -> str:
    return "you said: " + "\n".join(
        [str(m.content) for m in value["history"] if isinstance(m, HumanMessage)]
        + [value["input"]]
    )


def _with_history_key(
    sessions: Sessions, body: Callable[[dict[str, Any]], Any], **kwargs: Any
) -> RunnableWithMessageHistory:
    return RunnableWithMessageHistory(
        RunnableLambda(body),
        sessions.history,
        input_messages_key="input",
        history_messages_key="history",
        **kwargs,
    )


async def test_input_dict_with_history_key(store: BaseStore, call: Call) -> None:
    runnable = _with_history_key(Sessions(store), _reply_to)
    outputs = await two_turns(
        call, runnable, {"input": "hello"}, {"input": "good bye"}, session("3")
    )
    assert outputs == ("you said: hello", "you said: hello\ngood bye")


async def test_output_message(store: BaseStore, call: Call) -> None:
    runnable = _with_history_key(Sessions(store), lambda v: AIMessage(_reply_to(v)))
    one, two = await two_turns(
        call, runnable, {"input": "hello"}, {"input": "good bye"}, session("4")
    )
    assert one == AIMessage(content="you said: hello")
    assert two == AIMessage(content="you said: hello\ngood bye")


async def test_output_messages(store: BaseStore, call: Call) -> None:
    sessions = Sessions(store)
    runnable = _with_history_key(sessions, lambda v: [AIMessage(_reply_to(v))])
    one, two = await two_turns(
        call, runnable, {"input": "hello"}, {"input": "good bye"}, session("5")
    )
    assert one == [AIMessage(content="you said: hello")]
    assert two == [AIMessage(content="you said: hello\ngood bye")]
    assert sessions.stored("5")[-1] == ("ai", "you said: hello\ngood bye")


async def test_output_dict(store: BaseStore, call: Call) -> None:
    runnable = _with_history_key(
        Sessions(store),
        lambda v: {"output": [AIMessage(_reply_to(v))]},
        output_messages_key="output",
    )
    one, two = await two_turns(
        call, runnable, {"input": "hello"}, {"input": "good bye"}, session("6")
    )
    assert one == {"output": [AIMessage(content="you said: hello")]}
    assert two == {"output": [AIMessage(content="you said: hello\ngood bye")]}


async def test_using_custom_config_specs(store: BaseStore, call: Call) -> None:
    sessions = Sessions(store)

    def get_session_history(
        user_id: str, conversation_id: str
    ) -> AssistantThreadChatMessageHistory:
        return sessions.history(user_id, conversation_id)

    runnable = RunnableWithMessageHistory(
        RunnableLambda(
            lambda value: [AIMessage("you said: " + said(value["messages"]))]
        ),
        get_session_history=get_session_history,
        input_messages_key="messages",
        history_messages_key="history",
        history_factory_config=[
            ConfigurableFieldSpec(
                id="user_id", annotation=str, default="", is_shared=True
            ),
            ConfigurableFieldSpec(
                id="conversation_id", annotation=str, default=None, is_shared=True
            ),
        ],
    )

    def config(user_id: str) -> RunnableConfig:
        return {"configurable": {"user_id": user_id, "conversation_id": "1"}}

    for text in ("hello", "goodbye"):
        result = await call(
            runnable, "invoke", {"messages": [HumanMessage(text)]}, config("user1")
        )
        assert result == [AIMessage(content=f"you said: {text}")]
    result = await call(
        runnable, "invoke", {"messages": [HumanMessage("meow")]}, config("user2")
    )
    assert result == [AIMessage(content="you said: meow")]
    assert set(sessions.threads) == {("user1", "1"), ("user2", "1")}
    assert sessions.stored("user1", "1") == [
        ("human", "hello"),
        ("ai", "you said: hello"),
        ("human", "goodbye"),
        ("ai", "you said: goodbye"),
    ]
    assert sessions.stored("user2", "1") == [
        ("human", "meow"),
        ("ai", "you said: meow"),
    ]


async def test_streamed_reply_is_stored_whole(store: BaseStore, mode: str) -> None:
    sessions = Sessions(store)
    model = GenericFakeChatModel(messages=iter([AIMessage("one two three")]))
    runnable = RunnableWithMessageHistory(model, sessions.history)
    config = session("7")
    if mode == "sync":
        chunks = list(runnable.stream([HumanMessage("count")], config))
    else:
        chunks = [c async for c in runnable.astream([HumanMessage("count")], config)]
    assert len(chunks) > 1
    assert sessions.stored("7") == [("human", "count"), ("ai", "one two three")]
    reply = sessions.history("7").messages[-1]
    assert type(reply) is AIMessage
    assert reply.id == chunks[0].id  # the model's id, kept


async def test_caller_ids_survive_the_round_trip(store: BaseStore, call: Call) -> None:
    sessions = Sessions(store)
    runnable = RunnableWithMessageHistory(
        RunnableLambda(lambda messages: AIMessage("ok", id=f"resp-{len(messages)}")),
        sessions.history,
    )
    await call(runnable, "invoke", [HumanMessage("hi", id="client-1")], session("8"))
    await call(runnable, "invoke", [HumanMessage("again", id="client-2")], session("8"))
    ids = [m.id for m in sessions.history("8").messages]
    assert ids == ["client-1", "resp-1", "client-2", "resp-3"]


@pytest.mark.parametrize("batch", ["batch", "abatch"])
async def test_sessions_stay_apart_in_a_batch(store: BaseStore, batch: str) -> None:
    sessions = Sessions(store)
    for key in "abc":  # created up front: a batch calls the factory from threads
        sessions.history(key)
    runnable = RunnableWithMessageHistory(
        RunnableLambda(lambda messages: "you said: " + said(messages)),
        sessions.history,
    )
    inputs = [[HumanMessage(f"hi {key}")] for key in "abc"]
    configs = [session(key) for key in "abc"]
    if batch == "batch":
        outputs = runnable.batch(inputs, configs)
    else:
        outputs = await runnable.abatch(inputs, configs)
    assert outputs == [f"you said: hi {key}" for key in "abc"]
    for key in "abc":
        assert sessions.stored(key) == [
            ("human", f"hi {key}"),
            ("ai", f"you said: hi {key}"),
        ]
