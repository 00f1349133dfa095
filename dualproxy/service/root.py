"""
The running proxy: a tree of small services, and what of it a reload keeps.

A reload builds the new configuration's tree beside the running one, hands
it the running one's L{Lasting} parts, and the running tree takes the rest
over (L{ProxyService.takeOver}): listening sockets, open client
connections, pooled upstream connections and counters stay; routes, pools,
checks, limits and certificates are the new ones.  Stopping drains (see
L{dualproxy.service.drain}).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.application.service import MultiService
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from ..accesslog import AccessLog, AccessLogFile
from ..interfaces import IPluginResources, IRateLimiter, IRateLimiterResources
from ..listeners import PAUSES, ListenerService
from ..metrics import Metrics
from ..plugins import loadRateLimiter
from ..policy.ratelimit import RateLimit
from ..redis.client import RedisClient
from ..relay.client import UpstreamProtocol, responseLimits
from ..relay.pool import ConnectionPool
from .admin import adminListener
from .cache import SharedCache
from .drain import Drain
from .listeners import ListenerGroup
from .reload import ReloadOnHangup, reload

_log = Logger()


@implementer(IPluginResources)
class Lasting:
    """
    What outlives a reload: the upstream connection pool, the metrics, the
    start time, the Redis connection, and the shared cache while its
    settings stay.  It is also what plugins are lent (L{IPluginResources}).
    """

    def __init__(self, reactor, connections: ConnectionPool, metrics: Metrics, startedAt: float,
                 redis: Optional[RedisClient], redisSettings=None, acme=None):
        self.reactor = reactor
        self.connections = connections
        self.metrics = metrics
        self.startedAt = startedAt
        self.redis = redis
        self.redisSettings = redisSettings
        # The ACME certificates' service (dualproxy.acme.service), if [tls.acme].
        self.acme = acme
        self.cache: Optional[SharedCache] = None

    @classmethod
    def start(cls, config, reactor) -> Lasting:
        """
        The lasting parts of a proxy starting now.
        """
        connections = ConnectionPool(
            reactor, config.upstream.max_idle_per_host, config.timeouts.upstream_idle,
            responseLimits(config.limits.max_response_header_bytes), config.timeouts.upstream_read)
        redis = None
        settings = config.redis
        if settings is not None:
            redis = RedisClient(reactor, settings.endpoint, settings.timeout, settings.database,
                                settings.username, settings.password, settings.prefix)
        acme = None
        if config.tls.acme is not None:
            from ..acme.service import AcmeService, acmeDomains, onDemandPatterns

            acme = AcmeService(config.tls.acme, acmeDomains(config), reactor, onDemand=onDemandPatterns(config))
        lasting = cls(reactor, connections, Metrics(config.mode, reactor), reactor.seconds(), redis, settings, acme)
        lasting.cache = SharedCache(config.cache, reactor, lasting)
        return lasting

    def successor(self, config) -> Lasting:
        """
        These parts as a reload to C{config} hands them on; the C{[redis]}
        and C{[tls.acme]} tables' own settings take a restart.
        """
        if config.redis != self.redisSettings:
            _log.warn("the [redis] table changed: the change takes a restart")
        if config.tls.acme != (None if self.acme is None else self.acme.settings):
            _log.warn("the [tls.acme] table changed: the change takes a restart")
        lasting = Lasting(self.reactor, self.connections, self.metrics, self.startedAt, self.redis,
                          self.redisSettings, self.acme)
        lasting.cache = self.cache.successor(config.cache, lasting)
        return lasting


@implementer(IRateLimiterResources)
class LimiterResources:
    """
    The resources lent to the factory of the limit labelled C{label}.
    """

    def __init__(self, resources: IPluginResources, label: str):
        self.reactor = resources.reactor
        self.redis = resources.redis
        self.label = label


class ProxyService(MultiService):
    """
    A running proxy, as children: the upstream connection pool, what the
    mode runs for its upstreams (L{upstreams}), the client listeners
    (L{listenerGroup}), the admin listener, reloading on SIGHUP, and the
    drain that stops first.

    @ivar configure: what re-reads the configuration for a reload, returning
        C{(mode, config, filters)}; None for a service not built from a file.
    """

    def __init__(self, config, reactor, lasting: Optional[Lasting] = None):
        """
        @param lasting: what a running service hands on to the one a reload
            builds for it; None for the first.
        """
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.configure: Optional[Callable[[], tuple]] = None
        self.pools: Dict[str, object] = {}
        # The health of each parent proxy (forward mode), for metrics.
        self.parents: List = []
        # Each built rate limiter with its label ("route:HOST/PREFIX", "pool:NAME", "forward"), for metrics.
        self.rateLimiters: List[Tuple[str, IRateLimiter]] = []
        first = lasting is None
        self.lasting = Lasting.start(config, reactor) if lasting is None else lasting
        self.connections = self.lasting.connections
        self.metrics = self.lasting.metrics
        self.startedAt = self.lasting.startedAt
        if first:
            self.connections.setServiceParent(self)
            if self.lasting.redis is not None:
                self.lasting.redis.setServiceParent(self)
            if self.lasting.acme is not None:
                self.lasting.acme.setServiceParent(self)
            self._watch(self.metrics)
        self.accessLog, self.sessionLog = self._accessLog(config)
        self.upstreams = MultiService()
        self.upstreams.setServiceParent(self)
        self.listenerGroup = ListenerGroup(config, reactor, self.lasting.acme)
        self.listenerGroup.setServiceParent(self)
        self.admin: Optional[ListenerService] = None
        if config.admin is not None:
            self.admin = adminListener(self, config.admin, reactor)
            self.admin.setServiceParent(self)
        ReloadOnHangup(self).setServiceParent(self)
        self.drain = Drain(self.listenerGroup, self.listeners, reactor, config.timeouts.drain)
        self.drain.setServiceParent(self)

    def _accessLog(self, config) -> Tuple[Callable[[object], None], Callable[[object], None]]:
        """
        What each finished exchange is given, and each finished SOCKS
        session: counted in the metrics, then logged.
        """
        file = None
        if config.access_log_file is not None and config.access_log != "off":
            file = AccessLogFile(config.access_log_file, self.reactor)
            file.setServiceParent(self)
        log = AccessLog(config.access_log, self.reactor, file=file)
        metrics = self.metrics

        def finished(exchange) -> None:
            metrics.exchangeDone(exchange)
            log(exchange)

        def sessionEnded(session) -> None:
            metrics.sessionDone(session)
            log.session(session)

        return finished, sessionEnded

    # What a mode builds with

    def httpCache(self):
        """
        The shared L{dualproxy.cache.cache.HTTPCache} (see L{SharedCache.get}).
        """
        return self.lasting.cache.get()

    def rateLimit(self, settings, key: str, label: str, what: str) -> RateLimit:
        """
        The rate limit a C{rate_limit} table describes, counted in the
        metrics as C{label}.

        @param key: the table's dotted key, for configuration errors.
        @param what: what it limits, for the 429 answer ("pool app").
        """
        limiter = loadRateLimiter(settings, key, LimiterResources(self.lasting, label))
        self.rateLimiters.append((label, limiter))
        return RateLimit(limiter, settings.key, what)

    # What the admin listener shows

    def listeners(self) -> List[ListenerService]:
        """
        Every listener: the client ones, then the admin one.
        """
        return self.listenerGroup.listeners() + ([self.admin] if self.admin is not None else [])

    def openConnections(self) -> int:
        return self.listenerGroup.openConnections()

    def inFlight(self) -> int:
        return self.listenerGroup.inFlight()

    def certificates(self) -> List[dict]:
        return self.listenerGroup.certificates()

    def cacheIfBuilt(self):
        return self.lasting.cache.ifBuilt()

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
        metrics.addGauge("dualproxy_parent_up", "Whether a parent proxy takes requests (1) or is marked down (0).",
                         "gauge", lambda: [({"parent": health.name}, 1.0 if health.up else 0.0)
                                           for health in self.parents])
        metrics.addGauge("dualproxy_parent_failures", "Failed connection attempts to a parent proxy.", "counter",
                         lambda: [({"parent": health.name}, health.failures) for health in self.parents])
        for name, help, field in (
            ("dualproxy_cache_hits", "Cache lookups answered from the store.", "hits"),
            ("dualproxy_cache_misses", "Cache lookups with nothing usable stored.", "misses"),
            ("dualproxy_cache_revalidations", "Cache lookups that revalidated upstream.", "revalidations"),
            ("dualproxy_cache_stale", "Stale responses served.", "stale"),
            ("dualproxy_cache_stored", "Responses stored.", "stored"),
        ):
            counted = self._cacheStat(lambda cache, field=field: getattr(cache.stats, field))
            metrics.addGauge(name, help, "counter", counted)
        metrics.addGauge("dualproxy_cache_bytes", "Bytes held by the cache store.", "gauge",
                         self._cacheStat(lambda cache: cache.bytesStored))
        metrics.addGauge("dualproxy_cache_evictions", "Entries evicted to make room.", "counter",
                         self._cacheStat(lambda cache: cache.evictions))
        for name, help, field in (
            ("dualproxy_ratelimit_rejected", "Requests refused by a rate limit.", "rejected"),
            ("dualproxy_ratelimit_allowed", "Requests a rate limit let through.", "allowed"),
            ("dualproxy_ratelimit_saturated_keys", "Clients out of tokens now, per limiter.", "saturated"),
            ("dualproxy_ratelimit_keys", "Clients tracked now, per limiter.", "keys"),
            ("dualproxy_ratelimit_errors", "Requests a rate limit got no answer for from its store.", "errors"),
        ):
            kind = "counter" if field in ("rejected", "allowed", "errors") else "gauge"
            metrics.addGauge(name, help, kind, self._limiterStat(field))
        redis = self.lasting.redis
        if redis is not None:
            metrics.addGauge("dualproxy_redis_up", "Whether the connection to Redis is ready (1) or not (0).",
                             "gauge", lambda: [({}, 1.0 if redis.up else 0.0)])
            metrics.addGauge("dualproxy_redis_failures", "Redis commands that got no answer.", "counter",
                             lambda: [({}, redis.failures)])
        metrics.addGauge("dualproxy_certificate_expiry_seconds",
                         "When the certificate presented for a name expires (Unix time).", "gauge",
                         lambda: [({"name": certificate["name"]}, certificate["not_after"])
                                  for certificate in self.certificates()])
        acme = self.lasting.acme
        if acme is not None:
            metrics.addGauge("dualproxy_acme_order_failures",
                             "ACME orders for a name failed in a row (0 once one succeeds).", "gauge",
                             lambda: [({"name": name}, state.failures) for name, state in acme.certificates.items()])

    def _cacheStat(self, read: Callable[[object], float]):
        def sample():
            cache = self.cacheIfBuilt()
            return [] if cache is None else [({}, read(cache))]

        return sample

    def _limiterStat(self, field: str):
        # Fields beyond the required ones (errors) count as 0 when absent.
        return lambda: [({"limiter": label}, limiter.stats(self.reactor.seconds()).get(field, 0))
                        for label, limiter in self.rateLimiters]

    # Reloading

    def reload(self) -> Optional[str]:
        """
        Re-read the configuration and apply it (see
        L{dualproxy.service.reload.reload}): None when done, else why not.
        """
        return reload(self)

    def takeOver(self, successor: ProxyService) -> None:
        """
        Run C{successor}'s configuration from now on, in this tree: its
        listeners' logic on our sockets and open connections, its checks and
        resolvers instead of ours.  The admin listener and SIGHUP handling
        stay ours; the admin's own settings take a restart.
        """
        self.listenerGroup.takeOver(successor.listenerGroup)
        self.upstreams.disownServiceParent()
        self.upstreams = successor.upstreams
        self.upstreams.disownServiceParent()
        self.upstreams.setServiceParent(self)
        self.lasting = successor.lasting
        self.config = successor.config
        self.pools = successor.pools
        self.parents = successor.parents
        self.rateLimiters = successor.rateLimiters
        self.accessLog = successor.accessLog
        self.sessionLog = successor.sessionLog
        self.drain.timeout = successor.drain.timeout
        config = successor.config
        self.connections.maxIdlePerKey = config.upstream.max_idle_per_host
        self.connections.idleTimeout = config.timeouts.upstream_idle
        self.connections.responseLimits = responseLimits(config.limits.max_response_header_bytes)
        self.connections.readTimeout = config.timeouts.upstream_read

    # Stopping

    def stopService(self):
        """
        Drain first; the pool, checks and cache that the requests in flight
        use stop after.
        """
        return maybeDeferred(self.drain.stopService).addCallback(lambda _: super(ProxyService, self).stopService())


def buildService(mode, config, filters, reactor, lasting: Optional[Lasting] = None) -> ProxyService:
    """
    The service tree for C{config}, serving the client factory that
    C{mode} (a L{dualproxy.proxymode.ProxyMode}) makes.

    @param lasting: handed on by the running service when a reload builds
        this one.
    """
    root = ProxyService(config, reactor, lasting)
    root.listenerGroup.listen(mode.makeFactory(root, config, filters), config.listen or mode.defaultListen)
    return root
