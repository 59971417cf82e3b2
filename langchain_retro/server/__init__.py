"""The Assistants v2 API, self-hosted: `create_app` and ``langchain-retro serve``.

Needs the ``server`` extra (``pip install 'langchain-retro[server]'``): FastAPI and
uvicorn. The modules: ``app`` (the app factory), ``auth`` (keys and owners),
``errors`` (OpenAI-shaped errors), ``requests`` and ``objects`` (the wire shapes),
``pagination``, ``routes`` (one module per resource), ``execution`` (runs in the
background, through the run engine), ``events`` (streams) and ``serve`` (the
command).
"""

from __future__ import annotations

from langchain_retro.errors import MissingDependencyError

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise MissingDependencyError(
        "The Assistants API server needs FastAPI and uvicorn: pip install "
        "'langchain-retro[server]'."
    ) from exc

from langchain_retro.server.app import create_app
from langchain_retro.server.context import ServerSettings
from langchain_retro.server.records import ServedAssistant

__all__ = ["ServedAssistant", "ServerSettings", "create_app"]
