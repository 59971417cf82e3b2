"""The API's routes, one module per resource: assistants, threads, messages, runs."""

from __future__ import annotations

__all__: list[str] = []
