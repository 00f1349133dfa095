"""
Who may use the forward proxy and where it may take them.

A forward proxy that can reach its own loopback, the LAN behind it or a
cloud metadata service turns every client into an attacker inside the
network (server-side request forgery), so private destinations are refused
unless the operator re-enables them explicitly.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

Address = Union[IPv4Address, IPv6Address]
Network = Union[IPv4Network, IPv6Network]

PRIVATE_NETWORKS: Tuple[Network, ...] = tuple(
    ip_network(text)
    for text in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",  # link local, including the metadata service at 169.254.169.254
        "0.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
        "::1/128",
        "::/128",
        "fc00::/7",
        "fe80::/10",
    )
)

_CACHE_SIZE = 1024

# Prefixes whose low 32 bits are an IPv4 address that a dual-stack host or
# a translator on the path would deliver to.
_NAT64 = ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix

# The only characters of an IPv4 address in a form inet_aton() accepts
# (decimal, octal, hex, fewer than four parts: "0x7f.1", "2130706433").
_INET_ATON_CHARS = frozenset("0123456789abcdefx.")


def _equivalents(address: Address) -> List[Address]:
    """
    C{address} and the IPv4 addresses it stands for: IPv4-mapped
    (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d)
    and 6to4 (2002:aabb:ccdd::).  A check that saw only the IPv6 form would
    let ::ffff:127.0.0.1 through to the loopback interface.
    """
    if address.version == 4:
        return [address]
    forms = [address]
    value = int(address)
    if address.ipv4_mapped is not None:
        forms.append(address.ipv4_mapped)
    elif value >> 32 == 0:
        forms.append(IPv4Address(value))
    elif address in _NAT64:
        forms.append(IPv4Address(value & 0xFFFFFFFF))
    elif address.sixtofour is not None:
        forms.append(address.sixtofour)
    return forms


def _parseAddress(text: str) -> Optional[Address]:
    try:
        return ip_address(text)
    except ValueError:
        return None


class _NetworkSet:
    """
    Networks split by IP version, so a lookup only scans the ones that can
    match.
    """

    __slots__ = ("_v4", "_v6")

    def __init__(self, networks: Iterable[Network]):
        networks = list(networks)
        self._v4 = tuple(network for network in networks if network.version == 4)
        self._v6 = tuple(network for network in networks if network.version == 6)

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6)

    def contains(self, address: Address) -> bool:
        for network in self._v4 if address.version == 4 else self._v6:
            if address in network:
                return True
        return False

    def containsAny(self, addresses: Iterable[Address]) -> bool:
        return any(self.contains(address) for address in addresses)


_PRIVATE = _NetworkSet(PRIVATE_NETWORKS)


class ClientACL:
    """
    The client networks allowed to use the proxy.
    """

    def __init__(self, networks: Sequence[Network]):
        self._networks = _NetworkSet(networks)
        self._cache: Dict[str, bool] = {}

    def allows(self, host: Optional[str]) -> bool:
        """
        Whether the peer at IP address C{host} may use the proxy.

        C{None} is a peer without an IP address (a UNIX socket): only local
        users can reach such a listener, and file permissions on the socket
        are its access control, so it is allowed.  A string that is not an IP
        address is refused.  A dual-stack listener reports IPv4 peers as
        ::ffff:a.b.c.d; they match the IPv4 networks.
        """
        if host is None:
            return True
        cached = self._cache.get(host)
        if cached is not None:
            return cached
        address = _parseAddress(host)
        if address is None:
            allowed = False
        else:
            forms = [address]
            if address.version == 6 and address.ipv4_mapped is not None:
                forms.append(address.ipv4_mapped)
            allowed = self._networks.containsAny(forms)
        if len(self._cache) >= _CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[host] = allowed
        return allowed


@lru_cache(maxsize=1024)
def _literal(host: str) -> Optional[Address]:
    """
    The IP address C{host} (already lower-cased, without brackets) spells,
    including the legacy IPv4 forms ("0x7f.1", "2130706433") that resolvers
    still accept, or C{None} for a name; remembered for the hosts seen
    most.
    """
    address = _parseAddress(host.replace("%25", "%"))  # RFC 6874 zone ID
    if address is not None:
        return address
    if host and set(host) <= _INET_ATON_CHARS and host[0].isdigit():
        try:
            return IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _normalizeName(name: str) -> str:
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name.endswith("."):
        name = name[:-1]
    return name


def isAddressLiteral(host: str) -> bool:
    """
    Whether a request target's C{host} spells an IP address (in any form a
    resolver accepts) rather than a name: refusing it refuses an address.
    """
    return _literal(_normalizeName(host)) is not None


class Destinations:
    """
    A list of destinations as operators write them: host names, ".domain"
    (the domain and every name below it, as Squid's dstdomain), "*.domain"
    (only the names below it) and IP networks, which match IP-literal hosts
    only.
    """

    def __init__(self, entries: Iterable[str]):
        names = set()
        suffixes = set()
        networks = []
        for entry in entries:
            entry = entry.strip()
            try:
                networks.append(ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                suffixes.add(_normalizeName(entry[2:]))
            elif entry.startswith("."):
                domain = _normalizeName(entry[1:])
                names.add(domain)
                suffixes.add(domain)
            else:
                names.add(_normalizeName(entry))
        self._names: FrozenSet[str] = frozenset(names)
        self._suffixes: FrozenSet[str] = frozenset(suffixes)
        self.networks = _NetworkSet(networks)

    def matchesName(self, name: str) -> bool:
        """
        Whether the normalized host name C{name} (not an address) is listed.
        """
        if name in self._names:
            return True
        if self._suffixes:
            labels = name.split(".")
            for index in range(1, len(labels)):
                if ".".join(labels[index:]) in self._suffixes:
                    return True
        return False

    def matches(self, host: str) -> bool:
        """
        Whether a request target's C{host} (a name or an IP literal in any
        form a resolver accepts) is listed.
        """
        name = _normalizeName(host)
        address = _literal(name)
        if address is not None:
            return self.networks.containsAny(_equivalents(address))
        return self.matchesName(name)


class DestinationPolicy:
    """
    Where clients may be taken: a deny list of names, domains and networks,
    private networks refused unless re-allowed, and CONNECT ports.
    """

    def __init__(
        self,
        deny: Sequence[str],
        allowNetworks: Sequence[Network],
        connectPorts: Sequence[int],
    ):
        self._denied = Destinations(deny)
        self._allow = _NetworkSet(allowNetworks)
        self._ports: FrozenSet[int] = frozenset(connectPorts)

    def checkHost(self, host: str) -> Optional[str]:
        """
        Why the request target's host may not be reached, before resolving
        it, or C{None}.

        Names compare case-insensitively and without a trailing dot;
        ".example.com" denies example.com and every name below it, as
        Squid's dstdomain does.  IP literals get the address checks.
        """
        name = _normalizeName(host)
        if not name:
            return "destination host is empty"
        address = _literal(name)
        if address is not None:
            return self._checkAddress(name, address)
        if self._denied.matchesName(name):
            return f"destination {name} is denied"
        return None

    def checkAddress(self, address: str) -> Optional[str]:
        """
        Why the resolved IP C{address} may not be connected to, or C{None}.

        Checking the address actually connected to, not only the name,
        defeats names that resolve to private addresses (DNS rebinding).
        """
        parsed = _parseAddress(address)
        if parsed is None:
            return f"destination {address} is not an IP address"
        return self._checkAddress(address, parsed)

    def _checkAddress(self, text: str, address: Address) -> Optional[str]:
        forms = _equivalents(address)
        if self._denied.networks and self._denied.networks.containsAny(forms):
            return f"destination {text} is denied"
        if _PRIVATE.containsAny(forms) and not self._allow.containsAny(forms):
            return f"destination {text} is a private address"
        return None

    def connectAllowed(self, port: int) -> bool:
        """
        Whether CONNECT may open a tunnel to C{port}; limiting it keeps the
        proxy from relaying arbitrary protocols (mail, SSH) for clients.
        """
        return port in self._ports
