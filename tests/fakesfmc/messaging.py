"""Transactional messaging (sfmc-api.md §8): send definitions, sends and their clock-driven lives.

Each send is a plan of timed steps computed when it leaves the queue (at once for an active
definition, on activation for an inactive one). `advance(now)` plays due steps in time order
across all sends: it moves the truth, the GET-visible state (Queued/Sent/NotSent only) and emits
the ENS events the step carries. The caller holds the fake's lock.
"""

import heapq
import itertools
import uuid
import zlib
from dataclasses import dataclass, field

from . import outcomes
from .errors import SfmcError, bad_request, not_found
from .events import transactional_event
from .timestamps import epoch_ms, render_cst

CHANNELS = ("sms", "email")
VISIBLE_TYPE = {"sms": "TransactionalSendEvents.SMS", "email": "TransactionalSendEvents.Email"}
MAX_KEY_LENGTH = 100
QUEUE_TIMEOUT = (139, "TimedoutInQueue", "Message expired in the queue of an inactive definition")


@dataclass
class Definition:
    channel: str
    definition_key: str
    definition_id: str
    name: str
    status: str
    created_at: float
    modified_at: float
    description: str = ""
    content: dict = field(default_factory=dict)


@dataclass
class Step:
    at: float
    truth: str | None
    visible: str | None
    ens_kind: str | None
    code: str = ""
    message: str = ""
    reason: str = ""


@dataclass
class Send:
    channel: str
    message_key: str
    to: str
    contact_key: str
    definition_key: str
    definition_id: str
    created_at: float
    outcome: outcomes.Outcome
    ids: dict
    fraction_digits: int
    released_at: float | None = None
    plan: list = field(default_factory=list)
    next_step: int = 0
    due_at: float | None = None
    truth: str = "queued"
    visible: str = "Queued"
    visible_at: float = 0.0
    not_sent: tuple | None = None


@dataclass
class NotSentRecord:
    event_id: int
    send: Send
    at: float


