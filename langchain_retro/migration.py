"""Moving data between stores: migrate, verify, export and import.

Stores are named by URL (`open_store`) or passed as objects:

* a SQLite path, or ``sqlite:///path`` (``sqlite:////abs/path`` for an absolute one);
* ``postgresql://...`` (also ``postgres://`` and SQLAlchemy's
  ``postgresql+psycopg://``), with optional ``?schema=NAME&table_prefix=PREFIX``;
* ``http(s)://host/v1``: a ``langchain-retro serve`` server, through its
  ``/v1/retro`` routes, with the key in ``LANGCHAIN_RETRO_API_KEY`` (else
  ``OPENAI_API_KEY``).

`migrate` copies every assistant, thread, run and message, keeping ids,
``created_at``, metadata (typed fields included), ``hwm`` and message order. It
streams (bounded pages, batched writes, the source read in a thread or a task while
the destination is written, at most a batch ahead) and can be run again after any
interruption: it writes what is missing, nothing twice, and ends as an
uninterrupted run would (see ``langchain_retro._transfer``). Into a store that
assigns its own ids it copies with new ids and an id map, when given one
(``langchain_retro._remap``). `verify_migration` compares counts and a checksum of
every thread's messages on both sides.

`export_to_file` writes JSON Lines (``langchain_retro._export``, gzip for ``.gz``);
`import_from_file` validates the whole file before writing anything, then writes it
as `migrate` does, the file read again ahead of the writer (resumable the same way).

Every function has an ``a``-prefixed async twin.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, Field

from langchain_retro._export import ExportReader, ExportWriter, check_lines
from langchain_retro._read_ahead import CHUNK, Source, read_ahead
from langchain_retro._remap import RemapWriter
from langchain_retro._steps import Call, Steps, adrive_calls, call, drive_calls
from langchain_retro._transfer import (
    Counts,
    Progress,
    Record,
    Sink,
    Writer,
    plan,
    store_records,
    verify,
)
from langchain_retro.errors import IdsNotKeptError, RetroValueError
from langchain_retro.stores.base import BaseStore

__all__ = [
    "API_KEY_ENV",
    "TransferReport",
    "VerifyReport",
    "aexport_to_file",
    "aimport_from_file",
    "amigrate",
    "averify_migration",
    "export_to_file",
    "import_from_file",
    "migrate",
    "open_store",
    "verify_migration",
]

API_KEY_ENV = "LANGCHAIN_RETRO_API_KEY"
"""The environment variable holding the key for an ``http(s)://`` store URL."""

DEFAULT_BATCH = 5_000
"""Records written per batch (messages per ``bulk_add_messages``)."""

R = TypeVar("R")


class TransferReport(BaseModel):
    """What a migrate, export or import wrote (or, for a dry run, would write)."""

    written: dict[str, int]
    """Records written, by kind (``assistants``, ``threads``, ``runs``,
    ``messages``); for a dry run, those the destination lacks."""
    skipped: dict[str, int]
    """Records the destination already held (left as they were)."""
    seconds: float
    """How long it took."""
    dry_run: bool = False
    """Whether nothing was written."""


class VerifyReport(BaseModel):
    """Source and destination compared."""

    source: dict[str, int]
    """The source's records, by kind."""
    destination: dict[str, int]
    """The destination's records, by kind."""
    different: int
    """How many source records differ from (or are missing in) the destination."""
    differences: list[str] = Field(default_factory=list)
    """The first differences, one line each."""

    @property
    def ok(self) -> bool:
        """Whether the destination holds exactly the source's records."""
        return self.different == 0 and self.source == self.destination


# --- store URLs -----------------------------------------------------------------------


def _postgres(url: str, *, create: bool) -> BaseStore:
    from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme.startswith("postgresql") else parts.scheme
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    options: dict[str, Any] = {}
    if "schema" in query:
        options["schema"] = query.pop("schema")
    if "table_prefix" in query:
        options["table_prefix"] = query.pop("table_prefix")
    plain = urlunsplit(parts._replace(scheme=scheme, query=urlencode(query)))
    store = PostgresStore.from_connection_string(plain, **options)
    try:
        if not create and store.schema_version() is None:
            store.close()
            return _empty_store()
        store.setup()  # creates the tables, or brings older ones up to date
    except BaseException:
        store.close()
        raise
    return store


def _server(url: str) -> BaseStore:
    from langchain_retro import UNLIMITED  # noqa: PLC0415
    from langchain_retro.stores.assistants_api import (  # noqa: PLC0415
        AssistantsAPIStore,
    )

    key = os.environ.get(API_KEY_ENV) or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise RetroValueError(
            f"No key for the server store {_shown(url)}: set {API_KEY_ENV} (or "
            "OPENAI_API_KEY) to a key the server accepts."
        )
    # The server applies its own metadata limits; the copy keeps values as they are.
    return AssistantsAPIStore.from_url(url, api_key=key, limits=UNLIMITED)


