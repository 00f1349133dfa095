"""
The proxy's client listeners, plain and TLS, and the factories behind them
(HTTP ones, or whatever L{dualproxy.interfaces.IClientFactory} a mode
supplies): what a reload keeps (the sockets, the open connections) and what
it changes (the handler, the limits, the certificates).
"""

from __future__ import annotations

from typing import Dict, Iterable, Iterator, List

from twisted.application.service import MultiService
from twisted.internet.protocol import Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from ..http.parser import Limits
from ..interfaces import IClientFactory, IExchangeHandler
from ..listeners import ListenError, ListenerService
from ..server.http1 import HTTPServerFactory
from ..server.http2 import NegotiatingFactory
from ..server.proxied import ProxyProtocolFactory


class ListenerGroup(MultiService):
    """
    The listeners of one configuration, plain ones first, then TLS ones.
    """

    def __init__(self, config, reactor, acme=None):
        """
        @param acme: the L{dualproxy.acme.service.AcmeService} whose
            certificates the TLS listeners present, and whose HTTP-01
            challenges the routing tree answers.
        """
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.acme = acme
        self.serverTLS = None
        self.handler = None

    def listen(self, factory: IClientFactory, descriptions: Iterable[str]) -> None:
        """
        Serve C{factory}'s connections on each endpoint and, for an HTTP
        factory, its handler's requests on the TLS endpoints of the config's
        C{[tls]} table too (a mode whose factory is not HTTP refuses
        C{tls.listen} in its C{checkSettings}).
        """
        handler = self.handler = getattr(factory, "handler", None)
        tls = self.config.tls
        acme = self.acme
        tree = getattr(handler, "routingTree", None)
        if acme is not None and tree is not None and tls.acme.challenge == "http-01":
            from ..acme.challenges import WELL_KNOWN

            tree.wellKnown[WELL_KNOWN] = acme.tokens.target
        secureListeners = []
        if tls.listen:
            from ..server import http2
            from ..tls import ServerTLS, loadPair

            pairs = [loadPair(files.cert, files.key) for files in tls.certificates]
            offerH2 = tls.http2 and http2.available()
            self.serverTLS = ServerTLS(
                pairs, pairs[0] if pairs else None, tls.min_version,
                (b"h2", b"http/1.1") if offerH2 else (b"http/1.1",),
                tls.client_ca, tls.client_certificate_optional, tls.ciphers,
                None if acme is None else acme.book,
            )
            secure = self.httpFactory(handler, NegotiatingFactory if offerH2 else HTTPServerFactory)
            secure.hsts = tls.hsts.encode("latin-1") if tls.hsts else None
            wrapped = TLSMemoryBIOFactory(self.serverTLS, False, secure)
            if acme is not None and acme.onDemandPatterns:
                from ..acme.ondemand import HandshakeGateFactory

                wrapped = HandshakeGateFactory(wrapped, self.reactor, self.serverTLS.presents, acme.onDemand,
                                               self.config.timeouts.client_header)
            wrapped = self.proxied(wrapped)
            secureListeners = [ListenerService(description, wrapped, self.reactor) for description in tls.listen]
        if secureListeners and tls.redirect_http:
            factory.handler = RedirectToHTTPS(handler, secureListeners[0])
        plain = self.proxied(factory)
        for description in descriptions:
            ListenerService(description, plain, self.reactor).setServiceParent(self)
        for listener in secureListeners:
            listener.setServiceParent(self)

    def proxied(self, factory) -> ProxyProtocolFactory:
        """
        C{factory} behind the PROXY protocol layer every client listener
        has, so that a reload can switch C{proxy_protocol} on or off on the
        sockets it keeps.
        """
        return ProxyProtocolFactory(factory, self.reactor, self.config.proxy_protocol,
                                    self.config.timeouts.proxy_header)

    def httpFactory(self, handler, factoryType=HTTPServerFactory) -> HTTPServerFactory:
        """
        An HTTP client-side factory for C{handler} with the configured
        parser limits, connection limits and timeouts.
        """
        limits = self.config.limits
        timeouts = self.config.timeouts
        factory = factoryType(handler, self.reactor, timeouts.client_idle,
                              Limits(limits.max_header_bytes, limits.max_request_line, limits.max_header_fields))
        factory.maxConnections = limits.max_connections
        factory.maxConnectionsPerClient = limits.max_connections_per_client
        factory.maxBody = limits.max_body
        factory.headTimeout = timeouts.client_header
        factory.bodyTimeout = timeouts.client_body
        factory.writeTimeout = timeouts.client_write
        return factory

    # What runs

    def listeners(self) -> List[ListenerService]:
        return list(self)

    def factories(self) -> List[IClientFactory]:
        return [clientFactory(listener) for listener in self]

    def connections(self) -> Iterator[Protocol]:
        """
        Every open client connection (an L{IClientConnection}), a snapshot:
        closing some while iterating is safe.
        """
        for factory in self.factories():
            yield from list(factory.connections)

    def openConnections(self) -> int:
        return sum(len(factory.connections) for factory in self.factories())

    def inFlight(self) -> int:
        """
        Requests being answered, tunnels, answers not yet delivered, open
        HTTP/2 streams.
        """
        return sum(connection.busy() for connection in self.connections())

    def certificates(self) -> List[dict]:
        """
        The certificate the TLS listeners present for each name, with its
        expiry (POSIX seconds) and source (C{file:PATH} or C{acme}): a
        configured one before an ACME one for the same name, as the
        listeners choose.
        """
        presented: Dict[str, dict] = {}
        if self.serverTLS is not None:
            from ..tls import validity

            for pair in self.serverTLS.pairs():
                notAfter = validity(pair.chain[0])[1]
                source = "file:" + pair.certPath
                for name in pair.names:
                    presented.setdefault(name, {"name": name, "not_after": notAfter, "source": source})
        if self.acme is not None:
            for name, state in self.acme.certificates.items():
                if state.notAfter is not None:
                    presented.setdefault(name, {"name": name, "not_after": state.notAfter, "source": "acme"})
        return list(presented.values())

    # Reloading

    def bindBeside(self, running: ListenerGroup) -> None:
        """
        Listen on the endpoints that C{running} does not listen on yet, all
        or none: a reload must not go ahead on some of them only.

        @raise ListenError: for the first endpoint that cannot be bound,
            after closing those bound before it.
        """
        theirs = {_listenerKey(listener) for listener in running}
        bound: List[ListenerService] = []
        for listener in self:
            if _listenerKey(listener) in theirs:
                continue
            try:
                listener.bind()
            except ListenError:
                for done in bound:
                    done.port.stopListening()
                raise
            bound.append(listener)

    def takeOver(self, successor: ListenerGroup) -> None:
        """
        Serve C{successor}'s configuration from now on: the listeners both
        have keep their sockets and open connections with the new logic,
        those only this one has stop, those only C{successor} has move in.
        """
        ours = {_listenerKey(listener): listener for listener in self}
        kept: Dict[ListenerService, ListenerService] = {}
        for listener in successor:
            mine = ours.pop(_listenerKey(listener), None)
            if mine is not None:
                kept[listener] = mine
                mine.factory.adopt(listener.factory)
                clientFactory(mine).adopt(clientFactory(listener))
        for removed in ours.values():
            removed.disownServiceParent()
        if self.serverTLS is not None and successor.serverTLS is not None:
            self.serverTLS.adopt(successor.serverTLS)
        else:
            # TLS listeners came or went: keep the one they now use.
            self.serverTLS = successor.serverTLS
        for listener in list(successor):
            if listener not in kept:
                listener.disownServiceParent()
                listener.setServiceParent(self)
        for factory in self.factories():
            redirect = getattr(factory, "handler", None)
            if isinstance(redirect, RedirectToHTTPS):
                # It may name a TLS listener of the successor's that this group kept its own of.
                redirect.listener = kept.get(redirect.listener, redirect.listener)
        self.config = successor.config
        self.handler = successor.handler


