"""The fake SFMC itself, over real HTTP: the product's tests are only as good as its fidelity."""

import base64
import hashlib
import hmac
import json
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.fakesfmc import FakeClock, FakeSFMC, sign
from tests.fakesfmc.timestamps import render_cst

JAN_1_2026 = 1767225600.0
VECTOR_KEY = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
VECTOR_BODY = (
    b'[{"eventCategoryType":"TransactionalSendEvents.SmsDelivered","timestampUTC":1735689600000,'
    b'"definitionKey":"otp-sms","mid":7000001,"eid":7000000,"info":{"messageKey":"mk-0001",'
    b'"subscriberKey":"contact-42","to":"15550100001","statusCode":"4000","statusMessage":"Delivered"}}]'
)
SMS_TYPES = ["TransactionalSendEvents.Sms" + t for t in ("Sent", "NotSent", "Transient", "Delivered", "Bounced")]
HOOK = "https://hooks.example.org/sfmc/ens"


class Receiver:
    """A tiny ENS receiver on 127.0.0.1 that records what it gets and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ens"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def batches(self) -> list[tuple[dict, bytes]]:
        return [(h, b) for h, b in self.received if b.startswith(b"[")]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def clock():
    return FakeClock(start=JAN_1_2026)


@pytest.fixture
def fake(clock):
    with FakeSFMC(clock=clock, send_delay=1.0, transient_delay=2.0, final_delay=4.0, flush_interval=0.05,
                  ack_timeout=1.0) as fake:
        fake.define("sms", "otp-sms")
        fake.define("email", "receipt-email")
        yield fake


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.stop()


def token(fake, **overrides) -> str:
    body = {"grant_type": "client_credentials", "client_id": "fake-client-id",
            "client_secret": "fake-client-secret", **overrides}
    response = httpx.post(fake.url + "/v2/token", json=body)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


class RefreshingToken(httpx.Auth):
    """Bearer auth that fetches a new token once on 401, as the product's client does."""

    def __init__(self, fake) -> None:
        self.fake = fake
        self.value = token(fake)

    def auth_flow(self, request):
        request.headers["Authorization"] = "Bearer " + self.value
        response = yield request
        if response.status_code == 401:
            self.value = token(self.fake)
            request.headers["Authorization"] = "Bearer " + self.value
            yield request


@pytest.fixture
def api(fake):
    """An httpx client on the REST base URL, authorized like the product's."""
    with httpx.Client(base_url=fake.url, auth=RefreshingToken(fake)) as client:
        yield client


def send_sms(api, key: str, to: str, definition: str = "otp-sms"):
    return api.post(f"/messaging/v1/sms/messages/{key}",
                    json={"definitionKey": definition, "recipient": {"contactKey": "contact-42", "to": to}})


def hand_signature(key_bytes: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(key_bytes, body, hashlib.sha256).digest()).decode()


def subscribed_callback(fake, api, receiver, types=SMS_TYPES, filters=None) -> dict:
    fake.map_delivery(HOOK, receiver.url)
    created = api.post("/platform/v1/ens-callbacks", json=[{"callbackName": "status", "url": HOOK}])
    assert created.status_code == 201, created.text
    callback = created.json()[0]
    probe = json.loads(receiver.received[-1][1])
    assert api.post("/platform/v1/ens-verify", json=probe).status_code == 200
    subscription = {"subscriptionName": "sms-all", "callbackId": callback["callbackId"], "eventCategoryTypes": types}
    if filters:
        subscription["filters"] = filters
    assert api.post("/platform/v1/ens-subscriptions", json=[subscription]).status_code == 201
    receiver.received.clear()
    return callback


# signatures (sfmc-api.md §6.3)

def test_signature_vectors_in_both_key_modes():
    assert sign(VECTOR_BODY, VECTOR_KEY, "base64") == "AY3+p7nMsS+V7ZCoeBb/mrl0JdsylyRrg2Mrfmo0qB8="
    assert sign(VECTOR_BODY, VECTOR_KEY, "text") == "VECehrW4r3CHSbYVHU0CFf2mhsl5gXRpUMZsxM6Xhik="


