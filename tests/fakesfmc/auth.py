"""The OAuth2 client-credentials token endpoint and bearer checks (sfmc-api.md §1.2, §10.1).

Tokens live `token_lifetime` seconds of the fake's clock although `expires_in` says 1079, as on
real tenants; an expired, unknown or revoked token makes every REST route answer 401 errorcode 0.
"""

import base64
import secrets
from dataclasses import dataclass

from .errors import OAuthError, SfmcError, not_authorized

ALL_SCOPES = (
    "email_read email_write email_send sms_read sms_write sms_send "
    "event_notification_callback_create event_notification_callback_read "
    "event_notification_callback_update event_notification_callback_delete "
    "event_notification_subscription_create event_notification_subscription_read "
    "event_notification_subscription_update event_notification_subscription_delete"
).split()


@dataclass
class Token:
    value: str
    scopes: frozenset
    expires_at: float
    revoked: bool = False


class TokenIssuer:
    def __init__(self, knobs, clock, client_id: str, client_secret: str) -> None:
        self.knobs = knobs
        self.clock = clock
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens: dict[str, Token] = {}
        self.issued = 0

    def issue(self, body, base_url: str) -> dict:
        if not isinstance(body, dict):
            raise OAuthError(400, "invalid_request", "The request body must be a JSON object.")
        if body.get("grant_type") != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", "Use grant_type client_credentials.")
        if not body.get("client_id") or not body.get("client_secret"):
            raise OAuthError(400, "invalid_request", "client_id and client_secret are required.")
        if not (secrets.compare_digest(str(body["client_id"]), self.client_id)
                and secrets.compare_digest(str(body["client_secret"]), self.client_secret)):
            raise OAuthError(401, "invalid_client", "Invalid client ID. Use the client ID in Marketing Cloud.")
        account_id = body.get("account_id")
        if account_id is not None and not str(account_id).isdigit():
            raise OAuthError(400, "invalid_request", "account_id must be a MID.")
        scopes = ALL_SCOPES if body.get("scope") is None else str(body["scope"]).split()
        granted = [s for s in scopes if s in ALL_SCOPES]
        value = self._token_value()
        self.tokens[value] = Token(value, frozenset(granted), self.clock.now() + self.knobs.token_lifetime)
        self.issued += 1
        return {
            "access_token": value,
            "token_type": "Bearer",
            "expires_in": self.knobs.token_expires_in,
            "scope": " ".join(granted),
            "rest_instance_url": base_url + "/",
            "soap_instance_url": base_url + "/",
        }

    def authorize(self, authorization: str | None, scope: str | None) -> Token:
        scheme, _, value = (authorization or "").partition(" ")
        token = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.revoked or self.clock.now() >= token.expires_at:
            raise not_authorized()
        if scope and self.knobs.enforce_scopes and scope not in token.scopes:
            raise SfmcError(403, 40003, f"Insufficient privileges: the token lacks scope {scope}.")
        return token

    def expire_all(self) -> None:
        for token in self.tokens.values():
            token.revoked = True

    @staticmethod
    def _token_value() -> str:
        """JWT-looking, like real tokens, but opaque."""
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"4","ver":"1","typ":"JWT"}').rstrip(b"=").decode()
        return f"{header}.{secrets.token_urlsafe(96)}.{secrets.token_urlsafe(32)}"
