"""Typed record fields <-> metadata strings.

The Assistants API gives every object a ``metadata`` map of strings. A record subclass
adds typed fields; this module turns them into metadata entries and back:

* a field annotated ``str`` (or ``str | None`` defaulting to ``None``) is stored as is,
  so it can be filtered on and read by any tool; ``None`` leaves the key out;
* every other type is stored as compact JSON produced from the field's annotation by
  pydantic and read back with the same annotation, so ``int``, ``float`` (including
  ``inf`` and ``nan``), ``bool``, ``None``, ``datetime``, enums, lists, dicts and nested
  models round-trip exactly (an aware datetime whose UTC offset is not a whole number
  of minutes, which JSON's offsets cannot hold, is stored as the same instant in UTC);
* a value longer than the store's value limit spans several keys: ``name``,
  ``name#1``, ``name#2``... Rewriting a field always drops all of its old pieces, so
  shrinking a value never leaves stale pieces behind.

Limits are checked on the final metadata, before anything is written, by
`check_limits`; the error names the field or key, the limit and the size.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Union, get_args, get_origin

import pydantic_core
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from langchain_retro.errors import MetadataError, MetadataLimitError, RetroValueError

__all__ = [
    "CLASS_KEY",
    "OPENAI_LIMITS",
    "UNLIMITED",
    "FieldCodec",
    "MetadataLimits",
    "MetadataPatch",
    "check_encodable",
    "check_limits",
    "decode_fields",
    "encode_fields",
    "field_keys",
    "split_metadata",
    "unencodable_error",
]

CLASS_KEY = "retro_class"
"""The metadata key that remembers which record class wrote an object."""

_PIECE_SEP = "#"
_PIECE_RE = re.compile(r"^(?P<name>.+)#(?P<index>[1-9][0-9]*)$")


class MetadataLimits(BaseModel):
    """Limits a store puts on an object's metadata; ``None`` means no limit."""

    model_config = ConfigDict(frozen=True)

    max_keys: int | None = None
    """How many keys one object's metadata may hold."""
    max_key_length: int | None = None
    """How many characters one key may have."""
    max_value_length: int | None = None
    """How many characters one value may have; longer typed values span keys."""


UNLIMITED = MetadataLimits()
"""No limits: the embedded and PostgreSQL stores."""

OPENAI_LIMITS = MetadataLimits(max_keys=16, max_key_length=64, max_value_length=512)
"""The limits of OpenAI's metadata: 16 keys of up to 64 characters, values of 512."""


