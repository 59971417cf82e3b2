"""The export file: JSON Lines, one record a line, versioned by its first line.

Layout (``FORMAT`` version ``VERSION``)::

    {"type": "header", "format": "langchain-retro-export", "version": 1, ...}
    {"type": "assistant", "id": ..., "created_at": ..., "model": ..., ...}
    {"type": "thread", "id": ..., "created_at": ..., "metadata": {...}, "usage": {...}}
    {"type": "run", "id": ..., "thread_id": ..., "status": ..., ...}
    {"type": "message", "id": ..., "thread_id": ..., "payload": "...", ...}
    ...
    {"type": "end", "counts": {"assistants": 1, "threads": 1, ...}}

Every assistant comes first; then each thread, followed by its runs and its messages
in thread order. The last line counts the records, so a truncated file is refused.
A name ending ``.gz`` is gzip-compressed. Files are UTF-8, one JSON object per line.

Reading validates each line against the models below (unknown fields refused), and
each message's payload against the message allowlist (``langchain_retro._messages``;
nothing is revived with ``langchain_core.load``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gzip
import json
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from langchain_retro._messages import check_payload
from langchain_retro._steps import Call, Steps
from langchain_retro._transfer import MessageCopy, Record, hand_over
from langchain_retro.errors import CorruptDataError, ExportFormatError
from langchain_retro.stores.base import (
    StoredAssistant,
    StoredMessage,
    StoredRun,
    ThreadCopy,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "ExportReader",
    "ExportWriter",
    "Header",
    "check_lines",
    "record_line",
]

FORMAT = "langchain-retro-export"
"""The ``format`` of the header line."""

VERSION = 1
"""The schema version this package writes, and the newest it reads."""


class Header(BaseModel):
    """The first line: what the file is."""

    model_config = ConfigDict(extra="allow")

    type: Literal["header"]
    """Always ``header``."""
    format: str
    """Always `FORMAT`."""
    version: int
    """The schema version (`VERSION` when written by this package)."""
    exported_at: int | None = None
    """When the export started, in Unix seconds."""
    langchain_retro: str | None = None
    """The version of langchain-retro that wrote it."""


class _AssistantLine(StoredAssistant):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["assistant"]


class _ThreadLine(ThreadCopy):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["thread"]


class _RunLine(StoredRun):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["run"]


class _MessageLine(StoredMessage):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["message"]


class _MessageCopyLine(MessageCopy):
    # The fields and types of _MessageLine: the writing pass reads the lines the
    # validation pass accepted as messages ready to append.
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["message"]


class _EndLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["end"]
    counts: dict[str, int]


_Line: TypeAlias = Annotated[
    _AssistantLine | _ThreadLine | _RunLine | _MessageLine | _EndLine,
    Field(discriminator="type"),
]
_LINE = TypeAdapter(_Line)
_CopyLine: TypeAlias = Annotated[
    _AssistantLine | _ThreadLine | _RunLine | _MessageCopyLine | _EndLine,
    Field(discriminator="type"),
]
_COPY_LINE = TypeAdapter(_CopyLine)
_LineModel: TypeAlias = (
    _AssistantLine | _ThreadLine | _RunLine | _MessageLine | _MessageCopyLine | _EndLine
)


_KINDS = {
    StoredAssistant: "assistant",
    ThreadCopy: "thread",
    StoredRun: "run",
    StoredMessage: "message",
}


def record_line(record: Record) -> str:
    """A record as one line of the file (without the newline)."""
    if isinstance(record, MessageCopy):
        record = StoredMessage.model_validate(record, from_attributes=True)
    data = record.model_dump(mode="json")
    return json.dumps(
        {"type": _KINDS[type(record)], **data},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _record(line: _AssistantLine | _ThreadLine | _RunLine) -> Record:
    """The record of a validated line other than a message's, as its plain class.

    (A message line is a record already: `StoredMessage` or `MessageCopy`.)
    """
    data = line.model_dump(exclude={"type"})
    if isinstance(line, _AssistantLine):
        return StoredAssistant.model_validate(data)
    if isinstance(line, _ThreadLine):
        return ThreadCopy.model_validate(data)
    return StoredRun.model_validate(data)


def _open(path: Path, mode: Literal["r", "w"], *, gz: bool) -> IO[str]:
    if gz:
        return gzip.open(path, mode + "t", encoding="utf-8", newline="\n")  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8", newline="\n")


class ExportWriter:
    """Writes an export file: to ``NAME.partial``, renamed to ``NAME`` when complete.

    An interrupted export never leaves a file at ``NAME`` that looks complete.
    """

    def __init__(self, path: str | os.PathLike[str], version: str) -> None:
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._file = _open(self._partial, "w", gz=self.path.name.endswith(".gz"))
        self._lines: list[str] = []
        self.counts: dict[str, int] = {
            "assistants": 0,
            "threads": 0,
            "runs": 0,
            "messages": 0,
        }
        header = {
            "type": "header",
            "format": FORMAT,
            "version": VERSION,
            "exported_at": int(time.time()),
            "langchain_retro": version,
        }
        self._lines.append(json.dumps(header))

    def add(self, record: Record) -> bool:
        """Buffer a record's line; says whether the buffer should be written."""
        self._lines.append(record_line(record))
        self.counts[_KINDS[type(record)] + "s"] += 1
        return len(self._lines) >= 2_000

    def write(self) -> None:
        """Write the buffered lines (blocking file I/O)."""
        if self._lines:
            self._file.write("\n".join(self._lines) + "\n")
            self._lines = []

    def complete(self) -> None:
        """Write the end line, close the file and give it its name."""
        self._lines.append(json.dumps({"type": "end", "counts": self.counts}))
        self.write()
        self._file.close()
        self._partial.replace(self.path)

    def abandon(self) -> None:
        """Close and remove the partial file after a failure."""
        self._file.close()
        self._partial.unlink(missing_ok=True)


