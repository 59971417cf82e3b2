"""A run as the Assistants API streamed it: server-sent events, in OpenAI's order.

`RunEvents` turns what the run engine does into the events of the spec's
``AssistantStreamEvent``, written to a queue that the HTTP response reads::

    thread.created                                  (create thread and run only)
    thread.run.created, thread.run.queued, thread.run.in_progress
    thread.run.step.created, thread.run.step.in_progress
    thread.message.created, thread.message.in_progress
    thread.message.delta ...                        (the model's text, as it comes)
    thread.message.completed, thread.run.step.completed
    thread.run.completed                            (or requires_action, failed...)
    done

A reply that calls tools is a ``tool_calls`` step instead, its calls streamed as
``thread.run.step.delta`` events, and the run ends ``requires_action``; tool outputs
continue it (``thread.run.queued``, ``thread.run.in_progress``, the step completed
with its outputs, then the next reply). A failure ends the stream with
``thread.run.failed`` carrying ``last_error``; an error before the run exists with
an ``error`` event.

The reply's message id is chosen before the model answers, so the deltas and the
stored message share it (the engine stores replies under their ids for this).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from langchain_core.messages import AIMessageChunk

from langchain_retro._ids import new_id
from langchain_retro.records import BaseMessage
from langchain_retro.runs import steps_of
from langchain_retro.server.objects import message_object, run_object, step_object
from langchain_retro.stores.base import RunSaved, RunStart, StoredRun

__all__ = ["DONE", "RunEvents", "sse"]

DONE = "event: done\ndata: [DONE]\n\n"
"""The last event of every stream."""

_RUN_ENDS = frozenset(
    {"completed", "requires_action", "failed", "cancelled", "expired", "incomplete"}
)
_STEP_ENDS = {
    "completed": "completed",
    "incomplete": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
}


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


class RunEvents:
    """The events of one run's stream, put on `queue`; ``None`` closes it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        """The events, as SSE text; ``None`` after the last."""
        self.run: StoredRun | None = None
        """The run, as last seen."""
        self.ended = False
        """Whether the run's last event went out."""
        self._reply_id: str | None = None
        self._kind: str | None = None
        """``message_creation`` or ``tool_calls``: the step of the reply streaming."""
        self._tool_calls: set[int] = set()

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Put one event on the queue."""
        self.queue.put_nowait(sse(event, data))

    def close(self) -> None:
        """End the stream: ``done``, then the end of the queue."""
        self.queue.put_nowait(DONE)
        self.queue.put_nowait(None)

    # --- the run -------------------------------------------------------------------

    def started(self, start: RunStart) -> None:
        """The run was created, or continued by its tool outputs."""
        run = self.run = start.run
        if not start.resumed:
            self.emit("thread.run.created", run_object(run, status="queued"))
        self.emit("thread.run.queued", run_object(run, status="queued"))
        self.emit("thread.run.in_progress", run_object(run))
        if start.resumed:
            records = [
                BaseMessage._from(row.stored())
                for row in start.context
                if row.run_id == run.id
            ]
            steps = [s for s in steps_of(run, records) if s.type == "tool_calls"]
            if steps:
                self.emit(
                    "thread.run.step.completed",
                    step_object(steps[-1], status="completed"),
                )

    def saved(self, saved: RunSaved) -> None:
        """The engine wrote the run's reply or end."""
        run = self.run = saved.run
        status = run.status
        if status not in _RUN_ENDS:
            return
        records = [BaseMessage._from(row) for row in saved.messages]
        replies = [r for r in records if r.id == self._reply_id]
        if replies and self._kind == "message_creation":
            cut = status not in ("completed", "requires_action")
            ended = "incomplete" if cut else "completed"
            self.emit(
                f"thread.message.{ended}", message_object(replies[0], status=ended)
            )
        if self._kind is not None and status != "requires_action":
            steps = steps_of(run, records)
            step_status = _STEP_ENDS.get(status, "completed")
            if steps:
                self.emit(
                    f"thread.run.step.{step_status}",
                    step_object(steps[-1], status=step_status),
                )
            else:
                self.emit(
                    f"thread.run.step.{step_status}",
                    self._bare_step(run, step_status),
                )
        self.ended_with(run)

    def ended_with(self, run: StoredRun) -> None:
        """The run's last event, from the run as stored."""
        if self.ended:
            return
        self.ended = True
        self.emit(f"thread.run.{run.status}", run_object(run))

    # --- the model's reply, as it streams ----------------------------------------

    def reply_id(self) -> str:
        """A new id for the reply about to stream (its message and step)."""
        self._reply_id = new_id("msg")
        self._kind = None
        self._tool_calls = set()
        return self._reply_id

    def _step_id(self) -> str:
        """The id of the reply's step: the message id's suffix, so they pair."""
        return f"step_{(self._reply_id or '').removeprefix('msg_')}"

    def _bare_step(self, run: StoredRun, status: str) -> dict[str, Any]:
        """The step of a reply that was never stored (a cancel, a failure)."""
        details: dict[str, Any]
        if self._kind == "tool_calls":
            details = {"type": "tool_calls", "tool_calls": []}
        else:
            details = {
                "type": "message_creation",
                "message_creation": {"message_id": self._reply_id},
            }
        now = int(time.time())
        return {
            "id": self._step_id(),
            "object": "thread.run.step",
            "created_at": now,
            "assistant_id": run.assistant_id or "",
            "thread_id": run.thread_id,
            "run_id": run.id,
            "type": details["type"],
            "status": status,
            "step_details": details,
            "last_error": run.last_error.model_dump() if run.last_error else None,
            "expired_at": None,
            "cancelled_at": now if status == "cancelled" else None,
            "failed_at": now if status == "failed" else None,
            "completed_at": None,
            "metadata": {},
            "usage": None,
        }

    def _begin_step(self, kind: str) -> None:
        """Open the reply's step (and its message, if text) on its first chunk."""
        run = self.run
        if run is None or self._kind is not None:
            return
        self._kind = kind
        step = self._bare_step(run, "in_progress")
        step["failed_at"] = step["cancelled_at"] = step["last_error"] = None
        self.emit("thread.run.step.created", step)
        self.emit("thread.run.step.in_progress", step)
        if kind == "message_creation":
            message = {
                "id": self._reply_id,
                "object": "thread.message",
                "created_at": step["created_at"],
                "thread_id": run.thread_id,
                "status": "in_progress",
                "incomplete_details": None,
                "completed_at": None,
                "incomplete_at": None,
                "role": "assistant",
                "content": [],
                "assistant_id": run.assistant_id,
                "run_id": run.id,
                "attachments": [],
                "metadata": {},
            }
            self.emit("thread.message.created", message)
            self.emit("thread.message.in_progress", message)

    def chunk(self, chunk: AIMessageChunk) -> None:
        """One chunk of the model's reply: text deltas, or tool call deltas."""
        text = chunk.content if isinstance(chunk.content, str) else chunk.text
        if text and self._kind != "tool_calls":
            self._begin_step("message_creation")
            self.emit("thread.message.delta", self._text_delta(text))
        calls = self._call_deltas(chunk)
        if calls:
            if self._kind == "message_creation":
                # Text, then calls, in one reply: the calls are the step that waits.
                self._kind = None
            self._begin_step("tool_calls")
            self.emit(
                "thread.run.step.delta",
                {
                    "id": self._step_id(),
                    "object": "thread.run.step.delta",
                    "delta": {
                        "step_details": {"type": "tool_calls", "tool_calls": calls}
                    },
                },
            )

    def _text_delta(self, text: str) -> dict[str, Any]:
        """A ``thread.message.delta`` of the reply: a piece of its text."""
        part = {"index": 0, "type": "text", "text": {"value": text, "annotations": []}}
        return {
            "id": self._reply_id,
            "object": "thread.message.delta",
            "delta": {"content": [part]},
        }

    def _call_deltas(self, chunk: AIMessageChunk) -> list[dict[str, Any]]:
        """The chunk's tool call pieces; a call's first names it and its id."""
        calls = []
        for piece in chunk.tool_call_chunks:
            index = piece.get("index")
            index = len(self._tool_calls) if index is None else index
            call: dict[str, Any] = {"index": index, "type": "function"}
            function: dict[str, Any] = {"arguments": piece.get("args") or ""}
            if index not in self._tool_calls:
                self._tool_calls.add(index)
                call["id"] = piece.get("id") or ""
                function["name"] = piece.get("name") or ""
                function["output"] = None
            call["function"] = function
            calls.append(call)
        return calls
