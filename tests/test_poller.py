"""The poller's rules, in-process against the fake SFMC, with one injected clock for both.

Long spans (72 hours, 30 minutes of not-found retries) are clock jumps, never sleeps.
"""
from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from poller.cycle import CycleReport, Poller
from poller.sfmc import SFMCClient
from receiver.config import Settings
from receiver.store import Store
from tests.fakesfmc import FakeClock, FakeSFMC

START = 1767225600.0  # 2026-01-01T00:00:00Z
MINUTE, HOUR = 60.0, 3600.0


@pytest.fixture
def clock():
    return FakeClock(start=START)


@pytest.fixture
def fake(clock):
    with FakeSFMC(clock=clock, send_delay=1.0, transient_delay=2.0, final_delay=3.0) as fake:
        fake.define("sms", "otp")
        fake.define("sms", "paused-otp", status="inactive")
        fake.define("email", "receipt")
        yield fake


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "ens.db")
    store.upgrade()
    yield store
    store.close()


def make_poller(store, fake, clock, **overrides):
    settings = Settings(**{
        "sfmc_auth_base_url": fake.url, "sfmc_client_id": "fake-client-id", "sfmc_client_secret": "fake-client-secret",
        "poll_interval_seconds": 30, "poll_grace_seconds": 300, "poll_queued_stale_seconds": 300,
        "poll_max_requests_per_minute": 60, **overrides})
    client = SFMCClient(auth_base_url=fake.url, client_id="fake-client-id", client_secret="fake-client-secret",
                        clock=clock.now, wall_clock=clock.now)
    return Poller(settings, store, client, clock=clock.now, holder="test-poller")


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def track(store, clock, *keys, channel="sms", sent_at=None, definition_key=None):
    now = ms(clock.now())
    store.track([{"channel": channel, "message_key": key, "sent_at": ms(sent_at) if sent_at else now,
                  "definition_key": definition_key} for key in keys], now, grace_ms=300_000)


def status_gets(fake, key=None):
    """Status GETs the fake answered (optionally for one key), from its request log."""
    paths = [r.raw_path for r in fake.requests if r.method == "GET" and "/messages/" in r.raw_path and not r.query]
    return [p for p in paths if key is None or p.endswith("/" + key)]


def status_route_requests(fake):
    """Every request to the rate-limited status routes: single GETs and notSent list pages."""
    return [r for r in fake.requests if r.method == "GET" and "/messages/" in r.raw_path]


def ens_event(event_type, key, at_ms, **info):
    return json.dumps([{"eventCategoryType": f"TransactionalSendEvents.{event_type}", "timestampUTC": at_ms,
                        "info": {"messageKey": key, **info}}]).encode()


def test_no_get_before_the_grace_period(store, fake, clock):
    poller = make_poller(store, fake, clock)
    fake.send("sms", "mk-1", "15550100007", "otp")
    track(store, clock, "mk-1")
    clock.advance(299)
    fake.step()
    assert poller.cycle().polled == 0
    assert status_gets(fake) == []
    clock.advance(2)
    assert poller.cycle().polled == 1
    message = store.message("mk-1", "sms")
    assert (message["status"], message["source"], message["poll_state"]) == ("sent", "poll", "done")


def test_message_settled_by_ens_is_never_polled(store, fake, clock):
    from receiver.events import parse_batch

    poller = make_poller(store, fake, clock)
    track(store, clock, "mk-ens")
    body = ens_event("SmsSent", "mk-ens", ms(clock.now()))
    store.ingest(body, parse_batch(body, ms(clock.now())), ms(clock.now()), "base64")
    clock.advance(3 * HOUR)
    for _ in range(5):
        poller.cycle()
        clock.advance(10 * MINUTE)
    assert status_gets(fake) == []
    assert store.message("mk-ens", "sms")["poll_state"] == "done"


def test_message_older_than_the_window_gives_up_without_a_get(store, fake, clock):
    poller = make_poller(store, fake, clock)
    track(store, clock, "mk-old", sent_at=clock.now() - 73 * HOUR)
    report = poller.cycle()
    assert report.expired == 1 and report.polled == 0
    message = store.message("mk-old", "sms")
    assert (message["poll_state"], message["poll_reason"]) == ("gave_up", "window_expired")
    assert status_gets(fake) == []


