"""
The reverse proxy's request logic: route each request through the shared
resource tree, and relay the ones routed to a pool to one of its backends.
"""

from __future__ import annotations

from functools import partial
from typing import List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred
from zope.interface import implementer

from .. import proxyprotocol
from ..policy.acl import ClientACL
from ..http.message import Refusal, RequestHead, ResponseHead
from ..http.proxystatus import DESTINATION_UNAVAILABLE
from ..http.rules import Hop, RewritePolicy, absoluteTarget, offeredUpgrade, rewriteRequest, rewriteResponse
from ..interfaces import IExchangeHandler
from ..core.exchange import ExchangeContext, proceed
from ..relay.client import isIdempotent
from ..relay.connect import connectHost, outOfResources
from ..relay.pool import ConnectionPool
from ..relay.relay import Relay
from ..filters import FilterChain
from ..policy.ratelimit import RateLimit
from ..routing.targets import RoutingRequest, Target
from ..routing.tree import VirtualHosts, hostName, route, splitTarget
from ..settings.model import RouteSettings
from .pool import BackendPool, BackendState


class ReverseContext(ExchangeContext):
    """
    An exchange's context in reverse mode: the backend serving it holds
    one more request in flight until the exchange is done.
    """

    backend: Optional[BackendState] = None

    @property
    def backendName(self) -> str:
        return self.backend.name if self.backend is not None else ""


class PoolTarget(Target):
    """
    A route to a pool of backends, rate limited by the route's own limit or
    its pool's.
    """

    def __init__(self, handler: ReverseHandler, pool: BackendPool, stripPrefix: bool = False, cache=None,
                 rateLimit: Optional[RateLimit] = None, upgrades: Sequence[str] = RouteSettings.upgrades, **kw):
        super().__init__(**kw)
        self.handler = handler
        self.pool = pool
        self.host = pool.settings.host.encode("ascii") if pool.settings.host is not None else None
        self.upgrades = frozenset(protocol.encode("ascii") for protocol in upgrades)
        self.stripPrefix = stripPrefix
        self.cache = cache
        self.rateLimit = rateLimit

    def serve(self, request: RoutingRequest) -> None:
        exchange = request.exchange
        exchange.context.pool = self.pool.name
        if self.rateLimit is None:
            self._admitted(None, request)
            return
        handler = self.handler
        # Before the cache: a limited client gets no hits either.
        checked = self.rateLimit.check(handler.clientAddress(exchange), exchange.request.headers, None,
                                       handler.reactor.seconds())
        proceed(exchange, checked, self._admitted, request)

    def _admitted(self, _, request: RoutingRequest) -> None:
        """
        Serve a request its rate limit let through.
        """
        exchange = request.exchange
        incoming = exchange.request
        handler = self.handler
        host = incoming.headers.get(b"host")
        cache = self.cache
        if cache is not None:
            uri = (b"https://" if exchange.channel.secure else b"http://") + (host or b"") + request.path + (
                b"?" + request.query if request.query else b"")
            # Request filters see every request, hits included.
            if not handler.filters.filters and cache.serveFresh(exchange, uri):
                return
        upgrade = offeredUpgrade(incoming.headers, self.upgrades)
        # An HTTP/1.0 request may name no site; an HTTP/1.1 one must have
        # Host, empty when there is no authority (RFC 9112 section 3.2).
        sentHost = self.host
        if sentHost is None and host is None:
            sentHost = b""
        client = exchange.clientHost
        hop = Hop(client, handler.trusted.allows(client), b"https" if exchange.channel.secure else b"http", host)
        headers = rewriteRequest(incoming, handler.rewrite, hop, host=sentHost, upgrade=upgrade)
        subjectHeader = handler.clientSubjectHeader
        if subjectHeader is not None:
            # Only the TLS layer may vouch for a client certificate.
            headers.remove(subjectHeader.lower())
            subject = exchange.channel.clientSubject()
            if subject is not None:
                headers.add(subjectHeader, subject.encode("utf-8"))
        self.adjust(headers)
        path = request.path
        if self.stripPrefix:
            path = b"/" + b"/".join(request.postpath)
        target = path + (b"?" + request.query if request.query else b"")
        outgoing = RequestHead(incoming.method, target, b"HTTP/1.1", headers, incoming.framing, incoming.length)
        handler.filters.request(outgoing, exchange)
        if cache is None or upgrade is not None:
            PoolRelay(exchange, outgoing, handler, self.pool, upgrade).start()
            return

        def relay(exchange, head: RequestHead, response) -> None:
            PoolRelay(exchange, head, handler, self.pool, None, response).start()

        cache.handle(exchange, outgoing, uri, relay)


