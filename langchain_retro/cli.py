"""The ``langchain-retro`` command: assistants, threads and chats from a shell.

Usage::

    langchain-retro [--db PATH] [--json] [--offline] COMMAND ...

    langchain-retro demo                       # the whole flow, no key needed
    langchain-retro assistants create --model gpt-4o-mini --name Helper
    langchain-retro assistants list|show ID|delete ID [--threads delete]
    langchain-retro threads create --assistant ID
    langchain-retro threads list [--assistant ID] [--metadata k=v] [--after ID]
    langchain-retro threads show ID | delete ID
    langchain-retro chat [--thread ID]         # a REPL; --offline needs no key

The database is ``--db``, else ``$LANGCHAIN_RETRO_DB``, else ``langchain-retro.db``
in the working directory (the embedded `SQLiteStore`). Chats and the demo reach the
model through ``ChatOpenAI``, which reads ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``;
``--offline`` uses the package's echo model instead, and says so on every reply line.

Errors of langchain-retro are printed as one line on stderr with exit status 1;
usage errors and a missing API key exit with 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.messages import BaseMessage as LCBaseMessage
from pydantic import ValidationError

from langchain_retro.errors import (
    AssistantInUseError,
    MessageNotFoundError,
    RetroError,
    RunError,
)
from langchain_retro.records import (
    Assistant,
    BaseAssistant,
    BaseMessage,
    BaseThread,
    ChatCompletionThread,
    Page,
    ThreadMessage,
)
from langchain_retro.stores.sqlite import DEFAULT_PATH, PATH_ENV, SQLiteStore
from langchain_retro.testing import DEFAULT_MODEL

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langchain_openai import ChatOpenAI

    from langchain_retro.runnables import ThreadRunner
    from langchain_retro.stores.base import BaseStore

__all__ = ["build_parser", "main"]

PROG = "langchain-retro"
ONLINE_MODEL = "gpt-4o-mini"
"""The model of an assistant the CLI creates online when ``--model`` is not given."""
OFFLINE_LABEL = "assistant [offline echo]> "
"""Starts every line of a reply from the offline model, so none passes for real."""
ONLINE_LABEL = "assistant> "
OFFLINE_NOTICE = (
    "OFFLINE MODE: replies come from a local echo model that repeats your message; "
    "no real model is called."
)
DEMO_QUESTIONS = (
    "What did the Assistants API keep for me?",
    "Where do my threads live now?",
    "How do runs work without it?",
)
DEMO_PENDING = "Is this message answered yet?"

NO_KEY_MESSAGE = f"""\
{PROG}: OPENAI_API_KEY is not set, so there is no model to chat with.

To use OpenAI:
    export OPENAI_API_KEY=sk-...            # your key; it is never stored or printed

To use a local OpenAI-compatible server instead, point the SDK at it:
    Ollama:     export OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=ollama
    vLLM:       export OPENAI_BASE_URL=http://localhost:8000/v1 OPENAI_API_KEY=local
    llama.cpp:  export OPENAI_BASE_URL=http://localhost:8080/v1 OPENAI_API_KEY=local
  and pass the server's model name: {PROG} chat --model llama3.2

Or try it without any model: {PROG} --offline chat
  (replies are echoes from a local test model, labelled [offline echo]).
"""

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


# --- output helpers ------------------------------------------------------------------


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)
    ]
    for row in [headers, *rows]:
        cells = (cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _pairs(metadata: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(metadata.items())) or "-"


def _text(message: LCBaseMessage) -> str:
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


def _record_fields(record: Any) -> dict[str, Any]:
    """A record's fields besides id, created_at and metadata, JSON-ready."""
    dumped = record.model_dump(mode="json", exclude={"id", "created_at", "metadata"})
    return dict(dumped)


def _assistant_json(assistant: BaseAssistant) -> dict[str, Any]:
    return {
        "id": assistant.id,
        "object": "assistant",
        "created_at": assistant.created_at,
        **_record_fields(assistant),
        "metadata": assistant.metadata,
    }


def _thread_json(thread: BaseThread) -> dict[str, Any]:
    return {
        "id": thread.id,
        "object": "thread",
        "created_at": thread.created_at,
        "record_class": type(thread).record_class,
        **_record_fields(thread),
        "metadata": thread.metadata,
    }


