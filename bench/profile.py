"""`python -m bench profile`: where one worker's time goes on the ingest path, by cProfile.

`parse_batch` then `Store.ingest`, in this process, on the benchmark's batches and a fresh
database (FULL, WAL). What `Store.ingest` does between `BEGIN IMMEDIATE` and `COMMIT` holds the
database's write lock, so with two workers that part is serial: it bounds throughput.
The shares come from cProfile, which slows Python code more than SQLite's C code; the unprofiled
time per batch is printed beside it.
"""
from __future__ import annotations

import cProfile
import io
import pstats
import time
from pathlib import Path

from receiver.events import parse_batch
from receiver.store import Store

from .workload import START_MS, sms_batches

EXECUTE = "<method 'execute' of 'sqlite3.Connection' objects>"
EXECUTEMANY = "<method 'executemany' of 'sqlite3.Connection' objects>"


def run(workdir: Path, batches: int = 40) -> str:
    work = sms_batches(batches + 2, seed=5)
    plain_ms = _ingest(Store(workdir / "unprofiled.db"), work, None)
    profiler = cProfile.Profile()
    profiled_ms = _ingest(Store(workdir / "profiled.db"), work, profiler)
    stats = pstats.Stats(profiler)
    lines = [f"ingest path, {batches} batches of 1,000 events: {plain_ms:.1f} ms per batch unprofiled, "
             f"{profiled_ms:.1f} ms profiled", "", breakdown(stats, batches), "", "top functions by own time:"]
    text = io.StringIO()
    stats.stream = text
    stats.sort_stats("tottime").print_stats(15)
    lines += [line for line in text.getvalue().splitlines() if line.strip()][-17:]
    return "\n".join(lines)


def _ingest(store: Store, batches, profiler: cProfile.Profile | None) -> float:
    """ms per batch over all but the first two batches (those warm the connection and the schema)."""
    store.upgrade()
    for number, batch in enumerate(batches[:2]):
        store.ingest(batch.body, parse_batch(batch.body, START_MS + number), START_MS + number, "base64")
    began = time.perf_counter()
    if profiler:
        profiler.enable()
    for number, batch in enumerate(batches[2:], start=2):
        received_at = START_MS + number
        store.ingest(batch.body, parse_batch(batch.body, received_at), received_at, "base64")
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - began
    store.close()
    return elapsed * 1000 / (len(batches) - 2)


def _find(stats: pstats.Stats, name: str, file_suffix: str = "") -> tuple | None:
    for key in stats.stats:
        if key[2] == name and key[0].endswith(file_suffix):
            return key
    return None


def _cumulative(stats, name: str, file_suffix: str = "") -> float:
    key = _find(stats, name, file_suffix)
    return stats.stats[key][3] if key else 0.0


def _called_from(stats, callee: str, caller: str, caller_suffix: str = "") -> float:
    """Cumulative time of builtin `callee` when called by the function `caller`."""
    key = _find(stats, callee)
    if key is None:
        return 0.0
    return sum(values[3] for site, values in stats.stats[key][4].items()
               if site[2] == caller and site[0].endswith(caller_suffix))


def breakdown(stats: pstats.Stats, batches: int) -> str:
    parse = _cumulative(stats, "parse_batch", "receiver/events.py")
    ingest = _cumulative(stats, "ingest", "receiver/store.py")
    compress = _called_from(stats, "<built-in method zlib.compress>", "ingest", "receiver/store.py")
    queue = _cumulative(stats, "_queue_for_write_lock", "receiver/store.py")
    total = parse + ingest
    apply = _cumulative(stats, "_apply", "receiver/store.py")
    load = _cumulative(stats, "_load_messages", "receiver/store.py")
    apply_sql = _called_from(stats, EXECUTEMANY, "_apply", "receiver/store.py")
    parts = [
        ("parse_batch (outside the write lock)", parse),
        ("  json.loads of the body", _called_from(stats, "loads", "parse_batch", "receiver/events.py")
         or _cumulative(stats, "raw_decode")),
        ("  parse_event × 1,000 (normalize, fingerprint)", _cumulative(stats, "parse_event", "receiver/events.py")),
        ("Store.ingest, before the write lock: zlib.compress of the body", compress),
        ("Store.ingest, waiting for the write lock (none in-process)", queue),
        ("Store.ingest, under the write lock", ingest - compress - queue),
        ("  COMMIT (WAL fsync) and BEGIN IMMEDIATE", _called_from(stats, EXECUTE, "write", "receiver/store.py")),
        ("  INSERT batches row (the compressed body)", _called_from(stats, EXECUTE, "ingest", "receiver/store.py")),
        ("  _new_events (duplicate check SELECT)", _cumulative(stats, "_new_events", "receiver/store.py")),
        ("  _apply: status model + messages/changes", apply),
        ("    _load_messages (SELECT current rows)", load),
        ("    executemany: messages upsert + changes insert", apply_sql),
        ("    Python in _apply (status model, row tuples)", apply - load - apply_sql),
        ("  executemany: events insert", _called_from(stats, EXECUTEMANY, "ingest", "receiver/store.py")),
    ]
    width = max(len(name) for name, _ in parts)
    lines = [f"{'part':<{width}}  ms/batch  share", f"{'-' * width}  --------  -----"]
    for name, seconds in parts:
        lines.append(f"{name:<{width}}  {seconds * 1000 / batches:8.1f}  {seconds / total:5.1%}")
    return "\n".join(lines)
