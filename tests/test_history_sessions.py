"""`AssistantThreadChatMessageHistory.for_session`: threads made on first use."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    BaseThread,
    ChatCompletionThread,
    RetroValueError,
    SQLiteStore,
    ThreadNotFoundError,
)
from langchain_retro.stores.base import BaseStore, ThreadQuery

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers"]

Session = AssistantThreadChatMessageHistory.for_session


class SessionThread(BaseThread):
    session: str
    plan: str = "free"


def thread_count(store: BaseStore) -> int:
    return len(store.list_threads(ThreadQuery(limit=10_000)))


async def test_first_use_creates_the_thread_then_finds_it(
    store: BaseStore, call: Call
) -> None:
    history = Session(store, "user-42", thread_class=BaseThread)
    assert thread_count(store) == 0  # making the history does no I/O
    assert "user-42" in repr(history)
    assert await call.messages(history) == []
    (thread,) = (await call(BaseThread, "list", store)).data
    assert thread.metadata == {"session_id": "user-42"}
    assert history.thread_id == thread.id
    await call(history, "add_messages", [HumanMessage("hi"), AIMessage("hello")])

    again = Session(store, "user-42", thread_class=BaseThread)
    assert [m.content for m in await call.messages(again)] == ["hi", "hello"]
    other = Session(store, "user-7", thread_class=BaseThread)
    assert await call.messages(other) == []
    assert thread_count(store) == 2
    await call(other, "clear")
    assert thread_count(store) == 2


async def test_a_run_thread_by_default_and_a_typed_key(
    store: BaseStore, call: Call
) -> None:
    assistant = await call(Assistant, "create", store, model="m")
    history = Session(store, "s1", assistant_id=assistant.id, metadata={"k": "v"})
    await call(history, "add_messages", [HumanMessage("q")])
    thread = await call(ChatCompletionThread, "retrieve", store, history.thread_id)
    assert thread.assistant_id == assistant.id
    assert thread.metadata == {"k": "v", "session_id": "s1"}

    typed = Session(store, "s1", thread_class=SessionThread, key="session", plan="pro")
    await call(typed, "add_messages", [HumanMessage("typed")])
    found = await call(SessionThread, "retrieve", store, typed.thread_id)
    assert (found.session, found.plan) == ("s1", "pro")
    assert typed.thread_id != history.thread_id
    same = Session(store, "s1", thread_class=SessionThread, key="session")
    assert [m.content for m in await call.messages(same)] == ["typed"]


@pytest.mark.parametrize(
    ("session_id", "kwargs"),
    [
        ("", {"thread_class": BaseThread}),
        (42, {"thread_class": BaseThread}),
        ("s", {}),  # a ChatCompletionThread needs its assistant_id
        ("s", {"thread_class": BaseThread, "key": ""}),
        ("s", {"thread_class": BaseThread, "key": "retro_class"}),
        ("s", {"thread_class": dict}),
        ("s", {"thread_class": BaseThread, "metadata": 5}),
        ("s", {"thread_class": SessionThread, "key": "session", "plan": 3}),
    ],
)
def test_bad_sessions_are_refused_before_any_write(
    store: BaseStore, session_id: Any, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(RetroValueError):
        Session(store, session_id, **kwargs)
    assert thread_count(store) == 0


async def test_the_not_found_hint_points_to_for_session(
    store: BaseStore, call: Call
) -> None:
    history = AssistantThreadChatMessageHistory(store, "user-42")
    with pytest.raises(ThreadNotFoundError, match="for_session") as caught:
        await call(history, "add_messages", [HumanMessage("hi")])
    assert "No thread with id 'user-42'" in str(caught.value)


def test_concurrent_first_uses_make_one_thread(
    store_factory: Callable[..., BaseStore],
) -> None:
    workers = 4
    stores = [store_factory() for _ in range(workers)]  # one connection each
    for round_ in range(3):
        barrier = threading.Barrier(workers)
        session_id = f"user-{round_}"

        def first_use(
            store: BaseStore,
            session_id: str = session_id,
            barrier: threading.Barrier = barrier,
        ) -> str:
            history = Session(store, session_id, thread_class=BaseThread)
            barrier.wait()
            history.add_messages([HumanMessage(f"from {id(store)}")])
            return history.thread_id

        with ThreadPoolExecutor(workers) as pool:
            ids = list(pool.map(first_use, stores))
        assert len(set(ids)) == 1, ids
        page = BaseThread.list(stores[0], metadata={"session_id": session_id})
        assert [t.id for t in page.data] == [ids[0]]
        assert stores[0].count_messages(ids[0]) == workers  # none lost


async def test_concurrent_async_first_uses_make_one_thread(
    store_factory: Callable[..., BaseStore],
) -> None:
    stores = [store_factory() for _ in range(4)]
    histories = [Session(s, "user-async", thread_class=BaseThread) for s in stores]
    ids = await asyncio.gather(*(h.aget_thread_id() for h in histories))
    assert len(set(ids)) == 1
    assert thread_count(stores[0]) == 1


async def test_a_crashed_resolvers_candidate_is_cleared(
    store: BaseStore, call: Call
) -> None:
    # What a resolver that died before choosing leaves on a store that keeps
    # leases for threads only: a pending candidate whose lease is not held.
    digest = hashlib.sha256(b"session_id\x00user-9").hexdigest()[:32]
    pending = {"retro_session_pending": f"session_{digest}"}
    left = await call(BaseThread, "create", store, metadata=pending)
    history = Session(store, "user-9", thread_class=BaseThread)
    await call(history, "add_messages", [HumanMessage("hi")])
    (thread,) = (await call(BaseThread, "list", store)).data
    assert thread.id == history.thread_id
    assert thread.id != left.id  # the abandoned candidate was deleted
    assert thread.metadata == {"session_id": "user-9"}


class LoopGuardStore(SQLiteStore):
    """A SQLite store whose sync methods fail when called on an event loop's thread.

    Open it with ``synchronous="FULL"``: its async methods then always run the
    sync ones in the store's thread, so a sync method on the loop is the caller's.
    """


def _guard(name: str) -> None:
    real = getattr(SQLiteStore, name)

    def guarded(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a worker thread: fine
            return real(self, *args, **kwargs)
        raise AssertionError(f"{name} blocked the event loop")

    setattr(LoopGuardStore, name, guarded)


for _name in (
    "acquire_lease",
    "add_messages",
    "create_thread",
    "delete_thread",
    "get_thread",
    "list_message_payloads",
    "list_threads",
    "release_lease",
):
    _guard(_name)


async def test_async_first_use_never_blocks_the_event_loop(tmp_path: Path) -> None:
    store = LoopGuardStore(tmp_path / "guard.db", synchronous="FULL")
    try:
        assistant = await Assistant.acreate(store, model="m")
        chain = RunnableWithMessageHistory(
            RunnableLambda(lambda messages: AIMessage(f"{len(messages)} seen")),
            lambda session_id: Session(store, session_id, assistant_id=assistant.id),
        )
        config: RunnableConfig = {"configurable": {"session_id": "user-42"}}
        first = await chain.ainvoke([HumanMessage("hi")], config)
        second = await chain.ainvoke([HumanMessage("again")], config)
        assert (first.content, second.content) == ("1 seen", "3 seen")
        history = Session(store, "user-42", assistant_id=assistant.id)
        assert len(await history.aget_messages()) == 4
        with pytest.raises(AssertionError, match="blocked the event loop"):
            _ = Session(store, "user-43", assistant_id=assistant.id).messages
    finally:
        await store.aclose()
