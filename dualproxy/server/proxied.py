"""
The PROXY protocol on client listeners (the top-level C{proxy_protocol}
setting): a connection from a trusted network, a load balancer's, must
begin with a PROXY header, and the client it names is the connection's
peer from then on, for every mode, ACL, limit and log alike.
"""

from __future__ import annotations

from typing import Optional, Sequence

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from ..listeners import LayerFactory
from ..policy.acl import ClientACL
from ..proxyprotocol import Address, ProxyHeaderError, parse
from ..settings.model import Network
from ..twistedcompat import handOver

_log = Logger()


class ProxyProtocolFactory(LayerFactory):
    """
    Wraps a listener's factory (plain or TLS: the header comes before the
    TLS handshake).  A peer in C{trusted} gets a L{ProxyHeaderReader}
    first; any other peer, or every peer when C{trusted} is empty, goes
    straight to the wrapped factory, a PROXY header from it being just bad
    input to the protocol it reaches.
    """

    def __init__(self, wrappedFactory: Factory, clock, trusted: Sequence[Network] = (), timeout: float = 5.0):
        super().__init__(wrappedFactory)
        self.clock = clock
        self.trusted: Optional[ClientACL] = None
        self.timeout = timeout
        self.configure(trusted, timeout)

    def configure(self, trusted: Sequence[Network], timeout: float) -> None:
        self.trusted = ClientACL(trusted) if trusted else None
        self.timeout = timeout

    def adopt(self, other: ProxyProtocolFactory) -> None:
        """
        A reload keeps this listener: new connections get C{other}'s
        trusted networks and timeout.
        """
        self.trusted, self.timeout = other.trusted, other.timeout

    def buildProtocol(self, addr) -> Optional[Protocol]:
        host = getattr(addr, "host", None)
        # A UNIX socket's peer is on no network, so never trusted.
        if self.trusted is None or host is None or not self.trusted.allows(host):
            return self.wrappedFactory.buildProtocol(addr)
        return ProxyHeaderReader(self)


class ProxyHeaderReader(Protocol):
    """
    Reads the PROXY header of a trusted peer's connection, then hands the
    connection to the protocol the wrapped factory builds for the client
    the header names (the balancer itself for a LOCAL or UNKNOWN one).  No
    header, a bad one or none within the timeout: the connection is closed.
    """

    def __init__(self, factory: ProxyProtocolFactory):
        self.factory = factory
        self._buffer = b""
        self._timer = None

    def connectionMade(self) -> None:
        self._timer = self.factory.clock.callLater(self.factory.timeout, self._tooSlow)

    def dataReceived(self, data: bytes) -> None:
        if self.transport.disconnecting:
            return
        self._buffer += data
        try:
            parsed = parse(self._buffer)
        except ProxyHeaderError as e:
            self._close(str(e))
            return
        if parsed is None:
            return
        self._stopTimer()
        header, used = parsed
        rest, self._buffer = self._buffer[used:], b""
        transport = self.transport
        peer = host = None
        if header.source is not None:
            peer, host = _address(header.source), _address(header.destination)
        protocol = self.factory.wrappedFactory.buildProtocol(peer or transport.getPeer())
        if protocol is None:
            # Over a connection limit (logged where it is counted).
            transport.loseConnection()
            return
        handOver(transport, protocol, peer, host)
        if rest and not transport.disconnecting:
            protocol.dataReceived(rest)

    def connectionLost(self, reason=None) -> None:
        self._stopTimer()

    def _tooSlow(self) -> None:
        self._timer = None
        self._close(f"no PROXY header within {self.factory.timeout:g} s")

    def _close(self, why: str) -> None:
        self._stopTimer()
        _log.info("closing the connection of {peer}, a proxy_protocol peer: {why}",
                  peer=getattr(self.transport.getPeer(), "host", "-"), why=why)
        self.transport.loseConnection()

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def _address(address: Address):
    host, port = address
    return (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
