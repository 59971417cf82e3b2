"""OpenAI's list parameters, and pages of items kept in memory.

``limit`` is 1 to 100 (default 20), ``order`` ``asc`` or ``desc`` (the default),
``after`` and ``before`` cursors are ids.

A listing answers ``{"object": "list", "data", "first_id", "last_id", "has_more"}``:
``after=last_id`` is the next page in ``order``, ``before=first_id`` the page before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from langchain_retro.server.errors import InvalidRequestError

__all__ = ["MAX_LIMIT", "ListParams", "page_of"]

MAX_LIMIT = 100
"""The largest page the API gives."""

DEFAULT_LIMIT = 20

T = TypeVar("T")


@dataclass(frozen=True)
class ListParams:
    """A listing's page: its size, order and cursor."""

    limit: int = DEFAULT_LIMIT
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None

    @property
    def backwards(self) -> bool:
        """Whether the page is the one nearest ``before`` (no ``after`` given).

        Such a page is read from the cursor against ``order`` (`reading_order`),
        then turned.
        """
        return self.before is not None and self.after is None

    @property
    def reading_order(self) -> Literal["asc", "desc"]:
        """The order to read from the cursor in: ``order``, reversed if `backwards`."""
        if not self.backwards:
            return self.order
        return "asc" if self.order == "desc" else "desc"

    @classmethod
    def of(cls, query: Mapping[str, str]) -> ListParams:
        """The parameters of a request's query string.

        Raises:
            InvalidRequestError: For a ``limit`` outside 1 to 100 or an ``order``
                other than ``asc`` and ``desc``, naming the parameter.
        """
        text = query.get("limit")
        limit = DEFAULT_LIMIT
        if text is not None:
            try:
                limit = int(text)
            except ValueError:
                limit = 0
            if not 1 <= limit <= MAX_LIMIT:
                raise InvalidRequestError(
                    f"Invalid 'limit': expected an integer between 1 and {MAX_LIMIT}, "
                    f"got {text!r}.",
                    param="limit",
                    code="integer_out_of_range",
                )
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequestError(
                f"Invalid 'order': expected 'asc' or 'desc', got {order!r}.",
                param="order",
            )
        return cls(
            limit=limit,
            order=order,  # type: ignore[arg-type]
            after=query.get("after") or None,
            before=query.get("before") or None,
        )


def page_of(
    items: Sequence[T], params: ListParams, key: Callable[[T], str]
) -> tuple[list[T], bool]:
    """A page of items held in memory, listed in creation order (oldest first).

    Args:
        items: Every item, oldest first.
        params: The page asked for.
        key: An item's id.

    Returns:
        The page in ``params.order`` and whether more follow.

    Raises:
        InvalidRequestError: For a cursor naming no item.
    """
    ordered = list(items) if params.order == "asc" else list(reversed(items))
    ids = [key(item) for item in ordered]
    start, end = 0, len(ordered)
    for name in ("after", "before"):
        cursor = getattr(params, name)
        if cursor is None:
            continue
        if cursor not in ids:
            raise InvalidRequestError(
                f"Invalid '{name}': no object with id {cursor!r} in this list.",
                param=name,
            )
        if name == "after":
            start = ids.index(cursor) + 1
        else:
            end = ids.index(cursor)
    window = ordered[start:end]
    if params.backwards:
        page = window[-params.limit :]
        return page, len(window) > params.limit
    return window[: params.limit], len(window) > params.limit