class PoolRelay(Relay):
    """
    A relay that chooses its backend from a pool, records what it learns
    about backend health, and tries another backend when one cannot be
    reached, or resets before answering a request that is safe to repeat.
    """

    def __init__(self, exchange, head: RequestHead, handler: ReverseHandler, pool: BackendPool, upgrade: Optional[bytes],
                 response=None):
        super().__init__(exchange, head, handler.connections, None, None, None, "", upgrade, response)
        self.handler = handler
        self.backendPool = pool
        self.tried: List[BackendState] = []

    def start(self) -> None:
        if self._choose():
            super().start()

    def _choose(self) -> bool:
        """
        Point the relay at the next backend; answer the client if none is
        left.
        """
        exchange = self.exchange
        pool = self.backendPool
        now = self.handler.reactor.seconds()
        backend = pool.pick(now, exchange.clientHost, exchange.request.headers, self.tried)
        previous = exchange.context.backend
        if previous is not None:
            previous.inFlight -= 1
            exchange.context.backend = None
        if backend is None:
            if not self.tried:
                self.refuse(Refusal(503, f"no healthy backend in pool {pool.name}",
                                    [(b"Retry-After", b"%d" % pool.retryAfter())], DESTINATION_UNAVAILABLE))
            return False
        backend.inFlight += 1
        exchange.context.backend = backend
        self.tried.append(backend)
        version = pool.settings.proxy_protocol
        if version is None:
            self.key = backend.key
            self.connect = partial(self.handler.open, backend)
        else:
            # A connection whose header names one client serves no other.
            channel = exchange.channel
            preamble = proxyHeader(version, channel.transport if channel is not None else None)
            self.key = backend.key + (preamble,)
            self.connect = partial(self.handler.open, backend, preamble)
        self.what = f"backend {backend.name}"
        return True

    def _mayRetry(self) -> bool:
        return len(self.tried) <= self.backendPool.settings.retries and not self.exchange.finished

    def connectFailed(self, failure) -> None:
        backend = self.exchange.context.backend
        if backend is not None and not outOfResources(failure):
            backend.health.requestFailed(self.handler.reactor.seconds())
        if self._mayRetry() and self._choose():
            self.pool.acquire(self.key, self.connect).addCallbacks(self._connected, self.connectFailed)
            return
        super().connectFailed(failure)

    def responseFailed(self, refusal: Refusal) -> None:
        upstream = self.upstream
        exchange = self.exchange
        backend = exchange.context.backend
        if upstream is not None and not upstream.responseBegun and not upstream.reused and backend is not None:
            # The backend failed before answering (reset, TLS refused).
            backend.health.requestFailed(self.handler.reactor.seconds())
        if (
            upstream is not None
            and not upstream.responseBegun
            and not exchange.responseStarted
            and not self._bodyStarted
            and isIdempotent(self.head.method)
            and not upstream.reused
            and self._mayRetry()
        ):
            # A fresh connection reset before any answer: another backend
            # may do better (a stale pooled one is retried on the same).
            self.upstream = None
            if self._choose():
                self.pool.acquire(self.key, self.connect).addCallbacks(self._connected, self.connectFailed)
                return
        super().responseFailed(refusal)

    def onResponse(self, head: ResponseHead) -> None:
        backend = self.exchange.context.backend
        if backend is not None:
            if head.status >= 500:
                backend.health.requestFailed(self.handler.reactor.seconds())
            else:
                backend.health.requestSucceeded()
        rewriteResponse(head, self.handler.rewrite)
        self.handler.filters.response(self.head, head)


