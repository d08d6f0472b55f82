"""The Discord access tokens of signed-in dashboard sessions.

The session cookie carries a random session id, never the token. The token is kept under upstream's
session key ``cache:session:{id}`` in Redis, encrypted (Fernet, with a key derived from
``SECRET_KEY`` by HKDF-SHA256), for the session's lifetime: sessions survive a restart and are
shared by every process serving the dashboard. A bounded TTL cache in the process fronts Redis, and
is the only store when Redis is off (then a restart signs members out). A locally known token is
checked against Redis again after :data:`RECHECK_SECONDS` (so a sign-out in one process ends the
session in all of them within that time), and kept while Redis is down. A value that does not
decrypt (another key, upstream's own format, tampering) is no session.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from cachetools import TTLCache
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_PREFIX = "cache:session:"
#: tokens held in the process (the local front of Redis, or the whole store without it)
MAX_LOCAL_SESSIONS = 10_000
#: how long a token known in the process is trusted before Redis is asked again
RECHECK_SECONDS = 60.0
_KDF_INFO = b"polly dashboard session tokens"
_DOWN = object()  # Redis did not answer


class _Known(NamedTuple):
    token: str
    checked_at: float


def _fernet(secret_key: str) -> Fernet:
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(secret_key.encode("utf-8", "surrogatepass"))))


class SessionTokens:
    """Session id → Discord access token, in Redis (when given) and a bounded local TTL cache.

    ``redis`` is the process's :class:`~polly.redis.RedisConnector` (or None): its calls never
    raise, so a Redis outage degrades to the local cache.
    """

    def __init__(
        self,
        secret_key: str,
        ttl_seconds: int,
        redis: Any = None,
        *,
        max_local: int = MAX_LOCAL_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fernet = _fernet(secret_key)
        self._ttl = ttl_seconds
        self._redis = redis
        self._clock = clock
        self._local: TTLCache[str, _Known] = TTLCache(max_local, ttl_seconds, timer=clock)

    def __repr__(self) -> str:
        return f"SessionTokens(local={len(self._local)}, redis={self._redis is not None})"

    def __len__(self) -> int:
        return len(self._local)

    async def put(self, sid: str, token: str) -> None:
        self._local[sid] = _Known(token, self._clock())
        if self._redis is None:
            return
        sealed = self._fernet.encrypt(token.encode()).decode("ascii")
        key, ttl = KEY_PREFIX + sid, self._ttl
        await self._redis.run(lambda r: r.set(key, sealed, ex=ttl), None, "SET session")

    async def get(self, sid: str) -> str | None:
        known = self._local.get(sid)
        if self._redis is None:
            return None if known is None else known.token
        if known is not None and self._clock() - known.checked_at < RECHECK_SECONDS:
            return known.token
        key = KEY_PREFIX + sid
        sealed = await self._redis.run(lambda r: r.get(key), _DOWN, "GET session")
        if sealed is _DOWN:
            return None if known is None else known.token
        token = self._open(sealed)
        if token is None:
            self._local.pop(sid, None)
            return None
        self._local[sid] = _Known(token, self._clock())
        return token

    def _open(self, sealed: Any) -> str | None:
        if not isinstance(sealed, bytes | str):
            return None
        try:
            return self._fernet.decrypt(sealed, ttl=self._ttl).decode()
        except (InvalidToken, ValueError, TypeError):
            return None

    async def drop(self, sid: str) -> None:
        self._local.pop(sid, None)
        if self._redis is not None:
            key = KEY_PREFIX + sid
            await self._redis.run(lambda r: r.delete(key), None, "DEL session")
