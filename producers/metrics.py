"""What `riverrun replay` exposes on `--metrics-port`, so a load run shows on the dashboard."""

from __future__ import annotations

import errno

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from riverrun.producers.client import ClientError


class ReplayMetrics:
    """Counters of one replay, on an injected registry so tests read fresh ones."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "riverrun_replay_requests_sent", "Prediction requests handed to the producer.",
            ["dataset"], registry=r,
        )  # fmt: skip
        self.feedback = Counter(
            "riverrun_replay_feedback_sent", "Labels handed to the producer.", ["dataset"],
            registry=r,
        )  # fmt: skip
        self.feedback_waiting = Gauge(
            "riverrun_replay_feedback_waiting", "Labels waiting out their feedback delay.",
            ["dataset"], registry=r,
        )  # fmt: skip
        self.delivery_failures = Gauge(
            "riverrun_replay_delivery_failures", "Records the broker refused or never took.",
            ["dataset"], registry=r,
        )  # fmt: skip

    def serve(self, port: int) -> None:
        """Serve /metrics on `port` (all interfaces, like the workers' health servers).

        Raises:
            ClientError: the port is taken.

        """
        try:
            start_http_server(port, registry=self.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ClientError(f"port {port} (--metrics-port) is in use: choose another, or "
                                  "stop what listens on it") from exc
            raise
