"""Every public entry point: success, or a `RetroError` and nothing written.

Hypothesis feeds arbitrary values (ids, metadata keys and values, field values,
limits, cursors, orders, messages) to the records, the history and the stores, on
every backend. A call may succeed; if it fails, the error must be one of ours, and
the store must read back exactly as before. Any other exception fails the test with
a minimal example.

One store per test (stores are expensive to make); "nothing written" compares every
listing before and after the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_retro import (
    Assistant,
    AssistantThreadChatMessageHistory,
    BaseMessage,
    BaseThread,
    ChatCompletionThread,
    RetroError,
    ThreadMessage,
)
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import BaseStore, NewMessage, ThreadQuery

FAST = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Ticket(BaseThread):
    priority: int = 0
    owner: str | None = None


class Rated(BaseMessage):
    stars: int = 0


# --- arbitrary values ----------------------------------------------------------------

# Lone surrogates (not valid Unicode) included: stores and patches refuse them.
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["\x00", "a\x00b", "%", "'", "\\", "#1", "retro_class", "\ud800", "a\udfff"]
    ),
)
CONTENT = st.one_of(st.text(max_size=12), st.sampled_from(["a\ud800", "\udfff"]))
ANY_SCALAR = st.one_of(
    st.none(),
    TEXT,
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.binary(max_size=4),
)
IDS = st.one_of(
    TEXT,
    st.sampled_from(["", " ", "thread_", "msg_x", "asst_x", "%", "'", '"', "\\"]),
    ANY_SCALAR,
)
METADATA = st.one_of(
    st.none(),
    ANY_SCALAR,
    st.lists(TEXT, max_size=2),
    st.dictionaries(st.one_of(TEXT, ANY_SCALAR), ANY_SCALAR, max_size=3),
    st.dictionaries(TEXT, TEXT, max_size=3),
)
LIMITS = st.one_of(st.integers(-3, 10_005), ANY_SCALAR)
ORDERS = st.one_of(st.sampled_from(["asc", "desc", "ASC", ""]), ANY_SCALAR)
LC_MESSAGES = st.one_of(
    st.builds(HumanMessage, content=CONTENT, id=st.one_of(st.none(), TEXT)),
    st.builds(AIMessage, content=CONTENT, id=st.one_of(st.none(), TEXT)),
    st.builds(SystemMessage, content=CONTENT),
    st.builds(ToolMessage, content=CONTENT, tool_call_id=TEXT),
)
MESSAGES = st.one_of(
    LC_MESSAGES,
    ANY_SCALAR,
    st.dictionaries(TEXT, TEXT, max_size=2),
)


# --- the seeded store and the check --------------------------------------------------


class Seeded:
    """A store with an assistant, threads and messages, and its full listing."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store
        self.assistant = Assistant.create(store, model="m", metadata={"k": "v"})
        self.thread = ChatCompletionThread.create(store, assistant_id=self.assistant.id)
        self.ticket = Ticket.create(store, priority=1, owner="ann")
        for message in (HumanMessage("q"), AIMessage("a")):
            ThreadMessage.create(store, thread_id=self.thread.id, message=message)
        self.rated = Rated.create(
            store, thread_id=self.ticket.id, message=HumanMessage("r"), stars=2
        )

    def ids(self) -> list[str]:
        return [
            self.assistant.id,
            self.thread.id,
            self.ticket.id,
            self.rated.id,
            *(r.id for r in self.store.list_messages(self.thread.id)),
        ]

    def snapshot(self) -> Any:
        store = self.store
        threads = store.list_threads(ThreadQuery(limit=10_000))
        return (
            store.list_assistants(limit=10_000),
            threads,
            [store.list_messages(t.id) for t in threads],
        )

    def check(self, call: Callable[[], Any]) -> None:
        """Run a call: it succeeds, or raises a RetroError having written nothing."""
        before = self.snapshot()
        try:
            call()
        except RetroError:
            assert self.snapshot() == before


@pytest.fixture
def seeded(store: BaseStore) -> Seeded:
    return Seeded(store)


def ids_of(seeded: Seeded) -> st.SearchStrategy[Any]:
    return st.one_of(IDS, st.sampled_from(seeded.ids()))


# --- records -------------------------------------------------------------------------


