"""Reading a request body without trusting the client: a size limit, a deadline, no truncation.

Under gunicorn's sync workers a client that announces more bytes than it sends would hold a
worker until gunicorn kills it (30 s, a 500 page); two such clients would stall the receiver. So
the socket gets a read deadline, and a body that ends early or runs over is refused.
"""
from __future__ import annotations

import socket

from flask import request
from werkzeug.exceptions import ClientDisconnected

from .errors import BadRequest, RequestTimeout, TooLarge

READ_DEADLINE_SECONDS = 10.0


def read_body(limit: int) -> bytes:
    """The raw request body, checked against `limit` (MAX_BODY_BYTES) and its Content-Length.

    A Content-Length over the limit is refused before reading (werkzeug). A chunked body is cut
    at the limit by werkzeug without an error, so one more byte of input means it was too large.
    """
    connection = request.environ.get("gunicorn.socket")
    if isinstance(connection, socket.socket):
        connection.settimeout(READ_DEADLINE_SECONDS)
    try:
        body = request.get_data(cache=False)
        over = request.content_length is None and len(body) >= limit and request.environ["wsgi.input"].read(1)
    except (TimeoutError, ClientDisconnected):
        # werkzeug reports a read that timed out as a disconnect; either way the body is incomplete.
        raise RequestTimeout(f"the body did not arrive within {READ_DEADLINE_SECONDS:g} s") from None
    if over:
        raise TooLarge(f"the body is larger than MAX_BODY_BYTES ({limit} bytes)")
    if request.content_length is not None and len(body) != request.content_length:
        raise BadRequest(f"the body ended after {len(body)} of its {request.content_length} bytes")
    return body
