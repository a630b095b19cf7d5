"""Turning a signed ENS body into records: observations, unknown events and quarantined items.

Each item keeps its raw JSON beside the normalized record (in the spirit of anymail's
`esp_event`), and gets a fingerprint so that ENS's at-least-once redeliveries are stored once.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from . import status as model


@dataclass(frozen=True)
class Event:
    """One ENS event: `observation` is None for types that do not touch a status."""

    fingerprint: bytes
    raw: str
    event_category_type: str
    channel: str | None
    message_key: str | None
    status_at: int
    observation: model.Observation | None
    note: str | None = None


@dataclass(frozen=True)
class Rejected:
    """A piece of a signed body that cannot be used, kept raw with the reason."""

    fingerprint: bytes
    raw: bytes
    reason: str
    position: int | None


@dataclass
class ParsedBatch:
    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def fingerprint(*parts: str | bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()[:16]


def canonical(value: object) -> str:
    """One spelling per JSON value: a redelivered event has the same one whatever the formatting."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_batch(body: bytes, received_at: int) -> ParsedBatch:
    """Normalize a signed body. Never raises: whatever cannot be used is rejected with a reason."""
    batch = ParsedBatch()
    body_print = fingerprint(b"body", body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        batch.rejected.append(Rejected(body_print, body, f"body is not valid UTF-8 (byte {error.start})", None))
        return batch
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        batch.rejected.append(Rejected(body_print, body, f"body is not valid JSON ({error.msg} at line {error.lineno})", None))
        return batch
    except (ValueError, RecursionError):
        batch.rejected.append(Rejected(body_print, body, "body is not valid JSON (a value or nesting too large)", None))
        return batch
    items = document if isinstance(document, list) else [document]
    for position, item in enumerate(items):
        try:
            raw = canonical(item)
        except (ValueError, RecursionError):
            batch.rejected.append(Rejected(fingerprint(b"item", body_print, str(position)), b"", "item nested too deeply", position))
            continue
        result = parse_event(item, raw, received_at)
        if isinstance(result, str):
            batch.rejected.append(Rejected(fingerprint(b"item", body_print, str(position)), raw.encode("utf-8"), result, position))
        else:
            batch.events.append(result)
    return batch


def _text(value: object) -> str | None:
    """Identity and code fields as strings: ENS sends `statusCode` as a string, others as a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int, float)):
        text = str(value)
        return text if text else None
    return None


def parse_event(item: object, raw: str, received_at: int) -> Event | str:
    """One ENS item as an Event, or the reason it cannot be used."""
    if not isinstance(item, dict):
        return f"item is not an object but {type(item).__name__ if item is not None else 'null'}"
    event_type = item.get("eventCategoryType")
    if not isinstance(event_type, str) or not event_type.strip():
        return "no usable eventCategoryType"
    info = item.get("info") if isinstance(item.get("info"), dict) else {}
    message_key = info.get("messageKey")
    if not isinstance(message_key, str) or not message_key:
        message_key = None
    status_at = model.ens_time(item.get("timestampUTC"))
    note = None
    if status_at is None:
        status_at = received_at
        note = "timestampUTC missing or unusable; received time used"
    classified = model.classify(event_type)
    observation = None
    if classified:
        if message_key is None:
            return "send event without a usable info.messageKey"
        if len(message_key) > model.MAX_MESSAGE_KEY_LENGTH:
            return f"info.messageKey longer than {model.MAX_MESSAGE_KEY_LENGTH} characters"
        channel, status = classified
        observation = model.Observation(
            channel=channel,
            message_key=message_key,
            event_category_type=event_type,
            status=status,
            status_at=status_at,
            source="ens",
            status_code=_text(info.get("statusCode")) or _text(info.get("bounceCode")),
            status_message=_text(info.get("statusMessage")) or _text(info.get("reason")) or _text(info.get("bounceMessage")),
            to=_text(info.get("to")),
            subscriber_key=_text(info.get("subscriberKey")),
            definition_key=_text(item.get("definitionKey")),
            time_note=note,
        )
        channel_of_event = channel
    else:
        channel_of_event = model.channel_hint(event_type)
    return Event(
        fingerprint=fingerprint(b"event", raw),
        raw=raw,
        event_category_type=event_type,
        channel=channel_of_event,
        message_key=message_key if message_key and len(message_key) <= model.MAX_MESSAGE_KEY_LENGTH else None,
        status_at=status_at,
        observation=observation,
        note=note,
    )
