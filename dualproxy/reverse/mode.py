"""
The built-in C{reverse} mode plugin.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from ..interfaces import IProxyMode
from ..proxymode import ProxyMode

log = Logger()


@implementer(IPlugin, IProxyMode)
class ReverseMode(ProxyMode):
    """
    A proxy in front of web servers: routes by host and path to pools of
    backends, static directories and redirects.
    """

    name = "reverse"
    description = "route inbound requests by host and path to balanced backends"
    defaultListen = ("tcp:8080:interface=127.0.0.1",)

    def parseSettings(self, table, base):
        from .settings import parseReverse

        return parseReverse(table, base)

    def checkSettings(self, settings, config):
        from .settings import checkReverse

        checkReverse(settings, config)

    def makeHandler(self, root, config, filters):
        from ..plugins import loadBalancer
        from ..proxyprotocol import local
        from ..routing.pages import pageTarget
        from .dns import BackendResolver, makeResolver
        from .health import HealthCheck
        from .pool import BackendPool
        from .proxy import PoolTarget, ReverseHandler

        reactor = root.reactor
        settings = config.reverse
        handler = ReverseHandler(reactor, settings, config.timeouts, root.connections, filters, root.accessLog)
        if config.tls.client_ca is not None:
            handler.clientSubjectHeader = config.tls.client_subject_header.encode("ascii")
        pools = {}
        poolLimits = {}
        for index, pool in enumerate(settings.pools):
            key = f"reverse.pools.{pool.name}"
            balancer = loadBalancer(pool.balance, pool.balance_options, key)
            pools[pool.name] = BackendPool(pool, balancer)
            if pool.rate_limit is not None:
                poolLimits[pool.name] = root.rateLimit(pool.rate_limit, f"{key}.rate_limit", f"pool:{pool.name}",
                                                       f"pool {pool.name}")
            if not pool.tls_verify and any(backend.scheme == "https" for backend in pool.backends):
                log.warn("TLS verification is off for the backends of pool {pool}: "
                         "anyone on the path can impersonate them", pool=pool.name)
            health = pool.health
            if health.path is not None:
                HealthCheck(
                    reactor, pools[pool.name].backends, path=health.path.encode("ascii"),
                    interval=health.interval, timeout=health.timeout, expectStatus=health.expect_status,
                    host=pool.host.encode("ascii") if pool.host else None,
                    preamble=local(pool.proxy_protocol) if pool.proxy_protocol is not None else b"",
                ).setServiceParent(root.upstreams)
        root.pools = pools
        dns = settings.dns
        BackendResolver(
            reactor, [backend for pool in pools.values() for backend in pool.backends],
            makeResolver(reactor, dns.servers), dns.min_ttl, dns.max_ttl,
            onChange=lambda backend: root.connections.dropKey(backend.key),
        ).setServiceParent(root.upstreams)
        for index, route in enumerate(settings.routes):
            if route.pool is not None:
                cached = route.cache if route.cache is not None else pools[route.pool].settings.cache
                rateLimit = poolLimits.get(route.pool)
                if route.rate_limit is not None:
                    where = f"{route.host}{route.prefix}"
                    rateLimit = root.rateLimit(route.rate_limit, f"reverse.routes[{index}].rate_limit",
                                               f"route:{where}", f"route {where}")
                target = PoolTarget(handler, pools[route.pool], route.strip_prefix,
                                    cache=root.httpCache() if cached else None, rateLimit=rateLimit,
                                    addHeaders=route.add_headers, removeHeaders=route.remove_headers,
                                    allowSubjects=route.client_subjects, upgrades=route.upgrades)
            else:
                target = pageTarget(route)
            handler.addRoute(route.host, route.prefix, target)
        return handler
