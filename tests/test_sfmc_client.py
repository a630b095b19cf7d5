"""The SFMC client, against a real fake SFMC on 127.0.0.1 wherever HTTP is involved."""

import json
import logging
import socket
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.sfmc import (
    MAX_RETRY_AFTER,
    AuthError,
    NotFound,
    RateLimited,
    Rejected,
    Retryable,
    SFMCClient,
    SFMCError,
    message_path,
    parse_retry_after,
)
from tests.fakesfmc import FakeClock, FakeSFMC

# 2026-01-01T00:00:00Z: 56 years of 365 days plus 14 leap days (1972…2024), times 86,400 s.
JAN_1_2026 = 1_767_225_600.0


# --- parse_retry_after -------------------------------------------------------------------


def test_retry_after_delay_seconds():
    assert parse_retry_after("7", JAN_1_2026) == 7.0
    assert parse_retry_after(" 120 ", JAN_1_2026) == 120.0
    assert parse_retry_after("0", JAN_1_2026) == 0.0


def test_retry_after_http_date_is_relative_to_now():
    # 1 January 2026 was a Thursday; 00:01:30 is 90 s after midnight.
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:30 GMT", JAN_1_2026) == 90.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:01:30 GMT", JAN_1_2026 + 0.5) == 89.5


def test_retry_after_date_in_the_past_means_now():
    assert parse_retry_after("Wed, 31 Dec 2025 23:59:00 GMT", JAN_1_2026) == 0.0


def test_retry_after_absurd_values_are_clamped():
    assert MAX_RETRY_AFTER == 600.0
    assert parse_retry_after("99999999", JAN_1_2026) == 600.0
    assert parse_retry_after("9" * 400, JAN_1_2026) == 600.0
    assert parse_retry_after("Fri, 01 Jan 2027 00:00:00 GMT", JAN_1_2026) == 600.0


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "-5", "7s", "1e3", "nan", "Thu, 99 Foo"])
def test_retry_after_absent_or_unparseable_is_none(value):
    assert parse_retry_after(value, JAN_1_2026) is None


# --- message_path ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "key", "path"),
    [
        ("sms", "mk-0001", "/messaging/v1/sms/messages/mk-0001"),
        ("sms", "a/b?c#d%e f", "/messaging/v1/sms/messages/a%2Fb%3Fc%23d%25e%20f"),
        ("email", "a/b?c#d%e f", "/messaging/v1/email/messages/a%2Fb%3Fc%23d%25e%20f"),
        ("sms", ".", "/messaging/v1/sms/messages/%2E"),
        ("sms", "..", "/messaging/v1/sms/messages/%2E%2E"),
        ("sms", "...", "/messaging/v1/sms/messages/..."),
        ("sms", "a.b", "/messaging/v1/sms/messages/a.b"),
        ("sms", "%2E", "/messaging/v1/sms/messages/%252E"),
        ("sms", "é", "/messaging/v1/sms/messages/%C3%A9"),
        ("sms", "😀", "/messaging/v1/sms/messages/%F0%9F%98%80"),
        ("sms", "+15550100001", "/messaging/v1/sms/messages/%2B15550100001"),
    ],
)
def test_message_path_encodes_the_key_as_one_segment(channel, key, path):
    assert message_path(channel, key) == path


@given(st.text(min_size=1, max_size=100))
def test_message_path_round_trips_any_key_as_one_segment(key):
    segment = message_path("sms", key).removeprefix("/messaging/v1/sms/messages/")
    assert urllib.parse.unquote(segment, errors="strict") == key
    assert "/" not in segment and "?" not in segment and "#" not in segment
    assert segment not in (".", "..")
    assert segment.isascii()


@pytest.mark.parametrize(("channel", "key"), [("push", "k"), ("SMS", "k"), ("sms", ""), ("sms", "a\ud800")])
def test_message_path_refuses_unknown_channel_or_empty_key(channel, key):
    with pytest.raises(ValueError):
        message_path(channel, key)


# --- error lines -------------------------------------------------------------------------


