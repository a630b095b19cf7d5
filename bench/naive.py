"""The naive receiver of the ingest baseline: verify, parse, then one INSERT and one commit per event.

It is what a first webhook handler looks like: no batch transaction, no status model. It writes
the product's own `events` table (schema from `Store.upgrade()`), WAL, `synchronous = FULL`, so
the only difference the benchmark sees is how the batch is committed. Run under the same gunicorn
and gunicorn.conf.py as the product: `gunicorn -c gunicorn.conf.py 'bench.naive:create_app()'`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import time

from flask import Flask, jsonify, request

from receiver.config import Settings
from receiver.store import Store

INSERT = (
    "INSERT INTO events (fingerprint, batch_id, source, channel, message_key, event_category_type, status_at,"
    " received_at, applied, raw) VALUES (?, NULL, 'ens', 'sms', ?, ?, ?, ?, 0, ?) ON CONFLICT (fingerprint) DO NOTHING"
)


def create_app() -> Flask:
    path = Settings.from_env().database_path
    Store(path).upgrade()
    key = base64.b64decode(os.environ["ENS_SIGNATURE_KEYS"].split(",")[0])
    connections: dict[int, sqlite3.Connection] = {}
    app = Flask(__name__)

    def connection() -> sqlite3.Connection:
        conn = connections.get(os.getpid())
        if conn is None:
            conn = connections[os.getpid()] = sqlite3.connect(path, timeout=30, isolation_level=None,
                                                              check_same_thread=False)
            conn.execute("PRAGMA synchronous = FULL")
        return conn

    @app.post("/ens")
    def receive():
        body = request.get_data()
        expected = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, request.headers.get("x-sfmc-ens-signature", "")):
            return jsonify({"error": "bad signature"}), 401
        conn = connection()
        received_at = int(time.time() * 1000)
        events = json.loads(body)
        for event in events:
            raw = json.dumps(event, sort_keys=True, separators=(",", ":"))
            conn.execute(INSERT, (hashlib.sha256(raw.encode()).digest()[:16], event["info"]["messageKey"],
                                  event["eventCategoryType"], event["timestampUTC"], received_at, raw))
        return jsonify({"received": len(events)})

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app
