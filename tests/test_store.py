"""The store on a real SQLite file: dedup, ordering, the change feed, tracking, concurrency, locks."""
import json
import multiprocessing
import random
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.events import parse_batch
from receiver.store import Store, StoreError
from tests.conftest import T0, batch, ens_event, stored_counts

NOW = 1735700000000  # 2025-01-01T02:53:20.000Z, after every event time below
GRACE = 300_000


@pytest.fixture
def store(db_path):
    store = Store(db_path)
    store.upgrade()
    yield store
    store.close()


def ingest(store: Store, *events, at: int = NOW, body: bytes | None = None):
    body = batch(*events) if body is None else body
    return store.ingest(body, parse_batch(body, at), at, "base64")


def lifecycle(message_key: str = "mk-0001") -> list[dict]:
    """sfmc-api.md §5.5's SMS lifecycle: sent, transient, delivered."""
    return [ens_event("SmsSent", message_key, T0),
            ens_event("SmsTransient", message_key, T0 + 1200),
            ens_event("SmsDelivered", message_key, T0 + 4900)]


# -- duplicates -----------------------------------------------------------------------------


def test_same_event_twice_in_one_batch_is_stored_once(store, db_path):
    sent = ens_event("SmsSent")
    result = ingest(store, sent, sent)
    assert (result.new_events, result.duplicates) == (1, 1)
    assert stored_counts(db_path)["events"] == 1
    assert len(store.history("sms", "mk-0001")) == 1


def test_same_event_in_two_batches_is_stored_once(store, db_path):
    sent, transient, delivered = lifecycle()
    ingest(store, sent, transient)
    result = ingest(store, transient, delivered)
    assert (result.new_events, result.duplicates) == (1, 1)
    assert stored_counts(db_path)["events"] == 3


def test_same_event_formatted_differently_is_stored_once(store, db_path):
    sent = ens_event("SmsSent")
    pretty = json.dumps([sent], indent=2).encode()
    reordered = json.dumps([dict(reversed(list(sent.items())))]).encode()
    ingest(store, body=pretty)
    assert ingest(store, body=reordered).new_events == 0
    assert stored_counts(db_path)["events"] == 1


def test_resending_the_same_bytes_adds_nothing(store, db_path):
    body = batch(*lifecycle(), 42, {"no": "type"}, ens_event("EngagementEvents.EmailOpen"))
    ingest(store, body=body)
    before = stored_counts(db_path)
    counters = store.counters()
    result = ingest(store, body=body, at=NOW + 86_400_000)
    assert result.new_events == 0
    assert stored_counts(db_path) == before
    assert before["quarantine"] == 2
    assert store.counters()["events_received"] == counters["events_received"]


def test_two_transient_receipts_at_different_times_are_both_kept(store, db_path):
    ingest(store, ens_event("SmsTransient", timestamp_utc=T0 + 1000, statusCode="3001", statusMessage="SentToCarrier"))
    ingest(store, ens_event("SmsTransient", timestamp_utc=T0 + 2000, statusCode="3001", statusMessage="SentToCarrier"))
    assert stored_counts(db_path)["events"] == 2
    message = store.message("mk-0001", "sms")
    assert (message["status"], message["status_at"]) == ("transient", T0 + 2000)


def test_same_key_on_both_channels_are_two_messages(store):
    ingest(store, ens_event("SmsSent", "shared"), ens_event("EmailBounced", "shared"))
    assert store.message("shared", "sms")["status"] == "sent"
    assert store.message("shared", "email")["status"] == "bounced"


# -- ordering -------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
def test_events_in_separate_batches_in_any_order_end_delivered(store, order):
    events = lifecycle()
    for index in order:
        ingest(store, events[index])
    message = store.message("mk-0001", "sms")
    assert (message["status"], message["status_at"], message["status_code"]) == ("delivered", T0 + 4900, "4000")
    history = store.history("sms", "mk-0001")
    assert [entry["status"] for entry in history] == [["sent", "transient", "delivered"][i] for i in order]
    applied = [bool(entry["applied"]) for entry in history]
    assert applied[order.index(2)] is True
    for position in range(order.index(2) + 1, 3):
        assert applied[position] is False  # arrived after delivered: kept, not applied


