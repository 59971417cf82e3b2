"""The API's routes, one module per resource: assistants, threads, messages, runs.

``unsupported`` refuses the files and vector stores APIs by name.
"""

from __future__ import annotations

__all__: list[str] = []
