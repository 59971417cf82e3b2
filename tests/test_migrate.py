"""migrate, verify, export and import: every record arrives, exactly, once.

Real stores throughout: SQLite files, PostgreSQL schemas, and a real
``langchain-retro serve`` subprocess for the server store (``tests/_wire_store.py``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from _migrate_data import SPAN, STORE, fill, snapshot
from conftest import stores_of
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import ValidationError
from test_properties import CODECS

from langchain_retro import (
    IdsNotKeptError,
    SQLiteStore,
    TransferError,
    aexport_to_file,
    aimport_from_file,
    amigrate,
    averify_migration,
    export_to_file,
    import_from_file,
    migrate,
    verify_migration,
)
from langchain_retro._metadata import encode_fields
from langchain_retro.stores.base import BaseStore, NewMessage, ThreadQuery

pytest_plugins = ["_wire_store"]

ALL = ThreadQuery(order="asc", limit=10_000)

FIXED = [
    {
        "free": {"user": "ada ✓"},
        "typed": encode_fields(
            CODECS, {"text": "long " * 60, "numbers": list(range(40))}, SPAN
        ),
        "messages": [],
        "runs": 2,
    },
    {"free": {}, "typed": {}, "messages": [], "runs": 0},
]


@contextmanager
def stores(tmp: Path, *kinds: str) -> Iterator[list[BaseStore]]:
    """One fresh store of each kind, closed (and emptied) after."""
    with ExitStack() as stack:
        made = []
        for i, kind in enumerate(kinds):
            folder = tmp / f"{i}-{kind}"
            folder.mkdir()
            make = stack.enter_context(stores_of(kind, folder))
            made.append(make())
        yield made


def copied(source: BaseStore, dest: BaseStore, **options: Any) -> None:
    report = migrate(source, dest, **options)
    assert sum(report.written.values()) > 0
    assert verify_migration(source, dest).ok


# --- round trips ----------------------------------------------------------------------


@settings(
    max_examples=3,
    deadline=None,
    # Each example writes five real stores: shrinking would take minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(threads=STORE)
def test_sqlite_postgres_server_sqlite_and_a_file_keep_every_record(
    tmp_path_factory: pytest.TempPathFactory, threads: list[dict[str, Any]]
) -> None:
    tmp = tmp_path_factory.mktemp("round")
    kinds = ("sqlite", "postgres", "wire", "sqlite", "sqlite")
    with stores(tmp, *kinds) as (source, postgres, server, back, imported):
        fill(source, threads)
        expected = snapshot(source)
        copied(source, postgres, batch_size=7)
        assert snapshot(postgres) == expected
        copied(postgres, server, batch_size=5)
        assert snapshot(server) == expected
        copied(server, back)
        assert snapshot(back) == expected
        path = tmp / "store.jsonl.gz"
        exported = export_to_file(back, path)
        assert exported.written["messages"] == sum(
            len(t["messages"]) for t in expected["threads"]
        )
        import_from_file(path, imported, batch_size=3)
        assert snapshot(imported) == expected


async def test_the_async_twins_copy_export_and_import(tmp_path: Path) -> None:
    with stores(tmp_path, "sqlite", "postgres", "sqlite") as (source, pg, back):
        fill(source, FIXED, seed=1)
        expected = snapshot(source)
        report = await amigrate(source, pg, batch_size=4)
        assert report.written["runs"] == 2
        assert (await averify_migration(source, pg)).ok
        assert snapshot(pg) == expected
        path = tmp_path / "pg.jsonl"
        await aexport_to_file(pg, path)
        await aimport_from_file(path, back)
        assert snapshot(back) == expected


def test_urls_name_the_stores(tmp_path: Path) -> None:
    from conftest import postgres_url  # noqa: PLC0415

    schema = f"test_url_{random.randrange(10**9)}"
    source = tmp_path / "a.db"
    with SQLiteStore(source) as store:
        fill(store, FIXED)
        expected = snapshot(store)
    pg = postgres_url().replace("postgresql://", "postgresql+psycopg://")
    pg += f"?schema={schema}"
    try:
        migrate(str(source), pg)
        migrate(pg, f"sqlite:///{tmp_path / 'b.db'}")
        assert verify_migration(str(source), pg).ok
    finally:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    with SQLiteStore(tmp_path / "b.db") as store:
        assert snapshot(store) == expected


# --- resuming -------------------------------------------------------------------------


class _StoppedError(Exception):
    pass


class _Stopping(SQLiteStore):
    """A store that stops the copy right after its n-th write that wrote something.

    What a kill between two transactions leaves behind, at every such point.
    """

    budget = 1_000_000

    def _spend(self, written: object) -> None:
        if written:
            self.budget -= 1
            if self.budget <= 0:
                raise _StoppedError

    def import_assistants(self, assistants: Any) -> list[str]:
        done = super().import_assistants(assistants)
        self._spend(done)
        return done

    def import_threads(self, threads: Any) -> list[str]:
        done = super().import_threads(threads)
        self._spend(done)
        return done

    def import_runs(self, runs: Any) -> list[str]:
        done = super().import_runs(runs)
        self._spend(done)
        return done

    def bulk_add_messages(self, batches: Any) -> int:
        done = super().bulk_add_messages(batches)
        self._spend(done)
        return done


def test_an_interrupted_copy_resumes_at_any_point(tmp_path: Path) -> None:
    rng = random.Random(12)
    with stores(tmp_path, "sqlite") as (source,):
        threads = [
            {"free": {"n": str(i)}, "typed": {}, "messages": [], "runs": i % 2}
            for i in range(6)
        ]
        fill(source, threads)
        for thread in source.list_threads(ALL):
            source.add_messages(
                thread.id,
                [
                    NewMessage(role="user", payload='{"type":"human","content":"x"}')
                    for _ in range(rng.randrange(0, 40))
                ],
            )
        expected = snapshot(source)
        stops = 0
        with _Stopping(tmp_path / "dest.db") as dest:
            while True:
                dest.budget = rng.randrange(1, 4)
                try:
                    migrate(source, dest, batch_size=rng.randrange(1, 30))
                except _StoppedError:
                    stops += 1
                    continue
                break
            assert stops >= 10
            assert snapshot(dest) == expected
            dest.budget = 1_000_000
            again = migrate(source, dest)
            assert sum(again.written.values()) == 0
            assert again.skipped == verify_migration(source, dest).source


def test_a_destination_changed_since_is_named_not_merged(tmp_path: Path) -> None:
    with stores(tmp_path, "sqlite", "sqlite") as (source, dest):
        fill(source, FIXED)
        migrate(source, dest)
        thread = dest.list_threads(ALL)[0]
        dest.add_messages(
            thread.id,
            [NewMessage(role="user", payload='{"type":"human","content":"x"}')],
        )
        report = verify_migration(source, dest)
        assert not report.ok
        assert any(thread.id in line for line in report.differences)
        with pytest.raises(TransferError, match=thread.id):
            migrate(source, dest)


def test_a_store_that_assigns_ids_is_refused_before_any_write(tmp_path: Path) -> None:
    class Assigning(SQLiteStore):
        keeps_ids = False

    with stores(tmp_path, "sqlite") as (source,):
        fill(source, FIXED)
        with Assigning(tmp_path / "dest.db") as dest:
            with pytest.raises(IdsNotKeptError, match="nothing was written"):
                migrate(source, dest)
            assert dest.list_assistants() == []


def test_a_dry_run_writes_nothing_and_counts_what_is_missing(tmp_path: Path) -> None:
    with stores(tmp_path, "sqlite", "postgres") as (source, dest):
        fill(source, FIXED)
        plan = migrate(source, dest, dry_run=True)
        assert plan.dry_run
        assert plan.written == {"assistants": 2, "threads": 2, "runs": 2, "messages": 4}
        assert dest.list_assistants() == []
        migrate(source, dest)
        plan = migrate(source, dest, dry_run=True)
        assert plan.written == {"assistants": 0, "threads": 0, "runs": 0, "messages": 0}
        assert plan.skipped["messages"] == 4


def test_urls_only_read_create_nothing(tmp_path: Path) -> None:
    """A source, a dry run's destination and a verification create no table or file."""
    import psycopg  # noqa: PLC0415
    from conftest import postgres_url  # noqa: PLC0415

    source = tmp_path / "a.db"
    with SQLiteStore(source) as store:
        fill(store, FIXED)
    schema = f"test_url_{random.randrange(10**9)}"
    pg = f"{postgres_url()}?schema={schema}"
    exists = "SELECT count(*) FROM pg_namespace WHERE nspname = %s"
    missing = tmp_path / "missing.db"

    def schemas() -> int:
        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            row = conn.execute(exists, (schema,)).fetchone()
            return 0 if row is None else int(row[0])

    try:
        plan = migrate(str(source), pg, dry_run=True)
        assert plan.written == {"assistants": 2, "threads": 2, "runs": 2, "messages": 4}
        assert not verify_migration(str(source), pg).ok
        # An empty source copies nothing, from a database or a file that lack it.
        assert sum(migrate(pg, str(tmp_path / "b.db")).written.values()) == 0
        assert sum(migrate(str(missing), str(tmp_path / "b.db")).written.values()) == 0
        assert schemas() == 0
        assert not missing.exists()
        migrate(str(source), pg)
        assert schemas() == 1
        assert verify_migration(str(source), pg).ok
    finally:
        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("cancelling", [False, True])