@pytest.mark.parametrize("mode, expected", [("base64", "AY3+p7nMsS+V7ZCoeBb/mrl0JdsylyRrg2Mrfmo0qB8="),
                                            ("text", "VECehrW4r3CHSbYVHU0CFf2mhsl5gXRpUMZsxM6Xhik=")])
def test_delivers_the_vector_batch_with_the_vector_signature(fake, api, receiver, mode, expected):
    fake.knobs.signature_mode = mode
    callback = subscribed_callback(fake, api, receiver)
    fake.registry.callbacks[callback["callbackId"]].signature_key = VECTOR_KEY
    fake.inject_events(callback["callbackId"], json.loads(VECTOR_BODY))
    fake.drain()
    [(headers, body)] = receiver.batches()
    assert body == VECTOR_BODY
    assert headers["x-sfmc-ens-signature"] == expected


# time rendering of the status GET (fixed UTC-06:00, no daylight saving)

def test_renders_cst_without_daylight_saving():
    assert render_cst(1751371200.0, 0) == "2025-07-01T06:00:00"  # 2025-07-01T12:00:00Z, July still -6 h
    assert render_cst(1735689600.0, 0) == "2024-12-31T18:00:00"  # 2025-01-01T00:00:00Z
    assert render_cst(1751371200.456789, 7) == "2025-07-01T06:00:00.4567890"
    assert render_cst(1751371200.25, 3) == "2025-07-01T06:00:00.250"


def test_status_get_timestamp_is_cst_in_july_with_varying_fraction_digits(fake, api, clock):
    fake.knobs.send_delay = 0.0
    clock.set(1751371200.5)  # 2025-07-01T12:00:00.5Z
    digit_counts = set()
    for i in range(16):
        assert send_sms(api, f"july-{i}", "15550100004").status_code == 202
        body = api.get(f"/messaging/v1/sms/messages/july-{i}").json()
        assert body["eventCategoryType"] == "TransactionalSendEvents.SMSSent"
        match = re.fullmatch(r"2025-07-01T06:00:00(?:\.(\d{1,7}))?", body["timestamp"])
        assert match, body["timestamp"]
        fraction = match.group(1) or ""
        assert "5000000".startswith(fraction) and (fraction == "" or fraction.startswith("5"))
        digit_counts.add(len(fraction))
    assert len(digit_counts) >= 3


# auth (§1.2)

