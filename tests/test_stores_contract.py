"""The store contract, run against every backend, through the sync and async APIs.

Everything here goes through the `BaseStore` protocol (and the records layer on top of
it), never a backend's internals, so any new store must pass it unchanged.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from conftest import EVERY_BACKEND
from langchain_core.messages import AIMessage, HumanMessage

from langchain_retro import (
    OPENAI_LIMITS,
    Assistant,
    AssistantInUseError,
    AssistantNotFoundError,
    BaseThread,
    ChatCompletionThread,
    MessageNotFoundError,
    MetadataLimitError,
    NotFoundError,
    StoreClosedError,
    ThreadNotFoundError,
)
from langchain_retro._messages import to_payload
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import (
    BaseStore,
    NewMessage,
    RunUpdate,
    StoredThread,
    ThreadQuery,
)

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers", "_wire_store"]


@pytest.fixture(params=EVERY_BACKEND)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every backend, and `AssistantsAPIStore` over ``langchain-retro serve``.

    ``wire`` serves SQLite, ``wire-postgres`` PostgreSQL (``tests/_wire_store.py``).
    """
    return str(request.param)


ID_BODY = r"[0-9A-HJKMNP-TV-Z]{26}"
UNKNOWN_THREAD = "thread_00000000000000000000000000"
UNKNOWN_ASSISTANT = "asst_00000000000000000000000000"
UNKNOWN_MESSAGE = "msg_00000000000000000000000000"


class SupportThread(BaseThread):
    """A thread class with typed fields, for listing by class and by field."""

    customer_id: str
    priority: int = 0


def new(text: str, role: str = "user", **metadata: str) -> NewMessage:
    message = HumanMessage(text) if role == "user" else AIMessage(text)
    return NewMessage(role=role, payload=to_payload(message), metadata=metadata)


def texts(rows: list) -> list[str]:
    return [json.loads(row.payload)["content"] for row in rows]


async def thread_with(call: Call, store: BaseStore, count: int) -> tuple[str, list]:
    thread = await call(store, "create_thread", {})
    rows = await call(
        store, "add_messages", thread.id, [new(f"m{i}") for i in range(count)]
    )
    return thread.id, rows


# --- assistants ----------------------------------------------------------------------


async def test_assistant_crud(store: BaseStore, call: Call) -> None:
    fields = {
        "name": "Helper",
        "description": "helps",
        "instructions": "Be brief.",
        "model": "gpt-4o-mini",
        "temperature": 0.5,
        "top_p": 1.0,
    }
    created = await call(store, "create_assistant", fields, {"team": "blue"})
    assert re.fullmatch(f"asst_{ID_BODY}", created.id)
    assert created.created_at > 0
    assert created.model_dump(exclude={"id", "created_at"}) == {
        **fields,
        "metadata": {"team": "blue"},
    }
    assert await call(store, "get_assistant", created.id) == created

    patch = MetadataPatch(set={"tier": "gold"}, remove=frozenset({"team"}))
    updated = await call(
        store, "update_assistant", created.id, {"name": "Renamed"}, patch
    )
    assert updated.name == "Renamed"
    assert updated.instructions == "Be brief."
    assert updated.metadata == {"tier": "gold"}
    assert await call(store, "get_assistant", created.id) == updated

    assert await call(store, "delete_assistant", created.id) == 0
    with pytest.raises(AssistantNotFoundError):
        await call(store, "get_assistant", created.id)


async def test_assistants_listed_newest_first_with_cursor(
    store: BaseStore, call: Call
) -> None:
    ids = [
        (await call(store, "create_assistant", {"model": "m"}, {"n": str(i)})).id
        for i in range(5)
    ]
    newest_first = await call(store, "list_assistants", limit=10)
    assert [a.id for a in newest_first] == ids[::-1]
    page = await call(store, "list_assistants", after=ids[3], limit=2)
    assert [a.id for a in page] == [ids[2], ids[1]]
    oldest_first = await call(store, "list_assistants", order="asc", after=ids[1])
    assert [a.id for a in oldest_first] == ids[2:]
    filtered = await call(store, "list_assistants", metadata={"n": "3"})
    assert [a.id for a in filtered] == [ids[3]]


# --- threads -------------------------------------------------------------------------


async def test_thread_crud(store: BaseStore, call: Call) -> None:
    created = await call(store, "create_thread", {"topic": "billing", "lang": "en"})
    assert re.fullmatch(f"thread_{ID_BODY}", created.id)
    assert await call(store, "get_thread", created.id) == created

    patch = MetadataPatch(set={"topic": "refunds"}, remove=frozenset({"lang"}))
    updated = await call(store, "update_thread", created.id, patch)
    assert updated.metadata == {"topic": "refunds"}
    assert updated.created_at == created.created_at
    assert await call(store, "get_thread", created.id) == updated

    await call(store, "delete_thread", created.id)
    with pytest.raises(ThreadNotFoundError):
        await call(store, "get_thread", created.id)


