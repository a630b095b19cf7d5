"""ens-status receiver: the ENS webhook and the query API, as a Flask app for gunicorn."""
from __future__ import annotations

import logging
import os
from typing import Mapping

from flask import Flask

from . import api, ens, errors, logs
from .config import Settings
from .store import Store

log = logging.getLogger("receiver")


def create_app(config: Settings | Mapping[str, str] | None = None) -> Flask:
    """Build the app: settings from the environment, overridden by `config` (tests pass a mapping)."""
    settings = config if isinstance(config, Settings) else Settings.from_env({**os.environ, **(config or {})})
    logs.configure(settings.log_level, settings.log_format)
    app = Flask(__name__)
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["SETTINGS"] = settings
    store = Store(settings.database_path)
    store.upgrade()
    app.extensions["store"] = store
    errors.init_app(app)
    ens.init_app(app)
    api.init_app(app)
    _warn_about_missing_secrets(settings)
    return app


def _warn_about_missing_secrets(settings: Settings) -> None:
    if not settings.ens_signature_keys:
        log.warning("ENS_SIGNATURE_KEYS is not set: every ENS event POST will be refused with 401 "
                    "(verification probes are still accepted)")
    if not settings.api_tokens:
        log.warning("API_TOKENS is not set: the query API answers 401 to everyone; set API_TOKENS to a "
                    "comma-separated list of bearer tokens, e.g. API_TOKENS=$(python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')")
