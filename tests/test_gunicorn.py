"""The real web process: the Procfile's gunicorn command with 2 workers, over real HTTP."""
import json
import random
import socket
import sqlite3
import threading
import time
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import API_TOKEN, SIGNATURE_KEY, T0, batch, ens_event, query, signed_headers
from tests.processes import free_port, procfile_command, run_process, run_web

pytestmark = pytest.mark.timeout(120)

AWKWARD_KEYS = ["a/b", "/leading", "q?x=1", "h#frag", "100%", "with space", ".", "..", "é漢字🙂", "k" * 100]
KEYS = [f"gk-{n:03d}" for n in range(70)] + AWKWARD_KEYS
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
WEB_ENV = {"ENS_SIGNATURE_KEYS": SIGNATURE_KEY, "API_TOKENS": API_TOKEN}


def segment(key: str) -> str:
    encoded = quote(key, safe="")
    return {".": "%2E", "..": "%2E%2E"}.get(encoded, encoded)


def plan(key: str, number: int) -> tuple[list[dict], str]:
    """Every event one message gets, and the status it must end at."""
    base = T0 + number * 60_000
    kind = number % 5
    if kind == 0:
        return [ens_event("SmsSent", key, base), ens_event("SmsTransient", key, base + 1200),
                ens_event("SmsDelivered", key, base + 4900)], "delivered"
    if kind == 1:
        return [ens_event("SmsSent", key, base), ens_event("SmsBounced", key, base + 9000)], "bounced"
    if kind == 2:
        return [ens_event("SmsNotSent", key, base)], "not_sent"
    if kind == 3:  # two genuinely different transient receipts: both kept
        return [ens_event("SmsSent", key, base),
                ens_event("SmsTransient", key, base + 1200, statusCode="3001", statusMessage="SentToCarrier"),
                ens_event("SmsTransient", key, base + 2400)], "transient"
    return [ens_event("SmsSent", key, base)], "sent"


def deliveries(events: list[dict], senders: int, rng: random.Random) -> list[list[bytes]]:
    """Shuffled batches per sender: every event at least once, many twice or three times on
    different senders, some batches resent byte for byte by another sender."""
    copies = [event for event in events for _ in range(rng.choice([1, 1, 2, 3]))]
    rng.shuffle(copies)
    bodies, start = [], 0
    while start < len(copies):
        size = rng.randint(5, 30)
        bodies.append(batch(*copies[start:start + size]))
        start += size
    per_sender = [[] for _ in range(senders)]
    for index, body in enumerate(bodies):
        per_sender[index % senders].append(body)
        if rng.random() < 0.25:
            per_sender[(index + 1) % senders].append(body)
    for bodies_of_sender in per_sender:
        rng.shuffle(bodies_of_sender)
    return per_sender


def read_changes(client: httpx.Client, after: int, limit: int) -> tuple[list[dict], int]:
    response = client.get("/v1/changes", params={"after": after, "limit": limit}, headers=AUTH)
    assert response.status_code == 200, response.text
    page = response.json()
    return page["changes"], page["nextAfter"]


