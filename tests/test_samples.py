"""The sample batches in docs/samples, posted with the signatures written in docs/samples/README.md."""
from pathlib import Path

import pytest

from receiver import create_app

SAMPLES = Path(__file__).resolve().parent.parent / "docs" / "samples"
TEST_KEY = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
SIGNATURES = {  # (text mode, base64 mode), from `openssl dgst -sha256 -hmac`
    "sms-lifecycle.json": ("RUsDxKFdpYwXgug3OwGwMZCYMn1JHxSzRNit7kd9GLA=", "xvwG4ptLs83qnSXP13rcwPwy3zMBWTLcVxbzGF8FAek="),
    "sms-not-sent-and-bounced.json": ("jX7jwAt+E6mNTJUkbCR5t5SsWmm8tdMGt4LjlSxv15k=",
                                      "QeW2y0sdOVFgYS5wc/KgNodux+jysK7N+PSjVXCvlxg="),
    "email-events.json": ("d1JEHbkZiAu5EYcnssHn01K5JjCa1EbjtlcZr3lTLb4=", "GJkmEpH+BlhWx9jdCD2YXtc5h1y5dLnnYyNKM4E3S4w="),
}
EXPECTED = [  # (channel, key, status, statusAt in UTC worked out from timestampUTC by hand)
    ("sms", "mk-0001", "delivered", "2025-01-01T00:00:04.900Z"),
    ("sms", "mk-0002", "not_sent", "2025-01-01T00:10:00.000Z"),
    ("sms", "mk-0003", "bounced", "2025-01-01T01:10:00.000Z"),
    ("email", "mk-e-0001", "sent", "2025-01-01T02:53:20.000Z"),
    ("email", "mk-e-0002", "not_sent", "2025-01-01T02:53:25.000Z"),
    ("email", "mk-e-0003", "bounced", "2025-01-01T02:54:20.000Z"),
]


@pytest.mark.parametrize("mode", ["text", "base64"])
def test_samples_post_and_read_back(tmp_path, mode):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/ens.db", "ENS_SIGNATURE_KEYS": TEST_KEY,
                      "ENS_KEY_ENCODING": mode, "API_TOKENS": "t0ken"})
    client = app.test_client()
    for name, signatures in SIGNATURES.items():
        signature = signatures[0 if mode == "text" else 1]
        response = client.post("/ens", data=(SAMPLES / name).read_bytes(), headers={"x-sfmc-ens-signature": signature})
        assert response.status_code == 200, response.json
    for channel, key, status, status_at in EXPECTED:
        message = client.get(f"/v1/messages/{key}", headers={"Authorization": "Bearer t0ken"}).json
        assert (message["channel"], message["status"], message["statusAt"]) == (channel, status, status_at)
    counters = client.application.extensions["store"].counters()
    assert counters["events_unknown"] == 1
