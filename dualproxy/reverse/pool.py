"""
A pool of backends at run time: health, requests in flight and the
balancer's choice among the healthy ones.
"""

from __future__ import annotations

from typing import Collection, Optional, Tuple

from ..settings.model import Backend, PoolSettings
from ..http.message import Headers
from .health import Health


class BackendState:
    """
    One backend and what the proxy knows about it now.

    @ivar addresses: what its host resolved to last (empty: not known yet).
    """

    def __init__(self, backend: Backend, health: Health, tls=None):
        self.name = backend.url
        self.scheme = backend.scheme
        self.host = backend.host
        self.port = backend.port
        self.weight = backend.weight
        self.health = health
        self.inFlight = 0
        self.tls = tls
        self.addresses: Tuple[str, ...] = ()
        self.key = ("backend", backend.scheme, backend.host, backend.port)

    def __repr__(self) -> str:
        return f"<BackendState {self.name} in flight {self.inFlight}>"


def upstreamTLS(settings: PoolSettings, backend: Backend):
    """
    How to speak TLS to an https backend: verified against its name (or the
    pool's C{tls_name}) and the system's or the pool's CAs.
    """
    from ..tls import clientCreator, loadPair

    client = settings.tls_client_cert
    return clientCreator(
        settings.tls_name or backend.host,
        settings.tls_ca,
        settings.tls_verify,
        loadPair(client.cert, client.key) if client is not None else None,
    )


class BackendPool:
    """
    The backends of one configured pool and how to choose among them.
    """

    def __init__(self, settings: PoolSettings, balancer):
        self.settings = settings
        self.name = settings.name
        self.balancer = balancer
        health = settings.health
        self.backends = [
            BackendState(
                backend,
                Health(rise=health.rise, fall=health.fall, coolOff=health.cool_off,
                       passiveFailures=health.passive_failures),
                upstreamTLS(settings, backend) if backend.scheme == "https" else None,
            )
            for backend in settings.backends
        ]

    def pick(self, now: float, client: Optional[str], headers: Headers,
             tried: Collection[BackendState] = ()) -> Optional[BackendState]:
        """
        A healthy backend not yet tried for this request, or None.
        """
        candidates = [b for b in self.backends if b not in tried and b.health.isUp(now)]
        if not candidates:
            return None
        return self.balancer.pick(candidates, client, headers)

    def retryAfter(self) -> int:
        """
        Seconds a client should wait when every backend is down: about when
        the next check or cool-off could bring one back.
        """
        health = self.settings.health
        return max(1, int(min(health.interval if health.path else health.cool_off, health.cool_off) + 0.5))
