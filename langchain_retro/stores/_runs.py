"""Runs as a store keeps them: the row, its changes, and the pure rules over both.

A run is the Assistants API's Run object: one completion of a thread (or a chain of
them, when tools run inside it), with a status, its settings, errors and usage. A
store keeps a few columns it queries (id, thread, status, creation time, the lease
owner) and the rest as one JSON body; the functions here build, change and settle
that row, so every backend applies the same rules.

Statuses and how they move::

    in_progress ──► completed | failed | incomplete | requires_action
         │                                                  │
         └─(cancel)─► cancelling ──► cancelled  ◄─(cancel)──┘
    requires_action ──(tool results)──► in_progress
    queued | in_progress whose lease lapsed ──► expired
    cancelling whose lease lapsed ──► cancelled

A run in ``queued``, ``in_progress`` or ``cancelling`` holds its thread's lease;
`settle` reports it ``expired`` (or ``cancelled``) as soon as the lease is gone, on
every read, and stores write that status when another run takes the thread over.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langchain_retro.errors import CorruptDataError, RunStateError

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "ENDED_RUN_STATUSES",
    "END_STAMPS",
    "FunctionCall",
    "IncompleteDetails",
    "LastError",
    "NewRun",
    "RequiredAction",
    "RequiredToolCall",
    "RunLeaseState",
    "RunSaved",
    "RunStatus",
    "RunUpdate",
    "RunUsage",
    "StoredRun",
    "SubmitToolOutputs",
    "TruncationStrategy",
    "cancel_requested",
    "lapsed_status",
    "new_run_row",
    "resumed_run",
    "run_body",
    "run_from_row",
    "settle",
    "updated_run",
]

RunStatus = Literal[
    "queued",
    "in_progress",
    "requires_action",
    "cancelling",
    "cancelled",
    "failed",
    "completed",
    "incomplete",
    "expired",
]
"""A run's status, as the Assistants API named them."""

ACTIVE_RUN_STATUSES: frozenset[str] = frozenset({"queued", "in_progress", "cancelling"})
"""Statuses of a run that holds its thread's lease."""

END_STAMPS: dict[str, str] = {
    "completed": "completed_at",
    "failed": "failed_at",
    "cancelled": "cancelled_at",
}
"""The field a run ending in a status is stamped with, the time it ended."""

ENDED_RUN_STATUSES: frozenset[str] = frozenset(
    {"cancelled", "failed", "completed", "incomplete", "expired"}
)
"""Statuses a run never leaves."""

RunLeaseState = Literal["held", "cancelling", "lost"]
"""What renewing a run's lease found: still held, held but cancel was asked, or
gone (expired and taken by another run, or the thread deleted)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunUsage(_Frozen):
    """Tokens a run (or a thread's runs) used."""

    prompt_tokens: int = 0
    """Tokens sent to the model, over every call."""
    completion_tokens: int = 0
    """Tokens the model produced, over every call."""
    total_tokens: int = 0
    """Their sum."""

    def __add__(self, other: RunUsage) -> RunUsage:
        return RunUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class LastError(_Frozen):
    """Why a run failed."""

    code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]
    """The Assistants API's error code."""
    message: str
    """What went wrong, for a person."""


class IncompleteDetails(_Frozen):
    """Why a run ended ``incomplete``."""

    reason: str
    """``max_prompt_tokens``, ``max_completion_tokens`` or ``max_steps``."""


class FunctionCall(_Frozen):
    """The function a tool call asks for."""

    name: str
    """The function's name."""
    arguments: str
    """Its arguments, as JSON text."""


class RequiredToolCall(_Frozen):
    """A tool call whose result the run waits for."""

    id: str
    """The tool call's id; its result answers it with this ``tool_call_id``."""
    type: Literal["function"] = "function"
    """Always ``function``."""
    function: FunctionCall
    """The function and its arguments."""


class SubmitToolOutputs(_Frozen):
    """The calls to answer."""

    tool_calls: list[RequiredToolCall]
    """Every call of the run's last reply."""


class RequiredAction(_Frozen):
    """What a run in ``requires_action`` waits for: the results of its tool calls."""

    type: Literal["submit_tool_outputs"] = "submit_tool_outputs"
    """Always ``submit_tool_outputs``."""
    submit_tool_outputs: SubmitToolOutputs
    """The calls to answer."""


class TruncationStrategy(_Frozen):
    """How much of the thread a run sends: all that fits, or the last N messages."""

    type: Literal["auto", "last_messages"] = "auto"
    """``auto`` sends what fits; ``last_messages`` the newest ``last_messages``."""
    last_messages: int | None = Field(default=None, ge=1)
    """With ``last_messages``: how many."""


