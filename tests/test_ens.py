"""`POST /ens` through Flask's test client (SPEC §3, §7): probes, signatures, sizes, bad content."""
import base64
import hashlib
import json
import sqlite3
import time
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import (
    VECTOR_BASE64_MODE,
    VECTOR_BODY,
    VECTOR_TEXT_MODE,
    API_TOKEN,
    SIGNATURE_KEY,
    T0,
    batch,
    ens_event,
    post_ens,
    query,
    sign,
    signed_headers,
    stored_counts,
)

pytestmark = pytest.mark.usefixtures("no_errors_logged")

NOTHING = {"batches": 0, "events": 0, "messages": 0, "changes": 0, "quarantine": 0}
NEW_KEY = base64.b64encode(bytes(range(0x21, 0x41))).decode()
FOREIGN_KEY = base64.b64encode(bytes(range(0x41, 0x61))).decode()
PROBE = {"callbackId": "0e8fae3c-5e23-4c1f-9b37-8a3c0d6e1f42", "verificationKey": "vk-8f3b2c1d4e5a6b7c9d0e"}
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def logged(caplog) -> str:
    """Everything the log records say, structured fields included."""
    return "\n".join(f"{record.getMessage()} {getattr(record, 'fields', {})}" for record in caplog.records)


def message(client, key: str, channel: str = "sms") -> dict:
    response = client.get(f"/v1/messages/{key}?channel={channel}", headers=AUTH)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def quarantine(db_path) -> list[tuple]:
    return query(db_path, "SELECT position, reason FROM quarantine ORDER BY id")


def assert_json_error(response, status: int) -> None:
    assert response.status_code == status
    error = response.get_json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)


# -- the verification probe -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ens", "/ens/"])
@pytest.mark.parametrize("keys", [SIGNATURE_KEY, None], ids=["keys", "no-keys"])
def test_verification_probe_is_answered_and_stored(make_app, db_path, caplog, path, keys):
    app = make_app(ENS_SIGNATURE_KEYS=keys)
    response = app.test_client().post(path, json={**PROBE, "callbackName": "ens-status", "extra": [1, {}]})
    assert response.status_code == 200
    probe = app.extensions["store"].probe(PROBE["callbackId"])
    assert probe["verification_key"] == PROBE["verificationKey"]
    assert stored_counts(db_path) == NOTHING
    assert PROBE["verificationKey"] not in logged(caplog)


def test_newest_probe_wins(app, client):
    client.post("/ens", json=PROBE)
    client.post("/ens", json={**PROBE, "verificationKey": "vk-newer-0000000000"})
    assert app.extensions["store"].probe(PROBE["callbackId"])["verification_key"] == "vk-newer-0000000000"


@pytest.mark.parametrize("body", [
    {"callbackId": 5, "verificationKey": "vk-1"},
    {"callbackId": "cb-1"},
    {"verificationKey": "vk-1"},
    [PROBE],
])
def test_unsigned_body_that_is_not_a_probe_is_refused(client, db_path, body):
    assert_json_error(client.post("/ens", json=body), 401)
    assert stored_counts(db_path) == NOTHING


# -- signatures -----------------------------------------------------------------------------


def test_unsigned_batch_is_refused_with_nothing_stored_but_a_counter(app, client, db_path, caplog):
    body = batch(ens_event("SmsSent", "mk-secret-body"))
    response = client.post("/ens", data=body, headers={"Content-Type": "application/json"})
    assert_json_error(response, 401)
    assert stored_counts(db_path) == NOTHING
    assert app.extensions["store"].counters()["signature_failures"] == 1
    text = logged(caplog)
    assert hashlib.sha256(body).hexdigest() in text and str(len(body)) in text
    assert "mk-secret-body" not in text and SIGNATURE_KEY not in text


