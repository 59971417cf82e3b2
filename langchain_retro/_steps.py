"""Logic written once, I/O twice: generators of effects and their two drivers.

An operation that needs I/O is written once as a generator: it yields each effect
it needs (a store call, a SQL statement...), receives the effect's result, and
returns its own result. `drive` performs the effects with a sync function and
`adrive` with an async one, so the logic has one copy and each kind of I/O a thin
one. An effect's error is thrown into the generator at the ``yield``, which may
handle it or let it go.

Store calls are effects of type `Call`, made with `call`, whose types mypy checks:
``rows = yield from call(store.list_messages, store.alist_messages, thread_id)``
gives ``rows`` the sync method's return type, and both methods must accept the
same arguments. The PostgreSQL store yields its SQL statements the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeAlias, TypeVar, cast

__all__ = ["Call", "Steps", "adrive", "adrive_calls", "call", "drive", "drive_calls"]

E = TypeVar("E")
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

Steps: TypeAlias = Generator[E, Any, T]
"""An operation: yields effects of type ``E``, receives their results, returns ``T``."""


def drive(
    steps: Steps[E, T],
    perform: Callable[[E], Any],
    *,
    throw: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Run an operation, performing each effect with a sync function.

    Args:
        steps: The operation.
        perform: Performs one effect and returns its result.
        throw: The errors of ``perform`` thrown into the operation; others leave
            at once (the operation is closed).

    Returns:
        The operation's result.
    """
    try:
        effect = next(steps)
        while True:
            try:
                result = perform(effect)
            except throw as exc:
                effect = steps.throw(exc)
                continue
            effect = steps.send(result)
    except StopIteration as done:
        return cast("T", done.value)
    finally:
        steps.close()


async def adrive(
    steps: Steps[E, T],
    perform: Callable[[E], Awaitable[Any]],
    *,
    throw: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Async twin of `drive`: each effect is performed by awaiting ``perform``."""
    try:
        effect = next(steps)
        while True:
            try:
                result = await perform(effect)
            except throw as exc:
                effect = steps.throw(exc)
                continue
            effect = steps.send(result)
    except StopIteration as done:
        return cast("T", done.value)
    finally:
        steps.close()


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One call with a sync and an async form, e.g. a store method and its twin."""

    sync: Callable[[], R]
    """Makes the call."""
    async_: Callable[[], Awaitable[R]]
    """Makes the async twin of the call."""


def call(
    sync: Callable[P, R],
    async_: Callable[P, Awaitable[R]],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> Steps[Call[R], R]:
    """Yield one call (made by `drive_calls` or `adrive_calls`); return its result.

    Args:
        sync: The sync function, e.g. ``store.get_thread``.
        async_: Its async twin, e.g. ``store.aget_thread``, taking the same arguments.
        *args: Positional arguments for either.
        **kwargs: Keyword arguments for either.
    """
    result = yield Call(
        functools.partial(sync, *args, **kwargs),
        functools.partial(async_, *args, **kwargs),
    )
    return cast("R", result)


def _sync(effect: Call[Any]) -> Any:
    return effect.sync()


def _async(effect: Call[Any]) -> Awaitable[Any]:
    return effect.async_()


def drive_calls(steps: Steps[Call[Any], T]) -> T:
    """Run an operation of `Call` effects with their sync forms."""
    return drive(steps, _sync, throw=(BaseException,))


async def adrive_calls(steps: Steps[Call[Any], T]) -> T:
    """Run an operation of `Call` effects with their async forms."""
    return await adrive(steps, _async, throw=(BaseException,))