async def test_threads_newest_first_paginated(store: BaseStore, call: Call) -> None:
    ids = [(await call(store, "create_thread", {})).id for _ in range(7)]
    assert ids == sorted(ids)  # sortable ids: creation order

    first = await call(BaseThread, "list", store, limit=3)
    assert [t.id for t in first.data] == ids[:-4:-1]
    assert first.has_more
    assert (first.first_id, first.last_id) == (ids[6], ids[4])

    second = await call(BaseThread, "list", store, limit=3, after=first.last_id)
    assert [t.id for t in second.data] == [ids[3], ids[2], ids[1]]
    assert second.has_more

    last = await call(BaseThread, "list", store, limit=3, after=second.last_id)
    assert [t.id for t in last.data] == [ids[0]]
    assert not last.has_more
    assert last.first_id == last.last_id == ids[0]

    oldest = await call(BaseThread, "list", store, order="asc", limit=2, after=ids[0])
    assert [t.id for t in oldest.data] == ids[1:3]

    newer = await call(BaseThread, "list", store, order="asc", before=ids[3])
    assert [t.id for t in newer.data] == ids[:3]
    newer_desc = await call(BaseThread, "list", store, before=ids[3])
    assert [t.id for t in newer_desc.data] == ids[:3:-1]


async def test_empty_listing_page(store: BaseStore, call: Call) -> None:
    page = await call(BaseThread, "list", store)
    assert page.data == []
    assert not page.has_more
    assert page.first_id is None
    assert page.last_id is None


async def test_threads_listed_by_class_assistant_and_metadata(
    store: BaseStore, call: Call
) -> None:
    one = await call(Assistant, "create", store, model="m")
    two = await call(Assistant, "create", store, model="m")
    mine = [
        await call(ChatCompletionThread, "create", store, assistant_id=one.id)
        for _ in range(3)
    ]
    theirs = await call(ChatCompletionThread, "create", store, assistant_id=two.id)
    support = await call(
        SupportThread, "create", store, customer_id="c-1", metadata={"team": "red"}
    )
    other = await call(
        SupportThread, "create", store, customer_id="c-2", metadata={"team": "red"}
    )
    plain = await call(BaseThread, "create", store, metadata={"team": "red"})

    by_assistant = await call(ChatCompletionThread, "list", store, assistant_id=one.id)
    assert [t.id for t in by_assistant.data] == [t.id for t in mine[::-1]]
    assert all(t.assistant_id == one.id for t in by_assistant.data)

    by_class = await call(ChatCompletionThread, "list", store)
    assert {t.id for t in by_class.data} == {t.id for t in [*mine, theirs]}

    by_field = await call(SupportThread, "list", store, customer_id="c-2")
    assert [t.id for t in by_field.data] == [other.id]

    red = await call(BaseThread, "list", store, metadata={"team": "red"})
    assert [t.id for t in red.data] == [plain.id, other.id, support.id]
    red_support = await call(SupportThread, "list", store, metadata={"team": "red"})
    assert [t.id for t in red_support.data] == [other.id, support.id]
    both = await call(
        SupportThread, "list", store, metadata={"team": "red"}, customer_id="c-1"
    )
    assert [t.id for t in both.data] == [support.id]
    none = await call(SupportThread, "list", store, customer_id="c-9")
    assert none.data == []


async def test_list_threads_protocol_filters_all_must_hold(
    store: BaseStore, call: Call
) -> None:
    a = await call(store, "create_thread", {"x": "1", "y": "1"})
    await call(store, "create_thread", {"x": "1", "y": "2"})
    await call(store, "create_thread", {"x": "2", "y": "1"})
    query = ThreadQuery(metadata={"x": "1", "y": "1"})
    assert await call(store, "list_threads", query) == [a]
    nothing = ThreadQuery(classes=("no.such.Class",))
    assert await call(store, "list_threads", nothing) == []


# --- messages ------------------------------------------------------------------------


async def test_message_crud(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {})
    (stored,) = await call(store, "add_messages", thread.id, [new("hi", rating="5")])
    assert re.fullmatch(f"msg_{ID_BODY}", stored.id)
    assert stored.thread_id == thread.id
    assert stored.role == "user"
    assert stored.metadata == {"rating": "5"}
    assert await call(store, "get_message", thread.id, stored.id) == stored

    patch = MetadataPatch(set={"flag": "y"}, remove=frozenset({"rating"}))
    updated = await call(store, "update_message", thread.id, stored.id, patch)
    assert updated.metadata == {"flag": "y"}
    assert updated.payload == stored.payload
    assert await call(store, "get_message", thread.id, stored.id) == updated

    await call(store, "delete_message", thread.id, stored.id)
    with pytest.raises(MessageNotFoundError):
        await call(store, "get_message", thread.id, stored.id)
    assert await call(store, "count_messages", thread.id) == 0


