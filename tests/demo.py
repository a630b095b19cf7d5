"""`make demo`: the whole product against the fake SFMC for about a minute, visibly.

Starts the fake SFMC, the real web and poller processes, sends and tracks messages with every
ENS fault on, prints progress, then a summary of where each status came from, and stops
everything it started.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.scenario import Scenario, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=600, help="how many messages to send (default 600)")
    parser.add_argument("--seconds", type=float, default=60, help="how long to spread the traffic over (default 60)")
    args = parser.parse_args()
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {line}", flush=True)

    with tempfile.TemporaryDirectory(prefix="ens-status-demo-") as workdir:
        progress(f"starting the fake SFMC, the web and the poller on {Path(workdir) / 'ens-status.db'}")
        report = Scenario(Path(workdir), messages=args.messages, traffic_seconds=args.seconds,
                          progress=progress).run(settle_timeout=90)
    print()
    print(summary(report))
    return 1 if report.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
