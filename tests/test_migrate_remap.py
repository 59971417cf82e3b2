"""Copying into a store that assigns its own ids: new ids, references rewritten, a map.

The destination is a SQLite store that says it cannot keep ids (``keeps_ids``
false, the base's import operations), as a plain Assistants API store will: the copy
creates objects with the ordinary calls and rewrites ``assistant_id``, ``hwm`` and
``reply_to``. Compared by shape: every id replaced by where it points.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from _migrate_data import fill
from langchain_core.messages import AIMessage, HumanMessage

from langchain_retro import IdsNotKeptError, SQLiteStore, amigrate, migrate
from langchain_retro._remap import SOURCE_KEY
from langchain_retro.stores.base import BaseStore, ThreadQuery

ALL = ThreadQuery(order="asc", limit=10_000)
THREADS = [
    {"free": {"user": "ada ✓"}, "typed": {"t": "x" * 300}, "messages": [], "runs": 3},
    {"free": {}, "typed": {}, "messages": [], "runs": 0},
    {"free": {"topic": "b"}, "typed": {}, "messages": [], "runs": 1},
]


class Assigning(SQLiteStore):
    """A store that assigns its own ids: no id-keeping imports."""

    keeps_ids = False
    import_assistants = BaseStore.import_assistants  # type: ignore[assignment]
    import_threads = BaseStore.import_threads  # type: ignore[assignment]
    import_runs = BaseStore.import_runs  # type: ignore[assignment]


def shape(store: BaseStore, *, copied: bool) -> dict[str, Any]:
    """A store's records with every id replaced by what it points to."""
    assistants = store.list_assistants(order="asc", limit=10_000)
    names = {a.id: (a.metadata[SOURCE_KEY] if copied else a.id) for a in assistants}
    out: dict[str, Any] = {
        "assistants": sorted(
            (
                names[a.id],
                a.model_dump(exclude={"id", "created_at", "metadata"}),
                {k: v for k, v in a.metadata.items() if k != SOURCE_KEY},
            )
            for a in assistants
        ),
        "threads": [],
    }
    for thread in store.list_threads(ALL):
        messages = store.list_messages(thread.id)
        where = {m.id: i for i, m in enumerate(messages)}
        metadata = {k: v for k, v in thread.metadata.items() if k != SOURCE_KEY}
        if "hwm" in metadata:
            metadata["hwm"] = where[metadata["hwm"]]
        if "assistant_id" in metadata:
            metadata["assistant_id"] = names.get(metadata["assistant_id"], "?")
        out["threads"].append(
            {
                "source": thread.metadata[SOURCE_KEY] if copied else thread.id,
                "metadata": metadata,
                "messages": [
                    (
                        m.role,
                        m.payload,
                        m.metadata,
                        m.created_at,
                        None if m.reply_to is None else where[m.reply_to],
                        None if m.assistant_id is None else names[m.assistant_id],
                    )
                    for m in messages
                ],
            }
        )
    return out


def test_without_an_id_map_nothing_is_written(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "a.db") as source, Assigning(tmp_path / "b.db") as dest:
        fill(source, THREADS)
        with pytest.raises(IdsNotKeptError, match="id_map"):
            migrate(source, dest)
        assert dest.list_assistants() == []


