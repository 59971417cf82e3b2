"""Property tests: the metadata codec and the message codec lose nothing."""

from __future__ import annotations

import enum
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages import BaseMessage as LCBaseMessage
from pydantic import BaseModel, Field

from langchain_retro._messages import MessageCache, from_payload, to_payload
from langchain_retro._metadata import (
    FieldCodec,
    MetadataLimits,
    MetadataPatch,
    decode_fields,
    encode_fields,
    field_keys,
    split_metadata,
)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class Shade(enum.Enum):
    LIGHT = "light"
    DARK = "dark"


class Point(BaseModel):
    x: float
    y: float
    label: str | None = None


class Shape(BaseModel):
    name: str
    points: list[Point] = Field(default_factory=list)
    shade: Shade = Shade.LIGHT
    created: datetime | None = None


class Sample(BaseModel):
    """One field per annotated type the codec must round-trip."""

    text: str = ""
    maybe_text: str | None = None
    number: int = 0
    ratio: float = 0.0
    flag: bool = False
    when: datetime | None = None
    shade: Shade = Shade.LIGHT
    numbers: list[int] = Field(default_factory=list)
    ratios: dict[str, float] = Field(default_factory=dict)
    optional_number: int | None = None
    shape: Shape | None = None
    shapes: list[Shape] = Field(default_factory=list)
    words: dict[str, list[str]] = Field(default_factory=dict)


CODECS = tuple(
    FieldCodec.for_field(name, info) for name, info in Sample.model_fields.items()
)
NAMES = frozenset(Sample.model_fields)

# Offsets pydantic can write: whole minutes (sub-minute offsets are normalised to UTC).
OFFSETS = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    ),
    st.integers(min_value=-86399, max_value=86399).map(
        lambda seconds: timezone(timedelta(seconds=seconds))
    ),
)
DATETIMES = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz),
    st.datetimes(
        min_value=datetime(1, 1, 2),  # room for any offset either way
        max_value=datetime(9999, 12, 30),
    ),
    OFFSETS,
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
TEXT = st.text(max_size=300)
POINTS = st.builds(Point, x=FLOATS, y=FLOATS, label=st.none() | TEXT)
SHAPES = st.builds(
    Shape,
    name=TEXT,
    points=st.lists(POINTS, max_size=3),
    shade=st.sampled_from(Shade),
    created=st.none() | DATETIMES,
)

FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "text": TEXT,
    "maybe_text": st.none() | TEXT,
    "number": st.integers(min_value=-(2**80), max_value=2**80),
    "ratio": FLOATS,
    "flag": st.booleans(),
    "when": st.none() | DATETIMES,
    "shade": st.sampled_from(Shade),
    "numbers": st.lists(st.integers(), max_size=20),
    "ratios": st.dictionaries(TEXT, FLOATS, max_size=5),
    "optional_number": st.none() | st.integers(),
    "shape": st.none() | SHAPES,
    "shapes": st.lists(SHAPES, max_size=3),
    "words": st.dictionaries(TEXT, st.lists(TEXT, max_size=4), max_size=4),
}

VALUES = st.fixed_dictionaries({}, optional=dict(FIELD_VALUES))
LIMITS = st.builds(
    MetadataLimits, max_value_length=st.none() | st.integers(min_value=1, max_value=64)
)
FREE = st.dictionaries(
    st.text(alphabet="abcdefgh_", min_size=1, max_size=8).map(lambda k: f"free_{k}"),
    TEXT,
    max_size=3,
)


def same(a: Any, b: Any) -> bool:  # noqa: PLR0911
    """Equality where nan equals nan, -0.0 differs from 0.0, and types must match."""
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
    if isinstance(a, datetime) and isinstance(b, datetime):
        return a == b and (a.tzinfo is None) == (b.tzinfo is None)
    return type(a) is type(b) and a == b


def _decoded(metadata: dict[str, str]) -> dict[str, Any]:
    typed, _ = split_metadata(metadata, NAMES)
    decoded = decode_fields(CODECS, typed)
    # Absent ``str | None`` fields read back as None, matching their default.
    return {k: v for k, v in decoded.items() if not (k == "maybe_text" and v is None)}


def _expected(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not (k == "maybe_text" and v is None)}


# --- the metadata codec --------------------------------------------------------------


@PROPERTY
@given(values=VALUES, limits=LIMITS, free=FREE)
def test_encode_decode_round_trips(
    values: dict[str, Any], limits: MetadataLimits, free: dict[str, str]
) -> None:
    encoded = encode_fields(CODECS, values, limits)
    if limits.max_value_length is not None:
        assert all(len(v) <= limits.max_value_length for v in encoded.values())
    metadata = {**free, **encoded}
    typed, kept_free = split_metadata(metadata, NAMES)
    assert kept_free == free
    assert typed == encoded
    assert same(_decoded(metadata), _expected(values))


