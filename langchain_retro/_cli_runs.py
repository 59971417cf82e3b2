"""The ``runs`` commands: list a thread's runs, show one with its steps, cancel one."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from langchain_retro._cli_common import (
    DEFAULT_LIMIT,
    command_line,
    page_json,
    print_json,
    table,
    when,
)
from langchain_retro.runs import Run, RunStep, ToolCallsDetails

if TYPE_CHECKING:
    from langchain_retro.stores.base import BaseStore, RunUsage

_STAMPS = ("started_at", "expires_at", "completed_at", "cancelled_at", "failed_at")
"""A run's times besides its creation, in the order they come."""


def usage_text(usage: RunUsage | None) -> str:
    """Tokens as ``total N (prompt P, completion C)``, or ``-`` if none reported."""
    if usage is None:
        return "-"
    return (
        f"total {usage.total_tokens} (prompt {usage.prompt_tokens}, "
        f"completion {usage.completion_tokens})"
    )


def run_json(run: Run) -> dict[str, Any]:
    """A run as the Assistants API's JSON object."""
    return run.model_dump(mode="json")


def _step_text(step: RunStep) -> list[str]:
    """A step as lines: its head, then one line per tool call."""
    head = f"  {step.id}  {step.type:<16}  {step.status:<11}"
    details = step.step_details
    if not isinstance(details, ToolCallsDetails):
        return [f"{head}  message {details.message_creation.message_id}"]
    lines = [head.rstrip()]
    for call in details.tool_calls:
        function = call.function
        output = "(no output)" if function.output is None else function.output
        lines.append(
            f"      {call.id}  {function.name}({function.arguments}) -> {output}"
        )
    return lines


def runs_list(args: argparse.Namespace, store: BaseStore) -> int:
    """``runs list``: a thread's runs, newest first unless ``--order asc``."""
    page = Run.list(
        store, args.thread_id, limit=args.limit, after=args.after, order=args.order
    )
    if args.json:
        print_json(page_json(page, run_json))
        return 0
    if not page.data:
        print(f"no runs on thread {args.thread_id}")
        return 0
    table(
        ["ID", "CREATED (UTC)", "STATUS", "MODEL", "TOKENS"],
        [
            [
                run.id,
                when(run.created_at),
                run.status,
                run.model or "-",
                "-" if run.usage is None else str(run.usage.total_tokens),
            ]
            for run in page.data
        ],
    )
    if page.has_more and page.last_id is not None:
        words = ["runs", "list", args.thread_id]
        if args.order != "desc":
            words += ["--order", args.order]
        if args.limit != DEFAULT_LIMIT:
            words += ["--limit", str(args.limit)]
        words += ["--after", page.last_id]
        print(f"(more: {command_line(args, *words)})")
    return 0


def runs_show(args: argparse.Namespace, store: BaseStore) -> int:
    """``runs show``: the run's status, settings, errors, usage and steps."""
    run = Run.retrieve(store, args.thread_id, args.run_id)
    steps = run.steps(store)
    if args.json:
        print_json(
            {**run_json(run), "steps": [s.model_dump(mode="json") for s in steps]}
        )
        return 0
    print(f"{'run':<20}{run.id}")
    print(f"{'thread':<20}{run.thread_id}")
    print(f"{'status':<20}{run.status}")
    print(f"{'assistant':<20}{run.assistant_id or '-'}")
    print(f"{'model':<20}{run.model or '-'}")
    print(f"{'created':<20}{when(run.created_at)} UTC")
    for name in _STAMPS:
        value = getattr(run, name)
        if value is not None:
            print(f"{name.removesuffix('_at'):<20}{when(value)} UTC")
    print(f"{'usage':<20}{usage_text(run.usage)}")
    error = run.last_error
    reason = "-" if error is None else f"{error.code}: {error.message}"
    print(f"{'last_error':<20}{reason}")
    incomplete = run.incomplete_details
    print(
        f"{'incomplete_details':<20}{'-' if incomplete is None else incomplete.reason}"
    )
    action = run.required_action
    if action is None:
        print(f"{'required_action':<20}-")
    else:
        print(f"{'required_action':<20}submit_tool_outputs for:")
        for call in action.submit_tool_outputs.tool_calls:
            print(f"  {call.id}  {call.function.name}({call.function.arguments})")
    if not steps:
        print("steps               -")
        return 0
    print(f"\n{len(steps)} step(s), in order:")
    for step in steps:
        for line in _step_text(step):
            print(line)
    return 0


def runs_cancel(args: argparse.Namespace, store: BaseStore) -> int:
    """``runs cancel``: ``cancelling`` while its process stops it, or ``cancelled``."""
    run = Run.cancel(store, args.thread_id, args.run_id)
    if args.json:
        print_json(run_json(run))
    elif run.status == "cancelling":
        print(f"cancelling run {run.id}: its process stops it at its next step")
    else:
        print(f"cancelled run {run.id}")
    return 0
