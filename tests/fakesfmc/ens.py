"""ENS management (sfmc-api.md §3, §10.2): callbacks, verification, subscriptions and filters.

The create-callback probe is network I/O, so the registry only records its outcome; the server
runs the probe without holding the fake's lock (a receiver may call ens-verify from inside it).
"""

import base64
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import SfmcError, bad_request

PROBE_FAILURE = "MCMS_UWH_Runtime_GeneralFailure_probeCallbackLiveness"


@dataclass
class Callback:
    callback_id: str
    callback_name: str
    url: str
    max_batch_size: int
    signature_key: str
    verification_key: str
    created_at: float
    status: str = "unverified"
    status_reason: str = ""
    verification_used: bool = False
    probe_failed: bool = False

    def public(self) -> dict:
        return {"callbackId": self.callback_id, "callbackName": self.callback_name, "url": self.url,
                "maxBatchSize": self.max_batch_size, "status": self.status, "statusReason": self.status_reason}


@dataclass
class Subscription:
    subscription_id: str
    subscription_name: str
    callback_id: str
    event_category_types: list
    filters: list
    effective_at: float
    status: str = "active"
    status_reason: str = ""


@dataclass
class Registry:
    knobs: object
    clock: object
    rng: object
    callbacks: dict = field(default_factory=dict)
    subscriptions: dict = field(default_factory=dict)

    # callbacks

    def new_callbacks(self, body) -> list[Callback]:
        """Validate a create body and record each callback as unverified, ready to be probed."""
        items = require_array(body)
        seen = {c.url for c in self.callbacks.values()}
        checked = []
        for item in items:
            name, url = item.get("callbackName"), item.get("url")
            if not isinstance(name, str) or not name:
                raise bad_request(10002, "MCMS_UWH_Validation_MissingRequiredField", "callbackName is required")
            check_callback_url(url)
            if url in seen:
                raise SfmcError(400, 30004, f"MCMS_UWH_Validation_DuplicateCallbackUrl: {url} is already registered")
            seen.add(url)
            checked.append((name, url, check_batch_size(item.get("maxBatchSize", 1000))))
        created = []
        for name, url, size in checked:
            callback = Callback(self._uuid(), name, url, size, self._key(), self._key(), self.clock.now())
            self.callbacks[callback.callback_id] = callback
            created.append(callback)
        return created

    def probe_failed(self, callback: Callback, transport_status: str) -> SfmcError:
        callback.probe_failed = True
        callback.status_reason = f"probe failed: {transport_status}"
        return SfmcError(400, 30000,
                         f"{PROBE_FAILURE}: CallbackId is {callback.callback_id}. Could not verify callback url "
                         f"{callback.url}. Please delete the callback and create it again. "
                         f"Status: {transport_status}")

    def callback(self, callback_id) -> Callback:
        callback = self.callbacks.get(callback_id)
        if callback is None:
            raise SfmcError(404, 30003, f"MCMS_UWH_Runtime_ObjectNotFound: callback {callback_id} not found")
        return callback

    def verify(self, body) -> dict:
        if not isinstance(body, dict):
            raise bad_request(10001, "MCMS_UWH_Validation_InvalidDataType", "the body must be a single object")
        callback_id, key = body.get("callbackId"), body.get("verificationKey")
        if not isinstance(callback_id, str) or not isinstance(key, str) or not callback_id or not key:
            raise bad_request(10002, "MCMS_UWH_Validation_MissingRequiredField", "callbackId and verificationKey are required")
        callback = self.callbacks.get(callback_id)
        if callback is None or key != callback.verification_key:
            raise SfmcError(404, 30003, "MCMS_UWH_Runtime_ObjectNotFound: callbackId or verificationKey is wrong")
        if callback.verification_used:
            raise bad_request(30001, "MCMS_UWH_Runtime_InvalidOperation", "this verificationKey was already used")
        if callback.probe_failed:
            raise bad_request(30001, "MCMS_UWH_Runtime_InvalidOperation", "the liveness probe failed; recreate the callback")
        if self.clock.now() - callback.created_at > self.knobs.verify_window_hours * 3600:
            raise bad_request(30001, "MCMS_UWH_Runtime_InvalidOperation", "the verification window has expired")
        callback.verification_used = True
        callback.status, callback.status_reason = "verified", "none"
        return callback.public()

    def update_callbacks(self, body) -> list[dict]:
        items = require_array(body)
        changes = []
        for item in items:
            callback = self.callback(item.get("callbackId"))
            name = item.get("callbackName")
            if not isinstance(name, str) or not name:
                raise bad_request(10002, "MCMS_UWH_Validation_MissingRequiredField", "callbackName is required")
            if "url" in item and item["url"] != callback.url:
                raise bad_request(10005, "MCMS_UWH_Validation_InvalidValue", "the url of a callback cannot change")
            changes.append((callback, name, check_batch_size(item.get("maxBatchSize", callback.max_batch_size))))
        for callback, name, size in changes:
            callback.callback_name, callback.max_batch_size = name, size
        return [{"callbackId": c.callback_id, "callbackName": c.callback_name, "url": c.url,
                 "maxBatchSize": c.max_batch_size} for c, _, _ in changes]

    def delete_callback(self, callback_id: str) -> None:
        self.callback(callback_id)
        if any(s.callback_id == callback_id for s in self.subscriptions.values()):
            raise SfmcError(409, 30002, "MCMS_UWH_Runtime_InvalidStateTransition: delete the callback's subscriptions first")
        del self.callbacks[callback_id]

    def regenerate(self, body) -> list[dict]:
        items = [body] if isinstance(body, dict) else require_array(body)
        callbacks = [self.callback(item.get("callbackId")) for item in items]
        for callback in callbacks:
            callback.signature_key = self._key()
        return [{"callbackName": c.callback_name, "callbackId": c.callback_id, "url": c.url,
                 "signatureKey": c.signature_key} for c in callbacks]

    # subscriptions

    def create_subscriptions(self, body) -> list[dict]:
        items = require_array(body)
        names = {s.subscription_name for s in self.subscriptions.values()}
        counts: dict[str, int] = {}
        checked = []
        for item in items:
            name = item.get("subscriptionName")
            if not isinstance(name, str) or not name:
                raise bad_request(10002, "MCMS_UWH_Validation_MissingRequiredField", "subscriptionName is required")
            if name in names:
                raise SfmcError(400, 30004, f"MCMS_UWH_Validation_DuplicateSubscriptionName: {name} already exists")
            names.add(name)
            callback = self.callback(item.get("callbackId"))
            if callback.status != "verified":
                raise bad_request(30001, "MCMS_UWH_Runtime_InvalidOperation", "the callback is not verified")
            counts[callback.callback_id] = counts.get(callback.callback_id, 0) + 1
            existing = sum(1 for s in self.subscriptions.values() if s.callback_id == callback.callback_id)
            if existing + counts[callback.callback_id] > self.knobs.max_subscriptions_per_callback:
                raise bad_request(10005, "MCMS_UWH_Validation_InvalidValue", "a callback has at most 200 subscriptions")
            checked.append((name, callback, check_types(item.get("eventCategoryTypes")),
                            check_filters(item.get("filters", []))))
        created = []
        for name, callback, types, filters in checked:
            subscription = Subscription(self._uuid(), name, callback.callback_id, types, filters,
                                        self.clock.now() + self.knobs.subscription_propagation_delay)
            self.subscriptions[subscription.subscription_id] = subscription
            created.append({"callbackId": callback.callback_id, "callbackName": callback.callback_name,
                            "subscriptionName": name, "eventCategoryTypes": types,
                            "subscriptionId": subscription.subscription_id, "filters": filters, "status": "active"})
        return created

    def update_subscriptions(self, body) -> list[dict]:
        items = require_array(body)
        changes = []
        for item in items:
            subscription = self.subscription(item.get("subscriptionId"))
            types = check_types(item.get("eventCategoryTypes"))
            name = item.get("subscriptionName", subscription.subscription_name)
            if name != subscription.subscription_name and any(
                    s.subscription_name == name for s in self.subscriptions.values()):
                raise SfmcError(400, 30004, f"MCMS_UWH_Validation_DuplicateSubscriptionName: {name} already exists")
            status = item.get("status", subscription.status)
            if status not in ("active", "paused"):
                raise bad_request(10005, "MCMS_UWH_Validation_InvalidValue", "status must be active or paused")
            filters = check_filters(item.get("filters", subscription.filters))
            changes.append((subscription, name, types, filters, status, item.get("statusReason")))
        for subscription, name, types, filters, status, reason in changes:
            subscription.subscription_name, subscription.event_category_types = name, types
            subscription.filters = filters
            if status != subscription.status:
                subscription.status = status
                subscription.status_reason = reason if isinstance(reason, str) else ""
            elif isinstance(reason, str):
                subscription.status_reason = reason
        return [self.merged(s) for s, *_ in changes]

    def subscription(self, subscription_id) -> Subscription:
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            raise SfmcError(404, 30003, f"MCMS_UWH_Runtime_ObjectNotFound: subscription {subscription_id} not found")
        return subscription

    def subscriptions_of(self, callback_id: str) -> list[dict]:
        self.callback(callback_id)
        return [self.merged(s) for s in self.subscriptions.values() if s.callback_id == callback_id]

    def delete_subscription(self, subscription_id: str) -> None:
        self.subscription(subscription_id)
        del self.subscriptions[subscription_id]

    def merged(self, subscription: Subscription) -> dict:
        callback = self.callbacks[subscription.callback_id]
        return {"callbackId": callback.callback_id, "callbackName": callback.callback_name, "url": callback.url,
                "maxBatchSize": callback.max_batch_size, "subscriptionName": subscription.subscription_name,
                "eventCategoryTypes": subscription.event_category_types,
                "subscriptionId": subscription.subscription_id, "filters": subscription.filters,
                "status": subscription.status, "statusReason": subscription.status_reason}

    # routing

    def callbacks_for(self, event: dict) -> list[str]:
        """Verified callbacks with an active subscription that takes this event (paused ones drop it)."""
        now = self.clock.now()
        chosen = []
        for subscription in self.subscriptions.values():
            callback = self.callbacks.get(subscription.callback_id)
            if (callback is None or callback.status != "verified" or subscription.status != "active"
                    or subscription.effective_at > now or callback.callback_id in chosen):
                continue
            if event.get("eventCategoryType") in subscription.event_category_types and all(
                    filter_matches(f, event) for f in subscription.filters):
                chosen.append(callback.callback_id)
        return chosen

    def subscribed_types(self, callback_id: str) -> set:
        return {t for s in self.subscriptions.values() if s.callback_id == callback_id for t in s.event_category_types}

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _key(self) -> str:
        return base64.b64encode(self.rng.randbytes(32)).decode("ascii")


