"""The ``langchain-retro`` command: assistants, threads, runs and chats from a shell.

Usage::

    langchain-retro [--db PATH] [--json] [--offline] COMMAND ...

    langchain-retro demo                       # the whole flow, no key needed
    langchain-retro assistants create --model gpt-4o-mini --name Helper
    langchain-retro assistants list|show ID|delete ID [--threads delete]
    langchain-retro assistants update ID --temperature 0 --unset top-p
    langchain-retro threads create --assistant ID
    langchain-retro threads list [--assistant ID] [--metadata k=v] [--after ID]
    langchain-retro threads show ID | update ID --model M | delete ID
    langchain-retro runs list THREAD [--order asc] [--after ID]
    langchain-retro runs show THREAD RUN | cancel THREAD RUN
    langchain-retro chat [--thread ID]         # a REPL; --offline needs no key
    langchain-retro serve [--host H] [--port P] [--workers N] [--api-key KEY]
        [--metadata-limits off]                # off: the /v1/retro routes take any size
        [--no-retro-routes] [--no-thread-listing]   # the Assistants API alone
    langchain-retro migrate SOURCE DEST [--dry-run] [--verify]   # store URLs
    langchain-retro export [--thread ID]... FILE | import FILE  # JSON Lines, .gz

The database is ``--db``, else ``$LANGCHAIN_RETRO_DB`` unless empty, else
``langchain-retro.db`` in the working directory (the embedded `SQLiteStore`); an
empty ``--db`` is refused. The modules behind it: ``_cli_common`` (option types,
output, the hints printed for the next command), ``_cli_records`` (assistants and
threads), ``_cli_runs`` (runs), ``_cli_chat`` (chat and demo), ``_cli_migrate``
(migrate, export, import) and
``langchain_retro.server.serve`` (serve, with the ``server`` extra). Chats and the
demo reach the model through ``ChatOpenAI``, which reads ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL``; ``--offline`` uses the package's echo model instead, and says so
on every reply line.

Errors of langchain-retro are printed as one line on stderr with exit status 1;
usage errors and a missing API key exit with 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from langchain_retro import _cli_chat, _cli_migrate, _cli_records, _cli_runs
from langchain_retro._cli_common import (
    DEFAULT_LIMIT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ONLINE_MODEL,
    PROG,
    UsageError,
    database,
    db_path,
    invoked_as,
    key_value,
    model_name,
    positive,
    seconds,
)
from langchain_retro._cli_records import ASSISTANT_UNSETTABLE, THREAD_UNSETTABLE
from langchain_retro.errors import AssistantInUseError, RetroError
from langchain_retro.stores.sqlite import DEFAULT_PATH, PATH_ENV, SQLiteStore

if TYPE_CHECKING:
    from langchain_retro.stores.base import BaseStore

__all__ = ["build_parser", "main"]


# --- parser --------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Accepted before or after the command; the copy on subcommands must not
    # overwrite a value given before the command, hence SUPPRESS there.
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument(
        "--db",
        metavar="PATH",
        type=db_path,
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
        help="print JSON instead of text (create, list, show, update, delete, cancel)",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        default=default(False),
        help="use the local echo model instead of a real one (chat, demo)",
    )


def _metadata_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--metadata",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help=help_text,
    )


def _update_options(parser: argparse.ArgumentParser, unsettable: list[str]) -> None:
    parser.add_argument(
        "--unset",
        choices=unsettable,
        action="append",
        help="clear a setting (repeat for several)",
    )
    _metadata_option(parser, "set a metadata entry (repeat for several)")
    parser.add_argument(
        "--delete-metadata",
        action="append",
        metavar="KEY",
        help="remove a metadata entry (repeat for several)",
    )


def _assistant_settings(parser: argparse.ArgumentParser, *, create: bool) -> None:
    parser.add_argument(
        "--model",
        type=model_name,
        required=create,
        help="Chat Completions model name",
    )
    parser.add_argument("--name")
    parser.add_argument("--description")
    parser.add_argument("--instructions", help="the system message of every run")
    parser.add_argument("--temperature", type=float, help="0 to 2")
    parser.add_argument("--top-p", type=float, help="0 to 1")


def _listing_options(parser: argparse.ArgumentParser) -> None:
    _metadata_option(parser, "only those with this metadata entry")
    parser.add_argument("--limit", type=positive, default=DEFAULT_LIMIT)
    parser.add_argument("--after", metavar="ID", help="the last id of the page before")


def _runs_commands(
    commands: Any, command: Callable[..., argparse.ArgumentParser]
) -> None:
    """The ``runs`` commands, which read and cancel the runs of a thread."""
    runs = commands.add_parser(
        "runs", help="list, show and cancel the runs of a thread"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = command(
        runs, "list", _cli_runs.runs_list, "list a thread's runs, newest first"
    )
    listing.add_argument("thread_id", metavar="THREAD")
    listing.add_argument("--limit", type=positive, default=DEFAULT_LIMIT)
    listing.add_argument(
        "--after", metavar="ID", help="the last run id of the page before"
    )
    listing.add_argument(
        "--order",
        choices=["desc", "asc"],
        default="desc",
        help="desc: newest first (default); asc: oldest first",
    )
    show = command(
        runs,
        "show",
        _cli_runs.runs_show,
        "show a run: status, model, usage, errors, required action and its steps",
    )
    show.add_argument("thread_id", metavar="THREAD")
    show.add_argument("run_id", metavar="RUN")
    cancel = command(
        runs,
        "cancel",
        _cli_runs.runs_cancel,
        "cancel a run in progress or waiting for tool outputs",
    )
    cancel.add_argument("thread_id", metavar="THREAD")
    cancel.add_argument("run_id", metavar="RUN")


def _run_commands(
    commands: Any, command: Callable[..., argparse.ArgumentParser]
) -> None:
    """The ``chat`` and ``demo`` commands, which run threads."""
    chat = command(
        commands,
        "chat",
        _cli_chat.chat,
        "chat on a thread; lines from stdin, replies streamed",
    )
    chat.add_argument("--thread", metavar="ID", help="resume this thread")
    chat.add_argument("--assistant", metavar="ID", help="new thread of this assistant")
    chat.add_argument(
        "--model",
        type=model_name,
        help=(
            "model of the new assistant (default "
            f"{ONLINE_MODEL}), or the new thread's override"
        ),
    )
    chat.add_argument("--instructions", help="instructions of the new assistant")
    chat.add_argument("--temperature", type=float, help="of the new assistant, 0 to 2")
    chat.add_argument(
        "--wait",
        type=seconds,
        default=_cli_chat.DEFAULT_WAIT,
        metavar="SECONDS",
        help=(
            "how long a line waits for the thread while another run holds it "
            f"(default {_cli_chat.DEFAULT_WAIT:g}); the wait is announced"
        ),
    )
    demo = command(
        commands,
        "demo",
        _cli_chat.demo,
        "run the whole flow once, offline unless a key is set",
    )
    demo.add_argument(
        "--model",
        type=model_name,
        help=f"the assistant's model (default {ONLINE_MODEL})",
    )


def _serve_command(
    commands: Any, command: Callable[..., argparse.ArgumentParser]
) -> None:
    """The ``serve`` command: the Assistants API over HTTP (the server extra)."""
    serve = command(
        commands,
        "serve",
        _serve,
        "serve the Assistants v2 API over HTTP (needs langchain-retro[server])",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=positive, default=8000, help="default 8000")
    serve.add_argument(
        "--workers", type=positive, default=1, help="worker processes (default 1)"
    )
    serve.add_argument(
        "--postgres-url",
        metavar="URL",
        help="a PostgreSQL database instead of the SQLite file",
    )
    serve.add_argument(
        "--postgres-schema", metavar="NAME", help="its schema (default public)"
    )
    serve.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help=(
            "a key clients send as Bearer token; OWNER:KEY to let keys share "
            "objects (repeat for several; default $LANGCHAIN_RETRO_API_KEYS, "
            "comma-separated)"
        ),
    )
    serve.add_argument(
        "--lease-ttl",
        type=seconds,
        metavar="SECONDS",
        help="how long a dead worker's run holds its thread (default 15)",
    )
    serve.add_argument(
        "--metadata-limits",
        choices=["openai", "off"],
        default=None,
        help=(
            "metadata limits of the /v1/retro routes AssistantsAPIStore uses: "
            "openai (16 keys, 64-character keys, 512-character values; the "
            "default) or off; the Assistants API routes keep OpenAI's"
        ),
    )
    serve.add_argument(
        "--no-retro-routes",
        action="store_true",
        help=(
            "serve the Assistants API without the /v1/retro routes (as other "
            "Assistants-compatible servers do)"
        ),
    )
    serve.add_argument(
        "--no-thread-listing",
        action="store_true",
        help="answer GET /v1/threads (this server's listing extension) 404, as OpenAI",
    )
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        default="info",
    )


def _serve(args: argparse.Namespace, store: BaseStore | None = None) -> int:
    from langchain_retro.server.serve import serve  # noqa: PLC0415

    return serve(args)


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
        "assistants", help="create, list, show, update and delete assistants"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    create = command(
        assistants, "create", _cli_records.assistants_create, "create an assistant"
    )
    _assistant_settings(create, create=True)
    _metadata_option(create, "a metadata entry (repeat for several)")
    listing = command(
        assistants, "list", _cli_records.assistants_list, "list assistants"
    )
    _listing_options(listing)
    show = command(assistants, "show", _cli_records.assistants_show, "show one")
    show.add_argument("assistant_id", metavar="ID")
    update = command(
        assistants,
        "update",
        _cli_records.assistants_update,
        "change an assistant's model, settings or metadata; runs use them next",
    )
    update.add_argument("assistant_id", metavar="ID")
    _assistant_settings(update, create=False)
    _update_options(update, ASSISTANT_UNSETTABLE)
    delete = command(
        assistants, "delete", _cli_records.assistants_delete, "delete an assistant"
    )
    delete.add_argument("assistant_id", metavar="ID")
    delete.add_argument(
        "--threads",
        choices=["refuse", "keep", "delete"],
        default="refuse",
        help="what to do with its threads (default: refuse if there are any)",
    )

    threads = commands.add_parser(
        "threads", help="create, list, show, update and delete threads"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    create = command(threads, "create", _cli_records.threads_create, "create a thread")
    create.add_argument("--assistant", required=True, metavar="ID")
    create.add_argument(
        "--model", type=model_name, help="override the assistant's model"
    )
    _metadata_option(create, "a metadata entry (repeat for several)")
    listing = command(
        threads, "list", _cli_records.threads_list, "list threads, newest first"
    )
    listing.add_argument("--assistant", metavar="ID", help="only this assistant's")
    _listing_options(listing)
    show = command(
        threads, "show", _cli_records.threads_show, "show a thread and its messages"
    )
    show.add_argument("thread_id", metavar="ID")
    show.add_argument(
        "--limit", type=positive, default=DEFAULT_LIMIT, help="newest messages shown"
    )
    update = command(
        threads,
        "update",
        _cli_records.threads_update,
        "change a thread's model override, assistant or metadata",
    )
    update.add_argument("thread_id", metavar="ID")
    update.add_argument(
        "--model", type=model_name, help="the thread's own model, over its assistant's"
    )
    update.add_argument("--assistant", metavar="ID", help="move it to this assistant")
    _update_options(update, THREAD_UNSETTABLE)
    delete = command(threads, "delete", _cli_records.threads_delete, "delete a thread")
    delete.add_argument("thread_id", metavar="ID")

    _runs_commands(commands, command)
    _run_commands(commands, command)
    _serve_command(commands, command)
    _cli_migrate.add_commands(commands, command)
    return parser


# --- entry point ---------------------------------------------------------------------


def _one_line(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors()
    )


def _error_line(exc: Exception, command: str) -> tuple[str, int]:
    """The one line printed for an error, and the exit status."""
    if isinstance(exc, UsageError):
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


def _check_global_options(args: argparse.Namespace) -> None:
    # --json on chat or demo would print text where a script expects JSON.
    if args.command == "serve" and (args.json or args.offline):
        raise UsageError(
            "--json and --offline do not apply to serve; its upstream model is "
            "OPENAI_BASE_URL / OPENAI_API_KEY"
        )
    if args.json and args.command in ("chat", "demo"):
        raise UsageError(
            f"--json applies to create, list, show, update and delete; {args.command} "
            "prints a transcript (use threads show ID --json afterwards)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: The arguments after the program name; ``sys.argv[1:]`` if ``None``.
    """
    args = build_parser().parse_args(argv)
    # Hints repeat the command as it was called; given argv, as the plain name.
    args.program = invoked_as(sys.argv[0]) if argv is None else [PROG]
    handler: Callable[[argparse.Namespace, BaseStore], int] = args.handler
    try:
        _check_global_options(args)
        if args.command == "serve":
            # The server opens its store in each worker (SQLite or PostgreSQL).
            return _serve(args)
        if args.command in _cli_migrate.COMMANDS:  # they open their own stores
            return int(args.handler(args))
        with SQLiteStore(database(args.db)) as store:
            return handler(args, store)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (`| head`): stop quietly, and keep the interpreter's final
        # flush of stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except (RetroError, ValidationError, UsageError) as exc:
        line, status = _error_line(exc, args.command)
        print(line, file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
