"""Every SQL statement of ens-status, on one SQLite file.

Concurrency: WAL, a busy timeout, and every read-then-write transaction opened with
`BEGIN IMMEDIATE`, so two gunicorn workers and the poller queue up for the write lock instead of
failing half-way. Each process (and thread) opens its own connection, after fork.

Times are epoch milliseconds (UTC) throughout.
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import sqlite_utils

from . import status as model
from .events import Event, ParsedBatch, Rejected, body_fingerprint, canonical, event_fingerprint, message_prefix

SCHEMA = [
    # 1: the initial schema
    """
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        body_sha BLOB NOT NULL UNIQUE,
        body BLOB NOT NULL,  -- the raw request body, zlib-compressed
        received_at INTEGER NOT NULL,
        key_encoding TEXT,
        items INTEGER NOT NULL
    );
    CREATE INDEX batches_received ON batches (received_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        fingerprint BLOB NOT NULL UNIQUE,
        batch_id INTEGER,
        source TEXT NOT NULL,
        channel TEXT,
        message_key TEXT,
        event_category_type TEXT NOT NULL,
        status TEXT,
        status_at INTEGER NOT NULL,
        status_code TEXT,
        status_message TEXT,
        received_at INTEGER NOT NULL,
        applied INTEGER NOT NULL,
        reason TEXT,
        position INTEGER,
        raw TEXT
    );
    CREATE INDEX events_received ON events (received_at);
    CREATE TABLE messages (
        channel TEXT NOT NULL,
        message_key TEXT NOT NULL,
        status TEXT,
        status_at INTEGER,
        status_code TEXT,
        status_message TEXT,
        event_category_type TEXT,
        source TEXT,
        recipient TEXT,
        subscriber_key TEXT,
        definition_key TEXT,
        tracked_at INTEGER,
        sent_at INTEGER,
        updated_at INTEGER NOT NULL,
        poll_state TEXT NOT NULL,
        poll_reason TEXT,
        poll_attempts INTEGER NOT NULL DEFAULT 0,
        poll_misses INTEGER NOT NULL DEFAULT 0,
        last_polled_at INTEGER,
        next_poll_at INTEGER,
        PRIMARY KEY (channel, message_key)
    ) WITHOUT ROWID;
    CREATE INDEX messages_updated ON messages (updated_at, channel, message_key);
    CREATE INDEX messages_waiting ON messages (next_poll_at) WHERE poll_state = 'waiting';
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        message_key TEXT NOT NULL,
        status TEXT NOT NULL,
        status_at INTEGER NOT NULL,
        source TEXT NOT NULL,
        changed_at INTEGER NOT NULL
    );
    CREATE INDEX changes_changed ON changes (changed_at);
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        fingerprint BLOB NOT NULL UNIQUE,
        batch_id INTEGER,
        position INTEGER,
        reason TEXT NOT NULL,
        raw BLOB NOT NULL,
        received_at INTEGER NOT NULL
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE probes (
        callback_id TEXT PRIMARY KEY,
        verification_key TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        claimed_at INTEGER,
        outcome TEXT,
        finished_at INTEGER
    );
    CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL);
    CREATE TABLE poll_requests (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
    CREATE TABLE poller_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    """,
]

MESSAGE_COLUMNS = (
    "channel, message_key, status, status_at, status_code, status_message, event_category_type, source, "
    "recipient, subscriber_key, definition_key, tracked_at, sent_at, updated_at, poll_state, poll_reason, "
    "poll_attempts, poll_misses, last_polled_at, next_poll_at"
)


_MESSAGE_FIELDS = tuple(name.strip() for name in MESSAGE_COLUMNS.split(","))


class StoreError(Exception):
    """The database could not take a write in time (locked, full): nothing was applied."""


@dataclass
class IngestResult:
    events: int = 0
    new_events: int = 0
    duplicates: int = 0
    unknown: int = 0
    quarantined: int = 0
    changes: int = 0
    duplicate_body: bool = False


@dataclass
class _Decision:
    """What applying one observation did, for its history row."""

    applied: bool
    reason: str | None


@dataclass
class _MessageState:
    row: dict
    changed: bool = False


class Store:
    def __init__(self, path: str | Path, *, busy_timeout: float = 2.0, synchronous: str = "FULL"):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self._local = threading.local()

    # -- connections and transactions --------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection in this process (a fork never reuses its parent's)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                # Message keys, recipients and raw batches: readable by the owner only.
                self.path.touch(mode=0o600, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = OFF")
            lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._local.conn, self._local.lock, self._local.pid = conn, lock, os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
            os.close(self._local.lock)
        self._local.conn = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction: all of it commits, or none of it does.

        Writers first queue on a file lock beside the database. SQLite's own busy handler makes a
        waiting writer sleep in steps of up to 100 ms, so the write lock would sit idle after each
        commit and a third writer could starve until the busy timeout (measured in bench/); the
        file lock is retried every millisecond instead.
        """
        conn = self.connection()
        self._queue_for_write_lock()
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                raise StoreError(f"database busy: {error}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(error, sqlite3.OperationalError):
                    raise StoreError(f"database write failed: {error}") from None
                raise
        finally:
            fcntl.flock(self._local.lock, fcntl.LOCK_UN)

    def _queue_for_write_lock(self) -> None:
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                fcntl.flock(self._local.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreError(f"database busy: no write turn within {self.busy_timeout:g} s") from None
                time.sleep(0.001)

    def upgrade(self) -> int:
        """Create or migrate the schema; safe to run from every process at start."""
        self._enable_wal()
        with self.write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(SCHEMA[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")
        return len(SCHEMA)

    def _enable_wal(self) -> None:
        """Switch the file to WAL, waiting out other writers.

        SQLite answers a journal-mode change with "database is locked" at once, without the
        busy timeout, while another connection writes (e.g. a second process's first upgrade).
        """
        database = sqlite_utils.Database(self.connection())
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                database.enable_wal()
                return
            except sqlite3.OperationalError as error:
                if time.monotonic() >= deadline:
                    raise StoreError(f"database busy: {error}") from None
                time.sleep(0.05)

    def schema_version(self) -> int:
        return self.connection().execute("PRAGMA user_version").fetchone()[0]

    def healthy(self) -> bool:
        try:
            self.connection().execute("SELECT count(*) FROM counters").fetchone()
        except sqlite3.Error:
            return False
        return True

    # -- ENS intake --------------------------------------------------------------------------

    def ingest(self, body: bytes, batch: ParsedBatch, received_at: int, key_encoding: str | None) -> IngestResult:
        """Make a signed batch durable: raw bytes, every new event, the status changes, at once.

        The raw body is stored zlib-compressed (JSON shrinks several times), compressed before the
        write lock is taken: less to write and fsync while other writers wait.
        """
        result = IngestResult(events=len(batch.events), quarantined=len(batch.rejected))
        compressed = zlib.compress(body, 1)
        with self.write() as db:
            row = db.execute(
                "INSERT INTO batches (body_sha, body, received_at, key_encoding, items)"
                " VALUES (:sha, :body, :at, :encoding, :items) ON CONFLICT (body_sha) DO NOTHING RETURNING id",
                {"sha": body_fingerprint(body), "body": compressed, "at": received_at, "encoding": key_encoding,
                 "items": len(batch.events) + len(batch.rejected)},
            ).fetchone()
            if row is None:
                result.duplicate_body = True
                result.duplicates, result.quarantined = len(batch.events), 0
                return result
            batch_id = row[0]
            new_events = _new_events(db, batch.events)
            result.new_events = len(new_events)
            result.duplicates = len(batch.events) - len(new_events)
            result.unknown = sum(1 for event in new_events if event.observation is None)
            decisions, result.changes = _apply(db, [e.observation for e in new_events if e.observation], received_at)
            db.executemany(
                "INSERT INTO events (fingerprint, batch_id, source, channel, message_key, event_category_type, status,"
                " status_at, status_code, status_message, received_at, applied, reason, position)"
                " VALUES (?, ?, 'ens', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_event_row(event, batch_id, received_at, decisions) for event in new_events],
            )
            _quarantine(db, batch.rejected, batch_id, received_at)
            _count(db, {"events_received": result.new_events, "events_duplicate": result.duplicates,
                        "events_unknown": result.unknown, "items_quarantined": len(batch.rejected)})
        return result

    def count(self, name: str, amount: int = 1) -> None:
        with self.write() as db:
            _count(db, {name: amount})

    def counters(self) -> dict[str, int]:
        return {row["name"]: row["value"] for row in self.connection().execute("SELECT name, value FROM counters")}

    # -- verification probes -----------------------------------------------------------------

    def record_probe(self, callback_id: str, verification_key: str, received_at: int) -> None:
        """Store a probe; a newer probe for the same callback replaces the older one."""
        with self.write() as db:
            db.execute(
                "INSERT INTO probes (callback_id, verification_key, received_at, state) VALUES (?, ?, ?, 'pending')"
                " ON CONFLICT (callback_id) DO UPDATE SET verification_key = excluded.verification_key,"
                " received_at = excluded.received_at, state = 'pending', claimed_at = NULL, outcome = NULL,"
                " finished_at = NULL",
                (callback_id, verification_key, received_at),
            )

    def probe(self, callback_id: str) -> dict | None:
        row = self.connection().execute("SELECT * FROM probes WHERE callback_id = ?", (callback_id,)).fetchone()
        return dict(row) if row else None

    def claim_probe(self, now: int, callback_id: str | None = None) -> dict | None:
        """Take the newest pending probe (of `callback_id` if given) so that exactly one caller verifies it."""
        with self.write() as db:
            row = db.execute(
                "UPDATE probes SET state = 'claimed', claimed_at = :now WHERE callback_id = ("
                " SELECT callback_id FROM probes WHERE state = 'pending'"
                " AND (:callback_id IS NULL OR callback_id = :callback_id) ORDER BY received_at DESC LIMIT 1)"
                " RETURNING *",
                {"now": now, "callback_id": callback_id},
            ).fetchone()
        return dict(row) if row else None

    def finish_probe(self, callback_id: str, verified: bool, outcome: str, now: int) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE probes SET state = ?, outcome = ?, finished_at = ? WHERE callback_id = ?",
                ("verified" if verified else "failed", outcome, now, callback_id),
            )

    # -- tracking and queries ----------------------------------------------------------------

    def track(self, items: Iterable[dict], now: int, grace_ms: int) -> int:
        """Track messages (idempotent: a known key keeps its trackedAt). Returns how many were given."""
        rows = [
            {"channel": item["channel"], "message_key": item["message_key"], "recipient": item.get("to"),
             "definition_key": item.get("definition_key"), "sent_at": item.get("sent_at", now), "now": now,
             "next_poll_at": now + grace_ms}
            for item in items
        ]
        with self.write() as db:
            db.executemany(
                "INSERT INTO messages (channel, message_key, recipient, definition_key, tracked_at, sent_at,"
                " updated_at, poll_state, next_poll_at)"
                " VALUES (:channel, :message_key, :recipient, :definition_key, :now, :sent_at, :now, 'waiting',"
                " :next_poll_at)"
                " ON CONFLICT (channel, message_key) DO UPDATE SET"
                " recipient = coalesce(recipient, excluded.recipient),"
                " definition_key = coalesce(definition_key, excluded.definition_key),"
                " sent_at = CASE WHEN tracked_at IS NULL THEN min(coalesce(sent_at, excluded.sent_at), excluded.sent_at)"
                "           ELSE sent_at END,"
                " tracked_at = coalesce(tracked_at, excluded.tracked_at)",
                rows,
            )
        return len(rows)

    def message(self, message_key: str, channel: str | None = None) -> dict | None:
        """A message by key; without a channel, the more recently updated of the two."""
        channels = (channel,) if channel else model.CHANNELS
        marks = ",".join("?" * len(channels))
        row = self.connection().execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE channel IN ({marks}) AND message_key = ?"
            " ORDER BY updated_at DESC LIMIT 1",
            (*channels, message_key),
        ).fetchone()
        return dict(row) if row else None

    def history(self, channel: str, message_key: str) -> list[dict]:
        """The message's observations in arrival order, found by their shared fingerprint prefix."""
        prefix = message_prefix(channel, message_key)
        return [dict(row) for row in self.connection().execute(
            "SELECT event_category_type, status, status_at, status_code, status_message, source, received_at,"
            " applied, reason FROM events WHERE fingerprint BETWEEN :first AND :last"
            " AND message_key = :message_key AND channel = :channel ORDER BY id",
            {"first": prefix + bytes(8), "last": prefix + b"\xff" * 8, "message_key": message_key, "channel": channel},
        )]

    def messages(self, *, status: str | None = None, channel: str | None = None, definition_key: str | None = None,
                 updated_since: int | None = None, before: tuple | None = None, limit: int = 100) -> list[dict]:
        """Newest `updated_at` first; `before` is the (updated_at, channel, message_key) of the last row seen."""
        where, params = [], {}
        for column, value in (("status", status), ("channel", channel), ("definition_key", definition_key)):
            if value is not None:
                where.append(f"{column} = :{column}")
                params[column] = value
        if updated_since is not None:
            where.append("updated_at >= :updated_since")
            params["updated_since"] = updated_since
        if before is not None:
            where.append("(updated_at, channel, message_key) < (:b_at, :b_channel, :b_key)")
            params.update(b_at=before[0], b_channel=before[1], b_key=before[2])
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params["limit"] = limit
        return [dict(row) for row in self.connection().execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages {clause}"
            " ORDER BY updated_at DESC, channel DESC, message_key DESC LIMIT :limit",
            params,
        )]

    def changes(self, after: int, limit: int) -> list[dict]:
        return [dict(row) for row in self.connection().execute(
            "SELECT seq, message_key, channel, status, status_at, source FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )]

    # -- the poller's side -------------------------------------------------------------------

    def due(self, now: int, limit: int) -> list[dict]:
        """Messages waiting for a poll whose time has come, the longest-waiting first."""
        return [dict(row) for row in self.connection().execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE poll_state = 'waiting' AND next_poll_at <= ?"
            " ORDER BY next_poll_at LIMIT ?",
            (now, limit),
        )]

    def expire_window(self, sent_before: int, now: int) -> int:
        """Give up, without a GET, on waiting messages sent before the status API's window.

        A message the GET last saw queued gave up as `stuck_queued`, any other as `window_expired`.
        """
        with self.write() as db:
            return db.execute(
                "UPDATE messages SET poll_state = 'gave_up', next_poll_at = NULL, updated_at = ?,"
                " poll_reason = CASE WHEN status = 'queued' THEN 'stuck_queued' ELSE 'window_expired' END"
                " WHERE poll_state = 'waiting' AND sent_at < ?",
                (now, sent_before),
            ).rowcount

    def defer_queued(self, channel: str, definition_key: str, until: int) -> int:
        """Move the next poll of every waiting message queued behind `definition_key` to `until`.

        Messages queued behind one send definition share its fate (inactive: all stay queued), so
        one GET speaks for all of them until the definition moves.
        """
        with self.write() as db:
            return db.execute(
                "UPDATE messages SET next_poll_at = :until WHERE channel = :channel"
                " AND definition_key = :definition_key AND status = 'queued' AND poll_state = 'waiting'"
                " AND next_poll_at < :until",
                {"until": until, "channel": channel, "definition_key": definition_key},
            ).rowcount

    def record_poll(self, channel: str, message_key: str, observation: model.Observation | None, raw: str | None,
                    now: int, *, poll_state: str, poll_reason: str | None, next_poll_at: int | None,
                    missed: bool) -> bool:
        """Write one status-GET answer (None: not found) and the poll state the poller chose.

        `missed` counts the answer as one more in a row that did not find this send. Returns
        whether the observation became the message's status.

        The observation goes through the same status model as ENS events; when it leaves the
        message at `sent` or beyond, the poll state is `done` whatever the poller proposed.
        """
        applied = False
        with self.write() as db:
            if observation is not None:
                raw_text = raw if raw is not None else canonical({})
                print_ = event_fingerprint(channel, message_key, "poll", raw_text)
                if db.execute("SELECT 1 FROM events WHERE fingerprint = ?", (print_,)).fetchone() is None:
                    decisions, _ = _apply(db, [observation], now)
                    decision = decisions[id(observation)]
                    applied = decision.applied
                    db.execute(
                        "INSERT INTO events (fingerprint, batch_id, source, channel, message_key, event_category_type,"
                        " status, status_at, status_code, status_message, received_at, applied, reason, raw)"
                        " VALUES (?, NULL, 'poll', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (print_, channel, message_key, observation.event_category_type, observation.status,
                         observation.status_at, observation.status_code, observation.status_message, now,
                         int(decision.applied), decision.reason, raw_text),
                    )
            db.execute(
                "UPDATE messages SET poll_attempts = poll_attempts + 1, last_polled_at = :now,"
                " poll_misses = CASE WHEN :missed THEN poll_misses + 1 ELSE 0 END,"
                " poll_state = CASE WHEN poll_state = 'done' THEN 'done' ELSE :state END,"
                " poll_reason = CASE WHEN poll_state = 'done' THEN NULL ELSE :reason END,"
                " next_poll_at = CASE WHEN poll_state = 'done' THEN NULL ELSE :next END"
                " WHERE channel = :channel AND message_key = :key",
                {"now": now, "state": poll_state, "reason": poll_reason, "next": next_poll_at,
                 "channel": channel, "key": message_key, "missed": missed},
            )
        return applied

    def acquire_lease(self, name: str, holder: str, now: int, ttl_ms: int) -> bool:
        """Take or renew the lease `name`; True while `holder` holds it."""
        with self.write() as db:
            row = db.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, :expires)"
                " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE leases.holder = excluded.holder OR leases.expires_at <= :now RETURNING holder",
                {"name": name, "holder": holder, "expires": now + ttl_ms, "now": now},
            ).fetchone()
        return row is not None

    def release_lease(self, name: str, holder: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def take_request_slot(self, now: int, per_minute: int) -> int:
        """Spend one status-GET from the shared sliding-minute budget.

        Returns 0 when the request may go now (and records it), else how many ms to wait.
        """
        window_start = now - 60_000
        with self.write() as db:
            db.execute("DELETE FROM poll_requests WHERE at <= ?", (window_start,))
            paused_until = db.execute("SELECT value FROM poller_state WHERE name = 'paused_until'").fetchone()
            if paused_until and paused_until[0] > now:
                return paused_until[0] - now
            used, oldest = db.execute("SELECT count(*), min(at) FROM poll_requests").fetchone()
            if used >= per_minute:
                return oldest - window_start
            db.execute("INSERT INTO poll_requests (at) VALUES (?)", (now,))
            return 0

    def pause_polling(self, until: int) -> None:
        """Hold every poller process until `until` (a 429 from SFMC); never shortens a pause."""
        self.set_poller_value("paused_until", until, only_if_later=True)

    def poller_value(self, name: str) -> int | None:
        row = self.connection().execute("SELECT value FROM poller_state WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_poller_value(self, name: str, value: int, only_if_later: bool = False) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO poller_state (name, value) VALUES (:name, :value) ON CONFLICT (name) DO UPDATE SET"
                " value = excluded.value WHERE NOT :only_if_later OR excluded.value > poller_state.value",
                {"name": name, "value": value, "only_if_later": only_if_later},
            )

    # -- housekeeping ------------------------------------------------------------------------

    def prune(self, before: int, dry_run: bool = False) -> dict[str, int]:
        """Delete what is older than `before`: messages not updated since, their events, old batches."""
        queries = {
            "messages": "FROM messages WHERE updated_at < :before",
            "events": "FROM events WHERE received_at < :before",
            "batches": "FROM batches WHERE received_at < :before",
            "changes": "FROM changes WHERE changed_at < :before",
            "quarantine": "FROM quarantine WHERE received_at < :before",
        }
        with self.write() as db:
            counts = {name: db.execute(f"SELECT count(*) {where}", {"before": before}).fetchone()[0]
                      for name, where in queries.items()}
            if not dry_run:
                for where in queries.values():
                    db.execute(f"DELETE {where}", {"before": before})
        return counts

    def stats(self, now: int) -> dict:
        conn = self.connection()
        database = sqlite_utils.Database(conn)
        by_status = {row[0] or "none": row[1] for row in conn.execute(
            "SELECT status, count(*) FROM messages GROUP BY status ORDER BY status")}
        by_poll_state = {row[0]: row[1] for row in conn.execute(
            "SELECT poll_state, count(*) FROM messages GROUP BY poll_state ORDER BY poll_state")}
        next_poll_at = conn.execute("SELECT min(next_poll_at) FROM messages WHERE poll_state = 'waiting'").fetchone()[0]
        return {
            "messages": database["messages"].count,
            "events": database["events"].count,
            "by_status": by_status,
            "by_poll_state": by_poll_state,
            "quarantined": database["quarantine"].count,
            "next_poll_at": next_poll_at,
            "counters": self.counters(),
        }


def _count(db: sqlite3.Connection, amounts: dict[str, int]) -> None:
    db.executemany(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        [(name, amount) for name, amount in amounts.items() if amount],
    )


def _new_events(db: sqlite3.Connection, events: list[Event]) -> list[Event]:
    """The events not stored before, each once, in batch order."""
    seen: set[bytes] = set()
    for start in range(0, len(events), 500):
        chunk = [event.fingerprint for event in events[start:start + 500]]
        marks = ",".join("?" * len(chunk))
        seen.update(row[0] for row in db.execute(f"SELECT fingerprint FROM events WHERE fingerprint IN ({marks})", chunk))
    fresh = []
    for event in events:
        if event.fingerprint not in seen:
            seen.add(event.fingerprint)
            fresh.append(event)
    return fresh


def _event_row(event: Event, batch_id: int, received_at: int, decisions: dict) -> tuple:
    observation = event.observation
    if observation is None:
        applied, reason = False, "event type does not change a status"
    else:
        decision = decisions[id(observation)]
        applied, reason = decision.applied, decision.reason
    if observation is None and event.note:
        reason = f"{reason}; {event.note}"
    return (event.fingerprint, batch_id, event.channel, event.message_key, event.event_category_type,
            observation.status if observation else None, event.status_at,
            observation.status_code if observation else None, observation.status_message if observation else None,
            received_at, int(applied), reason, event.position)


def _quarantine(db: sqlite3.Connection, rejected: list[Rejected], batch_id: int, received_at: int) -> None:
    db.executemany(
        "INSERT INTO quarantine (fingerprint, batch_id, position, reason, raw, received_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (fingerprint) DO NOTHING",
        [(item.fingerprint, batch_id, item.position, item.reason, item.raw, received_at) for item in rejected],
    )


def _load_messages(db: sqlite3.Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """The current rows of `keys`, in one query whatever their number (the keys go in as JSON)."""
    cursor = db.cursor()
    cursor.row_factory = None  # plain tuples: building dicts from sqlite3.Row costs more than the query
    rows = cursor.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM json_each(?) AS wanted JOIN messages"
        " ON messages.channel = wanted.value ->> 0 AND messages.message_key = wanted.value ->> 1",
        (json.dumps(keys),),
    )
    return {(row[0], row[1]): dict(zip(_MESSAGE_FIELDS, row)) for row in rows}


def _apply(db: sqlite3.Connection, observations: list[model.Observation], now: int) -> tuple[dict, int]:
    """Run observations through the status model and write what changed, with one change-feed row
    per message whose status moved. Returns ({id(observation): _Decision}, number of changes)."""
    keys = list(dict.fromkeys((o.channel, o.message_key) for o in observations))
    current = _load_messages(db, keys)
    states: dict[tuple[str, str], _MessageState] = {}
    decisions = {}
    for observation in observations:
        key = (observation.channel, observation.message_key)
        state = states.get(key)
        if state is None:
            row = current.get(key) or _new_message(observation, now)
            state = states[key] = _MessageState(row=row, changed=key not in current)
        row = state.row
        if observation.source == "poll" and not model.about_this_send(observation.status_at, row["sent_at"]):
            decisions[id(observation)] = _Decision(False, "reused_key: answer predates this send")
            continue
        held = model.precedence(row["status"], row["status_at"], row["status_code"]) if row["status"] else None
        if model.outranks(observation, held):
            _take(row, observation, now)
            state.changed = True
            decisions[id(observation)] = _Decision(True, observation.time_note)
        else:
            note = f"superseded: {row['status']} holds"
            decisions[id(observation)] = _Decision(False, f"{note}; {observation.time_note}" if observation.time_note else note)
    changed = [state.row for state in states.values() if state.changed]
    db.executemany(
        f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ({', '.join('?' * len(_MESSAGE_FIELDS))})"
        " ON CONFLICT (channel, message_key) DO UPDATE SET status = excluded.status, status_at = excluded.status_at,"
        " status_code = excluded.status_code, status_message = excluded.status_message,"
        " event_category_type = excluded.event_category_type, source = excluded.source,"
        " recipient = excluded.recipient, subscriber_key = excluded.subscriber_key,"
        " definition_key = excluded.definition_key, sent_at = excluded.sent_at, updated_at = excluded.updated_at,"
        " poll_state = excluded.poll_state, poll_reason = excluded.poll_reason, next_poll_at = excluded.next_poll_at",
        [tuple(row[name] for name in _MESSAGE_FIELDS) for row in changed],
    )
    moved = [row for row in changed if row.get("_moved")]
    db.executemany(
        "INSERT INTO changes (channel, message_key, status, status_at, source, changed_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(row["channel"], row["message_key"], row["status"], row["status_at"], row["source"], row["updated_at"])
         for row in moved],
    )
    return decisions, len(moved)


