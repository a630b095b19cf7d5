"""The pure status model (SPEC §4): names, ranks, precedence, and time parsing.

Every expected time below was worked out by hand, e.g. 2025-01-01T00:00:00Z is
55 years × 365 days + 14 leap days (1972…2024) = 20,089 days × 86,400 s = 1,735,689,600 s.
"""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver import status

JAN_1_2025 = 1735689600000  # 2025-01-01T00:00:00.000Z
HOUR = 3_600_000

# SPEC §4's table, spelled as ENS and the status GET spell it.
SPEC_TABLE = [
    ("TransactionalSendEvents.SMSQueued", "sms", "queued"),
    ("TransactionalSendEvents.EmailQueued", "email", "queued"),
    ("TransactionalSendEvents.SmsSent", "sms", "sent"),
    ("TransactionalSendEvents.SMSSent", "sms", "sent"),
    ("TransactionalSendEvents.EmailSent", "email", "sent"),
    ("TransactionalSendEvents.SmsTransient", "sms", "transient"),
    ("TransactionalSendEvents.SmsDelivered", "sms", "delivered"),
    ("TransactionalSendEvents.SmsBounced", "sms", "bounced"),
    ("TransactionalSendEvents.EmailBounced", "email", "bounced"),
    ("TransactionalSendEvents.SmsNotSent", "sms", "not_sent"),
    ("TransactionalSendEvents.SMSNotSent", "sms", "not_sent"),
    ("TransactionalSendEvents.EmailNotSent", "email", "not_sent"),
]
SPEC_RANK = {"queued": 1, "sent": 2, "transient": 3, "delivered": 4, "bounced": 4, "not_sent": 4}


def observation(status_name: str, status_at: int, status_code: str | None = None,
                channel: str = "sms", source: str = "ens") -> status.Observation:
    return status.Observation(channel=channel, message_key="mk-0001",
                              event_category_type=f"TransactionalSendEvents.{status_name}",
                              status=status_name, status_at=status_at, source=source, status_code=status_code)


# -- names and ranks ------------------------------------------------------------------------


@pytest.mark.parametrize("event_type, channel, status_name", SPEC_TABLE)
def test_every_spec_spelling_is_classified(event_type, channel, status_name):
    assert status.classify(event_type) == (channel, status_name)


@pytest.mark.parametrize("event_type, channel, status_name", SPEC_TABLE)
def test_type_names_match_case_insensitively(event_type, channel, status_name):
    assert status.classify(event_type.lower()) == (channel, status_name)
    assert status.classify(event_type.upper()) == (channel, status_name)
    assert status.classify(event_type.swapcase()) == (channel, status_name)


def test_sms_sent_spellings_meet():
    assert (status.classify("TransactionalSendEvents.SmsSent")
            == status.classify("TransactionalSendEvents.SMSSent")
            == status.classify("transactionalsendevents.smssent")
            == ("sms", "sent"))


@pytest.mark.parametrize("event_type", [
    "EngagementEvents.EmailOpen",
    "EngagementEvents.EmailClick",
    "EngagementEvents.EmailUnsubscribe",
    "SendEvents.PushSent",
    "TransactionalSendEvents.OttNotSent",
    "TransactionalSendEvents.SmsSomethingNew",
    "",
])
def test_other_types_do_not_map_to_a_status(event_type):
    assert status.classify(event_type) is None


def test_ranks_follow_the_spec_table():
    assert status.RANK == SPEC_RANK


# -- precedence -----------------------------------------------------------------------------


def test_anything_outranks_no_status():
    assert status.outranks(observation("queued", JAN_1_2025), None)


def test_late_queued_does_not_override_sent():
    sent = observation("sent", JAN_1_2025)
    late_queued = observation("queued", JAN_1_2025 + HOUR)
    assert not status.outranks(late_queued, sent.precedence)


