"""The real `python -m poller` processes (the Procfile's command) against the fake SFMC."""
from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest

from receiver.store import Store
from tests.fakesfmc import FakeSFMC
from tests.processes import procfile_command, run_process

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def fake():
    with FakeSFMC(send_delay=0.05, transient_delay=0.05, final_delay=0.05) as fake:
        fake.define("sms", "otp")
        yield fake


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "ens.db"
    store = Store(path)
    store.upgrade()
    yield path, store
    store.close()


def poller_env(db_path, fake, **extra):
    return {"DATABASE_URL": f"sqlite:///{db_path}", "SFMC_AUTH_BASE_URL": fake.url,
            "SFMC_CLIENT_ID": "fake-client-id", "SFMC_CLIENT_SECRET": "fake-client-secret",
            "POLL_INTERVAL_SECONDS": "1", "POLL_GRACE_SECONDS": "0", "LOG_FORMAT": "json", **extra}


def send_and_track(fake, store, keys):
    for key in keys:
        fake.send("sms", key, "15550100007", "otp")  # digit 7: sent, no final receipt
    now = int(time.time() * 1000)
    store.track([{"channel": "sms", "message_key": key} for key in keys], now, grace_ms=0)


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.05)
    pytest.fail(f"{what}: not within {timeout} s")


def leader_pid(db_path):
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT holder FROM leases WHERE name = 'poll'").fetchone()
    return int(row[0].split(":")[1]) if row else None


def all_done(store, keys):
    return all((store.message(key, "sms") or {}).get("poll_state") == "done" for key in keys)


def test_without_credentials_polling_is_disabled_and_the_process_stays_up(db):
    db_path, _ = db
    with run_process(procfile_command("poller"), {"DATABASE_URL": f"sqlite:///{db_path}"}) as poller:
        poller.wait_until(lambda: "polling is disabled" in poller.log(), 20, "poller start")
        time.sleep(1)
        assert poller.running()
        poller.popen.send_signal(signal.SIGTERM)
        assert poller.popen.wait(10) == 0
        assert "Traceback" not in poller.log()


def test_two_pollers_poll_each_message_once_and_a_killed_leader_is_replaced(db, fake):
    db_path, store = db
    env = poller_env(db_path, fake)
    first_keys = [f"mk-a{n}" for n in range(20)]
    send_and_track(fake, store, first_keys)
    with run_process(procfile_command("poller"), env) as one, run_process(procfile_command("poller"), env) as two:
        wait_for(lambda: all_done(store, first_keys), 30, "first messages polled")
        assert {fake.get_status_calls[("sms", key)] for key in first_keys} == {1}
        leader = leader_pid(db_path)
        assert leader in (one.pid, two.pid)
        os.kill(leader, signal.SIGKILL)
        killed_at = time.monotonic()
        second_keys = [f"mk-b{n}" for n in range(5)]
        send_and_track(fake, store, second_keys)
        done_at = wait_for(lambda: all_done(store, second_keys), 10, "survivor takes over")
        assert done_at - killed_at <= 2 * 1.0 + 1.0  # two intervals, plus the GETs themselves
        assert leader_pid(db_path) != leader
        assert {fake.get_status_calls[("sms", key)] for key in second_keys} == {1}
        survivor = two if leader == one.pid else one
        assert "Traceback" not in survivor.log()


def test_budget_holds_across_two_processes(db, fake):
    db_path, store = db
    env = poller_env(db_path, fake, POLL_MAX_REQUESTS_PER_MINUTE="4")
    keys = [f"mk-c{n}" for n in range(20)]
    send_and_track(fake, store, keys)
    started = time.monotonic()
    with run_process(procfile_command("poller"), env), run_process(procfile_command("poller"), env):
        wait_for(lambda: sum(fake.get_status_calls.values()) >= 4, 20, "first budget spent")
        time.sleep(4)
    gets = sum(fake.get_status_calls.values())
    assert gets == 4, f"{gets} GETs within {time.monotonic() - started:.1f} s with a budget of 4 per minute"
