"""Concurrent ENS senders: each thread POSTs the next unsent batch and waits for the answer, as ENS does.

Every batch is already serialized and signed, so a sender spends its time waiting on the socket,
not competing with the server for the two cores.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from .workload import Batch


@dataclass
class Sent:
    latency: float  # seconds from sending the first byte to reading the answer
    status: int | None
    events: int


@dataclass
class SendResult:
    wall: float = 0.0
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def acknowledged(self) -> list[Sent]:
        return [s for s in self.sent if s.status == 200]

    @property
    def events_acknowledged(self) -> int:
        return sum(s.events for s in self.acknowledged)

    @property
    def events_per_second(self) -> float:
        return self.events_acknowledged / self.wall if self.wall else 0.0

    @property
    def latencies(self) -> list[float]:
        return [s.latency for s in self.acknowledged]


def post_batches(url: str, batches: list[Batch], senders: int, time_limit: float, timeout: float = 35.0) -> SendResult:
    """POST `batches` to `url` from `senders` threads; no new batch is started after `time_limit` s."""
    result = SendResult()
    lock = threading.Lock()
    pending = iter(batches)
    start_line = threading.Barrier(senders + 1)
    deadline = [0.0]

    def next_batch() -> Batch | None:
        with lock:
            if time.perf_counter() > deadline[0]:
                return None
            return next(pending, None)

    def sender() -> None:
        with httpx.Client(timeout=timeout) as client:
            start_line.wait()
            while (batch := next_batch()) is not None:
                headers = {"Content-Type": "application/json", "x-sfmc-ens-signature": batch.signature}
                began = time.perf_counter()
                try:
                    status = client.post(url, content=batch.body, headers=headers).status_code
                except httpx.HTTPError as error:
                    status = None
                    with lock:
                        result.errors.append(f"{type(error).__name__}: {error}")
                with lock:
                    result.sent.append(Sent(time.perf_counter() - began, status, batch.events))

    threads = [threading.Thread(target=sender, name=f"ens-sender-{n}", daemon=True) for n in range(senders)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + time_limit
    start_line.wait()
    for thread in threads:
        thread.join(time_limit + timeout + 5)
    result.wall = time.perf_counter() - began
    return result
