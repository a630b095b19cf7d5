"""The `ens-status` command line.

In-process through `main([...])` where that is simpler, and as the installed console script in a
subprocess where the process boundary matters (Procfile release line, exit status, no traceback,
confirmation on a terminal). SFMC is the fake on 127.0.0.1; the receiver is the real app, in a
thread or as the Procfile's gunicorn. Every transcript is checked for secrets.
"""
from __future__ import annotations

import base64
import io
import json
import os
import pty
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from werkzeug.serving import make_server

from poller.cli import Progress, main
from poller.cycle import Poller
from poller.sfmc import SFMCClient
from receiver import create_app
from receiver.config import Settings
from receiver.store import Store
from tests.conftest import API_TOKEN, SIGNATURE_KEY, post_ens, query
from tests.fakesfmc import FakeSFMC
from tests.processes import ROOT, run_web

SCRIPT = ROOT / ".venv" / "bin" / "ens-status"
HOOK_URL = "https://hooks.example.test/ens"
CLIENT_ID, CLIENT_SECRET = "cli-test-client", "cli-test-secret-9f8e7d"
CALLBACKS = "/platform/v1/ens-callbacks"
VERIFY = "/platform/v1/ens-verify"
SUBSCRIPTIONS = "/platform/v1/ens-subscriptions"
# sfmc-api.md §4, as ENS spells them in subscriptions.
ALL_TRANSACTIONAL_TYPES = [
    "TransactionalSendEvents.SmsSent", "TransactionalSendEvents.SmsNotSent",
    "TransactionalSendEvents.SmsTransient", "TransactionalSendEvents.SmsDelivered",
    "TransactionalSendEvents.SmsBounced", "TransactionalSendEvents.EmailSent",
    "TransactionalSendEvents.EmailNotSent", "TransactionalSendEvents.EmailBounced",
]
DAY_MS = 86400_000