def _shown(url: str) -> str:
    """A URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(url: str) -> str | None:
    """The file a SQLite store URL names (a path or ``sqlite:///path``), else ``None``.

    Raises:
        RetroValueError: For a ``sqlite://`` URL that names no file.
    """
    text = str(url).strip()
    if "://" not in text:
        return text
    scheme, path = text.split("://", 1)
    if scheme.lower() != "sqlite":
        return None
    if not path.startswith("/") or path == "/":
        raise RetroValueError(
            f"{text!r} names no file: write sqlite:///relative.db or "
            "sqlite:////absolute/path.db."
        )
    return path[1:]


def _empty_store() -> BaseStore:
    """An empty store, in memory: what a database without the tables holds."""
    from langchain_retro.stores.sqlite import SQLiteStore  # noqa: PLC0415

    return SQLiteStore(":memory:")


def open_store(url: str, *, create: bool = True) -> BaseStore:
    """Open the store a URL names (see the module docstring); the caller closes it.

    Args:
        url: The store's URL.
        create: Create the store's tables (and a SQLite file) if missing. With
            ``False`` nothing is created: a SQLite file that does not exist, or a
            PostgreSQL database without the tables, opens as an empty store in
            memory. That is how a source, a dry run's destination and both sides of
            a verification are opened.

    Raises:
        RetroValueError: For an empty URL, an unknown scheme, or a server URL
            without a key in the environment.
        MissingDependencyError: For PostgreSQL without the ``postgres`` extra.
        StoreError: If the store cannot be opened.
    """
    from langchain_retro.stores.sqlite import SQLiteStore  # noqa: PLC0415

    text = str(url).strip()
    if not text:
        raise RetroValueError(
            "A store URL is empty: pass a SQLite path, sqlite:///path, "
            "postgresql://... or http(s)://host/v1."
        )
    path = sqlite_path(text)
    if path is not None:
        if not create and path != ":memory:" and not Path(path).exists():
            return _empty_store()
        return SQLiteStore(path)
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        return _postgres(text, create=create)
    if scheme in ("http", "https"):
        return _server(text)
    raise RetroValueError(
        f"Unknown store URL scheme {scheme!r} in {_shown(text)}: use a SQLite path, "
        "sqlite:///path, postgresql://... or http(s)://host/v1."
    )


def _opened(
    stack: ExitStack, store: BaseStore | str, *, create: bool = False
) -> BaseStore:
    """A store given as an object, or opened from its URL (`open_store`)."""
    if isinstance(store, BaseStore):
        return store
    return stack.enter_context(open_store(store, create=create))


async def _aopened(
    stack: AsyncExitStack, store: BaseStore | str, *, create: bool = False
) -> BaseStore:
    """Async twin of `_opened`."""
    if isinstance(store, BaseStore):
        return store
    opened = await asyncio.to_thread(open_store, store, create=create)
    return await stack.enter_async_context(opened)


# --- the operations, written once -----------------------------------------------------


def _in_thread(fn: Callable[[], R]) -> Callable[[], Awaitable[R]]:
    """The async twin of blocking file I/O: the same call in a worker thread."""

    async def run() -> R:
        return await asyncio.to_thread(fn)

    return run


def _copy(
    source: BaseStore,
    dest: BaseStore,
    *,
    thread_ids: Sequence[str] | None,
    batch_size: int,
    progress: Progress | None,
    dry_run: bool,
    id_map: str | os.PathLike[str] | None = None,
) -> Steps[Call[Any], TransferReport]:
    started = time.monotonic()
    if not dest.keeps_ids and id_map is not None and not dry_run:
        remap = _remap_writer(dest, id_map, batch_size, progress)
        yield from read_ahead(
            _reading(source, thread_ids), remap.add, ahead=remap.batch_size + CHUNK
        )
        yield from remap.finish()
        return TransferReport(
            written=remap.written.as_dict(),
            skipped=remap.skipped.as_dict(),
            seconds=time.monotonic() - started,
        )
    if dry_run:
        missing, present = yield from plan(source, dest, thread_ids)
        return TransferReport(
            written=missing.as_dict(),
            skipped=present.as_dict(),
            seconds=time.monotonic() - started,
            dry_run=True,
        )
    _check_keeps_ids(dest)
    writer = Writer(dest, batch_size=_batch(batch_size), progress=progress)
    yield from read_ahead(
        _reading(source, thread_ids), writer.add, ahead=writer.batch_size + CHUNK
    )
    yield from writer.finish()
    return _report(writer, started)


def _reading(source: BaseStore, thread_ids: Sequence[str] | None) -> Source:
    """The source's records in copy order, as steps for `read_ahead`."""

    def read(sink: Sink) -> Steps[Call[Any], None]:
        return store_records(source, sink, thread_ids=thread_ids)

    return read


def _report(writer: Writer, started: float) -> TransferReport:
    return TransferReport(
        written=writer.written.as_dict(),
        skipped=writer.skipped.as_dict(),
        seconds=time.monotonic() - started,
    )


def _check_keeps_ids(dest: BaseStore) -> None:
    """Refuse, before any write, a destination that would give records new ids."""
    if not dest.keeps_ids:
        raise IdsNotKeptError(
            f"{dest!r} assigns its own ids, so a copy into it would lose the ids "
            "that messages, runs and hwm refer to; nothing was written. Pass "
            "id_map=FILE (--id-map FILE) to copy with new ids, every reference "
            "rewritten and the map written there, or copy into a store that keeps "
            "ids: SQLite, PostgreSQL, or a langchain-retro serve server."
        )


def _remap_writer(
    dest: BaseStore,
    id_map: str | os.PathLike[str],
    batch_size: int,
    progress: Progress | None,
) -> RemapWriter:
    path = Path(id_map)

    def write(lines: list[str]) -> None:
        with path.open("a", encoding="utf-8") as file:
            file.write("".join(line + "\n" for line in lines))

    async def awrite(lines: list[str]) -> None:
        await asyncio.to_thread(write, lines)

    return RemapWriter(
        dest,
        write_map=write,
        awrite_map=awrite,
        batch_size=min(_batch(batch_size), 1_000),
        progress=progress,
    )


def _batch(batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise RetroValueError(
            f"batch_size must be a positive number of records, not {batch_size!r}."
        )
    return batch_size


def _verify(
    source: BaseStore, dest: BaseStore, thread_ids: Sequence[str] | None
) -> Steps[Call[Any], VerifyReport]:
    mine, theirs, different, differences = yield from verify(source, dest, thread_ids)
    return VerifyReport(
        source=mine.as_dict(),
        destination=theirs.as_dict(),
        different=different,
        differences=differences,
    )


def _export(
    source: BaseStore,
    writer: ExportWriter,
    thread_ids: Sequence[str] | None,
    progress: Progress | None,
) -> Steps[Call[Any], TransferReport]:
    started = time.monotonic()
    told = 0

    def sink(record: Record) -> Steps[Call[Any], None]:
        nonlocal told
        if writer.add(record):
            yield from call(writer.write, _in_thread(writer.write))
            if progress is not None:
                progress("messages", writer.counts["messages"] - told)
                told = writer.counts["messages"]

    try:
        yield from store_records(source, sink, thread_ids=thread_ids)
        yield from call(writer.complete, _in_thread(writer.complete))
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit):
            yield from call(writer.abandon, _in_thread(writer.abandon))
        raise
    if progress is not None and writer.counts["messages"] > told:
        progress("messages", writer.counts["messages"] - told)
    return TransferReport(
        written=dict(writer.counts),
        skipped=Counts().as_dict(),
        seconds=time.monotonic() - started,
    )


def _import(
    reader: ExportReader,
    dest: BaseStore,
    batch_size: int,
    progress: Progress | None,
) -> Steps[Call[Any], TransferReport]:
    started = time.monotonic()
    _check_keeps_ids(dest)

    stop = threading.Event()

    def check() -> dict[str, int]:
        return check_lines(reader, stop)

    async def acheck() -> dict[str, int]:
        try:
            return await asyncio.to_thread(check)
        except asyncio.CancelledError:
            stop.set()  # the thread stops at its next chunk, the file closed
            raise

    # Every line is validated before the first write.
    yield from call(check, acheck)
    writer = Writer(dest, batch_size=_batch(batch_size), progress=progress)
    yield from read_ahead(reader.read, writer.add, ahead=writer.batch_size + CHUNK)
    yield from writer.finish()
    return _report(writer, started)


# --- migrate --------------------------------------------------------------------------


def migrate(
    source: BaseStore | str,
    dest: BaseStore | str,
    *,
    thread_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    id_map: str | os.PathLike[str] | None = None,
) -> TransferReport:
    """Copy a store into another, keeping ids, times, metadata and order.

    Safe to run again after an interruption (even ``kill -9``): it copies what is
    missing and duplicates nothing. Stores given as URLs are opened and closed here;
    store objects are left open.

    Args:
        source: The store to read (a `BaseStore` or a URL, see `open_store`).
        dest: The store to write; it must keep ids (`BaseStore.keeps_ids`).
        thread_ids: Only these threads (and the assistants they name).
        dry_run: Write nothing; report what the destination lacks and holds.
        batch_size: Records per write.
        progress: Called with ``(kind, n)`` as records are written.
        id_map: For a destination that assigns its own ids: copy with new ids,
            rewrite every reference (``assistant_id``, ``hwm``, ``reply_to``), and
            append the map of old to new ids to this JSON Lines file. Run records
            cannot be written there and are skipped. Ignored for a destination
            that keeps ids.

    Returns:
        What was written and what the destination already held.

    Raises:
        IdsNotKeptError: If the destination assigns its own ids and no ``id_map``
            is given.
        TransferError: If a thread differs between the two in a way a copy cannot
            resolve (its destination copy was changed since).
    """
    with ExitStack() as stack:
        src = _opened(stack, source)
        dst = _opened(stack, dest, create=not dry_run)
        return drive_calls(
            _copy(
                src,
                dst,
                thread_ids=thread_ids,
                batch_size=batch_size,
                progress=progress,
                dry_run=dry_run,
                id_map=id_map,
            )
        )


async def amigrate(
    source: BaseStore | str,
    dest: BaseStore | str,
    *,
    thread_ids: Sequence[str] | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    id_map: str | os.PathLike[str] | None = None,
) -> TransferReport:
    """Async twin of `migrate`."""
    async with AsyncExitStack() as stack:
        src = await _aopened(stack, source)
        dst = await _aopened(stack, dest, create=not dry_run)
        return await adrive_calls(
            _copy(
                src,
                dst,
                thread_ids=thread_ids,
                batch_size=batch_size,
                progress=progress,
                dry_run=dry_run,
                id_map=id_map,
            )
        )


def verify_migration(
    source: BaseStore | str,
    dest: BaseStore | str,
    *,
    thread_ids: Sequence[str] | None = None,
) -> VerifyReport:
    """Compare a copy with its source: counts, records, and every thread's messages.

    Each thread's messages are hashed (SHA-256 over every stored field, in order)
    on both sides, page by page.
    """
    with ExitStack() as stack:
        return drive_calls(
            _verify(_opened(stack, source), _opened(stack, dest), thread_ids)
        )


async def averify_migration(
    source: BaseStore | str,
    dest: BaseStore | str,
    *,
    thread_ids: Sequence[str] | None = None,
) -> VerifyReport:
    """Async twin of `verify_migration`."""
    async with AsyncExitStack() as stack:
        src = await _aopened(stack, source)
        dst = await _aopened(stack, dest)
        return await adrive_calls(_verify(src, dst, thread_ids))


# --- export and import ----------------------------------------------------------------


def _version() -> str:
    from langchain_retro import __version__  # noqa: PLC0415

    return __version__


def export_to_file(
    source: BaseStore | str,
    path: str | os.PathLike[str],
    *,
    thread_ids: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> TransferReport:
    """Write a store (or some threads) to a JSON Lines export file.

    The file is written as ``PATH.partial`` and renamed when complete; a name ending
    ``.gz`` is gzip-compressed. See the README for the schema.

    Args:
        source: The store to read.
        path: The file to write (replaced if it exists).
        thread_ids: Only these threads (and the assistants they name).
        progress: Called with ``("messages", n)`` as lines are written.
    """
    with ExitStack() as stack:
        src = _opened(stack, source)
        writer = ExportWriter(path, _version())
        return drive_calls(_export(src, writer, thread_ids, progress))


async def aexport_to_file(
    source: BaseStore | str,
    path: str | os.PathLike[str],
    *,
    thread_ids: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> TransferReport:
    """Async twin of `export_to_file`."""
    async with AsyncExitStack() as stack:
        src = await _aopened(stack, source)
        writer = await asyncio.to_thread(ExportWriter, path, _version())
        return await adrive_calls(_export(src, writer, thread_ids, progress))


def import_from_file(
    path: str | os.PathLike[str],
    dest: BaseStore | str,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> TransferReport:
    """Import an export file into a store, after validating every line.

    Nothing is written unless the whole file validates (schema version, every
    record, payloads against the message allowlist, order, the end line's counts).
    Then records are written as `migrate` writes them: ids kept, present ones left
    alone, so an interrupted import is finished by running it again.

    Raises:
        ExportFormatError: Naming the first line that does not validate, or a
            schema version newer than this package reads.
        IdsNotKeptError: If the destination assigns its own ids.
    """
    reader = ExportReader(path)
    with ExitStack() as stack:
        dst = _opened(stack, dest, create=True)
        return drive_calls(_import(reader, dst, batch_size, progress))


async def aimport_from_file(
    path: str | os.PathLike[str],
    dest: BaseStore | str,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> TransferReport:
    """Async twin of `import_from_file`."""
    reader = await asyncio.to_thread(ExportReader, path)
    async with AsyncExitStack() as stack:
        dst = await _aopened(stack, dest, create=True)
        return await adrive_calls(_import(reader, dst, batch_size, progress))