class _RunSettings(_Frozen):
    """The settings a run is made with; ``None`` means "from the assistant"."""

    model: str | None = None
    """The Chat Completions model."""
    instructions: str | None = None
    """The system instructions (the assistant's, unless the run overrides them)."""
    additional_instructions: str | None = None
    """Instructions sent after ``instructions`` in this run only."""
    tools: list[dict[str, Any]] = Field(default_factory=list)
    """The tools offered to the model, as OpenAI tool dicts."""
    temperature: float | None = None
    """Sampling temperature."""
    top_p: float | None = None
    """Nucleus sampling mass."""
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    """The token budget of the context sent."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """The most tokens the model may produce in one call."""
    truncation_strategy: TruncationStrategy | None = None
    """How much of the thread is sent."""
    tool_choice: str | dict[str, Any] | None = None
    """``none``, ``auto``, ``required`` or a named function."""
    parallel_tool_calls: bool | None = None
    """Whether the model may call several tools at once."""
    response_format: str | dict[str, Any] | None = None
    """``auto``, or a ``json_object`` / ``json_schema`` format."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """The run's free metadata."""


class NewRun(_RunSettings):
    """A run to create with `BaseStore.begin_run`."""

    id: str
    """The run's id (``run_...``)."""
    assistant_id: str | None = None
    """The assistant; ``None`` takes the thread's ``assistant_id`` metadata."""


class StoredRun(_RunSettings):
    """A run as a store holds it: the Assistants API's Run object."""

    id: str
    """The run's id (``run_...``)."""
    thread_id: str
    """The thread it runs on."""
    assistant_id: str | None = None
    """The assistant it runs with."""
    status: RunStatus
    """Where it is; see the module docstring."""
    created_at: int
    """When it was created, in Unix seconds."""
    started_at: int | None = None
    """When it last started (or continued) in progress."""
    completed_at: int | None = None
    """When it completed."""
    cancelled_at: int | None = None
    """When it was cancelled."""
    failed_at: int | None = None
    """When it failed."""
    expires_at: int | None = None
    """While it holds the thread's lease: when the lease lapses unless renewed."""
    last_error: LastError | None = None
    """Why it failed."""
    incomplete_details: IncompleteDetails | None = None
    """Why it ended incomplete."""
    required_action: RequiredAction | None = None
    """In ``requires_action``: the tool calls to answer."""
    usage: RunUsage | None = None
    """Tokens used so far; ``None`` before the first model call ends."""


class RunUpdate(_Frozen):
    """A change to a run, written by `BaseStore.finish_run` with its messages."""

    status: RunStatus
    """The new status: ``in_progress`` for a step (the lease is kept); any other
    status gives the thread's lease back."""
    usage: RunUsage | None = None
    """Tokens used since the last update, added to the run's and the thread's."""
    last_error: LastError | None = None
    """For ``failed``."""
    incomplete_details: IncompleteDetails | None = None
    """For ``incomplete``."""
    required_action: RequiredAction | None = None
    """For ``requires_action``."""
    model: str | None = None
    """The model the run used, when the caller resolved it; ``None`` keeps it."""
    instructions: str | None = None
    """The instructions it used; ``None`` keeps them."""
    tools: list[dict[str, Any]] | None = None
    """The tools it offered; ``None`` keeps them."""
    temperature: float | None = None
    """The temperature it used; ``None`` keeps it."""
    top_p: float | None = None
    """The top_p it used; ``None`` keeps it."""


class RunSaved(_Frozen):
    """What `BaseStore.finish_run` wrote."""

    messages: list[Any]
    """The stored messages (`StoredMessage`); none if the run had been cancelled."""
    run: StoredRun
    """The run as it now is."""


# --- the rules -----------------------------------------------------------------------


def new_run_row(
    new: NewRun, thread_id: str, thread_metadata: dict[str, str], now: int
) -> StoredRun:
    """The row of a run `begin_run` creates: ``in_progress`` from now on."""
    data = new.model_dump(exclude={"id", "assistant_id"})
    assistant_id = new.assistant_id or thread_metadata.get("assistant_id")
    return StoredRun(
        **data,
        id=new.id,
        thread_id=thread_id,
        assistant_id=assistant_id,
        status="in_progress",
        created_at=now,
        started_at=now,
    )


