"""The whole product against the fake SFMC, as a deployment would run it.

The real web process (gunicorn, the Procfile's command) and the real poller process run against a
fake SFMC on 127.0.0.1. The callback is set up the way a user does it: created while the receiver
has no key yet (it stores the probe), the key configured and the web restarted, the poller
verifying the probe, then a subscription to every transactional type. Traffic is sent through the
fake with every fault on, tracked through the query API, and each message's final status is
compared with what an observer of SFMC could know: the best of the ENS events the receiver
acknowledged and, for messages the poller asked about or that never got an event, what the
status GET shows.

Used by the end-to-end test (assertions) and by `make demo` (a printed summary).
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from poller.sfmc import SFMCClient
from tests.fakesfmc import FakeSFMC
from tests.processes import procfile_command, run_process, run_web

CALLBACK_URL = "https://ens-status.example.org/ens"
API_TOKEN = "scenario-token"
TRANSACTIONAL_TYPES = [f"TransactionalSendEvents.{kind}" for kind in (
    "SmsSent", "SmsNotSent", "SmsTransient", "SmsDelivered", "SmsBounced", "EmailSent", "EmailNotSent", "EmailBounced")]
# Written here, independently of receiver/status.py: what each ENS type says, and its rank.
ENS_MEANING = {"SmsSent": "sent", "SmsNotSent": "not_sent", "SmsTransient": "transient", "SmsDelivered": "delivered",
               "SmsBounced": "bounced", "EmailSent": "sent", "EmailNotSent": "not_sent", "EmailBounced": "bounced"}
RANK = {None: 0, "queued": 1, "sent": 2, "transient": 3, "delivered": 4, "bounced": 4, "not_sent": 4}
# What the status GET can show for each true state: it never reports carrier outcomes.
GET_SHOWS = {"queued": "queued", "not_sent": "not_sent", "sent": "sent", "transient": "sent", "delivered": "sent",
             "bounced": "sent"}
EMAIL_LOCAL_PARTS = ("ada", "bounce", "notsent", "silent", "bob")
AWKWARD_KEYS = ("a/b", "q?x#y", "100%", "with space", "é-ü-ß", ".", "..", "/leading")


@dataclass
class Outcome:
    channel: str
    message_key: str
    truth: str
    expected: str | None
    status: str | None
    source: str | None
    poll_state: str | None
    gets: int
    ens_events: int
    settled_by_ens_in_time: bool


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    token_requests: int = 0
    list_requests: int = 0
    stored_ens_events: int = 0
    distinct_acked_events: int = 0
    deliveries: Counter = field(default_factory=Counter)

    @property
    def mismatches(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != o.expected]

    @property
    def needed_a_get(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.settled_by_ens_in_time]

    @property
    def total_gets(self) -> int:
        return sum(o.gets for o in self.outcomes)


class Scenario:
    def __init__(self, workdir: Path, *, messages: int = 300, traffic_seconds: float = 10.0, seed: int = 7,
                 grace_seconds: float = 4.0, progress: Callable[[str], None] = lambda line: None):
        self.workdir = Path(workdir)
        self.db_path = self.workdir / "ens-status.db"
        self.messages = messages
        self.traffic_seconds = traffic_seconds
        self.grace_seconds = grace_seconds
        self.progress = progress
        self.fake = FakeSFMC(seed=seed, send_delay=0.3, transient_delay=0.4, final_delay=0.6, flush_interval=0.2,
                             duplicate_probability=0.15, reorder=True, corrupt_signature_probability=0.05,
                             suspend_seconds=2.0, suspend_max_seconds=4.0)
        self.sent: list[tuple[str, str, float]] = []  # (channel, key, tracked at)

    def run(self, settle_timeout: float = 60.0) -> Report:
        started = time.monotonic()
        with ExitStack() as stack:
            fake = stack.enter_context(self.fake)
            fake.define("sms", "otp")
            fake.define("sms", "held-otp", status="inactive")
            fake.define("email", "receipt")
            admin = stack.enter_context(SFMCClient(auth_base_url=fake.url, client_id=fake.client_id,
                                                   client_secret=fake.client_secret))
            env = {"API_TOKENS": API_TOKEN, "LOG_FORMAT": "json", "POLL_GRACE_SECONDS": str(self.grace_seconds)}
            with run_web(self.db_path, env) as (url, _):
                fake.map_delivery(CALLBACK_URL, f"{url}/ens")
                callback = admin.create_callback("ens-status scenario", CALLBACK_URL)
            self.progress(f"callback {callback['callbackId']} created; its probe is stored")
            env["ENS_SIGNATURE_KEYS"] = callback["signatureKey"]
            url, _ = stack.enter_context(run_web(self.db_path, env))
            fake.map_delivery(CALLBACK_URL, f"{url}/ens")
            poller = stack.enter_context(run_process(procfile_command("poller"), {
                **env, "DATABASE_URL": f"sqlite:///{self.db_path.resolve()}", "SFMC_AUTH_BASE_URL": fake.url,
                "SFMC_CLIENT_ID": fake.client_id, "SFMC_CLIENT_SECRET": fake.client_secret,
                "POLL_INTERVAL_SECONDS": "0.5", "POLL_QUEUED_STALE_SECONDS": "2",
                "POLL_MAX_REQUESTS_PER_MINUTE": "600"}))
            poller.wait_until(lambda: self._probe_state(callback["callbackId"]) == "verified", 20, "probe verified")
            admin.create_subscription("all-transactional", callback["callbackId"], TRANSACTIONAL_TYPES)
            self.progress("callback verified by the poller; subscribed to every transactional type")
            api = stack.enter_context(httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_TOKEN}"},
                                                   timeout=10))
            self._drive(api)
            report = self._settle(api, settle_timeout)
            report.seconds = time.monotonic() - started
            report.token_requests = fake.token_requests
            report.list_requests = fake.status_list_calls
        return report

    def _drive(self, api: httpx.Client) -> None:
        """Send through the fake and track through our API, with a suspension in the middle."""
        pause = self.traffic_seconds / self.messages
        suspend_at = int(self.messages * 0.4)
        for n in range(self.messages):
            channel, key, to, definition = self._message(n)
            self.fake.send(channel, key, to, definition)
            response = api.post("/v1/messages", json={"messageKey": key, "channel": channel, "to": to,
                                                      "definitionKey": definition})
            assert response.status_code == 201, response.text
            self.sent.append((channel, key, time.time()))
            if n == suspend_at:
                self.fake.suspend(1.5)
                self.progress(f"ENS callback suspended for 1.5 s at message {n}: its events are dropped")
            if n % 50 == 49:
                self.progress(f"sent and tracked {n + 1}/{self.messages} messages")
            time.sleep(pause)

    def _message(self, n: int) -> tuple[str, str, str, str]:
        key = f"{AWKWARD_KEYS[n]}" if n < len(AWKWARD_KEYS) else f"mk-{n:05d}"
        if n % 7 == 3:
            return "email", key, f"{EMAIL_LOCAL_PARTS[n % 5]}{n}@example.net", "receipt"
        definition = "held-otp" if n % 20 == 11 else "otp"
        return "sms", key, f"1555{n:07d}", definition

    def _settle(self, api: httpx.Client, timeout: float) -> Report:
        """Wait until every message shows what an observer of SFMC could know, or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.fake.drain(timeout=10)
            report = self._report(api)
            waiting = report.mismatches
            self.progress(f"settling: {len(report.outcomes) - len(waiting)}/{len(report.outcomes)} messages show "
                          f"what SFMC knows, {report.total_gets} status GETs so far")
            if not waiting or time.monotonic() > deadline:
                return report
            time.sleep(1)

    def _report(self, api: httpx.Client) -> Report:
        acked = self._acked_events()
        truth = self.fake.truth()
        statuses = self._api_statuses(api)
        report = Report(deliveries=Counter("ok" if d.ok else f"failed {d.status}" for d in self.fake.ens_deliveries))
        report.distinct_acked_events = len({json.dumps(e, sort_keys=True) for events in acked.values() for e, _ in events})
        for channel, key, tracked_at in self.sent:
            events = acked.get((channel, key), [])
            ens_best = max((ENS_MEANING[e["eventCategoryType"].split(".")[1]] for e, _ in events),
                           key=RANK.__getitem__, default=None)
            gets = self.fake.get_status_calls[(channel, key)]
            # Without any ENS event the poller must find out, by a GET or from the notSent list.
            visible = GET_SHOWS[truth[(channel, key)]] if gets or not events else None
            expected = max(ens_best, visible, key=RANK.__getitem__)
            first_ack = min((at for _, at in events), default=None)
            status, source, poll_state = statuses.get((channel, key), (None, None, None))
            report.outcomes.append(Outcome(
                channel, key, truth[(channel, key)], expected, status, source, poll_state, gets, len(events),
                first_ack is not None and first_ack <= tracked_at + self.grace_seconds))
        with sqlite3.connect(self.db_path) as db:
            report.stored_ens_events = db.execute("SELECT count(*) FROM events WHERE source = 'ens'").fetchone()[0]
        return report

    def _acked_events(self) -> dict[tuple[str, str], list[tuple[dict, float]]]:
        """Every event in a batch the receiver answered 2xx, by message, with when it was acked."""
        found: dict[tuple[str, str], list] = {}
        seen = set()
        for delivery in self.fake.ens_deliveries:
            if not delivery.ok:
                continue
            for event in json.loads(delivery.body):
                identity = json.dumps(event, sort_keys=True)
                if identity in seen:
                    continue
                seen.add(identity)
                channel = "email" if ".Email" in event["eventCategoryType"] else "sms"
                found.setdefault((channel, event["info"]["messageKey"]), []).append((event, delivery.at))
        return found

    def _api_statuses(self, api: httpx.Client) -> dict:
        statuses, cursor = {}, None
        while True:
            page = api.get("/v1/messages", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}).json()
            for m in page["messages"]:
                statuses[(m["channel"], m["messageKey"])] = (m["status"], m["source"], m["poll"]["state"])
            cursor = page["nextCursor"]
            if not cursor:
                return statuses

    def _probe_state(self, callback_id: str) -> str | None:
        with sqlite3.connect(self.db_path) as db:
            row = db.execute("SELECT state FROM probes WHERE callback_id = ?", (callback_id,)).fetchone()
        return row[0] if row else None


