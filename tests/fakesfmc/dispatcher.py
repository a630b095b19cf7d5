"""The ENS sender (sfmc-api.md §7, §10.3): routing, batching, signing, acks, retries, suspension.

One background thread does all sending, one batch at a time, and never holds the fake's lock while
a POST is in flight. Batching latency (`flush_interval`) and HTTP waits are real time; business
time (suspensions, deferrals, delivery delays) is the fake's clock, so tests jump it ahead.

What ENS leaves undocumented is decided here as follows:
- a "delivery failure" is a batch whose first attempt and `max_retries` quick retries all failed;
- "drop+suspend": the failed batch is dropped; two such failures within `failure_window`
  suspend the callback (600 s, doubling to a 3600 s cap, reset by a success) and everything
  pending for it is dropped, as is every event produced while it is suspended;
- "defer": after the quick retries the batch is re-attempted once every `defer_seconds` until
  `defer_max_seconds` after its first attempt, then dropped.
"""

import heapq
import itertools
import json
import threading
import time
from dataclasses import dataclass, field

from .events import unsubscribed_event
from .signing import sign
from .timestamps import epoch_ms

ACK_STATUSES = range(200, 205)


@dataclass
class Delivery:
    """One POST of a batch, as the receiver saw it."""

    callback_id: str
    url: str
    body: bytes
    signature: str
    status: int | None
    error: str | None
    ok: bool
    at: float
    attempt: int
    event_count: int


@dataclass
class Batch:
    callback_id: str
    events: list
    body: bytes
    attempts: int = 0
    first_attempt_at: float | None = None
    deferred: bool = False
    ready_at: float = 0.0


@dataclass
class Stats:
    deliveries_ok: int = 0
    deliveries_failed: int = 0
    batches_dropped: int = 0
    events_dropped: int = 0
    events_routed: int = 0