@implementer(IExchangeHandler)
class ReverseHandler:
    """
    Handles every request on the reverse proxy's client connections.
    """

    def __init__(self, reactor, settings, timeouts, connections: ConnectionPool, filters: Sequence = (),
                 accessLog=None):
        self.reactor = reactor
        self.settings = settings
        self.timeouts = timeouts
        self.connections = connections
        self.filters = FilterChain(filters)
        self.accessLog = accessLog
        self.trusted = ClientACL(settings.trusted_proxies)
        self.rewrite = RewritePolicy(xForwardedFor=settings.x_forwarded_for, xForwardedProto=settings.x_forwarded_proto,
                                     xForwardedHost=settings.x_forwarded_host, forwarded=settings.forwarded)
        self.clientSubjectHeader: Optional[bytes] = None
        self.resolver = reactor.nameResolver
        self.routes = VirtualHosts()

    @property
    def routingTree(self) -> VirtualHosts:
        """
        The routes, where listeners add well-known answers (ACME's).
        """
        return self.routes

    def addRoute(self, host: str, prefix: str, target: Target) -> None:
        target.label = host + prefix
        self.routes.tree(host).add(prefix, target)

    def clientAddress(self, exchange) -> Optional[str]:
        """
        The client a rate limit counts a request against: behind a trusted
        proxy (as for the forwarding fields), the address it added last to
        X-Forwarded-For, or else every client behind it would share one
        bucket.
        """
        client = exchange.clientHost
        if self.trusted.allows(client):
            chain = exchange.request.headers.getAll(b"x-forwarded-for")
            last = chain[-1].rsplit(b",", 1)[-1].strip() if chain else b""
            if last:
                return last.decode("latin-1")
        return client

    # Channel callbacks

    def connectionMade(self, channel) -> None:
        pass

    def connectionLost(self, channel) -> None:
        pass

    newContext = ReverseContext

    def exchangeDone(self, exchange) -> None:
        if self.accessLog is not None:
            # Logged and counted while it still names its backend.
            self.accessLog(exchange)
        context = exchange.context
        if context.backend is not None:
            context.backend.inFlight -= 1
            context.backend = None

    def handle(self, exchange) -> None:
        head = exchange.request
        if head.method == b"CONNECT":
            raise Refusal(405, "this is a reverse proxy: CONNECT is not served", [(b"Allow", b"GET, HEAD, POST")])
        target = head.target
        if not target.startswith(b"/"):
            if target.lower().startswith((b"http://", b"https://")):
                # RFC 9112 section 3.2.2: a server must accept absolute form,
                # and its host wins over the received Host, for routing and
                # for what the backend is told.
                _, _, _, authority, target = absoluteTarget(head)
                head.headers.remove(b"host")
                head.headers.insert(b"Host", authority)
            else:
                raise Refusal(400, "the request target must be a path")
        path, query = splitTarget(target)
        request = RoutingRequest(exchange, hostName(head.headers), path, query)
        route(self.routes, request).serve(request)

    def open(self, backend: BackendState, preamble: bytes = b"") -> Deferred:
        """
        A new connection to a backend, to the address its name resolved to
        last, or, before the first lookup is done, to whichever it has now;
        C{preamble} (a PROXY header) is sent first.
        """
        return connectHost(self.reactor, self.resolver, backend.host, backend.port, self.timeouts, backend.tls,
                           addresses=backend.addresses, preamble=preamble)


def proxyHeader(version: int, transport) -> bytes:
    """
    The PROXY header of C{version} for a backend connection relaying the
    client on C{transport}: its peer (a PROXY header's client, if it sent
    one) to the address it reached.  No transport: the proxy's own request
    (a cache's background revalidation), a LOCAL one.
    """
    if transport is None:
        return proxyprotocol.local(version)
    return proxyprotocol.header(version, _hostAndPort(transport.getPeer()), _hostAndPort(transport.getHost()))


def _hostAndPort(address) -> Optional[Tuple[str, int]]:
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return (host, port) if host is not None and port is not None else None