def test_new_ids_with_every_reference_rewritten_and_a_map(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    with SQLiteStore(tmp_path / "a.db") as source, Assigning(tmp_path / "b.db") as dest:
        fill(source, THREADS)
        report = migrate(source, dest, id_map=path)
        assert report.written == {
            "assistants": 2,
            "threads": 3,
            "runs": 0,
            "messages": 8,
        }
        assert report.skipped["runs"] == 4  # run records cannot go there
        assert shape(dest, copied=True) == shape(source, copied=False)
        lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
        by_source = {(line["type"], line["source"]): line["dest"] for line in lines}
        for thread in source.list_threads(ALL):
            new_id = by_source[("thread", thread.id)]
            assert new_id != thread.id
            copied = dest.list_messages(new_id)
            for old, new in zip(source.list_messages(thread.id), copied, strict=True):
                assert by_source[("message", old.id)] == new.id
        again = migrate(source, dest, id_map=path)
        assert sum(again.written.values()) == 0
        assert shape(dest, copied=True) == shape(source, copied=False)


class _StoppedError(Exception):
    pass


class Stopping(Assigning):
    """Stops the copy right after its n-th write, as a kill there would."""

    budget = 1_000_000

    def _spend(self) -> None:
        self.budget -= 1
        if self.budget <= 0:
            raise _StoppedError

    def create_assistant(self, *args: Any, **kwargs: Any) -> Any:
        made = super().create_assistant(*args, **kwargs)
        self._spend()
        return made

    def create_thread(self, *args: Any, **kwargs: Any) -> Any:
        made = super().create_thread(*args, **kwargs)
        self._spend()
        return made

    def add_messages(self, *args: Any, **kwargs: Any) -> Any:
        made = super().add_messages(*args, **kwargs)
        self._spend()
        return made

    def update_thread(self, *args: Any, **kwargs: Any) -> Any:
        made = super().update_thread(*args, **kwargs)
        self._spend()
        return made


def test_an_interrupted_copy_with_new_ids_resumes_without_duplicates(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    path = tmp_path / "ids.jsonl"
    with SQLiteStore(tmp_path / "a.db") as source, Stopping(tmp_path / "b.db") as dest:
        fill(source, THREADS * 2)
        stops = 0
        while True:
            dest.budget = rng.randrange(1, 4)
            try:
                migrate(source, dest, id_map=path, batch_size=rng.randrange(1, 4))
            except _StoppedError:
                stops += 1
                continue
            break
        assert stops >= 10
        assert shape(dest, copied=True) == shape(source, copied=False)


async def test_the_async_twin_copies_with_new_ids_too(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    with SQLiteStore(tmp_path / "a.db") as source, Assigning(tmp_path / "b.db") as dest:
        fill(source, THREADS)
        report = await amigrate(source, dest, id_map=path)
        assert report.written["messages"] == 8
        assert shape(dest, copied=True) == shape(source, copied=False)
        assert path.read_text("utf-8").count('"type": "thread"') == 3


def test_into_the_plain_assistants_api_with_new_ids(tmp_path: Path) -> None:
    # The store that assigns its own ids for real: the plain Assistants API of
    # `langchain-retro serve --no-retro-routes`, found again through its listing.
    from _wire_store import KEY, served  # noqa: PLC0415

    from langchain_retro import AssistantsAPIStore  # noqa: PLC0415

    def no_postgres() -> str:
        raise AssertionError("the plain server here serves SQLite")

    url = served("plain", no_postgres)
    path = tmp_path / "ids.jsonl"
    said = [HumanMessage("hi ✓"), AIMessage("hello"), HumanMessage("again")]
    threads = [
        {"free": {"user": "ada ✓"}, "typed": {}, "messages": said, "runs": 1},
        {"free": {}, "typed": {}, "messages": said[:1], "runs": 0},
    ]
    with (
        SQLiteStore(tmp_path / "a.db") as source,
        AssistantsAPIStore.from_url(url, api_key=KEY, protocol="assistants") as dest,
    ):
        assert dest.keeps_ids is False
        fill(source, threads)
        with pytest.raises(IdsNotKeptError):
            migrate(source, dest)
        report = migrate(source, dest, id_map=path)
        assert report.written["threads"] == 2
        copied_messages = sum(
            len(source.list_messages(t.id)) for t in source.list_threads(ALL)
        )
        assert report.written["messages"] == copied_messages >= 4
        lines = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
        new = {(line["type"], line["source"]): line["dest"] for line in lines}
        for thread in source.list_threads(ALL):
            copy = dest.get_thread(new[("thread", thread.id)])
            assert copy.metadata[SOURCE_KEY] == thread.id
            assert (
                copy.metadata["assistant_id"]
                == new[("assistant", thread.metadata["assistant_id"])]
            )
            old_messages = source.list_messages(thread.id)
            copied = dest.list_messages(copy.id)
            assert [(m.role, m.payload, m.metadata) for m in copied] == [
                (m.role, m.payload, m.metadata) for m in old_messages
            ]
            if "hwm" in thread.metadata:
                assert copy.metadata["hwm"] == new[("message", thread.metadata["hwm"])]
        again = migrate(source, dest, id_map=path)
        assert sum(again.written.values()) == 0
