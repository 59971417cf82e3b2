"""The store contract for message ids, reply links, answered marks and bulk writes.

Run against every backend, sync and async, through the `BaseStore` protocol only:
caller-supplied ids are kept (unique within a thread), replies carry the run that
wrote them and what they answered, ``hwm_key`` marks what a reply answers in the same
write, counts are cheap, and the bulk path writes all or none.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from conftest import EVERY_BACKEND
from langchain_core.messages import AIMessage, HumanMessage

from langchain_retro import (
    OPENAI_LIMITS,
    MessageIdConflictError,
    MetadataLimitError,
    RetroValueError,
    ThreadNotFoundError,
)
from langchain_retro._messages import to_payload
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import (
    MAX_MESSAGE_ID_LENGTH,
    BaseStore,
    NewMessage,
    RunUpdate,
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


UNKNOWN_THREAD = "thread_00000000000000000000000000"


def new(text: str, role: str = "user", **fields: object) -> NewMessage:
    message = HumanMessage(text) if role != "assistant" else AIMessage(text)
    return NewMessage(role=role, payload=to_payload(message), **fields)  # type: ignore[arg-type]


def texts(rows: list) -> list[str]:
    return [json.loads(row.payload)["content"] for row in rows]


# --- caller ids ----------------------------------------------------------------------


async def test_caller_ids_are_kept_and_missing_ones_assigned(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {})
    rows = await call(
        store, "add_messages", thread.id, [new("a", id="client-1"), new("b")]
    )
    assert rows[0].id == "client-1"
    assert rows[1].id.startswith("msg_")
    assert [r.id for r in await call(store, "list_messages", thread.id)] == [
        "client-1",
        rows[1].id,
    ]
    got = await call(store, "get_message", thread.id, "client-1")
    assert texts([got]) == ["a"]
    # A caller id works as a cursor like any other.
    after = await call(store, "list_messages", thread.id, after="client-1")
    assert [r.id for r in after] == [rows[1].id]
    assert await call(store, "count_messages", thread.id, after="client-1") == 1


async def test_a_clashing_id_writes_nothing(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {})
    await call(store, "add_messages", thread.id, [new("a", id="dup")])
    with pytest.raises(MessageIdConflictError) as caught:
        await call(store, "add_messages", thread.id, [new("b"), new("c", id="dup")])
    assert caught.value.thread_id == thread.id
    assert caught.value.message_id == "dup"
    assert texts(await call(store, "list_messages", thread.id)) == ["a"]
    # Twice in one batch is a clash too, caught before any write.
    with pytest.raises(MessageIdConflictError):
        await call(
            store, "add_messages", thread.id, [new("d", id="x"), new("e", id="x")]
        )
    assert await call(store, "count_messages", thread.id) == 1
    # The order goes on without a gap after refused batches.
    rows = await call(store, "add_messages", thread.id, [new("f")])
    assert texts(await call(store, "list_messages", thread.id)) == ["a", "f"]
    assert rows[0].id.startswith("msg_")


async def test_the_same_id_may_be_used_in_two_threads(
    store: BaseStore, call: Call
) -> None:
    one = await call(store, "create_thread", {})
    two = await call(store, "create_thread", {})
    await call(store, "add_messages", one.id, [new("in one", id="same")])
    await call(store, "add_messages", two.id, [new("in two", id="same")])
    assert texts([await call(store, "get_message", one.id, "same")]) == ["in one"]
    assert texts([await call(store, "get_message", two.id, "same")]) == ["in two"]
    await call(store, "delete_message", one.id, "same")
    assert texts(await call(store, "list_messages", two.id)) == ["in two"]
    assert await call(store, "list_messages", one.id) == []


@pytest.mark.parametrize(
    "bad",
    ["", " padded", "x" * (MAX_MESSAGE_ID_LENGTH + 1), "nul\x00byte"],
    ids=["empty", "whitespace", "too-long", "nul"],
)
async def test_unusable_ids_are_refused_before_any_write(
    store: BaseStore, call: Call, bad: str
) -> None:
    thread = await call(store, "create_thread", {})
    with pytest.raises(RetroValueError) as caught:
        await call(store, "add_messages", thread.id, [new("ok"), new("no", id=bad)])
    assert thread.id in str(caught.value)
    assert await call(store, "count_messages", thread.id) == 0


async def test_created_at_is_kept_when_given(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {})
    rows = await call(
        store, "add_messages", thread.id, [new("old", created_at=1_600_000_000)]
    )
    assert rows[0].created_at == 1_600_000_000
    got = await call(store, "get_message", thread.id, rows[0].id)
    assert got.created_at == 1_600_000_000


# --- replies -------------------------------------------------------------------------


async def test_reply_links_round_trip(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {})
    (question,) = await call(store, "add_messages", thread.id, [new("q")])
    reply = new(
        "a",
        role="assistant",
        run_id="run_1",
        assistant_id="asst_1",
        reply_to=question.id,
    )
    (stored,) = await call(store, "add_messages", thread.id, [reply])
    assert (stored.run_id, stored.assistant_id, stored.reply_to) == (
        "run_1",
        "asst_1",
        question.id,
    )
    for got in (
        await call(store, "get_message", thread.id, stored.id),
        (await call(store, "list_messages", thread.id))[-1],
        (await call(store, "list_messages", thread.id, order="desc", limit=1))[0],
    ):
        assert got == stored
    plain = (await call(store, "list_messages", thread.id))[0]
    assert (plain.run_id, plain.assistant_id, plain.reply_to) == (None, None, None)


async def test_finish_run_keeps_the_reply_links(store: BaseStore, call: Call) -> None:
    assistant = await call(store, "create_assistant", {"model": "m"}, {})
    thread = await call(store, "create_thread", {"assistant_id": assistant.id})
    start = await call(
        store, "begin_run", thread.id, owner="run_x", ttl=30.0, messages=[new("q")]
    )
    question = start.appended[0]
    saved = await call(
        store,
        "finish_run",
        thread.id,
        owner="run_x",
        run_id="run_x",
        update=RunUpdate(status="completed"),
        messages=[
            new(
                "a",
                role="assistant",
                run_id="run_x",
                assistant_id=assistant.id,
                reply_to=question.id,
            )
        ],
        thread_patch=MetadataPatch(set={"hwm": question.id}),
    )
    (stored,) = saved.messages
    got = await call(store, "get_message", thread.id, stored.id)
    assert (got.run_id, got.assistant_id, got.reply_to) == (
        "run_x",
        assistant.id,
        question.id,
    )


# --- hwm_key: a reply marks what it answers ------------------------------------------


async def test_hwm_key_marks_the_messages_a_reply_answers(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {"keep": "1"})
    rows = await call(
        store,
        "add_messages",
        thread.id,
        [new("q1"), new("q2"), new("a", role="assistant"), new("q3")],
        hwm_key="hwm",
    )
    got = await call(store, "get_thread", thread.id)
    assert got.metadata == {"keep": "1", "hwm": rows[1].id}

    # A batch of replies only looks back into the thread.
    await call(
        store, "add_messages", thread.id, [new("a2", role="assistant")], hwm_key="hwm"
    )
    got = await call(store, "get_thread", thread.id)
    assert got.metadata["hwm"] == rows[3].id

    # No reply in the batch: nothing moves.
    await call(store, "add_messages", thread.id, [new("q4")], hwm_key="hwm")
    got = await call(store, "get_thread", thread.id)
    assert got.metadata["hwm"] == rows[3].id


async def test_hwm_key_with_nothing_before_the_reply(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {})
    await call(
        store,
        "add_messages",
        thread.id,
        [new("hello", role="assistant")],
        hwm_key="hwm",
    )
    assert (await call(store, "get_thread", thread.id)).metadata == {}


async def test_hwm_key_after_a_thread_patch(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {})
    rows = await call(
        store,
        "add_messages",
        thread.id,
        [new("q"), new("a", role="assistant")],
        thread_patch=MetadataPatch(set={"hwm": "stale", "other": "x"}),
        hwm_key="hwm",
    )
    got = await call(store, "get_thread", thread.id)
    assert got.metadata == {"hwm": rows[0].id, "other": "x"}


# --- counts --------------------------------------------------------------------------


async def test_count_follows_every_write(store: BaseStore, call: Call) -> None:
    thread = await call(store, "create_thread", {})
    rows = await call(
        store, "add_messages", thread.id, [new(f"m{i}") for i in range(5)]
    )
    assert await call(store, "count_messages", thread.id) == 5
    await call(store, "delete_message", thread.id, rows[2].id)
    assert await call(store, "count_messages", thread.id) == 4
    with pytest.raises(MessageIdConflictError):
        await call(store, "add_messages", thread.id, [new("x", id=rows[0].id)])
    assert await call(store, "count_messages", thread.id) == 4
    await call(store, "bulk_add_messages", [(thread.id, [new("b1"), new("b2")])])
    assert await call(store, "count_messages", thread.id) == 6
    assert await call(store, "clear_messages", thread.id) == 6
    assert await call(store, "count_messages", thread.id) == 0
    await call(store, "add_messages", thread.id, [new("again")])
    assert await call(store, "count_messages", thread.id) == 1


# --- bulk writes ---------------------------------------------------------------------


async def test_create_threads_in_order(store: BaseStore, call: Call) -> None:
    made = await call(store, "create_threads", [{"n": str(i)} for i in range(5)])
    assert [t.metadata for t in made] == [{"n": str(i)} for i in range(5)]
    assert len({t.id for t in made}) == 5
    for thread in made:
        assert await call(store, "get_thread", thread.id) == thread


async def test_create_threads_checks_every_map_first(
    store: BaseStore, call: Call
) -> None:
    store.limits = OPENAI_LIMITS
    with pytest.raises(MetadataLimitError):
        await call(store, "create_threads", [{"ok": "1"}, {"bad": "x" * 513}])
    assert await call(store, "list_threads", ThreadQuery(limit=100)) == []


async def test_bulk_add_messages(store: BaseStore, call: Call) -> None:
    one, two = await call(store, "create_threads", [{}, {}])
    written = await call(
        store,
        "bulk_add_messages",
        [
            (one.id, [new("1a", id="keep-me"), new("1b")]),
            (two.id, [new("2a"), new("2b", role="assistant", reply_to="x")]),
            (one.id, [new("1c", created_at=1_500_000_000)]),
        ],
    )
    assert written == 5
    rows = await call(store, "list_messages", one.id)
    assert texts(rows) == ["1a", "1b", "1c"]
    assert rows[0].id == "keep-me"
    assert rows[2].created_at == 1_500_000_000
    assert len({r.id for r in rows}) == 3
    rows = await call(store, "list_messages", two.id)
    assert texts(rows) == ["2a", "2b"]
    assert rows[1].reply_to == "x"
    # Appends after a bulk write continue each thread's order.
    await call(store, "add_messages", one.id, [new("1d")])
    assert texts(await call(store, "list_messages", one.id)) == ["1a", "1b", "1c", "1d"]


async def test_bulk_add_messages_is_all_or_nothing(
    store: BaseStore, call: Call
) -> None:
    one, two = await call(store, "create_threads", [{}, {}])
    await call(store, "add_messages", two.id, [new("there", id="taken")])
    with pytest.raises(MessageIdConflictError):
        await call(
            store,
            "bulk_add_messages",
            [(one.id, [new("a")]), (two.id, [new("b", id="taken")])],
        )
    with pytest.raises(ThreadNotFoundError):
        await call(
            store,
            "bulk_add_messages",
            [(one.id, [new("a")]), (UNKNOWN_THREAD, [new("b")])],
        )
    assert await call(store, "count_messages", one.id) == 0
    assert texts(await call(store, "list_messages", two.id)) == ["there"]


# --- text a database cannot take -----------------------------------------------------


async def test_lone_surrogates_are_refused_before_any_write(
    store: BaseStore, call: Call
) -> None:
    thread = await call(store, "create_thread", {"k": "v"})
    bad = "a\ud800"
    refused = [
        ("get_thread", (bad,), {}),
        ("create_thread", ({"k": bad},), {}),
        ("create_thread", ({bad: "v"},), {}),
        ("acquire_lease", (bad, "owner", 1.0), {}),
        ("add_messages", (thread.id, [new("x", id=bad)]), {}),
        ("add_messages", (thread.id, [NewMessage(role="user", payload=bad)]), {}),
        ("list_threads", (ThreadQuery(metadata={"k": bad}),), {}),
    ]
    for name, args, kwargs in refused:
        with pytest.raises(RetroValueError, match="lone surrogate"):
            await call(store, name, *args, **kwargs)
    with pytest.raises(RetroValueError, match="lone surrogate"):
        MetadataPatch(set={"k": bad})
    assert await call(store, "count_messages", thread.id) == 0
    assert [t.id for t in await call(store, "list_threads", ThreadQuery())] == [
        thread.id
    ]
