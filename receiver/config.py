"""Settings read once from the environment at start.

Every variable of SPEC §2 lives here, typed. A bad value stops the process with one line that
names the variable and the value (never the value of a secret).
"""
from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

KEY_ENCODINGS = ("auto", "base64", "text")
LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SECRET_VARIABLES = frozenset({"ENS_SIGNATURE_KEYS", "API_TOKENS", "SFMC_CLIENT_SECRET"})


class ConfigError(Exception):
    """A variable has a value the process cannot run with."""


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _number(cast: Callable[[str], float], minimum: float) -> Callable[[str], float]:
    def convert(value: str) -> float:
        number = cast(value)
        if not minimum <= number < float("inf"):
            raise ValueError
        return number

    return convert


def _choice(choices: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def convert(value: str) -> str:
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ValueError
        return value

    return convert


def _database_url(value: str) -> str:
    if not value.startswith("sqlite:///") or value == "sqlite:///":
        raise ValueError
    return value


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError
    return value.rstrip("/")


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///var/ens-status.db"
    ens_signature_keys: tuple[str, ...] = field(default=(), repr=False)
    ens_key_encoding: str = "auto"
    ens_callback_id: str | None = None
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = 16 * 1024 * 1024
    sfmc_auth_base_url: str | None = None
    sfmc_client_id: str | None = None
    sfmc_client_secret: str | None = field(default=None, repr=False)
    sfmc_account_id: str | None = None
    sfmc_rest_base_url: str | None = None
    poll_interval_seconds: float = 30.0
    poll_grace_seconds: float = 300.0
    poll_queued_stale_seconds: float = 300.0
    poll_max_requests_per_minute: int = 60
    poll_window_hours: float = 72.0
    retention_days: float = 30.0
    log_level: str = "INFO"
    log_format: str = "json"

    @property
    def database_path(self) -> Path:
        """`sqlite:///var/x.db` is relative to the working directory, `sqlite:////srv/x.db` absolute."""
        return Path(self.database_url[len("sqlite:///"):])

    @property
    def sfmc_configured(self) -> bool:
        return bool(self.sfmc_auth_base_url and self.sfmc_client_id and self.sfmc_client_secret)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for name, convert in _VARIABLES.items():
            raw = environ.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name.lower()] = convert(raw.strip())
            except ValueError:
                shown = "(hidden)" if name in SECRET_VARIABLES else repr(raw)
                raise ConfigError(f"{name} has a bad value: {shown}") from None
        values.update(overrides)
        settings = cls(**values)
        settings._check_keys()
        return settings

    def _check_keys(self) -> None:
        """With ENS_KEY_ENCODING=base64, a key that is not base64 could never match: say so at start."""
        if self.ens_key_encoding != "base64":
            return
        for index, key in enumerate(self.ens_signature_keys, start=1):
            try:
                base64.b64decode(key, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"ENS_SIGNATURE_KEYS has a bad value: key {index} is not base64, "
                                  "but ENS_KEY_ENCODING=base64") from None


_VARIABLES: dict[str, Callable[[str], object]] = {
    "DATABASE_URL": _database_url,
    "ENS_SIGNATURE_KEYS": _split,
    "ENS_KEY_ENCODING": _choice(KEY_ENCODINGS),
    "ENS_CALLBACK_ID": str,
    "API_TOKENS": _split,
    "MAX_BODY_BYTES": _number(int, 1),
    "SFMC_AUTH_BASE_URL": _url,
    "SFMC_CLIENT_ID": str,
    "SFMC_CLIENT_SECRET": str,
    "SFMC_ACCOUNT_ID": str,
    "SFMC_REST_BASE_URL": _url,
    "POLL_INTERVAL_SECONDS": _number(float, 0.01),
    "POLL_GRACE_SECONDS": _number(float, 0),
    "POLL_QUEUED_STALE_SECONDS": _number(float, 0),
    "POLL_MAX_REQUESTS_PER_MINUTE": _number(int, 1),
    "POLL_WINDOW_HOURS": _number(float, 0),
    "RETENTION_DAYS": _number(float, 0),
    "LOG_LEVEL": _choice(LOG_LEVELS, upper=True),
    "LOG_FORMAT": _choice(LOG_FORMATS),
}
