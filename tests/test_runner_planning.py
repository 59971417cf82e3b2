"""The pure planning of a run: conversation order, what is pending, what is sent.

No store and no model: rows are built by hand, with ids that do not sort by age (any
string a caller may choose), so nothing here may pass by comparing ids.
"""

from __future__ import annotations

import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.messages import BaseMessage as LCBaseMessage

from langchain_retro import _messages
from langchain_retro._planning import (
    conversation_order,
    pending_start,
    plan_run,
    retried,
)
from langchain_retro.errors import NothingToRunError
from langchain_retro.records import BaseAssistant, ChatCompletionThread
from langchain_retro.stores.base import StoredMessage


def row(
    message_id: str, message: LCBaseMessage, reply_to: str | None = None
) -> StoredMessage:
    return StoredMessage(
        id=message_id,
        created_at=0,
        thread_id="thread_x",
        role=_messages.role_of(message),
        payload=_messages.to_payload(message),
        reply_to=reply_to,
        run_id="run_1" if reply_to else None,
    )


def user(message_id: str, text: str | None = None) -> StoredMessage:
    return row(message_id, HumanMessage(text or message_id))


def reply(message_id: str, to: str | None, text: str | None = None) -> StoredMessage:
    return row(message_id, AIMessage(text or message_id), reply_to=to)


def ids(rows: list[StoredMessage]) -> list[str]:
    return [r.id for r in rows]


ASSISTANT = BaseAssistant(id="asst_1", created_at=0, model="m", instructions="sys")


def thread(hwm: str | None) -> ChatCompletionThread:
    return ChatCompletionThread(
        id="thread_x", created_at=0, assistant_id="asst_1", hwm=hwm
    )


def sent(messages: list[LCBaseMessage]) -> list[object]:
    return [m.content for m in messages]


# --- conversation order -------------------------------------------------------------


def test_rows_in_order_come_back_as_they_are() -> None:
    rows = [user("z"), reply("a", "z"), user("m"), reply("b", "m"), user("c")]
    assert ids(conversation_order(rows)) == ["z", "a", "m", "b", "c"]


def test_a_reply_follows_the_message_it_answered_not_a_late_post() -> None:
    # "first" is answered while "late" is posted: append order first, late, reply.
    rows = [user("first"), user("late"), reply("r1", "first")]
    assert ids(conversation_order(rows)) == ["first", "r1", "late"]


def test_several_late_posts_and_runs() -> None:
    rows = [
        user("u1"),
        user("u2"),
        reply("r1", "u1"),
        user("u3"),
        reply("r2", "u2"),
        reply("r3", "u3"),
    ]
    assert ids(conversation_order(rows)) == ["u1", "r1", "u2", "r2", "u3", "r3"]


def test_a_reply_whose_message_is_not_in_the_rows_keeps_its_place() -> None:
    rows = [user("late"), reply("r1", "older"), user("next")]
    assert ids(conversation_order(rows)) == ["late", "r1", "next"]


def test_two_replies_to_one_message_keep_their_order() -> None:
    rows = [user("q"), reply("r1", "q"), user("late"), reply("r2", "q")]
    assert ids(conversation_order(rows)) == ["q", "r1", "r2", "late"]


def test_tool_results_follow_a_moved_reply_that_called_tools() -> None:
    calling = AIMessage(
        "", tool_calls=[{"name": "f", "args": {}, "id": "c1", "type": "tool_call"}]
    )
    rows = [
        user("q"),
        user("late"),
        row("a1", calling, reply_to="q"),
        row("t1", ToolMessage("5", tool_call_id="c1")),
        row("t9", ToolMessage("?", tool_call_id="other")),
    ]
    assert ids(conversation_order(rows)) == ["q", "a1", "t1", "late", "t9"]


def test_reordering_is_linear() -> None:
    # 75,000 rows, every reply late by one post: a quadratic pass would take minutes.
    question, answer = user("q"), reply("r", "q")
    rows: list[StoredMessage] = []
    for i in range(25_000):
        rows += [
            question.model_copy(update={"id": f"q{i}"}),
            question.model_copy(update={"id": f"l{i}"}),
            answer.model_copy(update={"id": f"r{i}", "reply_to": f"q{i}"}),
        ]
    began = time.perf_counter()
    ordered = conversation_order(rows)
    assert time.perf_counter() - began < 5
    assert ids(ordered[:6]) == ["q0", "r0", "l0", "q1", "r1", "l1"]
    assert len(ordered) == len(rows)


# --- pending, by position -----------------------------------------------------------


def test_pending_starts_after_the_hwm_message_whatever_its_id() -> None:
    rows = [user("zz"), reply("aa", "zz"), user("mm")]
    assert pending_start(rows, "zz", complete=True) == 1
    assert pending_start(rows, None, complete=True) == 0


def test_a_deleted_hwm_message_leaves_what_follows_the_last_reply_pending() -> None:
    # ids sort the wrong way round on purpose: "zz" is the newest.
    rows = [user("b"), reply("c", "gone"), user("zz")]
    assert pending_start(rows, "gone", complete=True) == 2
    # No assistant message at all: everything is pending.
    assert pending_start([user("b"), user("c")], "gone", complete=True) == 0
    # Rows that are not the whole thread: the hwm message is taken as older.
    assert pending_start(rows, "gone", complete=False) == 0


