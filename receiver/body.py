"""Reading a request body without trusting the client: a size limit, a deadline, no truncation.

Under gunicorn's sync workers a client that announces more bytes than it sends, or drips them a
byte at a time, would hold a worker until gunicorn kills it (30 s, an HTML 500); two such
clients would stall the receiver. A socket timeout bounds only each read, so a drip-feeder
never trips it: the whole body gets one deadline instead, as an interval timer (sync workers
serve each request on the main thread, where signals are delivered). A body that ends early or
runs over the size limit is refused.
"""
from __future__ import annotations

import signal
import threading

from flask import request
from werkzeug.exceptions import ClientDisconnected

from .errors import BadRequest, RequestTimeout, TooLarge

READ_DEADLINE_SECONDS = 10.0


class _DeadlinePassed(Exception):
    pass


def _deadline_passed(signum, frame):
    raise _DeadlinePassed


def read_body(limit: int) -> bytes:
    """The raw request body, checked against `limit` (MAX_BODY_BYTES) and its Content-Length.

    A Content-Length over the limit is refused before reading (werkzeug). A chunked body is cut
    at the limit by werkzeug without an error, so one more byte of input means it was too large.
    """
    timed = "gunicorn.socket" in request.environ and threading.current_thread() is threading.main_thread()
    if timed:
        previous = signal.signal(signal.SIGALRM, _deadline_passed)
        signal.setitimer(signal.ITIMER_REAL, READ_DEADLINE_SECONDS)
    try:
        body = request.get_data(cache=False)
        over = request.content_length is None and len(body) >= limit and request.environ["wsgi.input"].read(1)
    except (_DeadlinePassed, TimeoutError, ClientDisconnected):
        # werkzeug reports a read that failed as a disconnect; either way the body is incomplete.
        raise RequestTimeout(f"the body did not arrive in full within {READ_DEADLINE_SECONDS:g} s") from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    if over:
        raise TooLarge(f"the body is larger than MAX_BODY_BYTES ({limit} bytes)")
    if request.content_length is not None and len(body) != request.content_length:
        raise BadRequest(f"the body ended after {len(body)} of its {request.content_length} bytes")
    return body
