"""The exception tree of langchain-retro.

Every error the package raises on purpose derives from `RetroError` and from the
built-in exception it means, so callers can catch either::

    RetroError
    ├── NotFoundError(RetroError, LookupError)
    │   ├── AssistantNotFoundError
    │   ├── ThreadNotFoundError
    │   ├── MessageNotFoundError
    │   └── RunNotFoundError
    ├── RetroValueError(RetroError, ValueError)
    │   ├── MetadataError                 typed metadata cannot be encoded or decoded
    │   │   └── MetadataLimitError        over a store's key, key-length or value limits
    │   ├── MessageConversionError        a message type outside the allowlist
    │   ├── MessageIdConflictError        a caller's message id already in the thread
    │   ├── RecordClassError              a record of one class read as another
    │   ├── RunStateError                 the run's status does not allow this
    │   └── ToolOutputsError              tool results that do not match the calls
    ├── AssistantInUseError(RetroError, RuntimeError)
    ├── StoreClosedError(RetroError, RuntimeError)
    ├── StoreError(RetroError, RuntimeError)   the backend failed; the cause is chained
    │   ├── SchemaVersionError                 the database is newer than this package
    │   └── CorruptDataError                   a stored row no longer rebuilds
    ├── IdsNotKeptError(RetroError, NotImplementedError)  a store assigns its own ids
    ├── TransferError(RetroError, RuntimeError)  a copy or import cannot go on safely
    │   └── ExportFormatError(TransferError, ValueError)  an export file is not usable
    ├── MissingDependencyError(RetroError, ImportError)
    └── RunError(RetroError, RuntimeError)
        ├── ThreadBusyError(RunError, TimeoutError)
        ├── NothingToRunError
        ├── ModelCallError                     the Chat Completions call failed
        ├── RunCancelledError                  the run was cancelled; no reply stored
        └── RunIncompleteError                 max_steps or the token budget ended it

Errors carry the ids involved as attributes and say what to do in their message.
Errors raised from another library's error chain it with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "AssistantInUseError",
    "AssistantNotFoundError",
    "CorruptDataError",
    "ExportFormatError",
    "IdsNotKeptError",
    "MessageConversionError",
    "MessageIdConflictError",
    "MessageNotFoundError",
    "MetadataError",
    "MetadataLimitError",
    "MissingDependencyError",
    "ModelCallError",
    "NotFoundError",
    "NothingToRunError",
    "RecordClassError",
    "RetroError",
    "RetroValueError",
    "RunCancelledError",
    "RunError",
    "RunIncompleteError",
    "RunNotFoundError",
    "RunStateError",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreError",
    "ThreadBusyError",
    "ThreadNotFoundError",
    "ToolOutputsError",
    "TransferError",
]


class RetroError(Exception):
    """Base class of every error langchain-retro raises on purpose."""


class NotFoundError(RetroError, LookupError):
    """An object with the given id does not exist in the store."""

    kind: str = "object"

    def __init__(self, object_id: str, *, hint: str = "") -> None:
        self.object_id = object_id
        message = f"No {self.kind} with id {object_id!r} in this store."
        super().__init__(f"{message} {hint}".strip())


class AssistantNotFoundError(NotFoundError):
    """No assistant with this id."""

    kind = "assistant"


class ThreadNotFoundError(NotFoundError):
    """No thread with this id."""

    kind = "thread"


class MessageNotFoundError(NotFoundError):
    """No message with this id (in this thread)."""

    kind = "message"


class RunNotFoundError(NotFoundError):
    """No run with this id (on this thread)."""

    kind = "run"


class RetroValueError(RetroError, ValueError):
    """A value given to langchain-retro is not acceptable."""


class MetadataError(RetroValueError):
    """A typed field cannot be encoded into metadata, or decoded from it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class MetadataLimitError(MetadataError):
    """Encoded metadata goes over one of the store's metadata limits.

    Raised before anything is written.
    """

    def __init__(
        self, message: str, *, field: str | None, limit: int, size: int
    ) -> None:
        self.limit = limit
        self.size = size
        super().__init__(message, field=field)


class MessageConversionError(RetroValueError):
    """A message cannot be stored or rebuilt: its type is outside the allowlist."""


