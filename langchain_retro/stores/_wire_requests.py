"""The requests `AssistantsAPIStore` sends, built and parsed without I/O.

Each store operation is one `Request`: the method, the path under the client's
``base_url`` (``/retro/...``, the ``/v1/retro`` routes of ``langchain-retro serve``),
the JSON body or query, and how to read the answer. Every check that can run
before a request runs here, so a refused write never reaches the server.
The store sends a request with the sync or the async SDK client, and that is all
its methods do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from langchain_retro._metadata import (
    MetadataLimits,
    MetadataPatch,
    unencodable_error,
)
from langchain_retro.stores._wire import decode_message, quote_id, wire_message
from langchain_retro.stores.base import (
    AssistantThreads,
    Lease,
    MessageRow,
    NewMessage,
    NewRun,
    Order,
    RunLeaseState,
    RunSaved,
    RunStart,
    RunUpdate,
    RunUsage,
    StoredAssistant,
    StoredMessage,
    StoredRun,
    StoredThread,
    ThreadCopy,
    ThreadQuery,
    check_assistant_fields,
    check_copies,
    check_hwm_key,
    check_metadata,
    check_new_ids,
)

__all__ = ["Request", "Requests"]

T = TypeVar("T")
Method = Literal["get", "post", "delete"]


@dataclass(frozen=True)
class Request(Generic[T]):
    """One request and how to read its answer."""

    method: Method
    """The HTTP method."""
    path: str
    """The path under the client's ``base_url``."""
    parse: Callable[[Any], T]
    """Turns the answer's JSON into the operation's result."""
    body: dict[str, Any] | None = None
    """The JSON body."""
    params: dict[str, Any] = field(default_factory=dict)
    """The query."""


