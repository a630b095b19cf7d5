"""ENS signatures (sfmc-api.md §6): the §6.3 vectors literally, both key encodings, rotation."""
import base64
import hashlib
import hmac

import pytest

from receiver import signature
from tests.conftest import SIGNATURE_KEY, VECTOR_BASE64_MODE, VECTOR_BODY, VECTOR_TEXT_MODE, sign

VECTOR_KEY = SIGNATURE_KEY  # the §6.3 key

# A second and third key for rotation: base64 of 0x21…0x40 and of 0x41…0x60.
NEW_KEY = base64.b64encode(bytes(range(0x21, 0x41))).decode()
FOREIGN_KEY = base64.b64encode(bytes(range(0x41, 0x61))).decode()


def verify(header, keys=(VECTOR_KEY,), encoding="auto", body=VECTOR_BODY):
    return signature.verify(body, header, signature.candidates(tuple(keys), encoding))


def test_vector_body_is_as_documented():
    assert len(VECTOR_BODY) == 273
    assert base64.b64decode(VECTOR_KEY) == bytes(range(1, 33))


def test_test_helper_reproduces_the_vectors():
    assert sign(VECTOR_BODY, VECTOR_KEY, "base64") == VECTOR_BASE64_MODE
    assert sign(VECTOR_BODY, VECTOR_KEY, "text") == VECTOR_TEXT_MODE


def test_base64_mode_accepts_only_the_decoded_key_signature():
    match = verify(VECTOR_BASE64_MODE, encoding="base64")
    assert (match.encoding, match.key_index) == ("base64", 0)
    assert verify(VECTOR_TEXT_MODE, encoding="base64") is None


def test_text_mode_accepts_only_the_utf8_key_signature():
    match = verify(VECTOR_TEXT_MODE, encoding="text")
    assert (match.encoding, match.key_index) == ("text", 0)
    assert verify(VECTOR_BASE64_MODE, encoding="text") is None


def test_auto_accepts_both_and_reports_which_matched():
    assert verify(VECTOR_BASE64_MODE, encoding="auto").encoding == "base64"
    assert verify(VECTOR_TEXT_MODE, encoding="auto").encoding == "text"


def test_rejects_tampered_body():
    tampered = VECTOR_BODY.replace(b"Delivered", b"DelivereD")
    assert verify(VECTOR_BASE64_MODE, body=tampered) is None
    assert verify(VECTOR_TEXT_MODE, body=tampered) is None
    assert verify(VECTOR_BASE64_MODE, body=VECTOR_BODY + b"\n") is None


def test_rotation_accepts_every_configured_key_and_says_which():
    keys = (VECTOR_KEY, NEW_KEY)
    assert verify(VECTOR_BASE64_MODE, keys).key_index == 0
    new_match = verify(sign(VECTOR_BODY, NEW_KEY), keys)
    assert (new_match.key_index, new_match.encoding) == (1, "base64")
    assert verify(sign(VECTOR_BODY, NEW_KEY, "text"), keys).key_index == 1
    assert verify(sign(VECTOR_BODY, FOREIGN_KEY), keys) is None
    assert verify(sign(VECTOR_BODY, FOREIGN_KEY, "text"), keys) is None


def test_old_key_is_refused_once_rotated_out():
    assert verify(VECTOR_BASE64_MODE, keys=(NEW_KEY,)) is None


@pytest.mark.parametrize("header", [
    None,
    "",
    "   ",
    "not base64!!",
    VECTOR_BASE64_MODE.rstrip("="),                      # padding dropped
    VECTOR_BASE64_MODE.replace("+", "-").replace("/", "_"),  # URL-safe alphabet
    hmac.new(bytes(range(1, 33)), VECTOR_BODY, hashlib.sha256).hexdigest(),  # hex, not base64
    base64.b64encode(bytes(31)).decode(),                # wrong length
    base64.b64encode(bytes(33)).decode(),
    base64.b64encode(base64.b64decode(VECTOR_BASE64_MODE) + b"\0").decode(),  # right MAC, extra byte
    base64.b64encode(base64.b64decode(VECTOR_BASE64_MODE)[:16]).decode(),  # truncated MAC
    "\u00e9" * 44,
])
def test_malformed_headers_are_refused(header):
    assert verify(header) is None


def test_no_keys_means_nothing_verifies():
    assert signature.candidates((), "auto") == ()
    assert signature.verify(VECTOR_BODY, VECTOR_BASE64_MODE, ()) is None


@pytest.mark.parametrize("key", ["my ENS secret!", "abc", "ünïcødé-kéy", "QUJD=="])
def test_text_keys_that_are_not_valid_base64_work_in_auto_and_text_mode(key):
    header = sign(VECTOR_BODY, key, "text")
    assert verify(header, keys=(key,), encoding="auto").encoding == "text"
    assert verify(header, keys=(key,), encoding="text").encoding == "text"


def test_base64_mode_with_a_key_that_is_not_base64_accepts_nothing():
    key = "my ENS secret!"
    assert verify(sign(VECTOR_BODY, key, "text"), keys=(key,), encoding="base64") is None


def test_an_undecodable_key_does_not_hide_the_next_one():
    keys = ("my ENS secret!", VECTOR_KEY)
    match = verify(VECTOR_BASE64_MODE, keys=keys, encoding="base64")
    assert (match.key_index, match.encoding) == (1, "base64")
