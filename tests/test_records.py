"""Typed records: fields kept in metadata, round-tripped exactly, on every store."""

from __future__ import annotations

import enum
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, ClassVar

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel, Field, create_model

from langchain_retro import (
    OPENAI_LIMITS,
    Assistant,
    BaseAssistant,
    BaseMessage,
    BaseThread,
    ChatCompletionThread,
    MessageNotFoundError,
    MetadataError,
    MetadataLimitError,
    RecordClassError,
    RetroValueError,
    ThreadMessage,
    ThreadNotFoundError,
)
from langchain_retro.stores.base import BaseStore

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers"]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    street: str
    number: int
    tags: list[str] = []


class Contact(BaseModel):
    name: str
    address: Address | None = None
    seen: datetime | None = None


class Profile(BaseThread):
    """Every supported kind of typed field."""

    label: str
    note: str | None = None
    count: int = 0
    ratio: float = 0.0
    flag: bool = True
    maybe: int | None = None
    when: datetime | None = None
    color: Color = Color.RED
    level: Level = Level.LOW
    tags: list[str] = Field(default_factory=list)
    scores: dict[str, float] = Field(default_factory=dict)
    contact: Contact | None = None
    contacts: list[Contact] = Field(default_factory=list)


class SupportThread(BaseThread):
    customer_id: str
    priority: int = 0
    summary: str | None = None


class EscalatedThread(SupportThread):
    manager: str


class Transcript(BaseThread):
    text: str = ""
    notes: list[str] = Field(default_factory=list)


class TunedAssistant(BaseAssistant):
    max_tokens: int = 256
    persona: str | None = None


class RatedMessage(ThreadMessage):
    rating: int
    reviewer: str | None = None


class Twin(BaseThread):
    size: int = 0


OtherTwin = create_model(
    "Twin", __base__=BaseThread, __module__="elsewhere.records", colour=(str, "")
)


class Renamed(BaseThread):
    record_class: ClassVar[str] = "stable.Renamed"
    value: int = 0


FULL = {
    "label": "hello",
    "note": "a note",
    "count": -(2**70),
    "ratio": 0.1,
    "flag": False,
    "maybe": None,
    "when": datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC),
    "color": Color.BLUE,
    "level": Level.HIGH,
    "tags": ["a", "", "ü ñ 😀", '"quoted"'],
    "scores": {"x": 1.5, "y": -0.0},
    "contact": Contact(
        name="Ann",
        address=Address(street="Main", number=1, tags=["home"]),
        seen=datetime(2020, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5))),
    ),
    "contacts": [Contact(name="Bob"), Contact(name="Cy", address=None)],
}