def summary(report: Report) -> str:
    """The status × source table, plus what the poller spent."""
    table = Counter((o.status or "none", o.source or "-") for o in report.outcomes)
    lines = [f"{'status':<12}{'ens':>8}{'poll':>8}{'none':>8}"]
    for status in ("queued", "sent", "transient", "delivered", "bounced", "not_sent", "none"):
        counts = [table[(status, source)] for source in ("ens", "poll", "-")]
        if any(counts):
            lines.append(f"{status:<12}" + "".join(f"{count:>8}" for count in counts))
    needed = report.needed_a_get
    settled = [o for o in report.outcomes if o.settled_by_ens_in_time]
    lines += [
        "",
        f"messages: {len(report.outcomes)}, showing what SFMC knows: {len(report.outcomes) - len(report.mismatches)}",
        f"status GETs: {report.total_gets} in all; {sum(o.gets for o in needed)} for the {len(needed)} messages "
        f"ENS did not settle in time; {sum(o.gets for o in settled)} for the {len(settled)} it did; "
        f"{report.list_requests} notSent list pages",
        f"ENS deliveries: {dict(report.deliveries)} (401s: the fake corrupts 5% of signatures on purpose); "
        f"token requests: {report.token_requests}",
        f"ENS events: {report.distinct_acked_events} distinct acknowledged, {report.stored_ens_events} stored",
        f"took {report.seconds:.1f} s",
    ]
    return "\n".join(lines)