class Messaging:
    def __init__(self, knobs, clock, rng, emit) -> None:
        self.knobs = knobs
        self.clock = clock
        self.rng = rng
        self.emit = emit
        self.definitions: dict[tuple[str, str], Definition] = {}
        self.sends: dict[tuple[str, str], list[Send]] = {}
        self.contacts: dict[tuple[str, str], str] = {}
        self.not_sent: dict[str, list[NotSentRecord]] = {c: [] for c in CHANNELS}
        self.event_ids = {c: itertools.count(88001) for c in CHANNELS}
        self.high_water = {c: 88000 for c in CHANNELS}
        self._due: list = []
        self._seq = itertools.count()

    # definitions (§8.9)

    def define(self, channel: str, definition_key: str, status: str = "active", name: str | None = None,
               description: str = "", content: dict | None = None) -> Definition:
        check_channel(channel)
        if status not in ("active", "inactive"):
            raise bad_request(10005, "MCMS_UTM_Validation_InvalidValue", "status must be active or inactive")
        now = self.clock.now()
        existing = self.definitions.get((channel, definition_key))
        if existing is not None and existing.status != "deleted":
            existing.name = name or existing.name
            self.set_definition_status(existing, status)
            return existing
        definition = Definition(channel, definition_key, self._uuid(), name or definition_key, status, now, now,
                                description, content or {})
        self.definitions[(channel, definition_key)] = definition
        return definition

    def definition(self, channel: str, definition_key: str) -> Definition:
        definition = self.definitions.get((channel, definition_key))
        if definition is None or definition.status == "deleted":
            raise not_found("MCMS_UTM_Runtime_ObjectNotFound", f"definition {definition_key} not found")
        return definition

    def set_definition_status(self, definition: Definition, status: str) -> None:
        """Activating a definition releases the messages its inactivity kept queued."""
        self.advance(self.clock.now())
        was = definition.status
        definition.status = status
        definition.modified_at = self.clock.now()
        if was != "active" and status == "active":
            for send in self.queued_for(definition):
                self._release(send, self.clock.now())

    def queued_for(self, definition: Definition) -> list[Send]:
        return [s for history in self.sends.values() for s in history
                if s.definition_id == definition.definition_id and s.released_at is None and s.truth == "queued"]

    # sending (§8.1, §8.2)

    def send(self, channel: str, message_key: str, to: str | None, contact_key: str | None,
             definition_key: str, batch_keys: set | None = None) -> Send:
        """Accept one recipient or raise the SfmcError SFMC would give it."""
        check_channel(channel)
        definition = self.definitions.get((channel, definition_key or ""))
        if not definition_key:
            raise bad_request(109107, "MCMS_UTM_Validation_MissingRequiredField_definitionKey", "definitionKey is required")
        if definition is None or definition.status == "deleted":
            raise bad_request(109111, "MCMS_UTM_Validation_InvalidValue_definitionKey", f"definition {definition_key} not found")
        if not message_key:
            raise bad_request(109104, "MCMS_UTM_Validation_MissingRequiredField_messageKey", "messageKey is required")
        if not isinstance(message_key, str) or len(message_key) > MAX_KEY_LENGTH:
            raise bad_request(109108, "MCMS_UTM_Validation_InvalidValue_messageKey", "messageKey must be at most 100 characters")
        if not contact_key or not isinstance(contact_key, str):
            raise bad_request(109105, "MCMS_UTM_Validation_MissingRequiredField_subscriberKey", "Invalid subscriber")
        to = to or (self.contacts.get((channel, contact_key)) if channel == "email" else None)
        if not to or not isinstance(to, str):
            raise bad_request(109106, "MCMS_UTM_Validation_MissingRequiredField_to", "Invalid subscriber")
        now = self.clock.now()
        if batch_keys is not None and message_key in batch_keys:
            raise bad_request(109110, "MCMS_UTM_Validation_DuplicateMessageKey", "messageKey repeated in this request")
        newest = self.newest(channel, message_key)
        if newest is not None and now - newest.created_at < self.knobs.key_uniqueness_hours * 3600:
            raise bad_request(109110, "MCMS_UTM_Validation_DuplicateMessageKey", "messageKey was used recently")
        send = Send(channel, message_key, to, contact_key, definition.definition_key, definition.definition_id, now,
                    outcomes.choose(self.knobs, channel, to), self._ids(), fraction_digits(channel, message_key),
                    visible_at=now)
        self.sends.setdefault((channel, message_key), []).append(send)
        self.contacts[(channel, contact_key)] = to
        self._next_event_id(channel)
        if definition.status == "active":
            self._release(send, now)
        else:
            self._schedule(send, now + self.knobs.queue_expiry_hours * 3600)
        return send

    def newest(self, channel: str, message_key: str) -> Send | None:
        history = self.sends.get((channel, message_key))
        return history[-1] if history else None

    def truth(self) -> dict:
        return {key: history[-1].truth for key, history in self.sends.items()}

    # the clock-driven state machine

    def advance(self, now: float) -> int:
        """Play every step due by `now`, oldest first; returns how many were played."""
        played = 0
        while self._due and self._due[0][0] <= now:
            due_at, _, send = heapq.heappop(self._due)
            if send.due_at != due_at:
                continue
            send.due_at = None
            if send.released_at is None:
                code, message, reason = QUEUE_TIMEOUT
                self._apply(send, Step(due_at, "not_sent", "NotSent", "NotSent", str(code), message, reason))
                send.released_at = due_at
            else:
                self._apply(send, send.plan[send.next_step])
                send.next_step += 1
                if send.next_step < len(send.plan):
                    self._schedule(send, send.plan[send.next_step].at)
            played += 1
        return played

    def _release(self, send: Send, at: float) -> None:
        send.released_at = at
        send.plan = plan(send.outcome, at, self.knobs)
        send.next_step = 0
        self._schedule(send, send.plan[0].at)

    def _schedule(self, send: Send, at: float) -> None:
        send.due_at = at
        heapq.heappush(self._due, (at, next(self._seq), send))

    def _apply(self, send: Send, step: Step) -> None:
        if step.truth is not None:
            send.truth = step.truth
        if step.visible is not None:
            send.visible = step.visible
            send.visible_at = step.at
            event_id = self._next_event_id(send.channel)
            if step.visible == "NotSent":
                send.not_sent = (int(step.code), step.message)
                self.not_sent[send.channel].append(NotSentRecord(event_id, send, step.at))
        if step.ens_kind is not None and not send.outcome.ens_lost:
            event = transactional_event(send, step.ens_kind, epoch_ms(step.at), step.code, step.message,
                                        step.reason, *self.knobs.tenant_ids())
            if event is not None:
                self.emit(event)

    # the status GET (§8.3) and the notSent list (§8.4)

    def status(self, channel: str, message_key: str) -> dict:
        now = self.clock.now()
        send = self.newest(channel, message_key)
        if (send is None or now - send.created_at > self.knobs.status_retention_hours * 3600
                or now < send.created_at + self.knobs.visibility_delay):
            raise SfmcError(self.knobs.not_found_status, 30003,
                            "MCMS_UTM_Runtime_ObjectNotFound: messageKey not found")
        body = {
            "requestId": str(uuid.uuid4()),
            "eventCategoryType": VISIBLE_TYPE[channel] + send.visible,
            "timestamp": render_cst(send.visible_at, send.fraction_digits),
        }
        if send.visible != "Queued":
            body["compositeId"] = send.ids["statusCompositeId"]
            info = {"messageKey": send.message_key, "contactKey": send.contact_key, "to": send.to}
            if send.not_sent:
                info["statusCode"], info["statusMessage"] = send.not_sent
            body["info"] = info
        return body

    def not_sent_page(self, channel: str, last_event_id: int, page_size: int) -> dict:
        horizon = self.clock.now() - self.knobs.status_retention_hours * 3600
        records = [r for r in self.not_sent[channel] if r.event_id > last_event_id and r.at >= horizon]
        page = records[:page_size]
        full = len(records) > page_size
        messages = []
        for record in page:
            send = record.send
            info = {"messageKey": send.message_key}
            if channel == "sms":
                info.update({"contactKey": send.contact_key, "to": send.to})
            messages.append({
                "statusCode": send.not_sent[0],
                "statusMessage": send.not_sent[1],
                "eventCategoryType": VISIBLE_TYPE[channel] + "NotSent",
                "timestamp": render_cst(record.at, send.fraction_digits),
                "definitionKey": send.definition_key,
                "eventID": record.event_id,
                "info": info,
            })
        last = page[-1].event_id if full else max(last_event_id, self.high_water[channel])
        return {"requestId": str(uuid.uuid4()), "lastEventID": last, "messages": messages,
                "count": len(messages), "pageSize": page_size}

    def _next_event_id(self, channel: str) -> int:
        event_id = next(self.event_ids[channel])
        self.high_water[channel] = event_id
        return event_id

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _ids(self) -> dict:
        rng = self.rng
        subscriber_id = str(rng.randrange(900000000, 999999999))
        job_id, batch_id = str(rng.randrange(3000000, 3999999)), str(rng.randrange(100, 9999))
        return {
            "tsid": self._uuid(), "jobId": job_id, "batchId": batch_id, "listId": "55001",
            "subscriberId": subscriber_id, "emailId": "420001",
            "statusCompositeId": f"{self._uuid().upper()}.{job_id}.{batch_id}.1.{subscriber_id}",
        }


