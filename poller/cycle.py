"""One poller's work: poll cycles, probe verification and pruning, each a plain method.

APScheduler calls these (see `service.py`); tests call them directly with an injected clock.
Every status GET goes through the shared budget in the database, and only the holder of the
poll lease polls, so any number of poller processes together stay within
POLL_MAX_REQUESTS_PER_MINUTE and never poll one message twice in a cycle.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from receiver import status as model
from receiver.config import Settings
from receiver.events import canonical
from receiver.store import Store

from . import policy
from .sfmc import AuthError, NotFound, RateLimited, Rejected, Retryable, SFMCClient, SFMCError, StatusReply

log = logging.getLogger("poller")

POLL_LEASE = "poll"
PRUNE_EVERY_MS = 24 * 3600 * 1000
# The notSent list settles many not-sent messages per request, but it lists the whole business
# unit's failures: read it only when enough of ours are due, and only a few pages per cycle.
NOT_SENT_LIST_MIN_DUE = 10
NOT_SENT_PAGE_SIZE = 100
NOT_SENT_PAGES_PER_CYCLE = 3


class NoRequestSlot(SFMCError):
    """The budget has no slot for the status GET that a token refresh wants to send again."""


@dataclass
class CycleReport:
    leader: bool = False
    expired: int = 0
    polled: int = 0
    applied: int = 0
    not_found: int = 0
    list_pages: int = 0
    settled_by_list: int = 0
    stopped_by: str | None = None
    held_definitions: set = field(default_factory=set)


class Poller:
    def __init__(self, settings: Settings, store: Store, client: SFMCClient | None, *,
                 clock: Callable[[], float] = time.time, holder: str | None = None):
        self.settings = settings
        self.store = store
        self.client = client
        self.clock = clock
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.failures = 0
        if client is not None:
            client.before_resend = self._slot_for_resend

    def now(self) -> int:
        return int(self.clock() * 1000)

    @property
    def lease_ms(self) -> int:
        """A lease lasts one interval: a killed leader is replaced within two."""
        return int(self.settings.poll_interval_seconds * 1000)

    def holds_lease(self) -> bool:
        return self.store.acquire_lease(POLL_LEASE, self.holder, self.now(), self.lease_ms)

    def cycle(self) -> CycleReport:
        """Poll the messages that are due, as far as the budget and SFMC allow."""
        report = CycleReport()
        if not self.holds_lease():
            return report
        report.leader = True
        settings = self.settings
        now = self.now()
        report.expired = self.store.expire_window(now - int(settings.poll_window_hours * 3600_000), now)
        if self.client is None:
            return report
        due = self.store.due(now, limit=settings.poll_max_requests_per_minute)
        for channel in sorted({row["channel"] for row in due}):
            if sum(row["channel"] == channel for row in due) >= NOT_SENT_LIST_MIN_DUE:
                report.stopped_by = self._read_not_sent_list(channel, report)
                if report.stopped_by:
                    break
        if report.settled_by_list:
            due = self.store.due(self.now(), limit=settings.poll_max_requests_per_minute)
        for row in due if report.stopped_by is None else ():
            if row["status"] == model.QUEUED and (row["channel"], row["definition_key"]) in report.held_definitions:
                continue  # a sibling's GET just said its definition still holds it
            stopped = self._spend_slot() or self._poll(row, report)
            if stopped:
                report.stopped_by = stopped
                break
        if report.polled or report.list_pages:
            log.info("poll cycle", extra={"fields": {
                "polled": report.polled, "applied": report.applied, "not_found": report.not_found,
                "list_pages": report.list_pages, "settled_by_list": report.settled_by_list,
                "expired": report.expired, "stopped_by": report.stopped_by}})
        return report

    def _spend_slot(self) -> str | None:
        """Renew the lease and take one request from the shared budget; why not, if not."""
        if not self.holds_lease():
            return "lease lost"
        wait_ms = self.store.take_request_slot(self.now(), self.settings.poll_max_requests_per_minute)
        return f"budget or pause: next slot in {wait_ms} ms" if wait_ms else None

    def _slot_for_resend(self) -> None:
        """A status GET sent again after a token refresh is one more request of the budget."""
        stopped = self._spend_slot()
        if stopped:
            raise NoRequestSlot(stopped)

    def _read_not_sent_list(self, channel: str, report: CycleReport) -> str | None:
        """Settle our waiting messages that SFMC lists as not sent, from where the last read stopped."""
        cursor_name = f"not_sent_cursor_{channel}"
        for _ in range(NOT_SENT_PAGES_PER_CYCLE):
            stopped = self._spend_slot()
            if stopped:
                return stopped
            cursor = self.store.poller_value(cursor_name)
            try:
                page = self.client.not_sent(channel, last_event_id=cursor, page_size=NOT_SENT_PAGE_SIZE)
            except SFMCError as error:
                return self._failed(error)
            report.list_pages += 1
            for item in page.messages:
                report.settled_by_list += self._settle_not_sent(channel, item, report)
            if isinstance(page.last_event_id, int) and page.last_event_id != cursor:
                self.store.set_poller_value(cursor_name, page.last_event_id)
            if len(page.messages) < NOT_SENT_PAGE_SIZE:
                return None
        return None

    def _settle_not_sent(self, channel: str, item: dict, report: CycleReport) -> int:
        info = item.get("info") if isinstance(item.get("info"), dict) else {}
        key = info.get("messageKey")
        row = self.store.message(key, channel) if isinstance(key, str) and key else None
        if row is None or row["poll_state"] != "waiting":
            return 0
        reply = StatusReply(event_category_type=item.get("eventCategoryType"), timestamp=item.get("timestamp"),
                            status_code=item.get("statusCode") if isinstance(item.get("statusCode"), int) else None,
                            status_message=item.get("statusMessage"), contact_key=info.get("contactKey"),
                            to=info.get("to"), raw=item)
        return int(self._record_answer(row, reply, report))

    def _poll(self, row: dict, report: CycleReport) -> str | None:
        """One status GET and its answer written; returns why the cycle must stop, if it must."""
        channel, key = row["channel"], row["message_key"]
        try:
            reply = self.client.message_status(channel, key)
        except NotFound:
            self._record_miss(row)
            report.polled += 1
            report.not_found += 1
            self.failures = 0
            return None
        except (RateLimited, Retryable, AuthError, NoRequestSlot) as error:
            return self._failed(error)
        except Rejected as error:
            log.warning("SFMC rejected a status GET; counted as not found", extra={"fields": {
                "channel": channel, "error": str(error)}})
            self._record_miss(row)
            report.polled += 1
            return None
        self.failures = 0
        report.polled += 1
        if self._record_answer(row, reply, report):
            report.applied += 1
        return None

    def _failed(self, error: SFMCError) -> str:
        """Pause every poller after a 429 or an outage; say why the cycle stops."""
        if isinstance(error, NoRequestSlot):
            return error.sfmc_message
        if isinstance(error, AuthError):
            # Asking again every cycle would request a token every cycle: SFMC wants one per 20 minutes.
            self.store.pause_polling(self.now() + policy.AUTH_PAUSE_MS)
            log.error("SFMC refused our credentials; check SFMC_CLIENT_ID / SFMC_CLIENT_SECRET / SFMC_ACCOUNT_ID; "
                      "polling pauses for 20 minutes", extra={"fields": {"error": str(error)}})
            return "credentials refused"
        self.failures += 1
        if isinstance(error, RateLimited):
            pause = policy.pause_ms(error.retry_after, self.failures)
            log.warning("SFMC rate limit: every poller pauses", extra={"fields": {
                "pause_ms": pause, "retry_after": error.retry_after, "errorcode": error.errorcode}})
        else:
            pause = policy.backoff_ms(self.failures)
            log.warning("SFMC unavailable: backing off", extra={"fields": {"pause_ms": pause, "error": str(error)}})
        self.store.pause_polling(self.now() + pause)
        return "rate limited" if isinstance(error, RateLimited) else "SFMC unavailable"

    def _record_miss(self, row: dict) -> None:
        now = self.now()
        plan = policy.after_miss(row["poll_misses"], now)
        self.store.record_poll(row["channel"], row["message_key"], None, None, now, poll_state=plan.state,
                               poll_reason=plan.reason, next_poll_at=plan.next_poll_at, missed=True)

    def _record_answer(self, row: dict, reply: StatusReply, report: CycleReport) -> bool:
        now = self.now()
        observation = observation_from_reply(row["channel"], row["message_key"], reply, now)
        if observation is None:
            log.warning("status GET answered an unexpected type; asking again later", extra={"fields": {
                "event_category_type": reply.event_category_type}})
            plan = policy.after_miss(row["poll_misses"], now)
            self.store.record_poll(row["channel"], row["message_key"], None, None, now, poll_state=plan.state,
                                   poll_reason=plan.reason, next_poll_at=plan.next_poll_at, missed=True)
            return False
        plan = policy.after_answer(observation, row["sent_at"], row["poll_misses"], now,
                                   int(self.settings.poll_queued_stale_seconds * 1000))
        raw = canonical({name: value for name, value in reply.raw.items() if name != "requestId"})
        applied = self.store.record_poll(row["channel"], row["message_key"], observation, raw, now,
                                         poll_state=plan.state, poll_reason=plan.reason,
                                         next_poll_at=plan.next_poll_at, missed=plan.missed)
        if observation.status == model.QUEUED and row["definition_key"] and not plan.missed:
            # Just after this message, so that it stays the one that asks for all of them.
            self.store.defer_queued(row["channel"], row["definition_key"], plan.next_poll_at + 1000)
            report.held_definitions.add((row["channel"], row["definition_key"]))
        return applied

    def verify_probes(self) -> str | None:
        """Complete ENS verification for a stored probe: exactly one `ens-verify` call per probe."""
        if self.client is None:
            return None
        probe = self.store.claim_probe(self.now(), self.settings.ens_callback_id)
        if probe is None:
            return None
        try:
            self.client.verify_callback(probe["callback_id"], probe["verification_key"])
        except SFMCError as error:
            self.store.finish_probe(probe["callback_id"], False, str(error), self.now())
            log.error("ENS callback verification failed", extra={"fields": {
                "callback_id": probe["callback_id"], "error": str(error)}})
            return "failed"
        self.store.finish_probe(probe["callback_id"], True, "verified", self.now())
        log.info("ENS callback verified", extra={"fields": {"callback_id": probe["callback_id"]}})
        return "verified"

    def housekeeping(self) -> dict | None:
        """Prune data older than RETENTION_DAYS, at most once a day across all pollers."""
        now = self.now()
        last = self.store.poller_value("last_pruned_at")
        if last is not None and now - last < PRUNE_EVERY_MS:
            return None
        self.store.set_poller_value("last_pruned_at", now)
        counts = self.store.prune(now - int(self.settings.retention_days * 86400_000))
        log.info("pruned data older than RETENTION_DAYS", extra={"fields": counts})
        return counts

    def stop(self) -> None:
        self.store.release_lease(POLL_LEASE, self.holder)


def observation_from_reply(channel: str, message_key: str, reply: StatusReply, now: int) -> model.Observation | None:
    """A status-GET answer as an observation; None when its type is not one the GET should give."""
    classified = model.classify(reply.event_category_type or "")
    if classified is None or classified[0] != channel:
        return None
    status_at = model.cst_time(reply.timestamp)
    note = None
    if status_at is None:
        status_at, note = now, "timestamp missing or unusable; received time used"
    return model.Observation(
        channel=channel, message_key=message_key, event_category_type=reply.event_category_type,
        status=classified[1], status_at=status_at, source="poll",
        status_code=None if reply.status_code is None else str(reply.status_code),
        status_message=reply.status_message, to=reply.to, subscriber_key=reply.contact_key, time_note=note,
    )
