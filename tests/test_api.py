"""The query API (`/v1/…`) and `/healthz` through Flask's test client (SPEC §5)."""
import base64
import json
import shutil
import sqlite3
import time
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import API_TOKEN, T0, batch, ens_event, post_ens

pytestmark = pytest.mark.usefixtures("no_errors_logged")

ROUTES = [("POST", "/v1/messages"), ("GET", "/v1/messages/mk-0001"), ("GET", "/v1/messages"),
          ("GET", "/v1/changes")]
MESSAGE_FIELDS = {"messageKey", "channel", "status", "statusAt", "statusCode", "statusMessage", "eventCategoryType",
                  "source", "to", "subscriberKey", "definitionKey", "trackedAt", "updatedAt", "poll"}
HISTORY_FIELDS = {"eventCategoryType", "status", "statusAt", "statusCode", "statusMessage", "source", "receivedAt",
                  "applied", "reason"}
AWKWARD_KEYS = ["a/b", "/leading", "trailing/", "a//b", "q?x=1", "h#frag", "100%", "a%2Fb", "with space",
                ".", "..", "./..", "é漢字🙂", "+plus", "semi;colon", "k" * 100]


def segment(key: str) -> str:
    """A message key percent-encoded as one path segment (SPEC §7), `.` and `..` included."""
    encoded = quote(key, safe="")
    return {".": "%2E", "..": "%2E%2E"}.get(encoded, encoded)


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


def assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    return error


@pytest.fixture
def api(client, auth):
    """`api(method, path, **kwargs)` with the bearer token."""
    def call(method: str, path: str, **kwargs):
        return client.open(path, method=method, headers={**auth, **kwargs.pop("headers", {})}, **kwargs)

    return call


def track(api, *items, status: int = 201) -> dict:
    response = api("POST", "/v1/messages", json=list(items))
    assert response.status_code == status, response.get_json()
    return response.get_json()


def get_message(api, key: str, channel: str | None = None, status: int = 200) -> dict:
    query = f"?channel={channel}" if channel else ""
    response = api("GET", f"/v1/messages/{segment(key)}{query}")
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {API_TOKEN}", "Bearer",
                                           f"Bearer {API_TOKEN}x", f"Bearer {API_TOKEN.upper()}", API_TOKEN])
