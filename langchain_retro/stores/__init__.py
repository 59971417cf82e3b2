"""Stores keep assistants, threads and messages: the data plane.

`SQLiteStore` is the embedded default. `PostgresStore` (extra ``postgres``) is imported
lazily, so this package imports without psycopg installed. `AssistantsAPIStore` keeps
the data plane on ``langchain-retro serve``, over HTTP with the ``openai`` SDK (also
imported lazily).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_retro.stores.base import BaseStore
from langchain_retro.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from langchain_retro.stores.assistants_api import AssistantsAPIStore
    from langchain_retro.stores.postgres import PostgresStore

__all__ = ["AssistantsAPIStore", "BaseStore", "PostgresStore", "SQLiteStore"]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore
    if name == "AssistantsAPIStore":
        # Imported on first use: it pulls in the openai SDK.
        from langchain_retro.stores.assistants_api import (  # noqa: PLC0415
            AssistantsAPIStore,
        )

        return AssistantsAPIStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