def test_delivered_outranks_transient_even_with_an_earlier_time():
    transient = observation("transient", JAN_1_2025 + 5000, "3002")
    delivered = observation("delivered", JAN_1_2025 + 1000, "4000")
    assert status.outranks(delivered, transient.precedence)
    assert not status.outranks(transient, delivered.precedence)


@pytest.mark.parametrize("final", ["delivered", "bounced", "not_sent"])
def test_late_carrier_transient_never_overwrites_a_final_status(final):
    assert not status.outranks(observation("transient", JAN_1_2025 + HOUR, "3001"),
                               observation(final, JAN_1_2025).precedence)


def test_equal_rank_the_later_event_time_wins():
    earlier = observation("transient", JAN_1_2025 + 1000, "3000")
    later = observation("transient", JAN_1_2025 + 2000, "3002")
    assert status.outranks(later, earlier.precedence)
    assert not status.outranks(earlier, later.precedence)


def test_equal_rank_finals_the_later_event_time_wins():
    delivered = observation("delivered", JAN_1_2025 + 1000, "4000")
    bounced = observation("bounced", JAN_1_2025 + 2000, "4501")
    assert status.outranks(bounced, delivered.precedence)
    assert not status.outranks(delivered, bounced.precedence)


def test_the_same_observation_again_changes_nothing():
    delivered = observation("delivered", JAN_1_2025, "4000")
    assert not status.outranks(observation("delivered", JAN_1_2025, "4000"), delivered.precedence)


def _winner(observations):
    current = None
    for candidate in observations:
        if status.outranks(candidate, current.precedence if current else None):
            current = candidate
    return current


observations_strategy = st.lists(
    st.builds(observation,
              st.sampled_from(sorted(SPEC_RANK)),
              st.integers(JAN_1_2025, JAN_1_2025 + 3),  # few times, so that ties happen
              st.sampled_from([None, "3002", "4000", "4501", "47"])),
    min_size=1, max_size=8,
)


@given(observations_strategy, st.randoms(use_true_random=False))
def test_any_arrival_order_ends_at_the_same_winner(observations, random):
    shuffled = list(observations)
    random.shuffle(shuffled)
    first, second = _winner(observations), _winner(shuffled)
    assert (first.status, first.status_at, first.status_code) == (second.status, second.status_at, second.status_code)
    top_rank = max(SPEC_RANK[o.status] for o in observations)
    assert SPEC_RANK[first.status] == top_rank
    assert first.status_at == max(o.status_at for o in observations if SPEC_RANK[o.status] == top_rank)


@given(st.permutations([
    observation("sent", JAN_1_2025),
    observation("transient", JAN_1_2025 + 1200, "3002"),
    observation("delivered", JAN_1_2025 + 4900, "4000"),
    observation("transient", JAN_1_2025 + 6000, "3001"),
    observation("queued", JAN_1_2025 + 7000, source="poll"),
]))
def test_sms_lifecycle_in_any_order_ends_delivered(observations):
    winner = _winner(observations)
    assert (winner.status, winner.status_at) == ("delivered", JAN_1_2025 + 4900)


# -- ENS timestampUTC -----------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    (1735689600000, 1735689600000),
    (1735689604900, 1735689604900),
    (1735689600000.0, 1735689600000),
    ("1735689600000", 1735689600000),
    ("2025-01-01T00:00:00Z", 1735689600000),
    ("2025-01-01T00:00:00.250Z", 1735689600250),
    ("2025-01-01T01:00:00+01:00", 1735689600000),
    ("2024-12-31T18:00:00-06:00", 1735689600000),
])
def test_ens_time_reads_epoch_ms_digit_strings_and_iso_with_offset(value, expected):
    assert status.ens_time(value) == expected


@pytest.mark.parametrize("value", [
    None,                    # missing
    True, False,             # a bool is not a number
    "", "soon", "1e12",
    "2025-01-01T00:00:00",   # no offset: the zone is unknown
    1735689600,              # seconds, not milliseconds (1970-01-21)
    0, -1,
    10**20,                  # far beyond any real time
    [1735689600000], {"ms": 1735689600000},
    math.nan,
])
def test_ens_time_unusable_values_give_none(value):
    assert status.ens_time(value) is None