def test_late_sent_days_later_does_not_move_delivered_back(store):
    sent, _, delivered = lifecycle()
    ingest(store, delivered)
    ingest(store, sent, at=NOW + 3 * 86_400_000)
    assert store.message("mk-0001", "sms")["status"] == "delivered"


@pytest.mark.parametrize("final", ["SmsDelivered", "SmsBounced", "SmsNotSent"])
def test_late_carrier_transient_does_not_undo_a_final_status(store, final):
    ingest(store, ens_event(final, timestamp_utc=T0 + 4000))
    ingest(store, ens_event("SmsTransient", timestamp_utc=T0 + 9000, statusCode="3000", statusMessage="Enroute"))
    assert store.message("mk-0001", "sms")["status"] != "transient"


def test_equal_rank_the_later_final_wins_in_either_order(tmp_path):
    delivered = ens_event("SmsDelivered", timestamp_utc=T0 + 1000)
    bounced = ens_event("SmsBounced", timestamp_utc=T0 + 2000)
    for name, events in (("a", [delivered, bounced]), ("b", [bounced, delivered])):
        store = Store(tmp_path / f"{name}.db")
        store.upgrade()
        for event in events:
            ingest(store, event)
        assert store.message("mk-0001", "sms")["status"] == "bounced"
        store.close()


@settings(max_examples=25, deadline=None)
@given(st.permutations(lifecycle() + [ens_event("SmsTransient", timestamp_utc=T0 + 6000, statusCode="3001"),
                                      ens_event("EngagementEvents.EmailOpen", timestamp_utc=T0 + 7000)]),
       st.lists(st.integers(1, 4), min_size=5, max_size=5), st.booleans())
def test_any_order_and_batching_ends_at_the_same_status(events, cuts, resend):
    """However the events are split into batches, re-ordered or resent, the end state is the same."""
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "ens.db")
        store.upgrade()
        position, batches = 0, []
        for size in cuts:
            if position < len(events):
                batches.append(events[position:position + size])
                position += size
        for number, chunk in enumerate(batches):
            ingest(store, *chunk, at=NOW + number)
            if resend:
                ingest(store, *reversed(chunk), at=NOW + 100 + number)
        message = store.message("mk-0001", "sms")
        assert (message["status"], message["status_at"]) == ("delivered", T0 + 4900)
        assert stored_counts(Path(directory) / "ens.db")["events"] == 5
        store.close()


# -- unknown types and the change feed ------------------------------------------------------


def test_unknown_event_types_are_stored_and_counted_without_a_status_change(store, db_path):
    ingest(store, ens_event("SmsSent"))
    result = ingest(store, ens_event("EngagementEvents.EmailOpen"),
                    ens_event("TransactionalSendEvents.SmsSomethingNew", "mk-0001", T0 + 9000),
                    ens_event("TransactionalSendEvents.SmsSomethingNew", "mk-never-sent", T0 + 9000))
    assert (result.unknown, result.changes) == (3, 0)
    assert store.counters()["events_unknown"] == 3
    assert stored_counts(db_path)["events"] == 4
    assert store.message("mk-0001", "sms")["status"] == "sent"
    assert store.message("mk-never-sent") is None
    newest = store.history("sms", "mk-0001")[-1]
    assert (newest["event_category_type"], newest["applied"]) == ("TransactionalSendEvents.SmsSomethingNew", 0)


