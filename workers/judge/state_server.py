"""The judge's state as JSON over HTTP: `/state` for every model, `/state/MODEL` for one."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson

from riverrun.workers.runtime.health import listen

logger = logging.getLogger(__name__)


class StateServer:
    """Serves the latest state the judge published, from a daemon thread; port 0 picks one."""

    def __init__(self, port: int = 0, host: str = "0.0.0.0") -> None:  # noqa: S104  # a service port
        self._state: dict[str, Any] = {"models": {}, "ready": False}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802  # the name http.server dispatches on
                path = self.path.split("?", 1)[0].rstrip("/")
                state = server.state()
                if path == "/state":
                    body: Any = state
                elif path.startswith("/state/"):
                    body = state.get("models", {}).get(path[len("/state/"):])
                    if body is None:
                        self._send(404, {"error": f"no model {path[len('/state/'):]!r}"})
                        return
                else:
                    self._send(404, {"error": "try /state or /state/MODEL"})
                    return
                self._send(200, body)

            def _send(self, status: int, body: Any) -> None:
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # http.server's name
                logger.debug("state server: " + format, *args)

        self._server = listen((host, port), Handler, "--http-port")
        self._thread = threading.Thread(target=self._server.serve_forever, name="judge-state",
                                        daemon=True)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_address[1])

    def start(self) -> StateServer:
        """Start serving; returns self."""
        self._thread.start()
        logger.info("judge state on :%d (/state, /state/MODEL)", self.port)
        return self

    def publish(self, state: dict[str, Any]) -> None:
        """Replace the state served."""
        with self._lock:
            self._state = state

    def state(self) -> dict[str, Any]:
        """The state served now."""
        with self._lock:
            return self._state

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