@dataclass
class Dispatcher:
    cond: threading.Condition
    knobs: object
    clock: object
    registry: object
    transport: object
    rng: object
    tick: object = None
    deliveries: list = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self.buffers: dict[str, list] = {}
        self.buffered_since: dict[str, float] = {}
        self.scheduled: list = []
        self.seq = itertools.count()
        self.suspended_until: dict[str, float] = {}
        self.next_suspension: dict[str, float] = {}
        self.failures: dict[str, list] = {}
        self.in_flight = 0
        self.draining = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="fakesfmc-ens", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join()

    # intake (the caller holds the lock)

    def route(self, event: dict) -> None:
        for callback_id in self.registry.callbacks_for(event):
            self.enqueue(callback_id, event)

    def enqueue(self, callback_id: str, event: dict) -> None:
        self.stats.events_routed += 1
        if self.is_suspended(callback_id):
            self.stats.events_dropped += 1
            return
        buffer = self.buffers.setdefault(callback_id, [])
        if not buffer:
            self.buffered_since[callback_id] = time.monotonic()
        buffer.append(event)
        self.cond.notify_all()

    def is_suspended(self, callback_id: str) -> bool:
        return self.clock.now() < self.suspended_until.get(callback_id, float("-inf"))

    def suspend(self, callback_id: str, seconds: float) -> None:
        """Suspend a callback and lose what was pending for it, as ENS does."""
        self.suspended_until[callback_id] = self.clock.now() + seconds
        self.failures[callback_id] = []
        self.stats.events_dropped += len(self.buffers.pop(callback_id, []))
        kept = []
        for item in self.scheduled:
            if item[2].callback_id == callback_id:
                self.stats.batches_dropped += 1
                self.stats.events_dropped += len(item[2].events)
            else:
                kept.append(item)
        heapq.heapify(kept)
        self.scheduled = kept

    def idle(self) -> bool:
        now = self.clock.now()
        return (self.in_flight == 0 and not any(self.buffers.values())
                and not any(due <= now for due, _, _ in self.scheduled))

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            self.draining += 1
            self.cond.notify_all()
            try:
                while not self.idle():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"ENS dispatcher still busy after {timeout} s")
                    self.cond.wait(min(remaining, 0.05))
            finally:
                self.draining -= 1

    # the sender thread

    def _run(self) -> None:
        next_tick = time.monotonic()
        while True:
            with self.cond:
                if self.stopping:
                    return
                if self.tick is not None and time.monotonic() >= next_tick:
                    self.tick()
                    next_tick = time.monotonic() + self.knobs.tick_interval
                self._flush_ready()
                batch = self._take_due()
                if batch is None:
                    self.cond.wait(0.02)
                    continue
                attempt = self._prepare(batch)
                self.in_flight += 1
            status, error = self.transport.post(attempt.url, attempt.body, attempt.headers, attempt.timeout)
            with self.cond:
                self.in_flight -= 1
                self._settle(batch, attempt, status, error)
                self.cond.notify_all()

    def _flush_ready(self) -> None:
        now = time.monotonic()
        for callback_id, events in list(self.buffers.items()):
            callback = self.registry.callbacks.get(callback_id)
            if not events:
                continue
            if callback is None:
                self.stats.events_dropped += len(self.buffers.pop(callback_id))
                continue
            if (self.draining or len(events) >= callback.max_batch_size
                    or now - self.buffered_since[callback_id] >= self.knobs.flush_interval):
                self.buffers[callback_id] = []
                for chunk in self._chunks(events, callback.max_batch_size):
                    self._schedule_new(callback_id, chunk)

    def _chunks(self, events: list, size: int) -> list[list]:
        if not self.knobs.reorder:
            return [events[i:i + size] for i in range(0, len(events), size)]
        events = list(events)
        self.rng.shuffle(events)
        chunks = []
        while events:
            cut = self.rng.randint(1, min(size, len(events)))
            chunks.append(events[:cut])
            events = events[cut:]
        self.rng.shuffle(chunks)
        return chunks

    def _schedule_new(self, callback_id: str, events: list) -> None:
        events = list(events)
        if (self.knobs.unsubscribed_event_probability
                and self.rng.random() < self.knobs.unsubscribed_event_probability):
            stray = unsubscribed_event(epoch_ms(self.clock.now()), *self.knobs.tenant_ids())
            if stray["eventCategoryType"] not in self.registry.subscribed_types(callback_id):
                events.insert(self.rng.randrange(len(events) + 1), stray)
        body = json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self._schedule(Batch(callback_id, events, body), self.clock.now() + self.knobs.delivery_delay)

    def _schedule(self, batch: Batch, due_at: float) -> None:
        heapq.heappush(self.scheduled, (due_at, next(self.seq), batch))

    def _take_due(self) -> Batch | None:
        now, mono = self.clock.now(), time.monotonic()
        waiting = []
        chosen = None
        while self.scheduled and self.scheduled[0][0] <= now:
            item = heapq.heappop(self.scheduled)
            if item[2].ready_at <= mono:
                chosen = item[2]
                break
            waiting.append(item)
        for item in waiting:
            heapq.heappush(self.scheduled, item)
        return chosen

    def _prepare(self, batch: Batch) -> "Attempt":
        callback = self.registry.callbacks.get(batch.callback_id)
        batch.attempts += 1
        if batch.first_attempt_at is None:
            batch.first_attempt_at = self.clock.now()
        if callback is None:
            return Attempt("", batch.body, {}, 0.0, "", gone=True)
        signature = sign(batch.body, callback.signature_key, self.knobs.signature_mode)
        if (self.knobs.corrupt_signature_probability
                and self.rng.random() < self.knobs.corrupt_signature_probability):
            signature = sign(batch.body + b" ", callback.signature_key, self.knobs.signature_mode)
        headers = {"Content-Type": "application/json", "x-sfmc-ens-signature": signature}
        return Attempt(callback.url, batch.body, headers, self.knobs.ack_timeout, signature)

    def _settle(self, batch: Batch, attempt: "Attempt", status: int | None, error: str | None) -> None:
        callback_id = batch.callback_id
        if attempt.gone:
            self._drop(batch)
            return
        ok = status in ACK_STATUSES
        self.deliveries.append(Delivery(callback_id, attempt.url, batch.body, attempt.signature, status, error,
                                        ok, self.clock.now(), batch.attempts, len(batch.events)))
        if ok:
            self.stats.deliveries_ok += 1
            self.failures[callback_id] = []
            self.next_suspension.pop(callback_id, None)
            self._maybe_duplicate(batch)
            return
        self.stats.deliveries_failed += 1
        knobs = self.knobs
        if not batch.deferred and batch.attempts <= knobs.max_retries:
            batch.ready_at = time.monotonic() + knobs.retry_interval
            self._schedule(batch, self.clock.now())
        elif knobs.retry_policy == "defer":
            if self.clock.now() - batch.first_attempt_at + knobs.defer_seconds <= knobs.defer_max_seconds:
                batch.deferred = True
                batch.ready_at = 0.0
                self._schedule(batch, self.clock.now() + knobs.defer_seconds)
            else:
                self._drop(batch)
        else:
            self._drop(batch)
            self._count_failure(callback_id)

    def _drop(self, batch: Batch) -> None:
        self.stats.batches_dropped += 1
        self.stats.events_dropped += len(batch.events)

    def _count_failure(self, callback_id: str) -> None:
        now = self.clock.now()
        recent = [t for t in self.failures.get(callback_id, []) if now - t <= self.knobs.failure_window]
        recent.append(now)
        self.failures[callback_id] = recent
        if len(recent) >= 2:
            seconds = self.next_suspension.get(callback_id, self.knobs.suspend_seconds)
            self.next_suspension[callback_id] = min(seconds * 2, self.knobs.suspend_max_seconds)
            self.suspend(callback_id, seconds)

    def _maybe_duplicate(self, batch: Batch) -> None:
        """At-least-once: resend the acked bytes, or slip its events into a later batch."""
        if not self.knobs.duplicate_probability or self.rng.random() >= self.knobs.duplicate_probability:
            return
        if self.rng.random() < 0.5:
            self._schedule(Batch(batch.callback_id, batch.events, batch.body), self.clock.now())
        else:
            for event in batch.events:
                self.enqueue(batch.callback_id, event)


@dataclass
class Attempt:
    url: str
    body: bytes
    headers: dict
    timeout: float
    signature: str
    gone: bool = False
