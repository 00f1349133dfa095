"""
The forward proxy's request logic: who may use it, where they may go, and
how each request reaches its origin (directly or through a parent proxy).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from ..core.exchange import ExchangeContext, proceed
from ..http.message import NO_BODY, Headers, Refusal, RequestHead, ResponseHead
from ..http.proxystatus import DESTINATION_IP_PROHIBITED, HTTP_REQUEST_DENIED, PROXY_LOOP_DETECTED
from ..http.rules import (
    Hop,
    RewritePolicy,
    absoluteTarget,
    connectTarget,
    isServerWideOptions,
    rewriteRequest,
    rewriteResponse,
)
from ..relay.connect import asRefusal, connectHost
from ..relay.pool import ConnectionPool
from ..relay.relay import Relay
from ..filters import FilterChain
from ..policy.ratelimit import RateLimit
from ..routing.targets import RoutingRequest, Target
from ..routing.tree import VirtualHosts, hostName, route, splitTarget
from ..policy.acl import ClientACL, DestinationPolicy, isAddressLiteral
from ..policy.auth import ProxyAuthenticator
from ..interfaces import IExchangeHandler
from .chaining import ParentConnector, ParentRelay, chainTunnel
from .parents import Egress, ParentPool

_log = Logger()


@implementer(IExchangeHandler)
class ForwardHandler:
    """
    Handles every request on the forward proxy's client connections.
    """

    def __init__(
        self,
        reactor,
        settings,
        timeouts,
        pool: ConnectionPool,
        filters: Sequence = (),
        accessLog=None,
        authenticator: Optional[ProxyAuthenticator] = None,
    ):
        self.reactor = reactor
        self.settings = settings
        self.timeouts = timeouts
        self.pool = pool
        self.filters = FilterChain(filters)
        self.accessLog = accessLog
        self.authenticator = authenticator
        self.clients = ClientACL(settings.allow_clients)
        self.destinations = DestinationPolicy(
            settings.deny_destinations, settings.allow_destinations, settings.connect_ports
        )
        self.pseudonym = settings.via.encode("ascii")
        # Privacy: by default nothing reveals the client; X-Forwarded-For
        # only for the configured client networks.
        self.forwardedFor = ClientACL(settings.x_forwarded_for) if settings.x_forwarded_for else None
        stripped = tuple(name.lower().encode("ascii") for name in settings.anonymous_headers)
        self.rewrite = RewritePolicy(via=self.pseudonym, remove=stripped if settings.anonymous else ())
        self.rewriteIdentified = dataclasses.replace(self.rewrite, xForwardedFor=True)
        self.egress = Egress(settings)
        self.resolver = reactor.nameResolver
        self.parentConnector = ParentConnector(
            reactor, lambda host, port, tls: self._open(host, port, False, tls), timeouts.connect,
            settings.parent_ca or settings.tls_ca)
        self._tlsCreators: dict = {}
        self.pages = VirtualHosts()
        self.pages.default.target = NotAProxyRequest()
        self.cache = None
        self.rateLimit: Optional[RateLimit] = None
        self.interception = None

    @property
    def routingTree(self) -> VirtualHosts:
        """
        The proxy's own pages, for requests in origin form.
        """
        return self.pages

    # Channel callbacks

    def connectionMade(self, channel) -> None:
        channel.allowed = self.clients.allows(channel.clientHost)

    def connectionLost(self, channel) -> None:
        pass

    newContext = ExchangeContext

    def exchangeDone(self, exchange) -> None:
        if self.accessLog is not None:
            self.accessLog(exchange)

    def handle(self, exchange) -> None:
        if not exchange.channel.allowed:
            raise Refusal(403, "this client may not use the proxy", errorType=HTTP_REQUEST_DENIED)
        head = exchange.request
        if head.target.startswith(b"/"):
            # Origin form: a request for the proxy's own pages.
            path, query = splitTarget(head.target)
            request = RoutingRequest(exchange, hostName(head.headers), path, query)
            route(self.pages, request).serve(request)
            return
        if self.authenticator is not None:
            exchange.user = self.authenticator.authenticate(head.headers)
        self.proxy(exchange)

    def proxy(self, exchange) -> None:
        """
        Relay an absolute-form request or open a CONNECT tunnel for a
        client already admitted and authenticated (an intercepted tunnel's
        requests come here too).
        """
        if self.rateLimit is None:
            self._admitted(None, exchange)
            return
        checked = self.rateLimit.check(exchange.clientHost, exchange.request.headers, exchange.user,
                                       self.reactor.seconds())
        proceed(exchange, checked, self._admitted, exchange)

    def _admitted(self, _, exchange) -> None:
        """
        Relay or tunnel a request its rate limit let through.
        """
        head = exchange.request
        if self._seenBefore(head.headers):
            raise Refusal(508, "proxy loop detected: this request already passed through this proxy",
                          errorType=PROXY_LOOP_DETECTED)
        if head.method == b"CONNECT":
            self._connect(exchange)
        else:
            self._relay(exchange)

    def _seenBefore(self, headers: Headers) -> bool:
        for value in headers.getAll(b"via"):
            for hop in value.split(b","):
                parts = hop.split()
                if len(parts) >= 2 and parts[1] == self.pseudonym:
                    return True
        return False

    # Plain HTTP

    def _relay(self, exchange) -> None:
        request = exchange.request
        scheme, host, port, authority, path = absoluteTarget(request)
        self._checkHost(host, port)
        uri = scheme.encode("ascii") + b"://" + authority + path
        cache = self.cache
        # Request filters see every request, hits included.
        if cache is not None and not self.filters.filters and cache.serveFresh(exchange, uri):
            return
        client = exchange.clientHost
        identified = self.forwardedFor is not None and client and self.forwardedFor.allows(client)
        # The client's own forwarding fields stay: this proxy vouches for none.
        headers = rewriteRequest(request, self.rewriteIdentified if identified else self.rewrite,
                                 Hop(client, trusted=True), host=authority)
        wholeServer = isServerWideOptions(request)
        parents = self.egress.poolFor(host)
        if parents is not None:
            # The parent needs the absolute form to know where to go, and
            # the URI as it was to tell an OPTIONS * from an OPTIONS /.
            target = scheme.encode("ascii") + b"://" + authority + (b"" if wholeServer else path)
        else:
            target = b"*" if wholeServer else path
        outgoing = RequestHead(request.method, target, b"HTTP/1.1", headers, request.framing, request.length)
        self.filters.request(outgoing, exchange)
        relay = self._direct(host, port, scheme) if parents is None else self._throughParents(parents)
        if cache is not None:
            cache.handle(exchange, outgoing, uri, relay)
        else:
            relay(exchange, outgoing)

    def _filterResponse(self, request: RequestHead):
        filters, policy = self.filters, self.rewrite

        def onResponse(head: ResponseHead) -> None:
            rewriteResponse(head, policy)
            filters.response(request, head)

        return onResponse

    def _checkHost(self, host: str, port: int) -> None:
        reason = self.destinations.checkHost(host)
        if reason is not None:
            # An address is refused as one; a name by the deny list.
            errorType = DESTINATION_IP_PROHIBITED if isAddressLiteral(host) else HTTP_REQUEST_DENIED
            raise Refusal(403, reason, errorType=errorType)

    def _direct(self, host: str, port: int, scheme: str):
        """
        How a plain request reaches its origin directly.
        """
        key, connect, what = self._origin(host, port, scheme)

        def relay(exchange, head: RequestHead, response=None) -> None:
            Relay(exchange, head, self.pool, key, connect, self._filterResponse(head), what,
                  response=response).start()

        return relay

    def _throughParents(self, parents: ParentPool):
        """
        How a plain request reaches its origin through C{parents}, in the
        order their health and policy give when it leaves (a cache may
        hold it back a while first).
        """

        def relay(exchange, head: RequestHead, response=None) -> None:
            ParentRelay(exchange, head, self.pool, parents.candidates(self.reactor.seconds()),
                        self.parentConnector, self._filterResponse(head), response=response).start()

        return relay

    def _origin(self, host: str, port: int, scheme: str = "http"):
        what = f"origin {host}:{port}"
        if scheme == "https":
            return (scheme, host, port), lambda: self._open(host, port, True, self._originTLS(host)), what
        return (host, port), lambda: self._open(host, port, checked=True), what

    def _originTLS(self, host: str):
        """
        TLS to an https origin, verified against its name; one creator per
        name, kept in a bounded cache since every new connection needs it.
        """
        creator = self._tlsCreators.get(host)
        if creator is None:
            from ..tls import clientCreator

            if len(self._tlsCreators) >= 1024:
                del self._tlsCreators[next(iter(self._tlsCreators))]
            creator = self._tlsCreators[host] = clientCreator(host, self.settings.tls_ca)
        return creator

    def _open(self, host: str, port: int, checked: bool, tls=None) -> Deferred:
        return connectHost(self.reactor, self.resolver, host, port, self.timeouts, tls,
                           check=self._addressRefusal if checked else None)

    def _addressRefusal(self, address: str) -> Optional[Refusal]:
        reason = self.destinations.checkAddress(address)
        return None if reason is None else Refusal(403, reason, errorType=DESTINATION_IP_PROHIBITED)

    # CONNECT tunnels

    def _connect(self, exchange) -> None:
        host, port = connectTarget(exchange.request)
        if not self.destinations.connectAllowed(port):
            raise Refusal(403, f"CONNECT to port {port} is not allowed", errorType=HTTP_REQUEST_DENIED)
        self._checkHost(host, port)
        parents = self.egress.poolFor(host)
        interception = self.interception
        if parents is None and interception is not None and interception.policy.intercepts(
                exchange.clientHost, host, port):
            # Through a parent, https:// URLs would go to it in clear: those tunnels stay untouched.
            exchange.writeHead(ResponseHead(200, b"Connection Established", framing=NO_BODY))
            exchange.tunnel(interception.tunnel(exchange, self, host, port))
            return
        if parents is None:
            key, connect, what = self._origin(host, port)
            opened = connect()
        else:
            # Its failures are refusals naming the parent.
            what = "parent proxy"
            opened = chainTunnel(self.parentConnector, parents.candidates(self.reactor.seconds()),
                                 exchange.request.target, self.pseudonym)
        opened.addCallbacks(self._tunnel, self._tunnelFailed,
                            callbackArgs=(exchange,), errbackArgs=(exchange, what))

    def _tunnel(self, upstream, exchange) -> None:
        if exchange.finished:
            upstream.transport.loseConnection()
            return
        exchange.writeHead(ResponseHead(200, b"Connection Established", framing=NO_BODY))
        exchange.tunnel(upstream)

    def _tunnelFailed(self, failure, exchange, what: str) -> None:
        refusal = asRefusal(failure, what)
        exchange.refuse(refusal.status, refusal.reason, refusal.headers, refusal.errorType)


class NotAProxyRequest(Target):
    """
    What origin-form requests get when no page of the proxy's own matches.
    """

    def serve(self, request: RoutingRequest) -> None:
        raise Refusal(400, "not a proxy request: the target must be an absolute http:// URL")