def filter_matches(expression: str, event: dict) -> bool:
    """`name=value` against a top-level field, else an `info` field; compared as strings."""
    name, _, value = expression.partition("=")
    if name in event:
        actual = event[name]
    else:
        actual = (event.get("info") or {}).get(name)
    return actual is not None and str(actual) == value


def require_array(body) -> list[dict]:
    if not isinstance(body, list) or not body or not all(isinstance(i, dict) for i in body):
        raise bad_request(10001, "MCMS_UWH_Validation_InvalidDataType", "the body must be a non-empty array of objects")
    return body


def check_callback_url(url) -> None:
    if not isinstance(url, str) or not url:
        raise bad_request(10002, "MCMS_UWH_Validation_MissingRequiredField", "url is required")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad_request(10003, "MCMS_UWH_Validation_IncorrectFormat", f"{url} is not a valid url") from None
    if parts.scheme != "https" or not parts.hostname:
        raise bad_request(10003, "MCMS_UWH_Validation_IncorrectFormat", "the callback url must be https")
    if port is not None:
        raise bad_request(10003, "MCMS_UWH_Validation_IncorrectFormat", "the callback url must not have a port")
    if parts.query or parts.fragment or "?" in url:
        raise bad_request(10003, "MCMS_UWH_Validation_IncorrectFormat", "the callback url must not have a query string")


def check_batch_size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 1000:
        raise bad_request(10005, "MCMS_UWH_Validation_InvalidValue", "maxBatchSize must be between 100 and 1000")
    return value


def check_types(value) -> list:
    if not isinstance(value, list) or not value or not all(isinstance(t, str) and t for t in value):
        raise bad_request(10002, "MCMS_UWH_Validation_MissingRequiredField", "eventCategoryTypes must be a non-empty array")
    return list(value)


def check_filters(value) -> list:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(f, str) and "=" in f for f in value):
        raise bad_request(10003, "MCMS_UWH_Validation_IncorrectFormat", "filters are name=value strings")
    return list(value)