def test_a_run_going_on_in_the_source_verifies_as_copied(
    tmp_path: Path, cancelling: bool
) -> None:
    """A live source: its running run is copied as lapsed, and verify says equal."""
    with stores(tmp_path, "sqlite", "sqlite") as (source, dest):
        thread = source.create_thread({})
        source.begin_run(thread.id, owner="run_1", ttl=60.0)
        if cancelling:
            source.cancel_run(thread.id, "run_1")
        migrate(source, dest)
        copied_run = dest.get_run(thread.id, "run_1")
        assert copied_run.status == ("cancelled" if cancelling else "expired")
        assert (copied_run.cancelled_at is not None) is cancelling
        assert source.get_run(thread.id, "run_1").status in (
            "in_progress",
            "cancelling",
        )
        assert verify_migration(source, dest).ok
        # A copy that really differs is still named.
        dest.update_run_metadata(thread.id, "run_1", {"changed": "yes"})
        checked = verify_migration(source, dest)
        assert not checked.ok
        assert any("run_1" in line for line in checked.differences)


def test_some_threads_and_the_assistant_they_name(tmp_path: Path) -> None:
    with stores(tmp_path, "sqlite", "sqlite") as (source, dest):
        fill(source, FIXED)
        first = source.list_threads(ALL)[0]
        path = tmp_path / "one.jsonl"
        report = export_to_file(source, path, thread_ids=[first.id])
        assert report.written == {
            "assistants": 1,
            "threads": 1,
            "runs": 2,
            "messages": 4,
        }
        import_from_file(path, dest)
        assert [t.id for t in dest.list_threads(ALL)] == [first.id]
        assert verify_migration(source, dest, thread_ids=[first.id]).ok


