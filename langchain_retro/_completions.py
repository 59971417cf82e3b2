"""The chat model a run calls: the caller's, on Chat Completions, messages as built.

`run_model` gives a copy of the caller's ``ChatOpenAI`` (the original is never
changed) that the run engine calls:

* pinned to Chat Completions (``use_responses_api=False``), refusing options only
  the Responses API takes;
* whose Chat Completions resource hands the request's ``messages`` to the openai
  SDK as they are, not through the SDK's request transform.

The transform walks every message of every request against the SDK's typed
parameters, to rename aliased keys and format annotated values. No chat message
parameter has either, so for the messages it returns an equal copy; but it costs
about 0.2 ms of CPU a message: 3 of the 7 ms a 10-message call takes against a local
server, and 230 of 250 ms at 1,000 messages. The messages go in the SDK's public
``extra_body`` instead, which the SDK adds to the request body as given, in the
place ``messages`` holds: the request sent is the same, key for key, in order.
Every other parameter still goes through the transform, and calls the resource
does not make (structured-output ``parse``, ``beta...stream``) are the SDK's own.
"""

from __future__ import annotations

from typing import Any

from langchain_openai.chat_models.base import BaseChatOpenAI
from openai.resources.chat import AsyncCompletions, Completions

from langchain_retro.errors import RetroValueError

__all__ = ["RESPONSES_ONLY", "run_model"]

RESPONSES_ONLY = (
    "reasoning",
    "include",
    "truncation",
    "context_management",
    "use_previous_response_id",
)
"""``BaseChatOpenAI`` options only the Responses API accepts."""


_SDK_RESOURCES = (Completions, AsyncCompletions)
"""The openai SDK's Chat Completions resources, whose ``create`` a run wraps."""


def _as_built(params: dict[str, Any]) -> dict[str, Any]:
    """``create``'s parameters with the messages moved to ``extra_body``.

    The SDK merges ``extra_body`` over the transformed body, so ``messages`` keeps
    its place with the messages as given; the caller's own ``extra_body`` keys still
    win, as they did.
    """
    messages = params.get("messages")
    if not isinstance(messages, list):
        return params
    extra = params.get("extra_body") or {}
    return {**params, "messages": [], "extra_body": {"messages": messages, **extra}}


class _AsBuilt:
    """A Chat Completions resource (sync or async, raw or not), messages as built.

    ``create`` returns what the wrapped resource's returns (a coroutine for an async
    resource); anything else is the wrapped resource's.
    """

    def __init__(self, resource: Any) -> None:
        self._resource = resource

    def create(self, **params: Any) -> Any:
        """The resource's ``create``, the messages outside the SDK's transform."""
        return self._resource.create(**_as_built(params))

    @property
    def with_raw_response(self) -> _AsBuilt:
        """The raw-response resource, sending messages the same way."""
        return _AsBuilt(self._resource.with_raw_response)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resource, name)


def run_model(llm: BaseChatOpenAI) -> BaseChatOpenAI:
    """A copy of ``llm`` for runs: Chat Completions, messages sent as built.

    Raises:
        RetroValueError: If ``llm`` sets options only the Responses API accepts.
    """
    responses_only = [name for name in RESPONSES_ONLY if getattr(llm, name, None)]
    if responses_only:
        raise RetroValueError(
            f"ThreadRunner completes runs through Chat Completions, but the "
            f"{type(llm).__name__} "
            f"sets {responses_only}, which only the Responses API accepts. Remove "
            "them (use reasoning_effort= instead of reasoning=)."
        )
    update: dict[str, Any] = {"use_responses_api": False}
    for name in ("client", "async_client"):
        resource = getattr(llm, name, None)
        # Only the SDK's own resources: a client of the caller's making may not
        # take ``extra_body`` as the SDK does.
        if isinstance(resource, _SDK_RESOURCES):
            update[name] = _AsBuilt(resource)
    return llm.model_copy(update=update)
