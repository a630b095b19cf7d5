"""The status model: how an observation (ENS event or status-GET answer) becomes a message status.

Pure code, no Flask, no SQL, no HTTP. The receiver and the poller both decide through
`outranks`, so late, duplicated or re-ordered observations can never move a status backwards
(SPEC §4). Times are integers: milliseconds since the epoch, UTC.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

QUEUED, SENT, TRANSIENT = "queued", "sent", "transient"
DELIVERED, BOUNCED, NOT_SENT = "delivered", "bounced", "not_sent"

RANK = {QUEUED: 1, SENT: 2, TRANSIENT: 3, DELIVERED: 4, BOUNCED: 4, NOT_SENT: 4}
CHANNELS = ("sms", "email")
MAX_MESSAGE_KEY_LENGTH = 100

# Keyed by the lower-cased eventCategoryType, so `SmsSent` (ENS) and `SMSSent` (status GET) meet.
EVENT_TYPES: dict[str, tuple[str, str]] = {
    "transactionalsendevents.smsqueued": ("sms", QUEUED),
    "transactionalsendevents.smssent": ("sms", SENT),
    "transactionalsendevents.smsnotsent": ("sms", NOT_SENT),
    "transactionalsendevents.smstransient": ("sms", TRANSIENT),
    "transactionalsendevents.smsdelivered": ("sms", DELIVERED),
    "transactionalsendevents.smsbounced": ("sms", BOUNCED),
    "transactionalsendevents.emailqueued": ("email", QUEUED),
    "transactionalsendevents.emailsent": ("email", SENT),
    "transactionalsendevents.emailnotsent": ("email", NOT_SENT),
    "transactionalsendevents.emailbounced": ("email", BOUNCED),
}

# A status-GET answer this much older than our own send is about an earlier send of a reused key.
REUSED_KEY_MARGIN_MS = 3600 * 1000

CST = timezone(timedelta(hours=-6), "CST")
_EARLIEST_MS = 946684800000  # 2000-01-01: an epoch value before this is a unit mistake, not a time
_LATEST_MS = 4102444800000  # 2100-01-01
_CST_PATTERN = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})?"
)


def classify(event_category_type: str) -> tuple[str, str] | None:
    """(channel, status) for a send event type in any spelling; None for every other type."""
    return EVENT_TYPES.get(event_category_type.strip().lower())


def channel_hint(event_category_type: str) -> str | None:
    """The channel an unknown type most likely belongs to, so its history lands beside its message."""
    lowered = event_category_type.lower()
    if ".sms" in lowered:
        return "sms"
    if ".email" in lowered:
        return "email"
    return None


@dataclass(frozen=True)
class Observation:
    """One normalized fact about a message, from ENS or from a status GET.

    `time_note` is set when the source's time was missing or unusable and `status_at` is the
    time we received it instead.
    """

    channel: str
    message_key: str
    event_category_type: str
    status: str | None
    status_at: int
    source: str
    status_code: str | None = None
    status_message: str | None = None
    to: str | None = None
    subscriber_key: str | None = None
    definition_key: str | None = None
    time_note: str | None = None

    @property
    def precedence(self) -> tuple:
        return precedence(self.status, self.status_at, self.status_code)


def precedence(status: str, status_at: int, status_code: str | None) -> tuple:
    """Ordering of observations: rank first, then event time.

    The status name and code only break exact ties, so the winner never depends on arrival order.
    """
    return (RANK[status], status_at, status, status_code or "")


def outranks(new: Observation, current: tuple | None) -> bool:
    """Whether `new` replaces the status whose precedence is `current` (None: no status yet)."""
    return current is None or new.precedence > current


def about_this_send(status_at: int, sent_at: int | None) -> bool:
    """False for a status-GET answer that describes an earlier send of a reused message key."""
    return sent_at is None or status_at >= sent_at - REUSED_KEY_MARGIN_MS


def ens_time(value: object) -> int | None:
    """ENS `timestampUTC` (epoch ms) as epoch ms; None when missing or unusable.

    Numbers and digit strings are taken as epoch milliseconds; an ISO 8601 string with an
    offset is accepted too (some integrations send one).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{1,16}(\.\d+)?", text):
            value = float(text)
        else:
            return iso_time(text, naive_zone=None)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float)):
        ms = int(value)
        if _EARLIEST_MS <= ms <= _LATEST_MS:
            return ms
    return None


def cst_time(text: object) -> int | None:
    """The status GET's `timestamp` as epoch ms.

    SFMC writes US Central *Standard* time, a fixed UTC-06:00 all year, with no offset in the
    string and 0 to 7 fractional digits. Fractions below a millisecond are truncated.
    """
    if not isinstance(text, str):
        return None
    return iso_time(text.strip(), naive_zone=CST)


def iso_time(text: str, naive_zone: timezone | None = timezone.utc) -> int | None:
    """An ISO 8601 date-time as epoch ms; a string without offset is read in `naive_zone`."""
    match = _CST_PATTERN.fullmatch(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if offset is None:
        if naive_zone is None:
            return None
        zone = naive_zone
    elif offset == "Z":
        zone = timezone.utc
    else:
        digits = offset.replace(":", "")
        sign = -1 if digits[0] == "-" else 1
        hours, minutes = int(digits[1:3]), int(digits[3:5])
        if hours > 23 or minutes > 59:
            return None
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=zone)
    except ValueError:
        return None
    millis = int((fraction or "0").ljust(3, "0")[:3])
    ms = int(moment.timestamp()) * 1000 + millis
    return ms if _EARLIEST_MS <= ms <= _LATEST_MS else None


def format_utc(ms: int | None) -> str | None:
    """Epoch ms as ISO 8601 UTC with millisecond precision and a `Z`."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