def test_token_errors_and_shape(fake):
    wrong = httpx.post(fake.url + "/v2/token", json={"grant_type": "client_credentials", "client_id": "x",
                                                     "client_secret": "y"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    grant = httpx.post(fake.url + "/v2/token", json={"grant_type": "password", "client_id": "fake-client-id",
                                                     "client_secret": "fake-client-secret"})
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    body = httpx.post(fake.url + "/v2/token", json={"grant_type": "client_credentials", "client_id": "fake-client-id",
                                                    "client_secret": "fake-client-secret"}).json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 1079
    assert body["rest_instance_url"] == fake.url + "/"
    assert fake.token_requests == 1


def test_token_expires_after_twenty_minutes_of_clock_time(fake, clock):
    headers = {"Authorization": "Bearer " + token(fake)}
    url = fake.url + "/messaging/v1/sms/messages/unknown"
    assert httpx.get(url, headers=headers).status_code == 404
    clock.advance(1199)
    assert httpx.get(url, headers=headers).status_code == 404
    clock.advance(1)
    expired = httpx.get(url, headers=headers)
    assert expired.status_code == 401
    assert expired.json()["errorcode"] == 0 and expired.json()["message"] == "Not Authorized"
    assert httpx.get(url).status_code == 401


def test_expire_tokens_revokes_every_issued_token(fake):
    headers = {"Authorization": "Bearer " + token(fake)}
    assert httpx.get(fake.url + "/platform/v1/ens-callbacks", headers=headers).status_code == 200
    fake.expire_tokens()
    assert httpx.get(fake.url + "/platform/v1/ens-callbacks", headers=headers).status_code == 401


# sending and the status GET (§8.1–8.3)

def test_message_keys_are_decoded_once_from_the_raw_path(fake, api):
    raw = "a%2Fb%3Fc%23d%25e%20f%2E%2E%C3%A9"
    assert send_sms(api, raw, "15550100004").status_code == 202
    assert api.get(f"/messaging/v1/sms/messages/{raw}").json()["eventCategoryType"].endswith("SMSQueued")
    assert ("sms", "a/b?c#d%e f..é") in fake.truth()
    assert fake.requests[-1].raw_path == f"/messaging/v1/sms/messages/{raw}"
    assert api.get("/messaging/v1/sms/messages/a%252Fb").status_code == 404


def test_status_follows_the_clock_and_never_shows_delivery(fake, api, clock):
    assert send_sms(api, "mk-1", "15550100000").status_code == 202
    queued = api.get("/messaging/v1/sms/messages/mk-1").json()
    assert queued["eventCategoryType"] == "TransactionalSendEvents.SMSQueued"
    assert "info" not in queued and "compositeId" not in queued
    clock.advance(10)
    sent = api.get("/messaging/v1/sms/messages/mk-1").json()
    assert sent["eventCategoryType"] == "TransactionalSendEvents.SMSSent"
    assert sent["info"] == {"messageKey": "mk-1", "contactKey": "contact-42", "to": "15550100000"}
    assert sent["timestamp"].startswith("2025-12-31T18:00:01")
    assert fake.truth()[("sms", "mk-1")] == "delivered"
    assert fake.get_status_calls[("sms", "mk-1")] == 2


def test_not_sent_has_a_numeric_status_code(fake, api, clock):
    send_sms(api, "mk-6", "15550100006")
    clock.advance(5)
    body = api.get("/messaging/v1/sms/messages/mk-6").json()
    assert body["eventCategoryType"] == "TransactionalSendEvents.SMSNotSent"
    assert body["info"]["statusCode"] == 47 and body["info"]["statusMessage"]


def test_unknown_and_expired_keys_answer_404_30003(fake, api, clock):
    unknown = api.get("/messaging/v1/sms/messages/never-sent")
    assert unknown.status_code == 404 and unknown.json()["errorcode"] == 30003
    assert unknown.json()["message"].startswith("MCMS_UTM_Runtime_ObjectNotFound")
    send_sms(api, "old", "15550100004")
    clock.advance(72 * 3600)
    assert api.get("/messaging/v1/sms/messages/old").status_code == 200
    clock.advance(1)
    assert api.get("/messaging/v1/sms/messages/old").status_code == 404
    fake.knobs.not_found_status = 400
    assert api.get("/messaging/v1/sms/messages/old").status_code == 400


def test_a_reused_key_answers_about_the_newest_send(fake, api, clock):
    send_sms(api, "reused", "15550100004")
    clock.advance(47 * 3600)
    duplicate = send_sms(api, "reused", "15550100004")
    assert duplicate.status_code == 400 and duplicate.json()["errorcode"] == 109110
    clock.advance(2 * 3600)
    assert send_sms(api, "reused", "15550100006").status_code == 202
    assert api.get("/messaging/v1/sms/messages/reused").json()["eventCategoryType"].endswith("SMSQueued")
    clock.advance(5)
    body = api.get("/messaging/v1/sms/messages/reused").json()
    assert body["eventCategoryType"].endswith("SMSNotSent") and body["info"]["to"] == "15550100006"


def test_send_validation_and_batch_partial_failure(fake, api):
    assert send_sms(api, "x" * 101, "15550100004").json()["errorcode"] == 109108
    assert send_sms(api, "k", "15550100004", definition="nope").json()["errorcode"] == 109111
    missing_to = api.post("/messaging/v1/sms/messages/k2", json={"definitionKey": "otp-sms",
                                                                 "recipient": {"contactKey": "c"}})
    assert missing_to.status_code == 400 and missing_to.json()["errorcode"] == 109106
    batch = api.post("/messaging/v1/sms/messages/", json={"definitionKey": "otp-sms", "recipients": [
        {"contactKey": "c1", "messageKey": "b-1"}, {"contactKey": "c2", "to": "15550100004", "messageKey": "b-2"}]})
    assert batch.status_code == 202
    body = batch.json()
    assert body["errorcode"] == 109001
    assert body["message"] == "MCMS_UTM_ResponsesHasErrors: 1 subscribers failed to queue out of 2"
    assert body["responses"][0]["errorcode"] == 109106 and body["responses"][1] == {"messageKey": "b-2"}


def test_inactive_definition_queues_until_activated_or_expired(fake, api, clock):
    fake.define("sms", "paused-def", status="inactive")
    send_sms(api, "held-1", "15550100004", definition="paused-def")
    clock.advance(3600)
    assert api.get("/messaging/v1/sms/messages/held-1").json()["eventCategoryType"].endswith("SMSQueued")
    assert api.patch("/messaging/v1/sms/definitions/paused-def", json={"status": "active"}).status_code == 200
    clock.advance(10)
    assert api.get("/messaging/v1/sms/messages/held-1").json()["eventCategoryType"].endswith("SMSSent")
    fake.define("sms", "paused-def", status="inactive")
    send_sms(api, "held-2", "15550100004", definition="paused-def")
    clock.advance(72 * 3600 + 1)
    assert fake.truth()[("sms", "held-2")] == "not_sent"


def test_email_outcomes_by_local_part(fake, api, clock):
    for key, to in [("e1", "ada@example.net"), ("e2", "bounce-me@example.net"), ("e3", "notsent@example.net")]:
        response = api.post(f"/messaging/v1/email/messages/{key}",
                            json={"definitionKey": "receipt-email", "recipient": {"contactKey": key, "to": to}})
        assert response.status_code == 202
    clock.advance(10)
    assert fake.truth() == {("email", "e1"): "sent", ("email", "e2"): "bounced", ("email", "e3"): "not_sent"}
    assert api.get("/messaging/v1/email/messages/e2").json()["eventCategoryType"] == "TransactionalSendEvents.EmailSent"
    assert api.get("/messaging/v1/email/messages/e3").json()["info"]["statusCode"] == 2


# rate limiting (§8.7)

def test_status_routes_answer_429_in_both_forms(fake, api, clock):
    fake.knobs.status_rate, fake.knobs.status_burst = 0.5, 2
    for _ in range(2):
        assert api.get("/messaging/v1/sms/messages/k").status_code == 404
    limited = api.get("/messaging/v1/sms/messages/k")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.json()["errorcode"] == 50100 and limited.json()["retryAfter"] == 2
    assert limited.json()["message"] == "Rate limit exceeded"
    fake.knobs.rate_limit_errorcode = 50200
    blocked = api.get("/messaging/v1/sms/messages/?type=notSent")
    assert blocked.status_code == 429 and "retry-after" not in blocked.headers
    assert blocked.json()["errorcode"] == 50200
    clock.advance(2)
    assert api.get("/messaging/v1/sms/messages/k").status_code == 404
    assert fake.get_status_calls[("sms", "k")] == 3


def test_fail_next_scripts_answers_before_normal_handling(fake, api):
    fake.fail_next("GET", "/messaging/v1/sms/messages/", 429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    fake.fail_next("POST", "/v2/token", 500, count=2)
    scripted = api.get("/messaging/v1/sms/messages/k")
    assert scripted.status_code == 429 and scripted.headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert api.get("/messaging/v1/sms/messages/k").status_code == 404
    for expected in (500, 500, 200):
        assert httpx.post(fake.url + "/v2/token", json={"grant_type": "client_credentials", "client_id": "fake-client-id",
                                                        "client_secret": "fake-client-secret"}).status_code == expected


# the notSent list (§8.4)

def test_not_sent_list_pages_with_the_event_id_cursor(fake, api, clock):
    for i in range(5):
        send_sms(api, f"ns-{i}", "15550100006")
        send_sms(api, f"ok-{i}", "15550100004")
        clock.advance(1)
    clock.advance(5)
    first = api.get("/messaging/v1/sms/messages/?type=notSent&$pageSize=2").json()
    assert first["count"] == 2 and first["pageSize"] == 2
    item = first["messages"][0]
    assert item["statusCode"] == 47 and item["eventCategoryType"] == "TransactionalSendEvents.SMSNotSent"
    assert item["definitionKey"] == "otp-sms" and item["info"]["messageKey"] == "ns-0"
    keys, cursor = [], 0
    for path in ("/messaging/v1/sms/messages/?type=notSent&$pageSize=2",
                 "/messaging/v1/sms/messages?type=notSent&$pagesize=2&lastEventId={}",
                 "/messaging/v1/sms/messages/?type=notSent&$pageSize=2&lastEventId={}",
                 "/messaging/v1/sms/messages/?type=notSent&$pageSize=2&lastEventId={}"):
        page = api.get(path.format(cursor)).json()
        ids = [m["eventID"] for m in page["messages"]]
        assert ids == sorted(ids) and all(i > cursor for i in ids)
        assert page["lastEventID"] >= max(ids, default=cursor)
        keys += [m["info"]["messageKey"] for m in page["messages"]]
        cursor = page["lastEventID"]
    assert keys == [f"ns-{i}" for i in range(5)]
    assert api.get("/messaging/v1/sms/messages/?type=sent").status_code == 400


# ENS management (§3)

def test_probe_is_the_unsigned_object_and_a_non_200_receiver_fails_create(fake, api, receiver):
    fake.map_delivery(HOOK, receiver.url)
    created = api.post("/platform/v1/ens-callbacks", json=[{"callbackName": "a", "url": HOOK, "maxBatchSize": 500}])
    assert created.status_code == 201
    [callback] = created.json()
    assert len(callback["signatureKey"]) == 44 and len(base64.b64decode(callback["signatureKey"])) == 32
    assert callback["maxBatchSize"] == 500
    [(headers, body)] = receiver.received
    probe = json.loads(body)
    assert set(probe) == {"callbackId", "verificationKey"} and probe["callbackId"] == callback["callbackId"]
    assert "x-sfmc-ens-signature" not in headers

    receiver.status = 204
    other = "https://hooks.example.org/other"
    fake.map_delivery(other, receiver.url)
    failed = api.post("/platform/v1/ens-callbacks", json=[{"callbackName": "b", "url": other}])
    assert failed.status_code == 400
    assert "MCMS_UWH_Runtime_GeneralFailure_probeCallbackLiveness" in failed.json()["message"]
    unmapped = api.post("/platform/v1/ens-callbacks", json=[{"callbackName": "c", "url": "https://nowhere.example/x"}])
    assert unmapped.status_code == 400 and "NameResolutionFailure" in unmapped.json()["message"]
    statuses = {c["url"]: c["status"] for c in api.get("/platform/v1/ens-callbacks").json()}
    assert statuses == {HOOK: "unverified", other: "unverified", "https://nowhere.example/x": "unverified"}


@pytest.mark.parametrize("url, size", [("http://hooks.example.org/x", 1000), ("https://hooks.example.org:8443/x", 1000),
                                       ("https://hooks.example.org/x?a=1", 1000), ("https://hooks.example.org/x", 99),
                                       ("https://hooks.example.org/x", 1001)])
def test_create_callback_rejects_bad_urls_and_sizes(fake, api, url, size):
    response = api.post("/platform/v1/ens-callbacks", json=[{"callbackName": "a", "url": url, "maxBatchSize": size}])
    assert response.status_code == 400 and fake.probes == []


def test_verification_rules(fake, api, receiver, clock):
    fake.map_delivery(HOOK, receiver.url)
    callback = api.post("/platform/v1/ens-callbacks", json=[{"callbackName": "a", "url": HOOK}]).json()[0]
    probe = json.loads(receiver.received[-1][1])
    wrong = api.post("/platform/v1/ens-verify", json={**probe, "verificationKey": "nope"})
    assert wrong.status_code == 404
    assert api.post("/platform/v1/ens-verify", json=[probe]).status_code == 400
    assert api.post("/platform/v1/ens-verify", json=probe).status_code == 200
    assert api.get(f"/platform/v1/ens-callbacks/{callback['callbackId']}").json()["status"] == "verified"
    assert api.post("/platform/v1/ens-verify", json=probe).status_code == 400
    late = "https://hooks.example.org/late"
    fake.map_delivery(late, receiver.url)
    api.post("/platform/v1/ens-callbacks", json=[{"callbackName": "late", "url": late}])
    clock.advance(4 * 3600 + 1)
    assert api.post("/platform/v1/ens-verify", json=json.loads(receiver.received[-1][1])).status_code == 400


def test_callback_with_subscriptions_cannot_be_deleted(fake, api, receiver):
    callback = subscribed_callback(fake, api, receiver)
    callback_id = callback["callbackId"]
    conflict = api.delete(f"/platform/v1/ens-callbacks/{callback_id}")
    assert conflict.status_code == 409
    [subscription] = api.get(f"/platform/v1/ens-subscriptions-by-cb/{callback_id}").json()
    assert subscription["url"] == HOOK and subscription["status"] == "active"
    assert api.delete(f"/platform/v1/ens-subscriptions/{subscription['subscriptionId']}").status_code == 200
    assert api.delete(f"/platform/v1/ens-callbacks/{callback_id}").status_code == 200
    assert api.get(f"/platform/v1/ens-callbacks/{callback_id}").status_code == 404


def test_subscriptions_need_a_verified_callback_and_unique_names(fake, api, receiver):
    fake.map_delivery(HOOK, receiver.url)
    callback = api.post("/platform/v1/ens-callbacks", json=[{"callbackName": "a", "url": HOOK}]).json()[0]
    item = {"subscriptionName": "s", "callbackId": callback["callbackId"], "eventCategoryTypes": SMS_TYPES}
    assert api.post("/platform/v1/ens-subscriptions", json=[item]).status_code == 400
    api.post("/platform/v1/ens-verify", json=json.loads(receiver.received[-1][1]))
    assert api.post("/platform/v1/ens-subscriptions", json=[item]).status_code == 201
    assert api.post("/platform/v1/ens-subscriptions", json=[item]).status_code == 400
    unknown = {**item, "subscriptionName": "t", "callbackId": "00000000-0000-4000-8000-000000000000"}
    assert api.post("/platform/v1/ens-subscriptions", json=[unknown]).status_code == 404


# the dispatcher (§7, §10.3)

def test_end_to_end_dispatch_is_signed_batched_and_shaped(fake, api, receiver, clock):
    callback = subscribed_callback(fake, api, receiver)
    send_sms(api, "e2e-0", "15550100000")
    send_sms(api, "e2e-8", "15550100008")
    clock.advance(10)
    fake.drain()
    events = []
    key = base64.b64decode(callback["signatureKey"])
    for headers, body in receiver.batches():
        assert headers["x-sfmc-ens-signature"] == hand_signature(key, body)
        assert headers["content-type"] == "application/json"
        events += json.loads(body)
    assert [e["eventCategoryType"].rsplit(".", 1)[1] for e in events] == ["SmsSent", "SmsTransient", "SmsDelivered"]
    assert {e["info"]["messageKey"] for e in events} == {"e2e-0"}
    delivered = events[-1]
    assert delivered["timestampUTC"] == int((JAN_1_2026 + 5) * 1000)
    assert delivered["info"]["statusCode"] == "4000" and delivered["info"]["subscriberKey"] == "contact-42"
    assert delivered["mid"] == 7000001 and delivered["eid"] == 7000000
    assert fake.truth()[("sms", "e2e-8")] == "delivered"
    assert all(d.ok for d in fake.ens_deliveries)


def test_text_mode_signs_with_the_key_string(fake, api, receiver, clock):
    fake.knobs.signature_mode = "text"
    callback = subscribed_callback(fake, api, receiver)
    send_sms(api, "txt", "15550100004")
    clock.advance(10)
    fake.drain()
    for headers, body in receiver.batches():
        assert headers["x-sfmc-ens-signature"] == hand_signature(callback["signatureKey"].encode(), body)


def test_filters_and_paused_subscriptions_drop_events(fake, api, receiver, clock):
    callback = subscribed_callback(fake, api, receiver, types=SMS_TYPES, filters=["definitionKey=otp-sms"])
    fake.define("sms", "other-def")
    send_sms(api, "filtered-out", "15550100004", definition="other-def")
    [subscription] = api.get(f"/platform/v1/ens-subscriptions-by-cb/{callback['callbackId']}").json()
    paused = {"subscriptionId": subscription["subscriptionId"], "eventCategoryTypes": SMS_TYPES,
              "status": "paused", "statusReason": "maintenance"}
    assert api.put("/platform/v1/ens-subscriptions", json=[paused]).json()[0]["status"] == "paused"
    send_sms(api, "while-paused", "15550100004")
    clock.advance(10)
    fake.drain()
    assert receiver.batches() == []
    api.put("/platform/v1/ens-subscriptions", json=[{**paused, "status": "active"}])
    send_sms(api, "after-resume", "15550100004")
    clock.advance(10)
    fake.drain()
    keys = {e["info"]["messageKey"] for _, body in receiver.batches() for e in json.loads(body)}
    assert keys == {"after-resume"}


def test_regenerate_kills_the_old_key(fake, api, receiver, clock):
    callback = subscribed_callback(fake, api, receiver)
    [regenerated] = api.put("/platform/v1/ens-regenerate", json=[{"callbackId": callback["callbackId"]}]).json()
    assert regenerated["signatureKey"] != callback["signatureKey"]
    fake.inject_events(None, [json.loads(VECTOR_BODY)[0]])
    fake.drain()
    [(headers, body)] = receiver.batches()
    assert headers["x-sfmc-ens-signature"] == hand_signature(base64.b64decode(regenerated["signatureKey"]), body)


def test_failing_receiver_is_retried_dropped_then_suspended(fake, api, receiver, clock):
    subscribed_callback(fake, api, receiver)
    receiver.status = 500
    event = json.loads(VECTOR_BODY)[0]
    fake.inject_events(None, [event])
    fake.drain()
    assert [d.attempt for d in fake.ens_deliveries] == [1, 2, 3, 4]
    fake.inject_events(None, [event])
    fake.drain()
    assert fake.stats()["deliveries"]["batchesDropped"] == 2
    receiver.status = 200
    fake.inject_events(None, [event])
    fake.drain()
    assert len(fake.ens_deliveries) == 8
    clock.advance(601)
    fake.inject_events(None, [event])
    fake.drain()
    assert fake.ens_deliveries[-1].ok and len(fake.ens_deliveries) == 9


def test_defer_policy_redelivers_on_the_clock(fake, api, receiver, clock):
    fake.knobs.retry_policy = "defer"
    subscribed_callback(fake, api, receiver)
    receiver.status = 503
    fake.inject_events(None, [json.loads(VECTOR_BODY)[0]])
    fake.drain()
    assert len(fake.ens_deliveries) == 4
    receiver.status = 200
    clock.advance(599)
    fake.drain()
    assert len(fake.ens_deliveries) == 4
    clock.advance(1)
    fake.drain()
    assert fake.ens_deliveries[-1].ok and len(receiver.batches()) == 5


def test_forced_suspension_drops_events_produced_meanwhile(fake, api, receiver, clock):
    subscribed_callback(fake, api, receiver)
    fake.suspend(60)
    send_sms(api, "lost", "15550100004")
    clock.advance(10)
    fake.drain()
    assert receiver.batches() == []
    clock.advance(60)
    send_sms(api, "kept", "15550100004")
    clock.advance(10)
    fake.drain()
    assert {e["info"]["messageKey"] for _, b in receiver.batches() for e in json.loads(b)} == {"kept"}


def test_faults_are_seeded_and_shuffle_duplicate_and_corrupt(clock, receiver):
    with FakeSFMC(clock=clock, seed=7, reorder=True, duplicate_probability=0.5, flush_interval=0.05,
                  max_retries=0) as fake, httpx.Client(base_url=fake.url, auth=RefreshingToken(fake)) as api:
        callback = subscribed_callback(fake, api, receiver)
        events = [{**json.loads(VECTOR_BODY)[0], "timestampUTC": 1735689600000 + i} for i in range(20)]
        fake.inject_events(callback["callbackId"], events)
        fake.drain()
        received = [e["timestampUTC"] for _, b in receiver.batches() for e in json.loads(b)]
        assert len(received) > 20 and set(received) == {e["timestampUTC"] for e in events}
        assert received[:20] != sorted(received[:20])
        fake.knobs.corrupt_signature_probability = 1.0
        fake.knobs.duplicate_probability = 0.0
        fake.inject_events(callback["callbackId"], events[:1])
        fake.drain()
        headers, body = receiver.batches()[-1]
        key = base64.b64decode(callback["signatureKey"])
        assert headers["x-sfmc-ens-signature"] != hand_signature(key, body)


# lifecycle and the standalone entry point

def test_stop_joins_every_thread_even_with_an_idle_keep_alive_connection(clock):
    before = set(threading.enumerate())
    fake = FakeSFMC(clock=clock).start()
    with httpx.Client() as client:
        client.get(fake.url + "/_fake/stats")
        fake.stop()
    assert set(threading.enumerate()) <= before


def test_real_time_mode_ticks_and_delivers_without_step_or_drain(receiver):
    with FakeSFMC(send_delay=0.05, transient_delay=0.05, final_delay=0.1) as fake, \
            httpx.Client(base_url=fake.url, auth=RefreshingToken(fake)) as api:
        fake.define("sms", "otp-sms")
        subscribed_callback(fake, api, receiver)
        send_sms(api, "live", "15550100004")
        deadline = time.monotonic() + 5
        types = []
        while len(types) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
            types = [e["eventCategoryType"] for _, b in receiver.batches() for e in json.loads(b)]
        assert types == ["TransactionalSendEvents.SmsSent", "TransactionalSendEvents.SmsDelivered"]
        assert api.get("/messaging/v1/sms/messages/live").json()["eventCategoryType"].endswith("SMSSent")


def test_definition_routes_create_and_report_the_queue(fake, api):
    created = api.post("/messaging/v1/sms/definitions", json={"definitionKey": "d1", "name": "D1", "status": "inactive"})
    assert created.status_code == 201 and created.json()["status"] == "inactive"
    assert api.post("/messaging/v1/sms/definitions", json={"definitionKey": "d1", "name": "D1"}).status_code == 409
    send_sms(api, "q1", "15550100004", definition="d1")
    assert api.get("/messaging/v1/sms/definitions/d1/queue").json()["count"] == 1
    assert api.delete("/messaging/v1/sms/definitions/d1").status_code == 200
    assert send_sms(api, "q2", "15550100004", definition="d1").json()["errorcode"] == 109111


def test_standalone_serves_control_routes_and_stops_on_sigterm():
    root = Path(__file__).resolve().parent.parent
    with subprocess.Popen([sys.executable, "-m", "tests.fakesfmc", "--port", "0", "--define", "sms:otp-sms"],
                          cwd=root, stdout=subprocess.PIPE, text=True) as process:
        try:
            url = process.stdout.readline().split()[-1]
            check_standalone(url)
        finally:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read().strip().endswith("fake SFMC stopped")


def check_standalone(url: str) -> None:
    assert httpx.post(url + "/_fake/send", json={"channel": "sms", "messageKey": "demo", "to": "15550100004",
                                                 "definitionKey": "otp-sms"}).status_code == 200
    assert httpx.get(url + "/_fake/truth").json() == {"messages": [
        {"channel": "sms", "messageKey": "demo", "status": "queued"}]}
    assert httpx.post(url + "/_fake/knobs", json={"status_rate": 2}).json()["status_rate"] == 2
    assert httpx.post(url + "/_fake/knobs", json={"nope": 1}).status_code == 400
    assert httpx.get(url + "/_fake/stats").json()["requests"] == 5
