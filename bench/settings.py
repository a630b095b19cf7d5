"""`python -m bench settings`: the measurements behind docs/settings.md, as one table.

- gunicorn worker type and count: the product's ingest under sync ×2 (the Procfile default),
  sync ×3, sync ×4 and gthread ×2 with 4 threads, same batches, 4 concurrent senders, with the
  workers' CPU time per batch (from /proc) beside the wall-clock figures;
- SQLite `synchronous` FULL vs NORMAL (WAL both): in the plain-executemany baseline and in the
  product's own in-process ingest (`Store(synchronous=...)`);
- batch insert method, on the rows the product stores: `executemany` vs one `execute` per row vs
  multi-row `VALUES`, all in one transaction per batch; one commit per event (the naive
  receiver's method); and what the raw body costs: stored as the product stores it
  (zlib-compressed), left out, or stored uncompressed.

Every comparison runs its variants in turn, in rounds (three for the gunicorn variants, five for
the in-process ones), and reports the median, so that a burst of noise on the shared machine hits
every variant alike.
"""
from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Callable

from .ingest import Captured, capture, in_process, product_run, write_rows
from .report import Row, percentile, ratio
from .workload import sms_batches

REPEATS = 3  # rounds of the gunicorn variants (each starts a server)
IN_PROCESS_REPEATS = 5  # rounds of the in-process variants (a few seconds each)


def run(workdir: Path, quick: bool = False, log=print) -> tuple[list[Row], bool]:
    batches = sms_batches(10 if quick else 40, seed=1)
    warm = sms_batches(2, seed=2, tenant="acme-warmup")
    rows: list[Row] = []
    rows += workers(workdir, batches, warm, log, rounds=1 if quick else REPEATS)
    log("settings: in-process ingest and capture")
    _, store = in_process(workdir / "capture.db", batches)
    captured = capture(store, batches)
    store.close()
    rows += synchronous(workdir, batches, captured, log)
    rows += insert_methods(workdir, captured, log)
    return rows, False


def workers(workdir: Path, batches, warm, log, rounds: int = REPEATS) -> list[Row]:
    """Each variant once per round, in turn, on a fresh database; events/s is the median of the rounds."""
    variants = [("sync ×2 (Procfile default)", 2, ""), ("sync ×3", 3, ""), ("sync ×4", 4, ""),
                ("gthread ×2, 4 threads each", 2, "--worker-class gthread --threads 4"),
                ("gthread ×1, 4 threads", 1, "--worker-class gthread --threads 4")]
    runs: dict[str, list] = {name: [] for name, *_ in variants}
    for round_ in range(rounds):
        for index, (name, count, extra) in enumerate(variants):
            log(f"settings: gunicorn {name}, round {round_ + 1} of {rounds}")
            runs[name].append(product_run(workdir, batches, warm, senders=4, workers=count, extra_args=extra,
                                          name=f"workers-{index}-{round_}"))
    base = statistics.median(run.result.events_per_second for run in runs[variants[0][0]])
    rows = []
    for name, *_ in variants:
        speed = statistics.median(run.result.events_per_second for run in runs[name])
        latencies = [latency for run in runs[name] for latency in run.result.latencies]
        sent = [s for run in runs[name] for s in run.result.sent]
        refused = Counter(str(s.status) for s in sent if s.status != 200)
        cpu = statistics.median(run.cpu_seconds * 1000 / max(1, len(run.result.sent)) for run in runs[name])
        refusals = f"; {sum(refused.values())} of {len(sent)} refused: " + ", ".join(
            f"{n}× {status}" for status, n in refused.items()) if refused else ""
        rows.append(Row(f"gunicorn {name}: ingest events/s (ack p50 {percentile(latencies, 0.5) * 1000:.0f} ms,"
                        f" p99 {percentile(latencies, 0.99) * 1000:.0f} ms; worker CPU {cpu:.0f} ms/batch{refusals})",
                        f"{speed:,.0f}", f"sync ×2 {base:,.0f}", ratio(speed, base)))
    return rows


def _alternate(variants: dict[str, Callable[[int], float]], repeats: int = IN_PROCESS_REPEATS) -> dict[str, float]:
    """Median of `repeats` runs of each variant, run in turn: a, b, c, a, b, c, …"""
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, measure in variants.items():
            runs[name].append(measure(repeat))
    return {name: statistics.median(values) for name, values in runs.items()}


def synchronous(workdir: Path, batches, captured: Captured, log) -> list[Row]:
    log("settings: synchronous FULL vs NORMAL")
    figures = _alternate({
        "plain FULL": lambda n: write_rows(workdir / f"plain-full-{n}.db", captured, "FULL", "executemany"),
        "plain NORMAL": lambda n: write_rows(workdir / f"plain-normal-{n}.db", captured, "NORMAL", "executemany"),
        "ingest FULL": lambda n: _in_process(workdir / f"ingest-full-{n}.db", batches, "FULL"),
        "ingest NORMAL": lambda n: _in_process(workdir / f"ingest-normal-{n}.db", batches, "NORMAL"),
    })
    return [
        Row("synchronous NORMAL vs FULL: plain executemany events/s", f"{figures['plain NORMAL']:,.0f}",
            f"FULL {figures['plain FULL']:,.0f}", ratio(figures["plain NORMAL"], figures["plain FULL"])),
        Row("synchronous NORMAL vs FULL: in-process parse_batch + Store.ingest events/s",
            f"{figures['ingest NORMAL']:,.0f}", f"FULL {figures['ingest FULL']:,.0f}",
            ratio(figures["ingest NORMAL"], figures["ingest FULL"])),
    ]


def _in_process(path: Path, batches, synchronous: str) -> float:
    events_per_second, store = in_process(path, batches, synchronous)
    store.close()
    return events_per_second


def insert_methods(workdir: Path, captured: Captured, log) -> list[Row]:
    log("settings: batch insert methods")
    methods = ("executemany", "execute per row", "multi-row VALUES", "executemany, no body",
               "executemany, uncompressed body")
    figures = _alternate({method: (lambda n, m=method: write_rows(workdir / f"insert-{n}-{len(m)}.db", captured, "FULL", m))
                          for method in methods})
    per_event = write_rows(workdir / "insert-per-event.db", captured, "FULL", "commit per event", limit=3)
    base = figures["executemany"]
    rows = [Row(f"insert method {method}: events/s (one transaction per batch, FULL)", f"{figures[method]:,.0f}",
                f"executemany {base:,.0f}", ratio(figures[method], base)) for method in methods[1:]]
    rows.append(Row("insert method one commit per event: events/s (3 batches)", f"{per_event:,.0f}",
                    f"executemany {base:,.0f}", ratio(per_event, base)))
    return rows