@pytest.mark.parametrize("header", [
    "",
    "not base64!!",
    sign(VECTOR_BODY, SIGNATURE_KEY).rstrip("="),
    hashlib.sha256(VECTOR_BODY).hexdigest(),
    base64.b64encode(bytes(31)).decode(),
    base64.b64encode(bytes(32)).decode(),
    sign(VECTOR_BODY, FOREIGN_KEY),
    sign(VECTOR_BODY + b" ", SIGNATURE_KEY),
])
def test_wrong_or_malformed_signature_is_refused(client, db_path, header):
    response = client.post("/ens", data=VECTOR_BODY, headers={"x-sfmc-ens-signature": header})
    assert_json_error(response, 401)
    assert SIGNATURE_KEY not in response.get_data(as_text=True)
    assert stored_counts(db_path) == NOTHING


def test_tampered_body_is_refused(client, db_path):
    headers = signed_headers(VECTOR_BODY)
    tampered = VECTOR_BODY.replace(b'"4000"', b'"4500"')
    assert client.post("/ens", data=tampered, headers=headers).status_code == 401
    assert stored_counts(db_path) == NOTHING


def test_with_no_keys_configured_every_signed_batch_is_refused(make_app, db_path):
    client = make_app(ENS_SIGNATURE_KEYS=None).test_client()
    assert_json_error(post_ens(client, VECTOR_BODY), 401)
    assert stored_counts(db_path) == NOTHING


def test_section_6_3_vector_is_accepted_literally(client):
    for header in (VECTOR_BASE64_MODE, VECTOR_TEXT_MODE):
        response = client.post("/ens", data=VECTOR_BODY, headers={"x-sfmc-ens-signature": header})
        assert response.status_code == 200
    delivered = message(client, "mk-0001")
    assert (delivered["status"], delivered["statusAt"]) == ("delivered", "2025-01-01T00:00:00.000Z")


def test_signature_header_name_is_case_insensitive(client):
    response = client.post("/ens", data=VECTOR_BODY, headers={"X-SFMC-ENS-SIGNATURE": VECTOR_BASE64_MODE})
    assert response.status_code == 200


@pytest.mark.parametrize("setting, mode, accepted", [
    ("base64", "base64", True),
    ("base64", "text", False),
    ("text", "text", True),
    ("text", "base64", False),
    ("auto", "base64", True),
    ("auto", "text", True),
])
def test_key_encodings(make_app, db_path, setting, mode, accepted):
    client = make_app(ENS_KEY_ENCODING=setting).test_client()
    response = post_ens(client, VECTOR_BODY, SIGNATURE_KEY, mode)
    assert response.status_code == (200 if accepted else 401)
    expected = [(mode,)] if accepted else []
    assert query(db_path, "SELECT key_encoding FROM batches") == expected


def test_key_rotation_accepts_old_and_new_keys(make_app):
    client = make_app(ENS_SIGNATURE_KEYS=f"{SIGNATURE_KEY}, {NEW_KEY}").test_client()
    assert post_ens(client, batch(ens_event("SmsSent", "mk-old")), SIGNATURE_KEY).status_code == 200
    assert post_ens(client, batch(ens_event("SmsSent", "mk-new")), NEW_KEY).status_code == 200
    assert post_ens(client, batch(ens_event("SmsSent", "mk-new-text")), NEW_KEY, "text").status_code == 200
    assert post_ens(client, batch(ens_event("SmsSent", "mk-foreign")), FOREIGN_KEY).status_code == 401


def test_a_text_key_that_is_not_base64_works_in_auto_mode(make_app):
    key = "my ENS secret!"
    client = make_app(ENS_SIGNATURE_KEYS=key).test_client()
    assert post_ens(client, VECTOR_BODY, key, "text").status_code == 200


# -- size -----------------------------------------------------------------------------------


def body_of_size(size: int) -> bytes:
    base = batch(ens_event("SmsSent", "mk-size", note=""))
    body = batch(ens_event("SmsSent", "mk-size", note="x" * (size - len(base))))
    assert len(body) == size
    return body


def test_body_over_max_body_bytes_gets_413_and_nothing_stored(make_app, db_path):
    client = make_app(MAX_BODY_BYTES="600").test_client()
    assert_json_error(post_ens(client, body_of_size(601)), 413)
    assert stored_counts(db_path) == NOTHING
    assert post_ens(client, body_of_size(600)).status_code == 200


