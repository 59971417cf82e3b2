"""Pure steps of a run: the conversation order, what is pending, what is sent.

Nothing here does I/O. `ThreadRunner` feeds these functions the rows a store read
and acts on what they return.

Two orders:

* **append order** is the order a store keeps and lists (``list_messages``, cursors).
  What is pending is decided in it: the messages appended after ``hwm`` that are not
  the assistant's, so a message posted while a run was in flight is answered by the
  next run;
* **conversation order** puts each stored reply right after the message it answered
  (its ``reply_to``), before whatever was posted while its run was in flight. Every
  run's context is sent in conversation order (`conversation_order`).

Message ids may be chosen by callers, so nothing here compares ids to find order:
positions in the rows do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import pydantic_core
from langchain_core.messages import (
    AIMessage,
    SystemMessage,
    ToolMessage,
    trim_messages,
)
from langchain_core.messages import BaseMessage as LCBaseMessage

from langchain_retro import _messages
from langchain_retro._metadata import MetadataPatch
from langchain_retro.errors import NothingToRunError
from langchain_retro.records import BaseAssistant, ChatCompletionThread

__all__ = [
    "AI_ROLE",
    "CHAT_COMPLETION_PARAMETERS",
    "HWM_KEY",
    "Plan",
    "Row",
    "conversation_order",
    "hwm_patch",
    "model_kwargs",
    "pending_count",
    "pending_start",
    "plan_run",
    "retried",
]

AI_ROLE = "assistant"
_TOOL_ROLE = "tool"

HWM_KEY = "hwm"
"""The metadata key of `ChatCompletionThread.hwm`: the last message a run answered."""

CHAT_COMPLETION_PARAMETERS: frozenset[str] = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "parallel_tool_calls",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "tool_choice",
        "top_logprobs",
        "user",
        "verbosity",
    }
)
"""Typed assistant fields with one of these names are sent as that request parameter.

A field left at ``None`` is not sent. Other typed fields are data, never sent.
"""


class Row(Protocol):
    """What planning reads of a stored message: a `MessageRow` or a `StoredMessage`."""

    @property
    def id(self) -> str:
        """The message's id."""

    @property
    def role(self) -> str:
        """Its Assistants-style role."""

    @property
    def payload(self) -> str:
        """The LangChain message as JSON text."""

    @property
    def reply_to(self) -> str | None:
        """For a reply: the id of the last message it answered."""

    @property
    def thread_id(self) -> str:
        """Its thread."""


R = TypeVar("R", bound=Row)


def conversation_order(rows: Sequence[R]) -> Sequence[R]:
    """Rows in conversation order: each reply right after the message it answered.

    A row whose ``reply_to`` names an earlier row moves to just after it (after the
    replies to it that came before, and theirs); if that reply calls tools, the tool
    results answering it move along, right after it. A reply whose ``reply_to`` is
    not in ``rows`` (older than them, or deleted) keeps its place. Everything else
    keeps append order. O(len(rows)): one pass, and no more work, when every reply
    directly follows the message it answered.

    Args:
        rows: A thread's messages (or some of its newest ones) in append order.

    Returns:
        The same rows, in conversation order: ``rows`` itself if already in it.
    """
    previous: str | None = None
    for row in rows:
        reply_to = row.reply_to
        if reply_to is not None and reply_to != previous and previous is not None:
            return _reordered(rows)
        previous = row.id
    return rows


def _call_ids(payload: str) -> list[str]:
    """The tool call ids of a stored assistant message (none if it calls no tool)."""
    if '"tool_calls"' not in payload:  # most replies: skip parsing
        return []
    try:
        calls = pydantic_core.from_json(payload).get("tool_calls") or []
        return [call["id"] for call in calls if isinstance(call.get("id"), str)]
    except (ValueError, AttributeError, TypeError):
        return []  # a row that does not rebuild fails later, with its id


