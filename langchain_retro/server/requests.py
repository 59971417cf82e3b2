"""Request bodies of the Assistants v2 API, as pydantic models, and their checks.

Each model follows its schema in the OpenAPI spec (``CreateAssistantRequest``...):
unknown fields are refused (400 naming them), as OpenAI did. What this server does
not do is refused by name, never ignored: ``file_search`` and ``code_interpreter``
tools, ``tool_resources``, file attachments and ``image_file`` content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from langchain_retro._metadata import OPENAI_LIMITS, check_limits
from langchain_retro.errors import MetadataLimitError
from langchain_retro.server.auth import check_reserved
from langchain_retro.server.errors import InvalidRequestError

__all__ = [
    "CreateAssistant",
    "CreateMessage",
    "CreateRun",
    "CreateThread",
    "CreateThreadAndRun",
    "ModifyAssistant",
    "ModifyMetadata",
    "ModifyThread",
    "SubmitToolOutputs",
    "Tool",
    "check_metadata",
    "function_tools",
]

_UNSUPPORTED_TOOLS = {
    "file_search": "file_search tools (files and vector stores)",
    "code_interpreter": "code_interpreter tools",
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionDefinition(_Body):
    """A function the model may call."""

    name: str = Field(min_length=1, max_length=64)
    """The function's name."""
    description: str | None = None
    """What it does, for the model."""
    parameters: dict[str, Any] | None = None
    """Its parameters, as a JSON schema."""
    strict: bool | None = None
    """Whether the model must follow the schema exactly."""


class Tool(BaseModel):
    """A tool of an assistant or a run; only ``function`` tools are served."""

    model_config = ConfigDict(extra="allow")

    type: str
    """``function`` (``file_search`` and ``code_interpreter`` are refused)."""
    function: FunctionDefinition | None = None
    """The function, for a ``function`` tool."""


Metadata = dict[str, str]


class _Settings(_Body):
    """What an assistant, a run and a thread-and-run share."""

    model: str | None = None
    """The Chat Completions model."""
    instructions: str | None = Field(default=None, max_length=256_000)
    """The system instructions."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature."""
    top_p: float | None = Field(default=None, ge=0, le=1)
    """Nucleus sampling mass."""
    response_format: str | dict[str, Any] | None = None
    """``auto``, ``{"type": "text" | "json_object" | "json_schema", ...}``."""
    metadata: Metadata | None = None
    """Up to 16 string entries."""


class CreateAssistant(_Settings):
    """``POST /v1/assistants``."""

    model: str = Field(min_length=1)
    """The Chat Completions model."""
    name: str | None = Field(default=None, max_length=256)
    """A display name."""
    description: str | None = Field(default=None, max_length=512)
    """What the assistant is for."""
    reasoning_effort: str | None = None
    """Sent to reasoning models."""
    tools: list[Tool] = Field(default_factory=list, max_length=128)
    """Function tools."""
    tool_resources: dict[str, Any] | None = None
    """Refused unless empty: files and vector stores are not served."""


class ModifyAssistant(CreateAssistant):
    """``POST /v1/assistants/{assistant_id}``: only the fields given change."""

    model: str | None = Field(default=None, min_length=1)  # type: ignore[assignment]
    """The Chat Completions model."""


class ContentText(_Body):
    """A text part of a message."""

    type: Literal["text"]
    """Always ``text``."""
    text: str
    """The text."""


class ImageUrl(_Body):
    """An image by URL."""

    url: str
    """The image's URL (or a data URL)."""
    detail: Literal["auto", "low", "high"] = "auto"
    """The detail the model looks at."""


class ContentImageUrl(_Body):
    """An image part of a message."""

    type: Literal["image_url"]
    """Always ``image_url``."""
    image_url: ImageUrl
    """The image."""


class ContentImageFile(BaseModel):
    """An image file part: refused, files are not served."""

    type: Literal["image_file"]
    """Always ``image_file``."""
    image_file: dict[str, Any] = Field(default_factory=dict)
    """The file."""


ContentPart = Annotated[
    ContentText | ContentImageUrl | ContentImageFile, Field(discriminator="type")
]


class CreateMessage(_Body):
    """``POST /v1/threads/{thread_id}/messages``, and the messages of a new thread."""

    role: Literal["user", "assistant"]
    """``user`` or ``assistant``."""
    content: str | Annotated[list[ContentPart], Field(min_length=1)]
    """Text, or a list of text and image parts."""
    attachments: list[dict[str, Any]] | None = None
    """Refused unless empty: files are not served."""
    metadata: Metadata | None = None
    """Up to 16 string entries."""


class CreateThread(_Body):
    """``POST /v1/threads``."""

    messages: list[CreateMessage] = Field(default_factory=list)
    """Messages to start the thread with."""
    tool_resources: dict[str, Any] | None = None
    """Refused unless empty: files and vector stores are not served."""
    metadata: Metadata | None = None
    """Up to 16 string entries."""


class ModifyMetadata(_Body):
    """``POST`` on a message or a run: its metadata, replaced whole."""

    metadata: Metadata | None = None
    """Up to 16 string entries; replaces the object's metadata."""


