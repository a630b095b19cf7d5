"""The one SFMC client: token, status GETs, the notSent list and ENS management.

Used by the poller process and by the ``ens-status sfmc …`` CLI. It does no rate limiting,
budgeting or backoff: it reports what SFMC said, and the poller decides when to call again
(``RateLimited.retry_after``, ``Retryable``).

Every failure is raised as one of these, in the spirit of httpx's exception tree::

    SFMCError                 base: .status, .errorcode, .sfmc_message, .retry_after
     ├── AuthError            no usable token: the token endpoint refused the credentials
     │                        (400/401/other 4xx), or a REST call got 401 twice in a row
     ├── NotFound             404, or a 400 whose errorcode is 30003 or whose message says
     │                        "not found" (SFMC does not document which one it uses)
     ├── RateLimited          429; .retry_after in seconds, or None (e.g. errorcode 50200)
     ├── Retryable            5xx, a malformed success body, and every transport failure
     │                        (connect, read, write, timeouts, protocol errors)
     └── Rejected             any other 3xx/4xx: SFMC understood and said no

``str(error)`` is one line a CLI can print, e.g. ``SFMC 409 errorcode 30002: <SFMC message>``.
Neither the client secret nor a token ever appears in a message or a log line.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from receiver.config import Settings

log = logging.getLogger(__name__)

CHANNELS = ("sms", "email")

# SFMC closes idle keep-alive connections after 5 s; reusing one later fails with a reset.
KEEPALIVE_EXPIRY = 4.0

# A token is reused until this long before SFMC says it expires (its expires_in is already
# about two minutes short of the real 20-minute lifetime).
TOKEN_EXPIRY_MARGIN = 30.0

# Retry-After values above this are clamped to it. SFMC's documented throttles speak in
# seconds; a header asking for hours is more likely garbled than meant, and must not stall
# polling for longer than ten minutes.
MAX_RETRY_AFTER = 600.0

_DELAY_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_INTEGER = re.compile(r"-?[0-9]+")
_NOT_FOUND = re.compile(r"not\s*found", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_MAX_MESSAGE_CHARS = 300


class SFMCError(Exception):
    """Base of every error the client raises."""

    def __init__(
        self,
        sfmc_message: str,
        *,
        status: int | None = None,
        errorcode: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.errorcode = errorcode
        self.sfmc_message = sfmc_message
        self.retry_after = retry_after
        super().__init__(self._line())

    def _line(self) -> str:
        if self.status is None:
            head = "SFMC request failed"
        elif self.errorcode is None:
            head = f"SFMC {self.status}"
        else:
            head = f"SFMC {self.status} errorcode {self.errorcode}"
        tail = f" (retry after {self.retry_after:g} s)" if self.retry_after is not None else ""
        return f"{head}: {self.sfmc_message}{tail}"


class AuthError(SFMCError):
    """No usable token: fix the credentials, retrying will not help."""


class NotFound(SFMCError):
    """SFMC does not know this message key (or callback, or subscription)."""


class RateLimited(SFMCError):
    """429: every poller should pause for ``retry_after`` seconds (None: choose a backoff)."""


class Retryable(SFMCError):
    """A server or network failure: the same call may succeed later."""


class Rejected(SFMCError):
    """SFMC refused the request itself (validation, permission, state conflict)."""


@dataclass(frozen=True)
class StatusReply:
    """What the status GET said about one message.

    ``timestamp`` is SFMC's raw string: US Central *Standard* time without an offset; the
    status model converts it.
    """

    event_category_type: str | None
    timestamp: str | None
    status_code: int | None
    status_message: str | None
    contact_key: str | None
    to: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class NotSentPage:
    """One page of the notSent list; pass ``last_event_id`` back to get the next one."""

    messages: list[dict[str, Any]]
    last_event_id: int | str | None


@dataclass(frozen=True)
class _Token:
    access_token: str = field(repr=False)
    rest_base: str
    expires_at: float


class _TokenFetch:
    """One token request in flight; every thread that needs a token meanwhile waits for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.token: _Token | None = None
        self.error: BaseException | None = None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    ``now`` is the current wall-clock time in epoch seconds, used for the HTTP-date form.
    A date in the past gives 0; anything above ``MAX_RETRY_AFTER`` is clamped to it;
    an absent or unparseable value gives None.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _DELAY_SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": an HTTP-date is always GMT
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _segment(value: str) -> str:
    """``value`` percent-encoded as exactly one path segment, dot segments included."""
    if not isinstance(value, str) or not value:
        raise ValueError("a path segment must be a non-empty string")
    if value in (".", ".."):
        # quote() leaves dots alone, and httpx would remove "." and ".." as dot segments.
        return value.replace(".", "%2E")
    try:
        return urllib.parse.quote(value, safe="")
    except UnicodeEncodeError:
        raise ValueError("a path segment must be valid Unicode (it holds a lone surrogate)") from None