def resumed_run(run: StoredRun, now: int) -> StoredRun:
    """A ``requires_action`` run continued by its tool results: in progress again.

    Its ``required_action`` is kept until `updated_run` replaces it.

    Raises:
        RunStateError: If the run is not in ``requires_action``.
    """
    if run.status != "requires_action":
        raise RunStateError(
            f"Run {run.id!r} on thread {run.thread_id!r} is {run.status}, so tool "
            "results cannot continue it: only a run in requires_action takes them.",
            thread_id=run.thread_id,
            run_id=run.id,
            status=run.status,
        )
    # required_action stays until the run's next write, so the caller can check the
    # results against it (and put it back if they do not fit).
    return run.model_copy(update={"status": "in_progress", "started_at": now})


def updated_run(run: StoredRun, update: RunUpdate, now: int) -> StoredRun:
    """``run`` after ``update``: its status, stamps, usage and resolved settings."""
    changes: dict[str, Any] = {
        "status": update.status,
        "required_action": update.required_action,
        "last_error": update.last_error or run.last_error,
        "incomplete_details": update.incomplete_details or run.incomplete_details,
    }
    stamp = END_STAMPS.get(update.status)
    if stamp is not None:
        changes[stamp] = now
    if update.status not in ACTIVE_RUN_STATUSES:
        changes["expires_at"] = None
    if update.usage is not None:
        changes["usage"] = (run.usage or RunUsage()) + update.usage
    for name in ("model", "instructions", "tools", "temperature", "top_p"):
        value = getattr(update, name)
        if value is not None:
            changes[name] = value
    return run.model_copy(update=changes)


def lapsed_status(status: str) -> RunStatus | None:
    """The status of a run whose lease lapsed, or ``None`` if it holds none."""
    if status == "cancelling":
        return "cancelled"
    if status in ACTIVE_RUN_STATUSES:
        return "expired"
    return None


def settle(
    run: StoredRun, *, held: bool, lease_expires_at: float | None, now: float
) -> StoredRun:
    """A run as read: an active run whose lease is gone is expired (or cancelled).

    Args:
        run: The stored row.
        held: Whether the thread's lease is held by this run's lease owner.
        lease_expires_at: When that lease lapses (Unix seconds), if held.
        now: The store's clock, in Unix seconds.
    """
    lapsed = lapsed_status(run.status)
    if lapsed is None:
        return run
    if held and lease_expires_at is not None and lease_expires_at > now:
        return run.model_copy(update={"expires_at": int(lease_expires_at)})
    update: dict[str, Any] = {"status": lapsed, "expires_at": None}
    if lapsed == "cancelled":
        update["cancelled_at"] = int(now)
    return run.model_copy(update=update)


def cancel_requested(run: StoredRun, now: int) -> StoredRun:
    """``run`` (already settled) after a cancel: ``cancelling``, or ``cancelled``.

    A run in progress becomes ``cancelling`` (its process stops it and makes it
    ``cancelled``); a run waiting in ``requires_action`` is ``cancelled`` at once.

    Raises:
        RunStateError: If the run already ended.
    """
    if run.status in ("queued", "in_progress"):
        return run.model_copy(update={"status": "cancelling"})
    if run.status == "requires_action":
        return run.model_copy(
            update={"status": "cancelled", "cancelled_at": now, "required_action": None}
        )
    if run.status == "cancelling":
        return run
    raise RunStateError(
        f"Cannot cancel run {run.id!r} on thread {run.thread_id!r}: it is already "
        f"{run.status}. Only a queued, in_progress or requires_action run can be "
        "cancelled.",
        thread_id=run.thread_id,
        run_id=run.id,
        status=run.status,
    )


_ROW_FIELDS = frozenset({"id", "thread_id", "status", "created_at"})


def run_body(run: StoredRun) -> str:
    """The JSON body a store keeps beside the run's id, thread, status and time."""
    return json.dumps(
        run.model_dump(mode="json", exclude=set(_ROW_FIELDS), exclude_none=True),
        ensure_ascii=False,
        separators=(",", ":"),
    )


def run_from_row(
    run_id: str,
    thread_id: str,
    status: str,
    created_at: int,
    body: str | dict[str, Any],
) -> StoredRun:
    """Rebuild a run from its columns and body.

    Raises:
        CorruptDataError: If the row no longer rebuilds.
    """
    try:
        data = json.loads(body) if isinstance(body, str) else dict(body)
        return StoredRun(
            **data,
            id=run_id,
            thread_id=thread_id,
            status=status,  # type: ignore[arg-type]
            created_at=created_at,
        )
    except (ValueError, TypeError, ValidationError) as exc:
        raise CorruptDataError(
            f"Run {run_id!r} of thread {thread_id!r} is stored in a form that no "
            f"longer rebuilds ({type(exc).__name__}: {str(exc)[:200]}). Delete the "
            "run's thread or repair its row.",
            object_id=run_id,
            thread_id=thread_id,
        ) from exc
