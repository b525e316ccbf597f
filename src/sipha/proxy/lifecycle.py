"""What the proxy core keeps for overload control and draining: a token bucket, the calls up."""

from __future__ import annotations

from typing import Final

CALL_MEMORY: Final = 3600.0
"""s a call set up through this instance is remembered without its BYE (it may go elsewhere)."""
CALL_LIMIT: Final = 200_000
"""At most this many calls are remembered (the oldest are forgotten first)."""
# n/rate seconds of float clock must refill n tokens: a hair of tolerance.
_EPSILON: Final = 1e-9

CallKey = tuple[str, str, str]
"""A dialog: Call-ID and both tags in a fixed order (:func:`sipha.proxy.rules.call_key`)."""


class TokenBucket:
    """``overload-ctrl-dialog-rate``: new INVITEs per second, burst = the rate (at least 1).

    Full at the first request; a rate of 0 admits everything.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = 0.0
        self._at: float | None = None

    def reconfigure(self, rate: float) -> None:
        """A new rate: the tokens kept are capped by the new burst (0: no limit, full again later)."""
        self.rate = rate
        if rate <= 0:
            self._at = None
        else:
            self._tokens = min(self._tokens, max(rate, 1.0))

    def admit(self, now: float) -> bool:
        """Take a token for a new INVITE; False when there is none."""
        rate = self.rate
        if rate <= 0:
            return True
        burst = max(rate, 1.0)
        last = self._at
        tokens = burst if last is None else min(burst, self._tokens + max(now - last, 0.0) * rate)
        self._at = now
        if tokens >= 1.0 - _EPSILON:
            self._tokens = max(tokens - 1.0, 0.0)
            return True
        self._tokens = tokens
        return False


class CallMemory:
    """Calls set up through this instance (a 2xx to a dialog-creating INVITE relayed), until their BYE.

    A drain waits for them; a call whose BYE goes elsewhere (another pool instance, or
    none) is forgotten after :data:`CALL_MEMORY`, and at most :data:`CALL_LIMIT` are kept.
    """

    def __init__(self) -> None:
        self._calls: dict[CallKey, float] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def remember(self, key: CallKey, now: float) -> None:
        """A call is up; the ones past their memory or over the limit are forgotten."""
        calls = self._calls
        calls[key] = now
        # Oldest first (insertion order).
        while calls:
            oldest = next(iter(calls))
            if len(calls) <= CALL_LIMIT and calls[oldest] + CALL_MEMORY > now:
                break
            del calls[oldest]

    def forget(self, key: CallKey) -> None:
        """Its BYE went through here."""
        self._calls.pop(key, None)
