"""What the ``langchain-retro`` commands share: names, option types, output, hints.

Hints (``(more: ...)``, ``resume later with: ...``) are commands the user can paste
as they are: they name the same database and keep every option that shaped the
output, built by `command_line`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.messages import BaseMessage as LCBaseMessage

from langchain_retro.records import BaseAssistant, BaseMessage, BaseThread, Page
from langchain_retro.stores.sqlite import DEFAULT_PATH, PATH_ENV

PROG = "langchain-retro"
ONLINE_MODEL = "gpt-4o-mini"
"""The model of an assistant the CLI creates when ``--model`` is not given."""
DEFAULT_LIMIT = 20
"""Rows a listing shows when ``--limit`` is not given."""

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Options that do not go together; reported like argparse's errors (exit 2)."""


# --- the database --------------------------------------------------------------------


def db_path(text: str) -> str:
    """The ``--db`` option's type: a path, never empty."""
    # An empty --db (often an unset shell variable: --db "$DB") would make SQLite
    # open a private temporary database and lose everything written to it.
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"needs a file path, not {text!r}; leave --db out to use "
            f"${PATH_ENV}, else ./{DEFAULT_PATH}"
        )
    return text


def database(flag: str | None) -> str:
    """The database: ``--db``, else a non-empty ``$LANGCHAIN_RETRO_DB``, else default.

    An empty ``LANGCHAIN_RETRO_DB`` counts as unset (as ``LANGCHAIN_RETRO_DB= cmd``
    means in a shell); `SQLiteStore` itself would open a throwaway database.
    """
    if flag is not None:
        return flag
    from_env = os.environ.get(PATH_ENV, "")
    return from_env if from_env.strip() else DEFAULT_PATH


def invoked_as(argv0: str) -> list[str]:
    """How to run this command again from the same directory and shell.

    ``langchain-retro`` if that name on ``PATH`` is the script that runs; else the
    script's path as it was called (``.venv/bin/langchain-retro`` in a shell where
    the virtualenv is not activated); for ``python -m``, this interpreter.
    """
    if argv0.endswith(".py"):  # python -m langchain_retro
        return [sys.executable, "-m", "langchain_retro"]
    found = shutil.which(PROG)
    try:
        if found and os.path.samefile(found, argv0):
            return [PROG]
    except OSError:
        pass
    return [argv0] if os.path.basename(argv0) == PROG else [PROG]


def command_line(args: argparse.Namespace, *words: str) -> str:
    """A command to paste: the program, this run's database, then ``words``.

    The program is called as this run was (see `invoked_as`); the database is
    named unless it is the default, so the command works in a new shell where
    ``$LANGCHAIN_RETRO_DB`` may not be set.
    """
    program: list[str] = getattr(args, "program", None) or [PROG]
    db = database(args.db)
    prefix = [*program] if db == DEFAULT_PATH else [*program, "--db", db]
    return shlex.join([*prefix, *words])


# --- option types --------------------------------------------------------------------


def key_value(text: str) -> tuple[str, str]:
    """The ``--metadata KEY=VALUE`` option's type."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def positive(text: str) -> int:
    """A whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def model_name(text: str) -> str:
    """A model name, never empty: an empty one would be sent upstream as is."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"needs a model name, not {text!r}")
    return text


def metadata(pairs: list[tuple[str, str]] | None) -> dict[str, str]:
    """``--metadata`` pairs as a dict."""
    return dict(pairs or [])


# --- output --------------------------------------------------------------------------


def when(timestamp: int) -> str:
    """A Unix timestamp as UTC date and time."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_json(value: Any) -> None:
    """Print a value as indented JSON."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print rows under headers, in columns."""
    widths = [
        max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)
    ]
    for row in [headers, *rows]:
        cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def pairs(values: dict[str, str]) -> str:
    """Metadata as ``k=v`` words, or ``-``."""
    return " ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def text_of(message: LCBaseMessage) -> str:
    """A one-glance rendering of a message: its text, plus any tool calls."""
    content = message.content
    if isinstance(content, str):
        text = content
    else:
        text = " ".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part)
            for part in content
        )
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = ", ".join(call["name"] for call in message.tool_calls)
        text = f"{text} [calls: {calls}]".strip()
    return text


def record_fields(record: Any) -> dict[str, Any]:
    """A record's fields besides id, created_at and metadata, JSON-ready."""
    dumped = record.model_dump(mode="json", exclude={"id", "created_at", "metadata"})
    return dict(dumped)


def assistant_json(assistant: BaseAssistant) -> dict[str, Any]:
    """An assistant as the Assistants API's JSON object."""
    return {
        "id": assistant.id,
        "object": "assistant",
        "created_at": assistant.created_at,
        **record_fields(assistant),
        "metadata": assistant.metadata,
    }


def thread_json(thread: BaseThread) -> dict[str, Any]:
    """A thread as JSON, with its record class and typed fields."""
    return {
        "id": thread.id,
        "object": "thread",
        "created_at": thread.created_at,
        "record_class": type(thread).record_class,
        **record_fields(thread),
        "metadata": thread.metadata,
    }


def message_json(message: BaseMessage) -> dict[str, Any]:
    """A message as the Assistants API's JSON object, plus any tool calls."""
    out: dict[str, Any] = {
        "id": message.id,
        "object": "thread.message",
        "created_at": message.created_at,
        "thread_id": message.thread_id,
        "role": message.role,
        "content": message.message.content,
        "assistant_id": message.assistant_id,
        "run_id": message.run_id,
    }
    if isinstance(message.message, AIMessage) and message.message.tool_calls:
        out["tool_calls"] = message.message.tool_calls
    out["metadata"] = message.metadata
    return out


def page_json(page: Page[Any], item: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """A page as the Assistants API's list object."""
    return {
        "object": "list",
        "data": [item(record) for record in page.data],
        "first_id": page.first_id,
        "last_id": page.last_id,
        "has_more": page.has_more,
    }
