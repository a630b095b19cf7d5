"""Ingest throughput and ack latency, with both baselines run on the same disk in the same run.

- product: the real gunicorn (Procfile `web:`), signed 1,000-event batches from concurrent senders;
- (a) plain: `sqlite3` `executemany` of the very rows the product stores for each batch (its
  `events` rows and its `batches` row with the raw body as the product stores it, captured from an
  in-process ingest of the same batches) into a fresh database of the product's schema, one transaction per batch, WAL
  and the same `synchronous` as the product. Run before and after the product; the mean counts;
- (b) naive: `bench/naive.py` under the same gunicorn: one INSERT and one commit per event.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from receiver.events import parse_batch
from receiver.store import Store

from . import servers
from .report import Row, percentile, ratio
from .senders import SendResult, post_batches
from .workload import API_TOKEN, SIGNATURE_KEY, START_MS, Batch, sms_batches

ENS_WINDOW_S = 3.0
WEB_ENV = {"ENS_SIGNATURE_KEYS": SIGNATURE_KEY, "API_TOKENS": API_TOKEN}


@dataclass
class Captured:
    """What the product stored for each batch: its `batches` row and its `events` rows."""

    batch_columns: list[str]
    event_columns: list[str]
    batches: list[tuple] = field(default_factory=list)
    events: list[list[tuple]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # the raw request bodies, as received


@dataclass
class ProductRun:
    result: SendResult
    stored_events: int
    memory_kib: int | None  # the largest worker VmHWM after the warm-up
    cpu_seconds: float  # the workers' CPU time during the timed run
    process_cpu_seconds: float  # this process's (the senders') CPU time during the timed run


@dataclass
class Figures:
    senders: int
    workers: int
    body_mib: float
    run: ProductRun
    plain: list[float]
    naive: SendResult | None
    in_process: float
    commit_ms: float
    worker_class: str = "sync"

    @property
    def product(self) -> SendResult:
        return self.run.result

    @property
    def memory_10k_kib(self) -> int | None:
        return self.run.memory_kib


def in_process(path: Path, batches: list[Batch], synchronous: str = "FULL") -> tuple[float, Store]:
    """events/s of `parse_batch` + `Store.ingest` in this one process (no HTTP, no signature)."""
    store = Store(path, synchronous=synchronous)
    store.upgrade()
    began = time.perf_counter()
    for number, batch in enumerate(batches):
        received_at = START_MS + number
        store.ingest(batch.body, parse_batch(batch.body, received_at), received_at, "base64")
    elapsed = time.perf_counter() - began
    return sum(b.events for b in batches) / elapsed, store


def capture(store: Store, batches: list[Batch]) -> Captured:
    """The rows `in_process(…, batches)` stored, batch by batch."""
    conn = store.connection()
    columns = {table: [row[1] for row in conn.execute(f"PRAGMA table_info({table})") if row[1] != "id"]
               for table in ("batches", "events")}
    captured = Captured(columns["batches"], columns["events"])
    for batch_id, *values in conn.execute(f"SELECT id, {', '.join(columns['batches'])} FROM batches ORDER BY id").fetchall():
        captured.batches.append(tuple(values))
        captured.events.append([tuple(row) for row in conn.execute(
            f"SELECT {', '.join(columns['events'])} FROM events WHERE batch_id = ? ORDER BY id", (batch_id,))])
    captured.bodies = [batch.body for batch in batches]
    return captured


def write_rows(path: Path, captured: Captured, synchronous: str = "FULL", method: str = "executemany",
               limit: int | None = None) -> float:
    """events/s of writing the captured rows into a fresh database of the product's schema.

    `method`: "executemany" (the baseline: the batch row, then the events rows, one transaction
    per batch), "execute per row", "multi-row VALUES", "executemany, no body" (the batch row left
    out), "executemany, uncompressed body" (the raw body as received in the batch row, where the
    product stores it compressed), or "commit per event" (the naive receiver's method:
    autocommit, no batch row).
    """
    store = Store(path)
    store.upgrade()
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    batch_columns, event_columns = captured.batch_columns, captured.event_columns
    insert_batch = f"INSERT INTO batches ({', '.join(batch_columns)}) VALUES ({', '.join('?' * len(batch_columns))})"
    row_marks = f"({', '.join('?' * len(event_columns))})"
    insert_event = f"INSERT INTO events ({', '.join(event_columns)}) VALUES {row_marks}"
    batch_at, body_at = event_columns.index("batch_id"), batch_columns.index("body")
    pairs = list(zip(captured.batches, captured.events, captured.bodies))[:limit]
    try:
        began = time.perf_counter()
        for batch_row, event_rows, raw_body in pairs:
            if method == "commit per event":
                for row in event_rows:
                    conn.execute(insert_event, row)
                continue
            conn.execute("BEGIN")
            batch_id = None
            if method != "executemany, no body":
                if method == "executemany, uncompressed body":
                    batch_row = (*batch_row[:body_at], raw_body, *batch_row[body_at + 1:])
                batch_id = conn.execute(insert_batch, batch_row).lastrowid
            event_rows = [row[:batch_at] + (batch_id,) + row[batch_at + 1:] for row in event_rows]
            if method == "execute per row":
                for row in event_rows:
                    conn.execute(insert_event, row)
            elif method == "multi-row VALUES":
                chunk = max(1, 32000 // len(event_columns))
                for start in range(0, len(event_rows), chunk):
                    part = event_rows[start:start + chunk]
                    conn.execute(f"INSERT INTO events ({', '.join(event_columns)}) VALUES "
                                 + ", ".join([row_marks] * len(part)), [value for row in part for value in row])
            else:
                conn.executemany(insert_event, event_rows)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - began
    finally:
        conn.close()
    return sum(len(rows) for _, rows, _ in pairs) / elapsed


def commit_ms(path: Path, commits: int = 300) -> float:
    """ms per one-row transaction, WAL and synchronous FULL: what this disk charges for a commit."""
    store = Store(path)
    store.upgrade()
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = FULL")
        began = time.perf_counter()
        for number in range(commits):
            conn.execute("INSERT INTO counters (name, value) VALUES (?, 1)", (f"commit-{number}",))
        return (time.perf_counter() - began) * 1000 / commits
    finally:
        conn.close()


def stored_events(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def product_run(workdir: Path, batches: list[Batch], warmup: list[Batch], *, senders: int, workers: int,
                extra_args: str = "", env: dict | None = None, time_limit: float = 60.0, name: str = "product",
                app: str = servers.PRODUCT_APP) -> ProductRun:
    """The real web process on a fresh database: `warmup` sent one by one (then the workers' peak
    RSS is read), then `batches` from `senders` concurrent senders."""
    path = workdir / f"{name}.db"
    with servers.gunicorn(path, {**WEB_ENV, **(env or {})}, app=app, workers=workers, extra_args=extra_args) as server:
        warm = post_batches(f"{server.url}/ens", warmup, senders=1, time_limit=time_limit)
        if len(warm.acknowledged) != len(warmup):
            raise RuntimeError(f"warm-up batches not acknowledged: {warm.errors[:3]}\n{server.log_tail()}")
        memory = server.worker_memory_kib()
        peak = max((m.get("VmHWM", 0) for m in memory.values()), default=None)
        cpu_before, own_before = server.workers_cpu_seconds(), time.process_time()
        result = post_batches(f"{server.url}/ens", batches, senders=senders, time_limit=time_limit)
        cpu, own = server.workers_cpu_seconds() - cpu_before, time.process_time() - own_before
    return ProductRun(result, stored_events(path), peak, cpu, own)


def naive_run(workdir: Path, batches: list[Batch], *, senders: int, workers: int, time_limit: float) -> SendResult:
    with servers.gunicorn(workdir / "naive.db", WEB_ENV, app=servers.NAIVE_APP, workers=workers) as server:
        return post_batches(f"{server.url}/ens", batches, senders=senders, time_limit=time_limit)


def measure(workdir: Path, *, batches: int = 120, naive_batches: int = 12, warmup: int = 10, senders: int = 4,
            workers: int = 2, log=print) -> Figures:
    log(f"ingest: building {batches + warmup} signed batches")
    timed = sms_batches(batches, seed=1)
    warm = sms_batches(warmup, seed=2, tenant="acme-warmup")
    log("ingest: in-process capture of the rows the product stores")
    in_process_eps, store = in_process(workdir / "capture.db", timed)
    captured = capture(store, timed)
    store.close()
    log("ingest: baseline (a) plain executemany, first run")
    plain = [write_rows(workdir / "plain-1.db", captured)]
    log(f"ingest: the product under gunicorn, {senders} senders, {workers} workers")
    run = product_run(workdir, timed, warm, senders=senders, workers=workers)
    expected = sum(b.events for b in warm) + run.result.events_acknowledged
    if run.stored_events != expected:
        raise RuntimeError(f"the product acknowledged {expected} events but stored {run.stored_events}")
    log("ingest: baseline (a) plain executemany, second run")
    plain.append(write_rows(workdir / "plain-2.db", captured))
    log("ingest: baseline (b) naive receiver")
    naive = naive_run(workdir, timed[:naive_batches], senders=senders, workers=workers, time_limit=30.0)
    return Figures(senders, workers, min(len(b.body) for b in timed) / 2 ** 20, run, plain, naive, in_process_eps,
                   commit_ms(workdir / "commit.db"))


def rows(f: Figures) -> list[Row]:
    plain = sum(f.plain) / len(f.plain)
    eps = f.product.events_per_second
    where = f"gunicorn {f.worker_class} ×{f.workers}, {f.senders} senders, {len(f.product.acknowledged)} batches"
    table = [
        Row(f"ingest events/s vs (a) plain executemany [{where}]", f"{eps:,.0f}",
            f"{plain:,.0f} (mean of {' and '.join(f'{p:,.0f}' for p in f.plain)})", ratio(eps, plain),
            "≥ 0.50×", eps >= 0.5 * plain),
    ]
    if f.naive is not None:
        naive = f.naive.events_per_second
        table.append(Row(f"ingest events/s vs (b) naive per-event commits ({len(f.naive.acknowledged)} batches)",
                         f"{eps:,.0f}", f"{naive:,.0f}", ratio(eps, naive), "≥ 20×", eps >= 20 * naive))
        table.append(Row(f"(a) plain executemany vs (b) naive: the best any receiver could do here (context;"
                         f" one-row commit {f.commit_ms:.2f} ms)", f"{plain:,.0f}", f"{naive:,.0f}", ratio(plain, naive)))
    latencies = f.product.latencies
    p50, p95, p99 = (percentile(latencies, q) * 1000 for q in (0.50, 0.95, 0.99))
    window = ENS_WINDOW_S * 1000
    table += [
        Row(f"ack latency p50, {f.body_mib:.2f} MiB 1,000-event batch", f"{p50:.0f} ms", "3,000 ms ENS window",
            f"{p50 / window:.1%}"),
        Row("ack latency p95", f"{p95:.0f} ms", "3,000 ms ENS window", f"{p95 / window:.1%}"),
        Row(f"ack latency p99 (of {len(latencies)})", f"{p99:.0f} ms", "3,000 ms ENS window", f"{p99 / window:.1%}",
            "< 10% (300 ms)", p99 < 0.1 * window),
        Row("in-process parse_batch + Store.ingest, 1 process (context)", f"{f.in_process:,.0f} ev/s",
            f"{plain:,.0f}", ratio(f.in_process, plain)),
        Row("web workers' CPU per batch during the run (context)",
            f"{f.run.cpu_seconds * 1000 / max(1, len(f.product.sent)):.0f} ms",
            f"{f.product.wall * 1000 / max(1, len(f.product.sent)):.0f} ms wall per batch (senders' CPU "
            f"{f.run.process_cpu_seconds * 1000 / max(1, len(f.product.sent)):.0f} ms)",
            f"{f.run.cpu_seconds / f.product.wall / 2:.0%} of 2 cores" if f.product.wall else "—"),
    ]
    if f.product.errors or len(f.product.acknowledged) != len(f.product.sent):
        statuses = sorted({str(s.status) for s in f.product.sent})
        table.append(Row("ingest: batches not acknowledged", str(len(f.product.sent) - len(f.product.acknowledged)),
                         f"answers {', '.join(statuses)}", met=False))
    return table