def _fail(path: Path, number: int, why: str) -> ExportFormatError:
    return ExportFormatError(
        f"{path.name}, line {number}: {why}. Nothing was imported.", line=number
    )


def _header(path: Path, text: str) -> Header:
    try:
        header = Header.model_validate_json(text)
    except ValidationError as exc:
        raise _fail(
            path,
            1,
            "the first line is not a langchain-retro export header (is this an "
            f"export file?): {str(exc).splitlines()[0]}",
        ) from exc
    if header.format != FORMAT:
        raise _fail(path, 1, f"the format is {header.format!r}, not {FORMAT!r}")
    if header.version > VERSION:
        raise _fail(
            path,
            1,
            f"the file is export schema version {header.version}, newer than the "
            f"{VERSION} this langchain-retro reads; upgrade langchain-retro "
            "(pip install -U langchain-retro) to import it",
        )
    if header.version < 1:
        raise _fail(path, 1, f"export schema version {header.version} does not exist")
    return header


class ExportReader:
    """Reads an export file line by line, validating each line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportFormatError(
                f"No export file at {self.path.name!r}: pass the path of a file "
                "written by langchain-retro export."
            )

    def records(self, *, writing: bool = False) -> Generator[list[Record], None, None]:
        """The file's records in chunks (blocking file I/O), the header checked.

        Args:
            writing: For the writing pass, after the validation pass: messages
                come as `MessageCopy`, ready to append, and their payloads are not
                checked again. Otherwise they come as `StoredMessage`, each payload
                checked against the message allowlist.

        Raises:
            ExportFormatError: For the first line that does not validate, naming it.
        """
        try:
            gz = self.path.name.endswith(".gz")
            with _open(self.path, "r", gz=gz) as file:
                yield from self._chunks(file, writing)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ExportFormatError(
                f"{self.path.name}: cannot be read as a (gzip) UTF-8 text file: "
                f"{exc}. Nothing was imported."
            ) from exc

    def read(
        self, sink: Callable[[Record], Steps[Call[Any], None]]
    ) -> Steps[Call[Any], None]:
        """Hand every record of the file to ``sink``, in the file's order.

        The source of an import's writing pass, read ahead of its writer
        (``langchain_retro._read_ahead``): messages come as `MessageCopy`, their
        payloads not checked again (the validation pass did). The file is read in
        the reader's thread, or, under `adrive_calls`, in a worker thread of its
        own.
        """
        chunks = _Chunks(self.records(writing=True))
        try:
            yield from hand_over(chunks.next, chunks.anext, sink)
        finally:
            chunks.close()

    def _chunks(self, file: IO[str], writing: bool) -> Iterator[list[Record]]:
        first = file.readline()
        if not first:
            raise _fail(self.path, 1, "the file is empty")
        _header(self.path, first)
        chunk: list[Record] = []
        counts = {"assistants": 0, "threads": 0, "runs": 0, "messages": 0}
        ended: dict[str, int] | None = None
        number = 1
        # pydantic-core's own call: no TypeAdapter frame a line.
        validate = (_COPY_LINE if writing else _LINE).validator.validate_json
        for number, text in enumerate(file, start=2):
            if ended is not None:
                raise _fail(self.path, number, "a line follows the end line")
            try:
                line: _LineModel = validate(text)
            except ValidationError as exc:
                raise self._invalid(number, exc) from exc
            record: Record
            if type(line) is _MessageLine:  # most lines: tested first, and once
                self._check_payload(number, line)
                record = line
            elif isinstance(line, _EndLine):
                ended = line.counts
                continue
            elif isinstance(line, (_AssistantLine, _ThreadLine, _RunLine)):
                record = _record(line)
            else:  # a message of the writing pass: a `MessageCopy` already
                record = line
            counts[line.type + "s"] += 1
            chunk.append(record)
            if len(chunk) >= 2_000:
                yield chunk
                chunk = []
        if ended is None:
            raise _fail(
                self.path,
                number,
                "the file ends without its end line: it was cut short (an "
                "interrupted export or copy); export it again",
            )
        if ended != counts:
            raise _fail(
                self.path,
                number,
                f"the end line counts {ended} but the file holds {counts}",
            )
        yield chunk

    def _invalid(self, number: int, exc: ValidationError) -> ExportFormatError:
        errors = exc.errors()
        why = (
            f"{'.'.join(str(p) for p in errors[0]['loc']) or 'line'}: "
            f"{errors[0]['msg']}"
            if errors
            else str(exc)
        )
        return _fail(self.path, number, f"not a valid record ({why})")

    def _check_payload(self, number: int, line: _MessageLine) -> None:
        try:
            check_payload(line.payload, line.id, thread_id=line.thread_id)
        except CorruptDataError as exc:
            raise _fail(self.path, number, str(exc)) from exc


class _Chunks:
    """The chunks of `ExportReader.records`, each read by a blocking call.

    A generator cannot be closed from another thread while it runs. Read by the
    async twin, the chunks are read in one worker thread of their own, and closing
    them is queued there after the read in progress: a cancelled reader neither
    waits for that read nor closes the file under it.
    """

    def __init__(self, chunks: Generator[list[Record], None, None]) -> None:
        self._chunks = chunks
        self._worker: ThreadPoolExecutor | None = None

    def next(self) -> list[Record] | None:
        """The next chunk (blocking file I/O); ``None`` at the end."""
        return next(self._chunks, None)

    async def anext(self) -> list[Record] | None:
        """Async twin of `next`: the same read in the worker thread."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(
                1, thread_name_prefix="langchain-retro-import"
            )
        return await asyncio.wrap_future(self._worker.submit(self.next))

    def close(self) -> None:
        """Close the file: here, or in the worker after its read (without waiting)."""
        if self._worker is None:
            self._chunks.close()
            return
        self._worker.submit(self._chunks.close)
        self._worker.shutdown(wait=False)