def _whole_minute_offsets(value: Any) -> Any:
    """Move aware datetimes with sub-minute UTC offsets to UTC, at any depth.

    Pydantic writes offsets as ``+HH:MM`` and would silently drop the seconds of an
    offset such as a historic local mean time (``+00:53:28``), shifting the instant.
    """
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is not None and offset % timedelta(minutes=1):
            return value.astimezone(UTC)
        return value
    if isinstance(value, dict):
        return {
            _whole_minute_offsets(k): _whole_minute_offsets(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(_whole_minute_offsets(v) for v in value)
    return value


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and get_origin(annotation) is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _is_raw_str(annotation: Any, info: FieldInfo) -> bool:
    if annotation is str:
        return True
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = set(get_args(annotation))
        return args == {str, type(None)} and info.default is None
    return False


@dataclass(frozen=True, slots=True)
class FieldCodec:
    """How one typed field is written to metadata and read back."""

    name: str
    """The field's name, which is also its metadata key."""
    raw: bool
    """Whether the value is stored as the plain string (``str`` fields)."""
    absent_is_none: bool
    """Whether a missing key reads as ``None`` (``str | None`` fields)."""
    adapter: TypeAdapter[Any] = field(repr=False)
    """Validates and serialises values of the field's annotation."""
    type_name: str = "value"
    """The field's annotation as written, for error messages."""

    @classmethod
    def for_field(cls, name: str, info: FieldInfo) -> FieldCodec:
        """Build the codec of a pydantic field.

        Args:
            name: The field's name.
            info: The field's pydantic description.

        Raises:
            MetadataError: If the name cannot be a metadata key.
        """
        if _PIECE_SEP in name or name == CLASS_KEY:
            raise MetadataError(
                f"Field {name!r} cannot be stored in metadata: field names must not "
                f"contain {_PIECE_SEP!r} nor be {CLASS_KEY!r}. Rename the field.",
                field=name,
            )
        annotation = info.annotation
        raw = _is_raw_str(annotation, info)
        return cls(
            name=name,
            raw=raw,
            absent_is_none=raw and annotation is not str,
            adapter=TypeAdapter(annotation if annotation is not None else Any),
            type_name=_type_name(annotation),
        )

    def encode_filter(self, value: Any) -> str | None:
        """Encode a filter value, validated (and coerced) by the field's type first.

        A value pydantic would accept for the field (``"1"`` for an ``int``) filters
        as that field value would be stored; ``None`` means the key is left out.

        Raises:
            MetadataError: If the value is not valid for the field's type, naming the
                field, its type and the value.
        """
        try:
            valid = self.adapter.validate_python(value)
        except ValidationError as exc:
            reason = exc.errors(include_url=False)[0]["msg"]
            raise MetadataError(
                f"Cannot filter on {self.name}={value!r}: field {self.name!r} is "
                f"{self.type_name} and this value is not ({reason}). Pass a "
                f"{self.type_name} value.",
                field=self.name,
            ) from exc
        return self.encode(valid)

    def encode(self, value: Any) -> str | None:
        """Encode a value; ``None`` means the key is left out."""
        if self.raw:
            if value is None or isinstance(value, str):
                return value
            raise MetadataError(
                f"Field {self.name!r} holds {type(value).__name__}, expected str.",
                field=self.name,
            )
        try:
            plain = _whole_minute_offsets(
                self.adapter.dump_python(value, mode="python")
            )
            return pydantic_core.to_json(plain, inf_nan_mode="constants").decode()
        except (
            pydantic_core.PydanticSerializationError,
            ValueError,
            OverflowError,
        ) as exc:
            raise MetadataError(
                f"Field {self.name!r} cannot be encoded to metadata: {exc}",
                field=self.name,
            ) from exc

    def decode(self, text: str) -> Any:
        """Decode a stored string back into a value of the field's type."""
        if self.raw:
            return text
        try:
            return self.adapter.validate_json(text)
        except ValidationError as exc:
            raise MetadataError(
                f"Stored metadata for field {self.name!r} is not a valid "
                f"{self.adapter.core_schema.get('type', 'value')}: {text[:80]!r}. "
                "Was the field's type changed? Migrate the stored value.",
                field=self.name,
            ) from exc


def _pieces(name: str, text: str, limits: MetadataLimits) -> dict[str, str]:
    size = limits.max_value_length
    if size is None or len(text) <= size:
        return {name: text}
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    out = {name: chunks[0]}
    for index, chunk in enumerate(chunks[1:], start=1):
        out[f"{name}{_PIECE_SEP}{index}"] = chunk
    return out


def encode_fields(
    codecs: Iterable[FieldCodec], values: Mapping[str, Any], limits: MetadataLimits
) -> dict[str, str]:
    """Encode typed field values into metadata entries.

    Args:
        codecs: The codecs of the fields to encode.
        values: Field values by name; fields missing here are skipped.
        limits: The target store's limits, which decide how values span keys.

    Returns:
        The metadata entries, continuation pieces included.
    """
    out: dict[str, str] = {}
    for codec in codecs:
        if codec.name not in values:
            continue
        text = codec.encode(values[codec.name])
        if text is not None:
            out.update(_pieces(codec.name, text, limits))
    return out


def field_keys(name: str, metadata: Mapping[str, str]) -> list[str]:
    """The keys holding a field's value in ``metadata``, in order."""
    if name not in metadata:
        return []
    keys = [name]
    index = 1
    while (key := f"{name}{_PIECE_SEP}{index}") in metadata:
        keys.append(key)
        index += 1
    return keys


def decode_fields(
    codecs: Iterable[FieldCodec], metadata: Mapping[str, str]
) -> dict[str, Any]:
    """Decode typed fields from metadata; absent fields are left to their defaults."""
    values: dict[str, Any] = {}
    for codec in codecs:
        keys = field_keys(codec.name, metadata)
        if keys:
            values[codec.name] = codec.decode("".join(metadata[k] for k in keys))
        elif codec.absent_is_none:
            values[codec.name] = None
    return values


def _is_field_key(key: str, names: frozenset[str]) -> bool:
    if key in names or key == CLASS_KEY:
        return True
    match = _PIECE_RE.match(key)
    return match is not None and match.group("name") in names


def split_metadata(
    metadata: Mapping[str, str], names: frozenset[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Split stored metadata into (typed-field entries, free-form entries)."""
    typed: dict[str, str] = {}
    free: dict[str, str] = {}
    for key, value in metadata.items():
        (typed if _is_field_key(key, names) else free)[key] = value
    return typed, free


def check_free_keys(free: Mapping[str, str], names: frozenset[str]) -> None:
    """Refuse free-form metadata keys that belong to typed fields."""
    for key in free:
        if _is_field_key(key, names):
            raise MetadataError(
                f"Metadata key {key!r} is reserved by a typed field (or is the record "
                "class marker). Set the field itself, or choose another key.",
                field=key,
            )


def _field_of(key: str) -> str:
    match = _PIECE_RE.match(key)
    return match.group("name") if match else key


def unencodable_error(exc: UnicodeEncodeError) -> RetroValueError:
    r"""The error for a string a database cannot take: it is not valid Unicode text.

    Python strings may hold lone surrogates (``"\ud800"``), which UTF-8 cannot
    encode; the database driver refuses them while binding, before anything is
    written.
    """
    bad = exc.object[exc.start : exc.end]
    return RetroValueError(
        f"A string given to the store holds {bad!r} at position {exc.start}, which "
        "is not valid Unicode text (a lone surrogate) and cannot be stored or looked "
        "up; nothing was written. Pass valid text (decode bytes with "
        "errors='replace', or re-encode with 'surrogatepass' yourself)."
    )


def check_encodable(metadata: Mapping[str, str]) -> None:
    """Refuse metadata whose keys or values are not valid Unicode text.

    Raises:
        RetroValueError: Naming the character, before anything is written.
    """
    for key, value in metadata.items():
        try:
            key.encode()
            value.encode()
        except UnicodeEncodeError as exc:
            raise unencodable_error(exc) from exc


def check_limits(metadata: Mapping[str, str], limits: MetadataLimits) -> None:
    """Check final metadata against a store's limits.

    Args:
        metadata: The complete metadata an object would have after the write.
        limits: The store's limits.

    Raises:
        MetadataLimitError: Naming the field (or key), the limit and the size.
        RetroValueError: If a key or value is not valid Unicode text.
    """
    check_encodable(metadata)
    if limits.max_keys is not None and len(metadata) > limits.max_keys:
        counts: dict[str, int] = {}
        for key in metadata:
            counts[_field_of(key)] = counts.get(_field_of(key), 0) + 1
        widest = max(counts, key=lambda k: counts[k])
        raise MetadataLimitError(
            f"Metadata would need {len(metadata)} keys; this store allows "
            f"{limits.max_keys}. Field {widest!r} uses {counts[widest]} of them. "
            "Shorten long values, drop keys, or use a store without this limit.",
            field=widest,
            limit=limits.max_keys,
            size=len(metadata),
        )
    for key, value in metadata.items():
        if limits.max_key_length is not None and len(key) > limits.max_key_length:
            raise MetadataLimitError(
                f"Metadata key {key!r} has {len(key)} characters; this store allows "
                f"{limits.max_key_length}. Use a shorter field or key name.",
                field=_field_of(key),
                limit=limits.max_key_length,
                size=len(key),
            )
        if limits.max_value_length is not None and len(value) > limits.max_value_length:
            raise MetadataLimitError(
                f"Metadata value of key {key!r} has {len(value)} characters; this "
                f"store allows {limits.max_value_length}. Free-form values do not "
                "span keys: store long data in a typed field or shorten it.",
                field=_field_of(key),
                limit=limits.max_value_length,
                size=len(value),
            )


class MetadataPatch(BaseModel):
    """A change to one object's metadata, applied by a store inside its transaction.

    Applying it removes the keys of ``clear_fields`` (with their continuation pieces)
    and the keys in ``remove``, then writes ``set``; the result is checked against the
    store's limits before anything is written.
    """

    model_config = ConfigDict(frozen=True)

    set: dict[str, str] = {}
    """Entries to write."""
    remove: frozenset[str] = frozenset()
    """Free-form keys to remove."""
    clear_fields: frozenset[str] = frozenset()
    """Typed fields whose keys and pieces are removed before ``set`` is written."""

    def __init__(self, **data: Any) -> None:
        """Build the patch; text a database cannot take is refused here.

        Raises:
            RetroValueError: If a key or value is not valid Unicode text.
        """
        super().__init__(**data)
        check_encodable(self.set)
        check_encodable(dict.fromkeys(self.remove | self.clear_fields, ""))

    def apply(
        self, current: Mapping[str, str], limits: MetadataLimits
    ) -> dict[str, str]:
        """Return the metadata after the patch.

        Raises:
            MetadataLimitError: If the result is over a limit; nothing is written.
        """
        out = {
            key: value
            for key, value in current.items()
            if key not in self.remove and _field_of(key) not in self.clear_fields
        }
        out.update(self.set)
        check_limits(out, limits)
        return out


def dumps(metadata: Mapping[str, str]) -> str:
    """Serialise metadata for a text column."""
    if not metadata:
        return "{}"  # most messages carry none: no encoder for them
    return json.dumps(metadata, ensure_ascii=False, separators=(",", ":"))
