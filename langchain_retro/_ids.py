"""Sortable object ids with Assistants-style prefixes: ``asst_``, ``thread_``, ``msg_``.

An id is the prefix and 26 Crockford base32 characters: a 48-bit millisecond timestamp
followed by 80 random bits, as in ULID. Ids made by one process are strictly increasing
(within a millisecond the random part is incremented), so they sort by creation time.
Order inside a thread never relies on ids or clocks: stores keep a per-thread sequence.
"""

from __future__ import annotations

import secrets
import threading
import time

__all__ = ["new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """Return a new sortable id such as ``thread_01JD...``.

    Args:
        prefix: The object kind's prefix without the underscore (``"msg"``).
    """
    global _last_ms, _last_random  # noqa: PLW0603 - one monotonic clock per process
    with _lock:
        now = time.time_ns() // 1_000_000
        if now <= _last_ms:
            now = _last_ms
            _last_random = (_last_random + 1) & ((1 << _RANDOM_BITS) - 1)
        else:
            _last_random = secrets.randbits(_RANDOM_BITS - 1)
        _last_ms = now
        value = (now << _RANDOM_BITS) | _last_random
    return f"{prefix}_{_encode(value)}"
