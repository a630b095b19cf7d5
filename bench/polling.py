"""Polling cost: status GETs the poller spends, against the fake SFMC on one simulated clock.

N SMS are sent and tracked over the first minutes of a simulated span; ENS settles most of them
seconds later, never reports a chosen share (`delivered_ens_lost`: SFMC sends, ENS loses every
event), and a few stay queued behind an inactive send definition for the whole span. The
product's `Poller` runs in this process with the fake's `FakeClock`, one cycle every
POLL_INTERVAL_SECONDS of simulated time, and talks to the fake over HTTP through `SFMCClient`;
the fake's ENS events are applied every 5 simulated seconds through `parse_batch` +
`Store.ingest`, the receiver's own path, without the HTTP hop. Nothing waits in real time.

The naive poller runs the same sends on a fresh fake and clock: every cycle it GETs every
tracked key until that key's GET shows a status the GET cannot improve on (Sent or NotSent).
"""
from __future__ import annotations

import json
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from poller.cycle import Poller
from poller.sfmc import NotFound, SFMCClient
from receiver.config import Settings
from receiver.events import parse_batch
from receiver.store import Store
from tests.fakesfmc import FakeClock, FakeSFMC

from .report import Row, ratio

START = 1767225600.0  # 2026-01-01T00:00:00Z
SETTLED_DIGITS = "012345679"  # the fake's default SMS outcomes with at least one ENS event
LOST_DIGIT = "8"  # delivered_ens_lost
CLIENT_ID, CLIENT_SECRET = "bench-client-id", "bench-client-secret"


@dataclass(frozen=True)
class Plan:
    messages: int = 2000
    lost_share: float = 0.10
    queued_share: float = 0.02
    send_minutes: float = 10.0
    span_hours: float = 2.0
    interval_s: float = 30.0
    grace_s: float = 300.0

    def sends(self) -> list[tuple[float, str, str, str, str]]:
        """(offset s, key, to, definition, kind) for every message, spread evenly over the sending minutes."""
        lost_every = round(1 / self.lost_share) if self.lost_share else 0
        queued_every = round(1 / self.queued_share) if self.queued_share else 0
        plan = []
        for n in range(self.messages):
            offset = n * self.send_minutes * 60 / self.messages
            if queued_every and n % queued_every == 1:
                kind, definition, digit = "queued", "otp-paused", "4"
            elif lost_every and n % lost_every == 0:
                kind, definition, digit = "lost", "otp", LOST_DIGIT
            else:
                kind, definition, digit = "settled", "otp", SETTLED_DIGITS[n % len(SETTLED_DIGITS)]
            plan.append((offset, f"bench-poll-{n:05d}", f"1555010{n % 1000:03d}{digit}", definition, kind))
        return plan


@dataclass
class Figures:
    plan: Plan
    kinds: dict[str, int]
    product_gets: dict[str, int]
    naive_gets: dict[str, int]
    cycles: int
    elapsed: float


def _fake(clock: FakeClock) -> FakeSFMC:
    """A fake SFMC (started by `with`) with an active SMS definition and an inactive one."""
    fake = FakeSFMC(clock=clock, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, seed=7)
    fake.define("sms", "otp")
    fake.define("sms", "otp-paused", status="inactive")
    return fake


def _client(fake: FakeSFMC, clock: FakeClock) -> SFMCClient:
    return SFMCClient(auth_base_url=fake.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                      clock=clock.now, wall_clock=clock.now)


def _timeline(plan: Plan):
    """Simulated seconds at which the world is looked at: every 5 s while sending, then every cycle."""
    t, sending_until, end = 0.0, plan.send_minutes * 60 + plan.grace_s + 60, plan.span_hours * 3600
    while t <= end:
        yield t
        t += 5.0 if t < sending_until else plan.interval_s


def _send_due(fake: FakeSFMC, sends: list, next_send: int, t: float) -> tuple[list[tuple[str, str, str, str]], int]:
    """Send every message whose offset has come; returns (key, to, definition, kind) of each, and the next index."""
    sent = []
    while next_send < len(sends) and sends[next_send][0] <= t:
        _, key, to, definition, kind = sends[next_send]
        fake.send("sms", key, to, definition)
        sent.append((key, to, definition, kind))
        next_send += 1
    return sent, next_send


