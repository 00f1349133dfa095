"""
The server side of SOCKS5 (RFC 1928) with username/password authentication
(RFC 1929), as a state machine without I/O: feed it the client's bytes, get
events back, answer them.

Every message has a bounded size (at most 513 bytes), so nothing a client
sends can make this buffer more; anything malformed ends the session with
the reply the protocol has for it, or with none where it has none.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Union

VERSION = 0x05
AUTH_VERSION = 0x01

# Methods (RFC 1928 section 3).
NO_AUTHENTICATION = 0x00
USERNAME_PASSWORD = 0x02
NO_ACCEPTABLE_METHODS = 0xFF

# Commands.
CONNECT = 0x01
BIND = 0x02
UDP_ASSOCIATE = 0x03

# Address types.
IPV4 = 0x01
DOMAIN = 0x03
IPV6 = 0x04

# Replies (RFC 1928 section 6).
SUCCEEDED = 0x00
GENERAL_FAILURE = 0x01
NOT_ALLOWED = 0x02
NETWORK_UNREACHABLE = 0x03
HOST_UNREACHABLE = 0x04
CONNECTION_REFUSED = 0x05
TTL_EXPIRED = 0x06
COMMAND_NOT_SUPPORTED = 0x07
ADDRESS_TYPE_NOT_SUPPORTED = 0x08

#: What each reply is called in logs and metrics.
REPLY_NAMES = {
    SUCCEEDED: "succeeded",
    GENERAL_FAILURE: "general_failure",
    NOT_ALLOWED: "not_allowed",
    NETWORK_UNREACHABLE: "network_unreachable",
    HOST_UNREACHABLE: "host_unreachable",
    CONNECTION_REFUSED: "connection_refused",
    TTL_EXPIRED: "timeout",
    COMMAND_NOT_SUPPORTED: "command_not_supported",
    ADDRESS_TYPE_NOT_SUPPORTED: "address_type_not_supported",
}

# A SOCKS4 client's request is answered "rejected or failed" (91) in its own
# protocol, so it learns it asked the wrong server.
SOCKS4_REJECTED = b"\x00\x5b" + bytes(6)

# What a domain name in a request may hold: a host name's characters, as
# curl and browsers send them (IDNs already in their ASCII form).
_HOSTNAME = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?\Z")

_GREETING, _AUTHENTICATING, _CHECKING, _REQUEST, _CONNECTING, _TUNNEL, _CLOSED = range(7)


@dataclass(frozen=True)
class Send:
    """
    Write C{data} to the client.
    """

    data: bytes


@dataclass(frozen=True)
class Close:
    """
    Close the connection (after writing what was sent before); C{result}
    names the outcome for logs and metrics, C{reason} says it in words.
    """

    result: str
    reason: str


@dataclass(frozen=True)
class Authenticate:
    """
    Check these credentials, then call L{SocksServer.authenticated}.  The
    password goes nowhere else: never log it.
    """

    user: str
    password: str


@dataclass(frozen=True)
class Connect:
    """
    The client asks for a tunnel to C{host} (an IP address or a name) and
    C{port}; call L{SocksServer.connected} or L{SocksServer.failed}.
    """

    host: str
    port: int


Event = Union[Send, Close, Authenticate, Connect]


class SocksServer:
    """
    One client's handshake.

    @param methods: the authentication methods this client may use:
        C{{NO_AUTHENTICATION}}, C{{USERNAME_PASSWORD}}, or none at all for a
        client that may not use the proxy (it is told no method is
        acceptable).
    """

    def __init__(self, methods: FrozenSet[int]):
        self.methods = methods
        self._state = _GREETING
        self._buffer = b""

    @property
    def leftover(self) -> bytes:
        """
        What the client sent after its request, for the tunnel.
        """
        return self._buffer

    def feed(self, data: bytes) -> List[Event]:
        """
        More bytes from the client; once a L{Connect} is out, bytes are only
        kept (see L{leftover}).
        """
        self._buffer += data
        return self._advance()

    def authenticated(self, ok: bool) -> List[Event]:
        """
        The answer to L{Authenticate}.
        """
        if self._state != _CHECKING:
            raise RuntimeError("no credentials are being checked")
        if not ok:
            return self._close([bytes((AUTH_VERSION, 0x01))], "auth_failed", "wrong user name or password")
        self._state = _REQUEST
        return [Send(bytes((AUTH_VERSION, 0x00)))] + self._advance()

    def connected(self, address: str, port: int) -> List[Event]:
        """
        The tunnel is open, from C{address}:C{port} (the proxy's end).
        """
        if self._state != _CONNECTING:
            raise RuntimeError("no connection is being opened")
        self._state = _TUNNEL
        return [Send(reply(SUCCEEDED, address, port))]

    def failed(self, code: int, reason: str) -> List[Event]:
        """
        The tunnel cannot be had: reply C{code} and close.
        """
        if self._state != _CONNECTING:
            raise RuntimeError("no connection is being opened")
        return self._close([reply(code)], REPLY_NAMES.get(code, "general_failure"), reason)

    # Parsing

    def _advance(self) -> List[Event]:
        if self._state == _GREETING:
            return self._greeting()
        if self._state == _AUTHENTICATING:
            return self._credentials()
        if self._state == _REQUEST:
            return self._request()
        return []

    def _close(self, replies: List[bytes], result: str, reason: str) -> List[Event]:
        self._state = _CLOSED
        self._buffer = b""
        return [Send(data) for data in replies] + [Close(result, reason)]

    def _greeting(self) -> List[Event]:
        data = self._buffer
        if not data:
            return []
        if data[0] == 0x04:
            return self._close([SOCKS4_REJECTED], "protocol_error", "SOCKS4 is not supported, only SOCKS5")
        if data[0] != VERSION:
            return self._close([], "protocol_error", f"not a SOCKS5 greeting (first byte 0x{data[0]:02x})")
        if len(data) < 2 or len(data) < 2 + data[1]:
            return []
        offered = set(data[2:2 + data[1]])
        self._buffer = data[2 + data[1]:]
        chosen = [method for method in (USERNAME_PASSWORD, NO_AUTHENTICATION)
                  if method in offered and method in self.methods]
        if not chosen:
            return self._close([bytes((VERSION, NO_ACCEPTABLE_METHODS))], "no_acceptable_method",
                               "no authentication method offered is acceptable")
        selected = bytes((VERSION, chosen[0]))
        self._state = _AUTHENTICATING if chosen[0] == USERNAME_PASSWORD else _REQUEST
        return [Send(selected)] + self._advance()

    def _credentials(self) -> List[Event]:
        data = self._buffer
        if not data:
            return []
        failure = bytes((AUTH_VERSION, 0x01))
        if data[0] != AUTH_VERSION:
            return self._close([failure], "protocol_error",
                               f"not a username/password request (version 0x{data[0]:02x})")
        if len(data) < 2 or len(data) < 3 + data[1]:
            return []
        userEnd = 2 + data[1]
        if len(data) < userEnd + 1 + data[userEnd]:
            return []
        passwordEnd = userEnd + 1 + data[userEnd]
        rawUser, rawPassword = data[2:userEnd], data[userEnd + 1:passwordEnd]
        self._buffer = data[passwordEnd:]
        if not rawUser or not rawPassword:
            return self._close([failure], "auth_failed", "empty user name or password")
        try:
            user, password = rawUser.decode("utf-8"), rawPassword.decode("utf-8")
        except UnicodeDecodeError:
            return self._close([failure], "auth_failed", "user name or password is not UTF-8")
        self._state = _CHECKING
        return [Authenticate(user, password)]

    def _request(self) -> List[Event]:
        data = self._buffer
        if len(data) < 4:
            if data and data[0] != VERSION:
                return self._refuse(GENERAL_FAILURE, "protocol_error",
                                    f"not a SOCKS5 request (version 0x{data[0]:02x})")
            return []
        version, command, reserved, kind = data[:4]
        if version != VERSION or reserved != 0:
            return self._refuse(GENERAL_FAILURE, "protocol_error", "malformed SOCKS5 request")
        if command != CONNECT:
            name = {BIND: "BIND", UDP_ASSOCIATE: "UDP ASSOCIATE"}.get(command, f"command 0x{command:02x}")
            return self._refuse(COMMAND_NOT_SUPPORTED, "command_not_supported",
                                f"{name} is not supported, only CONNECT")
        if kind == IPV4:
            end = 4 + 4
        elif kind == IPV6:
            end = 4 + 16
        elif kind == DOMAIN:
            if len(data) < 5:
                return []
            end = 5 + data[4]
        else:
            return self._refuse(ADDRESS_TYPE_NOT_SUPPORTED, "address_type_not_supported",
                                f"address type 0x{kind:02x} is not supported")
        if len(data) < end + 2:
            return []
        host = self._host(kind, data[4:end])
        port = int.from_bytes(data[end:end + 2], "big")
        if host is None:
            return self._refuse(GENERAL_FAILURE, "protocol_error", "the destination is not a host name")
        self._buffer = data[end + 2:]
        self._state = _CONNECTING
        return [Connect(host, port)]

    @staticmethod
    def _host(kind: int, raw: bytes) -> Optional[str]:
        if kind == IPV4:
            return str(ipaddress.IPv4Address(raw))
        if kind == IPV6:
            return str(ipaddress.IPv6Address(raw))
        name = raw[1:]
        return name.decode("ascii").lower() if _HOSTNAME.match(name) else None

    def _refuse(self, code: int, result: str, reason: str) -> List[Event]:
        return self._close([reply(code)], result, reason)


def reply(code: int, address: str = "0.0.0.0", port: int = 0) -> bytes:
    """
    A reply to a request: C{code}, and the proxy's end of the tunnel (the
    bound address and port) when it opened.
    """
    parsed = ipaddress.ip_address(address)
    kind = IPV4 if parsed.version == 4 else IPV6
    return bytes((VERSION, code, 0x00, kind)) + parsed.packed + port.to_bytes(2, "big")