# --- the export file ------------------------------------------------------------------


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_the_file_is_versioned_json_lines(tmp_path: Path) -> None:
    with stores(tmp_path, "sqlite") as (source,):
        fill(source, FIXED)
        path = tmp_path / "out.jsonl"
        export_to_file(source, path)
    lines = _lines(path)
    assert lines[0]["type"] == "header"
    assert (lines[0]["format"], lines[0]["version"]) == ("langchain-retro-export", 1)
    kinds = [line["type"] for line in lines[1:]]
    assert kinds[:2] == ["assistant", "assistant"]
    assert kinds[-1] == "end"
    assert lines[-1]["counts"]["messages"] == kinds.count("message") == 4
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_an_interrupted_import_resumes_at_any_point(tmp_path: Path) -> None:
    rng = random.Random(5)
    path = tmp_path / "all.jsonl.gz"
    with stores(tmp_path, "sqlite") as (source,):
        fill(source, FIXED * 3)
        expected = snapshot(source)
        export_to_file(source, path)
    stops = 0
    with _Stopping(tmp_path / "dest.db") as dest:
        while True:
            dest.budget = rng.randrange(1, 3)
            try:
                import_from_file(path, dest, batch_size=rng.randrange(1, 5))
            except _StoppedError:
                stops += 1
                continue
            break
        assert stops >= 10
        assert snapshot(dest) == expected


_MESSAGE_LINE = {
    "type": "message",
    "id": "msg_a",
    "created_at": 5,
    "metadata": {"n": "1"},
    "thread_id": "thread_a",
    "role": "user",
    "payload": '{"type":"human","content":"hi"}',
    "run_id": None,
    "assistant_id": "asst_a",
    "reply_to": None,
}


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"metadata": {}},
        {"id": None},
        {"created_at": None},
        {"created_at": "5"},
        {"created_at": 1.5},
        {"metadata": {"n": 1}},
        {"thread_id": None},
        {"run_id": 7},
        {"payload": None},
        {"role": ["user"]},
        {"x": 1},
        {"type": "messages"},
    ],
    ids=repr,
)
def test_both_passes_of_an_import_read_a_message_line_alike(
    change: dict[str, Any],
) -> None:
    # The writing pass reads message lines as messages ready to append; it must
    # accept exactly what the validation pass accepted, as the same values.
    from langchain_retro._export import _COPY_LINE, _LINE  # noqa: PLC0415

    line = json.dumps({**_MESSAGE_LINE, **change})
    read: list[object] = []
    for adapter in (_LINE, _COPY_LINE):
        try:
            read.append(adapter.validate_json(line).model_dump())
        except ValidationError as exc:
            read.append([(e["type"], e["loc"], e["msg"]) for e in exc.errors()])
    assert read[0] == read[1]


def test_both_passes_of_an_import_default_the_same_fields() -> None:
    from langchain_retro._export import _COPY_LINE, _LINE  # noqa: PLC0415

    optional = ("metadata", "run_id", "assistant_id", "reply_to")
    line = json.dumps({k: v for k, v in _MESSAGE_LINE.items() if k not in optional})
    assert (
        _LINE.validate_json(line).model_dump()
        == _COPY_LINE.validate_json(line).model_dump()
    )
    for key in set(_MESSAGE_LINE) - set(optional):
        line = json.dumps({k: v for k, v in _MESSAGE_LINE.items() if k != key})
        with pytest.raises(ValidationError):
            _LINE.validate_json(line)
        with pytest.raises(ValidationError):
            _COPY_LINE.validate_json(line)
