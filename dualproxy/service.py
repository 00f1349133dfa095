"""
The service tree every mode runs: the upstream connection pool, whatever
the mode adds (health checks, resolvers), then the listeners.
"""

from __future__ import annotations

from typing import Iterable

from twisted.application.service import MultiService

from .accesslog import AccessLog
from .listeners import ListenerService
from .relay.pool import ConnectionPool
from .server import HTTPServerFactory


class ProxyService(MultiService):
    """
    A running proxy.  Children start in the order added and stop in
    reverse, so listeners (added last) stop accepting before the pool and
    checkers they use go away.
    """

    def __init__(self, config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.connections = ConnectionPool(reactor, config.upstream.max_idle_per_host, config.timeouts.upstream_idle)
        self.connections.setServiceParent(self)
        self.accessLog = AccessLog(config.access_log, reactor)

    def listen(self, handler, descriptions: Iterable[str]) -> None:
        """
        Serve C{handler}'s requests on each endpoint.
        """
        factory = HTTPServerFactory(handler, self.reactor, self.config.timeouts.client_idle)
        for description in descriptions:
            ListenerService(description, factory, self.reactor).setServiceParent(self)
