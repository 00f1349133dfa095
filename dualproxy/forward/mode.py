"""
The built-in C{forward} mode plugin.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..interfaces import IProxyMode
from ..proxymode import ProxyMode


@implementer(IPlugin, IProxyMode)
class ForwardMode(ProxyMode):
    """
    A proxy between clients and the internet: absolute-URI requests and
    CONNECT tunnels, loopback clients only unless configured otherwise.
    """

    name = "forward"
    description = "relay absolute-URI requests and CONNECT tunnels for many clients"
    defaultListen = ("tcp:3128:interface=127.0.0.1",)

    def parseSettings(self, table, base):
        from .settings import parseForward

        return parseForward(table, base)

    def checkSettings(self, settings, config):
        from .settings import checkForward

        checkForward(settings, config)

    def makeHandler(self, root, config, filters):
        from ..policy.auth import PasswordFile, ProxyAuthenticator
        from ..routing.pages import pageTarget
        from .proxy import ForwardHandler

        settings = config.forward
        authenticator = None
        if settings.auth_file:
            authenticator = ProxyAuthenticator(PasswordFile.load(settings.auth_file), settings.auth_realm)
        handler = ForwardHandler(
            root.reactor, settings, config.timeouts, root.connections, filters, root.accessLog, authenticator
        )
        root.parents = list(handler.egress.health.values())
        if settings.intercept is not None:
            from .intercept import Interception

            handler.interception = Interception(settings.intercept)
        if settings.cache:
            handler.cache = root.httpCache()
        if settings.rate_limit is not None:
            handler.rateLimit = root.rateLimit(settings.rate_limit, "forward.rate_limit", "forward", "the proxy")
        for route in settings.routes:
            handler.pages.tree(route.host).add(route.prefix, pageTarget(route))
        return handler