def run_product(workdir: Path, plan: Plan) -> tuple[dict[str, int], int]:
    clock = FakeClock(start=START)
    sends, kinds, emitted = plan.sends(), {}, []
    next_send, next_cycle, cycles = 0, plan.interval_s, 0
    with _fake(clock) as fake, _client(fake, clock) as client, closing(Store(workdir / "polling.db")) as store:
        fake.messaging.emit = emitted.append  # ENS events go straight to the receiver's ingest path below
        store.upgrade()
        settings = Settings(sfmc_auth_base_url=fake.url, sfmc_client_id=CLIENT_ID, sfmc_client_secret=CLIENT_SECRET,
                            poll_interval_seconds=plan.interval_s, poll_grace_seconds=plan.grace_s)
        poller = Poller(settings, store, client, clock=clock.now, holder="bench-poller")
        for t in _timeline(plan):
            clock.set(START + t)
            now_ms = int(clock.now() * 1000)
            sent, next_send = _send_due(fake, sends, next_send, t)
            if sent:
                kinds.update((key, kind) for key, _, _, kind in sent)
                # As a downstream app tracks its sends (SPEC §5): with the send definition's key.
                store.track([{"channel": "sms", "message_key": key, "to": to, "definition_key": definition,
                              "sent_at": now_ms} for key, to, definition, _ in sent], now_ms, int(plan.grace_s * 1000))
            fake.step()
            if emitted:
                body = json.dumps(emitted).encode()
                emitted.clear()
                store.ingest(body, parse_batch(body, now_ms), now_ms, "base64")
            if t >= next_cycle:
                poller.cycle()
                cycles += 1
                next_cycle += plan.interval_s
        return _by_kind(fake.get_status_calls, kinds), cycles


def run_naive(plan: Plan) -> dict[str, int]:
    clock = FakeClock(start=START)
    sends, kinds, open_keys = plan.sends(), {}, []
    next_send, next_cycle = 0, plan.interval_s
    with _fake(clock) as fake, _client(fake, clock) as client:
        for t in _timeline(plan):
            clock.set(START + t)
            sent, next_send = _send_due(fake, sends, next_send, t)
            kinds.update((key, kind) for key, _, _, kind in sent)
            open_keys += [key for key, _, _, _ in sent]
            fake.step()
            if t >= next_cycle:
                open_keys = [key for key in open_keys if not _final_for_get(client, key)]
                next_cycle += plan.interval_s
        return _by_kind(fake.get_status_calls, kinds)


def _final_for_get(client: SFMCClient, key: str) -> bool:
    """One status GET; True when it shows Sent or NotSent, beyond which the GET never goes."""
    try:
        reply = client.message_status("sms", key)
    except NotFound:
        return False
    return (reply.event_category_type or "").endswith(("Sent", "NotSent"))


def _by_kind(calls, kinds: dict[str, str]) -> dict[str, int]:
    gets = {"lost": 0, "queued": 0, "settled": 0}
    for (_, key), count in calls.items():
        gets[kinds[key]] += count
    return gets


def measure(workdir: Path, plan: Plan = Plan(), log=print) -> Figures:
    began = time.perf_counter()
    log(f"polling: product poller, {plan.messages} messages over {plan.span_hours:g} simulated hours")
    product, cycles = run_product(workdir, plan)
    log("polling: naive poller over the same span")
    naive = run_naive(plan)
    kinds = {"lost": 0, "queued": 0, "settled": 0}
    for *_, kind in plan.sends():
        kinds[kind] += 1
    return Figures(plan, kinds, product, naive, cycles, time.perf_counter() - began)


def rows(f: Figures) -> list[Row]:
    k, p, n = f.kinds, f.product_gets, f.naive_gets
    needed = k["lost"] + k["queued"]
    span = f"{f.plan.span_hours:g} h simulated, {f.cycles} cycles"

    def per(gets: int, count: int) -> float:
        return gets / count if count else 0.0

    lost, naive_lost = per(p["lost"], k["lost"]), per(n["lost"], k["lost"])
    both, naive_both = per(p["lost"] + p["queued"], needed), per(n["lost"] + n["queued"], needed)
    queued, naive_queued = per(p["queued"], k["queued"]), per(n["queued"], k["queued"])
    total, naive_total = sum(p.values()), sum(n.values())
    return [
        Row(f"GETs per ENS-lost message ({k['lost']} of {f.plan.messages}; {span})", f"{lost:.2f}",
            f"naive {naive_lost:.2f}", ratio(lost, naive_lost), "≤ 1.2", lost <= 1.2),
        Row(f"GETs per message that needed one (lost + {k['queued']} stuck queued)", f"{both:.2f}",
            f"naive {naive_both:.2f}", ratio(both, naive_both), "≤ 1.2", both <= 1.2),
        Row("GETs per stuck-queued message (re-polled, backing off)", f"{queued:.1f}", f"naive {naive_queued:.1f}",
            ratio(queued, naive_queued)),
        Row(f"GETs for messages ENS settled ({k['settled']})", str(p["settled"]), f"naive {n['settled']}",
            ratio(p["settled"], n["settled"]), "0", p["settled"] == 0),
        Row("status GETs in total over the span", str(total), f"naive {naive_total}", ratio(total, naive_total)),
    ]