def clientFactory(listener: ListenerService) -> IClientFactory:
    """
    The factory of a client listener's connections, under the PROXY
    protocol and TLS layers.
    """
    factory = listener.factory
    while hasattr(factory, "wrappedFactory"):
        factory = factory.wrappedFactory
    return factory


def _listenerKey(listener: ListenerService) -> tuple:
    """
    What makes two listeners the same across a reload: the endpoint and
    what is served there (plain or TLS).
    """
    return listener.description, type(listener.factory.wrappedFactory)


@implementer(IExchangeHandler)
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

    def newContext(self):
        return self.handler.newContext()

    def exchangeDone(self, exchange) -> None:
        self.handler.exchangeDone(exchange)

    def handle(self, exchange) -> None:
        from ..http.message import Refusal
        from ..routing.targets import RoutingRequest
        from ..routing.tree import hostName, splitTarget

        request = exchange.request
        host = hostName(request.headers)
        if not host or not request.target.startswith(b"/"):
            raise Refusal(400, "this listener only redirects to HTTPS")
        tree = getattr(self.handler, "routingTree", None)
        if tree is not None and tree.wellKnown and request.target.startswith(b"/.well-known/"):
            # What must be answered over plain HTTP (an ACME challenge) is.
            path, query = splitTarget(request.target)
            walk = RoutingRequest(exchange, host, path, query)
            walk.postpath.pop(0)
            target = tree.wellKnownTarget(walk)
            if target is not None:
                target.serve(walk)
                return
        port = getattr(self.listener.port.getHost(), "port", 443)
        authority = host if port == 443 else f"{host}:{port}"
        location = b"https://" + authority.encode("idna") + request.target
        raise Refusal(308, "use HTTPS: " + location.decode("ascii"), [(b"Location", location)])
