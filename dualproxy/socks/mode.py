"""
The built-in C{socks} mode plugin: the worked example of a mode that brings
its own protocol to the proxy's service tree.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..interfaces import IProxyMode
from ..proxymode import ProxyMode


@implementer(IPlugin, IProxyMode)
class SocksMode(ProxyMode):
    """
    A SOCKS5 proxy: CONNECT tunnels only, loopback clients only and no
    private destinations unless configured otherwise.
    """

    name = "socks"
    description = "relay SOCKS5 CONNECT tunnels (RFC 1928, logins RFC 1929) for many clients"
    defaultListen = ("tcp:1080:interface=127.0.0.1",)

    def parseSettings(self, table, base):
        from .settings import parseSocks

        return parseSocks(table, base)

    def checkSettings(self, settings, config):
        from .settings import checkSocks

        checkSocks(settings, config)

    def makeFactory(self, root, config, filters):
        """
        Not HTTP: a SOCKS factory, with the shared connection limits and
        the client timeouts (C{client_header} for the handshake,
        C{client_idle} for a tunnel).
        """
        from ..policy.auth import PasswordFile
        from .handler import SocksHandler
        from .server import SocksFactory

        settings = config.modes[self.name]
        passwords = PasswordFile.load(settings.auth_file) if settings.auth_file else None
        rateLimit = None
        if settings.rate_limit is not None:
            rateLimit = root.rateLimit(settings.rate_limit, "socks.rate_limit", "socks", "the proxy")
        handler = SocksHandler(root.reactor, settings, config.timeouts, passwords, rateLimit, root.sessionLog)
        factory = SocksFactory(handler, root.reactor, config.timeouts.client_idle, config.timeouts.client_header)
        factory.maxConnections = config.limits.max_connections
        factory.maxConnectionsPerClient = config.limits.max_connections_per_client
        return factory
