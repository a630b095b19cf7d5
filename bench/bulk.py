"""A large database in seconds: the product's schema (`Store.upgrade()`) filled with plain SQL.

Every message is an SMS that went sent → transient → delivered, with those three events in its
history, as the receiver would have stored them. The bulk load runs with the journal off and
`synchronous = OFF` (nothing else has the file open yet), then the file is put back in WAL mode,
as the product runs it. The secondary indexes are dropped for the load and rebuilt after it
(with the product's own definitions), which is about twice as fast as updating them row by row.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from receiver.store import Store

from receiver.events import event_fingerprint

from .workload import START_MS

# Keys are sequential, which keeps the load to seconds: random ones (as real keys are) make every
# index insert land on a random page and the load take 30 s or more. So batches ingested afterwards
# land beside the bulk rows in the messages indexes rather than among them.
KEY_SQL = "printf('bulk:otp:%08d', i)"

# Each message i: sent at t, a transient receipt 1.2 s later, delivered 4.9 s after sent.
MESSAGES_SQL = f"""
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1)
INSERT INTO messages (channel, message_key, status, status_at, status_code, status_message, event_category_type,
                      source, recipient, subscriber_key, definition_key, tracked_at, sent_at, updated_at, poll_state,
                      poll_attempts, poll_misses)
SELECT 'sms', {KEY_SQL}, 'delivered', :t0 + i * 7 + 5900, '4000', 'Delivered',
       'TransactionalSendEvents.SmsDelivered', 'ens', printf('1555%07d', i % 10000000), printf('003%015X', i),
       'otp-sms', NULL, :t0 + i * 7, :t0 + i * 7 + 6000, 'done', 0, 0
FROM n
"""

EVENTS_SQL = f"""
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :count - 1),
kinds(k, type, status, offset, code, text) AS (VALUES
    (0, 'TransactionalSendEvents.SmsSent', 'sent', 0, NULL, NULL),
    (1, 'TransactionalSendEvents.SmsTransient', 'transient', 1200, '3002', 'AcceptedByCarrier'),
    (2, 'TransactionalSendEvents.SmsDelivered', 'delivered', 4900, '4000', 'Delivered'))
INSERT INTO events (fingerprint, batch_id, source, channel, message_key, event_category_type, status, status_at,
                    status_code, status_message, received_at, applied, reason, position)
SELECT event_fingerprint('sms', {KEY_SQL}, i * 3 + k), NULL, 'ens', 'sms', {KEY_SQL}, type, status,
       :t0 + i * 7 + offset, code, text, :t0 + i * 7 + offset + 1000, 1, NULL, k
FROM n CROSS JOIN kinds WHERE k < :per_message
"""


def fill(path: Path, messages: int, events_per_message: int = 3) -> dict[str, int]:
    """Create the schema at `path` and add `messages` messages with their events; returns the counts."""
    store = Store(path)
    store.upgrade()
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # The product's fingerprints (a message's prefix, then the event's), so history lookups find them.
        conn.create_function("event_fingerprint", 3, lambda channel, key, n: event_fingerprint(channel, key, "bulk", n),
                             deterministic=True)
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -512000")
        indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                               " AND tbl_name IN ('messages', 'events')").fetchall()
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        conn.execute(MESSAGES_SQL, {"count": messages, "t0": START_MS})
        conn.execute(EVENTS_SQL, {"count": messages, "t0": START_MS, "per_message": events_per_message})
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return {"messages": messages, "events": messages * events_per_message}


def message_key(number: int) -> str:
    """The key KEY_SQL gives message `number`."""
    return f"bulk:otp:{number:08d}"