def test_error_is_one_line_with_status_errorcode_and_message():
    error = Rejected("MCMS_UTM_Runtime_InvalidOperation: bad state", status=409, errorcode=30002)
    assert str(error) == "SFMC 409 errorcode 30002: MCMS_UTM_Runtime_InvalidOperation: bad state"
    assert (error.status, error.errorcode) == (409, 30002)


def test_error_without_errorcode_or_status():
    assert str(Retryable("Bad Gateway", status=502)) == "SFMC 502: Bad Gateway"
    assert str(Retryable("ConnectError: refused")) == "SFMC request failed: ConnectError: refused"


def test_rate_limited_line_says_how_long_to_wait():
    error = RateLimited("Rate limit exceeded", status=429, errorcode=50100, retry_after=7.0)
    assert str(error) == "SFMC 429 errorcode 50100: Rate limit exceeded (retry after 7 s)"


def test_every_error_is_an_sfmc_error():
    for cls in (AuthError, NotFound, RateLimited, Retryable, Rejected):
        assert issubclass(cls, SFMCError)


# --- against the fake SFMC -----------------------------------------------------------------

SECRET = "fake-client-secret"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """httpx honours proxy variables; the fake on 127.0.0.1 must be reached directly."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock():
    return FakeClock(start=JAN_1_2026)


@pytest.fixture
def fake(clock):
    with FakeSFMC(clock=clock) as server:
        server.define("sms", "otp-sms")
        server.define("email", "receipt-email")
        yield server


@pytest.fixture
def make_client(fake, clock):
    clients = []

    def make(**overrides):
        options = {"auth_base_url": fake.url, "client_id": "fake-client-id", "client_secret": SECRET,
                   "timeout": 5.0, "wall_clock": clock.now}
        options.update(overrides)
        client = SFMCClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client):
    return make_client()


def rest_requests(fake, prefix="/messaging/"):
    return [r for r in fake.requests if r.raw_path.startswith(prefix)]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# status GET and notSent list


def test_status_of_a_queued_message(fake, client):
    fake.send("sms", "mk-q", "15550100004", "otp-sms")
    reply = client.message_status("sms", "mk-q")
    assert reply.event_category_type == "TransactionalSendEvents.SMSQueued"
    # 2026-01-01T00:00:00Z is 2025-12-31T18:00:00 in fixed UTC-06:00.
    assert reply.timestamp.startswith("2025-12-31T18:00:00")
    assert (reply.status_code, reply.status_message, reply.contact_key, reply.to) == (None, None, None, None)


def test_status_of_sent_and_not_sent_messages(fake, clock, client):
    fake.send("sms", "mk-sent", "15550100004", "otp-sms", contact_key="contact-42")
    fake.send("sms", "mk-refused", "15550100006", "otp-sms", contact_key="contact-43")
    clock.advance(10)
    fake.step()
    sent = client.message_status("sms", "mk-sent")
    assert sent.event_category_type == "TransactionalSendEvents.SMSSent"
    assert (sent.contact_key, sent.to, sent.status_code) == ("contact-42", "15550100004", None)
    refused = client.message_status("sms", "mk-refused")
    assert refused.event_category_type == "TransactionalSendEvents.SMSNotSent"
    assert (refused.status_code, refused.status_message) == (47, "MobileAddressNotFound")
    assert refused.raw["info"]["messageKey"] == "mk-refused"


def test_not_sent_pages_follow_the_cursor(fake, clock, client):
    for n in range(5):
        fake.send("sms", f"mk-ns-{n}", f"1555010010{n}6", "otp-sms")
    clock.advance(10)
    fake.step()
    first = client.not_sent("sms", page_size=2)
    assert [m["info"]["messageKey"] for m in first.messages] == ["mk-ns-0", "mk-ns-1"]
    second = client.not_sent("sms", last_event_id=first.last_event_id, page_size=2)
    third = client.not_sent("sms", last_event_id=second.last_event_id, page_size=2)
    assert [m["info"]["messageKey"] for m in second.messages + third.messages] == ["mk-ns-2", "mk-ns-3", "mk-ns-4"]
    empty = client.not_sent("sms", last_event_id=third.last_event_id, page_size=2)
    assert empty.messages == [] and empty.last_event_id == third.last_event_id
    queries = [r.query for r in rest_requests(fake)]
    assert queries[0] == "type=notSent&$pageSize=2"
    assert queries[1] == f"type=notSent&$pageSize=2&lastEventId={first.last_event_id}"
    assert {r.raw_path for r in rest_requests(fake)} == {"/messaging/v1/sms/messages/"}


# the token


def test_one_token_serves_50_calls_from_8_threads(fake, client):
    fake.send("sms", "mk-1", "15550100004", "otp-sms")
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: client.message_status("sms", "mk-1"), range(50)))
    assert len(replies) == 50
    assert fake.token_requests == 1
    assert client.token_requests == 1
    token_posts = [r for r in fake.requests if r.raw_path == "/v2/token"]
    assert len(token_posts) == 1
    assert json.loads(token_posts[0].body) == {
        "grant_type": "client_credentials", "client_id": "fake-client-id", "client_secret": SECRET}


def test_expired_token_is_refreshed_once_for_all_threads(fake, client):
    fake.send("sms", "mk-1", "15550100004", "otp-sms")
    threads = 8
    barrier = threading.Barrier(threads, action=fake.expire_tokens)

    def work(_):
        replies = [client.message_status("sms", "mk-1") for _ in range(3)]
        barrier.wait(timeout=10)  # the last thread to arrive revokes every token
        replies += [client.message_status("sms", "mk-1") for _ in range(3)]
        return replies

    with ThreadPoolExecutor(threads) as pool:
        results = [reply for replies in pool.map(work, range(threads)) for reply in replies]
    assert len(results) == threads * 6
    assert all(r.event_category_type == "TransactionalSendEvents.SMSQueued" for r in results)
    assert fake.token_requests == 2
    assert client.token_requests == 2
    refused = len(rest_requests(fake)) - threads * 6
    assert 1 <= refused <= threads  # each thread retried at most once after a 401


def test_a_401_refreshes_the_token_and_retries_once(fake, client):
    fake.send("sms", "mk-1", "15550100004", "otp-sms")
    client.message_status("sms", "mk-1")
    fake.fail_next("GET", "/messaging/v1/sms/messages/mk-1", 401,
                   body={"message": "Not Authorized", "errorcode": 0, "documentation": ""})
    assert client.message_status("sms", "mk-1").event_category_type.endswith("SMSQueued")
    assert fake.token_requests == 2
    assert len(rest_requests(fake)) == 3


def test_a_second_401_is_an_auth_error(fake, client):
    fake.send("sms", "mk-1", "15550100004", "otp-sms")
    fake.fail_next("GET", "/messaging/v1/sms/messages/mk-1", 401,
                   body={"message": "Not Authorized", "errorcode": 0, "documentation": ""}, count=2)
    with pytest.raises(AuthError) as caught:
        client.message_status("sms", "mk-1")
    assert str(caught.value) == "SFMC 401 errorcode 0: Not Authorized"
    assert fake.token_requests == 2
    assert len(rest_requests(fake)) == 2


def test_token_is_reused_until_shortly_before_it_expires(fake):
    now = [0.0]
    client = SFMCClient(auth_base_url=fake.url, client_id="fake-client-id", client_secret=SECRET,
                        clock=lambda: now[0])
    with client:
        fake.send("sms", "mk-1", "15550100004", "otp-sms")
        client.message_status("sms", "mk-1")
        now[0] = 1079 - 31  # expires_in 1079, less the 30 s margin
        client.message_status("sms", "mk-1")
        assert fake.token_requests == 1
        now[0] = 1079 - 29
        client.message_status("sms", "mk-1")
        assert fake.token_requests == 2


def test_bad_credentials_raise_auth_error_without_the_secret(fake, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(client_secret="s3cret-that-must-not-leak")
    with pytest.raises(AuthError) as caught:
        client.message_status("sms", "mk-1")
    error = caught.value
    assert error.status == 401
    assert str(error).startswith("SFMC 401: invalid_client: ")
    assert "\n" not in str(error)
    for text in (str(error), repr(error), repr(client), caplog.text):
        assert "s3cret-that-must-not-leak" not in text


def test_the_token_never_appears_in_logs_or_errors(fake, client, caplog):
    caplog.set_level(logging.DEBUG)
    fake.send("sms", "mk-1", "15550100004", "otp-sms")
    client.message_status("sms", "mk-1")
    fake.fail_next("GET", "/messaging/", 400, body={"message": "bad", "errorcode": 10000})
    with pytest.raises(Rejected) as caught:
        client.message_status("sms", "mk-1")
    token = fake.requests[-1].headers["authorization"].split(" ", 1)[1]
    for text in (str(caught.value), repr(caught.value), caplog.text):
        assert token not in text and SECRET not in text


def test_account_id_is_sent_with_the_token_request(fake, make_client):
    client = make_client(account_id="7000001")
    fake.send("sms", "mk-1", "15550100004", "otp-sms")
    client.message_status("sms", "mk-1")
    token_post = next(r for r in fake.requests if r.raw_path == "/v2/token")
    assert json.loads(token_post.body)["account_id"] == "7000001"


# error mapping


def test_unknown_key_is_not_found(client):
    with pytest.raises(NotFound) as caught:
        client.message_status("sms", "mk-never-sent")
    assert (caught.value.status, caught.value.errorcode) == (404, 30003)
    assert str(caught.value) == "SFMC 404 errorcode 30003: MCMS_UTM_Runtime_ObjectNotFound: messageKey not found"


def test_unknown_key_answered_with_400_is_not_found(fake, client):
    fake.knobs.not_found_status = 400
    with pytest.raises(NotFound) as caught:
        client.message_status("sms", "mk-never-sent")
    assert caught.value.status == 400


def test_a_400_that_says_not_found_is_not_found(fake, client):
    fake.fail_next("GET", "/messaging/", 400, body={"message": "MCMS_UTM_Validation: messageKey Not Found",
                                                    "errorcode": 10000})
    with pytest.raises(NotFound):
        client.message_status("sms", "mk-1")
    fake.fail_next("GET", "/messaging/", 400, body={"message": "MCMS_UTM_Validation: bad key", "errorcode": 10000})
    with pytest.raises(Rejected):
        client.message_status("sms", "mk-1")


def test_429_with_retry_after_seconds(fake, client):
    fake.fail_next("GET", "/messaging/", 429, headers={"Retry-After": "7"},
                   body={"message": "Rate limit exceeded", "errorcode": 50100, "retryAfter": 7})
    with pytest.raises(RateLimited) as caught:
        client.message_status("sms", "mk-1")
    assert (caught.value.status, caught.value.errorcode, caught.value.retry_after) == (429, 50100, 7.0)


def test_429_with_retry_after_http_date(fake, client):
    # The fake's clock reads 2026-01-01T00:00:00Z; the date is 42 s later.
    fake.fail_next("GET", "/messaging/", 429, headers={"Retry-After": "Thu, 01 Jan 2026 00:00:42 GMT"},
                   body={"message": "Rate limit exceeded", "errorcode": 50100})
    with pytest.raises(RateLimited) as caught:
        client.message_status("sms", "mk-1")
    assert caught.value.retry_after == 42.0


def test_429_from_the_token_bucket(fake, client):
    fake.send("sms", "mk-1", "15550100004", "otp-sms")
    fake.knobs.update({"status_rate": 0.5, "status_burst": 1})
    client.message_status("sms", "mk-1")
    with pytest.raises(RateLimited) as caught:
        client.message_status("sms", "mk-1")
    assert caught.value.retry_after == 2.0  # one request per 2 s, bucket empty


def test_429_blocked_has_no_retry_after(fake, client):
    fake.knobs.update({"status_rate": 0.5, "status_burst": 1, "rate_limit_errorcode": 50200})
    fake.send("sms", "mk-1", "15550100004", "otp-sms")
    client.message_status("sms", "mk-1")
    with pytest.raises(RateLimited) as caught:
        client.message_status("sms", "mk-1")
    assert (caught.value.errorcode, caught.value.retry_after) == (50200, None)


def test_server_error_is_retryable(fake, client):
    fake.fail_next("GET", "/messaging/", 500,
                   body={"message": "MCMS_UTM_Runtime: internal error", "errorcode": 30000})
    with pytest.raises(Retryable) as caught:
        client.message_status("sms", "mk-1")
    assert str(caught.value) == "SFMC 500 errorcode 30000: MCMS_UTM_Runtime: internal error"


def test_non_json_error_body_still_makes_one_line(fake, client):
    fake.fail_next("GET", "/messaging/", 502, body="<html>\n<body>Bad gateway</body>\n</html>",
                   headers={"Content-Type": "text/html"})
    with pytest.raises(Retryable) as caught:
        client.message_status("sms", "mk-1")
    assert str(caught.value) == "SFMC 502: <html> <body>Bad gateway</body> </html>"


def test_token_endpoint_down_is_retryable(fake, client):
    fake.fail_next("POST", "/v2/token", 503, body={"message": "down", "errorcode": 50300},
                   headers={"Retry-After": "30"})
    with pytest.raises(Retryable) as caught:
        client.message_status("sms", "mk-1")
    assert caught.value.retry_after == 30.0


def test_closed_port_is_retryable():
    client = SFMCClient(auth_base_url=closed_port_url(), client_id="id", client_secret="s3cret-x", timeout=2)
    with client, pytest.raises(Retryable) as caught:
        client.message_status("sms", "mk-1")
    assert str(caught.value).startswith("SFMC request failed: ConnectError: ")
    assert str(caught.value).endswith("(POST /v2/token)")
    assert "s3cret-x" not in str(caught.value)


def test_closed_rest_port_is_retryable(make_client):
    client = make_client(rest_base_url=closed_port_url())
    with pytest.raises(Retryable) as caught:
        client.message_status("sms", "a/b")
    assert str(caught.value).endswith("(GET /messaging/v1/sms/messages/a%2Fb)")


def test_a_silent_server_is_a_retryable_timeout(make_client):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        client = make_client(auth_base_url=f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.3)
        with pytest.raises(Retryable) as caught:
            client.message_status("sms", "mk-1")
        assert "Timeout" in str(caught.value)
    finally:
        listener.close()


# keys in paths


AWKWARD_KEYS = [
    ("a/b", "a%2Fb"),
    ("what?", "what%3F"),
    ("hash#tag", "hash%23tag"),
    ("100%", "100%25"),
    ("two words", "two%20words"),
    (".", "%2E"),
    ("..", "%2E%2E"),
    ("café", "caf%C3%A9"),
    ("😀", "%F0%9F%98%80"),
    ("a/b?c#d%e f", "a%2Fb%3Fc%23d%25e%20f"),
]


@pytest.mark.parametrize(("key", "encoded"), AWKWARD_KEYS)
def test_awkward_keys_reach_sfmc_as_one_segment(fake, client, key, encoded):
    fake.send("sms", key, "15550100004", "otp-sms")
    reply = client.message_status("sms", key)
    assert reply.event_category_type == "TransactionalSendEvents.SMSQueued"
    assert [r.raw_path for r in rest_requests(fake)] == ["/messaging/v1/sms/messages/" + encoded]


@pytest.mark.parametrize("suffix", ["", "/"])
def test_rest_base_url_override_with_or_without_trailing_slash(fake, make_client, suffix):
    # The token names http://127.0.0.1:PORT/; the override names the same server as localhost.
    port = fake.url.rsplit(":", 1)[1]
    client = make_client(rest_base_url=f"http://localhost:{port}{suffix}")
    fake.send("email", "mk-e", "ada@example.net", "receipt-email")
    assert client.message_status("email", "mk-e").event_category_type == "TransactionalSendEvents.EmailQueued"
    [request] = rest_requests(fake)
    assert request.raw_path == "/messaging/v1/email/messages/mk-e"
    assert request.headers["host"] == f"localhost:{port}"


def test_rest_base_comes_from_the_token(fake, client):
    fake.send("sms", "mk-1", "15550100004", "otp-sms")
    client.message_status("sms", "mk-1")
    [request] = rest_requests(fake)
    assert request.raw_path == "/messaging/v1/sms/messages/mk-1"
    assert request.headers["host"] == fake.url.split("://", 1)[1]


# ENS management


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


SMS_TYPES = ["TransactionalSendEvents.SmsSent", "TransactionalSendEvents.SmsNotSent",
             "TransactionalSendEvents.SmsDelivered"]


def test_ens_management_round_trip(fake, client, receiver):
    url = "https://hooks.example.org/sfmc/ens"
    fake.map_delivery(url, f"http://127.0.0.1:{receiver.server_address[1]}/ens")

    created = client.create_callback("sms-status", url, max_batch_size=500)
    callback_id = created["callbackId"]
    assert created["url"] == url and created["maxBatchSize"] == 500
    assert len(created["signatureKey"]) == 44
    [probe] = [json.loads(body) for body in receiver.bodies]
    assert probe["callbackId"] == callback_id

    client.verify_callback(callback_id, probe["verificationKey"])
    assert client.callback(callback_id)["status"] == "verified"
    assert [c["callbackId"] for c in client.callbacks()] == [callback_id]
    assert client.update_callback(callback_id, "sms-status-2")["callbackName"] == "sms-status-2"
    regenerated = client.regenerate_key(callback_id)
    assert regenerated["signatureKey"] != created["signatureKey"]

    subscription = client.create_subscription("sms-all", callback_id, SMS_TYPES, filters=["definitionKey=otp-sms"])
    subscription_id = subscription["subscriptionId"]
    assert subscription["status"] == "active"
    [listed] = client.subscriptions(callback_id)
    assert listed["subscriptionId"] == subscription_id
    assert listed["eventCategoryTypes"] == SMS_TYPES

    paused = client.pause_subscription(client.subscription(subscription_id), reason="maintenance")
    assert (paused["status"], paused["statusReason"]) == ("paused", "maintenance")
    resumed = client.resume_subscription(paused)
    assert resumed["status"] == "active"
    assert resumed["filters"] == ["definitionKey=otp-sms"]
    put = [r for r in fake.requests if r.method == "PUT" and r.raw_path == "/platform/v1/ens-subscriptions"]
    assert json.loads(put[0].body) == [{
        "subscriptionId": subscription_id, "eventCategoryTypes": SMS_TYPES, "subscriptionName": "sms-all",
        "filters": ["definitionKey=otp-sms"], "status": "paused", "statusReason": "maintenance"}]

    with pytest.raises(Rejected) as caught:
        client.delete_callback(callback_id)
    assert (caught.value.status, caught.value.errorcode) == (409, 30002)
    assert str(caught.value).startswith("SFMC 409 errorcode 30002: MCMS_UWH_Runtime_InvalidStateTransition")

    client.delete_subscription(subscription_id)
    assert client.subscriptions(callback_id) == []
    client.delete_callback(callback_id)
    with pytest.raises(NotFound):
        client.callback(callback_id)
    assert client.callbacks() == []


def test_create_callback_sends_an_array_and_verify_sends_an_object(fake, client, receiver):
    url = "https://hooks.example.org/ens"
    fake.map_delivery(url, f"http://127.0.0.1:{receiver.server_address[1]}/")
    created = client.create_callback("cb", url)
    probe = json.loads(receiver.bodies[0])
    client.verify_callback(created["callbackId"], probe["verificationKey"])
    bodies = {r.raw_path: json.loads(r.body) for r in fake.requests if r.method == "POST"}
    assert bodies["/platform/v1/ens-callbacks"] == [{"callbackName": "cb", "url": url}]
    assert bodies["/platform/v1/ens-verify"] == probe


def test_unreachable_callback_url_is_rejected_with_sfmc_message(client):
    with pytest.raises(Rejected) as caught:
        client.create_callback("cb", "https://unmapped.example.org/ens")
    assert caught.value.errorcode == 30000
    assert "probeCallbackLiveness" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_verify_with_a_wrong_key_is_not_found(fake, client, receiver):
    url = "https://hooks.example.org/ens"
    fake.map_delivery(url, f"http://127.0.0.1:{receiver.server_address[1]}/")
    created = client.create_callback("cb", url)
    with pytest.raises(NotFound):
        client.verify_callback(created["callbackId"], "not-the-key")
