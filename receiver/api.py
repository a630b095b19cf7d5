"""The query API for downstream apps (`/v1/…`) and `/healthz` (SPEC §5)."""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from urllib.parse import unquote

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.routing import BaseConverter

from . import status as model
from .body import read_body
from .errors import BadRequest, NotFound, TooLarge, Unauthorized, Unavailable
from .events import is_text
from .messages import InvalidItem, history_json, message_json, tracked_item
from .store import Store, StoreError

MAX_ITEMS = 1000
SQLITE_MAX_INTEGER = 2**63 - 1  # a larger Python int cannot even be bound as a parameter
MESSAGES_PREFIX = "/v1/messages/"

v1 = Blueprint("v1", __name__, url_prefix="/v1")


class MessageKeyConverter(BaseConverter):
    """Anything after the prefix, slashes (even a leading one) included."""

    regex = ".+"
    part_isolating = False


def init_app(app: Flask) -> None:
    app.url_map.converters["message_key"] = MessageKeyConverter
    app.register_blueprint(v1)
    app.add_url_rule("/healthz", "healthz", healthz)


def _store() -> Store:
    return current_app.extensions["store"]


def _now_ms() -> int:
    return int(time.time() * 1000)


@v1.before_request
def require_token():
    tokens = current_app.config["SETTINGS"].api_tokens
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip().encode()
    # Compare against every token so the time taken does not tell which one nearly matched.
    matched = [hmac.compare_digest(given, token.encode()) for token in tokens]
    if scheme.lower() != "bearer" or not any(matched):
        if not tokens:
            raise Unauthorized("the query API is closed: no API_TOKENS are configured")
        raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")


def healthz():
    store = _store()
    if not store.healthy():
        return jsonify({"status": "unavailable", "database": "not answering"}), 503
    return jsonify({"status": "ok", "schema": store.schema_version()})


# -- tracking ---------------------------------------------------------------------------------

@v1.post("/messages")
def track():
    document = _json_body()
    items = document if isinstance(document, list) else [document]
    if len(items) > MAX_ITEMS:
        raise TooLarge(f"at most {MAX_ITEMS} messages per request, got {len(items)}")
    now = _now_ms()
    accepted, rejected = [], []
    for index, item in enumerate(items):
        try:
            accepted.append(tracked_item(item, now))
        except InvalidItem as error:
            rejected.append({"index": index, "code": error.code, "message": error.message})
    settings = current_app.config["SETTINGS"]
    if accepted:
        try:
            _store().track(accepted, now, int(settings.poll_grace_seconds * 1000))
        except StoreError:
            raise Unavailable("the database is busy; nothing was tracked, please retry") from None
    return jsonify({"accepted": len(accepted), "rejected": rejected}), 422 if rejected else 201


# -- reading ----------------------------------------------------------------------------------

@v1.get("/messages/<message_key:message_key>")
def show(message_key: str):
    message_key = _raw_message_key() or message_key
    channel = _channel_arg()
    store = _store()
    row = store.message(message_key, channel)
    if row is None:
        raise NotFound(f"no message with this messageKey{' on channel ' + channel if channel else ''}")
    message = message_json(row, _now_ms())
    message["history"] = [history_json(entry) for entry in store.history(row["channel"], row["message_key"])]
    return jsonify(message)


def _raw_message_key() -> str | None:
    """The key from the raw request path, decoded exactly once.

    The WSGI path is already decoded, which would lose the difference between `/` and `%2F`
    and let `.`/`..` be interpreted; the raw URI keeps it.
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if not raw:
        return None
    path = raw.split("?", 1)[0]
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    if not path.startswith(MESSAGES_PREFIX):
        return None
    try:
        return unquote(path[len(MESSAGES_PREFIX):], errors="strict") or None
    except UnicodeDecodeError:
        raise BadRequest("the messageKey in the path is not percent-encoded UTF-8") from None


@v1.get("/messages")
def search():
    args = request.args
    status = args.get("status")
    if status is not None and status not in model.RANK:
        raise BadRequest(f"status must be one of {', '.join(model.RANK)}")
    updated_since = None
    if "updatedSince" in args:
        updated_since = model.iso_time(args["updatedSince"])
        if updated_since is None:
            raise BadRequest("updatedSince must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z")
    limit = _limit()
    before = _decode_cursor(args["cursor"]) if args.get("cursor") else None
    rows = _store().messages(status=status, channel=_channel_arg(), definition_key=args.get("definitionKey"),
                             updated_since=updated_since, before=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = _encode_cursor(rows[-1]) if more else None
    return jsonify({"messages": [message_json(row, _now_ms()) for row in rows], "nextCursor": cursor})


@v1.get("/changes")
def changes():
    try:
        after = int(request.args.get("after", "0"))
    except ValueError:
        raise BadRequest("after must be a whole number (a seq from an earlier answer, or 0)") from None
    if not 0 <= after <= SQLITE_MAX_INTEGER:
        raise BadRequest("after must be a seq from an earlier answer, or 0")
    rows = _store().changes(after, _limit())
    return jsonify({
        "changes": [{"seq": row["seq"], "messageKey": row["message_key"], "channel": row["channel"],
                     "status": row["status"], "statusAt": model.format_utc(row["status_at"]), "source": row["source"]}
                    for row in rows],
        "nextAfter": rows[-1]["seq"] if rows else after,
    })


# -- helpers ----------------------------------------------------------------------------------

def _json_body():
    body = read_body(current_app.config["SETTINGS"].max_body_bytes)
    if not body:
        raise BadRequest("a JSON body is required")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON") from None


def _channel_arg() -> str | None:
    channel = request.args.get("channel")
    if channel is not None and channel not in model.CHANNELS:
        raise BadRequest("channel must be 'sms' or 'email'")
    return channel


def _limit() -> int:
    raw = request.args.get("limit", "100")
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("limit must be a whole number from 1 to 1000") from None
    if not 1 <= limit <= MAX_ITEMS:
        raise BadRequest("limit must be a whole number from 1 to 1000")
    return limit


def _encode_cursor(row: dict) -> str:
    data = json.dumps([row["updated_at"], row["channel"], row["message_key"]], ensure_ascii=False)
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        updated_at, channel, key = data
        if type(updated_at) is not int or not isinstance(channel, str) or not isinstance(key, str):
            raise ValueError
        if abs(updated_at) > SQLITE_MAX_INTEGER:
            raise ValueError
        if not is_text(channel) or not is_text(key):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise BadRequest("cursor is not one this API gave out") from None
    return updated_at, channel, key


