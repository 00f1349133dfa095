"""
The service tree every mode runs: the upstream connection pool, whatever
the mode adds (health checks, resolvers), then the listeners, plain and
TLS.
"""

from __future__ import annotations

import signal
from typing import Iterable

from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from .accesslog import AccessLog
from .listeners import ListenerService
from .relay.pool import ConnectionPool
from .server import HTTPServerFactory, NegotiatingFactory

log = Logger()


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
        self.serverTLS = None
        self._cache = None

    def httpCache(self):
        """
        The shared L{dualproxy.cache.cache.HTTPCache}, built on first use so
        that a config that caches nothing opens no store.

        @raise ConfigError: naming the C{cache} key that is wrong.
        """
        if self._cache is None:
            from .cache.cache import HTTPCache
            from .config import ConfigError
            from .forward.acl import ClientACL
            from .plugins import findCacheStores

            settings = self.config.cache
            stores = findCacheStores()
            factory = stores.get(settings.store)
            if factory is None:
                raise ConfigError("cache.store", f"unknown store {settings.store!r} (known: {', '.join(sorted(stores))})")
            try:
                store = factory(dict(settings.store_options))
            except ValueError as e:
                option, _, problem = str(e).partition(": ")
                raise ConfigError(f"cache.{option}", problem or option)
            purgeFrom = ClientACL(settings.purge_from) if settings.purge_from else None
            self._cache = HTTPCache(store, self.reactor, settings.name, settings.lock_timeout, purgeFrom)
        return self._cache

    def listen(self, handler, descriptions: Iterable[str]) -> None:
        """
        Serve C{handler}'s requests on each endpoint, and on the TLS
        endpoints of the config's C{[tls]} table.
        """
        timeouts = self.config.timeouts
        tls = self.config.tls
        secureListeners = []
        if tls.listen:
            from . import http2
            from .tls import ServerTLS, loadPair

            pairs = [loadPair(files.cert, files.key) for files in tls.certificates]
            offerH2 = tls.http2 and http2.available()
            self.serverTLS = ServerTLS(
                pairs, pairs[0], tls.min_version,
                (b"h2", b"http/1.1") if offerH2 else (b"http/1.1",),
                tls.client_ca, tls.client_certificate_optional, tls.ciphers,
            )
            factoryType = NegotiatingFactory if offerH2 else HTTPServerFactory
            secure = factoryType(handler, self.reactor, timeouts.client_idle)
            secure.hsts = tls.hsts.encode("latin-1") if tls.hsts else None
            wrapped = TLSMemoryBIOFactory(self.serverTLS, False, secure)
            secureListeners = [ListenerService(description, wrapped, self.reactor) for description in tls.listen]
        plain = RedirectToHTTPS(handler, secureListeners[0]) if secureListeners and tls.redirect_http else handler
        factory = HTTPServerFactory(plain, self.reactor, timeouts.client_idle)
        for description in descriptions:
            ListenerService(description, factory, self.reactor).setServiceParent(self)
        for listener in secureListeners:
            listener.setServiceParent(self)
        if secureListeners:
            CertificateReloader(self.serverTLS, self.reactor).setServiceParent(self)


class RedirectToHTTPS:
    """
    A handler for plain listeners that sends every client to the TLS ones.
    """

    def __init__(self, handler, listener: ListenerService):
        self.handler = handler
        self.listener = listener

    def connectionMade(self, channel) -> None:
        self.handler.connectionMade(channel)

    def connectionLost(self, channel) -> None:
        self.handler.connectionLost(channel)

    def exchangeDone(self, exchange) -> None:
        self.handler.exchangeDone(exchange)

    def handle(self, exchange) -> None:
        from .http.message import Refusal
        from .routing import hostName

        request = exchange.request
        host = hostName(request.headers)
        if not host or not request.target.startswith(b"/"):
            raise Refusal(400, "this listener only redirects to HTTPS")
        port = getattr(self.listener.port.getHost(), "port", 443)
        authority = host if port == 443 else f"{host}:{port}"
        location = b"https://" + authority.encode("idna") + request.target
        raise Refusal(308, "use HTTPS: " + location.decode("ascii"), [(b"Location", location)])


class CertificateReloader(Service):
    """
    Re-reads the TLS certificates on SIGHUP for new connections; open
    connections keep theirs, and a failed reload keeps the old ones.
    """

    def __init__(self, serverTLS, reactor):
        self.serverTLS = serverTLS
        self.reactor = reactor
        self._previous = None

    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, self._signalled)

    def stopService(self):
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _signalled(self, number, frame) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        from .tls import TLSConfigError

        try:
            self.serverTLS.reload()
        except TLSConfigError as e:
            log.error("TLS certificates not reloaded, keeping the old ones: {error}", error=str(e))
        else:
            log.info("TLS certificates reloaded")
