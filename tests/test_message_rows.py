"""A run's context rows (`MessageRow`) say exactly what `StoredMessage` says.

`begin_run` reads a run's context as tuples, not models: at 1,000 messages a turn
that saves several milliseconds of building and collecting. The fast path trusts a
row only when its columns hold the types the schema declares and it has no metadata;
every other row goes through the validating constructor. These tests hold the two
paths to the same answers on every kind of column value, valid or corrupt.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_retro import CorruptDataError
from langchain_retro.stores import _sqlite_sql
from langchain_retro.stores.base import MessageRow, StoredMessage

THREAD = "thread_1"

_text = st.text(max_size=12)
_link = st.none() | _text
# What a SQLite column can hold whatever the schema says: SQLite types loosely.
_sqlite_value = st.none() | st.integers() | st.floats(allow_nan=False) | _text
_sqlite_metadata = (
    st.sampled_from(["{}", '{"k": "v"}', '{"k": 1}', "[]", "not json", '{"": ""}'])
    | st.none()
    | st.integers()
)


def _outcome(build: Any, row: tuple[Any, ...]) -> list[tuple[type, Any]] | str:
    """What a row builds into, field by field with each value's type, or its error.

    Types count: a float ``1.0`` equals ``1`` but is not what the model holds.
    """
    try:
        built = build(row, THREAD)
    except CorruptDataError as exc:
        return f"CorruptDataError: {exc}"
    fields = built if isinstance(built, MessageRow) else MessageRow.of(built)
    return [(type(value), value) for value in fields]


_valid_sqlite_rows = st.tuples(
    _text,  # id
    st.integers(),  # created_at
    st.sampled_from(["{}", "{}", '{"k": "v"}']),  # metadata, mostly none
    _text,  # role
    _text,  # payload
    _link,  # run_id
    _link,  # assistant_id
    _link,  # reply_to
)


@st.composite
def _sqlite_rows(draw: st.DrawFn) -> tuple[Any, ...]:
    """A valid row, or one with a column holding what SQLite lets it hold."""
    row = list(draw(_valid_sqlite_rows))
    column = draw(st.integers(min_value=0, max_value=len(row)))  # len: leave it
    if column < len(row):
        row[column] = draw(_sqlite_metadata if column == 2 else _sqlite_value)
    return tuple(row)


@settings(max_examples=400, deadline=None)
@given(row=_sqlite_rows())
def test_a_sqlite_row_reads_as_the_validating_reader_reads_it(
    row: tuple[Any, ...],
) -> None:
    assert _outcome(_sqlite_sql.message_row, row) == _outcome(_sqlite_sql.message, row)


@pytest.mark.parametrize(
    ("row", "why"),
    [
        (("m", "yesterday", "{}", "user", "{}", None, None, None), "created_at"),
        (("m", 1, "{not json", "user", "{}", None, None, None), "not JSON"),
        (("m", 1, '{"k": 1}', "user", "{}", None, None, None), "metadata"),
        (("m", 1, "{}", None, "{}", None, None, None), "role"),
        (("m", 1, "{}", "user", "{}", 7, None, None), "run_id"),
    ],
)
def test_a_corrupt_sqlite_row_is_named(row: tuple[Any, ...], why: str) -> None:
    with pytest.raises(CorruptDataError, match="'m' of thread 'thread_1'") as caught:
        _sqlite_sql.message_row(row, THREAD)
    assert caught.value.object_id == "m"
    assert caught.value.thread_id == THREAD
    assert why in str(caught.value) or why in repr(caught.value.__cause__)


_pg_metadata = (
    st.none()
    | st.dictionaries(_text, _text, max_size=3)
    | st.dictionaries(_text, st.integers(), min_size=1, max_size=2)
)


_postgres_rows = st.tuples(
    _text,
    st.integers(min_value=0, max_value=2**62),
    _pg_metadata,
    _text,
    _text,
    _link,
    _link,
    _link,
)


@settings(max_examples=200, deadline=None)
@given(row=_postgres_rows)
def test_a_postgres_row_reads_as_the_validating_reader_reads_it(
    row: tuple[Any, ...],
) -> None:
    from langchain_retro.stores import _postgres_sql  # noqa: PLC0415

    assert _outcome(_postgres_sql._message_row, row) == _outcome(
        _postgres_sql._message, row
    )


def test_a_row_and_a_stored_message_convert_both_ways() -> None:
    stored = StoredMessage(
        id="msg_1",
        created_at=1_700_000_000,
        metadata={"k": "v"},
        thread_id=THREAD,
        role="assistant",
        payload='{"type":"ai","content":"hi"}',
        run_id="run_1",
        assistant_id="asst_1",
        reply_to="msg_0",
    )
    row = MessageRow.of(stored)
    assert row.stored() == stored
    assert row._asdict() == stored.model_dump()
    assert row.stored().metadata is not row.metadata  # the model owns its copy
