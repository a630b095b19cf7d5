"""`ens-status`: the command line (SPEC §6).

Database commands work on DATABASE_URL, `sfmc …` commands on the account of the SFMC_*
variables: the same environment as the web and poller processes. Results go to stdout, progress
and notes to stderr. A failure ends the command with one line on stderr and a non-zero status,
never a traceback; no secret is ever printed except a signatureKey at the moment SFMC issues it.

Exit status: 0 done, 1 failed (or refused), 2 bad usage or a bad environment variable.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import secrets
import shlex
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from receiver import status as model
from receiver.config import ConfigError, Settings
from receiver.events import is_text
from receiver.messages import InvalidItem, history_json, message_json, tracked_item
from receiver.store import Store, StoreError

from .sfmc import AuthError, Rejected, Retryable, SFMCClient, SFMCError, client_from_settings

PROG = "ens-status"
EXIT_FAILED, EXIT_USAGE = 1, 2

# Every transactional SMS and e-mail event ENS emits, spelled as ENS expects (sfmc-api.md §4).
DEFAULT_EVENT_TYPES = tuple(f"TransactionalSendEvents.{name}" for name in (
    "SmsSent", "SmsNotSent", "SmsTransient", "SmsDelivered", "SmsBounced",
    "EmailSent", "EmailNotSent", "EmailBounced",
))
_CANONICAL_TYPES = {name.lower(): name for name in DEFAULT_EVENT_TYPES}
# SFMC documents no filterable items for these (sfmc-api.md §3.6).
_UNFILTERABLE_TYPES = {f"TransactionalSendEvents.{name}" for name in ("SmsTransient", "SmsDelivered", "SmsBounced")}

VERIFY_WINDOW_MS = 4 * 3600 * 1000
# A claim this old with no outcome belongs to a verifier that died; `sfmc verify` may take it over.
STALE_CLAIM_MS = 60_000
WAIT_STEP_SECONDS = 0.2
_PROBE_FAILURE = "probeCallbackLiveness"


class CLIError(Exception):
    """Ends the command: `str()` is the one line the user sees."""

    def __init__(self, message: str, exit_status: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_status = exit_status


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line instead of the usage block."""

    def error(self, message: str):
        command = self.prog[len(PROG):].strip()
        raise CLIError(f"{command + ': ' if command else ''}{message} (see `{self.prog} --help`)", EXIT_USAGE)


# -- the command's surroundings ---------------------------------------------------------------

class Context:
    """Settings, the database and the SFMC client, each opened only when a command needs it."""

    def __init__(self, settings: Settings, stdout=None, stderr=None):
        self.settings = settings
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._store: Store | None = None
        self._client: SFMCClient | None = None

    def out(self, line: str = "") -> None:
        print(line, file=self.stdout)

    def note(self, line: str) -> None:
        print(line, file=self.stderr)

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    @property
    def database_path(self) -> Path:
        return self.settings.database_path

    def store(self, *, must_exist: bool = False) -> Store:
        """The database, schema upgraded as the processes do; `must_exist` refuses to create one."""
        if self._store is None:
            path = self.database_path
            if must_exist and not path.exists():
                raise CLIError(f"no database at {path} (DATABASE_URL={self.settings.database_url}): run this where "
                               "the receiver's database is, or create one with `ens-status db upgrade`")
            self._store = Store(path, busy_timeout=10.0)
            self._store.upgrade()
        return self._store

    def client(self) -> SFMCClient:
        if self._client is None:
            settings = self.settings
            missing = [name for name, value in (
                ("SFMC_AUTH_BASE_URL", settings.sfmc_auth_base_url), ("SFMC_CLIENT_ID", settings.sfmc_client_id),
                ("SFMC_CLIENT_SECRET", settings.sfmc_client_secret)) if not value]
            if missing:
                raise CLIError(f"SFMC credentials are not set: set {', '.join(missing)} (from the installed "
                               "package; SFMC_ACCOUNT_ID too for a business unit)")
            self._client = client_from_settings(settings)
        return self._client

    def callback_id(self, args: argparse.Namespace) -> str:
        """--callback-id, else ENS_CALLBACK_ID, else the account's only callback."""
        if getattr(args, "callback_id", None):
            return args.callback_id
        if self.settings.ens_callback_id:
            return self.settings.ens_callback_id
        callbacks = self.client().callbacks()
        if not callbacks:
            raise CLIError("this account has no ENS callback: create one with "
                           "`ens-status sfmc callback create --url https://<host>/ens`")
        if len(callbacks) > 1:
            listed = "; ".join(f"{c.get('callbackId')} ({c.get('callbackName')}, {c.get('url')}, {c.get('status')})"
                               for c in callbacks)
            raise CLIError(f"this account has {len(callbacks)} ENS callbacks; choose one with --callback-id "
                           f"(or set ENS_CALLBACK_ID): {listed}")
        return callbacks[0]["callbackId"]

    def confirm(self, question: str, yes: bool) -> None:
        """Go on only with --yes or a 'y' typed at a terminal."""
        if yes:
            return
        if not sys.stdin or not sys.stdin.isatty():
            raise CLIError(f"{question.rstrip('?')}: not done, because this needs confirmation and stdin is not "
                           "a terminal; pass --yes to confirm")
        self.stderr.write(f"{question} [y/N] ")
        self.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise CLIError("cancelled: nothing was changed")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._store is not None:
            self._store.close()


