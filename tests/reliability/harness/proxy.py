"""A small TCP proxy in front of a broker, for network faults: black-holes, latency, resets.

Clients reach the broker only through the proxy when the broker advertises the proxy's address
(see `test_network_faults.py`). Each connection has two pumps. A black-hole holds every byte in
both directions, as a network that drops packets does (TCP retransmits them once it heals);
latency delays each chunk; a reset closes connections with RST. Faults touch only the clients
`affects` picks by the `client.id` of their first Kafka request, so the load generator can keep
writing while the workers are cut off. The counters are the guards: a fault that touched no
traffic proves nothing.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_CHUNK = 65536


@dataclass
class ProxyStats:
    """What the proxy saw; a fault's guard reads these."""

    connections: int = 0
    bytes_forwarded: int = 0
    held_chunks: int = 0
    resets: int = 0


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.client_id: str | None = None
        self.closed = threading.Event()

    def reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into an RST instead of a FIN.
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        self.closed.set()

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()
        self.closed.set()


class FaultProxy:
    """Listens on 127.0.0.1:`port` and forwards to `upstream`, with injectable faults."""

    def __init__(self, upstream: tuple[str, int], port: int = 0,
                 affects: Callable[[str], bool] = lambda _client_id: True) -> None:
        self.upstream = upstream
        self._affects = affects
        self.stats = ProxyStats()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(128)
        self._flowing = threading.Event()
        self._flowing.set()
        self._latency_s = 0.0
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return int(self._listener.getsockname()[1])

    def start(self) -> FaultProxy:
        """Start accepting; returns self."""
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection."""
        self._stop.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    # -- faults --------------------------------------------------------------------------

    def black_hole(self) -> None:
        """From now on nothing gets through, in either direction, until `heal`."""
        self._flowing.clear()

    def heal(self) -> None:
        """End a black-hole and any latency: held bytes flow again, in order."""
        self._latency_s = 0.0
        self._flowing.set()

    def latency(self, seconds: float) -> None:
        """Delay every chunk forwarded from now on by `seconds`."""
        self._latency_s = seconds

    def reset_all(self) -> int:
        """Reset every affected open connection (RST); returns how many there were."""
        with self._lock:
            links = [link for link in self._links if self._hits(link)]
            self._links.difference_update(links)
        for link in links:
            link.reset()
        self.stats.resets += len(links)
        return len(links)

    # -- forwarding ----------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            # A black-holed network answers nobody: the connection waits for the heal.
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _hits(self, link: _Link) -> bool:
        return link.client_id is not None and self._affects(link.client_id)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, upstream)
        with self._lock:
            self._links.add(link)
        self.stats.connections += 1
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(link, source, target), daemon=True).start()

    def _pump(self, link: _Link, source: socket.socket, target: socket.socket) -> None:
        held: list[bytes] = []
        try:
            while not link.closed.is_set():
                readable, _, _ = select.select([source], [], [], 0.05)
                if readable:
                    data = source.recv(_CHUNK)
                    if not data:
                        break
                    if link.client_id is None and source is link.client:
                        link.client_id = client_id_of(data)
                    held.append(data)
                hit = self._hits(link)
                if hit and not self._flowing.is_set():
                    if readable:
                        self.stats.held_chunks += 1
                    continue
                if held and hit and self._latency_s:
                    time.sleep(self._latency_s)
                for chunk in held:
                    target.sendall(chunk)
                    self.stats.bytes_forwarded += len(chunk)
                held.clear()
        except (OSError, ValueError):  # ValueError: the socket was closed under select()
            pass
        finally:
            with self._lock:
                self._links.discard(link)
            link.close()


def client_id_of(request: bytes) -> str:
    """The `client.id` in a Kafka request's header; "" when the bytes are too short to say.

    Every request header starts: size (int32), api_key (int16), api_version (int16),
    correlation_id (int32), client_id (int16 length, then the bytes; -1 for null).
    """
    if len(request) < 14:
        return ""
    (length,) = struct.unpack(">h", request[12:14])
    if length < 0:
        return ""
    return request[14:14 + length].decode(errors="replace")
