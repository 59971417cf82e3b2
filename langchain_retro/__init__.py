"""langchain-retro: the Assistants API data model inside LangChain.

Assistants, threads and messages with typed metadata live in a store (the data plane);
runs are completed through Chat Completions with ``ChatOpenAI`` (the execution plane).
"""

from __future__ import annotations

from importlib import metadata as _importlib_metadata
from typing import TYPE_CHECKING, Any

from langchain_retro._metadata import OPENAI_LIMITS, UNLIMITED, MetadataLimits
from langchain_retro.chat_message_histories import AssistantThreadChatMessageHistory
from langchain_retro.errors import (
    AssistantInUseError,
    AssistantNotFoundError,
    CorruptDataError,
    ExportFormatError,
    IdsNotKeptError,
    MessageConversionError,
    MessageIdConflictError,
    MessageNotFoundError,
    MetadataError,
    MetadataLimitError,
    MissingDependencyError,
    ModelCallError,
    NotFoundError,
    NothingToRunError,
    RecordClassError,
    RetroError,
    RetroValueError,
    RunCancelledError,
    RunError,
    RunIncompleteError,
    RunNotFoundError,
    RunStateError,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    ThreadBusyError,
    ThreadNotFoundError,
    ToolOutputsError,
    TransferError,
)
from langchain_retro.migration import (
    TransferReport,
    VerifyReport,
    aexport_to_file,
    aimport_from_file,
    amigrate,
    averify_migration,
    export_to_file,
    import_from_file,
    migrate,
    open_store,
    verify_migration,
)
from langchain_retro.records import (
    Assistant,
    BaseAssistant,
    BaseMessage,
    BaseThread,
    ChatCompletionThread,
    Page,
    ThreadMessage,
)
from langchain_retro.runs import Run, RunStep, RunUsage
from langchain_retro.stores.base import BaseStore
from langchain_retro.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from langchain_retro.runnables import ThreadRunner
    from langchain_retro.stores.assistants_api import AssistantsAPIStore
    from langchain_retro.stores.postgres import PostgresStore  # noqa: F401

try:
    __version__ = _importlib_metadata.version("langchain-retro")
except (
    _importlib_metadata.PackageNotFoundError
):  # pragma: no cover - running from a checkout
    __version__ = "0.0.0"

__all__ = [
    "OPENAI_LIMITS",
    "UNLIMITED",
    "Assistant",
    "AssistantInUseError",
    "AssistantNotFoundError",
    "AssistantThreadChatMessageHistory",
    "AssistantsAPIStore",
    "BaseAssistant",
    "BaseMessage",
    "BaseStore",
    "BaseThread",
    "ChatCompletionThread",
    "CorruptDataError",
    "ExportFormatError",
    "IdsNotKeptError",
    "MessageConversionError",
    "MessageIdConflictError",
    "MessageNotFoundError",
    "MetadataError",
    "MetadataLimitError",
    "MetadataLimits",
    "MissingDependencyError",
    "ModelCallError",
    "NotFoundError",
    "NothingToRunError",
    "Page",
    "RecordClassError",
    "RetroError",
    "RetroValueError",
    "Run",
    "RunCancelledError",
    "RunError",
    "RunIncompleteError",
    "RunNotFoundError",
    "RunStateError",
    "RunStep",
    "RunUsage",
    "SQLiteStore",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreError",
    "ThreadBusyError",
    "ThreadMessage",
    "ThreadNotFoundError",
    "ThreadRunner",
    "ToolOutputsError",
    "TransferError",
    "TransferReport",
    "VerifyReport",
    "__version__",
    "aexport_to_file",
    "aimport_from_file",
    "amigrate",
    "averify_migration",
    "export_to_file",
    "import_from_file",
    "migrate",
    "open_store",
    "verify_migration",
]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore
    if name == "ThreadRunner":
        # Imported on first use: it pulls in langchain-openai and the openai SDK.
        from langchain_retro.runnables import ThreadRunner  # noqa: PLC0415

        return ThreadRunner
    if name == "AssistantsAPIStore":
        from langchain_retro.stores.assistants_api import (  # noqa: PLC0415
            AssistantsAPIStore,
        )

        return AssistantsAPIStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
