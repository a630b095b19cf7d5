"""ENS batch signatures: `x-sfmc-ens-signature` = base64(HMAC-SHA256(key, raw body)).

SFMC's docs leave open whether the callback's `signatureKey` is used as its base64-decoded
bytes or as the UTF-8 bytes of the string (sfmc-api.md §6.2). `auto` accepts either and reports
which one matched, so the first real delivery settles it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

HEADER = "x-sfmc-ens-signature"


@dataclass(frozen=True)
class Candidate:
    key_bytes: bytes
    encoding: str  # "base64" or "text"
    key_index: int  # position in ENS_SIGNATURE_KEYS, for logs (never the key itself)


def candidates(keys: tuple[str, ...], encoding: str) -> tuple[Candidate, ...]:
    """Every HMAC key the configured signature keys stand for under `encoding`."""
    found = []
    for index, key in enumerate(keys):
        if encoding in ("base64", "auto"):
            decoded = _base64_key(key)
            if decoded is not None:
                found.append(Candidate(decoded, "base64", index))
        if encoding in ("text", "auto"):
            found.append(Candidate(key.encode("utf-8"), "text", index))
    return tuple(found)


def _base64_key(key: str) -> bytes | None:
    try:
        return base64.b64decode(key, validate=True) or None
    except (binascii.Error, ValueError):
        return None


def verify(body: bytes, header: str | None, keys: tuple[Candidate, ...]) -> Candidate | None:
    """The candidate whose HMAC of `body` equals the header's MAC; None when none does.

    Every candidate is compared (constant time each), so timing does not tell which one matched.
    """
    if not header:
        return None
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(given) != hashlib.sha256().digest_size:
        return None
    matched = None
    for candidate in keys:
        expected = hmac.new(candidate.key_bytes, body, hashlib.sha256).digest()
        if hmac.compare_digest(expected, given) and matched is None:
            matched = candidate
    return matched