def test_concurrent_senders_through_real_gunicorn(db_path):
    rng = random.Random(20250101)
    events, expected = [], {}
    for number, key in enumerate(KEYS):
        message_events, expected[key] = plan(key, number)
        events += message_events
    events.append(ens_event("EngagementEvents.EmailOpen", timestamp_utc=T0 + 1))
    per_sender = deliveries(events, 4, rng)

    with run_web(db_path, WEB_ENV, workers=2) as (base_url, log):
        assert f"Listening at: http://127.0.0.1:{base_url.rsplit(':', 1)[1]}" in log()
        statuses, failures = [], []
        writing = threading.Event()
        writing.set()
        seen: list[dict] = []

        def send(bodies: list[bytes]) -> None:
            try:
                with httpx.Client(base_url=base_url, timeout=30) as client:
                    for number, body in enumerate(bodies):
                        path = "/ens/" if number % 2 else "/ens"
                        statuses.append(client.post(path, content=body, headers=signed_headers(body)).status_code)
            except Exception as error:
                failures.append(repr(error))

        def follow_feed() -> None:
            try:
                with httpx.Client(base_url=base_url, timeout=30) as client:
                    after, draining = 0, False
                    while True:
                        changes, after = read_changes(client, after, 7)
                        seen.extend(changes)
                        if not changes:
                            if draining:
                                return
                            draining = not writing.is_set()  # one more full read after the writers stop
                            time.sleep(0.01)
            except Exception as error:
                failures.append(repr(error))

        reader = threading.Thread(target=follow_feed)
        senders = [threading.Thread(target=send, args=(bodies,)) for bodies in per_sender]
        reader.start()
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
        writing.clear()
        reader.join(60)
        assert failures == []
        assert statuses and set(statuses) == {200}

        with httpx.Client(base_url=base_url, timeout=30, headers=AUTH) as client:
            for key, status in expected.items():
                response = client.get(f"/v1/messages/{segment(key)}", params={"channel": "sms"})
                assert response.status_code == 200, (key, response.text)
                assert (response.json()["messageKey"], response.json()["status"]) == (key, status)
            everything, after = [], 0
            while True:
                changes, after = read_changes(client, after, 1000)
                if not changes:
                    break
                everything += changes

        server_log = log()

    assert query(db_path, "SELECT count(*) FROM events") == [(len(events),)]  # none lost, none doubled
    seqs = [change["seq"] for change in seen]
    assert seqs == sorted(set(seqs))  # each change once, in order, while batches were written
    assert seen == everything
    last = {change["messageKey"]: change["status"] for change in everything}
    assert last == expected
    assert "Traceback" not in server_log
    assert '"level": "error"' not in server_log
    assert server_log.count("Booting worker") == 2  # WEB_CONCURRENCY
    assert SIGNATURE_KEY not in server_log and API_TOKEN not in server_log


