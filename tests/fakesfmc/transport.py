"""Outbound HTTP for ENS: registered https URLs are mapped to local receivers.

An unmapped URL is never contacted; it fails like a host that does not resolve, so tests can
never reach the internet by accident.
"""

import time

import httpx


class Transport:
    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}
        self.client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), trust_env=False, verify=False)

    def map(self, registered_url: str, actual_url: str) -> None:
        self.mapping[registered_url] = actual_url

    def post(self, registered_url: str, body: bytes, headers: dict, timeout: float) -> tuple[int | None, str | None]:
        """(status, None) when an answer arrived in time, else (None, a .NET-style transport status)."""
        actual = self.mapping.get(registered_url)
        if actual is None:
            return None, "NameResolutionFailure"
        started = time.monotonic()
        try:
            response = self.client.post(actual, content=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            return None, "Timeout"
        except Exception as error:
            return None, f"ConnectFailure ({type(error).__name__})"
        if time.monotonic() - started > timeout:
            return None, "Timeout"
        return response.status_code, None

    def close(self) -> None:
        self.client.close()
