"""The record class of assistants made through the API.

An assistant of the Assistants API has tools and a response format besides the
native fields every `Assistant` has; `ServedAssistant` keeps them as typed fields,
in metadata like every typed field. It is an `Assistant`, so listing assistants
through `Assistant` returns it; with this module imported, ``response_format`` and
``reasoning_effort`` reach the model in `ThreadRunner` runs too (they are
`CHAT_COMPLETION_PARAMETERS`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from langchain_retro.records import Assistant

__all__ = ["ServedAssistant"]


class ServedAssistant(Assistant):
    """An assistant made through the Assistants API of ``langchain-retro serve``."""

    record_class: ClassVar[str] = "langchain_retro.server.ServedAssistant"

    tools: list[dict[str, Any]] = Field(default_factory=list)
    """Function tools, as Chat Completions tool dicts, offered in every run."""
    response_format: str | dict[str, Any] | None = None
    """Sent as the request's ``response_format``; ``None`` for ``auto``."""
    reasoning_effort: str | None = None
    """Sent to reasoning models; ``None`` leaves it to the model."""