def test_oversized_probe_gets_413(make_app, db_path):
    client = make_app(MAX_BODY_BYTES="100").test_client()
    assert_json_error(client.post("/ens", json={**PROBE, "padding": "x" * 100}), 413)
    assert query(db_path, "SELECT count(*) FROM probes") == [(0,)]


def test_a_full_1000_event_batch_over_1_mib_is_accepted_by_default(client, db_path):
    events = [ens_event("SmsDelivered", f"mk-big-{n:04d}", T0 + n, note="n" * 700) for n in range(1000)]
    body = batch(*events)
    assert len(body) > 1024 * 1024
    response = post_ens(client, body)
    assert response.status_code == 200
    assert response.get_json()["new"] == 1000
    assert stored_counts(db_path)["events"] == 1000


# -- bad content inside a signed batch ------------------------------------------------------


def test_bad_items_are_quarantined_and_valid_events_applied(client, db_path):
    body = batch(
        42, "text", None, [], {"info": {}}, {"eventCategoryType": 7}, {"eventCategoryType": "  "},
        ens_event("SmsSent", "mk-good"),
        ens_event("SmsDelivered", None),
        ens_event("SmsSent", "k" * 101),
        ens_event("SmsSent", "k" * 100),
    )
    response = post_ens(client, body)
    assert response.status_code == 200
    rows = quarantine(db_path)
    assert [position for position, _ in rows] == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert all(reason for _, reason in rows)
    assert message(client, "mk-good")["status"] == "sent"
    assert message(client, "k" * 100)["status"] == "sent"
    before = stored_counts(db_path)
    assert post_ens(client, body).status_code == 200  # the same bytes again add nothing
    assert stored_counts(db_path) == before


