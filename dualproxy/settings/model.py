"""
The validated settings: frozen values a running proxy is built from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from types import MappingProxyType
from typing import Any, Mapping, Optional, Tuple, Union


Network = Union[IPv4Network, IPv6Network]


@dataclass(frozen=True)
class Timeouts:
    """
    How long, in seconds, each wait may last before the proxy gives up.
    """

    connect: float = 10.0
    client_idle: float = 60.0
    upstream_idle: float = 60.0
    upstream_read: float = 60.0
    drain: float = 30.0
    client_header: float = 20.0
    client_body: float = 60.0
    client_write: float = 60.0
    #: For a PROXY header from a C{proxy_protocol} peer to arrive.
    proxy_header: float = 5.0


@dataclass(frozen=True)
class LimitSettings:
    """
    What one client may ask of the proxy: the size of a request's parts
    (414, 431, 413 beyond them) and how many connections (refused beyond).
    Zero means no limit for C{max_body} and the connection counts.
    """

    max_request_line: int = 8192
    max_header_bytes: int = 65536
    max_header_fields: int = 100
    max_body: int = 0
    max_connections: int = 4096
    max_connections_per_client: int = 0
    max_response_header_bytes: int = 65536


@dataclass(frozen=True)
class UpstreamSettings:
    """
    Limits on the connections the proxy opens to origins.
    """

    max_idle_per_host: int = 32


@dataclass(frozen=True)
class ParentProxy:
    """
    A proxy requests are relayed through instead of going direct; C{tls}
    for an C{https://} one (TLS to the parent itself).
    """

    host: str
    port: int
    authorization: Optional[bytes] = None
    tls: bool = False


@dataclass(frozen=True)
class ParentRule:
    """
    Where requests for some destinations go: through C{parents}, or direct
    when C{direct}.  C{destinations} are host names (C{"example.com"}),
    domains (C{".example.com"}: it and every name below; C{"*.example.com"}:
    only the names below) and IP networks (for IP-literal destinations).
    """

    destinations: Tuple[str, ...]
    parents: Tuple[ParentProxy, ...] = ()
    direct: bool = False


@dataclass(frozen=True)
class RateLimitSettings:
    """
    A token bucket per client: C{rate} requests per second on average, up
    to C{burst} at once (C{None}: the limiter's default), keyed by
    C{"address"}, C{"header:NAME"} or C{"user"}.  C{options} are the
    table's other keys, for the C{limiter} plugin to check.
    """

    rate: float
    burst: Optional[int] = None
    key: str = "address"
    limiter: str = "memory"
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class InterceptSettings:
    """
    TLS interception of CONNECT tunnels with a local CA: which tunnels are
    opened (C{clients}, empty for every allowed client; C{ports}) and which
    pass untouched (C{bypass}).
    """

    ca_cert: str
    ca_key: str
    bypass: Tuple[str, ...] = ()
    clients: Tuple[Network, ...] = ()
    ports: Tuple[int, ...] = (443,)
    http2: bool = True
    certificate_cache: int = 1024


@dataclass(frozen=True)
class ForwardSettings:
    """
    Who may use the forward proxy, where they may go and what is revealed.
    """

    allow_clients: Tuple[Network, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    allow_destinations: Tuple[Network, ...] = ()
    deny_destinations: Tuple[str, ...] = ()
    connect_ports: Tuple[int, ...] = (443,)
    parent: Optional[ParentProxy] = None
    parents: Tuple[ParentProxy, ...] = ()
    parent_rules: Tuple[ParentRule, ...] = ()
    parent_selection: str = "first"
    parent_retry: float = 30.0
    parent_ca: Optional[str] = None
    via: str = "dualproxy"
    x_forwarded_for: Tuple[Network, ...] = ()
    anonymous: bool = False
    anonymous_headers: Tuple[str, ...] = (
        "From",
        "Referer",
        "User-Agent",
        "Cookie",
        "X-Forwarded-For",
        "Forwarded",
        "X-Real-IP",
        "Client-IP",
    )
    auth_file: Optional[str] = None
    auth_realm: str = "dualproxy"
    routes: Tuple["RouteSettings", ...] = ()
    tls_ca: Optional[str] = None
    cache: bool = False
    rate_limit: Optional[RateLimitSettings] = None
    intercept: Optional[InterceptSettings] = None


@dataclass(frozen=True)
class Backend:
    """
    One server behind a reverse-mode pool.
    """

    url: str
    scheme: str
    host: str
    port: int
    weight: int = 1


@dataclass(frozen=True)
class HealthSettings:
    """
    Active checks (C{path} is None: none) and passive marking of a pool's
    backends.
    """

    path: Optional[str] = None
    interval: float = 5.0
    timeout: float = 2.0
    expect_status: Tuple[int, ...] = (200,)
    rise: int = 2
    fall: int = 3
    passive_failures: int = 3
    cool_off: float = 10.0


@dataclass(frozen=True)
class PoolSettings:
    """
    Backends balanced as one, with how to choose and check them.
    """

    name: str
    backends: Tuple[Backend, ...]
    balance: str = "round-robin"
    balance_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    host: Optional[str] = None
    retries: int = 2
    health: HealthSettings = field(default_factory=HealthSettings)
    tls_verify: bool = True
    tls_ca: Optional[str] = None
    tls_name: Optional[str] = None
    tls_client_cert: Optional[CertificateFiles] = None
    cache: bool = False
    rate_limit: Optional[RateLimitSettings] = None
    #: The PROXY protocol version (1 or 2) written first on each connection
    #: to a backend, None for none.
    proxy_protocol: Optional[int] = None


@dataclass(frozen=True)
class RouteSettings:
    """
    Where requests for a host (exact, C{*.suffix} or C{*} for any) and path
    prefix go: exactly one of a pool, a static directory or a redirect.
    """

    host: str = "*"
    prefix: str = "/"
    strip_prefix: bool = False
    pool: Optional[str] = None
    static: Optional[str] = None
    listing: bool = False
    redirect: Optional[str] = None
    redirect_status: int = 302
    add_headers: Tuple[Tuple[str, str], ...] = ()
    remove_headers: Tuple[str, ...] = ()
    client_subjects: Tuple[str, ...] = ()
    cache: Optional[bool] = None
    rate_limit: Optional[RateLimitSettings] = None
    #: The Upgrade protocols (lower case) passed to the pool; h2c never is.
    upgrades: Tuple[str, ...] = ("websocket",)


@dataclass(frozen=True)
class DnsSettings:
    """
    How backends named by host name are re-resolved while running: with
    which servers (C{"host:port"}; none: the system's) and how often, as
    the records' TTL within C{min_ttl} and C{max_ttl} seconds.
    """

    servers: Tuple[str, ...] = ()
    min_ttl: float = 5.0
    max_ttl: float = 300.0


@dataclass(frozen=True)
class ReverseSettings:
    """
    The reverse proxy: its pools, its routes and the forwarding headers it
    adds for backends.
    """

    pools: Tuple[PoolSettings, ...] = ()
    routes: Tuple[RouteSettings, ...] = ()
    trusted_proxies: Tuple[Network, ...] = ()
    x_forwarded_for: bool = True
    x_forwarded_proto: bool = True
    x_forwarded_host: bool = True
    forwarded: bool = False
    dns: DnsSettings = field(default_factory=DnsSettings)


@dataclass(frozen=True)
class CertificateFiles:
    """
    A certificate chain and its key, as PEM files.
    """

    cert: str
    key: str


@dataclass(frozen=True)
class AcmeSettings:
    """
    Certificates obtained and renewed over ACME for the TLS listeners.
    C{domains} empty: the hosts of the reverse routes.  C{on_demand}: a
    handshake for a name C{domains} (or a route) covers, that has no
    certificate yet, waits while one is ordered; at most
    C{on_demand_limit} names are ordered so.
    """

    directory: str
    storage: str
    contact: Tuple[str, ...] = ()
    domains: Tuple[str, ...] = ()
    ca: Optional[str] = None
    challenge: str = "http-01"
    on_demand: bool = False
    on_demand_limit: int = 100


@dataclass(frozen=True)
class TLSSettings:
    """
    TLS termination: the listeners that speak it and what they present.
    """

    listen: Tuple[str, ...] = ()
    certificates: Tuple[CertificateFiles, ...] = ()
    min_version: str = "TLSv1.2"
    ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20"
    http2: bool = True
    client_ca: Optional[str] = None
    client_certificate_optional: bool = False
    client_subject_header: str = "X-Client-Subject"
    hsts: str = ""
    redirect_http: bool = False
    acme: Optional[AcmeSettings] = None


@dataclass(frozen=True)
class CacheSettings:
    """
    The HTTP cache both modes share (switched on by C{forward.cache} or a
    reverse pool's or route's C{cache}): its store and how it behaves.
    C{store_options} are the table's other keys, for the store to check.
    """

    store: str = "memory"
    store_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    name: str = "dualproxy"
    lock_timeout: float = 5.0
    purge_from: Tuple[Network, ...] = ()


@dataclass(frozen=True)
class RedisSettings:
    """
    The Redis server instances share state through (cache, rate limits):
    off unless the config has a C{[redis]} table.
    """

    endpoint: str = "tcp:127.0.0.1:6379:timeout=2"
    timeout: float = 0.5
    database: int = 0
    username: Optional[str] = None
    password: Optional[str] = None
    prefix: str = "dualproxy:"


@dataclass(frozen=True)
class AdminSettings:
    """
    The admin listener (metrics, status, dashboard, reload): off unless
    the config has an C{[admin]} table.
    """

    listen: str = "tcp:9901:interface=127.0.0.1"
    auth_file: Optional[str] = None
    realm: str = "dualproxy admin"


@dataclass(frozen=True)
class Config:
    """
    Everything dualproxy was told to do, validated.

    @ivar modes: each mode's settings by the mode's name (its top-level
        table), as the mode's C{parseSettings} made them; a mode without one
        gets its table raw and read-only.
    """

    mode: str = "forward"
    listen: Tuple[str, ...] = ()
    access_log: str = "combined"
    access_log_file: Optional[str] = None
    filters: Tuple[str, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    admin: Optional[AdminSettings] = None
    redis: Optional[RedisSettings] = None
    #: The networks (load balancers) whose connections to the client
    #: listeners must begin with a PROXY header; empty: none.
    proxy_protocol: Tuple[Network, ...] = ()
    modes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def forward(self) -> ForwardSettings:
        return self.modes.get("forward", _DEFAULT_FORWARD)

    @property
    def reverse(self) -> ReverseSettings:
        return self.modes.get("reverse", _DEFAULT_REVERSE)


_DEFAULT_FORWARD = ForwardSettings()
_DEFAULT_REVERSE = ReverseSettings()
