"""ENS batch signing (sfmc-api.md §6): base64(HMAC-SHA256(key, exact body bytes)).

How a signatureKey becomes key bytes is undocumented (§6.2), so the mode is a setting:
"base64" decodes the key string, "text" uses its UTF-8 bytes.
"""

import base64
import hashlib
import hmac

SIGNATURE_MODES = ("base64", "text")


def key_bytes(signature_key: str, mode: str) -> bytes:
    if mode == "base64":
        return base64.b64decode(signature_key)
    if mode == "text":
        return signature_key.encode("utf-8")
    raise ValueError(f"signature_mode must be one of {SIGNATURE_MODES}, not {mode!r}")


def sign(body: bytes, signature_key: str, mode: str) -> str:
    mac = hmac.new(key_bytes(signature_key, mode), body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")
