"""The receiver's error family, each carrying its HTTP status and a stable code.

    ApiError
     ├── BadRequest (400)
     ├── Unauthorized (401)
     ├── NotFound (404)
     ├── RequestTimeout (408)
     ├── TooLarge (413)
     └── Unavailable (503)

One handler turns them (and werkzeug's own HTTP errors) into
`{"error": {"code": ..., "message": ...}}`.
"""
from __future__ import annotations

import logging
import sqlite3

from flask import Flask, current_app, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

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


class RequestTimeout(ApiError):
    status, code = 408, "request_timeout"


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


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return error_response(error.status, error.code, error.message)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        limit = current_app.config["SETTINGS"].max_body_bytes
        return error_response(413, TooLarge.code, f"the body is larger than MAX_BODY_BYTES ({limit} bytes)")

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