def same(a: object, b: object) -> bool:
    """Equality where nan equals nan and -0.0 differs from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, BaseModel) and isinstance(b, BaseModel):
        return type(a) is type(b) and same(dict(a), dict(b))
    return type(a) is type(b) and a == b


# --- round trips ---------------------------------------------------------------------


async def test_every_field_type_round_trips(store: BaseStore, call: Call) -> None:
    created = await call(Profile, "create", store, **FULL)
    back = await call(Profile, "retrieve", store, created.id)
    assert type(back) is Profile
    for name, value in FULL.items():
        assert same(getattr(back, name), value), name
    assert back == created
    assert back.flag is False
    assert back.color is Color.BLUE
    assert back.level is Level.HIGH


@pytest.mark.parametrize(
    "ratio", [math.inf, -math.inf, math.nan, -0.0, 5e-324, 1.7976931348623157e308]
)
async def test_special_floats_round_trip(
    store: BaseStore, call: Call, ratio: float
) -> None:
    created = await call(Profile, "create", store, label="f", ratio=ratio)
    back = await call(Profile, "retrieve", store, created.id)
    assert same(back.ratio, ratio)


@pytest.mark.parametrize(
    "when",
    [
        datetime(2024, 1, 1, 8, 30),  # naive stays naive
        datetime(2024, 1, 1, 8, 30, tzinfo=UTC),
        datetime(
            1969, 7, 20, 20, 17, 40, 1, tzinfo=timezone(timedelta(hours=5, minutes=45))
        ),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
    ],
)
async def test_datetimes_round_trip(
    store: BaseStore, call: Call, when: datetime
) -> None:
    created = await call(Profile, "create", store, label="d", when=when)
    back = await call(Profile, "retrieve", store, created.id)
    assert back.when == when
    assert (back.when.tzinfo is None) == (when.tzinfo is None)
    assert back.when.utcoffset() == when.utcoffset()


async def test_sub_minute_offset_keeps_the_instant(
    store: BaseStore, call: Call
) -> None:
    paris_lmt = timezone(timedelta(minutes=9, seconds=21))  # Paris before 1911
    when = datetime(1900, 1, 1, 12, 0, tzinfo=paris_lmt)
    contact = Contact(name="Old", seen=when)
    created = await call(
        Profile, "create", store, label="lmt", when=when, contact=contact
    )
    back = await call(Profile, "retrieve", store, created.id)
    assert back.when == when  # the same instant, now expressed in UTC
    assert back.when.utcoffset() == timedelta(0)
    assert back.contact is not None
    assert back.contact.seen == when


async def test_how_values_are_stored(store: BaseStore, call: Call) -> None:
    created = await call(Profile, "create", store, **FULL)
    raw = (await call(store, "get_thread", created.id)).metadata
    assert raw["label"] == "hello"  # str fields are stored raw, readable by any tool
    assert raw["note"] == "a note"
    assert raw["flag"] == "false"
    assert raw["count"] == str(-(2**70))
    assert raw["maybe"] == "null"
    assert raw["color"] == '"blue"'
    assert raw["level"] == "2"
    assert raw["retro_class"] == Profile.record_class
    assert created.metadata == {}  # typed entries are not free-form metadata


async def test_absent_optional_str_leaves_key_out(store: BaseStore, call: Call) -> None:
    created = await call(Profile, "create", store, label="")
    raw = (await call(store, "get_thread", created.id)).metadata
    assert "note" not in raw
    assert raw["label"] == ""
    back = await call(Profile, "retrieve", store, created.id)
    assert back.note is None
    assert back.label == ""
    assert back.tags == []


@pytest.mark.parametrize("text", ["null", '"x"', "42", "false", "{}", "a#1"])
async def test_str_values_that_look_like_json_stay_str(
    store: BaseStore, call: Call, text: str
) -> None:
    created = await call(Profile, "create", store, label=text, note=text)
    back = await call(Profile, "retrieve", store, created.id)
    assert (back.label, back.note) == (text, text)
    assert (await call(store, "get_thread", created.id)).metadata["label"] == text


async def test_assistant_typed_fields(store: BaseStore, call: Call) -> None:
    created = await call(
        TunedAssistant,
        "create",
        store,
        model="gpt-4o-mini",
        name="Tuned",
        instructions="Say little.",
        temperature=0.2,
        max_tokens=64,
        metadata={"team": "x"},
    )
    back = await call(TunedAssistant, "retrieve", store, created.id)
    assert back == created
    assert (back.model, back.max_tokens, back.persona) == ("gpt-4o-mini", 64, None)
    raw = await call(store, "get_assistant", created.id)
    assert raw.instructions == "Say little."
    assert raw.metadata == {
        "max_tokens": "64",
        "team": "x",
        "retro_class": TunedAssistant.record_class,
    }
    updated = await call(back, "update", store, temperature=1.5, max_tokens=128)
    assert (updated.temperature, updated.max_tokens) == (1.5, 128)
    again = await call(TunedAssistant, "retrieve", store, created.id)
    assert again == updated
    assert again.instructions == "Say little."


async def test_assistant_native_fields_validated(store: BaseStore, call: Call) -> None:
    with pytest.raises(RetroValueError):
        await call(Assistant, "create", store, model="m", temperature=3)
    created = await call(Assistant, "create", store, model="m")
    with pytest.raises(RetroValueError):
        await call(created, "update", store, top_p=2)
    assert (await call(Assistant, "retrieve", store, created.id)).top_p is None
    assert len((await call(Assistant, "list", store)).data) == 1


# --- classes -------------------------------------------------------------------------


async def test_listing_by_class_returns_typed_objects(
    store: BaseStore, call: Call
) -> None:
    plain = await call(BaseThread, "create", store)
    support = await call(SupportThread, "create", store, customer_id="c1")
    escalated = await call(
        EscalatedThread, "create", store, customer_id="c2", manager="m"
    )
    profile = await call(Profile, "create", store, label="p")

    listed = await call(SupportThread, "list", store)
    assert [(type(t), t.id) for t in listed.data] == [
        (EscalatedThread, escalated.id),
        (SupportThread, support.id),
    ]
    only = await call(EscalatedThread, "list", store)
    assert [t.id for t in only.data] == [escalated.id]
    assert only.data[0].manager == "m"

    everything = await call(BaseThread, "list", store)
    assert [(type(t), t.id) for t in everything.data] == [
        (Profile, profile.id),
        (EscalatedThread, escalated.id),
        (SupportThread, support.id),
        (BaseThread, plain.id),
    ]
    assert everything.data[1] == escalated


async def test_retrieving_through_base_returns_own_class(
    store: BaseStore, call: Call
) -> None:
    escalated = await call(
        EscalatedThread, "create", store, customer_id="c", manager="m"
    )
    assert await call(BaseThread, "retrieve", store, escalated.id) == escalated
    assert await call(SupportThread, "retrieve", store, escalated.id) == escalated


async def test_unrelated_class_is_refused(store: BaseStore, call: Call) -> None:
    support = await call(SupportThread, "create", store, customer_id="c")
    with pytest.raises(RecordClassError) as caught:
        await call(Profile, "retrieve", store, support.id)
    assert isinstance(caught.value, ValueError)
    assert support.id in str(caught.value)
    with pytest.raises(RecordClassError):
        await call(EscalatedThread, "retrieve", store, support.id)
    plain = await call(BaseThread, "create", store)
    with pytest.raises(RecordClassError):
        await call(SupportThread, "retrieve", store, plain.id)


async def test_same_name_in_other_module_does_not_collide(
    store: BaseStore, call: Call
) -> None:
    assert Twin.__name__ == OtherTwin.__name__
    assert Twin.record_class != OtherTwin.record_class
    mine = await call(Twin, "create", store, size=3)
    theirs = await call(OtherTwin, "create", store, colour="green")

    assert [t.id for t in (await call(Twin, "list", store)).data] == [mine.id]
    assert [t.id for t in (await call(OtherTwin, "list", store)).data] == [theirs.id]
    assert type(await call(BaseThread, "retrieve", store, theirs.id)) is OtherTwin
    with pytest.raises(RecordClassError):
        await call(Twin, "retrieve", store, theirs.id)


async def test_record_class_marker_can_be_pinned(store: BaseStore, call: Call) -> None:
    created = await call(Renamed, "create", store, value=7)
    raw = await call(store, "get_thread", created.id)
    assert raw.metadata["retro_class"] == "stable.Renamed"
    assert (await call(BaseThread, "retrieve", store, created.id)).value == 7


async def test_unknown_class_read_through_base(store: BaseStore, call: Call) -> None:
    stored = await call(
        store, "create_thread", {"retro_class": "gone.Thread", "field": "1"}
    )
    back = await call(BaseThread, "retrieve", store, stored.id)
    assert type(back) is BaseThread
    assert back.metadata["field"] == "1"
    with pytest.raises(RecordClassError):
        await call(SupportThread, "retrieve", store, stored.id)


async def test_unknown_id(store: BaseStore, call: Call) -> None:
    with pytest.raises(ThreadNotFoundError) as caught:
        await call(SupportThread, "retrieve", store, "thread_nope")
    assert caught.value.object_id == "thread_nope"


# --- updates -------------------------------------------------------------------------


async def test_update_writes_only_changed_fields(store: BaseStore, call: Call) -> None:
    created = await call(
        SupportThread, "create", store, customer_id="c", priority=1, summary="s"
    )
    stale_a = stale_b = created
    first = await call(stale_a, "update", store, priority=5)
    assert (first.priority, first.summary) == (5, "s")
    second = await call(stale_b, "update", store, summary="changed")
    # The second snapshot was stale, yet its write kept the first one's change.
    assert (second.priority, second.summary) == (5, "changed")
    back = await call(SupportThread, "retrieve", store, created.id)
    assert (back.customer_id, back.priority, back.summary) == ("c", 5, "changed")
    assert created.priority == 1  # snapshots are immutable


async def test_update_free_metadata_merges(store: BaseStore, call: Call) -> None:
    created = await call(
        SupportThread, "create", store, customer_id="c", metadata={"a": "1", "b": "2"}
    )
    stale = created
    updated = await call(created, "update", store, metadata={"b": None, "c": "3"})
    assert updated.metadata == {"a": "1", "c": "3"}
    other = await call(stale, "update", store, metadata={"d": "4"})
    assert other.metadata == {"a": "1", "c": "3", "d": "4"}
    back = await call(SupportThread, "retrieve", store, created.id)
    assert back.metadata == {"a": "1", "c": "3", "d": "4"}
    assert back.customer_id == "c"


async def test_update_optional_str_to_none_removes_key(
    store: BaseStore, call: Call
) -> None:
    created = await call(SupportThread, "create", store, customer_id="c", summary="s")
    updated = await call(created, "update", store, summary=None)
    assert updated.summary is None
    raw = await call(store, "get_thread", created.id)
    assert "summary" not in raw.metadata
    assert (await call(SupportThread, "retrieve", store, created.id)).summary is None


async def test_update_refuses_unknown_and_fixed_fields(
    store: BaseStore, call: Call
) -> None:
    created = await call(SupportThread, "create", store, customer_id="c")
    for changes in ({"nope": 1}, {"id": "thread_x"}, {"created_at": 1}):
        with pytest.raises(MetadataError):
            await call(created, "update", store, **changes)
    assert await call(SupportThread, "retrieve", store, created.id) == created


async def test_wrong_types_rejected_before_write(store: BaseStore, call: Call) -> None:
    with pytest.raises(RetroValueError):
        await call(SupportThread, "create", store, customer_id="c", priority="high")
    with pytest.raises(RetroValueError):
        await call(SupportThread, "create", store, priority=1)  # missing customer_id
    with pytest.raises(RetroValueError):
        await call(SupportThread, "create", store, customer_id="c", extra=1)
    assert (await call(BaseThread, "list", store)).data == []

    created = await call(SupportThread, "create", store, customer_id="c")
    with pytest.raises(RetroValueError):
        await call(created, "update", store, priority="urgent")
    assert await call(SupportThread, "retrieve", store, created.id) == created


@pytest.mark.parametrize("key", ["priority", "customer_id", "summary#1", "retro_class"])
async def test_reserved_free_keys(store: BaseStore, call: Call, key: str) -> None:
    with pytest.raises(MetadataError) as caught:
        await call(SupportThread, "create", store, customer_id="c", metadata={key: "x"})
    assert key in str(caught.value)
    assert (await call(BaseThread, "list", store)).data == []
    created = await call(SupportThread, "create", store, customer_id="c")
    with pytest.raises(MetadataError):
        await call(created, "update", store, metadata={key: "x"})
    assert await call(SupportThread, "retrieve", store, created.id) == created


async def test_typed_filter_validation(store: BaseStore, call: Call) -> None:
    with pytest.raises(MetadataError):
        await call(SupportThread, "list", store, nope="x")
    with pytest.raises(MetadataError):
        await call(SupportThread, "list", store, summary=None)


async def test_typed_filters_match_encoded_values(store: BaseStore, call: Call) -> None:
    off = await call(Profile, "create", store, label="a", flag=False, color=Color.BLUE)
    await call(Profile, "create", store, label="b", flag=True)
    assert [t.id for t in (await call(Profile, "list", store, flag=False)).data] == [
        off.id
    ]
    by_enum = await call(Profile, "list", store, color=Color.BLUE)
    assert [t.id for t in by_enum.data] == [off.id]


# --- limits --------------------------------------------------------------------------


async def test_long_values_span_keys(store: BaseStore, call: Call) -> None:
    store.limits = OPENAI_LIMITS
    text = "".join(chr(0x41 + i % 26) for i in range(1300))
    notes = [f"note {i} " * 20 for i in range(5)]
    created = await call(Transcript, "create", store, text=text, notes=notes)
    raw = (await call(store, "get_thread", created.id)).metadata
    assert {k for k in raw if k.startswith("text")} == {"text", "text#1", "text#2"}
    assert all(len(v) <= 512 for v in raw.values())
    assert "".join(raw[k] for k in ("text", "text#1", "text#2")) == text
    assert len(raw) <= 16
    back = await call(Transcript, "retrieve", store, created.id)
    assert (back.text, back.notes) == (text, notes)

    shrunk = await call(back, "update", store, text="short")
    raw = (await call(store, "get_thread", created.id)).metadata
    assert {k for k in raw if k.startswith("text")} == {"text"}
    assert raw["text"] == "short"
    assert shrunk.notes == notes
    assert await call(Transcript, "retrieve", store, created.id) == shrunk


async def test_over_limit_create_writes_nothing(store: BaseStore, call: Call) -> None:
    store.limits = OPENAI_LIMITS
    with pytest.raises(MetadataLimitError) as caught:
        await call(Transcript, "create", store, text="x" * (512 * 16))
    assert caught.value.field == "text"
    assert caught.value.limit == 16
    assert caught.value.size == 18  # 16 pieces, notes=[] and the class marker
    assert (await call(BaseThread, "list", store)).data == []


async def test_over_limit_update_leaves_object_unchanged(
    store: BaseStore, call: Call
) -> None:
    store.limits = OPENAI_LIMITS
    created = await call(Transcript, "create", store, text="t" * 1000)
    before = await call(store, "get_thread", created.id)
    with pytest.raises(MetadataLimitError) as caught:
        await call(created, "update", store, notes=["n" * 500] * 20)
    assert caught.value.field == "notes"
    assert caught.value.limit == 16
    assert caught.value.size > 16
    assert await call(store, "get_thread", created.id) == before


@pytest.mark.parametrize(
    ("metadata", "limit", "size"),
    [
        ({"k" * 65: "v"}, 64, 65),
        ({"free": "v" * 513}, 512, 513),
        ({f"k{i}": "v" for i in range(16)}, 16, 17),
    ],
    ids=["key-length", "value-length", "key-count"],
)
async def test_free_metadata_limits(
    store: BaseStore, call: Call, metadata: dict[str, str], limit: int, size: int
) -> None:
    store.limits = OPENAI_LIMITS
    with pytest.raises(MetadataLimitError) as caught:
        await call(BaseThread, "create", store, metadata=metadata)
    assert (caught.value.limit, caught.value.size) == (limit, size)
    assert caught.value.field is not None
    assert (await call(BaseThread, "list", store)).data == []

    created = await call(BaseThread, "create", store, metadata={"keep": "1"})
    with pytest.raises(MetadataLimitError):
        await call(created, "update", store, metadata=metadata)
    assert (await call(store, "get_thread", created.id)).metadata == {
        "keep": "1",
        "retro_class": BaseThread.record_class,
    }


# --- chat completion threads ---------------------------------------------------------


async def test_chat_completion_thread(store: BaseStore, call: Call) -> None:
    assistant = await call(Assistant, "create", store, model="gpt-4o-mini")
    thread = await call(
        ChatCompletionThread, "create", store, assistant_id=assistant.id
    )
    assert thread.assistant_id == assistant.id
    assert thread.hwm is None
    assert thread.chat_completion_model is None
    raw = (await call(store, "get_thread", thread.id)).metadata
    assert raw == {
        "assistant_id": assistant.id,
        "retro_class": "langchain_retro.ChatCompletionThread",
    }
    moved = await call(
        thread, "update", store, hwm="msg_x", chat_completion_model="gpt-4.1"
    )
    back = await call(ChatCompletionThread, "retrieve", store, thread.id)
    assert back == moved
    assert (back.hwm, back.chat_completion_model) == ("msg_x", "gpt-4.1")
    with pytest.raises(RetroValueError):
        await call(ChatCompletionThread, "create", store)


# --- message records -----------------------------------------------------------------


async def test_thread_message_records(store: BaseStore, call: Call) -> None:
    thread = await call(BaseThread, "create", store)
    first = await call(
        ThreadMessage,
        "create",
        store,
        thread_id=thread.id,
        message=HumanMessage("Hello?"),
        metadata={"source": "web"},
    )
    assert first.id.startswith("msg_")
    assert first.message.id == first.id
    assert first.role == "user"
    assert first.thread_id == thread.id
    assert first.metadata == {"source": "web"}
    second = await call(
        ThreadMessage, "create", store, thread_id=thread.id, message=AIMessage("Hi!")
    )
    assert second.role == "assistant"

    page = await call(ThreadMessage, "list", store, thread.id)
    assert page.data == [first, second]
    assert await call(ThreadMessage, "retrieve", store, thread.id, first.id) == first

    updated = await call(first, "update", store, metadata={"source": None, "x": "1"})
    assert updated.metadata == {"x": "1"}
    assert updated.message == first.message
    with pytest.raises(MetadataError):
        await call(first, "update", store, message=HumanMessage("changed"))

    await call(first, "delete", store)
    with pytest.raises(MessageNotFoundError):
        await call(ThreadMessage, "retrieve", store, thread.id, first.id)
    assert (await call(ThreadMessage, "list", store, thread.id)).data == [second]


async def test_typed_message_subclass(store: BaseStore, call: Call) -> None:
    thread = await call(BaseThread, "create", store)
    plain = await call(
        ThreadMessage, "create", store, thread_id=thread.id, message=HumanMessage("q")
    )
    rated = await call(
        RatedMessage,
        "create",
        store,
        thread_id=thread.id,
        message=AIMessage("a"),
        rating=4,
    )
    assert (rated.rating, rated.reviewer) == (4, None)
    raw = await call(store, "get_message", thread.id, rated.id)
    assert raw.metadata == {"rating": "4", "retro_class": RatedMessage.record_class}

    listed = await call(ThreadMessage, "list", store, thread.id)
    assert [type(m) for m in listed.data] == [ThreadMessage, RatedMessage]
    assert listed.data[1] == rated
    via_base = await call(BaseMessage, "retrieve", store, thread.id, rated.id)
    assert via_base == rated

    updated = await call(rated, "update", store, rating=5, reviewer="ann")
    assert await call(RatedMessage, "retrieve", store, thread.id, rated.id) == updated
    with pytest.raises(RecordClassError):
        await call(RatedMessage, "retrieve", store, thread.id, plain.id)
    with pytest.raises(RetroValueError):
        await call(
            RatedMessage,
            "create",
            store,
            thread_id=thread.id,
            message=HumanMessage("x"),
        )
    assert len((await call(ThreadMessage, "list", store, thread.id)).data) == 2


# --- page sizes ----------------------------------------------------------------------


async def test_page_size_bounds(store: BaseStore, call: Call) -> None:
    thread = await call(BaseThread, "create", store)
    await call(Assistant, "create", store, model="m")
    await call(
        ThreadMessage, "create", store, thread_id=thread.id, message=HumanMessage("x")
    )
    listings = [
        (BaseThread, (store,)),
        (Assistant, (store,)),
        (ThreadMessage, (store, thread.id)),
    ]
    for cls, args in listings:
        page = await call(cls, "list", *args, limit=10_000)
        assert len(page.data) == 1
        assert not page.has_more
        for bad in (0, -1, 10_001):
            with pytest.raises(RetroValueError, match="limit"):
                await call(cls, "list", *args, limit=bad)


async def test_filtering_on_a_value_that_spans_keys_is_refused(
    store: BaseStore, call: Call
) -> None:
    store.limits = OPENAI_LIMITS
    long = "y" * 600
    await call(Transcript, "create", store, text=long)
    with pytest.raises(MetadataLimitError) as info:
        await call(Transcript, "list", store, text=long)
    assert info.value.field == "text"
    assert info.value.limit == 512
    assert info.value.size == 600


async def test_a_page_before_a_cursor_is_the_previous_page(
    store: BaseStore, call: Call
) -> None:
    thread = await call(BaseThread, "create", store)
    ids = [
        (
            await call(
                ThreadMessage,
                "create",
                store,
                thread_id=thread.id,
                message=HumanMessage(f"m{i}"),
            )
        ).id
        for i in range(10)
    ]
    page = await call(ThreadMessage, "list", store, thread.id, before=ids[8], limit=2)
    assert [m.id for m in page.data] == ids[6:8]
    assert page.has_more
    first = await call(ThreadMessage, "list", store, thread.id, before=ids[2], limit=2)
    assert [m.id for m in first.data] == ids[0:2]
    assert not first.has_more
    newest_first = await call(
        ThreadMessage, "list", store, thread.id, before=ids[8], limit=2, order="desc"
    )
    assert [m.id for m in newest_first.data] == [ids[7], ids[6]]
    assert newest_first.has_more

    threads = [(await call(BaseThread, "create", store)).id for _ in range(5)]
    # Newest first: the threads "before" the oldest of these are the newer ones.
    back = await call(BaseThread, "list", store, before=threads[0], limit=2)
    assert [t.id for t in back.data] == [threads[2], threads[1]]
    assert back.has_more
