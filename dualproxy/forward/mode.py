"""
The built-in C{forward} mode plugin.
"""

from __future__ import annotations

from twisted.application.service import IService
from twisted.plugin import IPlugin
from zope.interface import implementer

from ..interfaces import IProxyMode


@implementer(IPlugin, IProxyMode)
class ForwardMode:
    """
    A proxy between clients and the internet: absolute-URI requests and
    CONNECT tunnels, loopback clients only unless configured otherwise.
    """

    name = "forward"
    description = "relay absolute-URI requests and CONNECT tunnels for many clients"
    defaultListen = ("tcp:3128:interface=127.0.0.1",)

    def makeService(self, config, filters) -> IService:
        # Imported here so that listing plugins (twistd --help) stays light.
        from twisted.internet import reactor

        from ..plugins import loadRateLimiter
        from ..policy.ratelimit import RateLimit
        from ..routing.pages import pageTarget
        from ..service import ProxyService
        from ..policy.auth import PasswordFile, ProxyAuthenticator
        from .proxy import ForwardHandler

        settings = config.forward
        root = ProxyService(config, reactor)
        authenticator = None
        if settings.auth_file:
            authenticator = ProxyAuthenticator(PasswordFile.load(settings.auth_file), settings.auth_realm)
        handler = ForwardHandler(
            reactor, settings, config.timeouts, root.connections, filters, root.accessLog, authenticator
        )
        if settings.cache:
            handler.cache = root.httpCache()
        if settings.rate_limit is not None:
            limiter = loadRateLimiter(settings.rate_limit, "forward.rate_limit")
            root.rateLimiters.append(("forward", limiter))
            handler.rateLimit = RateLimit(limiter, settings.rate_limit.key, "the proxy")
        for route in settings.routes:
            handler.pages.tree(route.host).add(route.prefix, pageTarget(route))
        root.listen(handler, config.listen or self.defaultListen)
        return root
