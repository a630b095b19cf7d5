"""JSON control routes under /_fake/ for standalone runs (a demo script drives the fake over HTTP).

They need no token and mirror the Python control surface of FakeSFMC.
"""

import json

from .clock import FakeClock
from .errors import SfmcError
from .server import Response


def handle(fake, request) -> Response:
    name = request.raw_path[len("/_fake/"):].strip("/")
    action = ACTIONS.get((request.method, name))
    if action is None:
        return Response(404, {"error": f"no control route {request.method} /_fake/{name}",
                              "routes": sorted(f"{m} /_fake/{n}" for m, n in ACTIONS)})
    try:
        data = json.loads(request.body.decode("utf-8")) if request.body.strip() else {}
        return Response(200, action(fake, data))
    except (ValueError, KeyError, TypeError, SfmcError) as error:
        return Response(400, {"error": str(error)})


def truth(fake, data) -> dict:
    return {"messages": [{"channel": channel, "messageKey": key, "status": status}
                         for (channel, key), status in fake.truth().items()]}


def stats(fake, data) -> dict:
    return fake.stats()


def get_knobs(fake, data) -> dict:
    return fake.knobs.to_json()


def set_knobs(fake, data) -> dict:
    if "outcome_rule" in data:
        raise ValueError("outcome_rule is Python-only; set sms_outcomes or email_outcomes instead")
    with fake.lock:
        fake.knobs.update(data)
    return fake.knobs.to_json()


def define(fake, data) -> dict:
    fake.define(data["channel"], data["definitionKey"], data.get("status", "active"))
    return {"ok": True}


def send(fake, data) -> dict:
    fake.send(data["channel"], data["messageKey"], data["to"], data["definitionKey"], data.get("contactKey"))
    return {"ok": True}


def map_delivery(fake, data) -> dict:
    fake.map_delivery(data["registeredUrl"], data["actualUrl"])
    return {"ok": True}


def suspend(fake, data) -> dict:
    fake.suspend(float(data["seconds"]))
    return {"ok": True}


def step(fake, data) -> dict:
    return {"played": fake.step()}


def drain(fake, data) -> dict:
    fake.drain(float(data.get("timeout", 10)))
    return {"ok": True}


def advance(fake, data) -> dict:
    if not isinstance(fake.clock, FakeClock):
        raise ValueError("this fake runs on real time; start it with a FakeClock to advance it")
    return {"now": fake.clock.advance(float(data["seconds"]))}


def expire_tokens(fake, data) -> dict:
    fake.expire_tokens()
    return {"ok": True}


def fail_next(fake, data) -> dict:
    fake.fail_next(data["method"], data["pathPrefix"], int(data["status"]), data.get("body"),
                   data.get("headers"), int(data.get("count", 1)))
    return {"ok": True}


def inject_events(fake, data) -> dict:
    fake.inject_events(data.get("callbackId"), data["events"])
    return {"ok": True}


def deliveries(fake, data) -> dict:
    with fake.lock:
        items = list(fake.ens_deliveries)
    return {"deliveries": [{"callbackId": d.callback_id, "url": d.url, "body": d.body.decode("utf-8"),
                            "signature": d.signature, "status": d.status, "error": d.error, "ok": d.ok,
                            "at": d.at, "attempt": d.attempt, "eventCount": d.event_count} for d in items]}


def callbacks(fake, data) -> dict:
    """Including the keys, which real SFMC never shows again: a demo may need them."""
    with fake.lock:
        return {"callbacks": [{**c.public(), "signatureKey": c.signature_key, "verificationKey": c.verification_key}
                              for c in fake.registry.callbacks.values()]}


ACTIONS = {
    ("GET", "truth"): truth,
    ("GET", "stats"): stats,
    ("GET", "knobs"): get_knobs,
    ("POST", "knobs"): set_knobs,
    ("POST", "define"): define,
    ("POST", "send"): send,
    ("POST", "map-delivery"): map_delivery,
    ("POST", "suspend"): suspend,
    ("POST", "step"): step,
    ("POST", "drain"): drain,
    ("POST", "advance"): advance,
    ("POST", "expire-tokens"): expire_tokens,
    ("POST", "fail-next"): fail_next,
    ("POST", "inject-events"): inject_events,
    ("GET", "deliveries"): deliveries,
    ("GET", "callbacks"): callbacks,
}
