"""
The built-in C{forward} mode plugin.
"""

from __future__ import annotations

from twisted.application.service import IService, MultiService
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

        from ..accesslog import AccessLog
        from ..listeners import ListenerService
        from ..relay.pool import ConnectionPool
        from ..routing import pageTarget
        from ..server import HTTPServerFactory
        from .auth import PasswordFile, ProxyAuthenticator
        from .proxy import ForwardHandler

        settings = config.forward
        timeouts = config.timeouts
        root = MultiService()
        pool = ConnectionPool(reactor, config.upstream.max_idle_per_host, timeouts.upstream_idle)
        pool.setServiceParent(root)
        authenticator = None
        if settings.auth_file:
            authenticator = ProxyAuthenticator(PasswordFile.load(settings.auth_file), settings.auth_realm)
        handler = ForwardHandler(
            reactor,
            settings,
            timeouts,
            pool,
            filters,
            AccessLog(config.access_log, reactor),
            authenticator,
        )
        for route in settings.routes:
            handler.pages.tree(route.host).add(route.prefix, pageTarget(route))
        factory = HTTPServerFactory(handler, reactor, timeouts.client_idle)
        for description in config.listen or self.defaultListen:
            ListenerService(description, factory, reactor).setServiceParent(root)
        return root
