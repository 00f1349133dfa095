"""
The PROXY protocol (HAProxy's, versions 1 and 2): the header a layer-4 load
balancer writes before a connection's first byte to say which client it
relays, since the connection itself comes from the balancer.

Pure functions on bytes, no I/O: L{dualproxy.server.proxied} reads headers
on client listeners with L{parse}, reverse mode writes them to backends
with L{header} and L{local}.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Optional, Tuple, Union

#: The longest v1 header, CRLF included (the specification's bound).
V1_MAX = 107

#: What begins every v2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

#: The most bytes a v2 header may declare after its fixed 16: addresses and
#: TLVs; load balancers send a few dozen, the format allows 65535.
V2_MAX_LENGTH = 4096

#: An IP address as text and a port.
Address = Tuple[str, int]

_IP = Union[IPv4Address, IPv6Address]

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM = 0x1


class ProxyHeaderError(ValueError):
    """
    The bytes are not a valid PROXY header; C{str()} says why, in one line.
    """


@dataclass(frozen=True)
class ProxyHeader:
    """
    A parsed header.  No C{source} (a v2 LOCAL command, a v1 UNKNOWN, an
    unspecified or UNIX family): the balancer speaks for itself, as a
    health check does, and the connection's own addresses stand.
    """

    version: int
    source: Optional[Address] = None
    destination: Optional[Address] = None


def parse(data: bytes) -> Optional[Tuple[ProxyHeader, int]]:
    """
    The header at the start of C{data} and how many bytes it took, or None
    while more bytes are needed; never more than L{V1_MAX} or 16 +
    L{V2_MAX_LENGTH} of them, so a caller buffers a bounded amount.

    @raise ProxyHeaderError: C{data} does not begin with a valid header.
    """
    if V2_SIGNATURE.startswith(data[:len(V2_SIGNATURE)]):
        return _parseV2(data) if len(data) >= 16 else None
    if b"PROXY ".startswith(data[:6]):
        return _parseV1(data)
    raise ProxyHeaderError("the connection does not begin with a PROXY header")


def _parseV1(data: bytes) -> Optional[Tuple[ProxyHeader, int]]:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 header without CRLF in its first {V1_MAX} bytes")
        return None
    fields = data[:end].split(b" ")
    if fields[0] != b"PROXY" or len(fields) < 2:
        raise ProxyHeaderError("malformed PROXY v1 header")
    if fields[1] == b"UNKNOWN":
        return ProxyHeader(1), end + 2
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1 header is not PROXY TCP4|TCP6|UNKNOWN with two addresses and ports")
    family = 4 if fields[1] == b"TCP4" else 6
    source = (_textAddress(fields[2], family), _textPort(fields[4]))
    destination = (_textAddress(fields[3], family), _textPort(fields[5]))
    return ProxyHeader(1, source, destination), end + 2


def _textAddress(field: bytes, family: int) -> str:
    try:
        address = ip_address(field.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        address = None
    if address is None or address.version != family or "%" in str(address):
        raise ProxyHeaderError(f"PROXY v1 header: {field[:45]!r} is not an IPv{family} address")
    return str(address)


def _textPort(field: bytes) -> int:
    if not (field.isdigit() and len(field) <= 5 and (field == b"0" or not field.startswith(b"0"))
            and int(field) <= 65535):
        raise ProxyHeaderError(f"PROXY v1 header: {field[:8]!r} is not a port")
    return int(field)


def _parseV2(data: bytes) -> Optional[Tuple[ProxyHeader, int]]:
    versionCommand, family, length = struct.unpack_from("!BBH", data, 12)
    if versionCommand >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 signature with version {versionCommand >> 4}")
    command = versionCommand & 0xF
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderError(f"PROXY v2 header with unknown command {command}")
    if length > V2_MAX_LENGTH:
        raise ProxyHeaderError(f"PROXY v2 header of {length} bytes, over the {V2_MAX_LENGTH} accepted")
    end = 16 + length
    if len(data) < end:
        return None
    addressFamily, transport = family >> 4, family & 0xF
    if command == _V2_LOCAL or addressFamily in (_AF_UNSPEC, _AF_UNIX):
        # Addresses and TLVs, if any, are skipped.
        return ProxyHeader(2), end
    if addressFamily not in (_AF_INET, _AF_INET6) or transport != _STREAM:
        raise ProxyHeaderError(f"PROXY v2 header for family/protocol 0x{family:02x}, not TCP over IPv4 or IPv6")
    size = 4 if addressFamily == _AF_INET else 16
    if length < 2 * size + 4:
        raise ProxyHeaderError(f"PROXY v2 header of {length} bytes, too short for its addresses")
    source = ip_address(data[16:16 + size])
    destination = ip_address(data[16 + size:16 + 2 * size])
    sourcePort, destinationPort = struct.unpack_from("!HH", data, 16 + 2 * size)
    return ProxyHeader(2, (str(source), sourcePort), (str(destination), destinationPort)), end


# Writing


def header(version: int, source: Optional[Address], destination: Optional[Address]) -> bytes:
    """
    The header of C{version} (1 or 2) for a connection relayed from
    C{source} to C{destination}; either None (a client without an IP
    address) makes it a v1 UNKNOWN or a v2 PROXY of unspecified family.
    """
    pair = _pair(source, destination) if source is not None and destination is not None else None
    if version == 1:
        if pair is None:
            return b"PROXY UNKNOWN\r\n"
        (sourceIP, sourcePort), (destinationIP, destinationPort) = pair
        family = b"TCP4" if sourceIP.version == 4 else b"TCP6"
        return b"PROXY %s %s %s %d %d\r\n" % (family, str(sourceIP).encode("ascii"),
                                               str(destinationIP).encode("ascii"), sourcePort, destinationPort)
    if pair is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20 | _V2_PROXY, 0, 0)
    (sourceIP, sourcePort), (destinationIP, destinationPort) = pair
    addresses = sourceIP.packed + destinationIP.packed + struct.pack("!HH", sourcePort, destinationPort)
    family = _AF_INET if sourceIP.version == 4 else _AF_INET6
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | _V2_PROXY, family << 4 | _STREAM, len(addresses)) + addresses


def local(version: int) -> bytes:
    """
    The header for a connection the proxy makes on its own behalf (a
    health check): v1 UNKNOWN, v2 LOCAL.
    """
    if version == 1:
        return b"PROXY UNKNOWN\r\n"
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | _V2_LOCAL, 0, 0)


def _pair(source: Address, destination: Address) -> Tuple[Tuple[_IP, int], Tuple[_IP, int]]:
    """
    Both addresses in one family, as a header needs: IPv4 where both can
    be (a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d),
    else IPv6, an IPv4 one mapped.  Scope ids are dropped.
    """
    first, second = _plain(source[0]), _plain(destination[0])
    if first.version != second.version:
        first, second = (_mapped(address) for address in (first, second))
    return (first, source[1]), (second, destination[1])


def _plain(text: str) -> _IP:
    address = ip_address(text.split("%", 1)[0])
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _mapped(address: _IP) -> IPv6Address:
    return address if address.version == 6 else IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)