def test_stuck_queued_costs_a_bounded_number_of_gets_then_gives_up(store, fake, clock):
    poller = make_poller(store, fake, clock)
    fake.send("sms", "mk-held", "15550100004", "paused-otp")
    track(store, clock, "mk-held")
    for _ in range(72 * 6 + 12):  # 74 hours in 10-minute cycles
        clock.advance(10 * MINUTE)
        fake.step()
        poller.cycle()
    gets = len(status_gets(fake, "mk-held"))
    assert 5 <= gets <= 16, gets
    message = store.message("mk-held", "sms")
    assert message["status"] == "queued"
    assert (message["poll_state"], message["poll_reason"]) == ("gave_up", "stuck_queued")


def test_queued_then_sent_when_the_definition_is_activated(store, fake, clock):
    poller = make_poller(store, fake, clock)
    fake.send("sms", "mk-late", "15550100004", "paused-otp")
    track(store, clock, "mk-late")
    clock.advance(301)
    poller.cycle()
    assert store.message("mk-late", "sms")["status"] == "queued"
    fake.define("sms", "paused-otp", status="active")
    clock.advance(2 * HOUR)
    fake.step()
    poller.cycle()
    message = store.message("mk-late", "sms")
    assert (message["status"], message["poll_state"]) == ("sent", "done")


def test_not_found_retries_over_thirty_minutes_then_gives_up(store, fake, clock):
    poller = make_poller(store, fake, clock)
    track(store, clock, "mk-unknown")
    first_get_at = None
    for _ in range(60):
        clock.advance(MINUTE)
        if poller.cycle().polled and first_get_at is None:
            first_get_at = clock.now()
    message = store.message("mk-unknown", "sms")
    assert (message["poll_state"], message["poll_reason"]) == ("gave_up", "not_found")
    assert len(status_gets(fake, "mk-unknown")) == 4
    assert message["last_polled_at"] - ms(first_get_at) >= ms(30 * MINUTE)


def test_late_queued_answer_never_overrides_sent_from_ens(store, fake, clock):
    from receiver.events import parse_batch

    poller = make_poller(store, fake, clock)
    fake.send("sms", "mk-race", "15550100004", "paused-otp")
    track(store, clock, "mk-race")
    clock.advance(301)
    row = store.due(ms(clock.now()), 10)[0]
    body = ens_event("SmsSent", "mk-race", ms(clock.now()) + 5000)
    store.ingest(body, parse_batch(body, ms(clock.now())), ms(clock.now()), "base64")
    poller._poll(row, CycleReport())
    message = store.message("mk-race", "sms")
    assert (message["status"], message["source"], message["poll_state"]) == ("sent", "ens", "done")
    history = store.history("sms", "mk-race")
    assert [(h["source"], h["status"], bool(h["applied"])) for h in history] == [("ens", "sent", True), ("poll", "queued", False)]


def test_answer_about_an_earlier_send_of_a_reused_key_is_kept_but_not_applied(store, fake, clock):
    poller = make_poller(store, fake, clock)
    fake.send("sms", "mk-reused", "15550100007", "otp")
    clock.advance(50 * HOUR)
    fake.step()
    # Our app reuses the key now, but its new send never reached SFMC: the GET describes the old one.
    track(store, clock, "mk-reused")
    clock.advance(301)
    poller.cycle()
    message = store.message("mk-reused", "sms")
    assert message["status"] is None
    history = store.history("sms", "mk-reused")
    assert len(history) == 1 and history[0]["status"] == "sent" and not history[0]["applied"]
    assert history[0]["reason"].startswith("reused_key")


@pytest.mark.parametrize("retry_after, expected_pause", [
    ("7", 7.0),
    (formatdate(START + 301 + 42, usegmt=True), 42.0),
    (None, 5.0),
])
def test_429_pauses_polling_for_retry_after(store, fake, clock, retry_after, expected_pause):
    poller = make_poller(store, fake, clock)
    track(store, clock, "mk-a", "mk-b")
    clock.advance(301)
    headers = {"Retry-After": retry_after} if retry_after else {}
    errorcode = 50100 if retry_after else 50200
    fake.fail_next("GET", "/messaging/v1/sms/messages/", 429,
                   body={"message": "Rate limit exceeded", "errorcode": errorcode, "documentation": ""}, headers=headers)
    report = poller.cycle()
    assert report.stopped_by == "rate limited" and report.polled == 0
    assert store.poller_value("paused_until") == ms(clock.now() + expected_pause)
    clock.advance(expected_pause - 0.5)
    assert poller.cycle().polled == 0
    assert len(status_gets(fake)) == 1
    clock.advance(1)
    assert poller.cycle().polled == 2


