"""
What a TLS ClientHello asks for, read from the bytes a client sends first
(RFC 8446 section 4.1.2, the same in TLS 1.2): the server name (SNI,
RFC 6066 section 3) and the ALPN offer (RFC 7301).  A listener can decide
what to do with a connection before OpenSSL sees it, e.g. wait for the
certificate of a name that has none yet.  Sans-IO: bytes in, a result
out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_ALPN = 16
_HOST_NAME = 0

#: The largest ClientHello read; bigger ones are left to OpenSSL.
MAX_HELLO = 1 << 16


class HelloError(ValueError):
    """
    The bytes are not a ClientHello this module reads (not TLS, an SSLv2
    hello, malformed, or over L{MAX_HELLO}).
    """


@dataclass(frozen=True)
class ClientHello:
    """
    @ivar serverName: the host name asked for, lower-cased, or None.
    @ivar alpn: the protocols offered, in the client's order.
    """

    serverName: Optional[str]
    alpn: Tuple[bytes, ...]


def readClientHello(data: bytes) -> Optional[ClientHello]:
    """
    The ClientHello at the start of C{data}, which may span several
    records; None while more bytes are needed.

    @raise HelloError: it is not one.
    """
    message = bytearray()
    offset = 0
    while True:
        if len(data) - offset < 5:
            return None
        if data[offset] != _HANDSHAKE or data[offset + 1] != 3:
            raise HelloError("not a TLS handshake record")
        length = int.from_bytes(data[offset + 3:offset + 5], "big")
        if length == 0:
            raise HelloError("an empty handshake record")
        fragment = data[offset + 5:offset + 5 + length]
        if len(fragment) < length:
            return None
        message += fragment
        offset += 5 + length
        if len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                raise HelloError("the first handshake message is not a ClientHello")
            size = int.from_bytes(message[1:4], "big")
            if size > MAX_HELLO:
                raise HelloError(f"a ClientHello of {size} bytes")
            if len(message) >= 4 + size:
                return _parse(bytes(message[4:4 + size]))


def _parse(body: bytes) -> ClientHello:
    reader = _Reader(body)
    reader.take(2 + 32)
    reader.vector(1)
    reader.vector(2)
    reader.vector(1)
    serverName: Optional[str] = None
    alpn: Tuple[bytes, ...] = ()
    if reader.remaining():
        extensions = _Reader(reader.vector(2))
        while extensions.remaining():
            kind = extensions.number(2)
            payload = extensions.vector(2)
            if kind == _SERVER_NAME:
                serverName = _serverName(payload)
            elif kind == _ALPN:
                alpn = _alpn(payload)
    return ClientHello(serverName, alpn)


def _serverName(payload: bytes) -> Optional[str]:
    names = _Reader(_Reader(payload).vector(2))
    while names.remaining():
        kind = names.number(1)
        name = names.vector(2)
        if kind == _HOST_NAME:
            try:
                return name.decode("ascii").lower().rstrip(".")
            except UnicodeDecodeError:
                raise HelloError("a server name that is not ASCII")
    return None


def _alpn(payload: bytes) -> Tuple[bytes, ...]:
    protocols = _Reader(_Reader(payload).vector(2))
    offered = []
    while protocols.remaining():
        offered.append(protocols.vector(1))
    return tuple(offered)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def remaining(self) -> int:
        return len(self._data) - self._offset

    def take(self, size: int) -> bytes:
        if size > self.remaining():
            raise HelloError("a ClientHello cut short")
        start = self._offset
        self._offset += size
        return self._data[start:self._offset]

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, lengthSize: int) -> bytes:
        return self.take(self.number(lengthSize))
