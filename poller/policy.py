"""When to ask SFMC about a message again, and when to stop asking. Pure code.

The status GET is rate-limited and meant for spot checks, so every rule here bounds how many
GETs one message can cost:
- a message still `queued` waits as long again as it has been queued (doubling, capped), so an
  inactive send definition costs about a dozen GETs over the 72-hour window; messages queued
  behind the same definition share those GETs (the poller defers the others, see cycle.py);
- a key SFMC does not know (yet) is asked again after 2, 8 and 20 minutes, then given up.
"""
from __future__ import annotations

from dataclasses import dataclass

from receiver import status as model

NOT_FOUND_RETRY_DELAYS_MS = (120_000, 480_000, 1_200_000)
QUEUED_MAX_DELAY_MS = 12 * 3600 * 1000
BACKOFF_BASE_MS = 5_000
BACKOFF_MAX_MS = 300_000
RETRY_AFTER_MAX_MS = 3600 * 1000
AUTH_PAUSE_MS = 20 * 60 * 1000  # SFMC asks for at most one token request per 20 minutes


@dataclass(frozen=True)
class Plan:
    """The poll state proposed after an answer; `done` is the store's call, never proposed here."""

    state: str
    reason: str | None
    next_poll_at: int | None
    missed: bool


def after_miss(misses_before: int, now: int) -> Plan:
    """SFMC did not find this send (404, or an answer about an earlier send of the key)."""
    misses = misses_before + 1
    if misses > len(NOT_FOUND_RETRY_DELAYS_MS):
        return Plan("gave_up", "not_found", None, True)
    return Plan("waiting", None, now + NOT_FOUND_RETRY_DELAYS_MS[misses - 1], True)


def after_answer(observation: model.Observation, sent_at: int | None, misses_before: int, now: int,
                 stale_ms: int) -> Plan:
    """SFMC answered queued, sent or not sent."""
    if not model.about_this_send(observation.status_at, sent_at):
        return after_miss(misses_before, now)
    if observation.status == model.QUEUED:
        queued_for = now - min(observation.status_at, now)
        delay = max(stale_ms, min(queued_for, QUEUED_MAX_DELAY_MS))
        return Plan("waiting", None, now + delay, False)
    return Plan("waiting", None, now + stale_ms, False)


def backoff_ms(failures: int) -> int:
    """Bounded exponential backoff after the `failures`-th failure in a row (1, 2, …)."""
    return min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** max(0, min(failures - 1, 16)))


def pause_ms(retry_after_seconds: float | None, failures: int) -> int:
    """How long every poller waits after a 429: SFMC's Retry-After when sane, else backoff."""
    if retry_after_seconds is None or not 0 < retry_after_seconds * 1000 <= RETRY_AFTER_MAX_MS:
        return backoff_ms(failures)
    return int(retry_after_seconds * 1000)