def test_budget_holds_per_sliding_minute(store, fake, clock):
    poller = make_poller(store, fake, clock, poll_max_requests_per_minute=10)
    keys = [f"mk-{n:03d}" for n in range(35)]
    track(store, clock, *keys)
    clock.advance(301)
    times = []
    for _ in range(12):  # 3 minutes in 15-second cycles
        before = len(status_route_requests(fake))
        poller.cycle()
        times += [clock.now()] * (len(status_route_requests(fake)) - before)
        clock.advance(15)
    for t in times:
        assert sum(1 for other in times if t - 60 < other <= t) <= 10
    assert len(times) == 30


def test_token_is_reused_and_refreshed_once_when_revoked(store, fake, clock):
    poller = make_poller(store, fake, clock)
    for batch in ("t", "u"):
        keys = [f"mk-{batch}{n}" for n in range(6)]
        for key in keys:
            fake.send("sms", key, "15550100007", "otp")
        track(store, clock, *keys)
        clock.advance(301)
        fake.step()
        fake.expire_tokens()  # the token cached from the last cycle is now refused: one refresh, then all succeed
        report = poller.cycle()
        assert (report.polled, report.applied) == (6, 6)
    assert fake.token_requests == 2


def test_tokens_per_hour_of_polling(store, fake, clock):
    poller = make_poller(store, fake, clock)
    for minute in range(60):
        track(store, clock, f"mk-h{minute}")
        clock.advance(MINUTE)
        poller.cycle()
    assert fake.token_requests <= 4  # one per ~18 minutes


def test_awkward_keys_are_one_percent_encoded_path_segment(store, fake, clock):
    poller = make_poller(store, fake, clock)
    keys = {"a/b": "a%2Fb", "q?x": "q%3Fx", "h#x": "h%23x", "p%x": "p%25x", "s p": "s%20p", ".": "%2E",
            "..": "%2E%2E", "é": "%C3%A9"}
    track(store, clock, *keys)
    clock.advance(301)
    poller.cycle()
    assert sorted(status_gets(fake)) == sorted(f"/messaging/v1/sms/messages/{encoded}" for encoded in keys.values())


def test_only_the_lease_holder_polls(store, fake, clock):
    first = make_poller(store, fake, clock)
    second = make_poller(store, fake, clock)
    second.holder = "other-poller"
    track(store, clock, "mk-1", "mk-2")
    clock.advance(301)
    assert first.cycle().leader
    assert not second.cycle().leader
    assert len(status_gets(fake)) == 2
    clock.advance(31)  # the first one is gone: its lease runs out after one interval
    assert second.cycle().leader


