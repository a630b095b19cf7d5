"""The throttle on the status routes: a token bucket on the fake's clock (sfmc-api.md §8.7)."""

import math

from .errors import DOCS_URL, SfmcError


class TokenBucket:
    def __init__(self, knobs, clock) -> None:
        self.knobs = knobs
        self.clock = clock
        self.tokens: float | None = None
        self.updated_at = clock.now()

    def take(self) -> None:
        """Spend one request, or raise the 429 SFMC answers when the bucket is empty."""
        rate, burst = self.knobs.status_rate, self.knobs.status_burst
        now = self.clock.now()
        if rate is None:
            self.tokens, self.updated_at = None, now
            return
        if self.tokens is None:
            self.tokens = float(burst)
        self.tokens = min(float(burst), self.tokens + max(0.0, now - self.updated_at) * rate)
        self.updated_at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return
        if self.knobs.rate_limit_errorcode == 50200:
            raise SfmcError(429, 50200, "Requests are temporarily blocked.", DOCS_URL)
        retry_after = max(1, math.ceil((1.0 - self.tokens) / rate)) if rate > 0 else 60
        raise SfmcError(429, 50100, "Rate limit exceeded", DOCS_URL,
                        headers={"Retry-After": str(retry_after)}, extra={"retryAfter": retry_after})