def test_change_feed_has_one_row_per_status_move_in_commit_order(store):
    sent, transient, delivered = lifecycle()
    ingest(store, sent)
    ingest(store, ens_event("SmsSent", "mk-0002", T0 + 50))
    ingest(store, delivered)
    ingest(store, transient)  # late: no change
    ingest(store, sent)  # duplicate: no change
    rows = store.changes(0, 100)
    assert [(row["message_key"], row["status"], row["status_at"]) for row in rows] == [
        ("mk-0001", "sent", T0), ("mk-0002", "sent", T0 + 50), ("mk-0001", "delivered", T0 + 4900)]
    seqs = [row["seq"] for row in rows]
    assert seqs == sorted(set(seqs))
    assert store.changes(seqs[0], 100) == rows[1:]
    assert store.changes(seqs[-1], 100) == []


def test_a_batch_with_the_whole_lifecycle_ends_the_feed_at_delivered(store):
    ingest(store, *reversed(lifecycle()))
    rows = store.changes(0, 100)
    assert rows and (rows[-1]["status"], rows[-1]["status_at"]) == ("delivered", T0 + 4900)


# -- tracking -------------------------------------------------------------------------------


def test_tracking_again_keeps_tracked_at(store):
    store.track([{"channel": "sms", "message_key": "mk-t"}], NOW, GRACE)
    store.track([{"channel": "sms", "message_key": "mk-t", "sent_at": NOW - 10}], NOW + 5000, GRACE)
    message = store.message("mk-t", "sms")
    assert (message["tracked_at"], message["sent_at"], message["poll_state"]) == (NOW, NOW, "waiting")
    assert message["next_poll_at"] == NOW + GRACE
    assert message["status"] is None


def test_tracked_message_then_ens_event_is_done_and_keeps_tracked_at(store):
    store.track([{"channel": "sms", "message_key": "mk-0001"}], NOW, GRACE)
    ingest(store, ens_event("SmsSent"), at=NOW + 1000)
    message = store.message("mk-0001", "sms")
    assert (message["status"], message["tracked_at"], message["poll_state"]) == ("sent", NOW, "done")


def test_tracking_a_key_first_seen_through_ens_changes_no_status(store):
    ingest(store, ens_event("SmsDelivered"))
    store.track([{"channel": "sms", "message_key": "mk-0001"}], NOW + 1000, GRACE)
    message = store.message("mk-0001", "sms")
    assert (message["status"], message["poll_state"], message["tracked_at"]) == ("delivered", "done", NOW + 1000)


# -- a locked database ----------------------------------------------------------------------


def test_locked_database_raises_store_error_and_applies_nothing(db_path):
    store = Store(db_path, busy_timeout=0.2)
    store.upgrade()
    before = stored_counts(db_path)
    locker = sqlite3.connect(db_path, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError):
            ingest(store, *lifecycle())
        with pytest.raises(StoreError):
            store.track([{"channel": "sms", "message_key": "mk-t"}], NOW, GRACE)
        locker.execute("ROLLBACK")
        assert stored_counts(db_path) == before
        assert ingest(store, *lifecycle()).new_events == 3  # the resend goes through
        assert store.message("mk-0001", "sms")["status"] == "delivered"
    finally:
        locker.close()
        store.close()


# -- concurrency ----------------------------------------------------------------------------

MESSAGES = 40


def _all_events() -> list[dict]:
    """Four message families: delivered, bounced, not sent, and left at transient."""
    events = []
    for number in range(MESSAGES):
        key, base = f"mk-{number:04d}", T0 + number * 10_000
        events.append(ens_event("SmsSent", key, base))
        if number % 4 == 2:
            events.append(ens_event("SmsNotSent", key, base + 900))
            continue
        events.append(ens_event("SmsTransient", key, base + 1200))
        if number % 4 == 0:
            events.append(ens_event("SmsDelivered", key, base + 4900))
        elif number % 4 == 1:
            events.append(ens_event("SmsBounced", key, base + 4900))
    return events


EXPECTED_STATUS = {f"mk-{n:04d}": ["delivered", "bounced", "not_sent", "transient"][n % 4] for n in range(MESSAGES)}


