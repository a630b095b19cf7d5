"""`python -m bench`: every SPEC §8 figure beside its baseline from the same run, as one table.

    python -m bench             the SPEC §8 table (about 2½ minutes on 2 cores)
    python -m bench settings    gunicorn worker type and count, synchronous FULL vs NORMAL, insert method
                                (about 3 minutes)
    python -m bench profile     where the time of parse_batch + Store.ingest goes (cProfile, in-process)

Progress goes to stderr, the table to stdout. The exit status is 0 when every measurement ran
(missed targets included: they are findings, shown as "NO"), 1 when one of them failed to run.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

from . import ingest, polling, queries
from .report import Row, ratio, render


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> str:
    return (f"{os.cpu_count()} cores ({platform.machine()}), Linux {platform.release()}, "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"gunicorn {metadata.version('gunicorn')}, Flask {metadata.version('flask')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="spec", choices=("spec", "settings", "profile"))
    parser.add_argument("--quick", action="store_true", help="smaller workloads, for trying the benchmark out")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (databases, for inspection)")
    parser.add_argument("--workdir", type=Path, help="where the databases go (default: a new temporary directory)")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ens-status-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    try:
        if args.what == "settings":
            from . import settings
            rows, failed = settings.run(workdir, quick=args.quick, log=log)
        elif args.what == "profile":
            from . import profile
            print(profile.run(workdir, batches=10 if args.quick else 40))
            return 0
        else:
            rows, failed = spec(workdir, quick=args.quick)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"machine: {machine()}")
    print(f"command: python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"took {time.perf_counter() - began:.0f} s\n")
    print(render(rows))
    return 1 if failed else 0


def spec(workdir: Path, quick: bool) -> tuple[list[Row], bool]:
    rows: list[Row] = []
    failed = False
    results = {}
    steps = {
        "ingest": lambda: ingest.measure(workdir, batches=30 if quick else 200, naive_batches=4 if quick else 12,
                                         log=log),
        "polling": lambda: polling.measure(workdir, polling.Plan(messages=400) if quick else polling.Plan(), log=log),
        "queries": lambda: queries.measure(workdir, messages=100_000 if quick else 1_000_000,
                                           requests=300 if quick else 2000, log=log),
    }
    for name, step in steps.items():
        try:
            results[name] = step()
        except Exception as error:  # one broken measurement must not hide the others
            failed = True
            log(f"{name} failed:\n{traceback.format_exc()}")
            rows.append(Row(f"{name}: did not run", f"{type(error).__name__}: {str(error).splitlines()[0][:80]}",
                            met=False))
            continue
        rows += {"ingest": ingest.rows, "polling": polling.rows, "queries": queries.rows}[name](results[name])
    if "ingest" in results and "queries" in results:
        rows.append(memory_row(results["ingest"], results["queries"]))
    return rows, failed


def memory_row(small: ingest.Figures, big: queries.Figures) -> Row:
    if not small.memory_10k_kib or not big.memory_kib:
        return Row("web worker peak RSS (VmHWM)", "not readable", met=False)
    change = big.memory_kib / small.memory_10k_kib
    return Row(f"web worker peak RSS (VmHWM) at {big.stored_events:,} stored events",
               f"{big.memory_kib / 1024:.1f} MiB", f"{small.memory_10k_kib / 1024:.1f} MiB at 10,000",
               ratio(big.memory_kib, small.memory_10k_kib), "flat ±20%", 0.8 <= change <= 1.2)


if __name__ == "__main__":
    sys.exit(main())
