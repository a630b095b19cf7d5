"""gunicorn settings for the web process (Procfile `web:`)."""
import os

from receiver.config import ConfigError, Settings

# A bad environment variable stops the master with one line, before any worker starts.
try:
    settings = Settings.from_env()
except ConfigError as error:
    raise SystemExit(f"ens-status web: {error}") from None

port = os.environ.get("PORT", "8000")
if not port.isdigit() or not 0 < int(port) < 65536:
    raise SystemExit(f"ens-status web: PORT has a bad value: {port!r}")
bind = f"0.0.0.0:{port}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# ENS gives us 3 seconds; a request that takes 30 is a stuck worker, not a slow batch.
timeout = 30
graceful_timeout = 20
# Each worker must open its own SQLite connection after fork: never preload the app.
preload_app = False
accesslog = None
# Nothing here uses gunicorn's control socket, and one per user would clash between instances.
control_socket_disable = True
# gunicorn's own lines (start, worker boots) in the same format as the app's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"app": {"()": f"receiver.logs.{'Json' if settings.log_format == 'json' else 'Text'}Formatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "app", "stream": "ext://sys.stderr"}},
    "root": {"level": settings.log_level, "handlers": ["stderr"]},
    "loggers": {"gunicorn.error": {"level": settings.log_level, "handlers": [], "propagate": True}},
}
