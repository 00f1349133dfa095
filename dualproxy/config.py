"""
Configuration: a TOML file (or the command line merged into its dict) turned
into frozen settings, rejecting every mistake before anything starts.

Each error names the dotted key it is about, so that a typo stops start-up
with one line the user can act on instead of a proxy that silently ignores it.
"""

from __future__ import annotations

import base64
import math
import os
import re
import sys
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from types import MappingProxyType
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

Network = Union[IPv4Network, IPv6Network]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HOSTNAME = re.compile(r"\.?([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\Z")
_REALM = re.compile(r"[ !#-\[\]-~]+\Z")


class ConfigError(Exception):
    """
    A setting that cannot be used; C{str()} is one line, C{"<key>: <problem>"}.
    """

    def __init__(self, key: str, problem: str):
        super().__init__(key, problem)
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


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
    A proxy every request is relayed through instead of going direct.
    """

    host: str
    port: int
    authorization: Optional[bytes] = None


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
class ForwardSettings:
    """
    Who may use the forward proxy, where they may go and what is revealed.
    """

    allow_clients: Tuple[Network, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    allow_destinations: Tuple[Network, ...] = ()
    deny_destinations: Tuple[str, ...] = ()
    connect_ports: Tuple[int, ...] = (443,)
    parent: Optional[ParentProxy] = None
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

    @ivar extra: the raw tables named after a mode that is not built in,
        for that mode to interpret.
    """

    mode: str = "forward"
    listen: Tuple[str, ...] = ()
    access_log: str = "combined"
    filters: Tuple[str, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    reverse: ReverseSettings = field(default_factory=ReverseSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    admin: Optional[AdminSettings] = None
    extra: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))


ACCESS_LOG_FORMATS = ("combined", "json", "off")