def plan(outcome: outcomes.Outcome, released_at: float, knobs) -> list[Step]:
    """The timed steps of one send from the moment it leaves the queue."""
    sent_at = released_at + knobs.send_delay
    if not outcome.sent:
        return [Step(sent_at, "not_sent", "NotSent", "NotSent", str(outcome.not_sent_code),
                     outcome.not_sent_message, outcome.not_sent_reason)]
    steps = [Step(sent_at, "sent", "Sent", "Sent")]
    count = len(outcome.transients)
    for i, (code, message) in enumerate(outcome.transients):
        steps.append(Step(sent_at + knobs.transient_delay * (i + 1) / count, "transient", None, "Transient", code, message))
    if outcome.final is not None:
        final_at = max(sent_at + knobs.final_delay, steps[-1].at + 0.001)
        steps.append(Step(final_at, outcome.final, None, outcome.final.capitalize(),
                          outcome.final_code, outcome.final_message))
        if outcome.transient_after_final is not None:
            code, message = outcome.transient_after_final
            steps.append(Step(final_at + max(knobs.transient_delay, 0.001), None, None, "Transient", code, message))
    return steps


def fraction_digits(channel: str, message_key: str) -> int:
    """0 to 7 fractional digits, varying by message but stable for it, as SFMC's renderings vary."""
    return zlib.crc32(f"{channel}:{message_key}".encode("utf-8")) % 8


def check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, not {channel!r}")
