"""Discord's REST rate limits as the stand-in applies them, and the failures a test injects.

Each route belongs to a bucket per major parameter (the channel or guild), with Discord's headers on
every answer: ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` (epoch seconds), ``-Reset-After``
(seconds) and ``-Bucket``. A request over the limit gets Discord's 429: body
``{"message": "You are being rate limited.", "retry_after": s, "global": false}``, headers
``Retry-After`` (whole seconds, rounded up) and ``X-RateLimit-Scope``. Every answer carries
``Via: 1.1 google``: without it discord.py takes a 429 for a Cloudflare ban.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

VIA = {"Via": "1.1 google"}
RATE_LIMITED_MESSAGE = "You are being rate limited."


@dataclass(frozen=True, slots=True)
class Limit:
    """``requests`` per ``per_seconds`` window."""

    requests: int
    per_seconds: float


# Discord's observed limits for the routes polly calls; everything else gets the default.
ROUTE_LIMITS: dict[str, Limit] = {
    "POST /channels/{cid}/messages": Limit(5, 5.0),
    "PATCH /channels/{cid}/messages/{mid}": Limit(5, 5.0),
    "reactions": Limit(1, 0.25),
}
DEFAULT_LIMIT = Limit(50, 1.0)


@dataclass
class _Window:
    limit: Limit
    reset_at: float  # time.time()
    used: int = 0


@dataclass
class Fault:
    """Answer the next ``times`` requests whose ``"METHOD /path"`` contains ``match``."""

    status: int
    body: dict[str, Any] | str | None
    headers: dict[str, str]
    match: str
    times: int
    retry_after: float | None = None  # a 429 with Discord's body and headers
    via: bool = True
    scope: str = "user"
    is_global: bool = False


@dataclass(frozen=True, slots=True)
class Seen:
    """One REST request: when (monotonic), what, and the answer's status (and retry-after on 429)."""

    at: float
    method: str
    path: str
    route: str
    status: int
    retry_after: float | None = None
    body: Any = None


@dataclass
class Limiter:
    """Buckets per ``(route bucket, major parameter)``; ``enforce=False`` only reports headers."""

    enforce: bool = True
    limits: dict[str, Limit] = field(default_factory=lambda: dict(ROUTE_LIMITS))
    _windows: dict[tuple[str, str], _Window] = field(default_factory=dict)

    def check(self, bucket: str, major: str) -> tuple[dict[str, str], float | None]:
        """Count one request; returns its headers and, when over the limit, the retry-after."""
        limit = self.limits.get(bucket, DEFAULT_LIMIT)
        now = time.time()
        window = self._windows.get((bucket, major))
        if window is None or now >= window.reset_at:
            window = self._windows[(bucket, major)] = _Window(limit, now + limit.per_seconds)
        retry: float | None = None
        if window.used >= limit.requests and self.enforce:
            retry = max(window.reset_at - now, 0.001)
        else:
            window.used += 1
        reset_after = max(window.reset_at - now, 0.0)
        headers = {
            "X-RateLimit-Limit": str(limit.requests),
            "X-RateLimit-Remaining": str(max(limit.requests - window.used, 0)),
            "X-RateLimit-Reset": f"{window.reset_at:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(bucket.encode()).hexdigest()[:32],
        }
        return headers, retry


def rate_limited(
    retry_after: float, *, scope: str = "user", is_global: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """Discord's 429 body and its extra headers."""
    body = {"message": RATE_LIMITED_MESSAGE, "retry_after": round(retry_after, 3), "global": is_global}
    headers = {"Retry-After": str(math.ceil(retry_after)), "X-RateLimit-Scope": scope}
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    return body, headers


class RequestLog:
    """The last ``maxlen`` requests, oldest first."""

    def __init__(self, maxlen: int = 50_000) -> None:
        self.entries: deque[Seen] = deque(maxlen=maxlen)

    def add(self, seen: Seen) -> None:
        self.entries.append(seen)

    def matching(self, method: str | None = None, contains: str = "") -> list[Seen]:
        return [s for s in self.entries if (method is None or s.method == method) and contains in s.path]