def _message_json(message: BaseMessage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": message.id,
        "object": "thread.message",
        "created_at": message.created_at,
        "thread_id": message.thread_id,
        "role": message.role,
        "content": message.message.content,
    }
    if isinstance(message.message, AIMessage) and message.message.tool_calls:
        out["tool_calls"] = message.message.tool_calls
    out["metadata"] = message.metadata
    return out


def _page_json(
    page: Page[Any], item: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [item(record) for record in page.data],
        "first_id": page.first_id,
        "last_id": page.last_id,
        "has_more": page.has_more,
    }


def _more_hint(page: Page[Any], command: str) -> None:
    if page.has_more:
        print(f"(more: {PROG} {command} --after {page.last_id})")


# --- argument types ------------------------------------------------------------------


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _db_path(text: str) -> str:
    # An empty --db (often an unset shell variable: --db "$DB") would make SQLite
    # open a private temporary database and lose everything written to it.
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"needs a file path, not {text!r}; leave --db out to use "
            f"${PATH_ENV}, else ./{DEFAULT_PATH}"
        )
    return text


def _database(flag: str | None) -> str:
    """The database: ``--db``, else a non-empty ``$LANGCHAIN_RETRO_DB``, else default.

    An empty ``LANGCHAIN_RETRO_DB`` counts as unset (as ``LANGCHAIN_RETRO_DB= cmd``
    means in a shell); `SQLiteStore` itself would open a throwaway database.
    """
    if flag is not None:
        return flag
    from_env = os.environ.get(PATH_ENV, "")
    return from_env if from_env.strip() else DEFAULT_PATH


def _metadata(pairs: list[tuple[str, str]] | None) -> dict[str, str]:
    return dict(pairs or [])


# --- assistants ----------------------------------------------------------------------