async def test_messages_listed_with_cursors_order_and_limit(
    store: BaseStore, call: Call
) -> None:
    tid, rows = await thread_with(call, store, 6)
    ids = [r.id for r in rows]
    assert texts(rows) == [f"m{i}" for i in range(6)]

    assert [r.id for r in await call(store, "list_messages", tid)] == ids
    desc = await call(store, "list_messages", tid, order="desc")
    assert [r.id for r in desc] == ids[::-1]
    newest = await call(store, "list_messages", tid, order="desc", limit=2)
    assert [r.id for r in newest] == [ids[5], ids[4]]
    oldest = await call(store, "list_messages", tid, limit=2)
    assert [r.id for r in oldest] == ids[:2]
    after = await call(store, "list_messages", tid, after=ids[1])
    assert [r.id for r in after] == ids[2:]
    after_limited = await call(store, "list_messages", tid, after=ids[1], limit=2)
    assert [r.id for r in after_limited] == ids[2:4]
    before = await call(store, "list_messages", tid, before=ids[3])
    assert [r.id for r in before] == ids[:3]
    between = await call(store, "list_messages", tid, after=ids[0], before=ids[4])
    assert [r.id for r in between] == ids[1:4]
    desc_after = await call(store, "list_messages", tid, after=ids[4], order="desc")
    assert [r.id for r in desc_after] == [ids[5]]
    assert await call(store, "list_messages", tid, after=ids[5]) == []
    assert await call(store, "list_messages", tid, limit=0) == []


async def test_before_with_a_limit_is_the_page_right_before_it(
    store: BaseStore, call: Call
) -> None:
    tid, rows = await thread_with(call, store, 10)
    ids = [r.id for r in rows]
    page = await call(store, "list_messages", tid, before=ids[8], order="asc", limit=2)
    assert [r.id for r in page] == ids[6:8]
    # Message cursors are in thread order: newest first, the page is the same two.
    page = await call(store, "list_messages", tid, before=ids[5], order="desc", limit=2)
    assert [r.id for r in page] == [ids[4], ids[3]]
    between = await call(
        store, "list_messages", tid, after=ids[1], before=ids[8], limit=3
    )
    assert [r.id for r in between] == ids[5:8]
    short = await call(store, "list_messages", tid, before=ids[1], limit=5)
    assert [r.id for r in short] == ids[:1]

    threads = [(await call(store, "create_thread", {})).id for _ in range(7)]
    query = ThreadQuery(before=threads[5], order="asc", limit=2)
    assert [t.id for t in await call(store, "list_threads", query)] == threads[3:5]
    # Thread cursors are in the listing's order: before, newest first, is newer.
    query = ThreadQuery(before=threads[1], order="desc", limit=2)
    listed = await call(store, "list_threads", query)
    assert [t.id for t in listed] == [threads[3], threads[2]]
    query = ThreadQuery(after=threads[0], before=threads[6], order="asc", limit=2)
    assert [t.id for t in await call(store, "list_threads", query)] == threads[4:6]


async def test_message_records_paginate(store: BaseStore, call: Call) -> None:
    from langchain_retro import ThreadMessage  # noqa: PLC0415

    tid, rows = await thread_with(call, store, 5)
    ids = [r.id for r in rows]
    first = await call(ThreadMessage, "list", store, tid, limit=2)
    assert [m.id for m in first.data] == ids[:2]
    assert first.has_more
    second = await call(ThreadMessage, "list", store, tid, limit=2, after=first.last_id)
    assert [m.id for m in second.data] == ids[2:4]
    third = await call(ThreadMessage, "list", store, tid, limit=2, after=second.last_id)
    assert [m.id for m in third.data] == ids[4:]
    assert not third.has_more
    newest = await call(ThreadMessage, "list", store, tid, order="desc", limit=2)
    assert [m.id for m in newest.data] == [ids[4], ids[3]]


async def test_count_messages_after(store: BaseStore, call: Call) -> None:
    tid, rows = await thread_with(call, store, 5)
    assert await call(store, "count_messages", tid) == 5
    assert await call(store, "count_messages", tid, after=rows[1].id) == 3
    assert await call(store, "count_messages", tid, after=rows[4].id) == 0
    empty = await call(store, "create_thread", {})
    assert await call(store, "count_messages", empty.id) == 0


async def test_add_messages_is_all_or_nothing(store: BaseStore, call: Call) -> None:
    store.limits = OPENAI_LIMITS
    tid, _ = await thread_with(call, store, 2)
    batch = [new("ok"), new("too long", note="x" * 513), new("also ok")]
    with pytest.raises(MetadataLimitError) as caught:
        await call(store, "add_messages", tid, batch)
    assert caught.value.field == "note"
    assert texts(await call(store, "list_messages", tid)) == ["m0", "m1"]

    # A thread patch over the limits fails the whole batch too.
    patch = MetadataPatch(set={"hwm": "y" * 600})
    with pytest.raises(MetadataLimitError):
        await call(store, "add_messages", tid, [new("a")], thread_patch=patch)
    assert await call(store, "count_messages", tid) == 2
    assert (await call(store, "get_thread", tid)).metadata == {}

    # The next batch continues the order without a gap.
    rows = await call(store, "add_messages", tid, [new("m2"), new("m3")])
    listed = await call(store, "list_messages", tid)
    assert texts(listed) == ["m0", "m1", "m2", "m3"]
    assert [r.id for r in listed[2:]] == [r.id for r in rows]