def _answered_call(payload: str) -> str | None:
    """The tool call id a stored tool message answers."""
    try:
        value = pydantic_core.from_json(payload).get("tool_call_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _reordered(rows: Sequence[R]) -> list[R]:
    position = {row.id: index for index, row in enumerate(rows)}
    after: dict[int, list[int]] = {}  # row -> the rows placed right after it
    moved: set[int] = set()
    calls: dict[str, int] = {}  # tool call id -> the moved reply that made it
    for index, row in enumerate(rows):
        target = position.get(row.reply_to) if row.reply_to is not None else None
        if target is not None and target < index:
            after.setdefault(target, []).append(index)
            moved.add(index)
            if target != index - 1:  # out of place: its tool results come along
                calls.update(dict.fromkeys(_call_ids(row.payload), index))
        elif calls and row.role == _TOOL_ROLE:
            call = calls.get(_answered_call(row.payload) or "")
            if call is not None and call < index:
                after.setdefault(call, []).append(index)
                moved.add(index)
    out: list[R] = []
    for index in range(len(rows)):
        if index in moved:
            continue
        stack = [index]
        while stack:  # what is placed after a placed row is placed too, iteratively
            current = stack.pop()
            out.append(rows[current])
            stack.extend(reversed(after.get(current, ())))
    return out


def pending_start(rows: Sequence[Row], hwm: str | None, complete: bool) -> int:
    """The position of the first row appended after ``hwm``.

    Args:
        rows: The thread's newest messages, in append order.
        hwm: The id of the last message answered, if any.
        complete: Whether ``rows`` is the whole thread.

    Returns:
        The position just after the ``hwm`` message. If ``rows`` do not hold it and
        are the whole thread, that message was deleted: the thread was answered up
        to its last assistant message, so the position just after that one (0 if
        there is none). If they are not the whole thread, the ``hwm`` message is
        taken to be older than them: 0.
    """
    if hwm is None:
        return 0
    for index in range(len(rows) - 1, -1, -1):
        if rows[index].id == hwm:
            return index + 1
    if complete:
        for index in range(len(rows) - 1, -1, -1):
            if rows[index].role == AI_ROLE:
                return index + 1
    return 0


def pending_count(rows: Sequence[Row], hwm: str | None, complete: bool) -> int:
    """How many of ``rows`` the next run answers: after ``hwm``, not the assistant's.

    Args:
        rows: The thread's newest messages, in append order.
        hwm: The id of the last message answered, if any.
        complete: Whether ``rows`` is the whole thread.
    """
    start = pending_start(rows, hwm, complete)
    return sum(1 for row in rows[start:] if row.role != AI_ROLE)


def hwm_patch(message_id: str) -> MetadataPatch:
    """The thread patch that moves ``hwm`` to ``message_id``."""
    return MetadataPatch(set={HWM_KEY: message_id}, clear_fields=frozenset({HWM_KEY}))


def retried(
    rows: Sequence[Row],
    appended: Sequence[Row],
    hwm: str | None,
    complete: bool,
) -> bool | None:
    """Whether the input just appended repeats the unanswered messages before it.

    That is a retried run (after a failed model call, say), whose copy is dropped.

    Args:
        rows: The thread's newest messages in append order, ending with
            ``appended``.
        appended: The run's input, as just stored.
        hwm: The thread's ``hwm``.
        complete: Whether ``rows`` is the whole thread.

    Returns:
        Whether it is a retry; ``None`` if ``rows`` do not reach back far enough to
        tell.
    """
    count = len(appended)
    start = len(rows) - count
    if start < 0 or rows[start].id != appended[0].id:
        first = appended[0].id
        start = next((i for i, row in enumerate(rows) if row.id == first), -1)
    if start < count:
        return None if not complete else False
    before = rows[start - count : start]
    if [row.payload for row in before] != [m.payload for m in appended]:
        return False
    return pending_start(rows[:start], hwm, complete) <= start - count


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run sends, and where its high-water mark moves."""

    messages: list[LCBaseMessage]
    """The messages to send: system messages, then the context."""
    kwargs: dict[str, Any]
    """Per-call model parameters."""
    snapshot: str
    """The id of the last pending message: the new ``hwm``, and the reply's
    ``reply_to``."""
    assistant_id: str
    """The assistant the run answers as."""
    over_budget: bool = False
    """Whether what must be sent (the newest message, or the tool turn being
    answered) alone goes over ``max_tokens_context``: it is sent anyway."""


def _without_orphans(messages: Sequence[LCBaseMessage]) -> list[LCBaseMessage]:
    """Drop tool results whose tool-call message is not before them in the context.

    The API refuses such results, and they mean nothing without their call.
    """
    start = 0
    while start < len(messages) and isinstance(messages[start], ToolMessage):
        start += 1
    calls: set[str] = set()
    answered: set[str] = set()
    kept: list[LCBaseMessage] = []
    for message in messages[start:]:
        # Messages rebuilt from the store are of the exact allowed classes.
        kind = type(message)
        if kind is ToolMessage:
            call_id = cast("ToolMessage", message).tool_call_id
            if call_id not in calls:
                continue
            answered.add(call_id)
        elif kind is AIMessage:
            tool_calls = cast("AIMessage", message).tool_calls
            if tool_calls:
                calls.update(call["id"] for call in tool_calls if call["id"])
        kept.append(message)
    if len(answered) < len(calls):
        return _without_unanswered(kept, answered)
    return kept


def _without_unanswered(
    messages: list[LCBaseMessage], answered: set[str]
) -> list[LCBaseMessage]:
    """Strip the tool calls no result answers (their run was cancelled, say).

    The API refuses a tool-call message whose calls are not all answered; the
    message's text, if any, is kept.
    """
    kept: list[LCBaseMessage] = []
    for message in messages:
        if type(message) is AIMessage:
            ai = message
            calls = [call for call in ai.tool_calls if call["id"] in answered]
            if len(calls) < len(ai.tool_calls):
                if not calls and not ai.content:
                    continue
                # ChatOpenAI sends additional_kwargs' raw calls when tool_calls is
                # empty: drop them too.
                extra = {
                    k: v for k, v in ai.additional_kwargs.items() if k != "tool_calls"
                }
                message = ai.model_copy(  # noqa: PLW2901
                    update={"tool_calls": calls, "additional_kwargs": extra}
                )
        kept.append(message)
    return kept


def _fit_budget(
    conversation: list[LCBaseMessage],
    system: list[LCBaseMessage],
    budget: int,
    counter: Callable[[list[LCBaseMessage]], int],
    required: int,
) -> list[LCBaseMessage]:
    """The newest messages that fit the budget, and never fewer than ``required``.

    The budget is best effort: the newest message, and the tool calls being answered
    with all their results, are always sent.
    """
    remaining = budget - (counter(system) if system else 0)
    kept: list[LCBaseMessage] = []
    if remaining > 0:
        trimmed = trim_messages(
            conversation,
            max_tokens=remaining,
            token_counter=counter,
            strategy="last",
            allow_partial=False,
        )
        kept = _without_orphans(trimmed)
    if len(kept) >= required:
        return kept
    return conversation[len(conversation) - required :]


def _required_start(conversation: Sequence[LCBaseMessage], turn_id: str | None) -> int:
    """Where the part of the context that is always sent starts.

    That is the newest message that is not a tool result, or the tool-call message
    ``turn_id`` whose pending results are answered, whichever comes first.
    """
    start = max(
        (
            i
            for i in range(len(conversation) - 1, -1, -1)
            if not isinstance(conversation[i], ToolMessage)
        ),
        default=0,
    )
    if turn_id is not None:
        for index in range(start, -1, -1):
            if conversation[index].id == turn_id:
                return index
    return start


def _open_turn_start(ordered: Sequence[Row]) -> int:
    """Where the tool turn being answered starts in ``ordered``: its call message.

    Tool results after the last assistant message are answered by this run; the
    turn starts at that message, which made the calls. Returns the last position if
    no tool result follows the last assistant message, and -1 if tool results reach
    back to the first row with no assistant message (the call is older than the
    rows).
    """
    last = len(ordered) - 1
    seen_results = False
    for position in range(last, -1, -1):
        role = ordered[position].role
        if role == AI_ROLE:
            return position if seen_results else last
        seen_results = seen_results or role == _TOOL_ROLE
    return -1 if seen_results else last


def _with_replies(rows: Sequence[R], last: int) -> Sequence[R]:
    """``rows[:last + 1]`` and the later replies to those rows.

    A reply stored after the snapshot (it answered an earlier message while this one
    was posted) belongs in the context, right after what it answered.
    """
    chosen = rows[: last + 1]
    later = [row for row in rows[last + 1 :] if row.reply_to is not None]
    if not later:
        return chosen
    ids = {row.id for row in chosen}
    return [*chosen, *(row for row in later if row.reply_to in ids)]


def model_kwargs(
    thread: ChatCompletionThread, assistant: BaseAssistant
) -> dict[str, Any]:
    """The per-call model parameters of a run on ``thread`` by ``assistant``."""
    kwargs: dict[str, Any] = {"model": thread.chat_completion_model or assistant.model}
    if assistant.temperature is not None:
        kwargs["temperature"] = assistant.temperature
    if assistant.top_p is not None:
        kwargs["top_p"] = assistant.top_p
    fields = type(assistant).model_fields
    for name in sorted(CHAT_COMPLETION_PARAMETERS.intersection(fields)):
        value = getattr(assistant, name)
        if value is not None:
            kwargs[name] = value
    return kwargs


def rebuild_all(rows: Sequence[Row]) -> list[LCBaseMessage]:
    """Rows rebuilt into messages, each afresh."""
    return [
        _messages.from_payload(row.payload, row.id, thread_id=row.thread_id)
        for row in rows
    ]


def _last_asked(rows: Sequence[Row], start: int = 0) -> int | None:
    """The index of the newest row from ``start`` on that is not the assistant's."""
    return next(
        (i for i in range(len(rows) - 1, start - 1, -1) if rows[i].role != AI_ROLE),
        None,
    )


def plan_run(
    *,
    thread: ChatCompletionThread,
    assistant: BaseAssistant,
    rows: Sequence[Row],
    complete: bool,
    window: int | None,
    instructions: Sequence[LCBaseMessage] = (),
    max_tokens_context: int | None = None,
    token_counter: Callable[[list[LCBaseMessage]], int] | None = None,
    rebuild: Callable[[Sequence[Row]], list[LCBaseMessage]] | None = None,
    again: bool = False,
) -> Plan | None:
    """Plan a run from the newest messages of a thread.

    Args:
        thread: The thread, as read under the run lease.
        assistant: The thread's assistant.
        rows: The thread's newest messages, in append order.
        complete: Whether ``rows`` is the whole thread.
        window: How many messages the context holds at most, the newest in
            conversation order (more when the tool turn being answered needs more);
            ``None`` for all. ``rows`` should reach a few messages further back, so
            that replies stored late find what they answered.
        instructions: The run's additional instructions, sent after the assistant's.
        max_tokens_context: An optional token budget for system messages + context.
        token_counter: Counts the tokens of a list of messages (required with
            ``max_tokens_context``).
        rebuild: Turns stored rows into messages (a `MessageCache`'s ``rebuild``);
            by default each row is rebuilt afresh.
        again: With nothing waiting for an answer, answer the newest message that
            is not the assistant's once more, as the Assistants API did for a run
            on a thread whose last message was a reply, instead of raising.

    Returns:
        The plan, or ``None`` if older messages must be read first.

    Raises:
        NothingToRunError: If no message waits for an answer.
    """
    start = pending_start(rows, thread.hwm, complete)
    last = _last_asked(rows, start)
    if last is None and again:
        last = _last_asked(rows)
        if last is None and not complete:
            return None
    if last is None:
        hwm_seen = thread.hwm is not None and start > 0
        if complete or hwm_seen:
            raise NothingToRunError(
                f"Thread {thread.id!r} has no message waiting for an answer (hwm "
                f"{thread.hwm!r}). Pass the next message as the run's input.",
                thread_id=thread.id,
            )
        return None
    # The context is the conversation up to the snapshot, and the replies to it that
    # were stored after it, in conversation order; the window is its newest messages.
    ordered = conversation_order(_with_replies(rows, last))
    first = 0 if window is None else len(ordered) - window
    # Tool results answered without the call they answer mean nothing to the model:
    # the call and all its results are sent, whatever the window or budget.
    turn = _open_turn_start(ordered)
    first = min(first, turn)
    if first < 0:
        if not complete:
            return None
        first = 0
    chosen = ordered[first:]
    conversation = _without_orphans((rebuild or rebuild_all)(chosen))
    system: list[LCBaseMessage] = (
        [SystemMessage(assistant.instructions)] if assistant.instructions else []
    )
    system.extend(instructions)
    over_budget = False
    if max_tokens_context is not None and token_counter is not None:
        turn_id = ordered[turn].id if 0 <= turn < len(ordered) - 1 else None
        required = len(conversation) - _required_start(conversation, turn_id)
        conversation = _fit_budget(
            conversation, system, max_tokens_context, token_counter, required
        )
        over_budget = token_counter([*system, *conversation]) > max_tokens_context
    return Plan(
        messages=[*system, *conversation],
        kwargs=model_kwargs(thread, assistant),
        snapshot=rows[last].id,
        assistant_id=assistant.id,
        over_budget=over_budget,
    )
