"""Helpers shared by the decorator and the Django integration."""
from __future__ import annotations

import hashlib
import re
from typing import Union

from . import _shmlimit

_POLICY_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")
POLICY_NAME_MAX = 31


def fit_key(key: Union[str, bytes], max_bytes: int) -> bytes:
    """The key as bytes, or, when longer than ``max_bytes``, the C++
    ``shmlimit::fit_key`` of it: ``~`` and hex digits of its XXH3-128 hash
    (doc/identity.md), the same in every process and in the C and C++ APIs.
    A long key is thereby still limited on its own rather than falling to the
    policy's on-full answer, which a client could reach at will with a long
    header."""
    raw = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else bytes(key)
    if len(raw) <= max_bytes:
        return raw
    return _shmlimit.fit_key(raw, max_bytes).encode("ascii")


def policy_name(prefix: str, text: str) -> str:
    """A valid policy name (1..31 bytes of [A-Za-z0-9_.:-]) for ``text``:
    ``prefix + text`` with other characters replaced by ``_``, and, when that
    is too long or was changed, shortened with a digest of ``text`` so that
    different texts never share a name."""
    clean = _POLICY_CHARS.sub("_", text)
    name = prefix + clean
    if clean == text and 0 < len(name) <= POLICY_NAME_MAX:
        return name
    digest = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
    keep = POLICY_NAME_MAX - len(prefix) - len(digest) - 1
    return prefix + clean[: max(keep, 0)] + "-" + digest