def test_assistant_records(seeded: Seeded) -> None:
    store = seeded.store
    ids = ids_of(seeded)  # drawn from a fixed list: examples must replay

    @FAST
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        op = data.draw(st.sampled_from(["create", "retrieve", "update", "list"]))
        if op == "create":
            fields = {
                "model": data.draw(st.one_of(TEXT, ANY_SCALAR)),
                "temperature": data.draw(st.one_of(st.floats(-1, 3), ANY_SCALAR)),
                "name": data.draw(ANY_SCALAR),
                "metadata": data.draw(METADATA),
            }
            seeded.check(lambda: Assistant.create(store, **fields))
        elif op == "retrieve":
            assistant_id = data.draw(ids)
            seeded.check(lambda: Assistant.retrieve(store, assistant_id))
        elif op == "update":
            changes = data.draw(
                st.dictionaries(
                    st.sampled_from(["model", "temperature", "top_p", "metadata", "x"]),
                    st.one_of(METADATA, st.floats(-1, 3)),
                    max_size=2,
                )
            )
            seeded.check(lambda: seeded.assistant.update(store, **changes))
        else:
            kwargs = {
                "metadata": data.draw(METADATA),
                "after": data.draw(st.one_of(st.none(), ids)),
                "order": data.draw(ORDERS),
                "limit": data.draw(LIMITS),
            }
            seeded.check(lambda: Assistant.list(store, **kwargs))

    run()


def test_thread_records(seeded: Seeded) -> None:
    store = seeded.store
    ids = ids_of(seeded)  # drawn from a fixed list: examples must replay

    @FAST
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        op = data.draw(st.sampled_from(["create", "retrieve", "update", "list"]))
        if op == "create":
            fields = data.draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "priority": st.one_of(st.integers(), ANY_SCALAR),
                        "owner": ANY_SCALAR,
                        "metadata": METADATA,
                    },
                )
            )
            seeded.check(lambda: Ticket.create(store, **fields))
        elif op == "retrieve":
            thread_id = data.draw(ids)
            seeded.check(lambda: Ticket.retrieve(store, thread_id))
        elif op == "update":
            changes = data.draw(
                st.dictionaries(
                    st.sampled_from(["priority", "owner", "metadata", "id", "x"]),
                    st.one_of(METADATA, st.integers()),
                    max_size=2,
                )
            )
            seeded.check(lambda: seeded.ticket.update(store, **changes))
        else:
            kwargs = {
                "metadata": data.draw(METADATA),
                "after": data.draw(st.one_of(st.none(), ids)),
                "before": data.draw(st.one_of(st.none(), ids)),
                "order": data.draw(ORDERS),
                "limit": data.draw(LIMITS),
                **data.draw(
                    st.dictionaries(
                        st.sampled_from(["priority", "owner", "nope"]),
                        ANY_SCALAR,
                        max_size=2,
                    )
                ),
            }
            seeded.check(lambda: Ticket.list(store, **kwargs))

    run()


def test_message_records(seeded: Seeded) -> None:
    store = seeded.store
    ids = ids_of(seeded)  # drawn from a fixed list: examples must replay

    @FAST
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        cls = data.draw(st.sampled_from([ThreadMessage, Rated, BaseMessage]))
        op = data.draw(st.sampled_from(["create", "retrieve", "update", "list"]))
        thread_id = data.draw(ids)
        if op == "create" and cls is not BaseMessage:
            fields = {
                "thread_id": thread_id,
                "message": data.draw(MESSAGES),
                **data.draw(
                    st.fixed_dictionaries(
                        {},
                        optional={"id": IDS, "metadata": METADATA, "stars": ANY_SCALAR},
                    )
                ),
            }
            if cls is ThreadMessage:
                fields.pop("stars", None)
            seeded.check(lambda: cls.create(store, **fields))
        elif op == "retrieve":
            message_id = data.draw(ids)
            seeded.check(lambda: cls.retrieve(store, thread_id, message_id))
        elif op == "update":
            changes = data.draw(
                st.dictionaries(
                    st.sampled_from(["stars", "metadata", "message", "thread_id"]),
                    st.one_of(METADATA, st.integers()),
                    max_size=2,
                )
            )
            seeded.check(lambda: seeded.rated.update(store, **changes))
        else:
            kwargs = {
                "after": data.draw(st.one_of(st.none(), ids)),
                "before": data.draw(st.one_of(st.none(), ids)),
                "order": data.draw(ORDERS),
                "limit": data.draw(LIMITS),
            }
            seeded.check(lambda: cls.list(store, thread_id, **kwargs))

    run()


