"""The ``chat`` and ``demo`` commands: runs through `ThreadRunner`, streamed."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage as LCBaseMessage
from langchain_core.messages import HumanMessage

from langchain_retro._cli_common import (
    EXIT_ERROR,
    EXIT_USAGE,
    ONLINE_MODEL,
    PROG,
    UsageError,
    command_line,
    database,
    text_of,
)
from langchain_retro._cli_records import thread_status
from langchain_retro.errors import RunError, ThreadBusyError
from langchain_retro.records import (
    Assistant,
    BaseAssistant,
    BaseThread,
    ChatCompletionThread,
    ThreadMessage,
)

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langchain_openai import ChatOpenAI

    from langchain_retro.runnables import ThreadRunner
    from langchain_retro.stores.base import BaseStore, Lease

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
DEFAULT_WAIT = 30.0
"""Seconds ``chat`` waits for a thread another run holds (``--wait``)."""


def _no_key_message(chat_command: str, offline_command: str) -> str:
    return f"""\
{PROG}: OPENAI_API_KEY is not set, so there is no model to chat with.

To use OpenAI:
    export OPENAI_API_KEY=sk-...            # your key; it is never stored or printed

To use a local OpenAI-compatible server instead, point the SDK at it:
    Ollama:     export OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=ollama
    vLLM:       export OPENAI_BASE_URL=http://localhost:8000/v1 OPENAI_API_KEY=local
    llama.cpp:  export OPENAI_BASE_URL=http://localhost:8080/v1 OPENAI_API_KEY=local
  and pass the server's model name: {chat_command} --model llama3.2

Or try it without any model: {offline_command}
  (replies are echoes from a local test model, labelled [offline echo]).
"""


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


def _runner(
    store: BaseStore, llm: ChatOpenAI, *, wait: float = DEFAULT_WAIT
) -> ThreadRunner:
    # Imported here: the data-plane commands need neither the runner nor the SDK.
    from langchain_retro.runnables import ThreadRunner  # noqa: PLC0415

    return ThreadRunner(store=store, llm=llm, wait_timeout=wait)


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


def _started(runner: ThreadRunner, text: str | None, thread_id: str) -> Iterator[Any]:
    """A run's stream, begun: the lease is taken (or `ThreadBusyError` raised)."""
    stream = iter(runner.stream(text, config=_config(thread_id)))
    first = next(stream, None)
    return itertools.chain([] if first is None else [first], stream)


def _print_stream(chunks: Iterator[Any], label: str) -> str:
    """Print a reply as it streams; returns its text."""
    printer = _ReplyPrinter(label)
    parts: list[str] = []
    try:
        for chunk in chunks:
            piece = chunk.text if isinstance(chunk, LCBaseMessage) else str(chunk)
            parts.append(piece)
            printer.write(piece)
    finally:
        printer.end()
    return "".join(parts)


def _stream_reply(
    runner: ThreadRunner, text: str | None, thread_id: str, label: str
) -> str:
    """Run the thread, printing the reply as it streams; returns the reply text."""
    return _print_stream(_started(runner, text, thread_id), label)


def wait_notice(thread_id: str, lease: Lease | None, wait: float, now: float) -> str:
    """What ``chat`` says before it waits for a thread another run holds.

    Args:
        thread_id: The busy thread.
        lease: Its lease as the store reports it; ``None`` if the store cannot say
            (or the lease was just given back).
        wait: Seconds the chat will wait (``--wait``).
        now: The current Unix time.
    """
    waiting = f"waiting up to {wait:g} s for it (--wait SECONDS to change)"
    if lease is None:
        return f"thread {thread_id} is busy with another run; {waiting}..."
    left = max(0.0, lease.expires_at - now)
    until = datetime.fromtimestamp(lease.expires_at, UTC).strftime("%H:%M:%S")
    held = (
        f"thread {thread_id} is busy: run {lease.owner} holds its lease until "
        f"{until} UTC ({left:.0f} s from now; a run that crashed holds it until then)"
    )
    if left > wait:
        return (
            f"{held}; {waiting}, which ends first: expect it still busy "
            f"(--wait {left + 1:.0f} outlasts the lease)..."
        )
    return f"{held}; {waiting}..."