async def test_add_messages_applies_thread_patch(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {"keep": "1"})
    rows = await call(
        store,
        "add_messages",
        thread.id,
        [new("q"), new("a", role="assistant")],
        thread_patch=MetadataPatch(set={"hwm": "marker"}),
    )
    assert [r.role for r in rows] == ["user", "assistant"]
    got = await call(store, "get_thread", thread.id)
    assert got.metadata == {"keep": "1", "hwm": "marker"}


async def test_order_strictly_increasing_within_one_second(
    store: BaseStore, call: Call
) -> None:
    one = await call(store, "create_thread", {})
    two = await call(store, "create_thread", {})
    expected: dict[str, list[str]] = {one.id: [], two.id: []}
    for i in range(30):
        tid = one.id if i % 3 else two.id
        (row,) = await call(store, "add_messages", tid, [new(f"n{i}")])
        expected[tid].append(row.id)
    for tid, ids in expected.items():
        listed = await call(store, "list_messages", tid)
        assert [r.id for r in listed] == ids
        assert ids == sorted(ids)  # ids sort in creation order too
        assert len(set(ids)) == len(ids)
    # Most rows share a created_at second: order comes from the sequence, not clocks.
    created = [r.created_at for r in await call(store, "list_messages", one.id)]
    assert created == sorted(created)


async def test_concurrent_appends_keep_every_message(store: BaseStore) -> None:
    thread = store.create_thread({})

    async def writer(name: str) -> list[str]:
        ids = []
        for i in range(10):
            (row,) = await store.aadd_messages(thread.id, [new(f"{name}{i}")])
            ids.append(row.id)
        return ids

    results = await asyncio.gather(*(writer(n) for n in "abc"))
    listed = store.list_messages(thread.id)
    assert len(listed) == 30
    positions = {r.id: i for i, r in enumerate(listed)}
    for ids in results:  # each writer's messages in its own order
        assert [positions[i] for i in ids] == sorted(positions[i] for i in ids)


async def test_delete_thread_removes_its_messages(store: BaseStore, call: Call) -> None:
    tid, rows = await thread_with(call, store, 3)
    keep, kept = await thread_with(call, store, 2)
    await call(store, "delete_thread", tid)
    with pytest.raises(ThreadNotFoundError):
        await call(store, "list_messages", tid)
    with pytest.raises(NotFoundError):
        await call(store, "get_message", tid, rows[0].id)
    # Another thread's messages cannot reach the deleted ones either.
    with pytest.raises(MessageNotFoundError):
        await call(store, "get_message", keep, rows[0].id)
    assert [r.id for r in await call(store, "list_messages", keep)] == [
        r.id for r in kept
    ]


async def test_clear_messages_keeps_thread(store: BaseStore, call: Call) -> None:
    tid, _ = await thread_with(call, store, 4)
    await call(store, "update_thread", tid, MetadataPatch(set={"hwm": "x", "k": "v"}))
    patch = MetadataPatch(clear_fields=frozenset({"hwm"}))
    assert await call(store, "clear_messages", tid, thread_patch=patch) == 4
    assert await call(store, "list_messages", tid) == []
    assert (await call(store, "get_thread", tid)).metadata == {"k": "v"}
    (row,) = await call(store, "add_messages", tid, [new("again")])
    assert [r.id for r in await call(store, "list_messages", tid)] == [row.id]


# --- deleting assistants -------------------------------------------------------------


async def _assistant_with_threads(
    call: Call, store: BaseStore
) -> tuple[Assistant, list[ChatCompletionThread], ChatCompletionThread]:
    assistant = await call(Assistant, "create", store, model="m")
    other = await call(Assistant, "create", store, model="m")
    threads = [
        await call(ChatCompletionThread, "create", store, assistant_id=assistant.id)
        for _ in range(2)
    ]
    for thread in threads:
        await call(store, "add_messages", thread.id, [new("hi"), new("there")])
    bystander = await call(ChatCompletionThread, "create", store, assistant_id=other.id)
    await call(store, "add_messages", bystander.id, [new("mine")])
    return assistant, threads, bystander


