"""A ``redis-server`` of a test's own, on a free port, that the test may kill and restart.

Fault tests never touch the shared server: they start one of these.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tests.services import unavailable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OwnRedisServer:
    """``redis-server --port N --save '' --appendonly no`` plus ``extra_args``; no data survives a kill."""

    def __init__(self, *extra_args: str, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", FileNotFoundError("redis-server is not on PATH"))
        self.binary = binary
        self.port = free_port()
        self.password = password
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=2, client_name="test-admin")

    def start(self, timeout_seconds: float = 10.0) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen([*args, *self.extra_args], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                with self.admin() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: connections drop without a goodbye, as in a crash."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def polly_connections(self) -> int:
        """Connections named ``polly`` in ``CLIENT LIST``."""
        with self.admin() as client:
            return sum(1 for c in client.client_list() if c.get("name") == "polly")


@contextmanager
def own_redis_server(*extra_args: str, password: str | None = None) -> Iterator[OwnRedisServer]:
    server = OwnRedisServer(*extra_args, password=password)
    server.start()
    try:
        yield server
    finally:
        server.kill()
