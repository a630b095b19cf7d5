"""`python -m poller`: the poller process, scheduled by APScheduler.

Three jobs: poll cycles every POLL_INTERVAL_SECONDS, ENS probe verification, and a daily prune.
A job that fails logs one line and runs again at its next time; the process stays up.
"""
from __future__ import annotations

import functools
import logging
import signal
import sys
from datetime import datetime, timezone

from apscheduler.schedulers.blocking import BlockingScheduler

from receiver import logs
from receiver.config import ConfigError, Settings
from receiver.store import Store, StoreError

from .cycle import Poller
from .sfmc import SFMCError, client_from_settings

log = logging.getLogger("poller")

PROBE_CHECK_SECONDS = 5
HOUSEKEEPING_SECONDS = 3600


def guarded(job):
    """Run a job; a failure becomes one log line instead of a traceback."""
    @functools.wraps(job)
    def run():
        try:
            return job()
        except (StoreError, SFMCError) as error:
            log.warning("job did not finish; it runs again at its next time", extra={"fields": {
                "job": job.__name__, "error": str(error)}})
        except Exception as error:  # the process must outlive any one job
            log.error("job failed", extra={"fields": {"job": job.__name__, "error_type": type(error).__name__,
                                                      "error": str(error)}})
        return None
    return run


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"ens-status poller: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    store = Store(settings.database_path, busy_timeout=10.0)
    store.upgrade()
    client = client_from_settings(settings)
    poller = Poller(settings, store, client)
    if client is None:
        log.warning("polling is disabled: set SFMC_AUTH_BASE_URL, SFMC_CLIENT_ID and SFMC_CLIENT_SECRET to enable "
                    "it; pruning still runs")
    scheduler = BlockingScheduler(timezone=timezone.utc)
    start = datetime.now(timezone.utc)
    scheduler.add_job(guarded(poller.cycle), "interval", seconds=settings.poll_interval_seconds,
                      next_run_time=start, id="poll", max_instances=1, coalesce=True)
    if client is not None:
        scheduler.add_job(guarded(poller.verify_probes), "interval", seconds=PROBE_CHECK_SECONDS,
                          next_run_time=start, id="verify", max_instances=1, coalesce=True)
    scheduler.add_job(guarded(poller.housekeeping), "interval", seconds=HOUSEKEEPING_SECONDS,
                      next_run_time=start, id="housekeeping", max_instances=1, coalesce=True)

    def stop(signum, frame):
        if scheduler.running:
            scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("poller started", extra={"fields": {
        "holder": poller.holder, "interval_s": settings.poll_interval_seconds, "polling": client is not None,
        "max_requests_per_minute": settings.poll_max_requests_per_minute}})
    scheduler.start()
    try:
        poller.stop()
    except StoreError:
        pass  # the lease simply expires
    if client is not None:
        client.close()
    log.info("poller stopped")
    return 0
