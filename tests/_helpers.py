"""Fixtures shared by the test modules: one test body for the sync and async APIs.

Test modules load this file as a plugin (``pytest_plugins = ["_helpers"]``; import it
only under ``TYPE_CHECKING``) to get the ``mode`` and ``call`` fixtures::

    async def test_get(store, call):
        thread = await call(store, "create_thread", {})
        assert (await call(store, "get_thread", thread.id)) == thread

``call(obj, "name", ...)`` runs ``obj.name(...)`` under ``sync`` and awaits
``obj.aname(...)`` under ``async``, so every test runs once per API.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

MODES = ("sync", "async")


class Caller:
    """Calls a method or its ``a``-prefixed async twin, as the mode says."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __repr__(self) -> str:
        return f"Caller({self.mode!r})"

    async def __call__(self, obj: Any, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``obj.name`` (sync) or await ``obj.aname`` (async)."""
        if self.mode == "sync":
            result = getattr(obj, name)(*args, **kwargs)
            assert not inspect.isawaitable(result), f"{name} returned an awaitable"
            return result
        result = getattr(obj, f"a{name}")(*args, **kwargs)
        assert inspect.isawaitable(result), f"a{name} is not async"
        return await result

    async def messages(self, history: Any) -> list[BaseMessage]:
        """A chat history's messages: ``.messages`` or ``await .aget_messages()``."""
        if self.mode == "sync":
            return list(history.messages)
        return list(await history.aget_messages())


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """The API under test: ``sync`` or ``async``."""
    return str(request.param)


@pytest.fixture
def call(mode: str) -> Caller:
    """A `Caller` for the API under test."""
    return Caller(mode)
