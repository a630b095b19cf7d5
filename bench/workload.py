"""The traffic the benchmarks send: signed 1,000-event ENS batches of real-shaped SMS events.

A batch is what ENS delivers while a steady stream of SMS is going out: the `SmsSent` of one
group of messages, the `SmsTransient` receipts of the group sent a moment earlier and the
`SmsDelivered` receipts of the group before that (sfmc-api.md §5.5 shapes). Within a batch every
event has its own messageKey; across batches a message moves sent → transient → delivered, so
the store both creates and updates messages, as it does in production.

SFMC's docs show the events pretty-printed, and the SPEC says a full batch is "well over 1 MiB";
the documented fields alone come to about 650 bytes per event compact. So events are written with
an 8-space indent, which brings a batch to about 1.03 MiB: the extra bytes are whitespace, which
costs what real bytes cost where bytes matter (reading the body, the HMAC, the JSON scan, storing
the raw body), while each event's canonical form stays the documented one.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import uuid
from dataclasses import dataclass

# sfmc-api.md §6.3: the base64 of the bytes 0x01…0x20 (the receiver's default `auto` accepts it).
SIGNATURE_KEY = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
API_TOKEN = "bench-token-6f1d2c"
BATCH_EVENTS = 1000
INDENT = 8
START_MS = 1767225600000  # 2026-01-01T00:00:00Z

# Per batch: the Sent of this group, Transient of the previous one, Delivered of the one before.
SENT_SHARE, TRANSIENT_SHARE, DELIVERED_SHARE = 360, 280, 360
TRANSIENT_CODES = (("3000", "Enroute"), ("3001", "SentToCarrier"), ("3002", "AcceptedByCarrier"))


@dataclass(frozen=True)
class Batch:
    body: bytes
    signature: str
    events: int


def sign(body: bytes, key: str = SIGNATURE_KEY) -> str:
    """base64(HMAC-SHA256(base64-decoded key, body)), computed here with hmac/hashlib directly."""
    return base64.b64encode(hmac.new(base64.b64decode(key), body, hashlib.sha256).digest()).decode("ascii")


class Messages:
    """The identities of the messages of one benchmark run, deterministic from a seed."""

    def __init__(self, seed: int, tenant: str):
        self.rng = random.Random(seed)
        self.tenant = tenant
        self.definition_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def make(self, number: int) -> dict:
        rng = self.rng
        order = uuid.UUID(int=rng.getrandbits(128), version=4)
        phone = f"1555{rng.randrange(10 ** 7):07d}"
        return {
            "messageKey": f"{self.tenant}:otp:{order}:{number:08d}",
            "to": phone,
            "subscriberKey": f"003{rng.getrandbits(60):015X}",
            "tsid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "batchId": str(rng.randrange(100, 9999)),
            "sent_ms": START_MS + number * 7,
        }


def sms_event(message: dict, kind: str, definition_id: str, rng: random.Random) -> dict:
    """One ENS SMS event (`kind` Sent, Transient or Delivered) for `message`, as §5.5 shapes it."""
    offset = {"Sent": 1000, "Transient": 2200, "Delivered": 5900}[kind]
    event = {
        "eventCategoryType": f"TransactionalSendEvents.Sms{kind}",
        "timestampUTC": message["sent_ms"] + offset,
        "compositeId": f"api.{message['tsid']}.{definition_id}.{message['batchId']}.{message['to']}.0",
    }
    info = {"to": message["to"], "subscriberKey": message["subscriberKey"], "messageKey": message["messageKey"]}
    if kind != "Sent":
        event["composite"] = {"Tsid": f"api.{message['tsid']}", "jobId": definition_id,
                              "batchId": message["batchId"], "mobileNumber": message["to"], "subscriberId": "0"}
        code, text = rng.choice(TRANSIENT_CODES) if kind == "Transient" else ("4000", "Delivered")
        info.update({"ordinal": "0", "statusCode": code, "statusMessage": text, "fromAddress": "55512",
                     "countryCode": "US"})
    event.update({"definitionKey": "otp-sms", "definitionId": definition_id, "mid": 7000001, "eid": 7000000,
                  "info": info})
    return event


def sms_batches(count: int, seed: int = 1, tenant: str = "acme-prod") -> list[Batch]:
    """`count` signed batches of BATCH_EVENTS events; the same seed gives the same bytes."""
    return [Batch(body, sign(body), len(events)) for body, events in _bodies(count, seed, tenant)]


def event_lists(count: int, seed: int = 1, tenant: str = "acme-prod") -> list[list[dict]]:
    """The events of `sms_batches(count, seed)` as Python objects (for in-process measurements)."""
    return [json.loads(body) for body, _ in _bodies(count, seed, tenant)]


def _bodies(count: int, seed: int, tenant: str):
    messages = Messages(seed, tenant)
    rng = random.Random(seed + 1)
    group_size = SENT_SHARE
    # Groups -2 and -1 were sent before the run: their receipts come first, their Sent never.
    groups = {g: [messages.make(n) for n in range((g + 2) * group_size, (g + 3) * group_size)]
              for g in (-2, -1)}
    for number in range(count):
        groups[number] = [messages.make(n) for n in range((number + 2) * group_size, (number + 3) * group_size)]
        events = [sms_event(m, "Sent", messages.definition_id, rng) for m in groups[number]]
        events += [sms_event(m, "Transient", messages.definition_id, rng) for m in groups[number - 1][:TRANSIENT_SHARE]]
        events += [sms_event(m, "Delivered", messages.definition_id, rng) for m in groups[number - 2][:DELIVERED_SHARE]]
        groups.pop(number - 2)
        rng.shuffle(events)
        yield json.dumps(events, indent=INDENT).encode("utf-8"), events
