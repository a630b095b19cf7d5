"""Queries and memory on a big database: 1,000,000 messages, each with its three events.

The database is filled in bulk (`bulk.py`); then the real gunicorn starts on it, ingests a few
more batches through HTTP one by one (after which the workers' peak RSS is read, to set beside the
same reading on a fresh database in `ingest.py`), and answers `GET /v1/messages/<key>` for random
keys, each request followed by a `GET /healthz`, from one client, so that both see the same
moments of a shared machine.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from . import bulk, servers
from .ingest import WEB_ENV
from .report import Row, percentile, ratio
from .senders import post_batches
from .workload import API_TOKEN, sms_batches


@dataclass
class Figures:
    messages: int
    events: int
    fill_seconds: float
    message_latencies: list[float]
    health_latencies: list[float]
    memory_kib: int | None
    stored_events: int


def measure(workdir: Path, *, messages: int = 1_000_000, requests: int = 2000, ingest_batches: int = 10,
            time_limit: float = 60.0, log=print) -> Figures:
    path = workdir / "big.db"
    log(f"queries: filling {messages:,} messages in bulk")
    began = time.perf_counter()
    counts = bulk.fill(path, messages)
    fill_seconds = time.perf_counter() - began
    rng = random.Random(3)
    keys = [bulk.message_key(rng.randrange(messages)) for _ in range(requests)]
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with servers.gunicorn(path, WEB_ENV) as server:
        log(f"queries: ingesting {ingest_batches} batches through HTTP, then {requests} GETs of each kind")
        ingested = post_batches(f"{server.url}/ens", sms_batches(ingest_batches, seed=4, tenant="acme-big"),
                                senders=1, time_limit=time_limit)
        if len(ingested.acknowledged) != ingest_batches:
            raise RuntimeError(f"batches not acknowledged on the big database: {ingested.errors[:3]}")
        memory = server.worker_memory_kib()
        peak = max((m.get("VmHWM", 0) for m in memory.values()), default=None)
        message_latencies, health_latencies = [], []
        deadline = time.perf_counter() + time_limit
        with httpx.Client(timeout=10) as client:
            for key in keys[:20]:  # warm-up: both workers import their routes and open their database
                client.get(f"{server.url}/v1/messages/{quote(key, safe='')}", headers=headers)
            for key in keys:
                if time.perf_counter() > deadline:
                    break
                message_latencies.append(_timed(client, f"{server.url}/v1/messages/{quote(key, safe='')}", headers))
                health_latencies.append(_timed(client, f"{server.url}/healthz", {}))
    stored = counts["events"] + ingested.events_acknowledged
    return Figures(counts["messages"], counts["events"], fill_seconds, message_latencies, health_latencies, peak,
                   stored)


def _timed(client: httpx.Client, url: str, headers: dict) -> float:
    began = time.perf_counter()
    response = client.get(url, headers=headers)
    elapsed = time.perf_counter() - began
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}: {response.text[:200]}")
    return elapsed


def rows(f: Figures) -> list[Row]:
    table = []
    for name, share in (("p50", 0.50), ("p99", 0.99)):
        message = percentile(f.message_latencies, share) * 1000
        health = percentile(f.health_latencies, share) * 1000
        table.append(Row(f"GET /v1/messages/<key> {name}, {f.messages:,} messages ({len(f.message_latencies)} GETs)",
                         f"{message:.2f} ms", f"/healthz {health:.2f} ms", ratio(message, health), "≤ 2×",
                         message <= 2 * health))
    return table