def _text(value: str) -> str:
    """A string sent as is, once checked to be valid Unicode text."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise unencodable_error(exc) from exc
    return value


def _seg(value: str) -> str:
    """An id as a path segment: valid text, quoted (`quote_id`)."""
    return quote_id(_text(value))


def _thread(thread_id: str) -> str:
    return f"/retro/threads/{_seg(thread_id)}"


def _messages(data: Any) -> list[StoredMessage]:
    return [decode_message(item) for item in data["data"]]


def _patch(patch: MetadataPatch | None) -> dict[str, Any] | None:
    return None if patch is None else patch.model_dump(mode="json")


def _none(data: Any) -> None:
    return None


class Requests:
    """Builds the store's requests for the store's current limits."""

    def __init__(self, limits: Callable[[], MetadataLimits]) -> None:
        self._limits = limits

    @property
    def limits(self) -> MetadataLimits:
        """The store's limits now (tests and callers may change them)."""
        return self._limits()

    def _wire(
        self, thread_id: str, messages: Sequence[NewMessage]
    ) -> list[dict[str, Any]]:
        check_new_ids(thread_id, messages)
        limits = self.limits
        return [
            wire_message(m, limits, where=f"Message {index} of the batch").model_dump(
                mode="json", exclude_none=True
            )
            for index, m in enumerate(messages)
        ]

    def _limits_json(self) -> dict[str, Any]:
        return self.limits.model_dump(mode="json")

    # --- assistants ------------------------------------------------------------------

    def create_assistant(
        self, fields: Mapping[str, Any], metadata: Mapping[str, str]
    ) -> Request[StoredAssistant]:
        check_assistant_fields(fields)
        checked = check_metadata(metadata, self.limits, "Assistant")
        return Request(
            "post",
            "/retro/assistants",
            StoredAssistant.model_validate,
            {
                "fields": dict(fields),
                "metadata": checked,
                "limits": self._limits_json(),
            },
        )

    def get_assistant(self, assistant_id: str) -> Request[StoredAssistant]:
        return Request(
            "get",
            f"/retro/assistants/{_seg(assistant_id)}",
            StoredAssistant.model_validate,
        )

    def update_assistant(
        self,
        assistant_id: str,
        fields: Mapping[str, Any],
        patch: MetadataPatch | None,
    ) -> Request[StoredAssistant]:
        check_assistant_fields(fields)
        return Request(
            "post",
            f"/retro/assistants/{_seg(assistant_id)}",
            StoredAssistant.model_validate,
            {
                "fields": dict(fields),
                "patch": _patch(patch),
                "limits": self._limits_json(),
            },
        )

    def delete_assistant(
        self, assistant_id: str, threads: AssistantThreads
    ) -> Request[int]:
        return Request(
            "delete",
            f"/retro/assistants/{_seg(assistant_id)}",
            lambda data: int(data["deleted_threads"]),
            params={"threads": threads},
        )

    def list_assistants(
        self,
        metadata: Mapping[str, str] | None,
        classes: Sequence[str] | None,
        after: str | None,
        order: Order,
        limit: int,
    ) -> Request[list[StoredAssistant]]:
        return Request(
            "post",
            "/retro/assistants:list",
            lambda data: [StoredAssistant.model_validate(a) for a in data["data"]],
            {
                "metadata": dict(metadata or {}),
                "classes": None if classes is None else list(classes),
                "after": after,
                "order": order,
                "limit": limit,
            },
        )

    # --- threads ---------------------------------------------------------------------

    def create_threads(
        self, metadatas: Sequence[Mapping[str, str]]
    ) -> Request[list[StoredThread]]:
        checked = [check_metadata(m, self.limits, "Thread") for m in metadatas]
        return Request(
            "post",
            "/retro/threads",
            lambda data: [StoredThread.model_validate(t) for t in data["data"]],
            {"metadatas": checked, "limits": self._limits_json()},
        )

    def get_thread(self, thread_id: str) -> Request[StoredThread]:
        return Request("get", _thread(thread_id), StoredThread.model_validate)

    def update_thread(
        self, thread_id: str, patch: MetadataPatch
    ) -> Request[StoredThread]:
        return Request(
            "post",
            _thread(thread_id),
            StoredThread.model_validate,
            {"patch": _patch(patch), "limits": self._limits_json()},
        )

    def delete_thread(self, thread_id: str) -> Request[None]:
        return Request("delete", _thread(thread_id), _none)

    def list_threads(self, query: ThreadQuery) -> Request[list[StoredThread]]:
        check_metadata(query.metadata, MetadataLimits(), "Thread filter")
        return Request(
            "post",
            "/retro/threads:query",
            lambda data: [StoredThread.model_validate(t) for t in data["data"]],
            query.model_dump(mode="json"),
        )

    # --- messages --------------------------------------------------------------------

    def add_messages(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        thread_patch: MetadataPatch | None,
        hwm_key: str | None,
    ) -> Request[list[StoredMessage]]:
        if hwm_key is not None:
            check_hwm_key(hwm_key, self.limits)
        return Request(
            "post",
            f"{_thread(thread_id)}/messages",
            _messages,
            {
                "messages": self._wire(thread_id, messages),
                "thread_patch": _patch(thread_patch),
                "hwm_key": hwm_key,
                "limits": self._limits_json(),
            },
        )

    def add_messages_if_idle(
        self,
        thread_id: str,
        messages: Sequence[NewMessage],
        scope: Mapping[str, str] | None,
    ) -> Request[list[StoredMessage]]:
        body: dict[str, Any] = {
            "messages": self._wire(thread_id, messages),
            "if_idle": True,
            "limits": self._limits_json(),
        }
        if scope is not None:
            body["scope"] = {_text(k): _text(v) for k, v in scope.items()}
        return Request("post", f"{_thread(thread_id)}/messages", _messages, body)

    def bulk_add_messages(
        self, batches: Sequence[tuple[str, Sequence[NewMessage]]]
    ) -> Request[int]:
        wire = [[_text(tid), self._wire(tid, msgs)] for tid, msgs in batches]
        return Request(
            "post",
            "/retro/messages:bulk",
            lambda data: int(data["written"]),
            {"batches": wire, "limits": self._limits_json()},
        )

    def get_message(self, thread_id: str, message_id: str) -> Request[StoredMessage]:
        return Request(
            "get",
            f"{_thread(thread_id)}/messages/{_seg(message_id)}",
            decode_message,
        )

    def list_messages(
        self,
        thread_id: str,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int | None,
    ) -> Request[list[StoredMessage]]:
        return Request(
            "post",
            f"{_thread(thread_id)}/messages:list",
            _messages,
            {"after": after, "before": before, "order": order, "limit": limit},
        )

    def update_message(
        self, thread_id: str, message_id: str, patch: MetadataPatch
    ) -> Request[StoredMessage]:
        return Request(
            "post",
            f"{_thread(thread_id)}/messages/{_seg(message_id)}",
            decode_message,
            {"patch": _patch(patch), "limits": self._limits_json()},
        )

    def delete_message(self, thread_id: str, message_id: str) -> Request[None]:
        return Request(
            "delete", f"{_thread(thread_id)}/messages/{_seg(message_id)}", _none
        )

    def clear_messages(
        self, thread_id: str, thread_patch: MetadataPatch | None
    ) -> Request[int]:
        return Request(
            "post",
            f"{_thread(thread_id)}/messages:clear",
            lambda data: int(data["deleted"]),
            {"thread_patch": _patch(thread_patch), "limits": self._limits_json()},
        )

    def count_messages(self, thread_id: str, after: str | None) -> Request[int]:
        params = {} if after is None else {"after": _text(after)}
        return Request(
            "get",
            f"{_thread(thread_id)}/messages:count",
            lambda data: int(data["count"]),
            params=params,
        )

    # --- leases ----------------------------------------------------------------------

    def acquire_lease(self, thread_id: str, owner: str, ttl: float) -> Request[bool]:
        return Request(
            "post",
            f"{_thread(thread_id)}/lease",
            lambda data: bool(data["acquired"]),
            {"owner": owner, "ttl": ttl},
        )

    def release_lease(self, thread_id: str, owner: str) -> Request[None]:
        return Request(
            "delete",
            f"{_thread(thread_id)}/lease",
            _none,
            params={"owner": _text(owner)},
        )

    def get_lease(self, thread_id: str) -> Request[Lease | None]:
        def parse(data: Any) -> Lease | None:
            lease = data["lease"]
            return None if lease is None else Lease.model_validate(lease)

        return Request("get", f"{_thread(thread_id)}/lease", parse)

    # --- runs ------------------------------------------------------------------------

    def begin_run(
        self,
        thread_id: str,
        *,
        owner: str,
        ttl: float,
        run: NewRun | None,
        messages: Sequence[NewMessage],
        context_limit: int | None,
        resume: bool,
    ) -> Request[RunStart | None]:
        def parse(data: Any) -> RunStart | None:
            start = data["start"]
            if start is None:
                return None
            return RunStart(
                thread=StoredThread.model_validate(start["thread"]),
                assistant=(
                    None
                    if start["assistant"] is None
                    else StoredAssistant.model_validate(start["assistant"])
                ),
                appended=[decode_message(m) for m in start["appended"]],
                context=[MessageRow.of(decode_message(m)) for m in start["context"]],
                run=StoredRun.model_validate(start["run"]),
                resumed=bool(start["resumed"]),
            )

        return Request(
            "post",
            f"{_thread(thread_id)}/runs:begin",
            parse,
            {
                "owner": owner,
                "ttl": ttl,
                "run": None if run is None else run.model_dump(mode="json"),
                "messages": self._wire(thread_id, messages),
                "context_limit": context_limit,
                "resume": resume,
                "limits": self._limits_json(),
            },
        )

    def finish_run(
        self,
        thread_id: str,
        *,
        owner: str,
        run_id: str,
        update: RunUpdate,
        messages: Sequence[NewMessage],
        thread_patch: MetadataPatch | None,
    ) -> Request[RunSaved]:
        def parse(data: Any) -> RunSaved:
            return RunSaved(
                messages=[decode_message(m) for m in data["messages"]],
                run=StoredRun.model_validate(data["run"]),
            )

        return Request(
            "post",
            f"{_thread(thread_id)}/runs/{_seg(run_id)}/finish",
            parse,
            {
                "owner": owner,
                "update": update.model_dump(mode="json"),
                "messages": self._wire(thread_id, messages),
                "thread_patch": _patch(thread_patch),
                "limits": self._limits_json(),
            },
        )

    def renew_run(
        self, thread_id: str, owner: str, ttl: float
    ) -> Request[RunLeaseState]:
        def parse(data: Any) -> RunLeaseState:
            state = data["state"]
            if state not in ("held", "cancelling", "lost"):
                raise ValueError(f"unknown lease state {state!r}")
            return state  # type: ignore[no-any-return]

        return Request(
            "post",
            f"{_thread(thread_id)}/runs:renew",
            parse,
            {"owner": owner, "ttl": ttl},
        )

    def get_run(self, thread_id: str, run_id: str) -> Request[StoredRun]:
        return Request(
            "get",
            f"{_thread(thread_id)}/runs/{_seg(run_id)}",
            StoredRun.model_validate,
        )

    def list_runs(
        self,
        thread_id: str,
        after: str | None,
        before: str | None,
        order: Order,
        limit: int,
    ) -> Request[list[StoredRun]]:
        return Request(
            "post",
            f"{_thread(thread_id)}/runs:list",
            lambda data: [StoredRun.model_validate(r) for r in data["data"]],
            {"after": after, "before": before, "order": order, "limit": limit},
        )

    def cancel_run(self, thread_id: str, run_id: str) -> Request[StoredRun]:
        return Request(
            "post",
            f"{_thread(thread_id)}/runs/{_seg(run_id)}/cancel",
            StoredRun.model_validate,
            {},
        )

    def update_run_metadata(
        self, thread_id: str, run_id: str, metadata: Mapping[str, str]
    ) -> Request[StoredRun]:
        checked = check_metadata(metadata, self.limits, "Run")
        return Request(
            "post",
            f"{_thread(thread_id)}/runs/{_seg(run_id)}/metadata",
            StoredRun.model_validate,
            {"metadata": checked},
        )

    def list_run_messages(
        self, thread_id: str, run_id: str
    ) -> Request[list[StoredMessage]]:
        return Request(
            "get", f"{_thread(thread_id)}/runs/{_seg(run_id)}/messages", _messages
        )

    def get_thread_usage(self, thread_id: str) -> Request[RunUsage]:
        return Request("get", f"{_thread(thread_id)}/usage", RunUsage.model_validate)

    # --- copies that keep ids (migrate, import) --------------------------------------

    def _import(
        self,
        path: str,
        key: str,
        records: Sequence[StoredAssistant | ThreadCopy | StoredRun],
        owner: str,
    ) -> Request[list[str]]:
        check_copies(records, self.limits, owner)
        return Request(
            "post",
            path,
            lambda data: [str(i) for i in data["written"]],
            {
                key: [r.model_dump(mode="json") for r in records],
                "limits": self._limits_json(),
            },
        )

    def import_assistants(
        self, assistants: Sequence[StoredAssistant]
    ) -> Request[list[str]]:
        return self._import(
            "/retro/assistants:import", "assistants", assistants, "Assistant"
        )

    def import_threads(self, threads: Sequence[ThreadCopy]) -> Request[list[str]]:
        return self._import("/retro/threads:import", "threads", threads, "Thread")

    def import_runs(self, runs: Sequence[StoredRun]) -> Request[list[str]]:
        return self._import("/retro/runs:import", "runs", runs, "Run")
