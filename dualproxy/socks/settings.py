"""
The C{[socks]} table: who may use the SOCKS proxy and where it may take
them; parsed without I/O, its password file checked before start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .. import prestart
from ..settings import tables, values
from ..settings.model import Config, Network, RateLimitSettings
from ..settings.values import ConfigError

_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*\Z", re.ASCII)

#: Ports a tunnel may go to unless C{socks.ports} says otherwise: the web's.
DEFAULT_PORTS = ((80, 80), (443, 443))


@dataclass(frozen=True)
class SocksSettings:
    """
    Who may use the SOCKS proxy (loopback only by default: never an open
    proxy), where they may go (no private destinations, ports 80 and 443
    by default) and whether they log in.

    @ivar ports: the destination ports allowed, as inclusive ranges.
    """

    allow_clients: Tuple[Network, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    allow_destinations: Tuple[Network, ...] = ()
    deny_destinations: Tuple[str, ...] = ()
    ports: Tuple[Tuple[int, int], ...] = DEFAULT_PORTS
    auth_file: Optional[str] = None
    rate_limit: Optional[RateLimitSettings] = None

    def allowsPort(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.ports)


def parseSocks(table: Mapping[str, Any], base: str) -> SocksSettings:
    """
    @raise ConfigError: naming the first C{socks.} key that is wrong.
    """
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "allow_clients": values.arrayOf(values.network),
        "allow_destinations": values.arrayOf(values.network),
        "deny_destinations": values.arrayOf(values.destination),
        "ports": _ports,
        "auth_file": lambda key, value: values.path(key, value, base),
        "rate_limit": lambda key, value: tables.rateLimit(key, value, "socks"),
    }
    settings = SocksSettings(**values.parsed(table, "socks.", parsers))
    limit = settings.rate_limit
    if limit is not None and limit.key not in ("address", "user"):
        raise ConfigError("socks.rate_limit.key", f'{limit.key!r}: SOCKS has no headers; use "address" or "user"')
    if limit is not None and limit.key == "user" and settings.auth_file is None:
        raise ConfigError("socks.rate_limit.key", '"user" needs socks.auth_file (a login)')
    return settings


def checkSocks(settings: SocksSettings, config: Config) -> None:
    """
    The pre-start checks: the password file loads and, when socks is the
    mode run, nothing in the shared tables that only HTTP can serve.
    """
    if settings.auth_file is not None:
        prestart.passwordFile("socks.auth_file", settings.auth_file)
    if config.mode != "socks":
        return
    if config.tls.listen:
        raise ConfigError("tls.listen", "TLS listeners serve HTTP; socks mode has none (remove tls.listen)")
    if config.filters:
        raise ConfigError("filters", "request filters act on HTTP requests; socks mode relays none")


def _ports(key: str, value: Any) -> Tuple[Tuple[int, int], ...]:
    """
    An array of ports (443) and ranges ("1024-65535"); not empty, which
    would refuse every tunnel.
    """
    ranges = values.arrayOf(_portRange)(key, value)
    if not ranges:
        raise ConfigError(key, 'must not be empty (every tunnel would be refused); "1-65535" allows any port')
    return ranges


def _portRange(key: str, value: Any) -> Tuple[int, int]:
    if not isinstance(value, str):
        port = values.port(key, value)
        return port, port
    match = _RANGE.match(value)
    if match is None:
        raise ConfigError(key, f'{value!r} is not a port or a range of ports ("1024-65535")')
    first, last = values.port(key, int(match.group(1))), values.port(key, int(match.group(2)))
    if first > last:
        raise ConfigError(key, f"{value!r}: the range is empty")
    return first, last