async def test_delete_assistant_refuses_when_in_use(
    store: BaseStore, call: Call
) -> None:
    assistant, threads, _ = await _assistant_with_threads(call, store)
    with pytest.raises(AssistantInUseError) as caught:
        await call(assistant, "delete", store)
    assert isinstance(caught.value, RuntimeError)
    assert caught.value.assistant_id == assistant.id
    assert caught.value.thread_count == 2
    assert (await call(store, "get_assistant", assistant.id)).id == assistant.id
    for thread in threads:
        assert await call(store, "count_messages", thread.id) == 2


async def test_delete_assistant_keeping_threads(store: BaseStore, call: Call) -> None:
    assistant, threads, _ = await _assistant_with_threads(call, store)
    assert await call(assistant, "delete", store, threads="keep") == 0
    with pytest.raises(AssistantNotFoundError):
        await call(store, "get_assistant", assistant.id)
    for thread in threads:
        kept = await call(ChatCompletionThread, "retrieve", store, thread.id)
        assert kept.assistant_id == assistant.id
        assert await call(store, "count_messages", thread.id) == 2


async def test_delete_assistant_with_threads(store: BaseStore, call: Call) -> None:
    assistant, threads, bystander = await _assistant_with_threads(call, store)
    assert await call(assistant, "delete", store, threads="delete") == 2
    with pytest.raises(AssistantNotFoundError):
        await call(store, "get_assistant", assistant.id)
    for thread in threads:
        with pytest.raises(ThreadNotFoundError):
            await call(store, "get_thread", thread.id)
        with pytest.raises(ThreadNotFoundError):
            await call(store, "list_messages", thread.id)
    remaining = await call(BaseThread, "list", store)
    assert [t.id for t in remaining.data] == [bystander.id]
    assert await call(store, "count_messages", bystander.id) == 1


async def test_delete_unused_assistant_refuse_is_fine(
    store: BaseStore, call: Call
) -> None:
    assistant = await call(Assistant, "create", store, model="m")
    assert await call(assistant, "delete", store) == 0
    assert await call(store, "list_assistants") == []


# --- errors --------------------------------------------------------------------------


UNKNOWN_CASES: list[tuple[str, Callable[..., tuple], type[NotFoundError], str]] = [
    ("get_assistant", lambda t, m: (UNKNOWN_ASSISTANT,), AssistantNotFoundError, "a"),
    (
        "update_assistant",
        lambda t, m: (UNKNOWN_ASSISTANT, {"name": "x"}),
        AssistantNotFoundError,
        "a",
    ),
    (
        "delete_assistant",
        lambda t, m: (UNKNOWN_ASSISTANT,),
        AssistantNotFoundError,
        "a",
    ),
    ("get_thread", lambda t, m: (UNKNOWN_THREAD,), ThreadNotFoundError, "t"),
    (
        "update_thread",
        lambda t, m: (UNKNOWN_THREAD, MetadataPatch()),
        ThreadNotFoundError,
        "t",
    ),
    ("delete_thread", lambda t, m: (UNKNOWN_THREAD,), ThreadNotFoundError, "t"),
    ("list_messages", lambda t, m: (UNKNOWN_THREAD,), ThreadNotFoundError, "t"),
    ("count_messages", lambda t, m: (UNKNOWN_THREAD,), ThreadNotFoundError, "t"),
    ("clear_messages", lambda t, m: (UNKNOWN_THREAD,), ThreadNotFoundError, "t"),
    (
        "add_messages",
        lambda t, m: (UNKNOWN_THREAD, [new("x")]),
        ThreadNotFoundError,
        "t",
    ),
    ("get_message", lambda t, m: (UNKNOWN_THREAD, m), ThreadNotFoundError, "t"),
    ("get_message", lambda t, m: (t, UNKNOWN_MESSAGE), MessageNotFoundError, "m"),
    (
        "update_message",
        lambda t, m: (t, UNKNOWN_MESSAGE, MetadataPatch()),
        MessageNotFoundError,
        "m",
    ),
    ("delete_message", lambda t, m: (t, UNKNOWN_MESSAGE), MessageNotFoundError, "m"),
    (
        "acquire_lease",
        lambda t, m: (UNKNOWN_THREAD, "o", 1.0),
        ThreadNotFoundError,
        "t",
    ),
]


@pytest.mark.parametrize(
    ("method", "args", "error", "which"),
    UNKNOWN_CASES,
    ids=[f"{c[0]}-{c[2].__name__}" for c in UNKNOWN_CASES],
)
async def test_unknown_ids(  # noqa: PLR0917 - fixtures and parameters
    store: BaseStore,
    call: Call,
    method: str,
    args: Callable[..., tuple],
    error: type[NotFoundError],
    which: str,
) -> None:
    tid, rows = await thread_with(call, store, 1)
    with pytest.raises(error) as caught:
        await call(store, method, *args(tid, rows[0].id))
    assert isinstance(caught.value, LookupError)
    expected = {"a": UNKNOWN_ASSISTANT, "t": UNKNOWN_THREAD, "m": UNKNOWN_MESSAGE}
    assert caught.value.object_id == expected[which]
    assert expected[which] in str(caught.value)
    # Nothing was changed by the failed call.
    assert await call(store, "count_messages", tid) == 1