def check_lines(
    reader: ExportReader, stop: threading.Event | None = None
) -> dict[str, int]:
    """Validate a whole file before anything is written; returns its counts.

    Also checks the order a copy needs: each run and message after its thread, and
    no message id twice in a thread.

    Args:
        reader: The file.
        stop: Set by a caller that gave up (an async import cancelled while this
            runs in a thread): the check ends at its next chunk and closes the file.

    Raises:
        ExportFormatError: Naming the first bad line.
        concurrent.futures.CancelledError: If ``stop`` was set.
    """
    counts = {"assistants": 0, "threads": 0, "runs": 0, "messages": 0}
    current: str | None = None
    seen: set[str] = set()
    number = 1
    with contextlib.closing(reader.records()) as chunks:
        for chunk in chunks:
            if stop is not None and stop.is_set():
                raise concurrent.futures.CancelledError
            current, seen, number = _check_chunk(
                reader, chunk, counts, (current, seen, number)
            )
    return counts


def _check_chunk(
    reader: ExportReader,
    chunk: list[Record],
    counts: dict[str, int],
    state: tuple[str | None, set[str], int],
) -> tuple[str | None, set[str], int]:
    """`check_lines` over one chunk: the thread, its ids seen and the line reached."""
    current, seen, number = state
    for record in chunk:
        number += 1
        if isinstance(record, (StoredMessage, MessageCopy)):  # most: first
            if record.thread_id != current:
                raise _fail(reader.path, number, _astray(record))
            if record.id in seen:
                raise _fail(
                    reader.path,
                    number,
                    f"message id {record.id!r} is given twice in thread {current!r}",
                )
            seen.add(record.id)
            counts["messages"] += 1
        elif isinstance(record, ThreadCopy):
            current = record.id
            seen = set()
            counts["threads"] += 1
        elif isinstance(record, StoredAssistant):
            counts["assistants"] += 1
            if current is not None:
                raise _fail(reader.path, number, "an assistant comes after a thread")
        else:
            if record.thread_id != current:
                raise _fail(reader.path, number, _astray(record))
            counts["runs"] += 1
    return current, seen, number


def _astray(record: StoredMessage | MessageCopy | StoredRun) -> str:
    return (
        f"{type(record).__name__} {record.id!r} of thread {record.thread_id!r} does "
        "not follow its thread's line"
    )
