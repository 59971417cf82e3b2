"""The ``assistants`` and ``threads`` commands: create, list, show, update, delete."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from langchain_retro._cli_common import (
    DEFAULT_LIMIT,
    UsageError,
    assistant_json,
    command_line,
    message_json,
    metadata,
    page_json,
    pairs,
    print_json,
    record_fields,
    table,
    text_of,
    thread_json,
    when,
)
from langchain_retro._cli_runs import usage_text
from langchain_retro._planning import pending_count
from langchain_retro.errors import MessageNotFoundError
from langchain_retro.records import (
    Assistant,
    BaseAssistant,
    BaseMessage,
    BaseThread,
    ChatCompletionThread,
    Page,
)

if TYPE_CHECKING:
    from langchain_retro.stores.base import BaseStore

ASSISTANT_SETTINGS = {
    "model": "model",
    "name": "name",
    "description": "description",
    "instructions": "instructions",
    "temperature": "temperature",
    "top-p": "top_p",
}
"""An assistant's settings: option name (``--top-p``) to field name (``top_p``)."""
ASSISTANT_UNSETTABLE = [option for option in ASSISTANT_SETTINGS if option != "model"]
THREAD_UNSETTABLE = ["model"]


def _more_hint(args: argparse.Namespace, page: Page[Any], *command: str) -> None:
    """Print the command for the next page: same filters, limit and database."""
    if not page.has_more or page.last_id is None:
        return
    words = list(command)
    if getattr(args, "assistant", None) is not None:
        words += ["--assistant", args.assistant]
    for key, value in args.metadata or []:
        words += ["--metadata", f"{key}={value}"]
    if args.limit != DEFAULT_LIMIT:
        words += ["--limit", str(args.limit)]
    words += ["--after", page.last_id]
    print(f"(more: {command_line(args, *words)})")


def _metadata_changes(args: argparse.Namespace) -> dict[str, str | None]:
    """``--metadata k=v`` to set and ``--delete-metadata k`` to remove, checked."""
    changes: dict[str, str | None] = dict(metadata(args.metadata))
    for key in args.delete_metadata or []:
        if key in changes:
            raise UsageError(
                f"--metadata {key}=... and --delete-metadata {key} contradict each "
                "other; give one"
            )
        changes[key] = None
    return changes


def _settings(
    args: argparse.Namespace, options: dict[str, str], unsettable: list[str]
) -> dict[str, Any]:
    """The fields the options set, and ``None`` for each ``--unset``, checked."""
    changes = {
        field: getattr(args, field)
        for field in options.values()
        if getattr(args, field) is not None
    }
    for option in args.unset or []:
        field = options[option]
        if field in changes:
            raise UsageError(
                f"--{option} and --unset {option} contradict each other; give one"
            )
        changes[field] = None
    if not changes and not (args.metadata or args.delete_metadata):
        given = ", ".join(f"--{option}" for option in options)
        raise UsageError(
            f"nothing to change: give at least one of {given}, --unset "
            f"{'|'.join(unsettable)}, --metadata KEY=VALUE or --delete-metadata KEY"
        )
    return changes


def _print_changes(kind: str, before: Any, after: Any, fields: list[str]) -> None:
    print(f"updated {kind} {after.id}")
    for field in fields:
        old, new = getattr(before, field), getattr(after, field)
        print(
            f"  {field}: {'-' if old is None else old} -> {'-' if new is None else new}"
        )
    if before.metadata != after.metadata:
        print(f"  metadata: {pairs(before.metadata)} -> {pairs(after.metadata)}")


# --- assistants ----------------------------------------------------------------------


def assistants_create(args: argparse.Namespace, store: BaseStore) -> int:
    """``assistants create``."""
    fields = {
        field: getattr(args, field)
        for field in ASSISTANT_SETTINGS.values()
        if getattr(args, field) is not None
    }
    assistant = Assistant.create(store, **fields, metadata=metadata(args.metadata))
    if args.json:
        print_json(assistant_json(assistant))
    else:
        print(f"created assistant {assistant.id} (model {assistant.model})")
    return 0


def assistants_list(args: argparse.Namespace, store: BaseStore) -> int:
    """``assistants list``."""
    page = BaseAssistant.list(
        store, metadata=metadata(args.metadata), limit=args.limit, after=args.after
    )
    if args.json:
        print_json(page_json(page, assistant_json))
        return 0
    if not page.data:
        print("no assistants")
        return 0
    table(
        ["ID", "CREATED (UTC)", "MODEL", "NAME"],
        [[a.id, when(a.created_at), a.model, a.name or "-"] for a in page.data],
    )
    _more_hint(args, page, "assistants", "list")
    return 0


def assistants_show(args: argparse.Namespace, store: BaseStore) -> int:
    """``assistants show``."""
    assistant = BaseAssistant.retrieve(store, args.assistant_id)
    if args.json:
        print_json(assistant_json(assistant))
        return 0
    print(f"{'assistant':<14}{assistant.id}")
    print(f"{'created':<14}{when(assistant.created_at)} UTC")
    for name, value in record_fields(assistant).items():
        print(f"{name:<14}{'-' if value is None else value}")
    print(f"{'metadata':<14}{pairs(assistant.metadata)}")
    return 0


def assistants_update(args: argparse.Namespace, store: BaseStore) -> int:
    """``assistants update``: change settings, unset them, edit metadata."""
    changes = _settings(args, ASSISTANT_SETTINGS, ASSISTANT_UNSETTABLE)
    free = _metadata_changes(args)
    assistant = BaseAssistant.retrieve(store, args.assistant_id)
    updated = assistant.update(store, **changes, **({"metadata": free} if free else {}))
    if args.json:
        print_json(assistant_json(updated))
    else:
        _print_changes("assistant", assistant, updated, list(changes))
    return 0