async def test_unknown_cursors(store: BaseStore, call: Call) -> None:
    tid, _ = await thread_with(call, store, 2)
    with pytest.raises(MessageNotFoundError) as message:
        await call(store, "list_messages", tid, after=UNKNOWN_MESSAGE)
    assert message.value.object_id == UNKNOWN_MESSAGE
    with pytest.raises(MessageNotFoundError):
        await call(store, "count_messages", tid, after=UNKNOWN_MESSAGE)
    with pytest.raises(ThreadNotFoundError) as thread:
        await call(store, "list_threads", ThreadQuery(after=UNKNOWN_THREAD))
    assert thread.value.object_id == UNKNOWN_THREAD
    with pytest.raises(AssistantNotFoundError):
        await call(store, "list_assistants", after=UNKNOWN_ASSISTANT)


async def test_message_of_another_thread_is_not_found(
    store: BaseStore, call: Call
) -> None:
    one, rows = await thread_with(call, store, 1)
    two, _ = await thread_with(call, store, 1)
    with pytest.raises(MessageNotFoundError) as caught:
        await call(store, "get_message", two, rows[0].id)
    assert caught.value.object_id == rows[0].id
    with pytest.raises(MessageNotFoundError):
        await call(store, "delete_message", two, rows[0].id)
    with pytest.raises(MessageNotFoundError):
        await call(store, "list_messages", two, after=rows[0].id)
    assert await call(store, "count_messages", one) == 1


@pytest.mark.parametrize("close_with", ["close", "aclose"])
async def test_closed_store_refuses_calls(
    store: BaseStore, call: Call, close_with: str
) -> None:
    thread = await call(store, "create_thread", {})
    if close_with == "close":
        store.close()
    else:
        await store.aclose()
    with pytest.raises(StoreClosedError):
        await call(store, "get_thread", thread.id)
    with pytest.raises(StoreClosedError):
        await call(store, "create_thread", {})
    with pytest.raises(StoreClosedError):
        await call(store, "add_messages", thread.id, [new("x")])
    with pytest.raises(StoreClosedError):
        await call(store, "list_threads", ThreadQuery())
    store.close()  # closing twice is harmless


async def test_store_is_a_context_manager(
    store_factory: Callable[..., BaseStore],
) -> None:
    with store_factory() as store:
        thread = store.create_thread({})
    with pytest.raises(StoreClosedError):
        store.get_thread(thread.id)
    async with store_factory() as other:
        assert (await other.aget_thread(thread.id)).id == thread.id
    with pytest.raises(StoreClosedError):
        await other.aget_thread(thread.id)


# --- run leases ----------------------------------------------------------------------


async def test_lease_ownership(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {})
    assert await call(store, "acquire_lease", thread.id, "worker-a", 30.0)
    assert not await call(store, "acquire_lease", thread.id, "worker-b", 30.0)
    assert await call(store, "acquire_lease", thread.id, "worker-a", 30.0)  # renew
    await call(store, "release_lease", thread.id, "worker-b")  # not theirs: no-op
    assert not await call(store, "acquire_lease", thread.id, "worker-b", 30.0)
    await call(store, "release_lease", thread.id, "worker-a")
    assert await call(store, "acquire_lease", thread.id, "worker-b", 30.0)
    await call(store, "release_lease", thread.id, "worker-a")  # no longer theirs
    assert not await call(store, "acquire_lease", thread.id, "worker-a", 30.0)


async def test_lease_per_thread(store: BaseStore, call: Call) -> None:
    one = await call(store, "create_thread", {})
    two = await call(store, "create_thread", {})
    assert await call(store, "acquire_lease", one.id, "a", 30.0)
    assert await call(store, "acquire_lease", two.id, "b", 30.0)


async def test_lease_expires(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {})
    ttl = 0.3
    started = time.monotonic()
    assert await call(store, "acquire_lease", thread.id, "crashed", ttl)
    taken = await call(store, "acquire_lease", thread.id, "next", 30.0)
    # Under heavy load the second request may come after the lease lapsed.
    assert not taken or time.monotonic() - started >= ttl
    await asyncio.sleep(max(0.0, ttl + 0.05 - (time.monotonic() - started)))
    assert await call(store, "acquire_lease", thread.id, "next", 30.0)
    assert not await call(store, "acquire_lease", thread.id, "crashed", 30.0)


async def test_deleted_thread_drops_its_lease(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {})
    assert await call(store, "acquire_lease", thread.id, "a", 30.0)
    await call(store, "delete_thread", thread.id)
    with pytest.raises(ThreadNotFoundError):
        await call(store, "acquire_lease", thread.id, "b", 30.0)


# --- runs: begin_run and finish_run ------------------------------------------------

COMPLETED = RunUpdate(status="completed")