@dataclass
class Result:
    args: tuple
    status: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The one error line: exactly one `ens-status:` line on stderr and no traceback."""
        assert self.status != 0, self.out
        assert "Traceback" not in self.err + self.out
        lines = [line for line in self.err.splitlines() if line.startswith("ens-status:")]
        assert len(lines) == 1, self.err
        return lines[0]


# -- fixtures -----------------------------------------------------------------------------------


class Transcript(list):
    """Every Result of a test, and the secrets none of them may show."""

    def __init__(self):
        super().__init__()
        self.secrets = {CLIENT_SECRET, API_TOKEN}
        self.signature_keys: set[str] = set()

    def learn(self, fake) -> None:
        """What the fake knows that the CLI must never print: tokens, verification and signature keys."""
        self.secrets |= set(fake.tokens.tokens)
        self.secrets |= {c.verification_key for c in fake.registry.callbacks.values()}
        self.signature_keys |= {c.signature_key for c in fake.registry.callbacks.values()}


@pytest.fixture
def transcript():
    """Checked when the test ends: no secret anywhere; a signatureKey only where SFMC issues one."""
    results = Transcript()
    yield results
    for result in results:
        text = result.out + result.err
        assert not [secret for secret in results.secrets if secret in text], result.args
        if result.args[:3] != ("sfmc", "callback", "create") and result.args[:2] != ("sfmc", "regenerate-key"):
            assert not [key for key in results.signature_keys if key in text], result.args


@pytest.fixture
def cli(capsys, transcript):
    """`cli(*args)`: run `main` in-process and capture what it printed."""
    def run(*args: str) -> Result:
        capsys.readouterr()
        status = main(list(args))
        out, err = capsys.readouterr()
        result = Result(args, status, out, err)
        transcript.append(result)
        return result

    return run


@pytest.fixture
def script(tmp_path, transcript):
    """`script(*args, env=..., stdin=...)`: the installed console script in a subprocess."""
    def run(*args: str, env: dict, stdin=subprocess.DEVNULL) -> Result:
        completed = subprocess.run([str(SCRIPT), *args], env={"PATH": os.environ["PATH"], **env}, cwd=tmp_path,
                                   stdin=stdin, capture_output=True, text=True, timeout=60)
        result = Result(args, completed.returncode, completed.stdout, completed.stderr)
        transcript.append(result)
        return result

    return run


@pytest.fixture
def db_env(db_path, monkeypatch) -> dict:
    env = {"DATABASE_URL": f"sqlite:///{db_path}"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def fake(transcript):
    with FakeSFMC(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, send_delay=0.05, transient_delay=0.05,
                  final_delay=0.05, flush_interval=0.05) as fake:
        fake.define("sms", "otp")
        yield fake
        transcript.learn(fake)


@pytest.fixture
def env(db_env, fake, monkeypatch) -> dict:
    """DATABASE_URL and SFMC_* pointing at the fake, in os.environ and as a dict for subprocesses."""
    sfmc = {"SFMC_AUTH_BASE_URL": fake.url, "SFMC_CLIENT_ID": CLIENT_ID, "SFMC_CLIENT_SECRET": CLIENT_SECRET}
    for name, value in sfmc.items():
        monkeypatch.setenv(name, value)
    return {**db_env, **sfmc}


@pytest.fixture
def receiver(db_path, fake):
    """`receiver(on_probe=None, db=db_path, hook=HOOK_URL)`: the real receiver app in a thread, `hook` mapped to it.

    `on_probe(store)` runs after the receiver stored a probe and before SFMC gets its 200: that is
    where a poller process can get to the probe before the CLI does.
    """
    servers = []

    def start(on_probe=None, db: Path = db_path, hook: str = HOOK_URL) -> str:
        app = create_app({"DATABASE_URL": f"sqlite:///{db}", "ENS_SIGNATURE_KEYS": SIGNATURE_KEY,
                          "API_TOKENS": API_TOKEN, "LOG_LEVEL": "CRITICAL"})

        def wsgi(environ, start_response):
            body = list(app(environ, start_response))
            if on_probe is not None and environ.get("PATH_INFO") == "/ens":
                on_probe(app.extensions["store"])
            return body

        server = make_server("127.0.0.1", 0, wsgi, threaded=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append((server, app))
        url = f"http://127.0.0.1:{server.server_port}/ens"
        fake.map_delivery(hook, url)
        return url

    yield start
    for server, app in servers:
        server.shutdown()
        server.server_close()
        app.extensions["store"].close()


def requests(fake, method: str, path: str) -> list:
    return [r for r in fake.requests if r.method == method and r.raw_path.rstrip("/") == path]


def sfmc_calls(fake) -> list:
    return [r for r in fake.requests if r.raw_path != "/v2/token"]


def only_callback(fake):
    (callback,) = fake.registry.callbacks.values()
    return callback


def admin(fake) -> SFMCClient:
    return SFMCClient(auth_base_url=fake.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


def verified_callback(cli, receiver, url: str = HOOK_URL) -> str:
    receiver(hook=url)
    result = cli("sfmc", "callback", "create", "--url", url, "--wait", "10")
    assert result.status == 0, result.err
    return re.search(r"ENS_CALLBACK_ID=(\S+)", result.out).group(1)


# -- database commands --------------------------------------------------------------------------


def test_db_upgrade_from_the_procfile_release_line(script, db_path):
    release = (ROOT / "Procfile").read_text().split("release:", 1)[1].splitlines()[0].split()
    assert release[:3] == ["ens-status", "db", "upgrade"]
    result = script(*release[1:], env={"DATABASE_URL": f"sqlite:///{db_path}"})
    assert result.status == 0, result.err
    assert result.out == f"database {db_path}: schema version 1\n"
    assert query(db_path, "PRAGMA user_version") == [(1,)]
    again = script("db", "upgrade", env={"DATABASE_URL": f"sqlite:///{db_path}"})
    assert again.out == result.out


def test_track_then_show_prints_what_the_query_api_answers(cli, db_env, make_app, auth):
    result = cli("track", "order-1", "order/2 ?#", "--definition-key", "otp-sms", "--to", "15550100001")
    assert result.status == 0, result.err
    assert result.out.startswith("tracked 2 sms messages")
    client = make_app().test_client()
    post_ens(client, json.dumps([{
        "eventCategoryType": "TransactionalSendEvents.SmsDelivered", "timestampUTC": 1767225600000,
        "info": {"messageKey": "order/2 ?#", "to": "15550100001", "statusCode": "4000",
                 "statusMessage": "Delivered"}}]).encode())
    for key in ("order-1", "order/2 ?#"):
        shown = cli("show", key, "--json")
        assert shown.status == 0, shown.err
        answer = client.get("/v1/messages/" + quote(key, safe=""), headers=auth)
        assert json.loads(shown.out) == answer.get_json()
    document = json.loads(cli("show", "order/2 ?#", "--json").out)
    assert document["status"] == "delivered"
    assert document["statusAt"] == "2026-01-01T00:00:00.000Z"
    assert document["definitionKey"] == "otp-sms"
    assert [h["eventCategoryType"] for h in document["history"]] == ["TransactionalSendEvents.SmsDelivered"]
    text = cli("show", "order/2 ?#").out
    assert re.search(r"^status\s+delivered at 2026-01-01T00:00:00.000Z \(code 4000: Delivered\)$", text, re.M)
    assert re.search(r"^\S+Z\s+SmsDelivered\s+delivered\s+2026-01-01T00:00:00.000Z\s+4000\s+ens\s+yes", text, re.M)


def test_track_is_idempotent_and_keeps_tracked_at(cli, db_env, db_path):
    assert cli("track", "k-1").status == 0
    first = query(db_path, "SELECT tracked_at, recipient FROM messages")
    time.sleep(0.01)
    assert cli("track", "k-1", "k-1", "--to", "15550100002").status == 0
    assert query(db_path, "SELECT tracked_at FROM messages") == [(first[0][0],)]
    assert query(db_path, "SELECT count(*) FROM messages") == [(1,)]


def test_track_counts_characters_not_bytes(cli, db_env, db_path):
    assert cli("track", "😀" * 100).status == 0
    too_long = cli("track", "ok-key", "é" * 101)
    assert "messageKey is longer than 100 characters; nothing was tracked" in too_long.error
    assert query(db_path, "SELECT message_key FROM messages") == [("😀" * 100,)]


def test_undecodable_arguments_are_refused_in_one_line(script, db_path):
    env = {"DATABASE_URL": f"sqlite:///{db_path}", "LC_ALL": "C.UTF-8"}
    tracked = script("track", os.fsdecode(b"bad-\xff-key"), env=env)
    assert "valid Unicode" in tracked.error and "bad-\\udcff-key" in tracked.error
    script("db", "upgrade", env=env)
    assert "not valid Unicode" in script("show", os.fsdecode(b"bad-\xff-key"), env=env).error


def test_track_email_channel(cli, db_env, db_path):
    assert cli("track", "receipt-1", "--channel", "email").status == 0
    assert query(db_path, "SELECT channel, poll_state FROM messages") == [("email", "waiting")]
    assert cli("track", "x", "--channel", "push").error.startswith("ens-status: track: argument --channel")


def test_show_picks_the_channel(cli, db_env, db_path):
    store = Store(db_path)
    store.upgrade()
    now = int(time.time() * 1000)
    store.track([{"channel": "email", "message_key": "both", "to": "ada@example.net"}], now - 1000, 0)
    store.track([{"channel": "sms", "message_key": "both", "to": "15550100001"}], now, 0)
    store.close()
    assert json.loads(cli("show", "both", "--json").out)["channel"] == "sms"  # the more recently updated
    email = json.loads(cli("show", "both", "--channel", "email", "--json").out)
    assert (email["channel"], email["to"]) == ("email", "ada@example.net")


def test_show_unknown_key_and_missing_database(cli, db_env, db_path):
    missing = cli("show", "nope")
    assert "no database at" in missing.error and "DATABASE_URL" in missing.error
    assert not db_path.exists()
    cli("db", "upgrade")
    assert cli("show", "nope").error == f"ens-status: no message with messageKey nope in {db_path}"


def test_stats_counts_statuses_quarantine_due_and_refused_signatures(cli, db_env, db_path, make_app):
    client = make_app(POLL_GRACE_SECONDS="0").test_client()
    post_ens(client, json.dumps([
        {"eventCategoryType": "TransactionalSendEvents.SmsSent", "timestampUTC": 1767225600000,
         "info": {"messageKey": "sent-1"}},
        "not an event",
    ]).encode())
    assert client.post("/ens", data=b"[]", headers={"x-sfmc-ens-signature": "bm9wZQ=="}).status_code == 401
    store = Store(db_path)
    store.track([{"channel": "sms", "message_key": "waiting-1"}], int(time.time() * 1000) - 120_000, 0)
    store.close()
    document = json.loads(cli("stats", "--json").out)
    assert document["messages"] == 2
    assert document["byStatus"] == {"none": 1, "sent": 1}
    assert document["byPollState"] == {"done": 1, "waiting": 1}
    assert document["quarantined"] == 1
    assert document["signatureFailures"] == 1
    assert document["oldestDue"]["messageKey"] == "waiting-1"
    assert 119 <= document["oldestDue"]["overdueSeconds"] <= 180
    text = cli("stats").out
    assert re.search(r"^oldest due\s+waiting-1 \(sms\), due since \S+Z \(2 min ago\)$", text, re.M)
    assert re.search(r"^bad signatures\s+1 ENS requests refused$", text, re.M)
    assert re.search(r"^by status\s+none 1, sent 1$", text, re.M)


def test_prune_dry_run_then_with_yes(cli, db_env, db_path):
    old = int(time.time() * 1000) - 40 * DAY_MS
    store = Store(db_path)
    store.upgrade()
    store.track([{"channel": "sms", "message_key": "old-1"}], old, 0)
    store.track([{"channel": "sms", "message_key": "new-1"}], int(time.time() * 1000), 0)
    store.close()
    dry = cli("prune", "--dry-run")
    assert dry.status == 0
    assert "older than RETENTION_DAYS=30 days" in dry.out and "1 messages" in dry.out
    assert query(db_path, "SELECT count(*) FROM messages") == [(2,)]
    refused = cli("prune")  # pytest's stdin is not a terminal
    assert "pass --yes" in refused.error
    assert query(db_path, "SELECT count(*) FROM messages") == [(2,)]
    done = cli("prune", "--yes")
    assert done.status == 0 and "1 messages" in done.out
    assert query(db_path, "SELECT message_key FROM messages") == [("new-1",)]


def test_prune_asks_on_a_terminal(tmp_path, db_path, transcript):
    store = Store(db_path)
    store.upgrade()
    store.track([{"channel": "sms", "message_key": "old-1"}], int(time.time() * 1000) - 10 * DAY_MS, 0)
    store.close()
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([str(SCRIPT), "prune"], stdin=terminal, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                   env={"PATH": os.environ["PATH"], "DATABASE_URL": f"sqlite:///{db_path}",
                                        "RETENTION_DAYS": "7"})
        os.write(controller, b"y\n")
        out, err = process.communicate(timeout=30)
    finally:
        os.close(controller)
        os.close(terminal)
    transcript.append(Result(("prune",), process.returncode, out, err))
    assert process.returncode == 0, err
    assert "Delete 1 messages" in err and "[y/N]" in err
    assert out.startswith("deleted, older than RETENTION_DAYS=7 days")
    assert query(db_path, "SELECT count(*) FROM messages") == [(0,)]


def test_dev_env_writes_fresh_secrets_once(cli, tmp_path):
    path = tmp_path / "var" / "dev.env"
    result = cli("dev-env", str(path))
    assert result.status == 0, result.err
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if not line.startswith("#"))
    assert set(values) == {"ENS_SIGNATURE_KEYS", "API_TOKENS", "DATABASE_URL", "LOG_FORMAT", "PORT"}
    assert len(base64.b64decode(values["ENS_SIGNATURE_KEYS"], validate=True)) == 32
    assert len(values["API_TOKENS"]) >= 32
    assert (values["DATABASE_URL"], values["LOG_FORMAT"], values["PORT"]) == (
        "sqlite:///var/ens-status.db", "text", "8000")
    assert Settings.from_env(values).api_tokens == (values["API_TOKENS"],)
    assert path.stat().st_mode & 0o777 == 0o600
    assert values["ENS_SIGNATURE_KEYS"] not in result.out and values["API_TOKENS"] not in result.out
    curl = next(line.strip() for line in result.out.splitlines() if line.strip().startswith("curl "))
    # Run the line as printed, with a `curl` that shows the arguments it would get.
    line = curl.replace("<messageKey>", "mk-0001")
    shell = subprocess.run(["bash", "-c", f"curl() {{ printf '%s\\n' \"$@\"; }}; {line}"], capture_output=True,
                           text=True, cwd=tmp_path)
    assert shell.stdout.splitlines() == ["-H", f"Authorization: Bearer {values['API_TOKENS']}",
                                         "http://127.0.0.1:8000/v1/messages/mk-0001"], shell.stderr
    before = path.read_text()
    again = cli("dev-env", str(path))
    assert again.status == 0 and "left unchanged" in again.out
    assert path.read_text() == before
    other = cli("dev-env", str(tmp_path / "other.env"))
    assert other.status == 0
    assert (tmp_path / "other.env").read_text() != before


# -- usage, environment, help ---------------------------------------------------------------------


COMMANDS = [
    ("db", "upgrade"), ("track",), ("show",), ("prune",), ("stats",), ("dev-env",),
    ("sfmc", "callback", "create"), ("sfmc", "subscribe"), ("sfmc", "callbacks"), ("sfmc", "subscriptions"),
    ("sfmc", "verify"), ("sfmc", "regenerate-key"), ("sfmc", "delete-callback"), ("sfmc", "pause"),
    ("sfmc", "resume"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(cli, command):
    result = cli(*command, "--help")
    assert result.status == 0
    example = result.out.split("example:\n", 1)[1].strip().splitlines()[0]
    assert f"ens-status {' '.join(command)}" in example


def test_usage_mistakes_are_one_line(cli):
    assert cli().error == "ens-status: the following arguments are required: COMMAND (see `ens-status --help`)"
    assert cli("sfmc", "callback", "create").error == (
        "ens-status: sfmc callback create: the following arguments are required: --url "
        "(see `ens-status sfmc callback create --help`)")
    assert "100 to 1000" in cli("sfmc", "callback", "create", "--url", HOOK_URL, "--max-batch-size", "50").error
    assert cli("track").status == 2


def test_bad_environment_variable_stops_with_one_line(script, db_path):
    result = script("stats", env={"DATABASE_URL": f"sqlite:///{db_path}", "RETENTION_DAYS": "a month"})
    assert result.status == 2
    assert result.err == "ens-status: RETENTION_DAYS has a bad value: 'a month'\n"
    secret = script("stats", env={"DATABASE_URL": f"sqlite:///{db_path}", "API_TOKENS": "x",
                                  "MAX_BODY_BYTES": "-1"})
    assert secret.err == "ens-status: MAX_BODY_BYTES has a bad value: '-1'\n"


def test_missing_sfmc_credentials_name_the_variables(cli, db_env, monkeypatch):
    monkeypatch.setenv("SFMC_CLIENT_ID", "someone")
    line = cli("sfmc", "callbacks").error
    assert "SFMC_AUTH_BASE_URL" in line and "SFMC_CLIENT_SECRET" in line and "SFMC_CLIENT_ID," not in line


def test_wrong_client_secret_is_one_line_without_the_secret(script, env, fake):
    result = script("sfmc", "callbacks", env={**env, "SFMC_CLIENT_SECRET": "wrong-secret-4c1d"})
    line = result.error
    assert line.startswith("ens-status: SFMC 401")
    assert "SFMC_CLIENT_SECRET" in line
    assert "wrong-secret-4c1d" not in result.out + result.err
    assert requests(fake, "POST", "/v2/token") and not sfmc_calls(fake)


# -- sfmc callback create -------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "reason"), [
    ("http://hooks.example.test/ens", "is not https"),
    ("https://hooks.example.test:8443/ens", "has a port"),
    ("https://hooks.example.test:443/ens", "has a port"),
    ("https://hooks.example.test/ens?token=1", "has a query string"),
    ("https://hooks.example.test/ens?", "has a query string"),
    ("https:///ens", "has no host"),
])
def test_callback_url_is_checked_before_any_call(cli, env, fake, url, reason):
    line = cli("sfmc", "callback", "create", "--url", url).error
    assert reason in line
    assert fake.requests == []


def test_create_verifies_with_exactly_one_call(cli, env, fake, receiver, db_path):
    receiver()
    result = cli("sfmc", "callback", "create", "--url", HOOK_URL, "--max-batch-size", "500", "--name", "prod")
    assert result.status == 0, result.err
    callback = only_callback(fake)
    assert json.loads(requests(fake, "POST", CALLBACKS)[0].body) == [
        {"callbackName": "prod", "url": HOOK_URL, "maxBatchSize": 500}]
    (verify,) = requests(fake, "POST", VERIFY)
    assert json.loads(verify.body) == {"callbackId": callback.callback_id,
                                       "verificationKey": callback.verification_key}
    assert callback.status == "verified"
    assert result.out.count(callback.signature_key) == 1
    assert f"  ENS_SIGNATURE_KEYS={callback.signature_key}\n" in result.out
    assert f"ENS_CALLBACK_ID={callback.callback_id}" in result.out
    assert f"callback {callback.callback_id} verified" in result.out
    assert query(db_path, "SELECT state, outcome FROM probes") == [("verified", "verified")]


def test_create_with_a_key_already_configured_advises_an_overlap(cli, env, fake, receiver, monkeypatch):
    monkeypatch.setenv("ENS_SIGNATURE_KEYS", SIGNATURE_KEY)
    receiver()
    result = cli("sfmc", "callback", "create", "--url", HOOK_URL)
    assert result.status == 0, result.err
    key = only_callback(fake).signature_key
    assert f"ENS_SIGNATURE_KEYS={key},<current value of ENS_SIGNATURE_KEYS>" in result.out
    assert SIGNATURE_KEY not in result.out + result.err


def test_create_when_the_poller_verified_the_probe_first(cli, env, fake, receiver):
    def poller_gets_there_first(store):
        settings = Settings(sfmc_auth_base_url=fake.url, sfmc_client_id=CLIENT_ID, sfmc_client_secret=CLIENT_SECRET)
        with admin(fake) as client:
            assert Poller(settings, store, client).verify_probes() == "verified"

    receiver(on_probe=poller_gets_there_first)
    result = cli("sfmc", "callback", "create", "--url", HOOK_URL)
    assert result.status == 0, result.err
    assert "verified (by the poller" in result.out
    assert len(requests(fake, "POST", VERIFY)) == 1


def test_create_waits_for_the_outcome_of_a_poller_that_claimed_the_probe(cli, env, fake, receiver):
    def poller_claims_then_verifies_later(store):
        probe = store.claim_probe(int(time.time() * 1000))

        def finish():
            time.sleep(0.6)
            with admin(fake) as client:
                client.verify_callback(probe["callback_id"], probe["verification_key"])
            store.finish_probe(probe["callback_id"], True, "verified", int(time.time() * 1000))

        threading.Thread(target=finish, daemon=True).start()

    receiver(on_probe=poller_claims_then_verifies_later)
    result = cli("sfmc", "callback", "create", "--url", HOOK_URL)
    assert result.status == 0, result.err
    assert "verified (by the poller" in result.out
    assert "the poller is verifying the probe" in result.err
    assert len(requests(fake, "POST", VERIFY)) == 1


def test_create_needs_the_receivers_database_unless_told_not_to_wait(cli, env, fake, receiver, db_path):
    line = cli("sfmc", "callback", "create", "--url", HOOK_URL).error
    assert f"no database at {db_path}" in line and "--wait 0" in line
    assert fake.requests == []
    receiver(db=db_path.parent / "receiver.db")
    result = cli("sfmc", "callback", "create", "--url", HOOK_URL, "--wait", "0")
    assert result.status == 0, result.err
    assert "not waiting for verification" in result.out
    assert requests(fake, "POST", VERIFY) == []


def test_progress_spins_on_a_terminal_only():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress(stream, "waiting for the probe")
        progress.tick()
        progress.tick("the poller is verifying the probe")
        progress.done()
    assert terminal.getvalue() == ("\r/ waiting for the probe 0s\033[K\r- the poller is verifying the probe 0s\033[K"
                                   "\r\033[K")
    assert pipe.getvalue() == "waiting for the probe…\nthe poller is verifying the probe…\n"


def test_unreachable_receiver_makes_create_fail_with_what_to_do(cli, env, fake, db_path):
    Store(db_path).upgrade()  # the database exists, but nothing answers at the URL
    result = cli("sfmc", "callback", "create", "--url", HOOK_URL)
    line = result.error
    callback = only_callback(fake)
    assert line.startswith("ens-status: SFMC 400 errorcode 30000: "
                           "MCMS_UWH_Runtime_GeneralFailure_probeCallbackLiveness")
    assert f"check that {HOOK_URL} reaches the running receiver" in line
    assert f"delete-callback --callback-id {callback.callback_id} --yes" in line
    assert callback.signature_key not in result.out + result.err
    assert requests(fake, "POST", VERIFY) == []


def test_probe_stored_in_another_database_times_out_with_advice(cli, env, fake, receiver, db_path, tmp_path):
    Store(db_path).upgrade()
    receiver(db=tmp_path / "elsewhere.db")
    started = time.monotonic()
    result = cli("sfmc", "callback", "create", "--url", HOOK_URL, "--wait", "0.5")
    assert time.monotonic() - started < 5
    line = result.error
    callback_id = only_callback(fake).callback_id
    assert "never stored the verification probe" in line and "DATABASE_URL" in line
    assert f"`ens-status sfmc verify --callback-id {callback_id}` within 4 hours" in line
    assert result.out.count(only_callback(fake).signature_key) == 1  # the key is never lost
    assert requests(fake, "POST", VERIFY) == []


def test_failed_verification_can_be_retried_with_sfmc_verify(cli, env, fake, receiver, db_path):
    receiver()
    fake.fail_next("POST", VERIFY, 500, {"message": "Internal error", "errorcode": 30000})
    failed = cli("sfmc", "callback", "create", "--url", HOOK_URL)
    callback = only_callback(fake)
    line = failed.error
    assert "SFMC 500 errorcode 30000: Internal error" in line
    assert f"run `ens-status sfmc verify --callback-id {callback.callback_id}` before 20" in line
    assert query(db_path, "SELECT state FROM probes") == [("failed",)]
    retried = cli("sfmc", "verify", "--callback-id", callback.callback_id)
    assert retried.status == 0, retried.err
    assert f"callback {callback.callback_id} verified" in retried.out
    assert callback.status == "verified"
    assert len(requests(fake, "POST", VERIFY)) == 2
    again = cli("sfmc", "verify", "--callback-id", callback.callback_id)
    assert "already verified" in again.out
    assert len(requests(fake, "POST", VERIFY)) == 2


def test_verify_without_a_stored_probe(cli, env, fake, receiver, tmp_path, db_path):
    Store(db_path).upgrade()
    receiver(db=tmp_path / "elsewhere.db")
    cli("sfmc", "callback", "create", "--url", HOOK_URL, "--wait", "0")
    callback_id = only_callback(fake).callback_id
    line = cli("sfmc", "verify").error
    assert f"no verification probe of callback {callback_id} is stored in {db_path}" in line


# -- choosing the callback ------------------------------------------------------------------------


def test_several_callbacks_need_a_callback_id(cli, env, fake, receiver, monkeypatch):
    first = verified_callback(cli, receiver)
    second = verified_callback(cli, receiver, "https://hooks.example.test/ens/")
    line = cli("sfmc", "subscriptions").error
    assert "this account has 2 ENS callbacks; choose one with --callback-id (or set ENS_CALLBACK_ID)" in line
    assert first in line and second in line
    assert requests(fake, "GET", SUBSCRIPTIONS + "-by-cb/" + first) == []
    assert cli("sfmc", "subscriptions", "--callback-id", second).status == 0
    monkeypatch.setenv("ENS_CALLBACK_ID", first)
    assert cli("sfmc", "subscriptions").status == 0
    assert len(requests(fake, "GET", f"/platform/v1/ens-subscriptions-by-cb/{first}")) == 1
    listing = cli("sfmc", "callbacks")
    assert re.search(rf"^\*\s+{first}\s+\S+\s+verified\s+1000\s+{re.escape(HOOK_URL)}$", listing.out, re.M)


def test_no_callback_at_all(cli, env, fake):
    assert "has no ENS callback: create one with" in cli("sfmc", "subscribe").error


# -- subscriptions --------------------------------------------------------------------------------


def test_subscribe_defaults_to_every_transactional_type_with_unique_names(cli, env, fake, receiver):
    callback_id = verified_callback(cli, receiver)
    first, second = cli("sfmc", "subscribe"), cli("sfmc", "subscribe")
    assert first.status == 0 and second.status == 0, first.err + second.err
    bodies = [json.loads(r.body) for r in requests(fake, "POST", SUBSCRIPTIONS)]
    assert [len(b) for b in bodies] == [1, 1]
    for (body,) in bodies:
        assert body["callbackId"] == callback_id
        assert body["eventCategoryTypes"] == ALL_TRANSACTIONAL_TYPES
        assert body["filters"] == []
        assert callback_id[:8] in body["subscriptionName"]
    assert bodies[0][0]["subscriptionName"] != bodies[1][0]["subscriptionName"]
    listing = cli("sfmc", "subscriptions", "--json")
    assert len(json.loads(listing.out)) == 2


def test_subscribe_with_types_filters_and_name(cli, env, fake, receiver):
    verified_callback(cli, receiver)
    result = cli("sfmc", "subscribe", "--types", "SMSSent", "TransactionalSendEvents.SmsDelivered",
                 "--filter", "definitionKey=otp-sms", "--name", "otp-only")
    assert result.status == 0, result.err
    (body,) = json.loads(requests(fake, "POST", SUBSCRIPTIONS)[0].body)
    assert body["subscriptionName"] == "otp-only"
    assert body["eventCategoryTypes"] == ["TransactionalSendEvents.SmsSent", "TransactionalSendEvents.SmsDelivered"]
    assert body["filters"] == ["definitionKey=otp-sms"]
    assert "ENS spells it this way" in result.err and "no filter items" in result.err
    listing = cli("sfmc", "subscriptions").out
    assert re.search(r"^\S+\s+otp-only\s+active\s+SmsSent,SmsDelivered\s+definitionKey=otp-sms$", listing, re.M)


@pytest.mark.parametrize(("args", "reason"), [
    (("--filter", "definitionKey"), "a filter is name=value"),
    (("--filter", "=otp"), "a filter is name=value"),
    (("--types", "SmsQueued"), "ENS has no queued event"),
    (("--types", "Delivered"), "not an event type"),
])
def test_subscribe_refuses_bad_types_and_filters_before_any_call(cli, env, fake, args, reason):
    assert reason in cli("sfmc", "subscribe", "--callback-id", "x", *args).error
    assert fake.requests == []


def test_subscribe_to_an_unverified_callback_says_to_verify(cli, env, fake, receiver, tmp_path, db_path):
    Store(db_path).upgrade()
    receiver(db=tmp_path / "elsewhere.db")
    cli("sfmc", "callback", "create", "--url", HOOK_URL, "--wait", "0")
    line = cli("sfmc", "subscribe").error
    assert line.startswith("ens-status: SFMC 400 errorcode 30001")
    assert "verify the callback first: `ens-status sfmc verify --callback-id" in line


def test_pause_and_resume_every_subscription_of_the_callback(cli, env, fake, receiver):
    verified_callback(cli, receiver)
    cli("sfmc", "subscribe", "--name", "a")
    cli("sfmc", "subscribe", "--name", "b", "--types", "EmailSent")
    paused = cli("sfmc", "pause")
    assert paused.status == 0 and "never replays" in paused.out
    bodies = [json.loads(r.body)[0] for r in requests(fake, "PUT", SUBSCRIPTIONS)]
    assert [(b["subscriptionName"], b["status"]) for b in bodies] == [("a", "paused"), ("b", "paused")]
    assert bodies[1]["eventCategoryTypes"] == ["TransactionalSendEvents.EmailSent"]
    assert all(b["statusReason"] for b in bodies)
    assert {s.status for s in fake.registry.subscriptions.values()} == {"paused"}
    assert "already paused" in cli("sfmc", "pause").out
    assert len(requests(fake, "PUT", SUBSCRIPTIONS)) == 2
    assert cli("sfmc", "resume").status == 0
    assert {s.status for s in fake.registry.subscriptions.values()} == {"active"}


# -- destructive commands -------------------------------------------------------------------------


def test_regenerate_key_warns_and_shows_the_overlap(cli, env, fake, receiver):
    verified_callback(cli, receiver)
    old = only_callback(fake).signature_key
    assert "pass --yes" in cli("sfmc", "regenerate-key").error
    assert requests(fake, "PUT", "/platform/v1/ens-regenerate") == []
    result = cli("sfmc", "regenerate-key", "--yes")
    assert result.status == 0, result.err
    new = only_callback(fake).signature_key
    assert new != old
    (call,) = requests(fake, "PUT", "/platform/v1/ens-regenerate")
    assert json.loads(call.body) == [{"callbackId": only_callback(fake).callback_id}]
    assert result.out.count(new) == 1 and old not in result.out
    assert f"ENS_SIGNATURE_KEYS={new},<old key>" in result.out
    assert "the old key stopped working now" in result.out


def test_regenerate_key_without_a_terminal_refuses(script, env, fake, receiver, cli):
    verified_callback(cli, receiver)
    result = script("sfmc", "regenerate-key", env=env)
    assert result.error == (f"ens-status: Regenerate the signatureKey of callback {only_callback(fake).callback_id}"
                            "? SFMC deactivates the current key at once: the receiver refuses every batch (401, then "
                            "ENS drops it) until it has the new key: not done, because this needs confirmation and "
                            "stdin is not a terminal; pass --yes to confirm")
    assert requests(fake, "PUT", "/platform/v1/ens-regenerate") == []


def test_delete_callback_explains_the_409_then_deletes_with_subscriptions(cli, env, fake, receiver):
    callback_id = verified_callback(cli, receiver)
    cli("sfmc", "subscribe", "--name", "all-sends")
    subscription_id = next(iter(fake.registry.subscriptions))
    line = cli("sfmc", "delete-callback", "--yes").error
    assert line.startswith("ens-status: SFMC 409 errorcode 30002:")
    assert f"still has 1 subscription(s): all-sends ({subscription_id}); delete them first or run again with " \
           "--with-subscriptions" in line
    assert "pass --yes" in cli("sfmc", "delete-callback", "--with-subscriptions").error
    done = cli("sfmc", "delete-callback", "--with-subscriptions", "--yes")
    assert done.status == 0, done.err
    deletes = [r.raw_path for r in fake.requests if r.method == "DELETE"]
    assert deletes == [f"{CALLBACKS}/{callback_id}", f"{SUBSCRIPTIONS}/{subscription_id}",
                       f"{CALLBACKS}/{callback_id}"]
    assert fake.registry.callbacks == {}


# -- SFMC's errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "errorcode", "message", "expected"), [
    (400, 10001, "MCMS_UWH_Validation_InvalidDataType: bad", "ens-status: SFMC 400 errorcode 10001: "
                                                               "MCMS_UWH_Validation_InvalidDataType: bad"),
    (403, 0, "Insufficient privileges", "ens-status: SFMC 403 errorcode 0: Insufficient privileges; the installed "
                                        "package needs the Event Notifications permissions"),
    (409, 30002, "conflict", "ens-status: SFMC 409 errorcode 30002: conflict"),
    (500, 30000, "Internal error", "ens-status: SFMC 500 errorcode 30000: Internal error; SFMC or the network "
                                   "failed, try again in a moment"),
])
def test_sfmc_errors_are_one_line_with_errorcode_and_message(script, env, fake, status, errorcode, message,
                                                             expected):
    fake.fail_next("GET", CALLBACKS, status, {"message": message, "errorcode": errorcode, "documentation": ""})
    result = script("sfmc", "callbacks", env=env)
    assert result.status == 1
    assert result.error.startswith(expected)
    assert result.err == result.error + "\n"


def test_create_duplicate_url_points_to_the_listing(cli, env, fake, receiver):
    verified_callback(cli, receiver)
    line = cli("sfmc", "callback", "create", "--url", HOOK_URL).error
    assert "errorcode 30004" in line and "see `ens-status sfmc callbacks`" in line


# -- the whole set-up against the Procfile's gunicorn --------------------------------------------


@pytest.mark.timeout(60)
def test_set_up_flow_with_the_real_receiver(script, env, fake, tmp_path, db_path):
    web_env = {"API_TOKENS": API_TOKEN, "LOG_FORMAT": "text"}
    with run_web(db_path, web_env, workers=2) as (web_url, web_log):
        fake.map_delivery(HOOK_URL, f"{web_url}/ens")
        created = script("sfmc", "callback", "create", "--url", HOOK_URL, env=env)
        assert created.status == 0, created.err + web_log()
        subscribed = script("sfmc", "subscribe", env=env)
        assert subscribed.status == 0, subscribed.err
    callback = only_callback(fake)
    assert callback.status == "verified"
    (verify,) = requests(fake, "POST", VERIFY)
    assert json.loads(verify.body) == {"callbackId": callback.callback_id,
                                       "verificationKey": callback.verification_key}
    assert query(db_path, "SELECT callback_id, state FROM probes") == [(callback.callback_id, "verified")]
    (body,) = json.loads(requests(fake, "POST", SUBSCRIPTIONS)[0].body)
    assert (body["callbackId"], body["eventCategoryTypes"]) == (callback.callback_id, ALL_TRANSACTIONAL_TYPES)
    assert "waiting for the receiver to store the verification probe" in created.err  # plain: not a terminal

    printed = re.search(r"^  ENS_SIGNATURE_KEYS=(\S+)$", created.out, re.M).group(1)
    with run_web(db_path, {**web_env, "ENS_SIGNATURE_KEYS": printed}, workers=2) as (web_url, web_log):
        fake.map_delivery(HOOK_URL, f"{web_url}/ens")
        fake.send("sms", "e2e-0001", "15550100004", "otp")  # digit 4: SmsSent, then SmsDelivered
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if query(db_path, "SELECT status FROM messages WHERE message_key = 'e2e-0001'") == [("delivered",)]:
                break
            time.sleep(0.1)
        shown = script("show", "e2e-0001", "--json", env=env)
    document = json.loads(shown.out)
    assert document["status"] == "delivered", web_log()
    assert [h["eventCategoryType"] for h in document["history"]] == [
        "TransactionalSendEvents.SmsSent", "TransactionalSendEvents.SmsDelivered"]