@pytest.mark.parametrize("body, word", [
    (b'[{"eventCategoryType":"TransactionalSendEvents.SmsSent",', "JSON"),
    (b"", "JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    (b'[{"eventCategoryType":"TransactionalSendEvents.SmsSent","info":{"messageKey":"\xff"}}]', "UTF-8"),
    (b'\xef\xbb\xbf[]', "JSON"),
])
def test_unreadable_signed_body_is_quarantined_with_a_reason(client, db_path, body, word):
    assert post_ens(client, body).status_code == 200
    [(position, reason)] = quarantine(db_path)
    assert word in reason
    assert stored_counts(db_path)["events"] == 0
    assert post_ens(client, body).status_code == 200
    assert len(quarantine(db_path)) == 1


def test_huge_integer_does_not_fail_the_batch(client):
    body = b'[{"eventCategoryType":"TransactionalSendEvents.SmsSent","timestampUTC":' + b"9" * 5000 + b"}]"
    assert post_ens(client, body).status_code == 200


def test_a_single_signed_object_is_a_batch_of_one(client):
    body = json.dumps(ens_event("SmsBounced", "mk-one")).encode()
    assert post_ens(client, body).status_code == 200
    assert message(client, "mk-one")["status"] == "bounced"


def test_timestamp_as_digit_string_is_read_as_epoch_ms(client):
    assert post_ens(client, batch(ens_event("SmsSent", "mk-str", "1735689604900"))).status_code == 200
    assert message(client, "mk-str")["statusAt"] == "2025-01-01T00:00:04.900Z"


@pytest.mark.parametrize("timestamp", [None, "soon", True, {}, -5])
def test_missing_or_unusable_timestamp_applies_at_received_time_and_says_so(client, timestamp):
    event = ens_event("SmsSent", "mk-no-time", timestamp)
    if timestamp is None:
        del event["timestampUTC"]
    before = int(time.time() * 1000)
    assert post_ens(client, batch(event)).status_code == 200
    after = int(time.time() * 1000)
    found = message(client, "mk-no-time")
    assert found["status"] == "sent"
    status_at = found["statusAt"]
    assert _iso_ms(status_at) in range(before - 1, after + 1)
    [entry] = found["history"]
    assert entry["applied"] is True and "time" in (entry["reason"] or "").lower()


def _iso_ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


@pytest.mark.parametrize("literal", [b"1e999", b"Infinity", b"-Infinity"])
def test_infinite_timestamp_does_not_fail_the_batch(client, literal):
    body = (b'[{"eventCategoryType":"TransactionalSendEvents.SmsSent","timestampUTC":' + literal
            + b',"info":{"messageKey":"mk-inf"}}]')
    assert post_ens(client, body).status_code == 200
    assert message(client, "mk-inf")["status"] == "sent"


def test_mid_as_string_and_status_code_as_number_are_accepted(client):
    event = ens_event("SmsDelivered", "mk-types", statusCode=4000)
    event["mid"], event["eid"] = "7000001", "7000000"
    assert post_ens(client, batch(event)).status_code == 200
    found = message(client, "mk-types")
    assert found["status"] == "delivered"
    assert str(found["statusCode"]) == "4000"


def test_unknown_event_types_are_stored_and_counted_without_a_status_change(app, client, db_path):
    post_ens(client, batch(ens_event("SmsSent", "mk-1")))
    response = post_ens(client, batch(ens_event("EngagementEvents.EmailOpen"),
                                      ens_event("TransactionalSendEvents.SmsFutureThing", "mk-1", T0 + 5000)))
    assert response.status_code == 200
    assert app.extensions["store"].counters()["events_unknown"] == 2
    assert stored_counts(db_path)["events"] == 3
    found = message(client, "mk-1")
    assert found["status"] == "sent"
    assert [entry["applied"] for entry in found["history"]] == [True, False]


def test_get_on_ens_is_a_json_405(client):
    assert_json_error(client.get("/ens"), 405)


# -- the database cannot take the write -----------------------------------------------------


@pytest.fixture
def impatient_app(app):
    """The app with a 0.2 s busy timeout, so a lock test takes a fraction of a second."""
    store = app.extensions["store"]
    store.close()
    store.busy_timeout = 0.2
    return app


@pytest.fixture
def locked(db_path):
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    yield locker
    if locker.in_transaction:
        locker.execute("ROLLBACK")
    locker.close()


def test_locked_database_answers_503_with_nothing_applied(impatient_app, db_path, locked):
    client = impatient_app.test_client()
    body = batch(*[ens_event(kind, "mk-locked", T0 + n) for n, kind in enumerate(["SmsSent", "SmsDelivered"])])
    assert_json_error(post_ens(client, body), 503)
    assert_json_error(client.post("/ens", json=PROBE), 503)
    locked.execute("ROLLBACK")
    assert stored_counts(db_path) == NOTHING
    assert post_ens(client, body).status_code == 200  # ENS's resend
    assert message(client, "mk-locked")["status"] == "delivered"


def test_locked_database_still_refuses_bad_signatures_with_401(impatient_app, locked):
    client = impatient_app.test_client()
    assert client.post("/ens", data=VECTOR_BODY, headers={"x-sfmc-ens-signature": "bad"}).status_code == 401


# -- never a 500 ----------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.floats()
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=12)
event_types = st.sampled_from(["TransactionalSendEvents.SmsSent", "TransactionalSendEvents.SMSQueued",
                               "transactionalsendevents.smsdelivered", "TransactionalSendEvents.EmailBounced",
                               "EngagementEvents.EmailOpen"]) | st.text(max_size=20)
events = st.fixed_dictionaries(
    {"eventCategoryType": event_types | json_values},
    optional={
        "timestampUTC": st.integers() | json_values,
        "info": st.fixed_dictionaries({}, optional={
            "messageKey": st.text(max_size=110) | json_values,
            "statusCode": json_values, "statusMessage": json_values, "to": json_values,
        }) | json_values,
        "mid": json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(events | json_values, max_size=5))
def test_any_signed_json_batch_gets_200(client, items):
    body = json.dumps(items).encode()
    assert post_ens(client, body).status_code == 200


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_any_signed_bytes_get_200(client, body):
    assert post_ens(client, body).status_code == 200


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60))
def test_any_unsigned_bytes_get_401(client, body, header):
    response = client.post("/ens", data=body, headers={"x-sfmc-ens-signature": header})
    assert response.status_code == 401


