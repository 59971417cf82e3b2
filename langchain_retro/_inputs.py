"""A run's input and config, checked before anything is written.

`ThreadRunner` accepts what LangChain calls message-like, and nothing else:

* ``None`` (no input: answer what is pending);
* a ``str`` (a human message);
* a LangChain message;
* a message dict, ``{"role": "user", "content": "hi"}`` or ``{"type": "human",
  "content": "hi"}`` (other keys go to ``additional_kwargs``, as in LangChain);
* a ``(role, content)`` tuple, such as ``("user", "hi")``;
* a ``PromptValue`` (what a prompt template in front of the runner produces);
* a list (or tuple) of these.

Anything else (a dict of prompt variables, a number, a set...) raises
`RetroValueError` naming what is accepted, before the run takes its lease.

System messages in the input are not stored: they are the run's additional
instructions (`RunInput.instructions`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue
from openai.resources.chat.completions import Completions

from langchain_retro import _messages
from langchain_retro.errors import RetroValueError
from langchain_retro.stores.base import NewMessage, TruncationStrategy

__all__ = [
    "THREAD_ID_KEY",
    "RunInput",
    "check_call_kwargs",
    "check_config",
    "check_run_options",
    "run_input",
    "thread_id_of",
]

THREAD_ID_KEY = "thread_id"
"""The ``config["configurable"]`` key naming the thread a run works on."""

ACCEPTED = (
    "None, a str, a LangChain message, a message dict such as "
    '{"role": "user", "content": "hi"} or {"type": "human", "content": "hi"}, a '
    '(role, content) tuple such as ("user", "hi"), a PromptValue, or a list of these'
)
"""What a run's input may be, as error messages say it."""

_ROLES = frozenset(
    {"human", "user", "ai", "assistant", "function", "tool", "system", "developer"}
)
"""The roles LangChain turns into messages (``convert_to_messages``)."""


@dataclass(frozen=True, slots=True)
class RunInput:
    """A run's input, split into what is stored and what only this run sends."""

    instructions: list[BaseMessage]
    """The input's system messages: this run's additional instructions, not stored."""
    messages: list[NewMessage]
    """The other input messages, to append to the thread, in order."""


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        keys = list(value)[:8]
        return f"a {type(value).__name__} with keys {keys!r}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"a {type(value).__name__} ({text})"


def _refused(value: object, index: int | None, why: str = "") -> RetroValueError:
    where = "ThreadRunner input" if index is None else f"Item {index} of the input"
    hint = (
        " To fill a prompt from a dict of variables, put a prompt in front of the "
        "runner: ChatPromptTemplate.from_messages([...]) | runner."
        if isinstance(value, Mapping)
        else ""
    )
    reason = f": {why}" if why else ""
    return RetroValueError(
        f"{where} is {_describe(value)}, which is not message-like{reason}. A run "
        f"accepts {ACCEPTED}. Nothing was stored.{hint}"
    )


def _is_role_pair(value: object) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and isinstance(value[0], str)
        and value[0] in _ROLES
        and isinstance(value[1], str | list)
    )


def _is_message_dict(value: object) -> bool:
    return isinstance(value, Mapping) and ("role" in value or "type" in value)


def _convert(value: object, index: int | None) -> BaseMessage:
    """One message-like item (not a list of them) as a message."""
    if isinstance(value, BaseMessage):
        return value
    if isinstance(value, str):
        return HumanMessage(value)
    if isinstance(value, Mapping):
        if not _is_message_dict(value):
            raise _refused(value, index, 'a message dict has a "role" or "type"')
        item: Any = dict(value)
    elif isinstance(value, tuple | list) and len(value) == 2:
        item = tuple(value)
    else:
        raise _refused(value, index)
    try:
        (message,) = convert_to_messages([item])
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        reason = str(exc).split("\n", 1)[0]
        raise _refused(value, index, reason) from exc
    return message


def input_messages(value: object) -> list[BaseMessage]:
    """The messages of a run's input, in order (none for ``None``).

    Raises:
        RetroValueError: If the input is not message-like.
    """
    if value is None:
        return []
    if isinstance(value, PromptValue):
        return value.to_messages()
    # A top-level tuple that is a (role, content) pair is one message; a list is
    # always a list of messages, as in LangChain.
    if isinstance(value, str | BaseMessage | Mapping) or (
        isinstance(value, tuple) and _is_role_pair(value)
    ):
        return [_convert(value, None)]
    if not isinstance(value, list | tuple):
        raise _refused(value, None)
    messages: list[BaseMessage] = []
    for index, item in enumerate(value):
        if isinstance(item, PromptValue):
            messages.extend(item.to_messages())
        else:
            messages.append(_convert(item, index))
    return messages


