"""The public API is pinned: adding or removing a name is a deliberate change here."""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import re

import pytest

import langchain_retro
import langchain_retro.errors
import langchain_retro.stores

PUBLIC = [
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

STORES = ["AssistantsAPIStore", "BaseStore", "PostgresStore", "SQLiteStore"]

HAS_POSTGRES_MODULE = importlib.util.find_spec("langchain_retro.stores.postgres")


def test_all_is_pinned() -> None:
    assert sorted(langchain_retro.__all__) == sorted(PUBLIC)
    assert len(set(langchain_retro.__all__)) == len(langchain_retro.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_imports(name: str) -> None:
    value = getattr(langchain_retro, name)
    assert value is not None
    if name != "__version__" and hasattr(value, "__module__"):
        assert value.__module__.startswith("langchain_retro")


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from langchain_retro import *", namespace)  # noqa: S102
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(PUBLIC)


def test_version_is_a_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", langchain_retro.__version__)


def test_stores_all_is_pinned() -> None:
    assert sorted(langchain_retro.stores.__all__) == STORES
    assert langchain_retro.stores.SQLiteStore is langchain_retro.SQLiteStore
    assert langchain_retro.stores.BaseStore is langchain_retro.BaseStore


@pytest.mark.skipif(
    not HAS_POSTGRES_MODULE, reason="langchain_retro.stores.postgres not written yet"
)
def test_postgres_store_imports_lazily() -> None:
    from langchain_retro.stores import PostgresStore  # noqa: PLC0415

    assert langchain_retro.PostgresStore is PostgresStore
    assert issubclass(PostgresStore, langchain_retro.BaseStore)


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = langchain_retro.NoSuchThing  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = langchain_retro.stores.NoSuchThing  # type: ignore[attr-defined]


def test_errors_all_is_exported_from_package() -> None:
    errors = langchain_retro.errors
    assert set(errors.__all__) <= set(PUBLIC)
    for name in errors.__all__:
        assert getattr(langchain_retro, name) is getattr(errors, name)


# --- the exception tree as drawn in errors.py ----------------------------------------

_LINE = re.compile(
    r"^(?P<indent>[\s│]*)(?:[├└]── )?(?P<name>\w+)(?:\((?P<bases>[^)]*)\))?"
)


def _drawn_tree() -> list[tuple[str, str | None, list[str]]]:
    """(class, parent in the drawing, bases named in parentheses), top to bottom."""
    doc = langchain_retro.errors.__doc__ or ""
    lines = [line for line in doc.splitlines() if "RetroError" in line or "──" in line]
    start = next(i for i, line in enumerate(lines) if line.strip() == "RetroError")
    parents: list[tuple[int, str]] = []
    out = []
    for line in lines[start:]:
        body = line.lstrip()
        match = _LINE.match(body)
        assert match, line
        depth = line.find(match.group("name"))
        while parents and parents[-1][0] >= depth:
            parents.pop()
        bases = [b.strip() for b in (match.group("bases") or "").split(",") if b]
        out.append((match.group("name"), parents[-1][1] if parents else None, bases))
        parents.append((depth, match.group("name")))
    return out


def _resolve(name: str) -> type:
    found = getattr(langchain_retro.errors, name, None) or getattr(builtins, name)
    assert isinstance(found, type), name
    return found


def test_error_tree_lists_every_error() -> None:
    drawn = {name for name, _, _ in _drawn_tree()}
    assert drawn == set(langchain_retro.errors.__all__)


@pytest.mark.parametrize(
    ("name", "parent", "bases"),
    _drawn_tree(),
    ids=[entry[0] for entry in _drawn_tree()],
)
def test_error_subclasses_what_the_tree_draws(
    name: str, parent: str | None, bases: list[str]
) -> None:
    cls = _resolve(name)
    assert issubclass(cls, langchain_retro.RetroError)
    if parent is not None:
        assert issubclass(cls, _resolve(parent)), f"{name} is not a {parent}"
    for base in bases:
        assert issubclass(cls, _resolve(base)), f"{name} is not a {base}"


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        ("NotFoundError", LookupError),
        ("ThreadNotFoundError", LookupError),
        ("RetroValueError", ValueError),
        ("MetadataLimitError", ValueError),
        ("MessageConversionError", ValueError),
        ("MessageIdConflictError", ValueError),
        ("RecordClassError", ValueError),
        ("CorruptDataError", RuntimeError),
        ("AssistantInUseError", RuntimeError),
        ("StoreClosedError", RuntimeError),
        ("SchemaVersionError", RuntimeError),
        ("MissingDependencyError", ImportError),
        ("ThreadBusyError", TimeoutError),
        ("ModelCallError", RuntimeError),
        ("RunNotFoundError", LookupError),
        ("RunStateError", ValueError),
        ("ToolOutputsError", ValueError),
        ("RunCancelledError", RuntimeError),
        ("RunIncompleteError", RuntimeError),
    ],
)
def test_errors_catchable_as_builtins(error: str, builtin: type) -> None:
    assert issubclass(_resolve(error), builtin)


def test_not_found_carries_the_id() -> None:
    error = langchain_retro.MessageNotFoundError("msg_1", hint="(in thread 't')")
    assert error.object_id == "msg_1"
    assert "msg_1" in str(error)
    assert "(in thread 't')" in str(error)
    assert importlib.import_module("langchain_retro.errors") is langchain_retro.errors