def _lease(store: BaseStore, thread_id: str) -> Lease | None:
    try:
        return store.get_lease(thread_id)
    except NotImplementedError:
        return None


def busy_line(thread_id: str, wait: float) -> str:
    """The error line when a thread is still busy after the wait."""
    return (
        f"{PROG}: error: thread {thread_id} is still busy after waiting {wait:g} s; "
        "nothing was sent or stored. Retry later, or pass --wait SECONDS to wait "
        "longer."
    )


def _chat_turn(
    args: argparse.Namespace,
    store: BaseStore,
    runners: tuple[ThreadRunner, ThreadRunner],
    thread_id: str,
    text: str,
) -> None:
    """One line of the chat: run now, or say who holds the thread and wait."""
    at_once, waiting = runners
    label = OFFLINE_LABEL if args.offline else ONLINE_LABEL
    try:
        chunks = _started(at_once, text, thread_id)
    except ThreadBusyError:
        # Stored nothing: say why the chat pauses, then wait as told.
        notice = wait_notice(
            thread_id, _lease(store, thread_id), args.wait, time.time()
        )
        print(notice, flush=True)
        chunks = _started(waiting, text, thread_id)
    _print_stream(chunks, label)


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def _status(store: BaseStore, thread_id: str) -> str:
    thread = BaseThread.retrieve(store, thread_id)
    hwm, total, pending = thread_status(store, thread)
    return (
        f"[thread {thread.id} | hwm {hwm or '-'} | {total} messages, {pending} pending]"
    )


# --- chat ----------------------------------------------------------------------------


def _assistant_options(args: argparse.Namespace) -> list[str]:
    """The options of ``chat`` that make a new assistant, as given."""
    words: list[str] = []
    if args.instructions is not None:
        words += ["--instructions", args.instructions]
    if args.temperature is not None:
        words += ["--temperature", f"{args.temperature:g}"]
    return words


def _chat_options(args: argparse.Namespace) -> list[str]:
    """The options this ``chat`` was given, to repeat them in a hint."""
    words: list[str] = []
    for option, value in (
        ("--thread", args.thread),
        ("--assistant", args.assistant),
        ("--model", args.model),
    ):
        if value is not None:
            words += [option, value]
    if args.wait != DEFAULT_WAIT:
        words += ["--wait", f"{args.wait:g}"]
    return words + _assistant_options(args)


def _check_chat_options(args: argparse.Namespace, store: BaseStore) -> None:
    """Refuse options the chat would ignore, naming the command that applies them."""
    new_assistant = _assistant_options(args)
    if args.thread is not None:
        ignored = [
            option
            for option, value in (
                ("--assistant", args.assistant),
                ("--model", args.model),
                ("--instructions", args.instructions),
                ("--temperature", args.temperature),
            )
            if value is not None
        ]
        if not ignored:
            return
        thread = ChatCompletionThread.retrieve(store, args.thread)
        fixes = []
        thread_words = []
        if args.assistant is not None:
            thread_words += ["--assistant", args.assistant]
        if args.model is not None:
            thread_words += ["--model", args.model]
        if thread_words:
            fixes.append(
                command_line(args, "threads", "update", thread.id, *thread_words)
            )
        if new_assistant:
            owner = args.assistant or thread.assistant_id
            fixes.append(
                command_line(args, "assistants", "update", owner, *new_assistant)
            )
        resume = command_line(args, "chat", "--thread", thread.id)
        raise UsageError(
            f"--thread resumes thread {thread.id} with its own model and assistant, "
            f"so {', '.join(ignored)} would be ignored; to change them, run "
            f"{' and '.join(fixes)}, then {resume}"
        )
    if args.assistant is not None and new_assistant:
        update = ["assistants", "update", args.assistant, *new_assistant]
        raise UsageError(
            "--instructions and --temperature make a new assistant; to change "
            f"assistant {args.assistant}, run {command_line(args, *update)}"
        )


