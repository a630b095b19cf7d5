"""The receiver's error family, each carrying its HTTP status and a stable code.

    ApiError
     ├── BadRequest (400)
     ├── Unauthorized (401)
     ├── NotFound (404)
     ├── TooLarge (413)
     └── Unavailable (503)

One handler turns them (and werkzeug's own HTTP errors) into
`{"error": {"code": ..., "message": ...}}`.
"""
from __future__ import annotations

import logging
import sqlite3

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("receiver")


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class NotFound(ApiError):
    status, code = 404, "not_found"


class TooLarge(ApiError):
    status, code = 413, "too_large"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


def error_response(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def read_body(limit: int) -> bytes:
    """The raw request body, or TooLarge when it is over `limit` (MAX_BODY_BYTES).

    A body with a Content-Length over the limit is refused before reading; a chunked one is cut
    at the limit by werkzeug without an error, so one more byte of input means it was too large.
    """
    body = request.get_data(cache=False)
    if request.content_length is None and len(body) >= limit and request.environ["wsgi.input"].read(1):
        raise TooLarge(f"the body is larger than MAX_BODY_BYTES ({limit} bytes)")
    return body


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return error_response(error.status, error.code, error.message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        return error_response(error.code or 500, code, error.description or error.name)

    @app.errorhandler(sqlite3.Error)
    def database_error(error: sqlite3.Error):
        log.warning("database unavailable", extra={"fields": {"error": str(error)}})
        return error_response(503, "unavailable", "the database is not answering; try again shortly")

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.error("unexpected error", extra={"fields": {"error_type": type(error).__name__}})
        return error_response(500, "internal", "internal error")