class Progress:
    """A spinner on a terminal; one plain line otherwise."""

    FRAMES = "|/-\\"

    def __init__(self, stream, text: str):
        self.stream = stream
        self.text = text
        self.started = time.monotonic()
        self.frame = 0
        self.live = stream.isatty()
        if not self.live:
            print(f"{text}…", file=stream)

    def tick(self, text: str | None = None) -> None:
        if text and text != self.text:
            self.text = text
            if not self.live:
                print(f"{text}…", file=self.stream)
        if self.live:
            self.frame += 1
            elapsed = time.monotonic() - self.started
            self.stream.write(f"\r{self.FRAMES[self.frame % 4]} {self.text} {elapsed:.0f}s\033[K")
            self.stream.flush()

    def done(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.live = False


# -- small helpers ------------------------------------------------------------------------------

def shown(value: object) -> str:
    """A value for a terminal: '—' for nothing, control characters escaped."""
    if value is None or value == "":
        return "—"
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[shown(cell) for cell in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def duration(ms: int) -> str:
    seconds = max(0, ms) // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def as_json(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def explain(error: SFMCError) -> str:
    """SFMC's one line, plus what to check when the cause is on our side."""
    line = str(error)
    if isinstance(error, AuthError):
        return f"{line}; check SFMC_CLIENT_ID, SFMC_CLIENT_SECRET, SFMC_ACCOUNT_ID and SFMC_AUTH_BASE_URL"
    if error.status == 403:
        return (f"{line}; the installed package needs the Event Notifications permissions "
                "(Callbacks and Subscriptions: read, create, update, delete)")
    if isinstance(error, Retryable):
        return f"{line}; SFMC or the network failed, try again in a moment"
    return line


def check_callback_url(url: str) -> str:
    """The URL as SFMC will accept it (https, no port, no query), checked before any call."""
    def refuse(reason: str) -> CLIError:
        return CLIError(f"--url: {reason}; SFMC accepts only https://host/path callback URLs")

    if not url or any(ch.isspace() for ch in url):
        raise refuse("the URL is empty or contains spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse(f"{shown(url)} is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        raise refuse("the URL must not contain a user or password")
    if parts.scheme.lower() != "https":
        raise refuse(f"{shown(url)} is not https (SFMC refuses plain http)")
    if not parts.hostname:
        raise refuse(f"{shown(url)} has no host")
    if port is not None or parts.netloc.endswith(":"):
        raise refuse(f"{shown(url)} has a port (SFMC always uses 443: put a proxy or load balancer in front)")
    if "?" in url:
        raise refuse(f"{shown(url)} has a query string")
    if "#" in url:
        raise refuse(f"{shown(url)} has a fragment")
    return url


def event_type(value: str) -> str:
    """An event type in ENS's spelling; a bare transactional name gets its category."""
    text = value.strip()
    full = text if "." in text else f"TransactionalSendEvents.{text}"
    if full.lower() in _CANONICAL_TYPES:
        return _CANONICAL_TYPES[full.lower()]
    if full.lower() in ("transactionalsendevents.smsqueued", "transactionalsendevents.emailqueued"):
        raise CLIError(f"--types {shown(value)}: ENS has no queued event (only the status GET reports queued)")
    category, _, name = full.partition(".")
    if "." not in text or not category or not name or any(ch.isspace() for ch in full):
        raise CLIError(f"--types {shown(value)}: not an event type; use the full name, "
                       "e.g. TransactionalSendEvents.SmsDelivered")
    return full


def subscription_filter(value: str) -> str:
    name, sep, wanted = value.partition("=")
    if not sep or not name.strip() or not wanted:
        raise CLIError(f"--filter {shown(value)}: a filter is name=value, e.g. definitionKey=otp-sms")
    return value


def batch_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 100 <= size <= 1000:
        raise argparse.ArgumentTypeError("SFMC accepts 100 to 1000 events per batch")
    return size


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return number


# -- database commands --------------------------------------------------------------------------

def db_upgrade(args, ctx: Context) -> int:
    store = Store(ctx.database_path, busy_timeout=30.0)
    try:
        version = store.upgrade()
    finally:
        store.close()
    ctx.out(f"database {ctx.database_path}: schema version {version}")
    return 0


def track(args, ctx: Context) -> int:
    # The query API's own rules (POST /v1/messages), so both ways of tracking accept the same keys.
    now = ctx.now_ms()
    items = []
    for key in dict.fromkeys(args.keys):
        try:
            items.append(tracked_item({"messageKey": key, "channel": args.channel,
                                       "definitionKey": args.definition_key, "to": args.to}, now))
        except InvalidItem as error:
            raise CLIError(f"cannot track {shown(key[:40])}: {error.message}; nothing was tracked") from None
    grace_ms = int(ctx.settings.poll_grace_seconds * 1000)
    count = ctx.store().track(items, now, grace_ms)
    ctx.out(f"tracked {count} {args.channel} message{'s' if count != 1 else ''} (keys already tracked are unchanged); "
            f"the poller asks SFMC about any that has no event after {duration(grace_ms)}")
    return 0


def show(args, ctx: Context) -> int:
    store = ctx.store(must_exist=True)
    if not is_text(args.key):
        raise CLIError(f"messageKey {shown(args.key)} is not valid Unicode: check the terminal's encoding")
    row = store.message(args.key, args.channel)
    if row is None:
        where = f" on channel {args.channel}" if args.channel else ""
        raise CLIError(f"no message with messageKey {shown(args.key)}{where} in {ctx.database_path}")
    document = message_json(row, ctx.now_ms())
    document["history"] = [history_json(entry) for entry in store.history(row["channel"], row["message_key"])]
    if args.json:
        ctx.out(as_json(document))
        return 0
    status = document["status"] or "no status yet"
    if document["statusAt"]:
        status += f" at {document['statusAt']}"
    if document["statusCode"] or document["statusMessage"]:
        status += f" (code {shown(document['statusCode'])}: {shown(document['statusMessage'])})"
    poll = document["poll"]
    poll_line = f"{poll['state']}{' (' + poll['reason'] + ')' if poll['reason'] else ''}, {poll['attempts']} " \
                f"GET{'s' if poll['attempts'] != 1 else ''}, last {shown(poll['lastPolledAt'])}, " \
                f"next {shown(poll['nextPollAt'])}"
    fields = [
        ("messageKey", document["messageKey"]), ("channel", document["channel"]), ("status", status),
        ("eventType", document["eventCategoryType"]), ("source", document["source"]), ("to", document["to"]),
        ("subscriberKey", document["subscriberKey"]), ("definitionKey", document["definitionKey"]),
        ("trackedAt", document["trackedAt"]), ("sentAt", document["sentAt"]), ("updatedAt", document["updatedAt"]),
        ("poll", poll_line),
    ]
    for name, value in fields:
        ctx.out(f"{name:<14} {shown(value)}")
    history = document["history"]
    ctx.out()
    ctx.out(f"history: {len(history)} observation{'s' if len(history) != 1 else ''}, in arrival order")
    if history:
        ctx.out(table(
            ("RECEIVED", "TYPE", "STATUS", "STATUS AT", "CODE", "SOURCE", "APPLIED", "NOTE"),
            [(h["receivedAt"], h["eventCategoryType"].removeprefix("TransactionalSendEvents."), h["status"],
              h["statusAt"], h["statusCode"], h["source"], "yes" if h["applied"] else "no", h["reason"])
             for h in history]))
    return 0


def prune(args, ctx: Context) -> int:
    store = ctx.store(must_exist=True)
    days = ctx.settings.retention_days
    before = ctx.now_ms() - int(days * 86400_000)
    counts = store.prune(before, dry_run=True)
    listed = ", ".join(f"{count} {name}" for name, count in counts.items())
    horizon = f"older than RETENTION_DAYS={days:g} days (before {model.format_utc(before)})"
    if args.dry_run:
        ctx.out(f"would delete, {horizon}: {listed}")
        return 0
    if not any(counts.values()):
        ctx.out(f"nothing to delete {horizon}")
        return 0
    ctx.confirm(f"Delete {listed}, {horizon}?", args.yes)
    counts = store.prune(before)
    ctx.out(f"deleted, {horizon}: {', '.join(f'{count} {name}' for name, count in counts.items())}")
    return 0


def stats(args, ctx: Context) -> int:
    store = ctx.store(must_exist=True)
    now = ctx.now_ms()
    data = store.stats(now)
    due = store.due(now, 1)
    oldest = None
    if due:
        row = due[0]
        oldest = {"messageKey": row["message_key"], "channel": row["channel"],
                  "trackedAt": model.format_utc(row["tracked_at"]), "dueSince": model.format_utc(row["next_poll_at"]),
                  "overdueSeconds": (now - row["next_poll_at"]) // 1000}
    counters = data["counters"]
    document = {
        "database": str(ctx.database_path),
        "messages": data["messages"],
        "events": data["events"],
        "byStatus": data["by_status"],
        "byPollState": data["by_poll_state"],
        "quarantined": data["quarantined"],
        "signatureFailures": counters.get("signature_failures", 0),
        "oldestDue": oldest,
        "nextPollAt": model.format_utc(data["next_poll_at"]),
        "counters": counters,
    }
    if args.json:
        ctx.out(as_json(document))
        return 0

    def listing(counts: dict) -> str:
        return ", ".join(f"{name} {count}" for name, count in counts.items()) or "—"

    if oldest:
        waiting = (f"{shown(oldest['messageKey'])} ({oldest['channel']}), due since {oldest['dueSince']} "
                   f"({duration(oldest['overdueSeconds'] * 1000)} ago)")
    elif document["nextPollAt"]:
        waiting = f"none due; the next poll is at {document['nextPollAt']}"
    else:
        waiting = "none waiting"
    rows = [
        ("database", document["database"]),
        ("messages", f"{document['messages']} ({document['events']} events stored)"),
        ("by status", listing(document["byStatus"])),
        ("by poll state", listing(document["byPollState"])),
        ("oldest due", waiting),
        ("quarantined", f"{document['quarantined']} items kept raw"),
        ("bad signatures", f"{document['signatureFailures']} ENS requests refused"),
        ("counters", listing({k: v for k, v in counters.items() if k != "signature_failures"})),
    ]
    for name, value in rows:
        ctx.out(f"{name:<15} {value}")
    return 0


def dev_env(args, ctx: Context) -> int:
    path = Path(args.path)
    if path.exists():
        ctx.out(f"{path} exists: left unchanged (delete it to get new random keys)")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    port = 8000
    lines = [
        "# Local development only, written by `ens-status dev-env`: random secrets, never for production.",
        f"ENS_SIGNATURE_KEYS={base64.b64encode(secrets.token_bytes(32)).decode('ascii')}",
        f"API_TOKENS={secrets.token_urlsafe(32)}",
        "DATABASE_URL=sqlite:///var/ens-status.db",
        "LOG_FORMAT=text",
        f"PORT={port}",
    ]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(lines) + "\n")
    quoted = shlex.quote(str(path))
    ctx.out(f"wrote {path}: a random ENS_SIGNATURE_KEYS and API_TOKENS, DATABASE_URL=sqlite:///var/ens-status.db, "
            f"LOG_FORMAT=text, PORT={port}")
    ctx.out("once the receiver runs, ask it about a message (the token is read from the file):")
    ctx.out(f"  curl -H \"Authorization: Bearer $(sed -n 's/^API_TOKENS=//p' {quoted})\" "
            f"http://127.0.0.1:{port}/v1/messages/<messageKey>")
    return 0


# -- SFMC: callbacks ----------------------------------------------------------------------------

def callback_create(args, ctx: Context) -> int:
    url = check_callback_url(args.url)
    if args.wait > 0 and not ctx.database_path.exists():
        raise CLIError(f"no database at {ctx.database_path} (DATABASE_URL={ctx.settings.database_url}): the receiver "
                       "stores SFMC's verification probe in its database, so run this where that database is, or "
                       "pass --wait 0 and let the poller verify")
    store = ctx.store() if args.wait > 0 else None
    client = ctx.client()
    if urlsplit(url).path.rstrip("/") != "/ens":
        ctx.note(f"note: the receiver serves POST /ens; {shown(url)} reaches it only through a proxy that maps "
                 "the path")
    name = args.name or f"ens-status-{urlsplit(url).hostname}"
    try:
        created = client.create_callback(name, url, args.max_batch_size)
    except SFMCError as error:
        raise CLIError(_create_failure(error, url)) from None
    callback_id, key = created.get("callbackId"), created.get("signatureKey")
    if not callback_id or not key:
        raise CLIError("SFMC created the callback but its answer has no callbackId or signatureKey: "
                       "see `ens-status sfmc callbacks`, then delete it and create it again")
    ctx.out(f"callback created: {callback_id} ({created.get('callbackName', name)}, {created.get('url', url)}, "
            f"maxBatchSize {created.get('maxBatchSize', args.max_batch_size or 1000)})")
    ctx.out("its signatureKey is shown this once and never again; give it to the receiver and restart it:")
    if ctx.settings.ens_signature_keys:
        ctx.out(f"  ENS_SIGNATURE_KEYS={key},<current value of ENS_SIGNATURE_KEYS>")
        ctx.out("  (the receiver already has a key: keep it while both are in use, drop it once events "
                "signed with the new one arrive)")
    else:
        ctx.out(f"  ENS_SIGNATURE_KEYS={key}")
    ctx.out(f"  ENS_CALLBACK_ID={callback_id}")
    if store is None:
        ctx.out(f"not waiting for verification: the poller verifies the probe if it has SFMC credentials, or run "
                f"`ens-status sfmc verify --callback-id {callback_id}` within 4 hours")
        return 0
    verify_probe(ctx, store, client, callback_id, args.wait, url=url)
    ctx.out(f"next: `ens-status sfmc subscribe --callback-id {callback_id}` (events may take 2 minutes to flow)")
    return 0


def _create_failure(error: SFMCError, url: str) -> str:
    line = explain(error)
    if _PROBE_FAILURE in error.sfmc_message:
        found = re.search(r"CallbackId is ([0-9A-Za-z-]+)", error.sfmc_message)
        delete = (f"`ens-status sfmc delete-callback --callback-id {found.group(1)} --yes`" if found
                  else "`ens-status sfmc delete-callback`")
        return (f"{line} — the receiver did not answer SFMC's verification probe with 200 within 30 s: check that "
                f"{url} reaches the running receiver, then delete the failed callback with {delete} and create it "
                "again")
    if error.errorcode == 30004 or "duplicate" in error.sfmc_message.lower():
        return f"{line} — a callback with this URL exists: see `ens-status sfmc callbacks`"
    return line


def verify_probe(ctx: Context, store: Store, client: SFMCClient, callback_id: str, timeout: float,
                 url: str | None = None) -> None:
    """Wait for the stored probe, claim it and call ens-verify, or wait for whoever claimed it.

    The claim is the poller's (`Store.claim_probe`), so one probe costs exactly one ens-verify.
    """
    deadline = time.monotonic() + timeout
    progress = Progress(ctx.stderr, f"waiting for the receiver to store the verification probe of {callback_id}")
    probe = None
    try:
        while True:
            try:
                probe = store.probe(callback_id)
                if probe is not None and probe["state"] == "pending":
                    claimed = store.claim_probe(ctx.now_ms(), callback_id)
                    if claimed is not None:
                        progress.done()
                        _call_verify(ctx, store, client, claimed)
                        return
                    continue  # the poller took it between our read and our claim
            except StoreError:
                pass  # the database is busy; look again
            if probe is not None and probe["state"] in ("verified", "failed"):
                progress.done()
                _report_outcome(ctx, probe)
                return
            if time.monotonic() >= deadline:
                break
            if probe is not None and probe["state"] == "claimed":
                progress.tick("the poller is verifying the probe; waiting for its outcome")
            else:
                progress.tick()
            time.sleep(WAIT_STEP_SECONDS)
    finally:
        progress.done()
    retry = f"`ens-status sfmc verify --callback-id {callback_id}`"
    if probe is None:
        reached = f"{url} answered SFMC, but " if url else ""
        raise CLIError(f"{reached}the receiver never stored the verification probe of callback {callback_id} in "
                       f"{ctx.database_path} within {timeout:g} s: check that {url or 'the callback URL'} reaches "
                       f"this receiver and that DATABASE_URL is its database, then run {retry} within 4 hours, "
                       "or delete the callback and create it again")
    raise CLIError(f"the poller claimed the probe of callback {callback_id} but reported no outcome within "
                   f"{timeout:g} s: see its log and `ens-status sfmc callbacks`; if the callback is still unverified, "
                   f"run {retry} before {_deadline(probe)}")


def _call_verify(ctx: Context, store: Store, client: SFMCClient, probe: dict) -> None:
    callback_id = probe["callback_id"]
    try:
        client.verify_callback(callback_id, probe["verification_key"])
    except SFMCError as error:
        _finish(ctx, store, callback_id, False, str(error))
        raise CLIError(f"verification of callback {callback_id} failed: {explain(error)} — "
                       f"{_after_failure(callback_id, probe, retryable=isinstance(error, Retryable))}") from None
    _finish(ctx, store, callback_id, True, "verified")
    ctx.out(f"callback {callback_id} verified")


def _finish(ctx: Context, store: Store, callback_id: str, verified: bool, outcome: str) -> None:
    try:
        store.finish_probe(callback_id, verified, outcome, ctx.now_ms())
    except StoreError as error:
        ctx.note(f"note: the outcome could not be stored in the database ({error}); SFMC's answer stands")


def _report_outcome(ctx: Context, probe: dict) -> None:
    callback_id = probe["callback_id"]
    if probe["state"] == "verified":
        ctx.out(f"callback {callback_id} verified (by the poller, at {model.format_utc(probe['finished_at'])})")
        return
    outcome = probe["outcome"] or "no detail"
    retryable = bool(re.match(r"SFMC (5\d\d|request failed)", outcome))
    raise CLIError(f"the poller's verification of callback {callback_id} failed: {outcome} — "
                   f"{_after_failure(callback_id, probe, retryable)}")


def _after_failure(callback_id: str, probe: dict, retryable: bool) -> str:
    if retryable:
        return f"run `ens-status sfmc verify --callback-id {callback_id}` before {_deadline(probe)}"
    return (f"delete the callback (`ens-status sfmc delete-callback --callback-id {callback_id}`) and create it "
            "again")


def _deadline(probe: dict) -> str:
    return model.format_utc(probe["received_at"] + VERIFY_WINDOW_MS)


def sfmc_verify(args, ctx: Context) -> int:
    client = ctx.client()
    callback_id = ctx.callback_id(args)
    store = ctx.store(must_exist=True)
    probe = store.probe(callback_id)
    now = ctx.now_ms()
    if probe is None:
        if _sfmc_status(client, callback_id) == "verified":
            ctx.out(f"callback {callback_id} is already verified")
            return 0
        raise CLIError(f"no verification probe of callback {callback_id} is stored in {ctx.database_path}: SFMC "
                       "sends it only while the callback is created, so if the receiver missed it, delete the "
                       "callback and create it again")
    if probe["state"] == "verified":
        ctx.out(f"callback {callback_id} is already verified (at {model.format_utc(probe['finished_at'])})")
        return 0
    stale_claim = probe["state"] == "claimed" and now - (probe["claimed_at"] or 0) > STALE_CLAIM_MS
    if probe["state"] == "failed" or stale_claim:
        if stale_claim and _sfmc_status(client, callback_id) == "verified":
            _finish(ctx, store, callback_id, True, "verified")
            ctx.out(f"callback {callback_id} is already verified")
            return 0
        if probe["state"] == "failed":
            ctx.note(f"the last attempt failed: {probe['outcome']}; trying again")
        # Put the probe back as it arrived, so that it is claimed, and verified, exactly once more.
        store.record_probe(callback_id, probe["verification_key"], probe["received_at"])
    verify_probe(ctx, store, client, callback_id, args.wait)
    return 0


def _sfmc_status(client: SFMCClient, callback_id: str) -> str | None:
    return client.callback(callback_id).get("status")


def callbacks(args, ctx: Context) -> int:
    found = ctx.client().callbacks()
    if args.json:
        ctx.out(as_json(found))
        return 0
    if not found:
        ctx.out("no ENS callbacks in this account; create one with `ens-status sfmc callback create --url …`")
        return 0
    current = ctx.settings.ens_callback_id
    ctx.out(table(("", "CALLBACK ID", "NAME", "STATUS", "BATCH", "URL"),
                  [("*" if c.get("callbackId") == current else " ", c.get("callbackId"), c.get("callbackName"),
                    c.get("status"), c.get("maxBatchSize"), c.get("url")) for c in found]))
    if current:
        ctx.out("* = ENS_CALLBACK_ID")
    return 0


def regenerate_key(args, ctx: Context) -> int:
    client = ctx.client()
    callback_id = ctx.callback_id(args)
    ctx.confirm(f"Regenerate the signatureKey of callback {callback_id}? SFMC deactivates the current key at once: "
                "the receiver refuses every batch (401, then ENS drops it) until it has the new key", args.yes)
    answer = client.regenerate_key(callback_id)
    key = answer.get("signatureKey")
    if not key:
        raise CLIError("SFMC answered without a signatureKey: run regenerate-key again")
    ctx.out(f"new signatureKey for callback {callback_id}; the old key stopped working now and this one is shown "
            "only once:")
    ctx.out(f"  ENS_SIGNATURE_KEYS={key},<old key>")
    ctx.out("set that (new key first, old key kept for batches already signed with it), restart the receiver, "
            "and once events arrive again drop the old key from ENS_SIGNATURE_KEYS")
    return 0


def delete_callback(args, ctx: Context) -> int:
    client = ctx.client()
    callback_id = ctx.callback_id(args)
    subscriptions = client.subscriptions(callback_id) if args.with_subscriptions else []
    extra = f" and its {len(subscriptions)} subscription(s)" if subscriptions else ""
    ctx.confirm(f"Delete callback {callback_id}{extra}? ENS stops delivering to it and never replays what it "
                "drops", args.yes)
    for subscription in subscriptions:
        client.delete_subscription(subscription["subscriptionId"])
        ctx.out(f"subscription {shown(subscription.get('subscriptionName'))} ({subscription['subscriptionId']}) "
                "deleted")
    try:
        client.delete_callback(callback_id)
    except Rejected as error:
        if error.status != 409:
            raise
        try:
            remaining = client.subscriptions(callback_id)
        except SFMCError:
            remaining = []
        listed = ", ".join(f"{shown(s.get('subscriptionName'))} ({s.get('subscriptionId')})" for s in remaining)
        raise CLIError(f"{error} — callback {callback_id} still has {len(remaining) or 'some'} subscription(s)"
                       f"{': ' + listed if listed else ''}; delete them first or run again with "
                       "--with-subscriptions") from None
    ctx.out(f"callback {callback_id} deleted")
    if callback_id == ctx.settings.ens_callback_id:
        ctx.out("ENS_CALLBACK_ID still names it: unset it or set the new callback's id")
    return 0


# -- SFMC: subscriptions ------------------------------------------------------------------------

def subscribe(args, ctx: Context) -> int:
    types = list(dict.fromkeys(event_type(value) for value in args.types)) if args.types else list(DEFAULT_EVENT_TYPES)
    for given, used in zip(args.types or (), types):
        if given.strip() != used:
            ctx.note(f"note: subscribing to {used} (ENS spells it this way)")
    filters = [subscription_filter(value) for value in args.filter]
    if filters and _UNFILTERABLE_TYPES & set(types):
        ctx.note("note: SFMC documents no filter items for SmsTransient, SmsDelivered and SmsBounced; whether "
                 "these filters apply to them is not documented")
    client = ctx.client()
    callback_id = ctx.callback_id(args)
    moment = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = args.name or f"ens-status-{callback_id[:8]}-{moment}-{secrets.token_hex(2)}"
    try:
        created = client.create_subscription(name, callback_id, types, filters)
    except Rejected as error:
        hint = ""
        if "verif" in error.sfmc_message.lower():
            hint = f" — verify the callback first: `ens-status sfmc verify --callback-id {callback_id}`"
        raise CLIError(f"{explain(error)}{hint}") from None
    ctx.out(f"subscription {shown(created.get('subscriptionName', name))} ({created.get('subscriptionId')}) "
            f"{created.get('status', 'active')} on callback {callback_id}")
    ctx.out(f"  event types: {', '.join(types)}")
    ctx.out(f"  filters: {', '.join(filters) if filters else 'none'}")
    ctx.out("events may take up to 2 minutes to start flowing")
    return 0


def subscriptions(args, ctx: Context) -> int:
    client = ctx.client()
    callback_id = ctx.callback_id(args)
    found = client.subscriptions(callback_id)
    if args.json:
        ctx.out(as_json(found))
        return 0
    if not found:
        ctx.out(f"callback {callback_id} has no subscriptions; create one with `ens-status sfmc subscribe`")
        return 0
    ctx.out(f"subscriptions of callback {callback_id}:")
    ctx.out(table(("SUBSCRIPTION ID", "NAME", "STATUS", "EVENT TYPES", "FILTERS"),
                  [(s.get("subscriptionId"), s.get("subscriptionName"),
                    s.get("status") + (f" ({s['statusReason']})" if s.get("statusReason") else ""),
                    ",".join(t.removeprefix("TransactionalSendEvents.") for t in s.get("eventCategoryTypes") or []),
                    ",".join(s.get("filters") or [])) for s in found]))
    return 0


def _set_subscriptions(args, ctx: Context, pause: bool) -> int:
    client = ctx.client()
    callback_id = ctx.callback_id(args)
    found = client.subscriptions(callback_id)
    if not found:
        ctx.out(f"callback {callback_id} has no subscriptions: nothing to {'pause' if pause else 'resume'}")
        return 0
    wanted, verb = ("paused", "paused") if pause else ("active", "resumed")
    for subscription in found:
        label = f"{shown(subscription.get('subscriptionName'))} ({subscription.get('subscriptionId')})"
        if subscription.get("status") == wanted:
            ctx.out(f"subscription {label} is already {wanted}")
            continue
        if pause:
            client.pause_subscription(subscription)
        else:
            client.resume_subscription(subscription)
        ctx.out(f"subscription {label} {verb}")
    if pause:
        ctx.out("while paused, ENS drops these events and never replays them; only tracked messages are covered "
                "by the poller. Resume with `ens-status sfmc resume`")
    return 0


def pause(args, ctx: Context) -> int:
    return _set_subscriptions(args, ctx, pause=True)


def resume(args, ctx: Context) -> int:
    return _set_subscriptions(args, ctx, pause=False)


# -- the parser ---------------------------------------------------------------------------------

def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Delivery status of transactional SMS and e-mail sent through SFMC: "
                    "database, tracking and ENS set-up commands. Reads the same environment variables as the "
                    "web and poller processes.", formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="example:\n  ens-status sfmc callback create --url https://hooks.example.com/ens")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(group, name: str, run, summary: str, example: str, description: str | None = None) -> Parser:
        sub = group.add_parser(name, help=summary, description=description or summary,
                               epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(run=run)
        return sub

    def callback_option(sub: Parser) -> None:
        sub.add_argument("--callback-id", metavar="ID",
                         help="default: ENS_CALLBACK_ID, else the account's only callback")

    def yes_option(sub: Parser) -> None:
        sub.add_argument("--yes", "-y", action="store_true", help="do it without asking")

    db = commands.add_parser("db", help="database schema", description="Database schema commands.",
                             epilog="example:\n  ens-status db upgrade",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND", required=True)
    command(db_commands, "upgrade", db_upgrade, "create or migrate the schema and print its version",
            "DATABASE_URL=sqlite:////srv/ens-status.db ens-status db upgrade")

    sub = command(commands, "track", track, "track messages so the poller asks SFMC about those without events",
                  "ens-status track order-1001-otp order-1002-otp --definition-key otp-sms")
    sub.add_argument("keys", nargs="+", metavar="KEY", help="messageKey (at most 100 characters)")
    sub.add_argument("--channel", choices=model.CHANNELS, default="sms")
    sub.add_argument("--definition-key", metavar="K")
    sub.add_argument("--to", metavar="T", help="recipient (phone number or e-mail address)")

    sub = command(commands, "show", show, "one message: status, poll state and history",
                  "ens-status show order-1001-otp --json")
    sub.add_argument("key", metavar="KEY")
    sub.add_argument("--channel", choices=model.CHANNELS, help="when the key exists on both channels")
    sub.add_argument("--json", action="store_true", help="exactly what GET /v1/messages/<key> answers")

    sub = command(commands, "prune", prune, "delete data older than RETENTION_DAYS",
                  "RETENTION_DAYS=14 ens-status prune --dry-run")
    sub.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    yes_option(sub)

    sub = command(commands, "stats", stats, "counts by status and poll state, quarantine, oldest due message, "
                  "refused signatures", "ens-status stats --json")
    sub.add_argument("--json", action="store_true")

    sub = command(commands, "dev-env", dev_env, "write a local development env file with random secrets "
                  "(only if PATH does not exist)", "ens-status dev-env var/dev.env")
    sub.add_argument("path", metavar="PATH")

    sfmc = commands.add_parser("sfmc", help="set up and manage ENS in SFMC",
                               description="ENS set-up in SFMC: callback, verification, subscriptions. Uses "
                               "SFMC_AUTH_BASE_URL, SFMC_CLIENT_ID, SFMC_CLIENT_SECRET, SFMC_ACCOUNT_ID.",
                               epilog="example:\n  ens-status sfmc callback create --url https://hooks.example.com/ens"
                               "\n  ens-status sfmc subscribe",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sfmc_commands = sfmc.add_subparsers(title="commands", metavar="COMMAND", required=True)

    callback = sfmc_commands.add_parser("callback", help="create the ENS callback",
                                        description="ENS callback commands.",
                                        epilog="example:\n  ens-status sfmc callback create --url "
                                        "https://hooks.example.com/ens",
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
    callback_commands = callback.add_subparsers(title="commands", metavar="COMMAND", required=True)
    sub = command(callback_commands, "create", callback_create, "register the receiver's URL with ENS and verify it",
                  "ens-status sfmc callback create --url https://hooks.example.com/ens --max-batch-size 500",
                  description="Register the receiver's URL as an ENS callback, print its signatureKey (once), wait "
                  "until the receiver has stored SFMC's verification probe in DATABASE_URL, and verify it.")
    sub.add_argument("--url", required=True, help="https://host/ens: no port, no query string")
    sub.add_argument("--name", metavar="N", help="callbackName (default: ens-status-<host>)")
    sub.add_argument("--max-batch-size", type=batch_size, metavar="100..1000", help="events per POST (default 1000)")
    sub.add_argument("--wait", type=seconds, default=60.0, metavar="SECONDS",
                     help="how long to wait for the probe (default 60; 0: do not wait)")

    sub = command(sfmc_commands, "subscribe", subscribe, "subscribe the callback to transactional send events",
                  "ens-status sfmc subscribe --filter definitionKey=otp-sms",
                  description="Subscribe the callback to event types (default: every transactional SMS and "
                  "e-mail send event: " + ", ".join(t.split('.')[1] for t in DEFAULT_EVENT_TYPES) + ").")
    callback_option(sub)
    sub.add_argument("--types", nargs="+", metavar="T", help="event types, e.g. TransactionalSendEvents.SmsDelivered")
    sub.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE",
                     help="all filters must match, e.g. definitionKey=otp-sms (repeatable)")
    sub.add_argument("--name", metavar="N", help="subscriptionName (default: from the callback and the time)")

    sub = command(sfmc_commands, "callbacks", callbacks, "list the account's callbacks", "ens-status sfmc callbacks")
    sub.add_argument("--json", action="store_true")

    sub = command(sfmc_commands, "subscriptions", subscriptions, "list a callback's subscriptions",
                  "ens-status sfmc subscriptions --callback-id 585dc165-58e9-4409-a514-5d21fc5dd6cd")
    callback_option(sub)
    sub.add_argument("--json", action="store_true")

    sub = command(sfmc_commands, "verify", sfmc_verify, "verify the callback with the probe stored by the receiver",
                  "ens-status sfmc verify --callback-id 585dc165-58e9-4409-a514-5d21fc5dd6cd")
    callback_option(sub)
    sub.add_argument("--wait", type=seconds, default=30.0, metavar="SECONDS",
                     help="how long to wait for a probe another process is verifying (default 30)")

    sub = command(sfmc_commands, "regenerate-key", regenerate_key, "issue a new signatureKey (the old one stops "
                  "at once)", "ens-status sfmc regenerate-key --yes")
    callback_option(sub)
    yes_option(sub)

    sub = command(sfmc_commands, "delete-callback", delete_callback, "delete the callback",
                  "ens-status sfmc delete-callback --with-subscriptions --yes")
    callback_option(sub)
    sub.add_argument("--with-subscriptions", action="store_true", help="delete its subscriptions first")
    yes_option(sub)

    sub = command(sfmc_commands, "pause", pause, "pause the callback's subscriptions (ENS drops events meanwhile)",
                  "ens-status sfmc pause")
    callback_option(sub)
    sub = command(sfmc_commands, "resume", resume, "resume the callback's paused subscriptions",
                  "ens-status sfmc resume")
    callback_option(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())  # the client's log lines are for the processes, not for here
    ctx = None
    try:
        args = build_parser().parse_args(argv)
        ctx = Context(Settings.from_env())
        return args.run(args, ctx) or 0
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except CLIError as error:
        return _fail(str(error), error.exit_status)
    except ConfigError as error:
        return _fail(str(error), EXIT_USAGE)
    except SFMCError as error:
        return _fail(explain(error))
    except StoreError as error:
        return _fail(f"database: {error}")
    except sqlite3.Error as error:
        path = ctx.database_path if ctx else "DATABASE_URL"
        return _fail(f"database {path}: {error}")
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # stdout went away (`| head`)
        return EXIT_FAILED
    except OSError as error:
        return _fail(f"{error.strerror or error}{': ' + str(error.filename) if error.filename else ''}")
    except Exception as error:  # a last resort: still one line, never a traceback
        return _fail(f"unexpected {type(error).__name__}: {error}")
    finally:
        if ctx is not None:
            ctx.close()


def _fail(line: str, status: int = EXIT_FAILED) -> int:
    print(f"{PROG}: {line}", file=sys.stderr)
    return status