def test_probe_is_verified_exactly_once(store, fake, clock, tmp_path):
    import http.server
    import threading

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            probe = json.loads(body)
            store.record_probe(probe["callbackId"], probe["verificationKey"], ms(clock.now()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        fake.map_delivery("https://hooks.example.org/ens", f"http://127.0.0.1:{server.server_address[1]}/ens")
        admin = SFMCClient(auth_base_url=fake.url, client_id="fake-client-id", client_secret="fake-client-secret")
        callback = admin.create_callback("test", "https://hooks.example.org/ens")
        admin.close()
    finally:
        server.shutdown()
        server.server_close()
    pollers = [make_poller(store, fake, clock), make_poller(store, fake, clock)]
    outcomes = [p.verify_probes() for p in pollers]
    assert sorted(outcomes, key=str) == [None, "verified"]
    verifies = [r for r in fake.requests if r.raw_path == "/platform/v1/ens-verify"]
    assert len(verifies) == 1
    assert json.loads(verifies[0].body)["callbackId"] == callback["callbackId"]
    assert store.probe(callback["callbackId"])["state"] == "verified"


def test_prune_runs_once_a_day(store, fake, clock):
    poller = make_poller(store, fake, clock, retention_days=30)
    track(store, clock, "mk-ancient")
    clock.advance(31 * 24 * HOUR)
    assert poller.housekeeping()["messages"] == 1
    assert store.message("mk-ancient", "sms") is None
    clock.advance(HOUR)
    assert poller.housekeeping() is None


def test_not_sent_list_settles_many_messages_in_one_request(store, fake, clock):
    poller = make_poller(store, fake, clock)
    keys = [f"mk-ns{n:02d}" for n in range(30)]
    for key in keys:
        fake.send("sms", key, "15550100006", "otp")  # digit 6: not sent, statusCode 47
    fake.send("sms", "someone-elses", "15550100006", "otp")  # in the list, never tracked by us
    track(store, clock, *keys)
    clock.advance(301)
    fake.step()
    report = poller.cycle()
    assert (report.list_pages, report.settled_by_list, report.polled) == (1, 30, 0)
    assert status_gets(fake) == []
    message = store.message("mk-ns07", "sms")
    assert (message["status"], message["status_code"], message["source"], message["poll_state"]) == (
        "not_sent", "47", "poll", "done")
    assert store.message("someone-elses", "sms") is None
    # The cursor moved on: the next read starts after what was already seen.
    track(store, clock, "mk-late-ns", *[f"mk-sent{n}" for n in range(10)])
    fake.send("sms", "mk-late-ns", "15550100006", "otp")
    clock.advance(301)
    fake.step()
    report = poller.cycle()
    assert report.settled_by_list == 1
    lists = [r.query for r in fake.requests if r.query.startswith("type=notSent")]
    assert lists[0] == "type=notSent&$pageSize=100"
    assert lists[1].startswith("type=notSent&$pageSize=100&lastEventId=")


def test_messages_held_by_one_definition_share_their_re_polls(store, fake, clock):
    poller = make_poller(store, fake, clock)
    keys = [f"mk-held-{n}" for n in range(8)]
    for key in keys:
        fake.send("sms", key, "15550100004", "paused-otp")
    track(store, clock, *keys, definition_key="paused-otp")
    for _ in range(12):  # two hours in 10-minute cycles
        clock.advance(10 * MINUTE)
        fake.step()
        poller.cycle()
    gets = {key: len(status_gets(fake, key)) for key in keys}
    # Each is asked once to learn it is queued; after that one GET per step speaks for all eight.
    assert sum(gets.values()) <= len(keys) + 6, gets
    assert all(store.message(key, "sms")["status"] == "queued" for key in keys)
    fake.define("sms", "paused-otp", status="active")
    for _ in range(18):  # the definition is activated: every message is sent within a few hours
        clock.advance(10 * MINUTE)
        fake.step()
        poller.cycle()
    assert all(store.message(key, "sms")["status"] == "sent" for key in keys)


def test_a_401_retry_spends_a_slot_of_the_budget(store, fake, clock):
    poller = make_poller(store, fake, clock, poll_max_requests_per_minute=5)
    keys = [f"mk-b{n}" for n in range(5)]
    for key in keys:
        fake.send("sms", key, "15550100007", "otp")
    track(store, clock, *keys)
    clock.advance(301)
    fake.step()
    poller.cycle()  # spends the 5 slots and caches a token
    track(store, clock, "mk-late")
    fake.send("sms", "mk-late", "15550100007", "otp")
    clock.advance(301)
    fake.step()
    fake.expire_tokens()
    before = len(status_route_requests(fake))
    report = poller.cycle()
    assert report.polled == 1
    assert len(status_route_requests(fake)) - before == 2  # the GET, and the same GET after the refresh
    for t in [r.at for r in status_route_requests(fake)]:
        assert sum(1 for r in status_route_requests(fake) if t - 60 < r.at <= t) <= 5


def test_a_401_retry_without_a_slot_waits_for_the_next_cycle(store, fake, clock):
    poller = make_poller(store, fake, clock, poll_max_requests_per_minute=5)
    fake.send("sms", "mk-warm", "15550100007", "otp")
    poller.client.message_status("sms", "mk-warm")  # a cached token, spent outside the budget
    keys = [f"mk-c{n}" for n in range(5)]
    for key in keys:
        fake.send("sms", key, "15550100007", "otp")
    track(store, clock, *keys)
    clock.advance(301)
    fake.step()
    fake.expire_tokens()
    before = len(status_route_requests(fake))
    report = poller.cycle()
    assert len(status_route_requests(fake)) - before <= 5
    assert report.polled == 4 and report.stopped_by.startswith("budget")


def test_refused_credentials_pause_polling_instead_of_asking_every_cycle(store, fake, clock):
    poller = make_poller(store, fake, clock)
    track(store, clock, *[f"mk-a{n}" for n in range(3)])
    clock.advance(301)
    fake.fail_next("GET", "/messaging/v1/sms/messages/", 401, count=10_000)
    assert poller.cycle().stopped_by == "credentials refused"
    asked = len(status_route_requests(fake))
    for _ in range(39):  # the next 19.5 minutes of 30-second cycles
        clock.advance(30)
        assert poller.cycle().polled == 0
    assert len(status_route_requests(fake)) == asked
    assert fake.token_requests <= 2
