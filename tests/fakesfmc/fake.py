"""FakeSFMC: one local server playing SFMC's auth host, REST host and ENS sender for tests and demos."""

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass

from . import control, routes
from .auth import TokenIssuer
from .clock import RealClock
from .dispatcher import Dispatcher
from .ens import Registry
from .errors import OAuthError, SfmcError
from .knobs import Knobs
from .messaging import Messaging
from .ratelimit import TokenBucket
from .server import RecordedRequest, Response, Server
from .transport import Transport


@dataclass
class FailRule:
    """A scripted answer for the next `count` requests matching method and raw path prefix."""

    method: str
    path_prefix: str
    status: int
    body: object
    headers: dict
    count: int


@dataclass
class Probe:
    """One verification POST made while creating a callback."""

    callback_id: str
    url: str
    body: bytes
    status: int | None
    error: str | None
    ok: bool
    at: float


class FakeSFMC:
    """SFMC as the product sees it, plus the levers a test needs.

    The product reaches it only over HTTP (SFMC_AUTH_BASE_URL = `url`; the token's
    `rest_instance_url` = `url + "/"`). Tests drive business time through the FakeClock and make ENS
    deterministic with `step()` and `drain()`; with `clock=None` a ticker steps in real time.
    `knob_overrides` set fields of `Knobs`, which stay mutable while the fake runs.
    """

    def __init__(self, clock=None, client_id: str = "fake-client-id", client_secret: str = "fake-client-secret",
                 signature_mode: str = "base64", seed: int = 0, port: int = 0, **knob_overrides) -> None:
        self.clock = clock if clock is not None else RealClock()
        self.real_time = clock is None
        self.client_id = client_id
        self.client_secret = client_secret
        self.port = port
        self.knobs = Knobs()
        self.knobs.update({"signature_mode": signature_mode, **knob_overrides})
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.tokens = TokenIssuer(self.knobs, self.clock, client_id, client_secret)
        self.bucket = TokenBucket(self.knobs, self.clock)
        self.registry = Registry(self.knobs, self.clock, self.rng)
        self.transport = Transport()
        self.dispatcher = Dispatcher(self.cond, self.knobs, self.clock, self.registry, self.transport, self.rng,
                                     tick=self.step if self.real_time else None)
        self.messaging = Messaging(self.knobs, self.clock, self.rng, self.dispatcher.route)
        self.requests: list[RecordedRequest] = []
        self.probes: list[Probe] = []
        self.get_status_calls: Counter = Counter()
        self.status_list_calls = 0
        self.fail_rules: list[FailRule] = []
        self.server: Server | None = None
        self.server_thread: threading.Thread | None = None
        self.url = ""

    # lifecycle

    def start(self, port: int | None = None) -> "FakeSFMC":
        self.server = Server(self.port if port is None else port, self)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.server_thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                              name="fakesfmc-http", daemon=True)
        self.server_thread.start()
        self.dispatcher.start()
        return self

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.shutdown()
        self.server.close_connections()
        self.server.server_close()
        self.server_thread.join()
        self.dispatcher.stop()
        self.transport.close()
        self.server = None

    def __enter__(self) -> "FakeSFMC":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # the Python control surface

    @property
    def token_requests(self) -> int:
        return self.tokens.issued

    @property
    def ens_deliveries(self) -> list:
        return self.dispatcher.deliveries

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.expire_all()

    def fail_next(self, method: str, path_prefix: str, status: int, body=None, headers: dict | None = None,
                  count: int = 1) -> None:
        with self.lock:
            self.fail_rules.append(FailRule(method.upper(), path_prefix, status, body, dict(headers or {}), count))

    def define(self, channel: str, definition_key: str, status: str = "active") -> None:
        with self.lock:
            self.messaging.define(channel, definition_key, status)

    def send(self, channel: str, message_key: str, to: str, definition_key: str, contact_key: str | None = None):
        with self.lock:
            self.step()
            return self.messaging.send(channel, message_key, to, contact_key or f"contact-{to}", definition_key)

    def truth(self) -> dict:
        with self.lock:
            self.step()
            return self.messaging.truth()

    def map_delivery(self, registered_url: str, actual_url: str) -> None:
        with self.lock:
            self.transport.map(registered_url, actual_url)

    def step(self) -> int:
        """Play every message's due transitions; their ENS events go to the dispatcher."""
        with self.lock:
            return self.messaging.advance(self.clock.now())

    def drain(self, timeout: float = 10) -> None:
        self.step()
        self.dispatcher.wait_idle(timeout)

    def inject_events(self, callback_id: str | None, events: list[dict]) -> None:
        with self.lock:
            if callback_id is not None and callback_id not in self.registry.callbacks:
                raise KeyError(f"no callback {callback_id}")
            for event in events:
                if callback_id is None:
                    self.dispatcher.route(event)
                else:
                    self.dispatcher.enqueue(callback_id, event)

    def suspend(self, seconds: float) -> None:
        with self.lock:
            for callback_id in self.registry.callbacks:
                self.dispatcher.suspend(callback_id, seconds)

    def stats(self) -> dict:
        with self.lock:
            stats = self.dispatcher.stats
            return {
                "tokenRequests": self.token_requests,
                "statusGets": sum(self.get_status_calls.values()),
                "notSentListGets": self.status_list_calls,
                "requests": len(self.requests),
                "deliveries": {"ok": stats.deliveries_ok, "failed": stats.deliveries_failed,
                               "batchesDropped": stats.batches_dropped},
                "events": {"routed": stats.events_routed, "dropped": stats.events_dropped},
                "probes": len(self.probes),
            }

    def count_status_call(self, channel: str, message_key: str) -> None:
        self.get_status_calls[(channel, message_key)] += 1

    def probe(self, callback) -> str | None:
        """POST the unsigned verification object; None when answered exactly 200 in time."""
        body = json.dumps({"callbackId": callback.callback_id, "verificationKey": callback.verification_key},
                          separators=(",", ":")).encode("utf-8")
        status, error = self.transport.post(callback.url, body, {"Content-Type": "application/json"},
                                            self.knobs.probe_timeout)
        with self.lock:
            self.probes.append(Probe(callback.callback_id, callback.url, body, status, error, status == 200,
                                     self.clock.now()))
        if status == 200:
            return None
        return error or f"ProtocolError (HTTP {status})"

    # HTTP entry point

    def handle(self, method: str, raw_path: str, query: str, headers: dict, body: bytes) -> Response:
        with self.lock:
            request = RecordedRequest(method, raw_path, query, headers, body, self.clock.now())
            self.requests.append(request)
            scripted = self._scripted(method, raw_path)
        if scripted is not None:
            return scripted
        if raw_path.startswith("/_fake/"):
            return control.handle(self, request)
        if method == "POST" and raw_path in ("/v2/token", "/v2/token/"):
            return self._token(request)
        route, params = routes.find(method, raw_path)
        try:
            with self.lock:
                self.tokens.authorize(headers.get("authorization"), route.scope(*params) if route else None)
                if route is None:
                    raise SfmcError(404, 0, f"Not Found: {method} {raw_path}")
                if route.rate_limited:
                    self.bucket.take()
            if not route.locked:
                return route.handler(self, request, *params)
            with self.lock:
                self.step()
                return route.handler(self, request, *params)
        except SfmcError as error:
            return Response(error.status, error.body(), error.headers)

    def _token(self, request: RecordedRequest) -> Response:
        try:
            with self.lock:
                return Response(200, self.tokens.issue(token_body(request), self.url))
        except OAuthError as error:
            return Response(error.status, error.body())

    def _scripted(self, method: str, raw_path: str) -> Response | None:
        for rule in self.fail_rules:
            if rule.method in (method, "*") and raw_path.startswith(rule.path_prefix):
                rule.count -= 1
                if rule.count <= 0:
                    self.fail_rules.remove(rule)
                body = rule.body
                if body is None:
                    body = {"message": f"Scripted failure {rule.status}", "errorcode": 0, "documentation": ""}
                return Response(rule.status, body, rule.headers)
        return None


def token_body(request: RecordedRequest):
    """The token request's fields, from JSON or, as some clients send it, a form."""
    content_type = request.headers.get("content-type", "")
    if "application/x-www-form-urlencoded" in content_type:
        return routes.query_params(request.body.decode("utf-8", "replace"))
    try:
        return json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(400, "invalid_request", "The request body must be JSON.") from None