async def run_thread(call: Call, store: BaseStore, count: int) -> tuple[str, list]:
    assistant = await call(store, "create_assistant", {"model": "m"}, {})
    thread = await call(store, "create_thread", {"assistant_id": assistant.id})
    rows = await call(
        store, "add_messages", thread.id, [new(f"m{i}") for i in range(count)]
    )
    return thread.id, rows


async def test_begin_run_takes_the_lease_appends_and_reads(
    store: BaseStore, call: Call
) -> None:
    tid, rows = await run_thread(call, store, 4)
    start = await call(
        store,
        "begin_run",
        tid,
        owner="me",
        ttl=30.0,
        messages=[new("q1"), new("q2")],
        context_limit=3,
    )
    assert start.thread == await call(store, "get_thread", tid)
    assert start.assistant == await call(
        store, "get_assistant", start.thread.metadata["assistant_id"]
    )
    assert texts(start.appended) == ["q1", "q2"]
    stored = await call(store, "list_messages", tid)
    assert [r.id for r in stored] == [r.id for r in rows] + [
        m.id for m in start.appended
    ]
    assert start.appended == stored[-2:]
    assert [row.stored() for row in start.context] == stored[-3:]
    assert not await call(store, "acquire_lease", tid, "other", 30.0)

    # Again, after the run ended: no input, the whole thread.
    await call(store, "finish_run", tid, owner="me", run_id="me", update=COMPLETED)
    again = await call(store, "begin_run", tid, owner="me-again", ttl=30.0)
    assert again.appended == []
    assert [row.stored() for row in again.context] == stored


async def test_begin_run_on_a_busy_thread_writes_nothing(
    store: BaseStore, call: Call
) -> None:
    tid, rows = await run_thread(call, store, 2)
    assert await call(store, "acquire_lease", tid, "other", 30.0)
    start = await call(
        store, "begin_run", tid, owner="me", ttl=30.0, messages=[new("waits")]
    )
    assert start is None
    assert await call(store, "list_messages", tid) == rows
    assert not await call(store, "acquire_lease", tid, "third", 30.0)
    assert await call(store, "acquire_lease", tid, "other", 30.0)  # still theirs


async def test_begin_run_on_an_unknown_thread_writes_nothing(
    store: BaseStore, call: Call
) -> None:
    with pytest.raises(ThreadNotFoundError) as caught:
        await call(
            store,
            "begin_run",
            UNKNOWN_THREAD,
            owner="me",
            ttl=30.0,
            messages=[new("lost")],
        )
    assert caught.value.object_id == UNKNOWN_THREAD
    assert await call(store, "list_threads", ThreadQuery()) == []


async def test_begin_run_without_an_assistant(store: BaseStore, call: Call) -> None:
    plain = await call(store, "create_thread", {})
    start = await call(store, "begin_run", plain.id, owner="me", ttl=30.0)
    assert start.assistant is None
    orphan = await call(store, "create_thread", {"assistant_id": UNKNOWN_ASSISTANT})
    start = await call(
        store, "begin_run", orphan.id, owner="me-too", ttl=30.0, messages=[new("hi")]
    )
    assert start.assistant is None
    assert texts(start.context) == ["hi"]


async def test_begin_run_refuses_input_over_the_limits(
    store: BaseStore, call: Call
) -> None:
    store.limits = OPENAI_LIMITS
    tid, rows = await run_thread(call, store, 1)
    with pytest.raises(MetadataLimitError):
        await call(
            store,
            "begin_run",
            tid,
            owner="me",
            ttl=30.0,
            messages=[new("ok"), new("bad", note="x" * 513)],
        )
    assert await call(store, "list_messages", tid) == rows
    assert await call(store, "acquire_lease", tid, "other", 30.0)  # not held


async def test_finish_run_appends_patches_and_releases(
    store: BaseStore, call: Call
) -> None:
    thread = await call(
        store,
        "create_thread",
        {
            "hwm": "old",
            "hwm#1": "piece",
            "hwm#01": "not a piece",
            "hwmx": "other field",
            "drop": "x",
            "keep": "1",
        },
    )
    await call(store, "add_messages", thread.id, [new("q")])
    assert await call(store, "begin_run", thread.id, owner="me", ttl=30.0)
    patch = MetadataPatch(
        set={"hwm": "new", "added": "y"},
        remove=frozenset({"drop"}),
        clear_fields=frozenset({"hwm"}),
    )
    reply = new("a", role="assistant", rating="5")
    saved = await call(
        store,
        "finish_run",
        thread.id,
        owner="me",
        run_id="me",
        update=COMPLETED,
        messages=[reply],
        thread_patch=patch,
    )
    (stored,) = saved.messages
    assert saved.run.status == "completed"
    assert (stored.role, stored.payload, stored.metadata) == (
        "assistant",
        reply.payload,
        {"rating": "5"},
    )
    assert stored.thread_id == thread.id
    assert (await call(store, "list_messages", thread.id))[-1] == stored
    assert (await call(store, "get_thread", thread.id)).metadata == {
        "hwm": "new",
        "hwm#01": "not a piece",
        "hwmx": "other field",
        "keep": "1",
        "added": "y",
    }
    listed = await call(store, "list_threads", ThreadQuery(metadata={"hwm": "new"}))
    assert [t.id for t in listed] == [thread.id]
    assert await call(store, "acquire_lease", thread.id, "other", 30.0)


