"""
Forward mode's TLS interception: which CONNECT tunnels are opened, and the
handler of the requests inside one, which makes each an absolute https://
request of the tunnel's host so that it takes the plain path through the
proxy: filters, cache, access log, metrics, verified TLS upstream.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from ..http.message import Refusal
from ..http.proxystatus import HTTP_REQUEST_DENIED
from ..http.parser import DEFAULT_LIMITS
from ..interception.authority import LeafMinter, loadAuthority
from ..interception.tunnel import InterceptedTunnel
from ..interfaces import IExchangeHandler
from ..policy.acl import ClientACL, Destinations
from ..routing.tree import hostName
from ..server.http1 import HTTPServerFactory
from ..server.http2 import NegotiatingFactory, available
from ..settings.model import InterceptSettings
from ..twistedcompat import tlsConnection


class InterceptPolicy:
    """
    Which tunnels are opened: to an intercepted port, from a listed client
    (every client when none is listed), not to a bypassed destination.
    """

    def __init__(self, settings: InterceptSettings):
        self.clients = ClientACL(settings.clients) if settings.clients else None
        self.bypass = Destinations(settings.bypass)
        self.ports = frozenset(settings.ports)

    def intercepts(self, client: Optional[str], host: str, port: int) -> bool:
        if port not in self.ports or self.bypass.matches(host):
            return False
        return self.clients is None or (client is not None and self.clients.allows(client))


@implementer(IOpenSSLServerConnectionCreator)
class _LeafFor:
    """
    A tunnel's TLS: the CONNECT host's leaf unless SNI names another.
    """

    def __init__(self, minter: LeafMinter, host: str):
        self.minter = minter
        self.host = host

    def serverConnectionForTLS(self, tlsProtocol):
        return tlsConnection(self.minter.contextFor(self.host))


class Interception:
    """
    The CA's minter and the policy, built once per configuration.
    """

    def __init__(self, settings: InterceptSettings):
        self.policy = InterceptPolicy(settings)
        offerH2 = settings.http2 and available()
        self.http2 = offerH2
        self.minter = LeafMinter(loadAuthority(settings.ca_cert, settings.ca_key), settings.certificate_cache,
                                 (b"h2", b"http/1.1") if offerH2 else (b"http/1.1",))

    def tunnel(self, exchange, forward, host: str, port: int) -> InterceptedTunnel:
        """
        The tunnel that serves C{exchange}'s CONNECT to C{host}:C{port}
        itself, its requests going to C{forward} (the ForwardHandler).
        """
        channel = exchange.channel
        outer = getattr(channel, "factory", None)
        handler = InterceptedHandler(forward, host, port, exchange.user)
        factoryType = NegotiatingFactory if self.http2 else HTTPServerFactory
        limits = outer.limits if outer is not None else DEFAULT_LIMITS
        factory = factoryType(handler, channel.clock, channel.idleTimeout, limits)
        for name in ("maxBody", "headTimeout", "bodyTimeout", "writeTimeout"):
            setattr(factory, name, getattr(channel, name))
        return InterceptedTunnel(channel.clock, _LeafFor(self.minter, host), factory)


@implementer(IExchangeHandler)
class InterceptedHandler:
    """
    The requests inside one intercepted tunnel to C{host}:C{port}, made by
    C{user} (who authenticated on the CONNECT).
    """

    def __init__(self, forward, host: str, port: int, user: Optional[str]):
        self.forward = forward
        self.host = host.lower().rstrip(".")
        self.port = port
        self.user = user

    def newContext(self):
        return self.forward.newContext()

    def connectionMade(self, channel) -> None:
        channel.allowed = True

    def connectionLost(self, channel) -> None:
        pass

    def exchangeDone(self, exchange) -> None:
        self.forward.exchangeDone(exchange)

    def handle(self, exchange) -> None:
        head = exchange.request
        if head.method == b"CONNECT" or not (head.target.startswith(b"/") or head.target == b"*"):
            raise Refusal(400, "inside an intercepted tunnel, requests are in origin form")
        if (hostName(head.headers) or "").rstrip(".") != self.host:
            raise Refusal(421, f"this connection is for {self.host} only", errorType=HTTP_REQUEST_DENIED)
        authority = self.host if self.port == 443 else f"{self.host}:{self.port}"
        if ":" in self.host:
            authority = f"[{self.host}]" if self.port == 443 else f"[{self.host}]:{self.port}"
        head.target = b"https://" + authority.encode("idna") + (b"" if head.target == b"*" else head.target)
        exchange.user = self.user
        self.forward.proxy(exchange)