def test_routes_need_a_valid_bearer_token(client, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.open(path, method=method, headers=headers, json=[{"messageKey": "mk-0001"}])
    assert_error(response, 401)
    assert API_TOKEN not in response.get_data(as_text=True)


@pytest.mark.parametrize("method, path", ROUTES)
def test_without_api_tokens_everyone_gets_401(make_app, method, path):
    client = make_app(API_TOKENS=None).test_client()
    response = client.open(path, method=method, headers={"Authorization": f"Bearer {API_TOKEN}"},
                           json=[{"messageKey": "mk-0001"}])
    assert_error(response, 401)


def test_any_configured_token_is_accepted(make_app):
    client = make_app(API_TOKENS="first-token, second-token").test_client()
    for token in ("first-token", "second-token"):
        assert client.get("/v1/changes", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/v1/changes", headers={"Authorization": "Bearer third-token"}).status_code == 401


def test_bearer_scheme_is_case_insensitive(client):
    assert client.get("/v1/changes", headers={"Authorization": f"bearer {API_TOKEN}"}).status_code == 200


def test_healthz_needs_no_token(make_app):
    client = make_app(API_TOKENS=None).test_client()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_healthz_is_503_when_the_database_does_not_answer(app, client, db_path):
    store = app.extensions["store"]
    store.close()
    for suffix in ("", "-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
    db_path.mkdir()  # the path can no longer be opened as a database
    try:
        response = client.get("/healthz")
        assert response.status_code == 503
    finally:
        shutil.rmtree(db_path)


# -- tracking -------------------------------------------------------------------------------


def test_track_one_object(api):
    response = api("POST", "/v1/messages", json={"messageKey": "mk-one"})
    assert response.status_code == 201
    assert response.get_json() == {"accepted": 1, "rejected": []}
    found = get_message(api, "mk-one")
    assert (found["channel"], found["status"], found["poll"]["state"]) == ("sms", None, "waiting")


def test_track_a_list_on_both_channels(api):
    assert track(api, {"messageKey": "mk-a"}, {"messageKey": "mk-b", "channel": "sms"},
                 {"messageKey": "mk-e", "channel": "email"}) == {"accepted": 3, "rejected": []}
    assert get_message(api, "mk-e")["channel"] == "email"
    get_message(api, "mk-e", "sms", status=404)


def test_more_than_1000_items_is_413_and_nothing_tracked(api):
    response = api("POST", "/v1/messages", json=[{"messageKey": f"mk-{n}"} for n in range(1001)])
    assert_error(response, 413)
    get_message(api, "mk-0", status=404)
    assert track(api, *[{"messageKey": f"mk-{n}"} for n in range(1000)])["accepted"] == 1000


def test_invalid_items_get_422_with_per_index_errors_and_valid_ones_are_kept(api):
    answer = track(
        api,
        {"messageKey": "mk-ok-0"},
        {"messageKey": ""},
        5,
        {"messageKey": "mk-fax", "channel": "fax"},
        {"messageKey": "k" * 101},
        {"messageKey": "mk-when", "sentAt": "yesterday"},
        {"messageKey": "mk-to", "to": 15550100001},
        {"messageKey": 7},
        {"channel": "sms"},
        {"messageKey": "mk-ok-9", "channel": "email", "definitionKey": "receipt-email", "to": "ada@example.net"},
        status=422,
    )
    assert answer["accepted"] == 2
    assert [item["index"] for item in answer["rejected"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    for item in answer["rejected"]:
        assert isinstance(item["code"], str) and isinstance(item["message"], str)
    assert get_message(api, "mk-ok-0")["status"] is None
    assert get_message(api, "mk-ok-9")["definitionKey"] == "receipt-email"
    for key in ("mk-fax", "mk-when", "mk-to"):
        get_message(api, key, status=404)


def test_track_item_with_a_lone_surrogate_is_rejected(api):
    body = b'[{"messageKey":"mk-\\ud800"},{"messageKey":"mk-fine"}]'
    response = api("POST", "/v1/messages", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert [item["index"] for item in response.get_json()["rejected"]] == [0]


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1,"])
def test_track_body_that_is_not_json_is_400(api, body):
    assert_error(api("POST", "/v1/messages", data=body, headers={"Content-Type": "application/json"}), 400)


def test_tracking_again_changes_nothing(api):
    track(api, {"messageKey": "mk-again", "to": "15550100001", "sentAt": "2025-01-01T00:00:00Z"})
    first = get_message(api, "mk-again")
    time.sleep(0.01)
    track(api, {"messageKey": "mk-again", "to": "15550100009", "sentAt": "2025-01-01T05:00:00Z"})
    again = get_message(api, "mk-again")
    assert again == first
    assert first["trackedAt"] is not None


def test_sent_at_is_read_as_iso_8601_and_defaults_to_now(api):
    before = now_ms()
    track(api, {"messageKey": "mk-now"}, {"messageKey": "mk-then", "sentAt": "2025-01-01T01:00:00+01:00"})
    after = now_ms()
    assert before <= iso_ms(get_message(api, "mk-now")["sentAt"]) <= after
    assert get_message(api, "mk-then")["sentAt"] == "2025-01-01T00:00:00.000Z"


# -- one message ----------------------------------------------------------------------------


def test_one_message_with_history_and_poll_state(api, client):
    track(api, {"messageKey": "mk-0001", "to": "15550100001", "definitionKey": "otp-sms"})
    tracked_at = get_message(api, "mk-0001")["trackedAt"]
    post_ens(client, batch(ens_event("SmsSent", "mk-0001", T0), ens_event("SmsDelivered", "mk-0001", T0 + 4900)))
    post_ens(client, batch(ens_event("SmsTransient", "mk-0001", T0 + 1200)))  # late
    found = get_message(api, "mk-0001")
    assert set(found) >= MESSAGE_FIELDS | {"history"}
    assert {name: found[name] for name in ("messageKey", "channel", "status", "statusAt", "statusCode",
                                           "statusMessage", "eventCategoryType", "source", "to", "subscriberKey",
                                           "definitionKey", "trackedAt")} == {
        "messageKey": "mk-0001", "channel": "sms", "status": "delivered", "statusAt": "2025-01-01T00:00:04.900Z",
        "statusCode": "4000", "statusMessage": "Delivered",
        "eventCategoryType": "TransactionalSendEvents.SmsDelivered", "source": "ens", "to": "15550100001",
        "subscriberKey": "contact-42", "definitionKey": "otp-sms", "trackedAt": tracked_at,
    }
    assert found["poll"] == {"state": "done", "reason": None, "attempts": 0, "lastPolledAt": None,
                             "nextPollAt": None}
    history = found["history"]
    assert all(set(entry) == HISTORY_FIELDS for entry in history)
    assert [(entry["status"], entry["statusAt"], entry["applied"], entry["source"]) for entry in history] == [
        ("sent", "2025-01-01T00:00:00.000Z", True, "ens"),
        ("delivered", "2025-01-01T00:00:04.900Z", True, "ens"),
        ("transient", "2025-01-01T00:00:01.200Z", False, "ens"),
    ]
    assert history[2]["reason"]
    assert history[0]["eventCategoryType"] == "TransactionalSendEvents.SmsSent"


def test_tracked_message_waits_for_its_grace_period(api):
    before = now_ms()
    track(api, {"messageKey": "mk-wait"})
    poll = get_message(api, "mk-wait")["poll"]
    assert poll["state"] == "waiting"
    assert before + 300_000 <= iso_ms(poll["nextPollAt"]) <= now_ms() + 300_000


def test_tracked_message_is_due_after_its_grace_period(make_app, auth):
    client = make_app(POLL_GRACE_SECONDS="0").test_client()
    client.post("/v1/messages", json={"messageKey": "mk-due"}, headers=auth)
    time.sleep(0.002)
    assert client.get("/v1/messages/mk-due", headers=auth).get_json()["poll"]["state"] == "due"


def test_unknown_message_is_404(api):
    assert_error(api("GET", "/v1/messages/mk-unknown"), 404)
    assert_error(api("GET", f"/v1/messages/{'k' * 101}"), 404)


def test_channel_picks_between_same_key_on_both_channels(api, client):
    post_ens(client, batch(ens_event("SmsSent", "shared", T0)))
    time.sleep(0.005)
    post_ens(client, batch(ens_event("EmailSent", "shared", T0)))
    assert get_message(api, "shared")["channel"] == "email"  # the more recently updated
    assert get_message(api, "shared", "sms")["channel"] == "sms"
    assert get_message(api, "shared", "email")["channel"] == "email"
    time.sleep(0.005)
    post_ens(client, batch(ens_event("SmsDelivered", "shared", T0 + 4900)))
    found = get_message(api, "shared")
    assert (found["channel"], found["status"]) == ("sms", "delivered")
    assert [entry["status"] for entry in found["history"]] == ["sent", "delivered"]
    assert_error(api("GET", "/v1/messages/shared?channel=fax"), 400)


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_awkward_keys_round_trip(api, client, key):
    track(api, {"messageKey": key, "channel": "email"})
    post_ens(client, batch(ens_event("SmsDelivered", key)))
    sms = get_message(api, key, "sms")
    assert (sms["messageKey"], sms["status"]) == (key, "delivered")
    assert get_message(api, key, "email")["messageKey"] == key


def test_keys_differing_only_by_encoding_stay_apart(api):
    track(api, {"messageKey": "a/b", "to": "slash"}, {"messageKey": "a%2Fb", "to": "percent"})
    assert get_message(api, "a/b")["to"] == "slash"
    assert get_message(api, "a%2Fb")["to"] == "percent"


def test_101_character_key_is_rejected(api):
    answer = track(api, {"messageKey": "k" * 101}, status=422)
    assert [item["index"] for item in answer["rejected"]] == [0]


# -- listing --------------------------------------------------------------------------------


def list_all(api, query: str = "", limit: int = 7) -> list[dict]:
    """Every page of GET /v1/messages, following nextCursor."""
    rows, cursor = [], None
    for _ in range(1000):
        url = f"/v1/messages?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        response = api("GET", url)
        assert response.status_code == 200, response.get_json()
        page = response.get_json()
        assert len(page["messages"]) <= limit
        rows += page["messages"]
        cursor = page["nextCursor"]
        if cursor is None:
            return rows
    raise AssertionError("the cursor never ended")


def test_cursor_paging_covers_every_row_exactly_once_newest_first(api, client):
    track(api, *[{"messageKey": f"mk-same-{n:02d}"} for n in range(30)])  # one updatedAt for all 30
    track(api, *[{"messageKey": f"mk-same-{n:02d}", "channel": "email"} for n in range(5)])
    for n in range(6):
        time.sleep(0.002)
        post_ens(client, batch(ens_event("SmsSent", f"mk-ens-{n}", T0 + n)))
    for limit in (1, 7, 100):
        rows = list_all(api, limit=limit)
        keys = [(row["channel"], row["messageKey"]) for row in rows]
        assert len(keys) == len(set(keys)) == 41
        updated = [iso_ms(row["updatedAt"]) for row in rows]
        assert updated == sorted(updated, reverse=True)
        assert [row["messageKey"] for row in rows[:6]] == [f"mk-ens-{n}" for n in reversed(range(6))]
        assert set(rows[0]) >= MESSAGE_FIELDS


def test_list_filters(api, client):
    track(api, {"messageKey": "mk-otp", "definitionKey": "otp-sms"},
          {"messageKey": "mk-rcpt", "channel": "email", "definitionKey": "receipt-email"})
    post_ens(client, batch(ens_event("SmsDelivered", "mk-d"), ens_event("SmsBounced", "mk-b"),
                           ens_event("EmailNotSent", "mk-n")))
    time.sleep(0.005)
    since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    time.sleep(0.005)
    post_ens(client, batch(ens_event("SmsSent", "mk-late")))

    def keys(query):
        return sorted(row["messageKey"] for row in list_all(api, query))

    assert keys("&status=delivered") == ["mk-d"]
    assert keys("&status=not_sent") == ["mk-n"]
    assert keys("&channel=email") == ["mk-n", "mk-rcpt"]
    assert keys("&definitionKey=otp-sms") == ["mk-b", "mk-d", "mk-late", "mk-otp"]
    assert keys("&channel=sms&status=sent") == ["mk-late"]
    assert keys(f"&updatedSince={since}") == ["mk-late"]


@pytest.mark.parametrize("query", ["status=lost", "channel=fax", "updatedSince=yesterday", "limit=0",
                                   "limit=1001", "limit=-1", "limit=ten", "limit="])
def test_bad_list_parameters_are_400(api, query):
    assert_error(api("GET", f"/v1/messages?{query}"), 400)


def test_limit_defaults_to_100_and_allows_1000(api):
    track(api, *[{"messageKey": f"mk-{n:03d}"} for n in range(105)])
    page = api("GET", "/v1/messages").get_json()
    assert len(page["messages"]) == 100 and page["nextCursor"]
    page = api("GET", "/v1/messages?limit=1000").get_json()
    assert len(page["messages"]) == 105 and page["nextCursor"] is None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize("cursor", ["garbage!!", "%%%", _b64(b"not json"), _b64(b'["x","sms","k"]'),
                                    _b64(b"[1,2]"), _b64(b'{"a":1}'), _b64(b"[1,\"sms\",null]"), "==",
                                    _b64(b'"\\ud800"'), _b64(b"\xff\xfe"), _b64(b"[" * 100_000),
                                    _b64(b'[99999999999999999999,"sms","k"]'),
                                    _b64(b'[-99999999999999999999,"sms","k"]')])
def test_bad_cursor_is_400(api, cursor):
    assert_error(api("GET", f"/v1/messages?cursor={cursor}"), 400)


# -- the change feed ------------------------------------------------------------------------


def read_feed(api, after: int = 0, limit: int = 3) -> tuple[list[dict], int]:
    changes = []
    for _ in range(1000):
        response = api("GET", f"/v1/changes?after={after}&limit={limit}")
        assert response.status_code == 200
        page = response.get_json()
        assert len(page["changes"]) <= limit
        changes += page["changes"]
        if not page["changes"]:
            assert page["nextAfter"] == after
            return changes, after
        assert page["nextAfter"] == page["changes"][-1]["seq"]
        after = page["nextAfter"]
    raise AssertionError("the feed never ended")


def test_change_feed_pages_see_every_change_exactly_once(api, client):
    for n in range(5):
        post_ens(client, batch(ens_event("SmsSent", f"mk-c-{n}", T0 + n)))
    post_ens(client, batch(*[ens_event("SmsDelivered", f"mk-c-{n}", T0 + 5000 + n) for n in range(5)]))
    post_ens(client, batch(ens_event("SmsTransient", "mk-c-0", T0 + 9000)))  # late: no change
    changes, after = read_feed(api)
    assert changes[0] == {"seq": changes[0]["seq"], "messageKey": "mk-c-0", "channel": "sms", "status": "sent",
                          "statusAt": "2025-01-01T00:00:00.000Z", "source": "ens"}
    assert [(c["messageKey"], c["status"]) for c in changes] == (
        [(f"mk-c-{n}", "sent") for n in range(5)] + [(f"mk-c-{n}", "delivered") for n in range(5)])
    seqs = [c["seq"] for c in changes]
    assert seqs == sorted(set(seqs))

    post_ens(client, batch(ens_event("EmailBounced", "mk-c-9", T0)))  # written between two reads
    more, _ = read_feed(api, after)
    assert [(c["messageKey"], c["channel"], c["status"]) for c in more] == [("mk-c-9", "email", "bounced")]
    assert more[0]["seq"] > seqs[-1]


def test_change_feed_limit_defaults_to_100(api, client):
    post_ens(client, batch(*[ens_event("SmsSent", f"mk-{n:03d}", T0) for n in range(120)]))
    page = api("GET", "/v1/changes").get_json()
    assert len(page["changes"]) == 100
    assert len(api("GET", f"/v1/changes?after={page['nextAfter']}").get_json()["changes"]) == 20


@pytest.mark.parametrize("query", ["after=-1", "after=abc", "after=1.5", "after=99999999999999999999",
                                   "after=" + "9" * 5000, "limit=0", "limit=1001", "limit=x"])
def test_bad_change_feed_parameters_are_400(api, query):
    assert_error(api("GET", f"/v1/changes?{query}"), 400)


def test_errors_have_the_json_shape(api):
    assert_error(api("GET", "/v1/messages/nope"), 404)
    assert_error(api("POST", "/v1/messages", data=b"{", headers={"Content-Type": "application/json"}), 400)
    assert json.loads(api("GET", "/v1/changes").get_data()) == {"changes": [], "nextAfter": 0}


# -- never a 500 ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
track_items = st.fixed_dictionaries({}, optional={
    "messageKey": st.text(max_size=110) | json_values, "channel": st.sampled_from(["sms", "email"]) | json_values,
    "definitionKey": st.text(max_size=10) | json_values, "to": st.text(max_size=10) | json_values,
    "sentAt": st.sampled_from(["2025-01-01T00:00:00Z", "2025-01-01T00:00:00", "2999-01-01T00:00:00Z"])
    | json_values,
})
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(track_items | json_values | st.lists(track_items | json_values, max_size=4))
def test_any_tracking_body_is_answered_without_a_500(api, body):
    response = api("POST", "/v1/messages", data=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code in (201, 400, 422)


@FUZZ
@given(st.text(min_size=1, max_size=120))
def test_any_message_key_in_the_path_is_answered_without_a_500(api, key):
    response = api("GET", f"/v1/messages/{segment(key)}")
    assert response.status_code in (200, 400, 404)


query_values = st.text(max_size=30) | st.integers().map(str) | st.sampled_from(["", "0", "1000", "sms", "sent"])


@FUZZ
@given(st.dictionaries(st.sampled_from(["status", "channel", "definitionKey", "updatedSince", "limit", "cursor",
                                        "after"]), query_values, max_size=4))
def test_any_query_parameters_are_answered_without_a_500(api, params):
    for path in ("/v1/messages", "/v1/changes"):
        response = api("GET", f"{path}?{urlencode(params)}")
        assert response.status_code in (200, 400)


def test_start_without_api_tokens_says_how_to_set_one(make_app, capsys):
    make_app(API_TOKENS=None)
    assert "API_TOKENS=" in capsys.readouterr().err


def test_tracking_while_the_database_is_locked_is_503_and_reads_still_work(app, client, auth, db_path):
    store = app.extensions["store"]
    store.close()
    store.busy_timeout = 0.2
    client.post("/v1/messages", json={"messageKey": "mk-before"}, headers=auth)
    locker = sqlite3.connect(db_path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        assert_error(client.post("/v1/messages", json={"messageKey": "mk-locked"}, headers=auth), 503)
        assert client.get("/v1/messages/mk-before", headers=auth).status_code == 200
        assert client.get("/v1/changes", headers=auth).status_code == 200
        assert client.get("/healthz").status_code == 200
        locker.execute("ROLLBACK")
    finally:
        locker.close()
    assert client.get("/v1/messages/mk-locked", headers=auth).status_code == 404


def test_read_routes_answer_503_when_the_database_cannot_be_opened(tmp_path, make_app, auth):
    app = make_app()
    store = app.extensions["store"]
    store.close()
    store.path = tmp_path  # a directory: SQLite cannot open it as a database
    client = app.test_client()
    for path in ("/v1/messages", "/v1/messages/mk-1", "/v1/changes", "/healthz"):
        response = client.get(path, headers=auth)
        assert response.status_code == 503, (path, response.json)


def test_a_cursor_with_a_boolean_time_is_refused(client, auth):
    cursor = base64.urlsafe_b64encode(b'[true,"sms","x"]').decode().rstrip("=")
    assert client.get(f"/v1/messages?cursor={cursor}", headers=auth).status_code == 400


def test_overlong_to_and_definition_key_are_refused(client, auth):
    response = client.post("/v1/messages", headers=auth, json=[
        {"messageKey": "mk-long-to", "to": "1" * 1001}, {"messageKey": "mk-long-def", "definitionKey": "d" * 1001},
        {"messageKey": "mk-fine", "to": "1" * 1000}])
    assert response.status_code == 422
    assert [(r["index"], r["code"]) for r in response.json["rejected"]] == [(0, "invalid_to"), (1, "invalid_definition_key")]
    assert response.json["accepted"] == 1