def test_retry_detection_uses_positions() -> None:
    appended = [user("zz-copy", "question")]
    rows = [user("aa", "question"), *appended]
    assert retried(rows, appended, hwm=None, complete=True) is True
    # The earlier copy was answered (hwm at it): not a retry.
    assert retried(rows, appended, hwm="aa", complete=True) is False
    # The hwm message was deleted and a reply follows the earlier copy: answered.
    answered = [user("aa", "question"), reply("bb", "x"), *appended]
    assert retried(answered, appended, hwm="gone", complete=True) is False
    assert retried(rows[1:], appended, hwm=None, complete=False) is None


# --- what a run sends ---------------------------------------------------------------


def test_the_next_run_sees_the_reply_before_the_late_post() -> None:
    rows = [user("first"), user("late"), reply("r1", "first")]
    plan = plan_run(
        thread=thread("first"),
        assistant=ASSISTANT,
        rows=rows,
        complete=True,
        window=None,
    )
    assert plan is not None
    assert sent(plan.messages) == ["sys", "first", "r1", "late"]
    assert (plan.snapshot, plan.assistant_id) == ("late", "asst_1")


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (2, ["r1", "late"]),
        (3, ["first", "r1", "late"]),
        (9, ["old", "first", "r1", "late"]),
    ],
)
def test_a_window_is_the_newest_messages_in_conversation_order(
    window: int, expected: list[str]
) -> None:
    rows = [user("old"), user("first"), user("late"), reply("r1", "first")]
    plan = plan_run(
        thread=thread("first"),
        assistant=ASSISTANT,
        rows=rows,
        complete=True,
        window=window,
    )
    assert plan is not None
    assert sent(plan.messages) == ["sys", *expected]


def test_nothing_pending_after_a_reply_to_the_hwm() -> None:
    rows = [user("first"), reply("r1", "first")]
    with pytest.raises(NothingToRunError):
        plan_run(
            thread=thread("first"),
            assistant=ASSISTANT,
            rows=rows,
            complete=True,
            window=None,
        )


def test_again_answers_the_newest_question_once_more() -> None:
    rows = [user("first"), reply("r1", "first"), user("second"), reply("r2", "second")]
    plan = plan_run(
        thread=thread("second"),
        assistant=ASSISTANT,
        rows=rows,
        complete=True,
        window=None,
        again=True,
    )
    assert plan is not None
    assert plan.snapshot == "second"  # the hwm stays where it was
    assert sent(plan.messages)[-2:] == ["second", "r2"]
    # Only replies in the rows: older rows may hold the question, else nothing.
    only_replies = [reply("r3", "x")]
    kwargs = {"assistant": ASSISTANT, "window": None, "again": True}
    assert (
        plan_run(thread=thread("x"), rows=only_replies, complete=False, **kwargs)
        is None
    )
    with pytest.raises(NothingToRunError):
        plan_run(thread=thread("x"), rows=only_replies, complete=True, **kwargs)


def test_a_tool_turn_older_than_the_rows_asks_for_more() -> None:
    calling = AIMessage(
        "", tool_calls=[{"name": "f", "args": {}, "id": "c1", "type": "tool_call"}]
    )
    rows = [row("t1", ToolMessage("5", tool_call_id="c1"))]
    kwargs = {"assistant": ASSISTANT, "window": 1}
    assert plan_run(thread=thread(None), rows=rows, complete=False, **kwargs) is None
    rows = [user("q"), row("a1", calling, reply_to="q"), *rows]
    plan = plan_run(thread=thread("q"), rows=rows, complete=True, **kwargs)
    assert plan is not None
    assert [m.type for m in plan.messages] == ["system", "ai", "tool"]
    assert plan.snapshot == "t1"


def test_tool_results_without_their_call_are_not_sent() -> None:
    rows = [
        user("q"),
        row("t0", ToolMessage("orphan", tool_call_id="nowhere")),
        user("next"),
    ]
    plan = plan_run(
        thread=thread(None), assistant=ASSISTANT, rows=rows, complete=True, window=None
    )
    assert plan is not None
    assert sent(plan.messages) == ["sys", "q", "next"]


@pytest.mark.parametrize(
    "options",
    [
        {"window": 1},
        {"window": 1, "max_tokens_context": 1},
        {"window": None, "max_tokens_context": 1},
    ],
    ids=["window", "window-and-budget", "budget"],
)
def test_pending_tool_results_before_a_late_post_are_sent_with_their_call(
    options: dict[str, int | None],
) -> None:
    calling = AIMessage(
        "", tool_calls=[{"name": "f", "args": {}, "id": "c1", "type": "tool_call"}]
    )
    rows = [
        user("first"),
        user("late"),
        row("a1", calling, reply_to="first"),
        row("t1", ToolMessage("5", tool_call_id="c1")),
    ]
    plan = plan_run(
        thread=thread("first"),
        assistant=ASSISTANT,
        rows=rows,
        complete=True,
        token_counter=lambda messages: 10 * len(messages),
        **options,
    )
    assert plan is not None
    assert [m.type for m in plan.messages] == ["system", "ai", "tool", "human"]
    assert plan.messages[-1].content == "late"
    assert plan.snapshot == "t1"