def _overlapping_batches(seed: int) -> list[bytes]:
    """Every event, most of them more than once, in shuffled batches of up to 15."""
    rng = random.Random(seed)
    events = _all_events()
    picked = events + rng.sample(events, len(events) // 2)
    rng.shuffle(picked)
    return [batch(*picked[start:start + 15]) for start in range(0, len(picked), 15)]


def _ingest_all(db_path: str, seed: int) -> int:
    """Start like a web worker (upgrade, on a fresh file) and ingest this writer's batches."""
    store = Store(db_path)
    store.upgrade()
    new = 0
    for number, body in enumerate(_overlapping_batches(seed)):
        new += store.ingest(body, parse_batch(body, NOW + number), NOW + number, "base64").new_events
    store.close()
    return new


def _in_processes(function, argument_lists: list[tuple]) -> list:
    """Run `function` once per argument tuple, each in its own forked process, all released at once."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(len(argument_lists)), context.Queue()

    def run(*arguments):
        barrier.wait()
        try:
            results.put(("ok", function(*arguments)))
        except BaseException as error:
            results.put(("error", repr(error)))

    processes = [context.Process(target=run, args=arguments) for arguments in argument_lists]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(10)
    assert [outcome for outcome in outcomes if outcome[0] != "ok"] == []
    return [value for _, value in outcomes]


def _check_final_state(db_path: Path, new_total: int) -> None:
    distinct = len(_all_events())
    assert new_total == distinct  # each event was new for exactly one writer
    assert stored_counts(db_path)["events"] == distinct
    store = Store(db_path)
    for key, expected in EXPECTED_STATUS.items():
        assert store.message(key, "sms")["status"] == expected, key
    changes = store.changes(0, 1000)
    assert len({row["seq"] for row in changes}) == len(changes)
    final = {}
    for row in changes:
        final[row["message_key"]] = row["status"]
    assert final == EXPECTED_STATUS
    store.close()


def test_concurrent_threads_ingesting_overlapping_batches(db_path):
    results, errors = [], []

    def writer(seed):
        try:
            results.append(_ingest_all(str(db_path), seed))
        except Exception as error:  # reported below with the thread's seed
            errors.append((seed, repr(error)))

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    _check_final_state(db_path, sum(results))


def test_concurrent_processes_ingesting_overlapping_batches(db_path):
    results = _in_processes(_ingest_all, [(str(db_path), seed) for seed in range(100, 104)])
    _check_final_state(db_path, sum(results))


def test_upgrade_of_a_fresh_file_waits_for_another_writer_then_gives_up(tmp_path):
    """Switching a fresh file to WAL while another process writes must wait, not fail at once."""
    path = tmp_path / "fresh.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE elsewhere (x)")
    other.execute("BEGIN IMMEDIATE")  # held for the whole test: upgrade can only wait, then give up
    store = Store(path, busy_timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(StoreError):
            store.upgrade()
        assert time.monotonic() - started >= 0.4  # it waited for the busy timeout
    finally:
        other.close()
        store.close()


def test_upgrade_of_a_fresh_file_goes_through_once_the_writer_commits(tmp_path):
    path = tmp_path / "fresh.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE elsewhere (x)")
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, other.execute, args=("COMMIT",))
    release.start()
    store = Store(path, busy_timeout=2.0)
    try:
        store.upgrade()
        assert store.schema_version() >= 1
    finally:
        release.join()
        other.close()
        store.close()


def _upgrade(db_path: str) -> int:
    store = Store(db_path)
    store.upgrade()
    version = store.schema_version()
    store.close()
    return version


def test_concurrent_upgrades_of_a_fresh_file_all_succeed(tmp_path):
    db_path = str(tmp_path / "fresh" / "ens.db")
    versions = _in_processes(_upgrade, [(db_path,)] * 6)
    assert len(set(versions)) == 1 and versions[0] >= 1


def test_a_new_database_file_is_readable_by_its_owner_only(tmp_path):
    store = Store(tmp_path / "private" / "ens.db")
    store.upgrade()
    assert (store.path.stat().st_mode & 0o777) == 0o600