@PROPERTY
@given(
    name=st.sampled_from(sorted(FIELD_VALUES)),
    data=st.data(),
    limits=LIMITS,
    free=FREE,
)
def test_rewriting_a_field_leaves_no_stale_pieces(
    name: str, data: st.DataObject, limits: MetadataLimits, free: dict[str, str]
) -> None:
    if limits.max_value_length is not None:  # free values never span keys
        free = {k: v[: limits.max_value_length] for k, v in free.items()}
    old = {n: data.draw(s, label=n) for n, s in FIELD_VALUES.items()}
    new = data.draw(FIELD_VALUES[name], label=f"new {name}")
    current = {**free, **encode_fields(CODECS, old, limits)}

    written = encode_fields([c for c in CODECS if c.name == name], {name: new}, limits)
    patch = MetadataPatch(set=written, clear_fields=frozenset({name}))
    after = patch.apply(current, limits)

    assert field_keys(name, after) == list(written)
    pieces = {k for k in after if k == name or k.startswith(f"{name}#")}
    assert pieces == set(written)
    for key, value in current.items():  # every other entry untouched
        if key not in pieces and key.split("#")[0] != name:
            assert after[key] == value
    assert same(_decoded(after), _expected({**old, name: new}))


# --- the message codec ---------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner)
    ),
    max_leaves=12,
)
KWARGS = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k not in {"tool_calls", "function_call"}),
    JSON,
    max_size=4,
)
PARTS = st.lists(
    st.one_of(
        st.text(max_size=80),
        st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=80)),
        st.builds(
            lambda u: {"type": "image_url", "image_url": {"url": u}},
            st.text(max_size=40),
        ),
    ),
    max_size=4,
)
CONTENT = st.text(max_size=300) | PARTS
NAME = st.none() | st.text(min_size=1, max_size=20)
TOOL_CALLS = st.lists(
    st.builds(
        lambda name, args, call_id: {
            "name": name,
            "args": args,
            "id": call_id,
            "type": "tool_call",
        },
        st.text(min_size=1, max_size=20),
        st.dictionaries(st.text(max_size=10), JSON, max_size=4),
        st.none() | st.text(min_size=1, max_size=20),
    ),
    max_size=3,
)
USAGE = st.none() | st.builds(
    lambda i, o: {"input_tokens": i, "output_tokens": o, "total_tokens": i + o},
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
)

MESSAGES: st.SearchStrategy[LCBaseMessage] = st.one_of(
    st.builds(HumanMessage, content=CONTENT, name=NAME, additional_kwargs=KWARGS),
    st.builds(SystemMessage, content=CONTENT, name=NAME, additional_kwargs=KWARGS),
    st.builds(
        AIMessage,
        content=CONTENT,
        name=NAME,
        additional_kwargs=KWARGS,
        tool_calls=TOOL_CALLS,
        usage_metadata=USAGE,
        response_metadata=st.dictionaries(st.text(max_size=10), JSON, max_size=3),
    ),
    st.builds(
        ToolMessage,
        content=CONTENT,
        tool_call_id=st.text(min_size=1, max_size=20),
        status=st.sampled_from(["success", "error"]),
        artifact=JSON,
        name=NAME,
    ),
    st.builds(
        ChatMessage, content=CONTENT, role=st.text(min_size=1, max_size=12), name=NAME
    ),
    st.builds(FunctionMessage, content=CONTENT, name=st.text(min_size=1, max_size=20)),
    st.builds(
        HumanMessage,
        content=CONTENT,
        id=st.text(min_size=1, max_size=10),  # ids are replaced by the store's
    ),
)


@PROPERTY
@given(message=MESSAGES)
def test_messages_round_trip(message: LCBaseMessage) -> None:
    restored = from_payload(to_payload(message), "msg_0")
    assert type(restored) is type(message)
    assert restored.id == "msg_0"
    assert restored == message.model_copy(update={"id": "msg_0"})
    assert to_payload(restored) == to_payload(message)


@PROPERTY
@given(
    reads=st.lists(
        st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), MESSAGES), max_size=4),
        max_size=8,
    ),
    size=st.integers(0, 3),
)
def test_message_cache_always_agrees_with_the_rows(
    reads: list[list[tuple[str, LCBaseMessage]]], size: int
) -> None:
    # Caller ids repeat across threads and after deletes: one id, many payloads.
    cache = MessageCache(size)
    for read in reads:
        rows = [(message_id, to_payload(m)) for message_id, m in read]
        expected = [from_payload(payload, message_id) for message_id, payload in rows]
        assert cache.rebuild(rows) == expected
        assert cache.rebuild(rows, copy=True) == expected
