"""One small HTTP server per process: /metrics for Prometheus, /livez and /readyz for probes."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from riverrun.workers.runtime.errors import PortInUse

logger = logging.getLogger(__name__)


class HealthServer:
    """Serves metrics and probes from a daemon thread; `port=0` picks a free port."""

    def __init__(
        self,
        registry: CollectorRegistry,
        is_ready: Callable[[], bool],
        is_live: Callable[[], bool] = lambda: True,
        host: str = "0.0.0.0",  # noqa: S104  # probes come from the orchestrator's network
        port: int = 0,
        setting: str = "--metrics-port",
    ) -> None:
        handler = _handler(registry, is_ready, is_live)
        self._server = listen((host, port), handler, setting)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="riverrun-health", daemon=True
        )

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Start serving in the background."""
        self._thread.start()
        logger.info("metrics and probes on :%d (/metrics, /livez, /readyz)", self.port)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()


def listen(
    address: tuple[str, int], handler: type[BaseHTTPRequestHandler], setting: str
) -> ThreadingHTTPServer:
    """Bind an HTTP server.

    Raises:
        PortInUse: the port is taken; the error names the `setting` that chose it.

    """
    try:
        return ThreadingHTTPServer(address, handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(address[1], setting) from exc
        raise


def _handler(
    registry: CollectorRegistry, is_ready: Callable[[], bool], is_live: Callable[[], bool]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  # the name http.server dispatches on
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/livez"):
                ok = is_live()
                self._send(200 if ok else 503, b"ok\n" if ok else b"not live\n")
            elif self.path.startswith("/readyz"):
                ok = is_ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"try /metrics, /livez or /readyz\n")

        def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # stdlib name
            logger.debug("health %s", format % args)

    return Handler