def _chat_thread(args: argparse.Namespace, store: BaseStore) -> ChatCompletionThread:
    """The thread to chat on: resumed, or new (with a new assistant if needed)."""
    if args.thread is not None:
        thread = ChatCompletionThread.retrieve(store, args.thread)
        print(f"resuming thread {thread.id} (assistant {thread.assistant_id})")
        return thread
    if args.assistant is not None:
        assistant: BaseAssistant = BaseAssistant.retrieve(store, args.assistant)
        override = args.model
    else:
        # Offline too, the assistant names the model it will use online: the echo
        # model answers whatever model a request names.
        fields = {
            "model": args.model or ONLINE_MODEL,
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


def chat(args: argparse.Namespace, store: BaseStore) -> int:
    """``chat``: a REPL on a new or resumed thread, replies streamed."""
    _check_chat_options(args, store)
    if not args.offline and not _has_key():
        offline = command_line(args, "chat", *_chat_options(args), "--offline")
        sys.stderr.write(_no_key_message(command_line(args, "chat"), offline))
        return EXIT_USAGE
    failed = False
    with _chat_model(args.offline) as llm:
        thread = _chat_thread(args, store)
        runners = (_runner(store, llm, wait=0), _runner(store, llm, wait=args.wait))
        if args.offline:
            print(OFFLINE_NOTICE)
        resume = ["chat", "--thread", thread.id]
        if args.offline:
            resume.append("--offline")
        if args.wait != DEFAULT_WAIT:
            resume += ["--wait", f"{args.wait:g}"]
        print(f"resume later with: {command_line(args, *resume)}")
        print("type a message; /quit or end of input leaves")
        for line in _read_lines():
            text = line.strip()
            if text in ("/quit", "/exit"):
                break
            if not text:
                continue
            try:
                _chat_turn(args, store, runners, thread.id, text)
            except ThreadBusyError:
                print(busy_line(thread.id, args.wait), file=sys.stderr)
                failed = True
            except RunError as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                failed = True
            print(_status(store, thread.id))
    return EXIT_ERROR if failed else 0


# --- demo ----------------------------------------------------------------------------


def demo(args: argparse.Namespace, store: BaseStore) -> int:
    """``demo``: the whole flow once, offline unless ``OPENAI_API_KEY`` is set."""
    offline = args.offline or not _has_key()
    # The assistant names a real model even offline, so that chatting on its
    # thread later with a key sends a model the server knows.
    model = args.model or ONLINE_MODEL
    label = OFFLINE_LABEL if offline else ONLINE_LABEL
    print("langchain-retro demo: the Assistants data model, runs on Chat Completions")
    print(f"store: {database(args.db)} (SQLiteStore, the embedded default)")
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
        every = command_line(args, "threads", "list")
        print(f"   (this store holds {total} thread(s) in all: {every})")
        posted = ThreadMessage.create(
            store, thread_id=thread.id, message=HumanMessage(DEMO_PENDING)
        )
        print(f"\n5. Posted message {posted.id} without running: {DEMO_PENDING!r}")
        print(f"   {_status(store, thread.id)}  <- pending")
        print("\n6. runner.invoke(None) answers what is pending:")
        reply = runner.invoke(None, config=_config(thread.id))
        for line in (text_of(reply) or "").splitlines() or [""]:
            print(f"   {label}{line}")
        print(f"   {_status(store, thread.id)}")
    print(f"\nDone. Look around: {command_line(args, 'threads', 'show', thread.id)}")
    keep = ["chat", "--thread", thread.id, *(["--offline"] if offline else [])]
    print(f"Keep chatting:  {command_line(args, *keep)}")
    return 0