def assistants_delete(args: argparse.Namespace, store: BaseStore) -> int:
    """``assistants delete``."""
    assistant = BaseAssistant.retrieve(store, args.assistant_id)
    deleted = assistant.delete(store, threads=args.threads)
    if args.json:
        print_json(
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


def thread_status(
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
        # Only what follows the hwm message can be pending: read no more.
        after = store.list_messages(thread.id, after=hwm)
        return hwm, total, pending_count(after, None, complete=True)
    except MessageNotFoundError:
        # The hwm message was deleted: the runner's rule decides over the whole thread.
        rows = store.list_messages(thread.id)
        return hwm, total, pending_count(rows, hwm, complete=True)


def threads_create(args: argparse.Namespace, store: BaseStore) -> int:
    """``threads create``."""
    assistant = BaseAssistant.retrieve(store, args.assistant)
    thread = ChatCompletionThread.create(
        store,
        assistant_id=assistant.id,
        chat_completion_model=args.model,
        metadata=metadata(args.metadata),
    )
    if args.json:
        print_json(thread_json(thread))
    else:
        print(f"created thread {thread.id} (assistant {assistant.id})")
    return 0


def threads_list(args: argparse.Namespace, store: BaseStore) -> int:
    """``threads list``."""
    filters = metadata(args.metadata)
    if args.assistant is not None:
        filters["assistant_id"] = args.assistant
    page = BaseThread.list(store, metadata=filters, limit=args.limit, after=args.after)
    if args.json:
        print_json(page_json(page, thread_json))
        return 0
    if not page.data:
        print("no threads")
        return 0
    rows = []
    for thread in page.data:
        _, total, _ = thread_status(store, thread)
        rows.append(
            [
                thread.id,
                when(thread.created_at),
                str(getattr(thread, "assistant_id", None) or "-"),
                str(total),
                pairs(thread.metadata),
            ]
        )
    table(["ID", "CREATED (UTC)", "ASSISTANT", "MESSAGES", "METADATA"], rows)
    _more_hint(args, page, "threads", "list")
    return 0


def threads_show(args: argparse.Namespace, store: BaseStore) -> int:
    """``threads show``: fields, hwm, token usage and the newest messages."""
    thread = BaseThread.retrieve(store, args.thread_id)
    newest = BaseMessage.list(store, thread.id, order="desc", limit=args.limit)
    messages = list(reversed(newest.data))
    usage = store.get_thread_usage(thread.id)
    if args.json:
        print_json(
            {
                **thread_json(thread),
                "usage": usage.model_dump(mode="json"),
                "messages": [message_json(m) for m in messages],
                "has_more_messages": newest.has_more,
            }
        )
        return 0
    hwm, total, pending = thread_status(store, thread)
    print(f"{'thread':<22}{thread.id}")
    print(f"{'created':<22}{when(thread.created_at)} UTC")
    print(f"{'class':<22}{type(thread).record_class}")
    for name, value in record_fields(thread).items():
        print(f"{name:<22}{'-' if value is None else value}")
    print(f"{'metadata':<22}{pairs(thread.metadata)}")
    waiting = "" if pending is None else f" ({pending} pending: after the hwm)"
    print(f"{'messages':<22}{total}{waiting}")
    print(f"{'tokens (all runs)':<22}{usage_text(usage)}")
    if not messages:
        return 0
    shown = f"the newest {len(messages)}" if newest.has_more else "all"
    print(f"\n{shown} messages, oldest first:")
    for message in messages:
        mark = "  <- hwm" if message.id == hwm else ""
        head = f"  {message.id}  {message.role:<9}  "
        text = text_of(message.message).replace("\n", "\n" + " " * len(head))
        print(f"{head}{text}{mark}")
    return 0


def threads_update(args: argparse.Namespace, store: BaseStore) -> int:
    """``threads update``: the model override, the assistant, metadata."""
    changes: dict[str, Any] = {}
    if args.model is not None:
        changes["chat_completion_model"] = args.model
    if "model" in (args.unset or []):
        if args.model is not None:
            raise UsageError(
                "--model and --unset model contradict each other; give one"
            )
        changes["chat_completion_model"] = None
    if args.assistant is not None:
        changes["assistant_id"] = args.assistant
    free = _metadata_changes(args)
    if not changes and not free:
        raise UsageError(
            "nothing to change: give at least one of --model, --unset model, "
            "--assistant, --metadata KEY=VALUE or --delete-metadata KEY"
        )
    thread = BaseThread.retrieve(store, args.thread_id)
    if args.assistant is not None:
        BaseAssistant.retrieve(store, args.assistant)  # it must exist
    if changes and not isinstance(thread, ChatCompletionThread):
        raise UsageError(
            f"thread {thread.id} is a {type(thread).record_class}, not a run thread: "
            "it has no model or assistant to change"
        )
    updated = thread.update(store, **changes, **({"metadata": free} if free else {}))
    if args.json:
        print_json(thread_json(updated))
    else:
        _print_changes("thread", thread, updated, list(changes))
    return 0


def threads_delete(args: argparse.Namespace, store: BaseStore) -> int:
    """``threads delete``."""
    store.delete_thread(args.thread_id)
    if args.json:
        print_json({"id": args.thread_id, "object": "thread.deleted", "deleted": True})
    else:
        print(f"deleted thread {args.thread_id}")
    return 0
