"""The product end to end: real web and poller processes against the fake SFMC with every fault on."""
import pytest

from tests.scenario import Scenario, summary

pytestmark = pytest.mark.timeout(240)


def test_every_message_ends_with_what_sfmc_could_tell(tmp_path):
    report = Scenario(tmp_path, messages=300, traffic_seconds=8).run(settle_timeout=60)
    print(summary(report))
    assert not report.mismatches, [vars(o) for o in report.mismatches[:10]]
    by_truth = {}
    for outcome in report.outcomes:
        by_truth.setdefault(outcome.truth, []).append(outcome)
    # Held by an inactive definition: only the poller can know, and it says queued.
    assert by_truth["queued"] and all((o.status, o.source) == ("queued", "poll") for o in by_truth["queued"])
    # ENS never says a word about these (digit 8, e-mail "silent…"): the poller fills the gap.
    lost = [o for o in report.outcomes if o.ens_events == 0 and o.truth in ("delivered", "sent")]
    assert lost and all((o.status, o.source) == ("sent", "poll") for o in lost)
    # Messages ENS settled before the grace period cost no GET at all.
    settled = [o for o in report.outcomes if o.settled_by_ens_in_time]
    assert len(settled) > 200 and sum(o.gets for o in settled) == 0
    # The faults really happened, and no acknowledged event was lost or stored twice.
    assert report.deliveries["ok"] > 0 and any(k.startswith("failed") for k in report.deliveries)
    assert report.stored_ens_events == report.distinct_acked_events
    # One GET settles a message that needed one, except those held queued, which back off.
    needed = [o for o in report.needed_a_get if o.truth != "queued"]
    assert sum(o.gets for o in needed) <= 1.2 * len(needed)