# --- the history ---------------------------------------------------------------------


def test_history(seeded: Seeded) -> None:
    store = seeded.store
    ids = ids_of(seeded)  # drawn from a fixed list: examples must replay

    @FAST
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        if data.draw(st.booleans()):  # well-typed calls: ids, clashes, contents
            thread_id = data.draw(st.sampled_from([seeded.thread.id, seeded.ticket.id]))
            window = data.draw(st.one_of(st.none(), st.integers(1, 3)))
            messages: Any = data.draw(st.lists(LC_MESSAGES, min_size=1, max_size=3))
        else:
            thread_id = data.draw(ids)
            window = data.draw(st.one_of(st.none(), LIMITS))
            messages = data.draw(st.one_of(st.lists(MESSAGES, max_size=3), MESSAGES))

        def use() -> None:
            history = AssistantThreadChatMessageHistory(store, thread_id, window=window)
            history.add_messages(messages)
            assert isinstance(history.messages, list)

        seeded.check(use)

    run()


# --- the stores ----------------------------------------------------------------------


def test_store_methods(seeded: Seeded) -> None:
    store = seeded.store
    str_ids = st.one_of(TEXT, st.sampled_from(seeded.ids()))
    str_metadata = st.dictionaries(TEXT, TEXT, max_size=3)

    @FAST
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        op = data.draw(
            st.sampled_from(
                [
                    "create_thread",
                    "get_thread",
                    "update_thread",
                    "list_threads",
                    "list_assistants",
                    "add_messages",
                    "list_messages",
                    "count_messages",
                    "get_message",
                    "update_message",
                ]
            )
        )
        thread_id = data.draw(str_ids)
        cursor = data.draw(st.one_of(st.none(), str_ids))
        order = data.draw(st.sampled_from(["asc", "desc"]))
        if op == "create_thread":
            metadata = data.draw(str_metadata)
            seeded.check(lambda: store.create_thread(metadata))
        elif op == "get_thread":
            seeded.check(lambda: store.get_thread(thread_id))
        elif op == "update_thread":
            entries = data.draw(str_metadata)
            removed = frozenset(data.draw(st.lists(TEXT, max_size=2)))
            # Building the patch is part of the call: it refuses text it cannot store.
            seeded.check(
                lambda: store.update_thread(
                    thread_id, MetadataPatch(set=entries, remove=removed)
                )
            )
        elif op == "list_threads":
            query = ThreadQuery(
                metadata=data.draw(str_metadata),
                after=cursor,
                before=data.draw(st.one_of(st.none(), str_ids)),
                order=order,
                limit=data.draw(st.integers(1, 10_001)),
            )
            seeded.check(lambda: store.list_threads(query))
        elif op == "list_assistants":
            metadata = data.draw(str_metadata)
            limit = data.draw(st.integers(1, 10_001))
            seeded.check(
                lambda: store.list_assistants(
                    metadata=metadata, after=cursor, order=order, limit=limit
                )
            )
        elif op == "add_messages":
            new = data.draw(
                st.lists(
                    st.builds(
                        NewMessage,
                        role=TEXT,
                        payload=TEXT,
                        metadata=str_metadata,
                        id=st.one_of(st.none(), TEXT),
                    ),
                    max_size=3,
                )
            )
            seeded.check(lambda: store.add_messages(thread_id, new))
        elif op == "list_messages":
            before = data.draw(st.one_of(st.none(), str_ids))
            limit = data.draw(st.one_of(st.none(), st.integers(0, 50)))
            seeded.check(
                lambda: store.list_messages(
                    thread_id, after=cursor, before=before, order=order, limit=limit
                )
            )
        elif op == "count_messages":
            seeded.check(lambda: store.count_messages(thread_id, after=cursor))
        elif op == "get_message":
            message_id = data.draw(str_ids)
            seeded.check(lambda: store.get_message(thread_id, message_id))
        else:
            message_id = data.draw(str_ids)
            entries = data.draw(str_metadata)
            seeded.check(
                lambda: store.update_message(
                    thread_id, message_id, MetadataPatch(set=entries)
                )
            )

    run()