def test_lone_surrogate_escape_is_quarantined_and_the_rest_applied(client, db_path):
    body = (b'[{"eventCategoryType":"TransactionalSendEvents.SmsSent","timestampUTC":1735689600000,'
            b'"info":{"messageKey":"mk-\\ud800"}},'
            b'{"eventCategoryType":"TransactionalSendEvents.SmsSent","timestampUTC":1735689600000,'
            b'"info":{"messageKey":"mk-fine","statusMessage":"\\udfff"}},'
            + batch(ens_event("SmsSent", "mk-next"))[1:])
    assert post_ens(client, body).status_code == 200
    assert [position for position, _ in quarantine(db_path)] == [0, 1]
    assert message(client, "mk-next")["status"] == "sent"


def test_probe_with_a_lone_surrogate_is_not_a_probe(client, db_path):
    body = b'{"callbackId":"cb-1","verificationKey":"vk-\\ud800"}'
    assert client.post("/ens", data=body, headers={"Content-Type": "application/json"}).status_code == 401
    assert query(db_path, "SELECT count(*) FROM probes") == [(0,)]


def test_start_without_signature_keys_logs_a_warning(make_app, capsys):
    make_app(ENS_SIGNATURE_KEYS=None)
    assert "ENS_SIGNATURE_KEYS" in capsys.readouterr().err


def test_secrets_never_reach_the_log(make_app, capsys):
    client = make_app(LOG_LEVEL="DEBUG", LOG_FORMAT="json").test_client()
    post_ens(client, VECTOR_BODY)
    client.post("/ens", data=VECTOR_BODY, headers={"x-sfmc-ens-signature": sign(VECTOR_BODY, FOREIGN_KEY)})
    client.post("/ens", json=PROBE)
    client.get("/v1/changes", headers=AUTH)
    client.get("/v1/changes", headers={"Authorization": "Bearer not-the-token"})
    err = capsys.readouterr().err
    assert "batch stored" in err
    for secret in (SIGNATURE_KEY, API_TOKEN, PROBE["verificationKey"], "not-the-token"):
        assert secret not in err


def test_a_missing_time_is_explained_once_in_the_history(client, auth):
    assert post_ens(client, batch(ens_event("SmsSent", "mk-untimed", timestamp_utc=None))).status_code == 200
    history = client.get("/v1/messages/mk-untimed", headers=auth).json["history"]
    assert [entry["reason"] for entry in history] == ["timestampUTC missing or unusable; received time used"]


def test_status_code_as_number_or_string_is_the_same_event(client, auth):
    as_string = ens_event("SmsDelivered", "mk-code", statusCode="4000")
    as_number = ens_event("SmsDelivered", "mk-code", statusCode=4000)
    assert post_ens(client, batch(as_string)).status_code == 200
    assert post_ens(client, batch(as_number)).json["duplicates"] == 1
    assert len(client.get("/v1/messages/mk-code", headers=auth).json["history"]) == 1


def test_a_probe_with_an_empty_signature_header_is_still_a_probe(client):
    probe = b'{"callbackId":"cb-empty-header","verificationKey":"k-1234567890"}'
    response = client.post("/ens", data=probe, headers={"x-sfmc-ens-signature": ""})
    assert response.status_code == 200
    assert client.application.extensions["store"].probe("cb-empty-header")["state"] == "pending"


def test_text_logs_cannot_be_forged_through_a_probe(make_app, capsys):
    client = make_app(LOG_FORMAT="text").test_client()
    probe = json.dumps({"callbackId": "cb-3\n INFO fake", "verificationKey": "k-1234567890"}).encode()
    assert client.post("/ens", data=probe).status_code == 200
    lines = [line for line in capsys.readouterr().err.splitlines() if "probe" in line or "fake" in line]
    assert len(lines) == 1 and 'callback_id="cb-3\\n INFO fake"' in lines[0]
