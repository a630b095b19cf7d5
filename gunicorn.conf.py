"""gunicorn settings for the web process (Procfile `web:`)."""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# ENS gives us 3 seconds; a request that takes 30 is a stuck worker, not a slow batch.
timeout = 30
graceful_timeout = 20
# Each worker must open its own SQLite connection after fork: never preload the app.
preload_app = False
accesslog = None

# A bad environment variable stops the master with one line, before any worker starts.
from receiver.config import ConfigError, Settings  # noqa: E402

try:
    Settings.from_env()
except ConfigError as error:
    raise SystemExit(f"ens-status web: {error}") from None
