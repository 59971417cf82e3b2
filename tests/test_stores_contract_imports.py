"""The store contract for id-keeping imports: what migrate and import write with.

Run against every backend, sync and async, through the `BaseStore` protocol only:
assistants, threads and runs are written under their own ids, ``created_at`` and
fields, in order; an id already present is left alone (a re-run writes nothing
twice); a batch is all or none, checked before any write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from langchain_retro import (
    IdsNotKeptError,
    MetadataLimitError,
    MetadataLimits,
    RetroValueError,
    ThreadNotFoundError,
)
from langchain_retro.stores.base import (
    BaseStore,
    NewMessage,
    RunUsage,
    StoredAssistant,
    StoredRun,
    ThreadCopy,
    ThreadQuery,
)

if TYPE_CHECKING:
    from _helpers import Caller as Call
    from _wire_store import Wire

pytest_plugins = ["_helpers", "_wire_store"]


@pytest.fixture(params=["sqlite", "postgres", "wire", "wire-postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every backend, and `AssistantsAPIStore` over ``langchain-retro serve``."""
    return str(request.param)


def assistant(n: int, **fields: object) -> StoredAssistant:
    return StoredAssistant.model_validate(
        {
            "id": f"asst_imported_{n}",
            "created_at": 1_600_000_000 + n,
            "metadata": {"n": str(n), "note": "é✓"},
            "model": "gpt-4o-mini",
            "name": f"A{n}",
            "temperature": 0.5,
            **fields,
        }
    )


def thread(n: int, **fields: object) -> ThreadCopy:
    return ThreadCopy.model_validate(
        {
            "id": f"thread_imported_{n}",
            "created_at": 1_600_000_100 + n,
            "metadata": {"n": str(n), "assistant_id": "asst_imported_1"},
            "usage": {
                "prompt_tokens": n,
                "completion_tokens": 2,
                "total_tokens": n + 2,
            },
            **fields,
        }
    )


def run(n: int, thread_id: str, **fields: object) -> StoredRun:
    return StoredRun.model_validate(
        {
            "id": f"run_imported_{n}",
            "thread_id": thread_id,
            "assistant_id": "asst_imported_1",
            "status": "completed",
            "created_at": 1_600_000_200 + n,
            "started_at": 1_600_000_201 + n,
            "completed_at": 1_600_000_202 + n,
            "model": "gpt-4o-mini",
            "metadata": {"k": str(n)},
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            **fields,
        }
    )


async def test_the_stores_keep_ids(store: BaseStore) -> None:
    assert store.keeps_ids is True


async def test_assistants_keep_their_ids_fields_and_order(
    store: BaseStore, call: Call
) -> None:
    records = [assistant(1), assistant(2, top_p=0.9, instructions="be brief")]
    assert await call(store, "import_assistants", records) == [r.id for r in records]
    for record in records:
        assert await call(store, "get_assistant", record.id) == record
    listed = await call(store, "list_assistants", order="asc", limit=10)
    assert listed == records
    # Again, with one new: only the new one is written; the others stay as they are.
    changed = assistant(1, name="changed")
    assert await call(store, "import_assistants", [changed, assistant(3)]) == [
        "asst_imported_3"
    ]
    assert (await call(store, "get_assistant", "asst_imported_1")).name == "A1"


async def test_threads_keep_ids_metadata_usage_and_listing_order(
    store: BaseStore, call: Call
) -> None:
    records = [thread(2), thread(1), thread(3)]
    assert await call(store, "import_threads", records) == [r.id for r in records]
    for record in records:
        got = await call(store, "get_thread", record.id)
        assert got.model_dump() == record.model_dump(exclude={"usage"})
        assert await call(store, "get_thread_usage", record.id) == record.usage
    page = await call(store, "list_threads", ThreadQuery(order="asc"))
    assert [t.id for t in page] == [r.id for r in records]
    # The metadata index knows them: a filtered listing finds them.
    found = await call(store, "list_threads", ThreadQuery(metadata={"n": "1"}))
    assert [t.id for t in found] == ["thread_imported_1"]
    assert await call(store, "import_threads", records) == []
    assert await call(store, "count_messages", "thread_imported_1") == 0
    # Messages follow with the bulk path, ids and times kept, after the thread.
    written = await call(
        store,
        "bulk_add_messages",
        [
            (
                "thread_imported_1",
                [
                    NewMessage(
                        role="user",
                        payload='{"type":"human","content":"hi"}',
                        id="m1",
                        created_at=1_500_000_000,
                    )
                ],
            )
        ],
    )
    assert written == 1
    (message,) = await call(store, "list_messages", "thread_imported_1")
    assert (message.id, message.created_at) == ("m1", 1_500_000_000)