class ModifyThread(ModifyMetadata):
    """``POST /v1/threads/{thread_id}``."""

    tool_resources: dict[str, Any] | None = None
    """Refused unless empty: files and vector stores are not served."""


class Truncation(_Body):
    """``truncation_strategy``."""

    type: Literal["auto", "last_messages"]
    """``auto`` sends what fits; ``last_messages`` the newest ``last_messages``."""
    last_messages: int | None = Field(default=None, ge=1)
    """With ``last_messages``: how many."""


class _RunBody(_Settings):
    """What a run and a thread-and-run share."""

    assistant_id: str = Field(min_length=1)
    """The assistant to run with."""
    tools: list[Tool] | None = Field(default=None, max_length=20)
    """The run's function tools, instead of the assistant's."""
    stream: bool | None = None
    """Answer with server-sent events."""
    max_prompt_tokens: int | None = Field(default=None, ge=256)
    """The token budget of the context sent."""
    max_completion_tokens: int | None = Field(default=None, ge=256)
    """The most tokens the model may produce in one call."""
    truncation_strategy: Truncation | None = None
    """How much of the thread is sent."""
    tool_choice: str | dict[str, Any] | None = None
    """``none``, ``auto``, ``required`` or a named function."""
    parallel_tool_calls: bool | None = None
    """Whether the model may call several tools at once."""
    reasoning_effort: str | None = None
    """Sent to reasoning models."""


class CreateRun(_RunBody):
    """``POST /v1/threads/{thread_id}/runs``."""

    additional_instructions: str | None = None
    """Instructions after the assistant's, in this run only."""
    additional_messages: list[CreateMessage] | None = None
    """Messages added to the thread before the run."""


class CreateThreadAndRun(_RunBody):
    """``POST /v1/threads/runs``."""

    thread: CreateThread | None = None
    """The thread to create."""
    tool_resources: dict[str, Any] | None = None
    """Refused unless empty: files and vector stores are not served."""


class ToolOutput(_Body):
    """The output of one tool call."""

    tool_call_id: str = Field(min_length=1)
    """The call it answers."""
    output: str = ""
    """What the function returned."""


class SubmitToolOutputs(_Body):
    """``POST /v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs``."""

    tool_outputs: list[ToolOutput]
    """One output per tool call of the run's ``required_action``."""
    stream: bool | None = None
    """Answer with server-sent events."""


# --- checks ------------------------------------------------------------------------


def check_metadata(metadata: Mapping[str, str] | None, param: str = "metadata") -> None:
    """OpenAI's limits (16 keys, 64-character keys, 512-character values).

    Raises:
        InvalidRequestError: Naming the limit, before anything is written.
    """
    if not metadata:
        return
    check_reserved(metadata, param)
    try:
        check_limits(metadata, OPENAI_LIMITS)
    except MetadataLimitError as exc:
        raise InvalidRequestError(
            f"Invalid '{param}': {exc}", param=param, code="invalid_metadata"
        ) from exc


def check_tool_resources(resources: Mapping[str, Any] | None, param: str) -> None:
    """Refuse tool resources that name files or vector stores.

    Raises:
        InvalidRequestError: Naming what is not served.
    """
    for name, resource in (resources or {}).items():
        if resource and any(resource.values()):
            raise InvalidRequestError(
                f"{param}.{name} is not supported: this server keeps no files or "
                "vector stores, so file_search and code_interpreter have nothing "
                "to use. Remove it.",
                param=f"{param}.{name}",
            )


def function_tools(tools: Sequence[Tool], param: str = "tools") -> list[dict[str, Any]]:
    """Tools as Chat Completions tool dicts; only ``function`` tools are served.

    Raises:
        InvalidRequestError: For ``file_search``, ``code_interpreter`` or another
            type, naming it.
    """
    out: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        where = f"{param}[{index}]"
        if tool.type in _UNSUPPORTED_TOOLS:
            raise InvalidRequestError(
                f"{_UNSUPPORTED_TOOLS[tool.type]} are not supported by this server: "
                "it completes runs through Chat Completions and keeps no files or "
                "vector stores. Use function tools.",
                param=where,
                code="unsupported_tool",
            )
        if tool.type != "function" or tool.function is None:
            raise InvalidRequestError(
                f"Invalid value for '{where}.type': {tool.type!r}; this server "
                "serves 'function' tools with a 'function' definition.",
                param=where,
            )
        if tool.model_extra:
            raise InvalidRequestError(
                f"Unrecognized fields in '{where}': {sorted(tool.model_extra)}.",
                param=where,
            )
        out.append(
            {
                "type": "function",
                "function": tool.function.model_dump(exclude_none=True),
            }
        )
    return out


def check_attachments(attachments: Sequence[Any] | None, param: str) -> None:
    """Refuse file attachments.

    Raises:
        InvalidRequestError: If there are any.
    """
    if attachments:
        raise InvalidRequestError(
            f"{param} are not supported: this server keeps no files. Put the "
            "content in the message instead.",
            param=param,
        )
