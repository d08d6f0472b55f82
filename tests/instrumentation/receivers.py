"""Real OTLP metric receivers on loopback: gRPC (grpcio + the proto servicer) and HTTP/protobuf."""

from __future__ import annotations

import gzip
import socket
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no stubs
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as pb_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Received:
    """Requests received so far, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[pb.ExportMetricsServiceRequest] = []
        self.event = threading.Event()

    def add(self, request: pb.ExportMetricsServiceRequest) -> None:
        with self.lock:
            self.requests.append(request)
        self.event.set()

    def wait(self, count: int, timeout: float = 15.0) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return True
            self.event.wait(0.05)
            self.event.clear()
        return False

    def __len__(self) -> int:
        with self.lock:
            return len(self.requests)


class _Servicer(pb_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(  # noqa: N802 - the proto's method name
        self, request: pb.ExportMetricsServiceRequest, context: Any
    ) -> pb.ExportMetricsServiceResponse:
        self.received.add(request)
        return pb.ExportMetricsServiceResponse()


class GrpcReceiver:
    def __init__(self, port: int, received: Received) -> None:
        self.port = port
        self.received = received
        self.server: grpc.Server | None = None

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _Servicer(self.received), server
        )
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0).wait()
            self.server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class HttpReceiver:
    def __init__(self, port: int, received: Received) -> None:
        self.port = port
        self.received = received
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = pb.ExportMetricsServiceRequest()
                request.ParseFromString(body)
                received.add(request)
                payload = pb.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"
