"""Typed filters are validated by the field's type; message listings go by class."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_retro import (
    AssistantThreadChatMessageHistory,
    BaseMessage,
    BaseThread,
    MetadataError,
    RetroValueError,
    ThreadMessage,
)
from langchain_retro.stores.base import BaseStore

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers"]


class Counted(BaseThread):
    n: int = 0
    ratio: float = 0.0
    on: bool = False
    due: datetime | None = None
    owner: str = ""


class Rated(BaseMessage):
    stars: int = 0


class Starred(Rated):
    pass


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("n", "1", 1),
        ("n", 1.0, 1),
        ("ratio", "0.5", 0.5),
        ("ratio", 2, 2.0),
        ("on", "true", True),
        ("due", "2026-09-01T00:00:00Z", datetime(2026, 9, 1, tzinfo=UTC)),
    ],
)
async def test_filter_values_are_coerced_by_the_field_type(
    store: BaseStore, call: Call, field: str, value: Any, stored: Any
) -> None:
    match = await call(Counted, "create", store, **{field: stored})
    await call(Counted, "create", store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pydantic serialiser warning
        page = await call(Counted, "list", store, **{field: value})
    assert [t.id for t in page.data] == [match.id]


@pytest.mark.parametrize(
    ("field", "value"),
    [("n", "one"), ("n", 1.5), ("ratio", "x"), ("on", "maybe"), ("owner", 5)],
)
async def test_invalid_filter_values_name_field_type_and_value(
    store: BaseStore, call: Call, field: str, value: Any
) -> None:
    await call(Counted, "create", store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MetadataError) as caught:
            await call(Counted, "list", store, **{field: value})
    assert isinstance(caught.value, RetroValueError)
    assert caught.value.field == field
    message = str(caught.value)
    assert f"{field}={value!r}" in message
    assert Counted.model_fields[field].annotation.__name__ in message  # type: ignore[union-attr]


async def test_listing_through_a_subclass_returns_its_messages(
    store: BaseStore, call: Call
) -> None:
    thread = await call(BaseThread, "create", store)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    await call(history, "add_messages", [HumanMessage(f"plain {i}") for i in range(5)])
    rated = []
    for i in range(3):
        message = HumanMessage(f"rated {i}")
        kind = Starred if i == 1 else Rated
        rated.append(
            await call(kind, "create", store, thread_id=thread.id, message=message)
        )
        await call(history, "add_messages", [AIMessage(f"plain reply {i}")])

    page = await call(Rated, "list", store, thread.id)
    assert [m.id for m in page.data] == [m.id for m in rated]
    assert [type(m) for m in page.data] == [Rated, Starred, Rated]
    assert not page.has_more
    only = await call(Starred, "list", store, thread.id)
    assert [m.id for m in only.data] == [rated[1].id]
    plain = await call(ThreadMessage, "list", store, thread.id, limit=100)
    assert len(plain.data) == 8
    everything = await call(BaseMessage, "list", store, thread.id, limit=100)
    assert len(everything.data) == 11


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_subclass_pages_follow_their_cursors(
    store: BaseStore, call: Call, order: str
) -> None:
    thread = await call(BaseThread, "create", store)
    history = AssistantThreadChatMessageHistory(store, thread.id)
    ids = []
    for i in range(7):
        await call(history, "add_messages", [HumanMessage(f"p{i}"), AIMessage("r")])
        created = await call(
            Rated, "create", store, thread_id=thread.id, message=HumanMessage(f"x{i}")
        )
        ids.append(created.id)
    expected = ids if order == "asc" else ids[::-1]
    seen: list[str] = []
    cursor: dict[str, str] = {}
    while True:  # message cursors are in thread order: desc pages go "before"
        page = await call(
            Rated, "list", store, thread.id, order=order, limit=2, **cursor
        )
        seen += [m.id for m in page.data]
        if not page.has_more:
            break
        assert page.last_id is not None
        cursor = {"after" if order == "asc" else "before": page.last_id}
    assert seen == expected
    if order == "asc":  # the page nearest a cursor, read back from it
        back = await call(Rated, "list", store, thread.id, before=ids[5], limit=2)
        assert [m.id for m in back.data] == ids[3:5]
        assert back.has_more
        first = await call(Rated, "list", store, thread.id, before=ids[2], limit=5)
        assert [m.id for m in first.data] == ids[:2]
        assert not first.has_more
    else:
        back = await call(
            Rated, "list", store, thread.id, before=ids[5], order="desc", limit=2
        )
        assert [m.id for m in back.data] == [ids[4], ids[3]]
