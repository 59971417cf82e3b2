"""The JSON objects the API answers with: records as the Assistants API shaped them.

One pure function per object (``assistant``, ``thread``, ``thread.message``,
``thread.run``, ``thread.run.step``, lists), each following its schema in the
OpenAPI spec. Messages convert between the API's content parts and LangChain
messages here too: what a thread holds is LangChain messages, whoever wrote them.

A thread's tool messages and the model's tool-call messages are not messages of the
Assistants API (there, tool calls live in run steps): listings skip them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.messages import BaseMessage as LCBaseMessage

from langchain_retro.records import BaseAssistant, BaseMessage, BaseThread
from langchain_retro.runs import RunStep
from langchain_retro.server.auth import visible_metadata
from langchain_retro.server.errors import InvalidRequestError
from langchain_retro.server.requests import ContentImageFile, ContentText, CreateMessage
from langchain_retro.stores.base import StoredRun

__all__ = [
    "assistant_object",
    "is_api_message",
    "list_object",
    "message_object",
    "message_of",
    "run_object",
    "step_object",
    "thread_object",
]


def assistant_object(assistant: BaseAssistant) -> dict[str, Any]:
    """An ``assistant`` object."""
    response_format = getattr(assistant, "response_format", None)
    return {
        "id": assistant.id,
        "object": "assistant",
        "created_at": assistant.created_at,
        "name": assistant.name,
        "description": assistant.description,
        "model": assistant.model,
        "instructions": assistant.instructions,
        "tools": list(getattr(assistant, "tools", [])),
        "tool_resources": {},
        "metadata": visible_metadata(assistant.metadata),
        "temperature": assistant.temperature,
        "top_p": assistant.top_p,
        "response_format": "auto" if response_format is None else response_format,
    }


def thread_object(thread: BaseThread) -> dict[str, Any]:
    """A ``thread`` object."""
    return {
        "id": thread.id,
        "object": "thread",
        "created_at": thread.created_at,
        "tool_resources": {},
        "metadata": visible_metadata(thread.metadata),
    }


# --- messages ------------------------------------------------------------------------


def message_of(body: CreateMessage, param: str) -> LCBaseMessage:
    """The LangChain message a ``CreateMessage`` body stores.

    Raises:
        InvalidRequestError: For an ``image_file`` part (files are not served).
    """
    content: str | list[str | dict[str, Any]]
    if isinstance(body.content, str):
        content = body.content
    else:
        content = []
        for index, part in enumerate(body.content):
            if isinstance(part, ContentImageFile):
                raise InvalidRequestError(
                    "image_file content is not supported: this server keeps no "
                    "files. Send the image as an image_url (a URL or a data URL).",
                    param=f"{param}.content[{index}]",
                )
            if isinstance(part, ContentText):
                content.append({"type": "text", "text": part.text})
            else:
                content.append(
                    {"type": "image_url", "image_url": part.image_url.model_dump()}
                )
    if body.role == "user":
        return HumanMessage(content=content)
    return AIMessage(content=content)


def _text(value: str) -> dict[str, Any]:
    """A text content part."""
    return {"type": "text", "text": {"value": value, "annotations": []}}


def _parts(content: str | list[str | dict[str, Any]]) -> list[dict[str, Any]]:
    """LangChain content as the API's content parts."""
    if isinstance(content, str):
        return [_text(content)]
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            parts.append(_text(part))
        elif part.get("type") == "text":
            parts.append(_text(str(part.get("text", ""))))
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
            parts.append(
                {"type": "image_url", "image_url": {"url": str(url), "detail": detail}}
            )
        elif part.get("type") == "refusal":
            parts.append({"type": "refusal", "refusal": str(part.get("refusal", ""))})
        else:
            parts.append(_text(json.dumps(part, ensure_ascii=False)))
    return parts


def is_api_message(record: BaseMessage) -> bool:
    """Whether a stored message is a message of the API: a user's, or a reply.

    Tool results, system messages and tool-call messages without text are not.
    """
    message = record.message
    if isinstance(message, HumanMessage):
        return True
    if isinstance(message, AIMessage):
        return not message.tool_calls or bool(message.text)
    return False


def message_object(record: BaseMessage, *, status: str = "completed") -> dict[str, Any]:
    """A ``thread.message`` object."""
    message = record.message
    role = "assistant" if isinstance(message, AIMessage) else "user"
    done = role == "assistant" and record.run_id is not None
    cut = status == "incomplete"
    return {
        "id": record.id,
        "object": "thread.message",
        "created_at": record.created_at,
        "thread_id": record.thread_id,
        "status": status,
        # A reply is cut short by max_completion_tokens, or by its run's end.
        "incomplete_details": {"reason": "max_tokens"} if cut else None,
        "completed_at": record.created_at if done and status == "completed" else None,
        "incomplete_at": record.created_at if cut else None,
        "role": role,
        "content": _parts(message.content),
        "assistant_id": record.assistant_id,
        "run_id": record.run_id,
        "attachments": [],
        "metadata": visible_metadata(record.metadata),
    }


# --- runs and steps ------------------------------------------------------------------


def run_object(run: StoredRun, *, status: str | None = None) -> dict[str, Any]:
    """A ``thread.run`` object; ``status`` overrides the run's (stream events)."""
    truncation = (
        run.truncation_strategy.model_dump()
        if run.truncation_strategy is not None
        else {"type": "auto", "last_messages": None}
    )
    incomplete = run.incomplete_details
    return {
        "id": run.id,
        "object": "thread.run",
        "created_at": run.created_at,
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id or "",
        "status": status or run.status,
        "required_action": (
            run.required_action.model_dump() if run.required_action else None
        ),
        "last_error": run.last_error.model_dump() if run.last_error else None,
        "expires_at": run.expires_at,
        "started_at": run.started_at,
        "cancelled_at": run.cancelled_at,
        "failed_at": run.failed_at,
        "completed_at": run.completed_at,
        "incomplete_details": incomplete.model_dump() if incomplete else None,
        "model": run.model or "",
        "instructions": run.instructions or "",
        "tools": list(run.tools),
        "metadata": visible_metadata(run.metadata),
        "usage": run.usage.model_dump() if run.usage else None,
        "temperature": run.temperature,
        "top_p": run.top_p,
        "max_prompt_tokens": run.max_prompt_tokens,
        "max_completion_tokens": run.max_completion_tokens,
        "truncation_strategy": truncation,
        "tool_choice": "auto" if run.tool_choice is None else run.tool_choice,
        "parallel_tool_calls": (
            True if run.parallel_tool_calls is None else run.parallel_tool_calls
        ),
        "response_format": (
            "auto" if run.response_format is None else run.response_format
        ),
    }


def step_object(step: RunStep, *, status: str | None = None) -> dict[str, Any]:
    """A ``thread.run.step`` object; ``status`` overrides the step's (streams)."""
    data = step.model_dump(mode="json")
    status = status or step.status
    data.update(
        assistant_id=step.assistant_id or "",
        status=status,
        last_error=None,
        expired_at=None,
        cancelled_at=None,
        failed_at=None,
        metadata={},
    )
    if status != "completed":
        data["completed_at"] = None
    return data


def list_object(
    data: Sequence[Any],
    *,
    has_more: bool,
    item: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """A ``list`` object: a page with its cursors."""
    items = [item(record) for record in data]
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }
