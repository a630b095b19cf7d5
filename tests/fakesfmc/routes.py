"""The SFMC REST surface: token, transactional messaging, ENS management (sfmc-api.md §1, §3, §8).

Each route names the scope a token needs and whether it is rate-limited. Path parameters arrive
raw and are decoded exactly once here.
"""

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qs, unquote

from .errors import SfmcError, bad_request
from .server import Response

CHANNEL = r"(sms|email)"
SEGMENT = r"([^/]+)"


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    handler: Callable
    scope: Callable | None = None
    rate_limited: bool = False
    locked: bool = True


def decode_segment(raw: str) -> str:
    """Percent-decode one path segment, once, as UTF-8."""
    try:
        return unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise bad_request(10003, "MCMS_UTM_Validation_IncorrectFormat", "the path is not valid UTF-8") from None


def json_body(body: bytes):
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise SfmcError(400, 10004, "MCMS_UTM_Validation_InvalidJson: the request body is not valid JSON") from None


def json_object(body: bytes) -> dict:
    data = json_body(body)
    if not isinstance(data, dict):
        raise bad_request(10001, "MCMS_UTM_Validation_InvalidDataType", "the body must be a JSON object")
    return data


def query_params(query: str) -> dict:
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


# transactional messaging

def send_one(fake, request, channel: str, raw_key: str) -> Response:
    message_key = decode_segment(raw_key)
    data = json_object(request.body)
    if "recipients" in data:
        raise bad_request(10005, "MCMS_UTM_Validation_InvalidValue", "use recipient (one) on this route")
    recipient = data.get("recipient")
    if not isinstance(recipient, dict):
        raise bad_request(109102, "MCMS_UTM_Validation_NoSubscribers", "recipient is required")
    fake.messaging.send(channel, message_key, recipient.get("to"), recipient.get("contactKey"),
                        data.get("definitionKey"))
    return Response(202, {"requestId": str(uuid.uuid4()), "errorcode": 0, "responses": [{"messageKey": message_key}]})


def send_many(fake, request, channel: str) -> Response:
    data = json_object(request.body)
    definition_key = data.get("definitionKey")
    recipients = data.get("recipients")
    if not definition_key:
        raise bad_request(109107, "MCMS_UTM_Validation_MissingRequiredField_definitionKey", "definitionKey is required")
    definition = fake.messaging.definitions.get((channel, definition_key))
    if definition is None or definition.status == "deleted":
        raise bad_request(109111, "MCMS_UTM_Validation_InvalidValue_definitionKey", f"definition {definition_key} not found")
    if not isinstance(recipients, list) or not recipients:
        raise bad_request(109102, "MCMS_UTM_Validation_NoSubscribers", "recipients is required")
    if len(recipients) > fake.knobs.max_batch_recipients:
        raise bad_request(109101, "MCMS_UTM_Validation_TooManySubscribers",
                          f"at most {fake.knobs.max_batch_recipients} recipients")
    responses, seen, failed = [], set(), 0
    for recipient in recipients:
        recipient = recipient if isinstance(recipient, dict) else {}
        message_key = recipient.get("messageKey") or str(uuid.uuid4())
        try:
            fake.messaging.send(channel, message_key, recipient.get("to"), recipient.get("contactKey"),
                                definition_key, batch_keys=seen)
            responses.append({"messageKey": message_key})
        except SfmcError as error:
            failed += 1
            responses.append({"messageKey": message_key, "errorcode": error.errorcode, "message": error.message})
        seen.add(message_key)
    body = {"requestId": str(uuid.uuid4()), "errorcode": 0, "responses": responses}
    if failed:
        body = {"requestId": body["requestId"], "errorcode": 109001,
                "message": f"MCMS_UTM_ResponsesHasErrors: {failed} subscribers failed to queue out of {len(recipients)}",
                "responses": responses}
    return Response(202, body)


def send_status(fake, request, channel: str, raw_key: str) -> Response:
    message_key = decode_segment(raw_key)
    try:
        body = fake.messaging.status(channel, message_key)
    except SfmcError as error:
        if error.errorcode == 30003:
            fake.count_status_call(channel, message_key)
        raise
    fake.count_status_call(channel, message_key)
    return Response(200, body)


def not_sent_list(fake, request, channel: str) -> Response:
    params = query_params(request.query)
    if params.get("type") != "notSent":
        raise bad_request(10005, "MCMS_UTM_Validation_InvalidValue", "type must be notSent")
    try:
        page_size = int(params.get("$pageSize", params.get("$pagesize", fake.knobs.not_sent_page_size)))
        last_event_id = int(params.get("lastEventId") or 0)
    except ValueError:
        raise bad_request(10001, "MCMS_UTM_Validation_InvalidDataType", "$pageSize and lastEventId are numbers") from None
    if not 1 <= page_size <= 1000:
        raise bad_request(10005, "MCMS_UTM_Validation_InvalidValue", "$pageSize must be between 1 and 1000")
    fake.status_list_calls += 1
    return Response(200, fake.messaging.not_sent_page(channel, last_event_id, page_size))


