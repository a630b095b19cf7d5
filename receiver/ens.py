"""`POST /ens`: the ENS callback (SPEC §3).

Order matters: the size limit before reading, the verification probe before the signature (SFMC
sends it unsigned, before we know the key), the signature on the raw bytes before any parsing, and
the 200 only once the whole batch is durable.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time

from flask import Flask, current_app, jsonify, request

from . import signature
from .body import read_body
from .errors import Unauthorized, Unavailable
from .events import is_text, parse_batch
from .store import Store, StoreError

log = logging.getLogger("receiver.ens")

PROBE_MAX_BYTES = 64 * 1024


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.config["SIGNATURE_CANDIDATES"] = signature.candidates(settings.ens_signature_keys, settings.ens_key_encoding)
    app.add_url_rule("/ens", "ens", receive, methods=["POST"])
    app.add_url_rule("/ens/", "ens_slash", receive, methods=["POST"])


def _now_ms() -> int:
    return int(time.time() * 1000)


def receive():
    store: Store = current_app.extensions["store"]
    settings = current_app.config["SETTINGS"]
    body = read_body(settings.max_body_bytes)
    header = request.headers.get(signature.HEADER) or None  # an empty header is no signature
    received_at = _now_ms()
    if header is None:
        probe = _probe(body)
        if probe is not None:
            return _accept_probe(store, settings, *probe, received_at)
    candidate = signature.verify(body, header, current_app.config["SIGNATURE_CANDIDATES"])
    if candidate is None:
        _refuse(store, body, header, configured=bool(settings.ens_signature_keys))
    batch = parse_batch(body, received_at)
    try:
        result = store.ingest(body, batch, received_at, candidate.encoding)
    except StoreError as error:
        log.warning("batch not stored; answering 503 so ENS resends", extra={"fields": {
            "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "reason": str(error)}})
        raise Unavailable("the database cannot take this batch right now; nothing was applied, please resend") from None
    log.info("batch stored", extra={"fields": {
        "bytes": len(body), "events": result.events, "new": result.new_events, "duplicates": result.duplicates,
        "unknown": result.unknown, "quarantined": result.quarantined, "status_changes": result.changes,
        "duplicate_body": result.duplicate_body, "key_encoding": candidate.encoding, "key_index": candidate.key_index}})
    return jsonify({"received": result.events, "new": result.new_events, "duplicates": result.duplicates,
                    "quarantined": result.quarantined, "statusChanges": result.changes})


def _probe(body: bytes) -> tuple[str, str] | None:
    """(callbackId, verificationKey) when the body is SFMC's unsigned verification probe."""
    if len(body) > PROBE_MAX_BYTES:
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    callback_id, key = document.get("callbackId"), document.get("verificationKey")
    if isinstance(callback_id, str) and isinstance(key, str) and callback_id and key:
        if is_text(callback_id) and is_text(key):
            return callback_id, key
    return None


def _accept_probe(store: Store, settings, callback_id: str, verification_key: str, received_at: int):
    foreign = settings.ens_callback_id is not None and callback_id != settings.ens_callback_id
    try:
        store.record_probe(callback_id, verification_key, received_at)
    except StoreError as error:
        log.warning("verification probe not stored", extra={"fields": {"callback_id": callback_id, "reason": str(error)}})
        raise Unavailable("the database cannot take the verification probe right now") from None
    fields = {"callback_id": callback_id, "verification_key": _mask(verification_key)}
    if foreign:
        log.warning("verification probe for a callback other than ENS_CALLBACK_ID", extra={"fields": fields})
    else:
        log.info("verification probe stored; it is verified by the poller or `ens-status sfmc verify`",
                 extra={"fields": fields})
    return jsonify({"status": "probe stored", "callbackId": callback_id})


def _refuse(store: Store, body: bytes, header: str | None, configured: bool):
    reason = "no signature key configured" if not configured else (
        "missing signature" if header is None else "signature does not match")
    try:
        store.count("signature_failures")
    except StoreError:
        pass  # a counter is not worth a 503: the refusal below is what matters
    log.warning("ENS request refused", extra={"fields": {
        "reason": reason, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}})
    raise Unauthorized(f"{reason}; expected {signature.HEADER} = base64(HMAC-SHA256(signatureKey, body))",
                       code="bad_signature")


def _mask(secret: str) -> str:
    return f"{secret[:4]}…({len(secret)} chars)" if len(secret) > 8 else "…"
