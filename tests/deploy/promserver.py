"""A real Prometheus server for tests: free loopback port, temporary data dir, given scrape targets.

``PrometheusServer`` writes a configuration, starts Debian's ``prometheus`` binary (or whatever
``POLLY_TEST_PROMETHEUS`` names), waits until it is ready, and answers PromQL through the HTTP API.
It scrapes every second and evaluates rules every second, so a test has data in a few seconds.
Stopping it terminates the process (SIGTERM, then SIGKILL after 10 s) and removes nothing the
caller did not give it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str, env_var: str) -> str | None:
    """``$env_var`` if set, else ``name`` on PATH, else ``None``."""
    return os.environ.get(env_var) or shutil.which(name)


class PrometheusError(Exception):
    """Prometheus did not start, or a query failed."""


class PrometheusServer:
    """One Prometheus process scraping ``targets`` as job ``job`` (see the module docstring)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        targets: Sequence[str],
        *,
        job: str = "polly",
        rule_files: Sequence[Path] = (),
        metric_relabel_configs: Sequence[dict[str, Any]] = (),
        start_timeout_seconds: float = 30.0,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._start_timeout = start_timeout_seconds
        self._process: subprocess.Popen[bytes] | None = None
        scrape: dict[str, Any] = {
            "job_name": job,
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [{"targets": list(targets)}],
        }
        if metric_relabel_configs:
            scrape["metric_relabel_configs"] = list(metric_relabel_configs)
        self.config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [scrape],
        }

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()

    def start(self) -> None:
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        log = (self.workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        msg = f"prometheus did not become ready in {self._start_timeout:.0f} s; log:\n{self.log()}"
        raise PrometheusError(msg)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful API answer; raises :class:`PrometheusError` with the error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        if body.get("status") != "success":
            msg = f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
            raise PrometheusError(msg)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now (a scalar becomes one sample without labels)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, timeout_seconds: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns something; raises with the log when it never does."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            result = self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                msg = f"{expr!r} stayed empty for {timeout_seconds:.0f} s; log:\n{self.log()}"
                raise PrometheusError(msg)
            time.sleep(0.5)