# send definitions (§8.9)

def definition_body(definition) -> dict:
    return {"requestId": str(uuid.uuid4()), "definitionKey": definition.definition_key,
            "definitionId": definition.definition_id, "name": definition.name,
            "description": definition.description, "status": definition.status, "content": definition.content,
            "createdDate": iso(definition.created_at), "modifiedDate": iso(definition.modified_at)}


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def create_definition(fake, request, channel: str) -> Response:
    data = json_object(request.body)
    key, name = data.get("definitionKey"), data.get("name")
    if not key or not name:
        raise bad_request(10002, "MCMS_UTM_Validation_MissingRequiredField", "definitionKey and name are required")
    if "definitionId" in data:
        raise bad_request(10005, "MCMS_UTM_Validation_InvalidValue", "definitionId is read-only")
    existing = fake.messaging.definitions.get((channel, key))
    if existing is not None and existing.status != "deleted":
        raise SfmcError(409, 30004, f"MCMS_UTM_Runtime_ObjectAlreadyExists: definition {key} exists")
    definition = fake.messaging.define(channel, key, data.get("status", "active"), name,
                                       data.get("description", ""), data.get("content"))
    return Response(201, definition_body(definition))


def list_definitions(fake, request, channel: str) -> Response:
    params = query_params(request.query)
    wanted = params.get("$filter", "").replace("status eq ", "").strip() or None
    found = [d for (c, _), d in fake.messaging.definitions.items()
             if c == channel and d.status != "deleted" and (wanted is None or d.status == wanted)]
    items = [{k: v for k, v in definition_body(d).items() if k != "requestId"} for d in found]
    return Response(200, {"requestId": str(uuid.uuid4()), "definitions": items, "count": len(items),
                          "page": 1, "pageSize": len(items)})


def get_definition(fake, request, channel: str, raw_key: str) -> Response:
    return Response(200, definition_body(fake.messaging.definition(channel, decode_segment(raw_key))))


def patch_definition(fake, request, channel: str, raw_key: str) -> Response:
    definition = fake.messaging.definition(channel, decode_segment(raw_key))
    data = json_object(request.body)
    if "definitionId" in data:
        raise bad_request(10005, "MCMS_UTM_Validation_InvalidValue", "definitionId is read-only")
    if data.get("status", definition.status) not in ("active", "inactive"):
        raise bad_request(10005, "MCMS_UTM_Validation_InvalidValue", "status must be active or inactive")
    for field in ("name", "description", "content"):
        if field in data:
            setattr(definition, field, data[field])
    if "status" in data:
        fake.messaging.set_definition_status(definition, data["status"])
    return Response(200, definition_body(definition))


def delete_definition(fake, request, channel: str, raw_key: str) -> Response:
    definition = fake.messaging.definition(channel, decode_segment(raw_key))
    definition.status = "deleted"
    return Response(200, {"requestId": str(uuid.uuid4()), "message": "Deletion succeeded.", "errorcode": 0})


def definition_queue(fake, request, channel: str, raw_key: str) -> Response:
    definition = fake.messaging.definition(channel, decode_segment(raw_key))
    queued = fake.messaging.queued_for(definition)
    age = max((fake.clock.now() - s.created_at for s in queued), default=0)
    return Response(200, {"requestId": str(uuid.uuid4()), "count": len(queued), "ageSeconds": int(age)})


# ENS management (§3)

def create_callbacks(fake, request) -> Response:
    """Probe each new callback outside the lock: the receiver may call ens-verify while answering."""
    with fake.lock:
        created = fake.registry.new_callbacks(json_body(request.body))
    failed = [(c, fake.probe(c)) for c in created]
    failed = [(c, status) for c, status in failed if status is not None]
    with fake.lock:
        if failed:
            raise fake.registry.probe_failed(*failed[0])
    return Response(201, [{"callbackName": c.callback_name, "callbackId": c.callback_id, "url": c.url,
                           "signatureKey": c.signature_key, "maxBatchSize": c.max_batch_size} for c in created])


def list_callbacks(fake, request) -> Response:
    return Response(200, [c.public() for c in fake.registry.callbacks.values()])


def get_callback(fake, request, raw_id: str) -> Response:
    return Response(200, fake.registry.callback(decode_segment(raw_id)).public())


def update_callbacks(fake, request) -> Response:
    return Response(200, fake.registry.update_callbacks(json_body(request.body)))


def delete_callback(fake, request, raw_id: str) -> Response:
    fake.registry.delete_callback(decode_segment(raw_id))
    return Response(200, {})


