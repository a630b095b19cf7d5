"""Shared test fixtures and helpers for the receiver.

Fixtures follow Flask's tutorial (`app`, `client`); `sign` computes ENS signatures with
hmac/hashlib directly, never with the product's code; `ens_event` builds events shaped like
sfmc-api.md §5.5.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from receiver import create_app

# sfmc-api.md §6.3: the base64 of the bytes 0x01…0x20.
SIGNATURE_KEY = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="  # sfmc-api.md §6.3's test key
# sfmc-api.md §6.3, byte for byte (273 bytes, no trailing newline), and its two signatures.
VECTOR_BODY = (
    b'[{"eventCategoryType":"TransactionalSendEvents.SmsDelivered","timestampUTC":1735689600000,'
    b'"definitionKey":"otp-sms","mid":7000001,"eid":7000000,"info":{"messageKey":"mk-0001",'
    b'"subscriberKey":"contact-42","to":"15550100001","statusCode":"4000","statusMessage":"Delivered"}}]'
)
VECTOR_BASE64_MODE = "AY3+p7nMsS+V7ZCoeBb/mrl0JdsylyRrg2Mrfmo0qB8="
VECTOR_TEXT_MODE = "VECehrW4r3CHSbYVHU0CFf2mhsl5gXRpUMZsxM6Xhik="
API_TOKEN = "tok-3b1f0c5e9d2a4e7f"

# Every variable the project (and gunicorn, through the Procfile) reads.
PROJECT_VARIABLES = frozenset({
    "DATABASE_URL", "API_TOKENS", "RETENTION_DAYS", "MAX_BODY_BYTES", "PORT", "WEB_CONCURRENCY",
    "GUNICORN_CMD_ARGS",
})
PROJECT_PREFIXES = ("ENS_", "SFMC_", "POLL_", "LOG_")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """Tests never see the ambient environment (httpx's `clean_environ`)."""
    for name in list(os.environ):
        if name in PROJECT_VARIABLES or name.startswith(PROJECT_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ens-status.db"


@pytest.fixture
def make_app(db_path: Path):
    """`make_app(**variables)`: an app on the test's SQLite file; a variable given as None is unset."""
    apps = []

    def make(**variables):
        config = {"DATABASE_URL": f"sqlite:///{db_path}", "ENS_SIGNATURE_KEYS": SIGNATURE_KEY,
                  "API_TOKENS": API_TOKEN, "LOG_FORMAT": "text"}
        config.update(variables)
        root = logging.getLogger()
        pytest_handlers = [handler for handler in root.handlers if type(handler).__module__.startswith("_pytest")]
        app = create_app({name: value for name, value in config.items() if value is not None})
        # create_app routes logging through its own handler; keep caplog's capture working.
        for handler in pytest_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["store"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def no_errors_logged(caplog, request):
    """Fails the test if anything was logged at ERROR or above, or any traceback at all.

    Tests marked xfail (a known bug that may well log an error) are not checked.
    """
    caplog.set_level(logging.INFO)
    yield caplog
    if request.node.get_closest_marker("xfail"):
        return
    bad = [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]
    assert not bad, [record.getMessage() for record in bad]
    assert "Traceback" not in caplog.text


# -- signing ----------------------------------------------------------------------------------


def sign(body: bytes, key: str, encoding: str = "base64") -> str:
    """base64(HMAC-SHA256(key, body)); the key is base64-decoded or taken as UTF-8 text."""
    key_bytes = base64.b64decode(key) if encoding == "base64" else key.encode("utf-8")
    return base64.b64encode(hmac.new(key_bytes, body, hashlib.sha256).digest()).decode("ascii")


def signed_headers(body: bytes, key: str = SIGNATURE_KEY, encoding: str = "base64") -> dict[str, str]:
    return {"Content-Type": "application/json", "x-sfmc-ens-signature": sign(body, key, encoding)}


def post_ens(client, body: bytes, key: str = SIGNATURE_KEY, encoding: str = "base64", path: str = "/ens"):
    """POST a signed body through Flask's test client."""
    return client.post(path, data=body, headers=signed_headers(body, key, encoding))


# -- real-shaped ENS events (sfmc-api.md §5.5) ------------------------------------------------

T0 = 1735689600000  # 2025-01-01T00:00:00.000Z

_SMS_RECEIPTS = {
    "SmsTransient": ("3002", "AcceptedByCarrier"),
    "SmsDelivered": ("4000", "Delivered"),
    "SmsBounced": ("4501", "Expired"),
}


def ens_event(event_type: str = "SmsSent", message_key: str = "mk-0001", timestamp_utc: object = T0,
              **info) -> dict:
    """One ENS event as SFMC sends it. `event_type` is short (`SmsSent`) or full; `info` fields
    override the defaults, and an `info` field given as None is left out."""
    full_type = event_type if "." in event_type else f"TransactionalSendEvents.{event_type}"
    short = full_type.rsplit(".", 1)[1]
    event: dict = {"eventCategoryType": full_type, "timestampUTC": timestamp_utc}
    if short.startswith("Sms"):
        mobile = "15550100001"
        event["compositeId"] = ("api.4cf7a9f3-580a-41b8-9108-9ff0d70801ee.e194ba5e-fdab-4b9a-b9a8-e0931a00224c"
                                f".101.{mobile}.0")
        details = {"to": mobile, "subscriberKey": "contact-42", "messageKey": message_key}
        if short in _SMS_RECEIPTS:
            event["composite"] = {"Tsid": "api.4cf7a9f3-580a-41b8-9108-9ff0d70801ee",
                                  "jobId": "e194ba5e-fdab-4b9a-b9a8-e0931a00224c", "batchId": "101",
                                  "mobileNumber": mobile, "subscriberId": "0"}
            code, message = _SMS_RECEIPTS[short]
            details.update(ordinal="0", statusCode=code, statusMessage=message, fromAddress="55512",
                           countryCode="US")
        elif short == "SmsNotSent":
            event["definitionId"] = "e194ba5e-fdab-4b9a-b9a8-e0931a00224c"
            details.update(statusCode="47", reason="Mobile number is not subscribed to the short code")
        event["definitionKey"] = "otp-sms"
    else:
        event["compositeId"] = "ec7dc186-b9e1-4084-ab5e-79a98274b9d3.3100200.55001.7001.900000101"
        event["composite"] = {"jobId": "3100200", "batchId": "7001", "listId": "55001",
                              "subscriberId": "900000101", "emailId": "420001"}
        event["definitionKey"] = "receipt-email"
        event["definitionId"] = "ec7dc186-b9e1-4084-ab5e-79a98274b9d3"
        details = {"to": "ada@example.net", "subscriberKey": "contact-42", "messageKey": message_key}
        if short == "EmailSent":
            event["sendClassificationType"] = "Operational"
            details.update(status="Sent", renderedSubject="Your receipt #1001")
        elif short == "EmailNotSent":
            details.update(reason="Subscriber status is held", statusCode="2", statusMessage="Held")
        elif short == "EmailBounced":
            details.update(bounceCode="HARD", bounceMessage="550 5.1.1 recipient address rejected",
                           smtpReason="5.1.1")
        elif full_type.startswith("EngagementEvents."):
            event.update(definitionKey="NA", definitionId="NA", channel="email")
            details = {"ipAddress": "198.51.100.7", "userAgent": "Mozilla/5.0", "location": {}}
    event["mid"], event["eid"] = 7000001, 7000000
    details.update(info)
    event["info"] = {name: value for name, value in details.items() if value is not None}
    return event


def batch(*events: object) -> bytes:
    """A compact JSON array, as ENS would send it."""
    return json.dumps(list(events), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- looking inside the database file ---------------------------------------------------------


def query(db_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the database directly (a separate connection), for facts the API does not expose."""
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(sql, params).fetchall()


def stored_counts(db_path: Path) -> dict[str, int]:
    return {table: query(db_path, f"SELECT count(*) FROM {table}")[0][0]
            for table in ("batches", "events", "messages", "changes", "quarantine")}