def _assistants_create(args: argparse.Namespace, store: BaseStore) -> int:
    fields = {
        "model": args.model,
        "name": args.name,
        "description": args.description,
        "instructions": args.instructions,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    assistant = Assistant.create(
        store,
        **{k: v for k, v in fields.items() if v is not None},
        metadata=_metadata(args.metadata),
    )
    if args.json:
        _print_json(_assistant_json(assistant))
    else:
        print(f"created assistant {assistant.id} (model {assistant.model})")
    return 0


def _assistants_list(args: argparse.Namespace, store: BaseStore) -> int:
    page = BaseAssistant.list(
        store, metadata=_metadata(args.metadata), limit=args.limit, after=args.after
    )
    if args.json:
        _print_json(_page_json(page, _assistant_json))
        return 0
    if not page.data:
        print("no assistants")
        return 0
    _table(
        ["ID", "CREATED (UTC)", "MODEL", "NAME"],
        [[a.id, _when(a.created_at), a.model, a.name or "-"] for a in page.data],
    )
    _more_hint(page, "assistants list")
    return 0


def _assistants_show(args: argparse.Namespace, store: BaseStore) -> int:
    assistant = BaseAssistant.retrieve(store, args.assistant_id)
    if args.json:
        _print_json(_assistant_json(assistant))
        return 0
    print(f"{'assistant':<14}{assistant.id}")
    print(f"{'created':<14}{_when(assistant.created_at)} UTC")
    for name, value in _record_fields(assistant).items():
        print(f"{name:<14}{'-' if value is None else value}")
    print(f"{'metadata':<14}{_pairs(assistant.metadata)}")
    return 0


def _assistants_delete(args: argparse.Namespace, store: BaseStore) -> int:
    assistant = BaseAssistant.retrieve(store, args.assistant_id)
    deleted = assistant.delete(store, threads=args.threads)
    if args.json:
        _print_json(
            {
                "id": assistant.id,
                "object": "assistant.deleted",
                "deleted": True,
                "threads_deleted": deleted,
            }
        )
    else:
        extra = f" and {deleted} thread(s)" if deleted else ""
        print(f"deleted assistant {assistant.id}{extra}")
    return 0


# --- threads -------------------------------------------------------------------------


def _thread_status(
    store: BaseStore, thread: BaseThread
) -> tuple[str | None, int, int | None]:
    """(hwm, message count, pending count) of a thread.

    Pending messages are those the next run answers: after the ``hwm``, and not the
    assistant's. A thread that is not a run thread has neither.
    """
    total = store.count_messages(thread.id)
    if not isinstance(thread, ChatCompletionThread):
        return None, total, None
    hwm = thread.hwm
    try:
        rows = store.list_messages(thread.id, after=hwm)
    except MessageNotFoundError:
        # The hwm message was deleted; ids sort by creation, as the runner relies on.
        rows = [r for r in store.list_messages(thread.id) if hwm is None or r.id > hwm]
    return hwm, total, sum(1 for row in rows if row.role != "assistant")


def _threads_create(args: argparse.Namespace, store: BaseStore) -> int:
    assistant = BaseAssistant.retrieve(store, args.assistant)
    thread = ChatCompletionThread.create(
        store,
        assistant_id=assistant.id,
        chat_completion_model=args.model,
        metadata=_metadata(args.metadata),
    )
    if args.json:
        _print_json(_thread_json(thread))
    else:
        print(f"created thread {thread.id} (assistant {assistant.id})")
    return 0


def _threads_list(args: argparse.Namespace, store: BaseStore) -> int:
    filters = _metadata(args.metadata)
    if args.assistant is not None:
        filters["assistant_id"] = args.assistant
    page = BaseThread.list(store, metadata=filters, limit=args.limit, after=args.after)
    if args.json:
        _print_json(_page_json(page, _thread_json))
        return 0
    if not page.data:
        print("no threads")
        return 0
    rows = []
    for thread in page.data:
        _, total, _ = _thread_status(store, thread)
        rows.append(
            [
                thread.id,
                _when(thread.created_at),
                str(getattr(thread, "assistant_id", None) or "-"),
                str(total),
                _pairs(thread.metadata),
            ]
        )
    _table(["ID", "CREATED (UTC)", "ASSISTANT", "MESSAGES", "METADATA"], rows)
    _more_hint(page, "threads list")
    return 0


def _threads_show(args: argparse.Namespace, store: BaseStore) -> int:
    thread = BaseThread.retrieve(store, args.thread_id)
    newest = BaseMessage.list(store, thread.id, order="desc", limit=args.limit)
    messages = list(reversed(newest.data))
    if args.json:
        _print_json(
            {
                **_thread_json(thread),
                "messages": [_message_json(m) for m in messages],
                "has_more_messages": newest.has_more,
            }
        )
        return 0
    hwm, total, pending = _thread_status(store, thread)
    print(f"{'thread':<22}{thread.id}")
    print(f"{'created':<22}{_when(thread.created_at)} UTC")
    print(f"{'class':<22}{type(thread).record_class}")
    for name, value in _record_fields(thread).items():
        print(f"{name:<22}{'-' if value is None else value}")
    print(f"{'metadata':<22}{_pairs(thread.metadata)}")
    waiting = "" if pending is None else f" ({pending} pending: after the hwm)"
    print(f"{'messages':<22}{total}{waiting}")
    if not messages:
        return 0
    shown = f"the newest {len(messages)}" if newest.has_more else "all"
    print(f"\n{shown} messages, oldest first:")
    for message in messages:
        mark = "  <- hwm" if message.id == hwm else ""
        head = f"  {message.id}  {message.role:<9}  "
        text = _text(message.message).replace("\n", "\n" + " " * len(head))
        print(f"{head}{text}{mark}")
    return 0


def _threads_delete(args: argparse.Namespace, store: BaseStore) -> int:
    store.delete_thread(args.thread_id)
    if args.json:
        _print_json({"id": args.thread_id, "object": "thread.deleted", "deleted": True})
    else:
        print(f"deleted thread {args.thread_id}")
    return 0


# --- chat and demo -------------------------------------------------------------------


class _UsageError(Exception):
    """Options that do not go together; reported like argparse's errors (exit 2)."""


@contextlib.contextmanager
def _chat_model(offline: bool) -> Iterator[ChatOpenAI]:
    """The model runs go through: the offline echo server, or ChatOpenAI from env."""
    if offline:
        from langchain_retro.testing import FakeChatServer  # noqa: PLC0415

        with FakeChatServer() as server:
            yield server.chat_model()
        return
    from langchain_openai import ChatOpenAI  # noqa: PLC0415

    # OPENAI_API_KEY and OPENAI_BASE_URL are read by the SDK; runs send the model
    # of their thread or assistant, so this name is only a fallback.
    options: dict[str, Any] = {"model": ONLINE_MODEL}
    yield ChatOpenAI(**options)


def _has_key() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY"))


def _runner(store: BaseStore, llm: ChatOpenAI) -> ThreadRunner:
    # Imported here: the data-plane commands need neither the runner nor the SDK.
    from langchain_retro.runnables import ThreadRunner  # noqa: PLC0415

    return ThreadRunner(store=store, llm=llm)


class _ReplyPrinter:
    """Prints a streamed reply, starting every line with the speaker's label."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = False
        self.at_line_start = True

    def write(self, text: str) -> None:
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                sys.stdout.write(self.label)
            sys.stdout.write(piece)
            self.started = True
            self.at_line_start = piece.endswith("\n")
        sys.stdout.flush()

    def end(self) -> None:
        if not self.started:
            sys.stdout.write(self.label)
        if not self.started or not self.at_line_start:
            sys.stdout.write("\n")
        sys.stdout.flush()


def _stream_reply(
    runner: ThreadRunner, text: str | None, thread_id: str, label: str
) -> str:
    """Run the thread, printing the reply as it streams; returns the reply text."""
    printer = _ReplyPrinter(label)
    parts: list[str] = []
    try:
        for chunk in runner.stream(text, config=_config(thread_id)):
            piece = chunk.text if isinstance(chunk, LCBaseMessage) else str(chunk)
            parts.append(piece)
            printer.write(piece)
    finally:
        printer.end()
    return "".join(parts)


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def _status(store: BaseStore, thread_id: str) -> str:
    thread = BaseThread.retrieve(store, thread_id)
    hwm, total, pending = _thread_status(store, thread)
    return (
        f"[thread {thread.id} | hwm {hwm or '-'} | {total} messages, {pending} pending]"
    )


def _chat_thread(
    args: argparse.Namespace, store: BaseStore, offline: bool
) -> ChatCompletionThread:
    """The thread to chat on: resumed, or new (with a new assistant if needed)."""
    if args.thread is not None:
        thread = ChatCompletionThread.retrieve(store, args.thread)
        print(f"resuming thread {thread.id} (assistant {thread.assistant_id})")
        return thread
    if args.assistant is not None:
        assistant: BaseAssistant = BaseAssistant.retrieve(store, args.assistant)
        override = args.model
    else:
        fields = {
            "model": args.model or (DEFAULT_MODEL if offline else ONLINE_MODEL),
            "name": "langchain-retro chat",
            "instructions": args.instructions,
            "temperature": args.temperature,
        }
        assistant = Assistant.create(
            store, **{k: v for k, v in fields.items() if v is not None}
        )
        override = None
        print(f"created assistant {assistant.id} (model {assistant.model})")
    thread = ChatCompletionThread.create(
        store, assistant_id=assistant.id, chat_completion_model=override
    )
    print(f"created thread {thread.id}")
    return thread


def _read_lines() -> Iterator[str]:
    """Lines typed at a prompt, or piped in (echoed, so the transcript reads well)."""
    interactive = sys.stdin.isatty()
    if interactive:
        with contextlib.suppress(ImportError):  # line editing and history for input()
            import readline  # noqa: F401, PLC0415
    while True:
        if interactive:
            try:
                line = input("you> ")
            except EOFError:
                print()
                return
        else:
            raw = sys.stdin.readline()
            if not raw:
                return
            line = raw.rstrip("\r\n")
            print(f"you> {line}")
        yield line


def _chat(args: argparse.Namespace, store: BaseStore) -> int:
    if args.thread is not None and (
        args.assistant or args.model or args.instructions or args.temperature
    ):
        raise _UsageError(
            "--thread resumes a thread with its own assistant; --assistant, "
            "--model, --instructions and --temperature only apply to a new one"
        )
    if args.assistant is not None and (args.instructions or args.temperature):
        raise _UsageError(
            "--instructions and --temperature make a new assistant; "
            "they cannot change the one given with --assistant"
        )
    if not args.offline and not _has_key():
        sys.stderr.write(NO_KEY_MESSAGE)
        return EXIT_USAGE
    failed = False
    with _chat_model(args.offline) as llm:
        thread = _chat_thread(args, store, args.offline)
        runner = _runner(store, llm)
        if args.offline:
            print(OFFLINE_NOTICE)
        print(f"resume later with: {PROG} chat --thread {thread.id}")
        print("type a message; /quit or end of input leaves")
        label = OFFLINE_LABEL if args.offline else ONLINE_LABEL
        for line in _read_lines():
            text = line.strip()
            if text in ("/quit", "/exit"):
                break
            if not text:
                continue
            try:
                _stream_reply(runner, text, thread.id, label)
            except RunError as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                failed = True
            print(_status(store, thread.id))
    return EXIT_ERROR if failed else 0


def _demo(args: argparse.Namespace, store: BaseStore) -> int:
    offline = args.offline or not _has_key()
    model = args.model or (DEFAULT_MODEL if offline else ONLINE_MODEL)
    label = OFFLINE_LABEL if offline else ONLINE_LABEL
    where = getattr(store, "path", repr(store))
    print("langchain-retro demo: the Assistants data model, runs on Chat Completions")
    print(f"store: {where} (SQLiteStore, the embedded default)")
    if offline:
        why = "--offline" if args.offline else "OPENAI_API_KEY is not set"
        print(f"model: offline echo model ({why}); replies are echoes, not a model's")
    else:
        print(f"model: {model} through ChatOpenAI (OPENAI_API_KEY / OPENAI_BASE_URL)")
    with _chat_model(offline) as llm:
        runner = _runner(store, llm)
        assistant = Assistant.create(
            store,
            model=model,
            name="langchain-retro demo",
            instructions="You are a concise assistant: answer in one sentence.",
        )
        print(f"\n1. Created assistant {assistant.id} (model {assistant.model})")
        thread = ChatCompletionThread.create(
            store, assistant_id=assistant.id, metadata={"source": "demo"}
        )
        print(f"2. Created thread {thread.id}: no messages yet, hwm -")
        print("\n3. Three runs through ThreadRunner, each reply streamed.")
        print("   hwm: the last message a run answered; pending: those after it")
        for question in DEMO_QUESTIONS:
            print(f"   you> {question}")
            _stream_reply(runner, question, thread.id, "   " + label)
            print(f"   {_status(store, thread.id)}")
        print(f"\n4. Threads of assistant {assistant.id}:")
        for listed in ChatCompletionThread.list(store, assistant_id=assistant.id).data:
            count = store.count_messages(listed.id)
            print(f"   {listed.id}  {count} messages  hwm {listed.hwm}")
        total = len(BaseThread.list(store, limit=100).data)
        print(f"   (this store holds {total} thread(s) in all: {PROG} threads list)")
        posted = ThreadMessage.create(
            store, thread_id=thread.id, message=HumanMessage(DEMO_PENDING)
        )
        print(f"\n5. Posted message {posted.id} without running: {DEMO_PENDING!r}")
        print(f"   {_status(store, thread.id)}  <- pending")
        print("\n6. runner.invoke(None) answers what is pending:")
        reply = runner.invoke(None, config=_config(thread.id))
        for line in (_text(reply) or "").splitlines() or [""]:
            print(f"   {label}{line}")
        print(f"   {_status(store, thread.id)}")
    print(f"\nDone. Look around: {PROG} threads show {thread.id}")
    print(
        f"Keep chatting:  {PROG} chat --thread {thread.id}"
        + (" --offline" if offline else "")
    )
    return 0


# --- parser --------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before or after the command; the copy on subcommands must not
    # overwrite a value given before the command, hence SUPPRESS there.
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--db",
        metavar="PATH",
        type=_db_path,
        default=default(None),
        help=(
            f"SQLite database file (default: ${PATH_ENV} if set and not empty, "
            f"else {DEFAULT_PATH})"
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print JSON instead of text (create, list, show, delete)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        default=default(False),
        help="use the local echo model instead of a real one (chat, demo)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``langchain-retro`` command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Assistants, threads and messages with typed metadata in a local "
            "store; runs completed through Chat Completions."
        ),
    )
    _global_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, top=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        group: Any, name: str, handler: Callable[..., int], help_text: str
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(
            name, help=help_text, description=help_text, parents=[common]
        )
        sub.set_defaults(handler=handler)
        return sub

    assistants = commands.add_parser(
        "assistants", help="create, list, show and delete assistants"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    create = command(assistants, "create", _assistants_create, "create an assistant")
    create.add_argument("--model", required=True, help="Chat Completions model name")
    create.add_argument("--name")
    create.add_argument("--description")
    create.add_argument("--instructions", help="the system message of every run")
    create.add_argument("--temperature", type=float, help="0 to 2")
    create.add_argument("--top-p", type=float, help="0 to 1")
    create.add_argument(
        "--metadata", type=_key_value, action="append", metavar="KEY=VALUE"
    )
    listing = command(assistants, "list", _assistants_list, "list assistants")
    listing.add_argument(
        "--metadata", type=_key_value, action="append", metavar="KEY=VALUE"
    )
    listing.add_argument("--limit", type=_positive, default=20)
    listing.add_argument("--after", metavar="ID", help="the last id of the page before")
    show = command(assistants, "show", _assistants_show, "show an assistant")
    show.add_argument("assistant_id", metavar="ID")
    delete = command(assistants, "delete", _assistants_delete, "delete an assistant")
    delete.add_argument("assistant_id", metavar="ID")
    delete.add_argument(
        "--threads",
        choices=["refuse", "keep", "delete"],
        default="refuse",
        help="what to do with its threads (default: refuse if there are any)",
    )

    threads = commands.add_parser(
        "threads", help="create, list, show and delete threads"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    create = command(threads, "create", _threads_create, "create a thread")
    create.add_argument("--assistant", required=True, metavar="ID")
    create.add_argument("--model", help="override the assistant's model")
    create.add_argument(
        "--metadata", type=_key_value, action="append", metavar="KEY=VALUE"
    )
    listing = command(threads, "list", _threads_list, "list threads, newest first")
    listing.add_argument("--assistant", metavar="ID", help="only this assistant's")
    listing.add_argument(
        "--metadata", type=_key_value, action="append", metavar="KEY=VALUE"
    )
    listing.add_argument("--limit", type=_positive, default=20)
    listing.add_argument("--after", metavar="ID", help="the last id of the page before")
    show = command(threads, "show", _threads_show, "show a thread and its messages")
    show.add_argument("thread_id", metavar="ID")
    show.add_argument(
        "--limit", type=_positive, default=20, help="newest messages shown"
    )
    delete = command(threads, "delete", _threads_delete, "delete a thread")
    delete.add_argument("thread_id", metavar="ID")

    chat = command(
        commands, "chat", _chat, "chat on a thread; lines from stdin, replies streamed"
    )
    chat.add_argument("--thread", metavar="ID", help="resume this thread")
    chat.add_argument("--assistant", metavar="ID", help="new thread of this assistant")
    chat.add_argument(
        "--model", help="model of the new assistant, or the new thread's override"
    )
    chat.add_argument("--instructions", help="instructions of the new assistant")
    chat.add_argument("--temperature", type=float, help="of the new assistant, 0 to 2")
    demo = command(
        commands, "demo", _demo, "run the whole flow once, offline unless a key is set"
    )
    demo.add_argument("--model", help=f"model to use online (default {ONLINE_MODEL})")
    return parser


# --- entry point ---------------------------------------------------------------------


def _one_line(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors()
    )


def _error_line(exc: Exception, command: str) -> tuple[str, int]:
    """The one line printed for an error, and the exit status."""
    if isinstance(exc, _UsageError):
        return f"{PROG} {command}: error: {exc}", EXIT_USAGE
    if isinstance(exc, AssistantInUseError):
        return (
            f"{PROG}: error: assistant {exc.assistant_id} still has "
            f"{exc.thread_count} thread(s); pass --threads delete to delete them "
            "too, or --threads keep to keep them."
        ), EXIT_ERROR
    if isinstance(exc, ValidationError):
        return f"{PROG}: error: invalid value: {_one_line(exc)}", EXIT_ERROR
    return f"{PROG}: error: {exc}", EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` if ``None``.
    """
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, BaseStore], int] = args.handler
    try:
        with SQLiteStore(_database(args.db)) as store:
            return handler(args, store)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (`| head`): stop quietly, and keep the interpreter's final
        # flush of stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except (RetroError, ValidationError, _UsageError) as exc:
        line, status = _error_line(exc, args.command)
        print(line, file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