def test_a_signed_1000_event_batch_over_1_mib_is_answered_200(db_path):
    events = [ens_event("SmsDelivered", f"mk-big-{n:04d}", T0 + n, note="n" * 700) for n in range(1000)]
    body = batch(*events)
    assert len(body) > 1024 * 1024
    with run_web(db_path, WEB_ENV, workers=2) as (base_url, log):
        response = httpx.post(f"{base_url}/ens", content=body, headers=signed_headers(body), timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["new"] == 1000
        listed = httpx.get(f"{base_url}/v1/messages", params={"status": "delivered", "limit": 1000},
                           headers=AUTH, timeout=30).json()
        assert len(listed["messages"]) == 1000
        assert "Traceback" not in log()


def test_unsigned_batch_is_refused_over_real_http(db_path):
    body = batch(ens_event("SmsSent"))
    with run_web(db_path, WEB_ENV, workers=1) as (base_url, log):
        response = httpx.post(f"{base_url}/ens", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 401
        assert response.json()["error"]["code"]
        assert httpx.get(f"{base_url}/v1/messages/mk-0001", headers=AUTH).status_code == 404


def test_a_chunked_body_over_max_body_bytes_gets_413(db_path):
    """Without a Content-Length the size is only known while reading: still 413, never a cut body."""
    body = batch(*[ens_event("SmsSent", f"mk-chunk-{n}", T0 + n) for n in range(20)])
    small = batch(ens_event("SmsSent", "mk-small"))
    limit = 1000
    assert len(small) < limit < len(body)
    exact = small[:-1] + b" " * (limit - len(small)) + b"]"

    def chunks(data: bytes):
        for start in range(0, len(data), 128):
            yield data[start:start + 128]

    with run_web(db_path, {**WEB_ENV, "MAX_BODY_BYTES": str(limit)}, workers=1) as (base_url, log):
        with httpx.Client(base_url=base_url, timeout=30) as client:
            response = client.post("/ens", content=chunks(body), headers=signed_headers(body))
            assert response.status_code == 413, response.text
            assert client.post("/ens", content=chunks(exact), headers=signed_headers(exact)).status_code == 200
            assert client.post("/ens", content=chunks(small), headers=signed_headers(small)).status_code == 200
            found = client.get("/v1/messages/mk-small", headers=AUTH)
            assert found.status_code == 200 and found.json()["status"] == "sent", (found.text, log())
            assert client.get("/v1/messages/mk-chunk-0", headers=AUTH).status_code == 404
            tracking = json.dumps([{"messageKey": f"mk-track-{n}"} for n in range(50)]).encode()
            assert len(tracking) > limit
            response = client.post("/v1/messages", content=chunks(tracking), headers=AUTH)
            assert response.status_code == 413, response.text


def test_a_bad_setting_stops_the_web_process_with_one_line(db_path):
    port = free_port()
    env = {**WEB_ENV, "DATABASE_URL": f"sqlite:///{db_path}", "MAX_BODY_BYTES": "lots", "PORT": str(port),
           "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --no-control-socket"}
    with run_process(procfile_command("web"), env) as web:
        deadline = time.monotonic() + 20
        while web.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not web.running()
        assert web.popen.returncode != 0
        lines = [line for line in web.log().splitlines() if line.strip()]
    assert len(lines) == 1 and "MAX_BODY_BYTES" in lines[0] and "lots" in lines[0], lines



def test_web_starts_while_another_process_writes_a_fresh_database(db_path):
    """Workers switching a fresh file to WAL wait for a writer (e.g. the poller's first upgrade)."""
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE elsewhere (x)")
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, other.execute, args=("COMMIT",))
    release.start()
    try:
        with run_web(db_path, WEB_ENV, workers=2) as (base_url, log):
            assert httpx.get(f"{base_url}/healthz").status_code == 200
            assert "Worker failed to boot" not in log()
    finally:
        release.join()
        other.close()


def raw_request(port: int, head: bytes, body_part: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=20)
    connection.sendall(head + body_part)
    return connection


def read_answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := connection.recv(4096):
        answer += chunk
    return answer


def test_a_body_that_never_arrives_gets_408_and_does_not_stall_the_receiver(db_path):
    body = b"[]"
    head = (f"POST /ens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n"
            f"x-sfmc-ens-signature: {signed_headers(body)['x-sfmc-ens-signature']}\r\n\r\n").encode()
    with run_web(db_path, WEB_ENV, workers=2) as (base_url, log):
        port = int(base_url.rsplit(":", 1)[1])
        stalled = [raw_request(port, head, body) for _ in range(2)]  # as many as there are workers
        try:
            started = time.monotonic()
            assert httpx.get(f"{base_url}/healthz", timeout=20).status_code == 200
            assert time.monotonic() - started < 15  # the read deadline, not gunicorn's 30 s worker timeout
            for connection in stalled:
                answer = read_answer(connection)
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                assert b'"request_timeout"' in answer
        finally:
            for connection in stalled:
                connection.close()
        assert "Traceback" not in log() and "WORKER TIMEOUT" not in log()


def test_a_body_shorter_than_its_content_length_is_refused(db_path):
    body = b"[]"
    head = (f"POST /ens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n"
            f"x-sfmc-ens-signature: {signed_headers(body)['x-sfmc-ens-signature']}\r\n\r\n").encode()
    with run_web(db_path, WEB_ENV, workers=1) as (base_url, log):
        connection = raw_request(int(base_url.rsplit(":", 1)[1]), head, body)
        try:
            connection.shutdown(socket.SHUT_WR)
            answer = read_answer(connection)
        finally:
            connection.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"ended after 2 of its 500 bytes" in answer
        assert query(db_path, "SELECT count(*) FROM batches") == [(0,)]


def test_a_body_dripped_a_byte_at_a_time_is_cut_at_the_deadline(db_path):
    """A socket timeout bounds each read only; the deadline holds for the whole body."""
    body = b"[]"
    head = (f"POST /ens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n"
            f"x-sfmc-ens-signature: {signed_headers(body)['x-sfmc-ens-signature']}\r\n\r\n").encode()
    with run_web(db_path, WEB_ENV, workers=2) as (base_url, log):
        port = int(base_url.rsplit(":", 1)[1])
        stop = threading.Event()
        dripping = [raw_request(port, head, b"[") for _ in range(2)]  # as many as there are workers

        def drip():
            for _ in range(12):  # at most about 36 s
                if stop.wait(3):
                    return
                for connection in dripping:
                    try:
                        connection.sendall(b" ")
                    except OSError:
                        pass

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        try:
            started = time.monotonic()
            assert httpx.get(f"{base_url}/healthz", timeout=40).status_code == 200
            assert time.monotonic() - started < 15
            for connection in dripping:
                assert read_answer(connection).startswith(b"HTTP/1.1 408")
        finally:
            stop.set()
            dripper.join()
            for connection in dripping:
                connection.close()
        assert "WORKER TIMEOUT" not in log() and "Traceback" not in log()
