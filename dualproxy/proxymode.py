"""
What the built-in modes share: one service tree, built the same way; a mode
supplies the handler that answers its requests.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from twisted.application.service import IService

from .interfaces import IClientFactory


class ProxyMode:
    """
    The base of an L{dualproxy.interfaces.IProxyMode} plugin that runs the
    proxy's service tree (L{dualproxy.service.root.ProxyService}): listeners,
    admin, cache, reload and drain come with it.  Subclasses set C{name},
    C{description} and C{defaultListen} and implement L{makeHandler} (or,
    for a protocol other than HTTP, L{makeFactory}); one with settings of
    its own overrides L{parseSettings} and L{checkSettings}.
    """

    name: str
    description: str
    defaultListen: tuple

    def parseSettings(self, table: Mapping[str, Any], base: str) -> Any:
        """
        The mode's table as it is: read-only, unchecked.
        """
        return MappingProxyType(dict(table))

    def checkSettings(self, settings: Any, config) -> None:
        """
        Nothing to check before start-up.
        """

    def makeService(self, config, filters, reactor=None, lasting=None) -> IService:
        """
        The service tree for C{config}.

        @param reactor: the global one unless given.
        @param lasting: what a running service hands on when a reload builds
            this one (L{dualproxy.service.root.Lasting}).
        """
        # Imported here so that listing plugins (twistd --help) stays light.
        if reactor is None:
            from twisted.internet import reactor
        from .service.root import buildService

        return buildService(self, config, filters, reactor, lasting)

    def makeFactory(self, root, config, filters) -> IClientFactory:
        """
        The factory of client connections on the mode's listeners: by
        default HTTP (and the C{[tls]} listeners too) serving
        L{makeHandler}'s handler.  A mode with a protocol of its own returns
        its own L{dualproxy.interfaces.IClientFactory} instead (and refuses
        C{tls.listen} in L{checkSettings}).

        @param root: the L{dualproxy.service.root.ProxyService} being built.
        """
        return root.listenerGroup.httpFactory(self.makeHandler(root, config, filters))

    def makeHandler(self, root, config, filters):
        """
        The handler of client requests, built with C{root}'s parts
        (C{connections}, C{accessLog}, C{sessionLog}, C{httpCache()},
        C{rateLimit()}); services it needs running (checks, resolvers) go
        under C{root.upstreams}.

        @param root: the L{dualproxy.service.root.ProxyService} being built.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement makeHandler")