def verify_callback(fake, request) -> Response:
    return Response(200, fake.registry.verify(json_body(request.body)))


def regenerate_key(fake, request) -> Response:
    return Response(200, fake.registry.regenerate(json_body(request.body)))


def create_subscriptions(fake, request) -> Response:
    return Response(201, fake.registry.create_subscriptions(json_body(request.body)))


def update_subscriptions(fake, request) -> Response:
    return Response(200, fake.registry.update_subscriptions(json_body(request.body)))


def get_subscription(fake, request, raw_id: str) -> Response:
    return Response(200, fake.registry.merged(fake.registry.subscription(decode_segment(raw_id))))


def delete_subscription(fake, request, raw_id: str) -> Response:
    fake.registry.delete_subscription(decode_segment(raw_id))
    return Response(200, {})


def subscriptions_by_callback(fake, request, raw_id: str) -> Response:
    return Response(200, fake.registry.subscriptions_of(decode_segment(raw_id)))


def channel_scope(action: str) -> Callable:
    return lambda channel, *_: f"{channel}_{action}"


def fixed_scope(scope: str) -> Callable:
    return lambda *_: scope


def route(method: str, path: str, handler: Callable, scope: Callable, **options) -> Route:
    return Route(method, re.compile(path + r"\Z"), handler, scope, **options)


MESSAGES = rf"/messaging/v1/{CHANNEL}/messages"
DEFINITIONS = rf"/messaging/v1/{CHANNEL}/definitions"
ENS = "/platform/v1"
CALLBACK_SCOPE = "event_notification_callback_"
SUBSCRIPTION_SCOPE = "event_notification_subscription_"

ROUTES = [
    route("POST", MESSAGES + "/?", send_many, channel_scope("send")),
    route("GET", MESSAGES + "/?", not_sent_list, channel_scope("read"), rate_limited=True),
    route("POST", MESSAGES + "/" + SEGMENT, send_one, channel_scope("send")),
    route("GET", MESSAGES + "/" + SEGMENT, send_status, channel_scope("read"), rate_limited=True),
    route("POST", DEFINITIONS + "/?", create_definition, channel_scope("write")),
    route("GET", DEFINITIONS + "/?", list_definitions, channel_scope("read")),
    route("GET", DEFINITIONS + "/" + SEGMENT, get_definition, channel_scope("read")),
    route("PATCH", DEFINITIONS + "/" + SEGMENT, patch_definition, channel_scope("write")),
    route("DELETE", DEFINITIONS + "/" + SEGMENT, delete_definition, channel_scope("write")),
    route("GET", DEFINITIONS + "/" + SEGMENT + "/queue", definition_queue, channel_scope("read")),
    route("POST", ENS + "/ens-callbacks/?", create_callbacks, fixed_scope(CALLBACK_SCOPE + "create"), locked=False),
    route("GET", ENS + "/ens-callbacks/?", list_callbacks, fixed_scope(CALLBACK_SCOPE + "read")),
    route("PUT", ENS + "/ens-callbacks/?", update_callbacks, fixed_scope(CALLBACK_SCOPE + "update")),
    route("GET", ENS + "/ens-callbacks/" + SEGMENT, get_callback, fixed_scope(CALLBACK_SCOPE + "read")),
    route("DELETE", ENS + "/ens-callbacks/" + SEGMENT, delete_callback, fixed_scope(CALLBACK_SCOPE + "delete")),
    route("POST", ENS + "/ens-verify/?", verify_callback, fixed_scope(CALLBACK_SCOPE + "update")),
    route("PUT", ENS + "/ens-regenerate/?", regenerate_key, fixed_scope(CALLBACK_SCOPE + "update")),
    route("POST", ENS + "/ens-subscriptions/?", create_subscriptions, fixed_scope(SUBSCRIPTION_SCOPE + "create")),
    route("PUT", ENS + "/ens-subscriptions/?", update_subscriptions, fixed_scope(SUBSCRIPTION_SCOPE + "update")),
    route("GET", ENS + "/ens-subscriptions/" + SEGMENT, get_subscription, fixed_scope(SUBSCRIPTION_SCOPE + "read")),
    route("DELETE", ENS + "/ens-subscriptions/" + SEGMENT, delete_subscription,
          fixed_scope(SUBSCRIPTION_SCOPE + "delete")),
    route("GET", ENS + "/ens-subscriptions-by-cb/" + SEGMENT, subscriptions_by_callback,
          fixed_scope(SUBSCRIPTION_SCOPE + "read")),
]


def find(method: str, raw_path: str):
    """(route, raw path parameters), or (None, None) when no route has this method and path."""
    for candidate in ROUTES:
        match = candidate.pattern.match(raw_path)
        if match and candidate.method == method:
            return candidate, match.groups()
    return None, None