def message_path(channel: str, message_key: str) -> str:
    """Path of the status GET for one message, the key encoded as a single segment.

    ValueError for an unknown channel, an empty key, or a key no UTF-8 can carry.
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    return f"/messaging/v1/{channel}/messages/{_segment(message_key)}"


def _one_line(text: str) -> str:
    text = _WHITESPACE.sub(" ", text).strip()
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _first(body: Any) -> dict[str, Any]:
    """The first element of an array answer (SFMC's create/update routes answer arrays)."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return body[0]
    if isinstance(body, dict):
        return body
    raise Retryable(f"unexpected response body: {_one_line(repr(body))}", status=200)


class SFMCClient:
    """Thread-safe SFMC REST client sharing one cached token across threads.

    ``clock`` (monotonic seconds) times the token's lifetime; ``wall_clock`` (epoch seconds)
    turns an HTTP-date ``Retry-After`` into a delay. A request refused with 401 is sent again
    once with a fresh token: SFMC did not act on it, so this is safe for POST and PUT too.
    """

    def __init__(
        self,
        *,
        auth_base_url: str,
        client_id: str,
        client_secret: str,
        account_id: str | int | None = None,
        rest_base_url: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        for name, url in (("auth_base_url", auth_base_url), ("rest_base_url", rest_base_url)):
            if url is not None and not url.startswith(("https://", "http://")):
                raise ValueError(f"{name} must be an http(s) URL, not {url!r}")
        self._token_url = auth_base_url.rstrip("/") + "/v2/token"
        self._client_id = client_id
        self._client_secret = client_secret
        self._account_id = account_id
        self._rest_base_override = rest_base_url.rstrip("/") if rest_base_url else None
        self._clock = clock
        self._wall_clock = wall_clock
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY),
            follow_redirects=False,
        )
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self._fetch: _TokenFetch | None = None
        self.token_requests = 0
        # Called before a status-route request is sent again after a 401; the poller spends a budget
        # slot here (and may raise an SFMCError to give up), so a retry never exceeds the budget.
        self.before_resend: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<SFMCClient token_url={self._token_url!r} client_id={self._client_id!r}>"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SFMCClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- transactional messaging -------------------------------------------------------

    def message_status(self, channel: str, message_key: str) -> StatusReply:
        body = self._call("GET", message_path(channel, message_key), status_route=True)
        if not isinstance(body, dict):
            raise Retryable(f"unexpected status body: {_one_line(repr(body))}", status=200)
        info = body.get("info") if isinstance(body.get("info"), dict) else {}
        return StatusReply(
            event_category_type=_as_str(body.get("eventCategoryType")),
            timestamp=_as_str(body.get("timestamp")),
            status_code=_as_int(info.get("statusCode")),
            status_message=_as_str(info.get("statusMessage")),
            contact_key=_as_str(info.get("contactKey")),
            to=_as_str(info.get("to")),
            raw=body,
        )

    def not_sent(
        self, channel: str, last_event_id: int | str | None = None, page_size: int | None = None
    ) -> NotSentPage:
        """One page of not-sent messages, oldest first.

        The answer's ``lastEventID`` is a scan high-water mark, not necessarily the last
        item's id; when SFMC leaves it out the cursor given is returned unchanged.
        """
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
        # Built by hand: SFMC spells the parameter with a literal "$", which httpx's params
        # would send as %24.
        query = [("type", "notSent")]
        if page_size is not None:
            query.append(("$pageSize", str(int(page_size))))
        if last_event_id is not None:
            query.append(("lastEventId", str(last_event_id)))
        query_string = "&".join(
            f"{urllib.parse.quote(k, safe='$')}={urllib.parse.quote(v, safe='')}"
            for k, v in query
        )
        body = self._call("GET", f"/messaging/v1/{channel}/messages/?{query_string}", status_route=True)
        if not isinstance(body, dict):
            raise Retryable(f"unexpected notSent body: {_one_line(repr(body))}", status=200)
        messages = body.get("messages")
        cursor = body.get("lastEventID", body.get("lastEventId"))
        return NotSentPage(
            messages=[m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else [],
            last_event_id=last_event_id if cursor is None else cursor,
        )

    # --- ENS callbacks -----------------------------------------------------------------

    def create_callback(self, name: str, url: str, max_batch_size: int | None = None) -> dict:
        """Register a callback; the answer holds the only copy of its ``signatureKey``."""
        item: dict[str, Any] = {"callbackName": name, "url": url}
        if max_batch_size is not None:
            item["maxBatchSize"] = max_batch_size
        return _first(self._call("POST", "/platform/v1/ens-callbacks", json=[item]))

    def verify_callback(self, callback_id: str, verification_key: str) -> dict:
        body = self._call(
            "POST",
            "/platform/v1/ens-verify",
            json={"callbackId": callback_id, "verificationKey": verification_key},
        )
        return body if isinstance(body, dict) else {}

    def callbacks(self) -> list[dict]:
        body = self._call("GET", "/platform/v1/ens-callbacks")
        return [c for c in body if isinstance(c, dict)] if isinstance(body, list) else []

    def callback(self, callback_id: str) -> dict:
        return _first(self._call("GET", f"/platform/v1/ens-callbacks/{_segment(callback_id)}"))

    def update_callback(
        self, callback_id: str, name: str, max_batch_size: int | None = None
    ) -> dict:
        item: dict[str, Any] = {"callbackId": callback_id, "callbackName": name}
        if max_batch_size is not None:
            item["maxBatchSize"] = max_batch_size
        return _first(self._call("PUT", "/platform/v1/ens-callbacks", json=[item]))

    def delete_callback(self, callback_id: str) -> None:
        """Delete a callback; SFMC answers 409 (``Rejected``) while subscriptions use it."""
        self._call("DELETE", f"/platform/v1/ens-callbacks/{_segment(callback_id)}")

    def regenerate_key(self, callback_id: str) -> dict:
        """Issue a new ``signatureKey``; SFMC deactivates the old one at once."""
        return _first(
            self._call("PUT", "/platform/v1/ens-regenerate", json=[{"callbackId": callback_id}])
        )

    # --- ENS subscriptions -------------------------------------------------------------

    def create_subscription(
        self,
        name: str,
        callback_id: str,
        event_category_types: Iterable[str],
        filters: Iterable[str] = (),
    ) -> dict:
        item = {
            "subscriptionName": name,
            "callbackId": callback_id,
            "eventCategoryTypes": list(event_category_types),
            "filters": list(filters),
        }
        return _first(self._call("POST", "/platform/v1/ens-subscriptions", json=[item]))

    def subscriptions(self, callback_id: str) -> list[dict]:
        body = self._call("GET", f"/platform/v1/ens-subscriptions-by-cb/{_segment(callback_id)}")
        return [s for s in body if isinstance(s, dict)] if isinstance(body, list) else []

    def subscription(self, subscription_id: str) -> dict:
        return _first(
            self._call("GET", f"/platform/v1/ens-subscriptions/{_segment(subscription_id)}")
        )

    def update_subscription(
        self,
        subscription_id: str,
        event_category_types: Iterable[str],
        name: str | None = None,
        filters: Iterable[str] | None = None,
        status: str | None = None,
        status_reason: str | None = None,
    ) -> dict:
        item: dict[str, Any] = {
            "subscriptionId": subscription_id,
            "eventCategoryTypes": list(event_category_types),
        }
        if name is not None:
            item["subscriptionName"] = name
        if filters is not None:
            item["filters"] = list(filters)
        if status is not None:
            item["status"] = status
        if status_reason is not None:
            item["statusReason"] = status_reason
        return _first(self._call("PUT", "/platform/v1/ens-subscriptions", json=[item]))

    def pause_subscription(
        self, subscription: Mapping[str, Any], reason: str = "paused with ens-status"
    ) -> dict:
        """Pause a subscription as read from SFMC (the update needs its event types).

        ENS drops, and never replays, the events generated while it is paused.
        """
        return self._set_subscription_status(subscription, "paused", reason)

    def resume_subscription(
        self, subscription: Mapping[str, Any], reason: str = "resumed with ens-status"
    ) -> dict:
        return self._set_subscription_status(subscription, "active", reason)

    def delete_subscription(self, subscription_id: str) -> None:
        self._call("DELETE", f"/platform/v1/ens-subscriptions/{_segment(subscription_id)}")

    def _set_subscription_status(
        self, subscription: Mapping[str, Any], status: str, reason: str
    ) -> dict:
        return self.update_subscription(
            subscription["subscriptionId"],
            subscription["eventCategoryTypes"],
            name=subscription.get("subscriptionName"),
            filters=subscription.get("filters"),
            status=status,
            status_reason=reason,
        )

    # --- token -------------------------------------------------------------------------

    def _valid(self, token: _Token | None) -> bool:
        return token is not None and self._clock() < token.expires_at

    def _obtain_token(self, stale: _Token | None = None) -> _Token:
        """The cached token, or a new one fetched once for all threads waiting on it.

        ``stale`` is a token SFMC just refused: it is never returned, but a newer token
        another thread fetched meanwhile is.
        """
        token = self._token
        if token is not stale and self._valid(token):
            return token  # type: ignore[return-value]
        with self._lock:
            token = self._token
            if token is not stale and self._valid(token):
                return token  # type: ignore[return-value]
            fetch = self._fetch
            leader = fetch is None
            if leader:
                fetch = self._fetch = _TokenFetch()
                self.token_requests += 1
        assert fetch is not None
        if leader:
            try:
                fetch.token = self._request_token()
            except Exception as exc:
                fetch.error = exc
                raise
            finally:
                with self._lock:
                    if fetch.token is not None:
                        self._token = fetch.token
                    self._fetch = None
                fetch.done.set()
            return fetch.token
        fetch.done.wait()
        if fetch.error is not None:
            raise fetch.error  # the same failure for every thread that waited on this fetch
        if fetch.token is None:
            raise SFMCError("the token request was interrupted")
        return fetch.token

    def _request_token(self) -> _Token:
        payload: dict[str, Any] = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        if self._account_id is not None:
            payload["account_id"] = self._account_id
        issued_at = self._clock()
        response = self._send("POST", self._token_url, "/v2/token", json=payload)
        if response.status_code != 200:
            raise self._error(response, token_endpoint=True)
        try:
            body = response.json()
        except ValueError:
            body = None
        access_token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access_token, str) or not access_token:
            raise Retryable("token response has no access_token", status=response.status_code)
        rest_base = self._rest_base_override or body.get("rest_instance_url")
        if not isinstance(rest_base, str) or not rest_base.startswith(("https://", "http://")):
            raise Retryable(
                "token response has no usable rest_instance_url", status=response.status_code
            )
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, (int, float)) or isinstance(expires_in, bool):
            expires_in = 1079
        lifetime = max(expires_in - TOKEN_EXPIRY_MARGIN, expires_in / 2)
        log.info("fetched an SFMC token valid for %d s", expires_in)
        return _Token(access_token, rest_base.rstrip("/"), issued_at + lifetime)

    # --- requests ----------------------------------------------------------------------

    def _call(self, method: str, path: str, *, json: Any = None, status_route: bool = False) -> Any:
        """One REST call; on a 401 the token is refreshed once and the call retried once.

        A retried call to a rate-limited status route goes through `before_resend` first.
        """
        token = self._obtain_token()
        response = self._rest(method, token, path, json)
        if response.status_code == 401:
            token = self._obtain_token(stale=token)
            if status_route and self.before_resend is not None:
                self.before_resend()
            response = self._rest(method, token, path, json)
        if not 200 <= response.status_code < 300:
            raise self._error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise Retryable(
                f"response to {method} {path.split('?')[0]} is not JSON",
                status=response.status_code,
            ) from None

    def _rest(self, method: str, token: _Token, path: str, json: Any) -> httpx.Response:
        return self._send(
            method,
            token.rest_base + path,
            path,
            json=json,
            headers={"Authorization": f"Bearer {token.access_token}"},
        )

    def _send(
        self,
        method: str,
        url: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return self._http.request(method, url, json=json, headers=headers)
        except httpx.UnsupportedProtocol as exc:
            raise SFMCError(self._scrub(f"{exc} ({method} {path})")) from None
        except httpx.TransportError as exc:
            detail = str(exc) or "no detail"
            raise Retryable(
                self._scrub(f"{type(exc).__name__}: {detail} ({method} {path})")
            ) from None

    def _error(self, response: httpx.Response, *, token_endpoint: bool = False) -> SFMCError:
        status = response.status_code
        errorcode, message = self._describe(response)
        if token_endpoint and status < 500 and status != 429:
            message = f"{message} (token request: check the client id, secret and account id)"
        kwargs: dict[str, Any] = {"status": status, "errorcode": errorcode}
        if status == 429:
            return RateLimited(message, retry_after=self._retry_after(response), **kwargs)
        if status >= 500:
            return Retryable(message, retry_after=self._retry_after(response), **kwargs)
        if token_endpoint or status == 401:
            return AuthError(message, **kwargs)
        if status == 404 or (
            status == 400 and (errorcode == 30003 or _NOT_FOUND.search(message))
        ):
            return NotFound(message, **kwargs)
        return Rejected(message, **kwargs)

    def _describe(self, response: httpx.Response) -> tuple[int | None, str]:
        """SFMC's ``errorcode`` and message (or the OAuth error) from an error answer."""
        try:
            body = response.json()
        except ValueError:
            body = None
        errorcode = None
        message = ""
        if isinstance(body, dict):
            errorcode = _as_int(body.get("errorcode", body.get("errorCode")))
            if isinstance(body.get("message"), str):
                message = body["message"]
            elif isinstance(body.get("error"), str):
                message = body["error"]
                if isinstance(body.get("error_description"), str):
                    message += f": {body['error_description']}"
        elif response.content:
            message = response.text
        message = _one_line(message) or response.reason_phrase or "no message"
        return errorcode, self._scrub(message)

    def _retry_after(self, response: httpx.Response) -> float | None:
        seconds = parse_retry_after(response.headers.get("Retry-After"), self._wall_clock())
        if seconds is None:
            try:
                body = response.json()
            except ValueError:
                return None
            value = body.get("retryAfter") if isinstance(body, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                seconds = parse_retry_after(str(value), self._wall_clock())
        return seconds

    def _scrub(self, text: str) -> str:
        """Remove the client secret and any token we hold from text bound for a message."""
        secrets = [self._client_secret]
        token = self._token
        if token is not None:
            secrets.append(token.access_token)
        for secret in secrets:
            if secret:
                text = text.replace(secret, "[redacted]")
        return text


def client_from_settings(settings: Settings) -> SFMCClient | None:
    """The client the SFMC_* variables describe; None when credentials are not set."""
    if not settings.sfmc_configured:
        return None
    return SFMCClient(auth_base_url=settings.sfmc_auth_base_url, client_id=settings.sfmc_client_id,
                      client_secret=settings.sfmc_client_secret, account_id=settings.sfmc_account_id,
                      rest_base_url=settings.sfmc_rest_base_url)
