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
from .errors import BadRequest, NotFound, TooLarge, Unauthorized, Unavailable, Unprocessable
from .events import is_text
from .store import Store, StoreError

MAX_ITEMS = 1000
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
            accepted.append(_tracked_item(item, now))
        except Unprocessable as error:
            rejected.append({"index": index, "code": error.code, "message": error.message})
    settings = current_app.config["SETTINGS"]
    if accepted:
        try:
            _store().track(accepted, now, int(settings.poll_grace_seconds * 1000))
        except StoreError:
            raise Unavailable("the database is busy; nothing was tracked, please retry") from None
    return jsonify({"accepted": len(accepted), "rejected": rejected}), 422 if rejected else 201


def _tracked_item(item: object, now: int) -> dict:
    if not isinstance(item, dict):
        raise Unprocessable("each message must be a JSON object", code="not_an_object")
    key = item.get("messageKey")
    if not isinstance(key, str) or not key or not is_text(key):
        raise Unprocessable("messageKey must be a non-empty string of valid Unicode", code="invalid_message_key")
    if len(key) > model.MAX_MESSAGE_KEY_LENGTH:
        raise Unprocessable(f"messageKey is longer than {model.MAX_MESSAGE_KEY_LENGTH} characters",
                            code="invalid_message_key")
    channel = item.get("channel", "sms")
    if channel not in model.CHANNELS:
        raise Unprocessable("channel must be 'sms' or 'email'", code="invalid_channel")
    tracked = {"message_key": key, "channel": channel}
    for field, column in (("definitionKey", "definition_key"), ("to", "to")):
        value = item.get(field)
        if value is not None and (not isinstance(value, str) or not is_text(value)):
            raise Unprocessable(f"{field} must be a string of valid Unicode", code=f"invalid_{column}")
        tracked[column] = value
    sent_at = item.get("sentAt")
    if sent_at is not None:
        parsed = model.iso_time(sent_at) if isinstance(sent_at, str) else None
        if parsed is None:
            raise Unprocessable("sentAt must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z", code="invalid_sent_at")
        if parsed > now + 3600_000:
            raise Unprocessable("sentAt is more than an hour in the future", code="invalid_sent_at")
        tracked["sent_at"] = parsed
    return tracked


# -- reading ----------------------------------------------------------------------------------

@v1.get("/messages/<message_key:message_key>")
def show(message_key: str):
    message_key = _raw_message_key() or message_key
    channel = _channel_arg()
    store = _store()
    row = store.message(message_key, channel)
    if row is None:
        raise NotFound(f"no message with this messageKey{' on channel ' + channel if channel else ''}")
    message = _message_json(row)
    message["history"] = [_history_json(entry) for entry in store.history(row["channel"], row["message_key"])]
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
    return jsonify({"messages": [_message_json(row) for row in rows], "nextCursor": cursor})


@v1.get("/changes")
def changes():
    try:
        after = int(request.args.get("after", "0"))
    except ValueError:
        raise BadRequest("after must be a whole number (a seq from an earlier answer, or 0)") from None
    if after < 0:
        raise BadRequest("after must not be negative")
    rows = _store().changes(after, _limit())
    return jsonify({
        "changes": [{"seq": row["seq"], "messageKey": row["message_key"], "channel": row["channel"],
                     "status": row["status"], "statusAt": model.format_utc(row["status_at"]), "source": row["source"]}
                    for row in rows],
        "nextAfter": rows[-1]["seq"] if rows else after,
    })


# -- helpers ----------------------------------------------------------------------------------

def _json_body():
    if not request.data:
        raise BadRequest("a JSON body is required")
    try:
        return json.loads(request.data)
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
        if not isinstance(updated_at, int) or not isinstance(channel, str) or not isinstance(key, str):
            raise ValueError
        if not is_text(channel) or not is_text(key):
            raise ValueError
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest("cursor is not one this API gave out") from None
    return updated_at, channel, key


def _poll_state(row: dict) -> str:
    if row["poll_state"] == "waiting" and row["next_poll_at"] is not None and row["next_poll_at"] <= _now_ms():
        return "due"
    return row["poll_state"]


def _message_json(row: dict) -> dict:
    return {
        "messageKey": row["message_key"],
        "channel": row["channel"],
        "status": row["status"],
        "statusAt": model.format_utc(row["status_at"]),
        "statusCode": row["status_code"],
        "statusMessage": row["status_message"],
        "eventCategoryType": row["event_category_type"],
        "source": row["source"],
        "to": row["recipient"],
        "subscriberKey": row["subscriber_key"],
        "definitionKey": row["definition_key"],
        "trackedAt": model.format_utc(row["tracked_at"]),
        "sentAt": model.format_utc(row["sent_at"]),
        "updatedAt": model.format_utc(row["updated_at"]),
        "poll": {
            "state": _poll_state(row),
            "reason": row["poll_reason"],
            "attempts": row["poll_attempts"],
            "lastPolledAt": model.format_utc(row["last_polled_at"]),
            "nextPollAt": model.format_utc(row["next_poll_at"]),
        },
    }


def _history_json(entry: dict) -> dict:
    return {
        "eventCategoryType": entry["event_category_type"],
        "status": entry["status"],
        "statusAt": model.format_utc(entry["status_at"]),
        "statusCode": entry["status_code"],
        "statusMessage": entry["status_message"],
        "source": entry["source"],
        "receivedAt": model.format_utc(entry["received_at"]),
        "applied": bool(entry["applied"]),
        "reason": entry["reason"],
    }