@pytest.mark.parametrize("value", [math.inf, -math.inf])  # json.loads reads 1e999 and Infinity as inf
def test_ens_time_infinity_gives_none(value):
    assert status.ens_time(value) is None


# -- status GET timestamps: US Central *Standard* time, UTC-06:00 all year -------------------


@pytest.mark.parametrize("text, expected", [
    # the worked example of sfmc-api.md §8.3
    ("2024-12-31T18:00:00", 1735689600000),
    # 1 to 7 fractional digits; anything below a millisecond is truncated
    ("2024-12-31T18:00:00.5", 1735689600500),
    ("2024-12-31T18:00:01.47", 1735689601470),
    ("2024-12-31T18:00:00.463", 1735689600463),
    ("2024-12-31T18:00:00.1234", 1735689600123),
    ("2024-12-31T18:00:00.99999", 1735689600999),
    ("2024-12-31T18:00:00.000001", 1735689600000),
    ("2024-12-31T18:00:00.1234567", 1735689600123),
    ("2024-12-31T18:10:00.003", 1735690200003),
    # July: 2025-07-04 is day 20,273 (20,089 + 181 + 3); 15:15:30 UTC adds 54,930 s. −06:00, not −05:00.
    ("2025-07-04T09:15:30.2196", 1751642130219),
    # 2025-07-01T00:00 CST = 06:00 UTC; day 20,270 × 86,400 + 21,600
    ("2025-07-01T00:00:00", 1751349600000),
    # 02:30 on the US spring-forward night exists in fixed CST: 08:30 UTC on day 20,156
    ("2025-03-09T02:30:00", 1741509000000),
    # New Year's Eve in CST is already 2026 in UTC (2026-01-01 is day 20,454)
    ("2025-12-31T23:59:59.999", 1767247199999),
])
def test_cst_time_is_fixed_utc_minus_six(text, expected):
    assert status.cst_time(text) == expected


def test_cst_example_matches_the_ens_epoch_for_the_same_moment():
    assert status.cst_time("2024-12-31T18:00:00") == status.ens_time(1735689600000)


@pytest.mark.parametrize("text", [None, 1735689600000, "", "yesterday", "2024-13-01T00:00:00",
                                  "2025-02-29T00:00:00", "2024-12-31T25:00:00", "2024-12-31"])
def test_cst_time_unusable_values_give_none(text):
    assert status.cst_time(text) is None


# -- output format --------------------------------------------------------------------------


@pytest.mark.parametrize("ms, text", [
    (1735689600000, "2025-01-01T00:00:00.000Z"),
    (1735689600001, "2025-01-01T00:00:00.001Z"),
    (1735689604900, "2025-01-01T00:00:04.900Z"),
    (1751642130219, "2025-07-04T15:15:30.219Z"),
    (946684800000, "2000-01-01T00:00:00.000Z"),
    (None, None),
])
def test_format_utc_is_iso_with_milliseconds_and_z(ms, text):
    assert status.format_utc(ms) == text


# -- reused message keys --------------------------------------------------------------------


@pytest.mark.parametrize("status_at, about_this_send", [
    (1735689600000, True),                 # at sentAt
    (1735689660000, True),                 # after it
    (1735686000000, True),                 # exactly one hour before: clock skew, still this send
    (1735685999999, False),                # more than one hour before: an earlier send of the key
    (1735689600000 - 2 * 24 * HOUR, False),  # two days before: the key's previous use
])
def test_about_this_send_has_a_one_hour_margin(status_at, about_this_send):
    assert status.about_this_send(status_at, sent_at=1735689600000) is about_this_send


def test_about_this_send_without_a_sent_at():
    assert status.about_this_send(1735689600000, None)