def loadFile(path: str) -> Dict[str, Any]:
    """
    Read a TOML file into a dict for L{fromDict}.

    @raise ConfigError: keyed by C{path} if the file cannot be read or is
        not valid TOML.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(path, f"cannot read the file ({e.strerror or e})")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(path, f"not valid TOML: {_oneLine(str(e))}")


def fromDict(data: Mapping[str, Any], modes: Optional[Collection[str]] = None, base: str = ".") -> Config:
    """
    Validate a config dict (as L{loadFile} returns it) into a L{Config}.

    @param modes: the names of the known modes; a top-level table named
        after one that is not built in is kept raw in L{Config.extra}.
    @param base: the directory relative paths in the file are relative to:
        the file's own, so an example works from wherever it is started.
    @raise ConfigError: naming the first key that is wrong.
    """
    builtin = ("mode", "listen", "access_log", "filters", "timeouts", "upstream", "forward", "reverse", "tls",
               "cache", "admin", "limits")
    extraNames = sorted(set(modes or ()) - set(builtin))
    _checkKeys(data, "", list(builtin) + extraNames)
    extra = {}
    for name in extraNames:
        if name in data:
            extra[name] = MappingProxyType(dict(_table(name, data[name])))
    kwargs: Dict[str, Any] = {}
    if "mode" in data:
        kwargs["mode"] = _nonEmptyString("mode", data["mode"])
    if "listen" in data:
        kwargs["listen"] = _arrayOf(_endpoint)("listen", data["listen"])
    if "access_log" in data:
        value = _string("access_log", data["access_log"])
        if value not in ACCESS_LOG_FORMATS:
            raise ConfigError("access_log", f"{value!r} is not one of {', '.join(ACCESS_LOG_FORMATS)}")
        kwargs["access_log"] = value
    if "filters" in data:
        kwargs["filters"] = _arrayOf(_nonEmptyString)("filters", data["filters"])
    if "timeouts" in data:
        kwargs["timeouts"] = _timeouts(_table("timeouts", data["timeouts"]))
    if "upstream" in data:
        kwargs["upstream"] = _upstream(_table("upstream", data["upstream"]))
    if "forward" in data:
        kwargs["forward"] = _forward(_table("forward", data["forward"]), base)
    if "reverse" in data:
        kwargs["reverse"] = _reverse(_table("reverse", data["reverse"]), base)
    if "tls" in data:
        kwargs["tls"] = _tls(_table("tls", data["tls"]), base)
        _checkCoverage(kwargs["tls"], kwargs.get("reverse"))
    if "cache" in data:
        kwargs["cache"] = _cache(_table("cache", data["cache"]), base)
    if "admin" in data:
        kwargs["admin"] = _admin(_table("admin", data["admin"]), base)
    if "limits" in data:
        kwargs["limits"] = _limits(_table("limits", data["limits"]))
    return Config(extra=MappingProxyType(extra), **kwargs)


def _timeouts(table: Mapping[str, Any]) -> Timeouts:
    names = [item.name for item in fields(Timeouts)]
    _checkKeys(table, "timeouts.", names)
    return Timeouts(**{name: _seconds(f"timeouts.{name}", table[name]) for name in names if name in table})


def _upstream(table: Mapping[str, Any]) -> UpstreamSettings:
    _checkKeys(table, "upstream.", ("max_idle_per_host",))
    kwargs = {}
    if "max_idle_per_host" in table:
        value = _integer("upstream.max_idle_per_host", table["max_idle_per_host"])
        if value < 0:
            raise ConfigError("upstream.max_idle_per_host", f"must be 0 or more, got {value}")
        kwargs["max_idle_per_host"] = value
    return UpstreamSettings(**kwargs)


def _forward(table: Mapping[str, Any], base: str) -> ForwardSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "allow_clients": _arrayOf(_network),
        "allow_destinations": _arrayOf(_network),
        "deny_destinations": _arrayOf(_destination),
        "connect_ports": _arrayOf(_port),
        "parent": _parent,
        "via": _pseudonym,
        "x_forwarded_for": _arrayOf(_network),
        "anonymous": _boolean,
        "anonymous_headers": _arrayOf(_fieldName),
        "auth_file": _passwordFile,
        "auth_realm": _realm,
        # The proxy's own pages (a PAC file, a redirect): static or redirect
        # routes for requests in origin form; there are no pools here.
        "routes": _arrayOf(lambda key, value: _route(key, _table(key, value), (), base)),
        "tls_ca": lambda key, value: _file(key, value, base),
        "cache": _boolean,
        "rate_limit": lambda key, value: _rateLimit(key, value, "forward"),
    }
    _checkKeys(table, "forward.", parsers)
    settings = ForwardSettings(
        **{name: parse(f"forward.{name}", table[name]) for name, parse in parsers.items() if name in table}
    )
    if settings.rate_limit is not None and settings.rate_limit.key == "user" and settings.auth_file is None:
        raise ConfigError("forward.rate_limit.key", '"user" needs forward.auth_file (proxy authentication)')
    return settings


def _limits(table: Mapping[str, Any]) -> LimitSettings:
    names = [item.name for item in fields(LimitSettings)]
    _checkKeys(table, "limits.", names)
    settings = {}
    for name in names:
        if name in table:
            value = _integer(f"limits.{name}", table[name])
            least = 0 if name in ("max_body", "max_connections", "max_connections_per_client") else 1
            if value < least:
                raise ConfigError(f"limits.{name}", f"must be {least} or more, got {value}")
            settings[name] = value
    return LimitSettings(**settings)


def _admin(table: Mapping[str, Any], base: str) -> AdminSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "listen": _endpoint,
        "auth_file": lambda key, value: _passwordFile(key, _file(key, value, base)),
        "realm": _realm,
    }
    _checkKeys(table, "admin.", parsers)
    return AdminSettings(**{name: parse(f"admin.{name}", table[name]) for name, parse in parsers.items()
                            if name in table})


def _cache(table: Mapping[str, Any], base: str) -> CacheSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "store": _nonEmptyString,
        "name": _nonEmptyString,
        "lock_timeout": _seconds,
        "purge_from": _arrayOf(_network),
    }
    settings = {name: parse(f"cache.{name}", table[name]) for name, parse in parsers.items() if name in table}
    options = {name: value for name, value in table.items() if name not in parsers}
    if isinstance(options.get("path"), str):
        options["path"] = os.path.join(base, os.path.expanduser(options["path"]))
    return CacheSettings(store_options=MappingProxyType(options), **settings)


def _tls(table: Mapping[str, Any], base: str) -> TLSSettings:
    from .tls import TLSConfigError, loadPair

    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "listen": _arrayOf(_endpoint),
        "certificates": _arrayOf(lambda key, value: _certificate(key, value, base)),
        "min_version": _string,
        "ciphers": _nonEmptyString,
        "http2": _boolean,
        "client_ca": lambda key, value: _file(key, value, base),
        "client_certificate_optional": _boolean,
        "client_subject_header": _fieldName,
        "hsts": _headerValue,
        "redirect_http": _boolean,
    }
    _checkKeys(table, "tls.", parsers)
    settings = TLSSettings(
        **{name: parse(f"tls.{name}", table[name]) for name, parse in parsers.items() if name in table}
    )
    if settings.min_version not in ("TLSv1.2", "TLSv1.3"):
        raise ConfigError("tls.min_version", f"{settings.min_version!r} is not TLSv1.2 or TLSv1.3")
    try:
        from OpenSSL import SSL

        SSL.Context(SSL.TLS_SERVER_METHOD).set_cipher_list(settings.ciphers.encode("ascii"))
    except (SSL.Error, UnicodeEncodeError):
        raise ConfigError("tls.ciphers", f"no usable cipher in {settings.ciphers!r}")
    if settings.listen and not settings.certificates:
        raise ConfigError("tls.certificates", "TLS listeners need at least one certificate")
    for index, files in enumerate(settings.certificates):
        try:
            loadPair(files.cert, files.key)
        except TLSConfigError as e:
            raise ConfigError(f"tls.certificates[{index}]", str(e))
    return settings


def _certificate(key: str, value: Any, base: str) -> CertificateFiles:
    table = _table(key, value)
    _checkKeys(table, key + ".", ("cert", "key"))
    for name in ("cert", "key"):
        if name not in table:
            raise ConfigError(f"{key}.{name}", "missing (a PEM file)")
    return CertificateFiles(_file(f"{key}.cert", table["cert"], base), _file(f"{key}.key", table["key"], base))


def _file(key: str, value: Any, base: str) -> str:
    path = os.path.join(base, _nonEmptyString(key, value))
    if not os.path.isfile(path):
        raise ConfigError(key, f"{value!r} is not a file")
    return os.path.abspath(path)


def _checkCoverage(tls: TLSSettings, reverse: Optional[ReverseSettings]) -> None:
    """
    Every host routed to over TLS must be covered by a certificate, or its
    clients would get the default certificate and a name mismatch.
    """
    if not tls.listen or reverse is None:
        return
    from .tls import loadPair

    pairs = [loadPair(files.cert, files.key) for files in tls.certificates]
    for index, route in enumerate(reverse.routes):
        if route.host == "*":
            continue
        name = "wildcard." + route.host[2:] if route.host.startswith("*.") else route.host
        if not any(pair.covers(name) for pair in pairs):
            raise ConfigError(f"reverse.routes[{index}].host",
                              f"no certificate in tls.certificates covers {route.host!r}")


def _reverse(table: Mapping[str, Any], base: str) -> ReverseSettings:
    known = ("pools", "routes", "trusted_proxies", "x_forwarded_for", "x_forwarded_proto",
             "x_forwarded_host", "forwarded", "dns")
    _checkKeys(table, "reverse.", known)
    kwargs: Dict[str, Any] = {}
    pools = _table("reverse.pools", table.get("pools", {}))
    kwargs["pools"] = tuple(_pool(f"reverse.pools.{name}", name, _table(f"reverse.pools.{name}", value), base)
                            for name, value in pools.items())
    names = set(pools)
    kwargs["routes"] = _arrayOf(lambda key, value: _route(key, _table(key, value), names, base))(
        "reverse.routes", table.get("routes", []))
    if "trusted_proxies" in table:
        kwargs["trusted_proxies"] = _arrayOf(_network)("reverse.trusted_proxies", table["trusted_proxies"])
    for flag in known[3:7]:
        if flag in table:
            kwargs[flag] = _boolean(f"reverse.{flag}", table[flag])
    if "dns" in table:
        kwargs["dns"] = _dns(_table("reverse.dns", table["dns"]))
    return ReverseSettings(**kwargs)


def _dns(table: Mapping[str, Any]) -> DnsSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "servers": _arrayOf(_dnsServer),
        "min_ttl": _seconds,
        "max_ttl": _seconds,
    }
    _checkKeys(table, "reverse.dns.", parsers)
    settings = DnsSettings(
        **{name: parse(f"reverse.dns.{name}", table[name]) for name, parse in parsers.items() if name in table}
    )
    if settings.min_ttl > settings.max_ttl:
        key = "reverse.dns.min_ttl" if "min_ttl" in table else "reverse.dns.max_ttl"
        raise ConfigError(key, f"min_ttl ({settings.min_ttl:g}) must not exceed max_ttl ({settings.max_ttl:g})")
    return settings


def _dnsServer(key: str, value: Any) -> str:
    """
    A name server as C{"ip"}, C{"ip:port"} or C{"[ipv6]:port"}, normalised
    to C{"host:port"}: an IP, since a name would need a server to resolve.
    """
    text = _nonEmptyString(key, value).strip()
    usage = "expected an IP address with an optional :port"
    host, port = text, "53"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or rest and not rest.startswith(":"):
            raise ConfigError(key, f"{text!r}: {usage}")
        if rest:
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ip_address(host)
    except ValueError:
        raise ConfigError(key, f"{text!r}: {usage}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ConfigError(key, f"{text!r}: port {port!r} is not in 1-65535")
    return f"[{address}]:{int(port)}" if address.version == 6 else f"{address}:{int(port)}"


def _pool(key: str, name: str, table: Mapping[str, Any], base: str) -> PoolSettings:
    _checkKeys(table, key + ".", ("backends", "balance", "balance_options", "host", "retries", "health",
                                  "tls_verify", "tls_ca", "tls_name", "tls_client_cert", "cache", "rate_limit"))
    if "backends" not in table:
        raise ConfigError(f"{key}.backends", "a pool needs at least one backend")
    backends = _arrayOf(_backend)(f"{key}.backends", table["backends"])
    if not backends:
        raise ConfigError(f"{key}.backends", "a pool needs at least one backend")
    kwargs: Dict[str, Any] = {}
    if "balance" in table:
        kwargs["balance"] = _nonEmptyString(f"{key}.balance", table["balance"])
    if "balance_options" in table:
        kwargs["balance_options"] = MappingProxyType(dict(_table(f"{key}.balance_options", table["balance_options"])))
    if "host" in table:
        kwargs["host"] = _nonEmptyString(f"{key}.host", table["host"])
    if "retries" in table:
        retries = _integer(f"{key}.retries", table["retries"])
        if retries < 0:
            raise ConfigError(f"{key}.retries", f"must be 0 or more, got {retries}")
        kwargs["retries"] = retries
    if "health" in table:
        kwargs["health"] = _health(f"{key}.health", _table(f"{key}.health", table["health"]))
    if "tls_verify" in table:
        kwargs["tls_verify"] = _boolean(f"{key}.tls_verify", table["tls_verify"])
    if "tls_ca" in table:
        kwargs["tls_ca"] = _file(f"{key}.tls_ca", table["tls_ca"], base)
    if "tls_name" in table:
        kwargs["tls_name"] = _nonEmptyString(f"{key}.tls_name", table["tls_name"])
    if "tls_client_cert" in table:
        from .tls import TLSConfigError, loadPair

        files = _certificate(f"{key}.tls_client_cert", table["tls_client_cert"], base)
        try:
            loadPair(files.cert, files.key)
        except TLSConfigError as e:
            raise ConfigError(f"{key}.tls_client_cert", str(e))
        kwargs["tls_client_cert"] = files
    if "cache" in table:
        kwargs["cache"] = _boolean(f"{key}.cache", table["cache"])
    if "rate_limit" in table:
        kwargs["rate_limit"] = _rateLimit(f"{key}.rate_limit", table["rate_limit"], "reverse")
    return PoolSettings(name, backends, **kwargs)


def _backend(key: str, value: Any) -> Backend:
    """
    A backend as a URL string, or a table with C{url} and C{weight}.
    """
    weight = 1
    if isinstance(value, Mapping):
        _checkKeys(value, key + ".", ("url", "weight"))
        if "weight" in value:
            weight = _integer(f"{key}.weight", value["weight"])
            if weight < 1:
                raise ConfigError(f"{key}.weight", f"must be 1 or more, got {weight}")
        key, value = f"{key}.url", value.get("url")
    text = _string(key, value)
    usage = "expected http://host:port or https://host:port"
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as e:
        raise ConfigError(key, f"{text!r}: {_oneLine(str(e))}; {usage}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(key, f"{text!r}: {usage}")
    if url.path not in ("", "/") or url.query or url.fragment or url.username is not None:
        raise ConfigError(key, f"{text!r}: a backend URL has no path, query or credentials; {usage}")
    return Backend(text, url.scheme, url.hostname, port or (443 if url.scheme == "https" else 80), weight)


def _health(key: str, table: Mapping[str, Any]) -> HealthSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "path": _nonEmptyString,
        "interval": _seconds,
        "timeout": _seconds,
        "expect_status": _arrayOf(_status),
        "rise": _positive,
        "fall": _positive,
        "passive_failures": _positive,
        "cool_off": _seconds,
    }
    _checkKeys(table, key + ".", parsers)
    settings = {name: parse(f"{key}.{name}", table[name]) for name, parse in parsers.items() if name in table}
    if "path" in settings and not settings["path"].startswith("/"):
        raise ConfigError(f"{key}.path", f"{settings['path']!r} must start with /")
    return HealthSettings(**settings)


def _route(key: str, table: Mapping[str, Any], pools: Collection[str], base: str) -> RouteSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "host": _routeHost,
        "prefix": _prefix,
        "strip_prefix": _boolean,
        "pool": _nonEmptyString,
        "static": lambda key, value: _directory(key, value, base),
        "listing": _boolean,
        "redirect": _nonEmptyString,
        "redirect_status": _redirectStatus,
        "add_headers": _headerTable,
        "remove_headers": _arrayOf(_fieldName),
        "client_subjects": _arrayOf(_nonEmptyString),
        "cache": _boolean,
        "rate_limit": lambda key, value: _rateLimit(key, value, "reverse"),
    }
    _checkKeys(table, key + ".", parsers)
    settings = {name: parse(f"{key}.{name}", table[name]) for name, parse in parsers.items() if name in table}
    targets = [name for name in ("pool", "static", "redirect") if name in settings]
    if len(targets) != 1:
        raise ConfigError(key, "a route needs exactly one of pool, static or redirect")
    if "cache" in settings and "pool" not in settings:
        raise ConfigError(f"{key}.cache", "only a route to a pool is cached")
    if "rate_limit" in settings and "pool" not in settings:
        raise ConfigError(f"{key}.rate_limit", "only a route to a pool is rate limited")
    if "pool" in settings and settings["pool"] not in pools:
        raise ConfigError(f"{key}.pool", f"no pool named {settings['pool']!r} (known: {', '.join(sorted(pools)) or 'none'})")
    return RouteSettings(**settings)


def _rateLimit(key: str, value: Any, mode: str) -> RateLimitSettings:
    """
    A C{rate_limit} table: C{rate}, C{burst}, C{key} and C{limiter} are
    dualproxy's, any other key is an option of the limiter.

    C{key = "user"} is the forward proxy's authenticated user; a reverse
    proxy authenticates nobody, and a user name the client merely claims
    would give it a fresh bucket per name.
    """
    table = _table(key, value)
    if "rate" not in table:
        raise ConfigError(f"{key}.rate", "missing (requests per second)")
    rate = table["rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ConfigError(f"{key}.rate", f"expected a number of requests per second, got {_kind(rate)}")
    if not (rate > 0 and math.isfinite(rate)):
        raise ConfigError(f"{key}.rate", f"must be a positive number of requests per second, got {rate}")
    settings: Dict[str, Any] = {"rate": float(rate)}
    if "burst" in table:
        settings["burst"] = _positive(f"{key}.burst", table["burst"])
    if "key" in table:
        text = _string(f"{key}.key", table["key"])
        kind, colon, name = text.partition(":")
        if kind == "header" and colon:
            _fieldName(f"{key}.key", name)
        elif text == "user" and mode != "forward":
            raise ConfigError(f"{key}.key", '"user" is the forward proxy\'s authenticated user; '
                                            'use "address" or "header:NAME" here')
        elif text not in ("address", "user"):
            raise ConfigError(f"{key}.key", f'{text!r} is not "address", "header:NAME" or "user"')
        settings["key"] = text
    if "limiter" in table:
        settings["limiter"] = _nonEmptyString(f"{key}.limiter", table["limiter"])
    options = {name: option for name, option in table.items() if name not in ("rate", "burst", "key", "limiter")}
    return RateLimitSettings(options=MappingProxyType(options), **settings)


def _routeHost(key: str, value: Any) -> str:
    text = _nonEmptyString(key, value).lower()
    name = text[2:] if text.startswith("*.") else text
    if text != "*" and not _HOSTNAME.match(name.split(":")[0]):
        raise ConfigError(key, f"{text!r} is not a host name, *.domain or *")
    return text


def _prefix(key: str, value: Any) -> str:
    text = _nonEmptyString(key, value)
    if not text.startswith("/"):
        raise ConfigError(key, f"{text!r} must start with /")
    return text


def _directory(key: str, value: Any, base: str) -> str:
    path = os.path.join(base, _nonEmptyString(key, value))
    if not os.path.isdir(path):
        raise ConfigError(key, f"{value!r} is not a directory")
    return os.path.abspath(path)


def _redirectStatus(key: str, value: Any) -> int:
    status = _integer(key, value)
    if status not in (301, 302, 303, 307, 308):
        raise ConfigError(key, f"{status} is not a redirect status (301, 302, 303, 307, 308)")
    return status


def _status(key: str, value: Any) -> int:
    status = _integer(key, value)
    if not 100 <= status <= 599:
        raise ConfigError(key, f"{status} is not an HTTP status")
    return status


def _positive(key: str, value: Any) -> int:
    number = _integer(key, value)
    if number < 1:
        raise ConfigError(key, f"must be 1 or more, got {number}")
    return number


def _headerTable(key: str, value: Any) -> Tuple[Tuple[str, str], ...]:
    return tuple(
        (_fieldName(f"{key}.{name}", name), _headerValue(f"{key}.{name}", field))
        for name, field in _table(key, value).items()
    )


def _headerValue(key: str, value: Any) -> str:
    text = _string(key, value)
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in text):
        raise ConfigError(key, "control characters are not allowed in a header value")
    return text


# Value checks: each takes the dotted key (for the error) and the raw value.


def _checkKeys(table: Mapping[str, Any], prefix: str, known: Collection[str]) -> None:
    for name in table:
        if name not in known:
            raise ConfigError(f"{prefix}{name}", f"unknown key (known: {', '.join(sorted(known))})")


def _table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a table, got {_kind(value)}")
    return value


def _arrayOf(item: Callable[[str, Any], Any]) -> Callable[[str, Any], Tuple[Any, ...]]:
    def parse(key: str, value: Any) -> Tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected an array, got {_kind(value)}")
        return tuple(item(f"{key}[{index}]", element) for index, element in enumerate(value))

    return parse


def _kind(value: Any) -> str:
    # bool first: True is an int too, but "port = true" is not a port.
    for type_, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        ((list, tuple), "an array"),
        (Mapping, "a table"),
    ):
        if isinstance(value, type_):
            return name
    return f"a {type(value).__name__}"


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {_kind(value)}")
    return value


def _nonEmptyString(key: str, value: Any) -> str:
    if not _string(key, value):
        raise ConfigError(key, "must not be empty")
    return value


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {_kind(value)}")
    return value


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected an integer, got {_kind(value)}")
    return value


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number of seconds, got {_kind(value)}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(key, f"must be a positive number of seconds, got {value}")
    return float(value)


def _port(key: str, value: Any) -> int:
    port = _integer(key, value)
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"port {port} is not in 1-65535")
    return port


def _network(key: str, value: Any) -> Network:
    text = _string(key, value)
    try:
        return ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IP network")


def _destination(key: str, value: Any) -> str:
    text = _string(key, value)
    try:
        ip_network(text, strict=False)
    except ValueError:
        if not _HOSTNAME.match(text) or len(text) > 254:
            raise ConfigError(key, f"{text!r} is not a host name, .domain suffix or IP network")
    return text


def _fieldName(key: str, value: Any) -> str:
    text = _string(key, value)
    if not _TOKEN.match(text):
        raise ConfigError(key, f"{text!r} is not an HTTP field name")
    return text


def _pseudonym(key: str, value: Any) -> str:
    text = _string(key, value)
    if not _TOKEN.match(text):
        raise ConfigError(key, f"{text!r} is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~ only)")
    return text


def _realm(key: str, value: Any) -> str:
    text = _string(key, value)
    if not _REALM.match(text):
        raise ConfigError(key, f"{text!r} must be printable ASCII without quotes or backslashes")
    return text


def _passwordFile(key: str, value: Any) -> str:
    from .policy.auth import PasswordFile

    path = _nonEmptyString(key, value)
    try:
        PasswordFile.load(path)
    except OSError as e:
        raise ConfigError(key, f"cannot read {path!r} ({e.strerror or e})")
    except ValueError as e:
        raise ConfigError(key, f"{path}: {e}")
    return path


def _parent(key: str, value: Any) -> ParentProxy:
    text = _string(key, value)
    usage = "expected http://[user:password@]host:port"
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as e:
        raise ConfigError(key, f"{text!r}: {_oneLine(str(e))}; {usage}")
    if url.scheme != "http" or not url.hostname or port is None:
        raise ConfigError(key, f"{text!r}: {usage}")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ConfigError(key, f"{text!r}: a parent proxy URL has no path, query or fragment; {usage}")
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"{text!r}: port {port} is not in 1-65535")
    authorization = None
    if url.username is not None:
        credentials = f"{unquote(url.username)}:{unquote(url.password or '')}"
        authorization = b"Basic " + base64.b64encode(credentials.encode("utf-8"))
    return ParentProxy(url.hostname, port, authorization)


def _endpoint(key: str, value: Any) -> str:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    description = _nonEmptyString(key, value)
    try:
        serverFromString(reactor, description)
    except Exception as e:
        raise ConfigError(key, f"bad endpoint {description!r}: {_oneLine(str(e)) or type(e).__name__}")
    return description


def _oneLine(text: str) -> str:
    return " ".join(text.split())