async def test_finish_run_is_all_or_nothing(store: BaseStore, call: Call) -> None:
    store.limits = OPENAI_LIMITS
    tid, rows = await run_thread(call, store, 1)
    thread = await call(store, "get_thread", tid)
    assert await call(store, "begin_run", tid, owner="me", ttl=30.0)
    hwm = MetadataPatch(set={"hwm": rows[0].id})
    too_much = new("a", role="assistant", **{f"k{i}": "v" for i in range(17)})
    too_long = MetadataPatch(set={"hwm": "y" * 600})
    for reply, patch in ((too_much, hwm), (new("a"), too_long)):
        with pytest.raises(MetadataLimitError):
            await call(
                store,
                "finish_run",
                tid,
                owner="me",
                run_id="me",
                update=COMPLETED,
                messages=[reply],
                thread_patch=patch,
            )
    assert await call(store, "list_messages", tid) == rows
    assert await call(store, "get_thread", tid) == thread
    assert (await call(store, "get_run", tid, "me")).status == "in_progress"
    assert not await call(store, "acquire_lease", tid, "other", 30.0)  # still held
    saved = await call(
        store,
        "finish_run",
        tid,
        owner="me",
        run_id="me",
        update=COMPLETED,
        messages=[new("a")],
        thread_patch=hwm,
    )
    assert (await call(store, "list_messages", tid))[-1] == saved.messages[0]
    assert (await call(store, "get_thread", tid)).metadata["hwm"] == rows[0].id


async def test_finish_run_after_losing_the_lease(store: BaseStore, call: Call) -> None:
    tid, _ = await run_thread(call, store, 1)
    assert await call(store, "begin_run", tid, owner="me", ttl=0.05)
    await asyncio.sleep(0.1)
    assert await call(store, "acquire_lease", tid, "next", 30.0)
    patch = MetadataPatch(set={"hwm": "x"})
    saved = await call(
        store,
        "finish_run",
        tid,
        owner="me",
        run_id="me",
        update=COMPLETED,
        messages=[new("late")],
        thread_patch=patch,
    )
    assert (await call(store, "list_messages", tid))[-1] == saved.messages[0]
    assert not await call(store, "acquire_lease", tid, "third", 30.0)  # next's still


# --- several stores on one database --------------------------------------------------


async def test_second_store_sees_same_data(
    store: BaseStore, store_factory: Callable[..., BaseStore], call: Call
) -> None:
    other = store_factory()
    assistant = await call(Assistant, "create", store, model="m")
    thread = await call(
        ChatCompletionThread, "create", store, assistant_id=assistant.id
    )
    rows = await call(store, "add_messages", thread.id, [new("from one")])

    seen = await call(ChatCompletionThread, "retrieve", other, thread.id)
    assert seen == thread
    assert (await call(other, "get_assistant", assistant.id)).model == "m"
    assert [r.id for r in await call(other, "list_messages", thread.id)] == [rows[0].id]

    more = await call(other, "add_messages", thread.id, [new("from two")])
    listed = await call(store, "list_messages", thread.id)
    assert [r.id for r in listed] == [rows[0].id, more[0].id]

    assert await call(store, "acquire_lease", thread.id, "one", 30.0)
    assert not await call(other, "acquire_lease", thread.id, "two", 30.0)
    await call(store, "release_lease", thread.id, "one")
    assert await call(other, "acquire_lease", thread.id, "two", 30.0)

    await call(other, "delete_thread", thread.id)
    with pytest.raises(ThreadNotFoundError):
        await call(store, "get_thread", thread.id)


def test_stored_objects_are_frozen(store: BaseStore) -> None:
    thread = store.create_thread({"a": "1"})
    assert isinstance(thread, StoredThread)
    with pytest.raises(ValueError, match="frozen"):
        thread.id = "x"  # type: ignore[misc]


async def test_message_payloads_are_the_listed_rows(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {})
    await call(
        store,
        "add_messages",
        thread.id,
        [new(f"q{i}") for i in range(5)],
    )
    for order, limit in (("asc", None), ("desc", None), ("desc", 2), ("asc", 3)):
        rows = await call(store, "list_messages", thread.id, order=order, limit=limit)
        pairs = await call(
            store, "list_message_payloads", thread.id, order=order, limit=limit
        )
        assert pairs == [(row.id, row.payload) for row in rows]
    with pytest.raises(ThreadNotFoundError):
        await call(store, "list_message_payloads", "thread_00000000000000000000000000")
