"""Messages as the query API shows them, and tracking requests as it accepts them.

Flask-free, so the `ens-status` CLI shows and tracks exactly as `/v1/messages` does.
"""
from __future__ import annotations

from . import status as model
from .events import MAX_FIELD_LENGTH, is_text


class InvalidItem(Exception):
    """A tracking item the API refuses, with a stable code."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


def tracked_item(item: object, now: int) -> dict:
    """One item of a tracking request as the store's row fields; InvalidItem says what is wrong."""
    if not isinstance(item, dict):
        raise InvalidItem("each message must be a JSON object", code="not_an_object")
    key = item.get("messageKey")
    if not isinstance(key, str) or not key or not is_text(key):
        raise InvalidItem("messageKey must be a non-empty string of valid Unicode", code="invalid_message_key")
    if len(key) > model.MAX_MESSAGE_KEY_LENGTH:
        raise InvalidItem(f"messageKey is longer than {model.MAX_MESSAGE_KEY_LENGTH} characters",
                          code="invalid_message_key")
    channel = item.get("channel", "sms")
    if channel not in model.CHANNELS:
        raise InvalidItem("channel must be 'sms' or 'email'", code="invalid_channel")
    tracked = {"message_key": key, "channel": channel}
    for field, column in (("definitionKey", "definition_key"), ("to", "to")):
        value = item.get(field)
        if value is not None and (not isinstance(value, str) or not is_text(value)):
            raise InvalidItem(f"{field} must be a string of valid Unicode", code=f"invalid_{column}")
        if value is not None and len(value) > MAX_FIELD_LENGTH:
            raise InvalidItem(f"{field} is longer than {MAX_FIELD_LENGTH} characters", code=f"invalid_{column}")
        tracked[column] = value
    sent_at = item.get("sentAt")
    if sent_at is not None:
        parsed = model.iso_time(sent_at) if isinstance(sent_at, str) else None
        if parsed is None:
            raise InvalidItem("sentAt must be an ISO 8601 date-time between 2000 and 2100, e.g. 2026-01-31T12:00:00Z "
                              "(without an offset it is read as UTC)", code="invalid_sent_at")
        if parsed > now + 3600_000:
            raise InvalidItem("sentAt is more than an hour in the future", code="invalid_sent_at")
        tracked["sent_at"] = parsed
    return tracked


def poll_state(row: dict, now: int) -> str:
    """`due` is a waiting message whose time has come: derived, so it is never stale."""
    if row["poll_state"] == "waiting" and row["next_poll_at"] is not None and row["next_poll_at"] <= now:
        return "due"
    return row["poll_state"]


def message_json(row: dict, now: int) -> dict:
    """A message as `GET /v1/messages/<key>` shows it (without its history)."""
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
            "state": poll_state(row, now),
            "reason": row["poll_reason"],
            "attempts": row["poll_attempts"],
            "lastPolledAt": model.format_utc(row["last_polled_at"]),
            "nextPollAt": model.format_utc(row["next_poll_at"]),
        },
    }


def history_json(entry: dict) -> dict:
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
