"""Every tunable behaviour of the fake, in one mutable dataclass that can change while it runs.

Times are seconds of the fake's clock unless a name says otherwise; `flush_interval`,
`ack_timeout`, `probe_timeout`, `retry_interval`, `tick_interval` and `keepalive_timeout` are real
seconds, because they bound HTTP waits and batching latency rather than simulated business time.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from .outcomes import DEFAULT_EMAIL_OUTCOMES, DEFAULT_SMS_OUTCOMES, PRESETS

RETRY_POLICIES = ("drop+suspend", "defer")


@dataclass
class Knobs:
    # auth (§1.2)
    token_expires_in: int = 1079
    token_lifetime: float = 1200.0
    enforce_scopes: bool = True
    # transactional messaging (§8)
    key_uniqueness_hours: float = 48.0
    status_retention_hours: float = 72.0
    queue_expiry_hours: float = 72.0
    not_found_status: int = 404
    visibility_delay: float = 0.0
    send_delay: float = 1.0
    transient_delay: float = 2.0
    final_delay: float = 4.0
    max_batch_recipients: int = 2000
    not_sent_page_size: int = 20
    sms_outcomes: dict = field(default_factory=lambda: dict(DEFAULT_SMS_OUTCOMES))
    email_outcomes: list = field(default_factory=lambda: list(DEFAULT_EMAIL_OUTCOMES))
    outcome_rule: Callable | None = None
    # status-route rate limit (§8.7); status_rate None = unlimited
    status_rate: float | None = None
    status_burst: int = 10
    rate_limit_errorcode: int = 50100
    # ENS management (§3)
    probe_timeout: float = 30.0
    verify_window_hours: float = 4.0
    max_subscriptions_per_callback: int = 200
    subscription_propagation_delay: float = 0.0
    # ENS delivery (§7, §10.3)
    signature_mode: str = "base64"
    flush_interval: float = 0.2
    ack_timeout: float = 3.0
    max_retries: int = 3
    retry_interval: float = 0.0
    retry_policy: str = "drop+suspend"
    failure_window: float = 300.0
    suspend_seconds: float = 600.0
    suspend_max_seconds: float = 3600.0
    defer_seconds: float = 600.0
    defer_max_seconds: float = 7 * 86400.0
    # fault injection, all drawn from the seeded generator
    duplicate_probability: float = 0.0
    reorder: bool = False
    delivery_delay: float = 0.0
    corrupt_signature_probability: float = 0.0
    unsubscribed_event_probability: float = 0.0
    mid_eid_as_strings: bool = False
    # tenant identity and plumbing
    mid: int = 7000001
    eid: int = 7000000
    tick_interval: float = 0.1
    keepalive_timeout: float = 5.0

    def tenant_ids(self) -> tuple:
        """(mid, eid) as ENS events carry them: numbers, or strings as some families send them."""
        if self.mid_eid_as_strings:
            return str(self.mid), str(self.eid)
        return self.mid, self.eid

    def update(self, changes: dict) -> None:
        """Apply `changes`, refusing unknown names and values the fake could not act on."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(unknown)}")
        if changes.get("retry_policy", self.retry_policy) not in RETRY_POLICIES:
            raise ValueError(f"retry_policy must be one of {RETRY_POLICIES}")
        if changes.get("signature_mode", self.signature_mode) not in ("base64", "text"):
            raise ValueError("signature_mode must be 'base64' or 'text'")
        presets = list(changes.get("sms_outcomes", {}).values())
        presets += [p for _, p in changes.get("email_outcomes", [])]
        bad = [p for p in presets if isinstance(p, str) and p not in PRESETS]
        if bad:
            raise ValueError(f"unknown outcome preset(s): {', '.join(bad)}")
        for name, value in changes.items():
            setattr(self, name, [tuple(pair) for pair in value] if name == "email_outcomes" else value)

    def to_json(self) -> dict:
        """The knobs a JSON client can see and set (callables are Python-only)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "outcome_rule"}