class MessageIdConflictError(RetroValueError):
    """A caller-supplied message id is already in the thread; nothing was written.

    Also raised for an id given twice in one batch.
    """

    def __init__(self, thread_id: str, message_id: str) -> None:
        self.thread_id = thread_id
        self.message_id = message_id
        super().__init__(
            f"Thread {thread_id!r} already has a message with id {message_id!r} (or "
            "the batch gives it twice); nothing was written. Message ids are unique "
            "within a thread: give the message another id, or none to get a "
            "msg_... id."
        )


class RecordClassError(RetroValueError):
    """A stored record belongs to a class that is not the one asked for."""


class RunStateError(RetroValueError):
    """The run's status does not allow what was asked.

    Cancelling a run that already ended, or giving a thread new input while a run on
    it waits for tool results (``requires_action``). Nothing the caller asked for was
    written; a run found past its lease is recorded as ``expired`` on the way, as every
    read of it would.
    """

    def __init__(
        self, message: str, *, thread_id: str, run_id: str, status: str
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.status = status
        super().__init__(message)


class ToolOutputsError(RetroValueError):
    """Tool results that leave a call of the run unanswered or answer an unknown one.

    Raised before anything is stored; names the run and the tool call ids.
    """

    def __init__(
        self,
        message: str,
        *,
        thread_id: str,
        run_id: str,
        missing: tuple[str, ...] = (),
        unknown: tuple[str, ...] = (),
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.missing = missing
        self.unknown = unknown
        super().__init__(message)


class AssistantInUseError(RetroError, RuntimeError):
    """An assistant still has threads, and the delete did not say what to do."""

    def __init__(self, assistant_id: str, thread_count: int) -> None:
        self.assistant_id = assistant_id
        self.thread_count = thread_count
        super().__init__(
            f"Assistant {assistant_id!r} still has {thread_count} thread(s). "
            "Pass threads='delete' to delete them with their messages, or "
            "threads='keep' to keep them (runs on them will then fail)."
        )


class StoreClosedError(RetroError, RuntimeError):
    """The store was closed; open a new one."""


class StoreError(RetroError, RuntimeError):
    """The storage backend failed; the backend's error is chained as the cause."""


class SchemaVersionError(StoreError):
    """The database was written by a newer langchain-retro than this one."""


class CorruptDataError(StoreError):
    """A stored row no longer rebuilds (edited by hand or by another tool).

    Names the object (and its thread, for a message); other objects stay readable.
    Nothing outside the allowlist of types is ever revived to read it.
    """

    def __init__(
        self, message: str, *, object_id: str, thread_id: str | None = None
    ) -> None:
        self.object_id = object_id
        self.thread_id = thread_id
        super().__init__(message)


class IdsNotKeptError(RetroError, NotImplementedError):
    """The store cannot write records under the ids they already have.

    Raised by the id-keeping import operations of a store that assigns its own ids
    (`langchain_retro.stores.base.BaseStore.keeps_ids` is false).
    """


class TransferError(RetroError, RuntimeError):
    """A copy (migrate, import) cannot go on without losing or duplicating data.

    The message names the object and what differs; nothing more was written.
    """


class ExportFormatError(TransferError, ValueError):
    """An export file is not a langchain-retro export this version can read.

    Carries the ``line`` (1-based) where the problem is, ``None`` for the whole file.
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        super().__init__(message)


class MissingDependencyError(RetroError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class RunError(RetroError, RuntimeError):
    """A run on a thread could not be completed."""

    def __init__(
        self, message: str, *, thread_id: str | None = None, run_id: str | None = None
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        super().__init__(message)


class ThreadBusyError(RunError, TimeoutError):
    """Another run holds the thread and did not finish within the wait timeout."""


class NothingToRunError(RunError):
    """The thread has no unanswered message and the run was given no input."""


class ModelCallError(RunError):
    """The Chat Completions call failed; the thread is left as it was."""


class RunCancelledError(RunError):
    """The run was cancelled (from this process or another); no reply was stored."""


class RunIncompleteError(RunError):
    """The run ended ``incomplete``: ``max_steps`` or the token budget was reached.

    What the run stored stays; ``reason`` is the run's ``incomplete_details`` reason.
    """

    def __init__(
        self, message: str, *, thread_id: str, run_id: str, reason: str
    ) -> None:
        self.reason = reason
        super().__init__(message, thread_id=thread_id, run_id=run_id)