def _new_message(observation: model.Observation, now: int) -> dict:
    return {
        "channel": observation.channel, "message_key": observation.message_key, "status": None, "status_at": None,
        "status_code": None, "status_message": None, "event_category_type": None, "source": None,
        "recipient": None, "subscriber_key": None, "definition_key": None, "tracked_at": None,
        "sent_at": None, "updated_at": now, "poll_state": "waiting", "poll_reason": None, "poll_attempts": 0,
        "poll_misses": 0, "last_polled_at": None, "next_poll_at": None,
    }


def _take(row: dict, observation: model.Observation, now: int) -> None:
    """Make `observation` the message's current status."""
    row.update(
        status=observation.status, status_at=observation.status_at, status_code=observation.status_code,
        status_message=observation.status_message, event_category_type=observation.event_category_type,
        source=observation.source, updated_at=now, _moved=True,
        recipient=row["recipient"] or observation.to,
        subscriber_key=row["subscriber_key"] or observation.subscriber_key,
        definition_key=row["definition_key"] or observation.definition_key,
    )
    if row["sent_at"] is None and model.RANK[observation.status] >= model.RANK[model.SENT]:
        row["sent_at"] = observation.status_at
    if model.RANK[observation.status] >= model.RANK[model.SENT]:
        row.update(poll_state="done", poll_reason=None, next_poll_at=None)
