"""Turning a signed ENS body into records: observations, unknown events and quarantined items.

Each event keeps its place in the raw batch (stored whole) beside the normalized record, in the
spirit of anymail's `esp_event`, and gets a fingerprint so that ENS's at-least-once redeliveries
are stored once.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from . import status as model


@dataclass(frozen=True)
class Event:
    """One ENS event: `observation` is None for types that do not touch a status."""

    fingerprint: bytes
    position: int
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


def fingerprint(*parts: object) -> bytes:
    """16 bytes that tell one record from another: the repr of a tuple is unambiguous."""
    return hashlib.sha256(repr(parts).encode("utf-8")).digest()[:16]


def message_prefix(channel: str | None, message_key: str | None) -> bytes:
    """The first 8 bytes of every fingerprint of one message's events (see `event_fingerprint`)."""
    return hashlib.sha256(repr((channel or "", message_key or "")).encode("utf-8")).digest()[:8]


def event_fingerprint(channel: str | None, message_key: str | None, *parts: object) -> bytes:
    """A message's prefix, then 8 bytes of the event's identity.

    Sharing the prefix, one message's events sit together in the one unique fingerprint index, so
    that index serves both duplicate detection and the message's history: a batch then dirties one
    randomly keyed index page per event instead of two (measured in bench/: a third of the
    write-locked time).
    """
    return message_prefix(channel, message_key) + hashlib.sha256(repr(parts).encode("utf-8")).digest()[:8]


def body_fingerprint(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def is_text(value: str) -> bool:
    """False for strings SQLite cannot store: JSON can smuggle in lone surrogates (`"\\ud800"`)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def canonical(value: object) -> str:
    """One spelling per JSON value: a redelivered event has the same one whatever the formatting."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_batch(body: bytes, received_at: int) -> ParsedBatch:
    """Normalize a signed body. Never raises: whatever cannot be used is rejected with a reason."""
    batch = ParsedBatch()
    body_print = body_fingerprint(body)
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
    # Only a `\uD8xx`-style escape can produce a lone surrogate; most batches skip the check.
    escapes_surrogates = "\\ud" in text or "\\uD" in text
    for position, item in enumerate(items):
        try:
            if escapes_surrogates and not is_text(canonical(item)):
                rejected = json.dumps(item, sort_keys=True, separators=(",", ":")).encode("ascii")
                batch.rejected.append(Rejected(fingerprint("item", body_print, position), rejected,
                                               "item contains invalid Unicode (a lone surrogate escape)", position))
                continue
            result = parse_event(item, position, received_at)
            raw = canonical(item).encode("utf-8") if isinstance(result, str) else b""
        except (ValueError, RecursionError):
            result, raw = "item nested too deeply", b""
        if isinstance(result, str):
            batch.rejected.append(Rejected(fingerprint("item", body_print, position), raw, result, position))
        else:
            batch.events.append(result)
    return batch


MAX_FIELD_LENGTH = 1000


def _text(value: object) -> str | None:
    """Identity and code fields as strings: ENS sends `statusCode` as a string, others as a number.

    Capped in length (the raw batch keeps the whole value); non-finite numbers are not values.
    """
    if type(value) is str:  # the common case first: this runs several times per event
        return value[:MAX_FIELD_LENGTH] or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float)):
        text = str(value)[:MAX_FIELD_LENGTH] if not isinstance(value, int) or abs(value) < 10 ** 100 else None
        return text or None
    return None


def parse_event(item: object, position: int, received_at: int) -> Event | str:
    """One ENS item as an Event, or the reason it cannot be used.

    A send event's fingerprint is the fields that tell one receipt from another (sfmc-api.md
    §7.3: ENS has no event id); any other event's is its whole canonical JSON.
    """
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
        identity = event_fingerprint(channel, message_key, "send", event_type, item.get("timestampUTC"),
                                     observation.status_code, _text(info.get("ordinal")), observation.status_message)
    else:
        channel_of_event = model.channel_hint(event_type)
        identity = event_fingerprint(channel_of_event, message_key, "event", canonical(item))
    return Event(
        fingerprint=identity,
        position=position,
        event_category_type=event_type,
        channel=channel_of_event,
        message_key=message_key if message_key and len(message_key) <= model.MAX_MESSAGE_KEY_LENGTH else None,
        status_at=status_at,
        observation=observation,
        note=note,
    )
