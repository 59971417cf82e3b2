"""API keys, who owns what, and the metadata the HTTP API keeps to itself.

Each API key the server accepts belongs to an owner. Assistants and threads made
through the API remember their owner in the ``retro_owner`` metadata entry (never
the key: a named owner, or ``key_`` and a SHA-256 prefix of the key), and a request
sees only its owner's assistants and threads, with their messages, runs and steps;
another owner's object answers 404, as an unknown id would. Keys given as
``OWNER:KEY`` with the same ``OWNER`` share their objects.

Without keys the server is open (it then serves loopback only): every request sees
every object, including those made through the library, which carry no owner.

Metadata keys starting with ``retro_`` are langchain-retro's own: the API neither
shows nor accepts them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from langchain_retro.server.errors import AuthenticationError, InvalidRequestError

__all__ = [
    "OWNER_KEY",
    "RESERVED_PREFIX",
    "Keyring",
    "check_reserved",
    "owned",
    "owner_scope",
    "owns",
    "parse_key",
    "visible_metadata",
]

OWNER_KEY = "retro_owner"
"""The metadata entry naming an object's owner."""

RESERVED_PREFIX = "retro_"
"""Metadata keys with this prefix are the package's own, hidden from the API."""

_OWNER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _fingerprint(key: str) -> str:
    """An owner name for an unnamed key: not the key, and not reversible to it."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:24]


def parse_key(entry: str) -> tuple[str, str]:
    """One configured key, as ``(owner, key)``.

    ``OWNER:KEY`` names the owner (keys with one owner share objects); a plain key
    is its own owner.

    Raises:
        ValueError: For an empty key; the message never contains the key.
    """
    owner, sep, key = entry.partition(":")
    if sep and _OWNER_NAME.match(owner) and key:
        return owner, key
    if not entry.strip():
        raise ValueError("an API key must not be empty")
    return _fingerprint(entry), entry


@dataclass(frozen=True)
class Keyring:
    """The keys a server accepts, each with its owner; empty for an open server."""

    owners: Mapping[str, str]
    """Owner by key."""

    @classmethod
    def of(cls, keys: Iterable[str] | Mapping[str, str] | None) -> Keyring:
        """Keys as given to `create_app`: ``OWNER:KEY`` entries, or key → owner.

        Raises:
            ValueError: For an empty key or owner name.
        """
        if keys is None:
            return cls({})
        if isinstance(keys, Mapping):
            for owner in keys.values():
                if not _OWNER_NAME.match(owner):
                    raise ValueError(
                        "an owner name is 1 to 64 letters, digits, '_', '.' or '-'"
                    )
            return cls(dict(keys))
        owners: dict[str, str] = {}
        for entry in keys:
            owner, key = parse_key(entry)
            owners[key] = owner
        return cls(owners)

    @property
    def open(self) -> bool:
        """Whether the server takes requests without a key."""
        return not self.owners

    def owner(self, authorization: str | None) -> str | None:
        """The owner of a request's ``Authorization: Bearer KEY``.

        Returns:
            The owner; ``None`` on an open server.

        Raises:
            AuthenticationError: For a missing or unknown key (never echoed).
        """
        if self.open:
            return None
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError(
                "You didn't provide an API key. You need to provide your API key in "
                "an Authorization header using Bearer auth (i.e. Authorization: "
                "Bearer YOUR_KEY).",
                code=None,
            )
        found: str | None = None
        for known, owner in self.owners.items():
            # Compare with every key in constant time, so timing tells nothing.
            if hmac.compare_digest(known.encode(), key.encode()):
                found = owner
        if found is None:
            raise AuthenticationError(
                "Incorrect API key provided. Use one of the keys this server was "
                "started with (--api-key or LANGCHAIN_RETRO_API_KEYS)."
            )
        return found


def visible_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """An object's metadata as the API shows it: without ``retro_`` entries."""
    return {k: v for k, v in metadata.items() if not k.startswith(RESERVED_PREFIX)}


def owns(metadata: Mapping[str, str], owner: str | None) -> bool:
    """Whether a request of ``owner`` sees an object with this metadata."""
    return owner is None or metadata.get(OWNER_KEY) == owner


def owner_scope(owner: str | None) -> dict[str, str] | None:
    """What a request of ``owner`` sees objects by (`owns`), as a store's ``scope``.

    ``None`` on an open server: every object.
    """
    return None if owner is None else {OWNER_KEY: owner}


def owned(metadata: Mapping[str, str], owner: str | None) -> dict[str, str]:
    """Metadata to write for a new object of ``owner``."""
    if owner is None:
        return dict(metadata)
    return {**metadata, OWNER_KEY: owner}


def check_reserved(metadata: Mapping[str, str], param: str = "metadata") -> None:
    """Refuse metadata keys the package keeps for itself.

    Raises:
        InvalidRequestError: Naming the key.
    """
    for key in metadata:
        if key.startswith(RESERVED_PREFIX):
            raise InvalidRequestError(
                f"Invalid metadata key {key!r}: keys starting with "
                f"{RESERVED_PREFIX!r} are reserved by this server.",
                param=param,
            )