def run_input(value: object) -> RunInput:
    """Check and split a run's input; every message is checked before any write.

    Raises:
        RetroValueError: If the input is not message-like.
        MessageConversionError: If a message cannot be stored.
    """
    messages = input_messages(value)
    instructions = [m for m in messages if isinstance(m, SystemMessage)]
    kept = [m for m in messages if not isinstance(m, SystemMessage)]
    return RunInput(
        instructions=list(instructions),
        messages=[
            NewMessage(role=role, payload=payload)
            for role, payload in _messages.to_payloads(kept)
        ],
    )


def check_config(config: object) -> None:
    """Refuse a config LangChain would fail on with a raw error.

    Raises:
        RetroValueError: If ``config`` or its ``configurable`` is not a mapping.
    """
    if config is not None and not isinstance(config, Mapping):
        raise RetroValueError(
            f"ThreadRunner's config is {_describe(config)}, not a mapping. Pass "
            f'config={{"configurable": {{"{THREAD_ID_KEY}": thread.id}}}}.'
        )
    for key, types in _CONFIG_TYPES.items():
        value = (config or {}).get(key)
        if value is not None and not isinstance(value, types):
            kinds = " or ".join(t.__name__ for t in types)
            raise RetroValueError(
                f'ThreadRunner\'s config["{key}"] is {_describe(value)}, not a '
                f"{kinds}. Pass, for instance, "
                f'config={{"configurable": {{"{THREAD_ID_KEY}": thread.id}}}}.'
            )


_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "configurable": (Mapping,),
    "metadata": (Mapping,),
    "tags": (list, tuple),
    "callbacks": (list, tuple, BaseCallbackManager),
    "run_name": (str,),
}
"""RunnableConfig keys LangChain copies or iterates without checking, and the types
they must have (or ``None``)."""


@functools.cache
def _call_parameters() -> frozenset[str]:
    """The keyword arguments a run may pass on to the model call."""
    create = inspect.signature(Completions.create).parameters
    # "messages" and "stream" are the runner's to set; the last two are LangChain's.
    sent = set(create).difference({"self", "messages", "stream"})
    return frozenset(sent | {"ls_structured_output_format", "stream_usage"})


def check_call_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Refuse keyword arguments the Chat Completions call would fail on.

    Raises:
        RetroValueError: Naming the unknown arguments, before anything is written.
    """
    unknown = sorted(set(kwargs).difference(_call_parameters()))
    if unknown:
        raise RetroValueError(
            f"ThreadRunner cannot send {unknown} with the Chat Completions call: "
            "keyword arguments of invoke, stream and bind are request parameters "
            "(temperature, max_tokens, stop, response_format, extra_body...). Put "
            "other request fields in extra_body={...}. Nothing was stored."
        )


def thread_id_of(config: Mapping[str, Any] | None) -> str:
    """The thread a run works on, from ``config["configurable"]["thread_id"]``.

    Raises:
        RetroValueError: If the config is malformed, or the key missing or empty.
    """
    check_config(config)
    value = ((config or {}).get("configurable") or {}).get(THREAD_ID_KEY)
    if not isinstance(value, str) or not value:
        raise RetroValueError(
            f'ThreadRunner needs the thread id in config["configurable"]'
            f'["{THREAD_ID_KEY}"], got {value!r}. Pass '
            f'config={{"configurable": {{"{THREAD_ID_KEY}": thread.id}}}}.'
        )
    return value


def check_run_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Run options checked and normalised, before anything is written.

    Raises:
        RetroValueError: Naming the option, what it got and what it takes.
    """
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name in ("instructions", "additional_instructions"):
            if not isinstance(value, str):
                raise RetroValueError(
                    f"Run option {name} must be a string, got {value!r}."
                )
        elif name == "max_prompt_tokens":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RetroValueError(
                    "Run option max_prompt_tokens must be a positive int, got "
                    f"{value!r}."
                )
        elif name == "truncation_strategy":
            try:
                value = TruncationStrategy.model_validate(value)  # noqa: PLW2901
            except Exception as exc:
                raise RetroValueError(
                    "Run option truncation_strategy must be {'type': 'auto'} or "
                    "{'type': 'last_messages', 'last_messages': N} (N >= 1), got "
                    f"{value!r}."
                ) from exc
            if value.type == "last_messages" and value.last_messages is None:
                raise RetroValueError(
                    "truncation_strategy {'type': 'last_messages'} needs "
                    "last_messages=N."
                )
        elif name == "metadata":
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise RetroValueError(
                    f"Run option metadata must map strings to strings, got {value!r}."
                )
            value = dict(value)  # noqa: PLW2901
        checked[name] = value
    return checked
