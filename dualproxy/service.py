"""
The service tree every mode runs: the upstream connection pool, whatever
the mode adds (health checks, resolvers), then the listeners, plain and
TLS, and the admin listener.

A reload builds the new configuration's tree beside the running one and
moves its parts in: listening sockets, open client connections, pooled
upstream connections and counters stay; routes, pools, checks, limits and
certificates are the new ones.  Stopping drains: no new connections, the
requests in flight get C{timeouts.drain} seconds to finish.
"""

from __future__ import annotations

import signal
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.server import Site

from .accesslog import AccessLog
from .interfaces import IRateLimiter
from .listeners import PAUSES, ListenError, ListenerService
from .metrics import Metrics
from .relay.client import UpstreamProtocol, responseLimits
from .relay.pool import ConnectionPool
from .http.parser import Limits
from .server.http1 import HTTPServerChannel, HTTPServerFactory
from .server.http2 import NegotiatingFactory

log = Logger()


class ProxyService(MultiService):
    """
    A running proxy.  Children start in the order added and stop in
    reverse, so listeners (added last) stop accepting before the pool and
    checkers they use go away.
    """

    # The running service a reload is building a successor for.
    _predecessor: Optional[ProxyService] = None

    def __init__(self, config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.serverTLS = None
        self.handler = None
        self.pools: Dict[str, object] = {}
        self._cache = None
        self.configure: Optional[Callable[[], tuple]] = None
        previous = ProxyService._predecessor
        if previous is None:
            self.connections = ConnectionPool(
                reactor, config.upstream.max_idle_per_host, config.timeouts.upstream_idle, self._responseLimits(),
                config.timeouts.upstream_read)
            self.connections.setServiceParent(self)
            self.metrics = Metrics(config.mode, reactor)
            self.startedAt = reactor.seconds()
            self._watch(self.metrics)
        else:
            self.connections = previous.connections
            self.metrics = previous.metrics
            self.startedAt = previous.startedAt
            if previous.config.cache == config.cache:
                self._cache = previous._cache
        log = AccessLog(config.access_log, reactor)
        metrics = self.metrics

        def finished(exchange) -> None:
            metrics.exchangeDone(exchange)
            log(exchange)

        self.accessLog = finished
        # Each built rate limiter with its label ("route:HOST/PREFIX", "pool:NAME", "forward"), for metrics.
        self.rateLimiters: List[Tuple[str, IRateLimiter]] = []

    def httpCache(self):
        """
        The shared L{dualproxy.cache.cache.HTTPCache}, built on first use so
        that a config that caches nothing opens no store.

        @raise ConfigError: naming the C{cache} key that is wrong.
        """
        if self._cache is None:
            from .cache.cache import HTTPCache
            from .policy.acl import ClientACL
            from .plugins import loadCacheStore

            settings = self.config.cache
            store = loadCacheStore(settings)
            purgeFrom = ClientACL(settings.purge_from) if settings.purge_from else None
            self._cache = HTTPCache(store, self.reactor, settings.name, settings.lock_timeout, purgeFrom)
        return self._cache

    def listen(self, handler, descriptions: Iterable[str]) -> None:
        """
        Serve C{handler}'s requests on each endpoint, and on the TLS
        endpoints of the config's C{[tls]} table.
        """
        self.handler = handler
        timeouts = self.config.timeouts
        tls = self.config.tls
        secureListeners = []
        if tls.listen:
            from .server import http2
            from .tls import ServerTLS, loadPair

            pairs = [loadPair(files.cert, files.key) for files in tls.certificates]
            offerH2 = tls.http2 and http2.available()
            self.serverTLS = ServerTLS(
                pairs, pairs[0], tls.min_version,
                (b"h2", b"http/1.1") if offerH2 else (b"http/1.1",),
                tls.client_ca, tls.client_certificate_optional, tls.ciphers,
            )
            factoryType = NegotiatingFactory if offerH2 else HTTPServerFactory
            secure = self._limited(factoryType(handler, self.reactor, timeouts.client_idle, self._parserLimits()))
            secure.hsts = tls.hsts.encode("latin-1") if tls.hsts else None
            wrapped = TLSMemoryBIOFactory(self.serverTLS, False, secure)
            secureListeners = [ListenerService(description, wrapped, self.reactor) for description in tls.listen]
        plain = RedirectToHTTPS(handler, secureListeners[0]) if secureListeners and tls.redirect_http else handler
        factory = self._limited(HTTPServerFactory(plain, self.reactor, timeouts.client_idle, self._parserLimits()))
        for description in descriptions:
            ListenerService(description, factory, self.reactor).setServiceParent(self)
        for listener in secureListeners:
            listener.setServiceParent(self)
        admin = self.config.admin
        if admin is not None:
            from .admin.site import adminSite
            from .policy.auth import PasswordFile

            passwords = PasswordFile.load(admin.auth_file) if admin.auth_file else None
            ListenerService(admin.listen, adminSite(self, passwords, admin.realm),
                            self.reactor).setServiceParent(self)
        ReloadOnHangup(self).setServiceParent(self)

    def _parserLimits(self) -> Limits:
        limits = self.config.limits
        return Limits(limits.max_header_bytes, limits.max_request_line, limits.max_header_fields)

    def _responseLimits(self) -> Limits:
        return responseLimits(self.config.limits.max_response_header_bytes)

    def _limited(self, factory: HTTPServerFactory) -> HTTPServerFactory:
        limits = self.config.limits
        factory.maxConnections = limits.max_connections
        factory.maxConnectionsPerClient = limits.max_connections_per_client
        factory.maxBody = limits.max_body
        factory.headTimeout = self.config.timeouts.client_header
        factory.bodyTimeout = self.config.timeouts.client_body
        factory.writeTimeout = self.config.timeouts.client_write
        return factory

    # What the admin listener shows

    def _watch(self, metrics: Metrics) -> None:
        """
        The states sampled at each scrape; they read this service's current
        parts, which a reload replaces.
        """
        mode = {"mode": self.config.mode}
        metrics.addGauge("dualproxy_client_connections", "Open client connections.", "gauge",
                         lambda: [(mode, self.openConnections())])
        metrics.addGauge("dualproxy_in_flight_requests", "Requests being answered now.", "gauge",
                         lambda: [(mode, self.inFlight())])
        metrics.addGauge("dualproxy_upstream_idle_connections", "Pooled idle upstream connections.", "gauge",
                         lambda: [(mode, self.connections.idleCount())])
        metrics.addGauge("dualproxy_upstream_connections", "Open upstream connections (tunnels included).",
                         "gauge", lambda: [(mode, UpstreamProtocol.openCount)])
        metrics.addGauge("dualproxy_accept_pauses", "Times accepting paused for lack of descriptors or memory.",
                         "counter", lambda: [({"reason": reason}, count) for reason, count in sorted(PAUSES.items())])
        metrics.addGauge("dualproxy_backend_up", "Whether a backend takes requests (1) or not (0).", "gauge",
                         lambda: [({"pool": pool.name, "backend": backend.name},
                                   1.0 if backend.health.isUp(self.reactor.seconds()) else 0.0)
                                  for pool in self.pools.values() for backend in pool.backends])
        metrics.addGauge("dualproxy_backend_in_flight", "Requests a backend is answering now.", "gauge",
                         lambda: [({"pool": pool.name, "backend": backend.name}, backend.inFlight)
                                  for pool in self.pools.values() for backend in pool.backends])
        for name, help, field in (
            ("dualproxy_cache_hits", "Cache lookups answered from the store.", "hits"),
            ("dualproxy_cache_misses", "Cache lookups with nothing usable stored.", "misses"),
            ("dualproxy_cache_revalidations", "Cache lookups that revalidated upstream.", "revalidations"),
            ("dualproxy_cache_stale", "Stale responses served.", "stale"),
            ("dualproxy_cache_stored", "Responses stored.", "stored"),
        ):
            metrics.addGauge(name, help, "counter", self._cacheCounter(field))
        metrics.addGauge("dualproxy_cache_bytes", "Bytes held by the cache store.", "gauge",
                         lambda: [({}, self._cache.bytesStored)] if self._cache is not None else [])
        metrics.addGauge("dualproxy_cache_evictions", "Entries evicted to make room.", "counter",
                         lambda: [({}, self._cache.evictions)] if self._cache is not None else [])
        for name, help, field in (
            ("dualproxy_ratelimit_rejected", "Requests refused by a rate limit.", "rejected"),
            ("dualproxy_ratelimit_allowed", "Requests a rate limit let through.", "allowed"),
            ("dualproxy_ratelimit_saturated_keys", "Clients out of tokens now, per limiter.", "saturated"),
            ("dualproxy_ratelimit_keys", "Clients tracked now, per limiter.", "keys"),
        ):
            kind = "counter" if field in ("rejected", "allowed") else "gauge"
            metrics.addGauge(name, help, kind, self._limiterStat(field))

    def _cacheCounter(self, field: str):
        return lambda: [({}, getattr(self._cache.stats, field))] if self._cache is not None else []

    def _limiterStat(self, field: str):
        return lambda: [({"limiter": label}, limiter.stats(self.reactor.seconds())[field])
                        for label, limiter in self.rateLimiters]

    def listeners(self) -> List[ListenerService]:
        return [child for child in self if isinstance(child, ListenerService)]

    def _httpFactories(self) -> List[HTTPServerFactory]:
        found = []
        for listener in self.listeners():
            factory = getattr(listener.factory, "wrappedFactory", listener.factory)
            if isinstance(factory, HTTPServerFactory):
                found.append(factory)
        return found

    def openConnections(self) -> int:
        return sum(len(factory.connections) for factory in self._httpFactories())

    def inFlight(self) -> int:
        """
        Requests being answered, tunnels, answers not yet delivered, open
        HTTP/2 streams.
        """
        busy = 0
        for factory in self._httpFactories():
            for connection in factory.connections:
                if isinstance(connection, HTTPServerChannel):
                    busy += connection.busy()
                else:
                    busy += len(getattr(connection.impl, "streams", ()))
        return busy

    def cacheIfBuilt(self):
        return self._cache

    # Reloading

    def reload(self) -> Optional[str]:
        """
        Re-read the configuration and apply it; None when done, else why
        not (logged too), in which case the running configuration stays.
        Without a configuration to re-read, the TLS certificates are.
        """
        from .config import ConfigError
        from .tls import TLSConfigError

        if self.configure is None:
            if self.serverTLS is None:
                return "nothing to reload: this service was not built from a configuration file"
            try:
                self.serverTLS.reload()
            except TLSConfigError as e:
                return self._reloaded(str(e))
            return self._reloaded(None)
        try:
            mode, config, filters = self.configure()
            if config.mode != self.config.mode:
                raise ConfigError("mode", f"cannot change from {self.config.mode} to {config.mode} on reload")
            ProxyService._predecessor = self
            try:
                successor = mode.makeService(config, filters)
            finally:
                ProxyService._predecessor = None
        except (ConfigError, TLSConfigError, SystemExit, OSError, ValueError) as e:
            return self._reloaded(str(e) or type(e).__name__)
        # New listeners bind first: a busy port rejects the whole reload.
        ours = {_listenerKey(listener) for listener in self.listeners()}
        bound: List[ListenerService] = []
        for listener in successor.listeners():
            if _listenerKey(listener) not in ours and not isinstance(listener.factory, Site):
                try:
                    listener.bind()
                except ListenError as e:
                    for done in bound:
                        done.port.stopListening()
                    return self._reloaded(str(e))
                bound.append(listener)
        self._takeOver(successor)
        return self._reloaded(None)

    def _reloaded(self, error: Optional[str]) -> Optional[str]:
        if error is None:
            self.metrics.reloads["success"] += 1
            log.info("configuration reloaded")
        else:
            self.metrics.reloads["failure"] += 1
            log.error("configuration not reloaded, keeping the running one: {error}", error=error)
        return error

    def _takeOver(self, successor: ProxyService) -> None:
        """
        Become C{successor}: its listeners' logic on our sockets and open
        connections, its checkers and resolvers instead of ours.
        """
        ours = {_listenerKey(listener): listener for listener in self.listeners()}
        theirs = {_listenerKey(listener): listener for listener in successor.listeners()}
        kept = {}
        for key, listener in ours.items():
            if isinstance(listener.factory, Site):
                # The admin listener reads this service already; its own
                # settings take a restart.
                continue
            replacement = theirs.get(key)
            if replacement is None:
                listener.disownServiceParent()
                continue
            kept[replacement] = listener
            old = getattr(listener.factory, "wrappedFactory", listener.factory)
            new = getattr(replacement.factory, "wrappedFactory", replacement.factory)
            old.adopt(new)
        if self.serverTLS is not None and successor.serverTLS is not None:
            self.serverTLS.adopt(successor.serverTLS)
        for factory in self._httpFactories():
            redirect = factory.handler
            if isinstance(redirect, RedirectToHTTPS):
                # It names the new TLS listener; ours is the one listening.
                redirect.listener = kept.get(redirect.listener, redirect.listener)
        for child in list(self):
            if child is not self.connections and not isinstance(child, (ListenerService, ReloadOnHangup)):
                child.disownServiceParent()
        for child in list(successor):
            if isinstance(child, ReloadOnHangup) or child in kept or (
                    isinstance(child, ListenerService) and isinstance(child.factory, Site)):
                continue
            child.disownServiceParent()
            child.setServiceParent(self)
        self.config = successor.config
        self.handler = successor.handler
        self.pools = successor.pools
        self.rateLimiters = successor.rateLimiters
        self.accessLog = successor.accessLog
        self._cache = successor._cache
        self.connections.maxIdlePerKey = successor.config.upstream.max_idle_per_host
        self.connections.idleTimeout = successor.config.timeouts.upstream_idle
        self.connections.responseLimits = successor._responseLimits()
        self.connections.readTimeout = successor.config.timeouts.upstream_read

    # Stopping

    def stopService(self):
        """
        Drain: stop listening, let the requests in flight finish within
        C{timeouts.drain} seconds, then close what is left.
        """
        stopping = [listener.stopService() for listener in self.listeners() if listener.running]
        for factory in self._httpFactories():
            for connection in list(factory.connections):
                current = getattr(connection, "current", None)
                idle = current is None or current.finished
                if isinstance(connection, HTTPServerChannel) and idle and connection._tunnel is None:
                    connection.transport.loseConnection()
                elif isinstance(connection, HTTPServerChannel):
                    connection.closing = True
        drained: Deferred = Deferred()
        deadline = self.reactor.seconds() + self.config.timeouts.drain

        def check() -> None:
            if self.inFlight() == 0 or self.reactor.seconds() >= deadline:
                poll.stop()

        poll = LoopingCall(check)
        poll.clock = self.reactor
        poll.start(0.05, now=True).addCallback(lambda _: drained.callback(None))

        def closeRest(_):
            for factory in self._httpFactories():
                for connection in list(factory.connections):
                    transport = getattr(connection, "transport", None)
                    if transport is not None:
                        transport.abortConnection()
            stopping.append(super(ProxyService, self).stopService())
            return gatherResults([d for d in stopping if d is not None])

        return drained.addCallback(closeRest)


def _listenerKey(listener: ListenerService) -> tuple:
    """
    What makes two listeners the same across a reload: the endpoint and
    what is served there (plain, TLS, admin).
    """
    return listener.description, type(listener.factory)


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
        from .routing.tree import hostName

        request = exchange.request
        host = hostName(request.headers)
        if not host or not request.target.startswith(b"/"):
            raise Refusal(400, "this listener only redirects to HTTPS")
        port = getattr(self.listener.port.getHost(), "port", 443)
        authority = host if port == 443 else f"{host}:{port}"
        location = b"https://" + authority.encode("idna") + request.target
        raise Refusal(308, "use HTTPS: " + location.decode("ascii"), [(b"Location", location)])


class ReloadOnHangup(Service):
    """
    Reloads the service on SIGHUP (see L{ProxyService.reload}).
    """

    def __init__(self, service: ProxyService):
        self.service = service
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
        self.service.reactor.callFromThread(self.service.reload)