async def test_runs_keep_their_record_and_order(store: BaseStore, call: Call) -> None:
    await call(store, "import_threads", [thread(1)])
    records = [
        run(1, "thread_imported_1"),
        run(
            2,
            "thread_imported_1",
            status="failed",
            completed_at=None,
            failed_at=1_600_000_300,
            last_error={"code": "server_error", "message": "boom"},
        ),
    ]
    assert await call(store, "import_runs", records) == [r.id for r in records]
    assert await call(store, "list_runs", "thread_imported_1", order="asc") == records
    assert (
        await call(store, "get_run", "thread_imported_1", "run_imported_2")
        == (records[1])
    )
    assert await call(store, "import_runs", records) == []
    # Importing runs leaves the thread's totals as the thread brought them.
    assert await call(store, "get_thread_usage", "thread_imported_1") == RunUsage(
        prompt_tokens=1, completion_tokens=2, total_tokens=3
    )


async def test_an_active_run_arrives_lapsed(store: BaseStore, call: Call) -> None:
    await call(store, "import_threads", [thread(1)])
    active = run(1, "thread_imported_1", status="in_progress", completed_at=None)
    cancelling = run(2, "thread_imported_1", status="cancelling", completed_at=None)
    await call(store, "import_runs", [active, cancelling])
    got = await call(store, "list_runs", "thread_imported_1", order="asc")
    assert [r.status for r in got] == ["expired", "cancelled"]
    # The thread is free: a new run can take it.
    assert await call(store, "acquire_lease", "thread_imported_1", "someone", 5.0)


async def test_runs_on_a_missing_thread_write_nothing(
    store: BaseStore, call: Call
) -> None:
    await call(store, "import_threads", [thread(1)])
    with pytest.raises(ThreadNotFoundError):
        await call(
            store,
            "import_runs",
            [run(1, "thread_imported_1"), run(2, "thread_imported_9")],
        )
    assert await call(store, "list_runs", "thread_imported_1") == []


async def test_a_batch_is_checked_before_any_write(
    store: BaseStore, call: Call
) -> None:
    store.limits = MetadataLimits(max_keys=2)
    too_many = thread(2, metadata={"a": "1", "b": "2", "c": "3"})
    with pytest.raises(MetadataLimitError):
        await call(store, "import_threads", [thread(1), too_many])
    with pytest.raises(RetroValueError, match="twice"):
        await call(store, "import_assistants", [assistant(1), assistant(1)])
    assert await call(store, "list_threads", ThreadQuery()) == []
    assert await call(store, "list_assistants") == []


class _NoIds(BaseStore):
    """A store that inherits the base's import operations (only those are called)."""


_NoIds.__abstractmethods__ = frozenset()


async def test_the_base_says_a_store_assigns_its_own_ids(call: Call) -> None:
    store = _NoIds()
    assert store.keeps_ids is False
    for name in ("import_assistants", "import_threads", "import_runs"):
        with pytest.raises(IdsNotKeptError, match="assigns its own ids"):
            await call(store, name, [])


# --- the wire: owners -----------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["wire"])
async def test_another_key_cannot_import_over_ids_it_does_not_own(
    store: BaseStore, call: Call, wire: Wire
) -> None:
    from langchain_retro.stores.assistants_api import (  # noqa: PLC0415
        AssistantsAPIStore,
    )

    await call(store, "import_assistants", [assistant(1)])
    await call(store, "import_threads", [thread(1)])
    other = AssistantsAPIStore.from_url(wire.url, api_key=wire.other_key)
    async with other:
        with pytest.raises(RetroValueError, match="does not own"):
            await call(
                other, "import_threads", [thread(3), thread(1, metadata={"x": "1"})]
            )
        with pytest.raises(RetroValueError, match="does not own"):
            await call(other, "import_assistants", [assistant(1, name="theirs")])
        with pytest.raises(ThreadNotFoundError):
            await call(other, "import_runs", [run(1, "thread_imported_1")])
        # Their own ids import as theirs, and the owner's key does not see them.
        assert await call(other, "import_threads", [thread(2)]) == ["thread_imported_2"]
    for theirs in ("thread_imported_2", "thread_imported_3"):
        with pytest.raises(ThreadNotFoundError):
            await call(store, "get_thread", theirs)
    async with AssistantsAPIStore.from_url(wire.url, api_key=wire.other_key) as other:
        # The refused batch wrote nothing: its first thread is not theirs either.
        with pytest.raises(ThreadNotFoundError):
            await call(other, "get_thread", "thread_imported_3")
    assert (await call(store, "get_thread", "thread_imported_1")).metadata == (
        thread(1).metadata
    )
    assert await call(store, "list_runs", "thread_imported_1") == []
