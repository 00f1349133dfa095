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
import sys
from dataclasses import fields
from ipaddress import ip_address
from types import MappingProxyType
from typing import Any, Callable, Collection, Dict, Mapping, Optional
from urllib.parse import unquote

from .settings import values
from .settings.model import (
    AdminSettings,
    Backend,
    CacheSettings,
    CertificateFiles,
    Config,
    DnsSettings,
    ForwardSettings,
    HealthSettings,
    LimitSettings,
    ParentProxy,
    PoolSettings,
    RateLimitSettings,
    ReverseSettings,
    RouteSettings,
    Timeouts,
    TLSSettings,
    UpstreamSettings,
)
from .settings.values import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


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
        raise ConfigError(path, f"not valid TOML: {values.oneLine(str(e))}")


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
    values.checkKeys(data, "", list(builtin) + extraNames)
    extra = {}
    for name in extraNames:
        if name in data:
            extra[name] = MappingProxyType(dict(values.table(name, data[name])))
    kwargs: Dict[str, Any] = {}
    if "mode" in data:
        kwargs["mode"] = values.nonEmptyString("mode", data["mode"])
    if "listen" in data:
        kwargs["listen"] = values.arrayOf(_endpoint)("listen", data["listen"])
    if "access_log" in data:
        value = values.string("access_log", data["access_log"])
        if value not in ACCESS_LOG_FORMATS:
            raise ConfigError("access_log", f"{value!r} is not one of {', '.join(ACCESS_LOG_FORMATS)}")
        kwargs["access_log"] = value
    if "filters" in data:
        kwargs["filters"] = values.arrayOf(values.nonEmptyString)("filters", data["filters"])
    if "timeouts" in data:
        kwargs["timeouts"] = _timeouts(values.table("timeouts", data["timeouts"]))
    if "upstream" in data:
        kwargs["upstream"] = _upstream(values.table("upstream", data["upstream"]))
    if "forward" in data:
        kwargs["forward"] = _forward(values.table("forward", data["forward"]), base)
    if "reverse" in data:
        kwargs["reverse"] = _reverse(values.table("reverse", data["reverse"]), base)
    if "tls" in data:
        kwargs["tls"] = _tls(values.table("tls", data["tls"]), base)
        _checkCoverage(kwargs["tls"], kwargs.get("reverse"))
    if "cache" in data:
        kwargs["cache"] = _cache(values.table("cache", data["cache"]), base)
    if "admin" in data:
        kwargs["admin"] = _admin(values.table("admin", data["admin"]), base)
    if "limits" in data:
        kwargs["limits"] = _limits(values.table("limits", data["limits"]))
    return Config(extra=MappingProxyType(extra), **kwargs)


def _timeouts(table: Mapping[str, Any]) -> Timeouts:
    names = [item.name for item in fields(Timeouts)]
    values.checkKeys(table, "timeouts.", names)
    return Timeouts(**{name: values.seconds(f"timeouts.{name}", table[name]) for name in names if name in table})


def _upstream(table: Mapping[str, Any]) -> UpstreamSettings:
    values.checkKeys(table, "upstream.", ("max_idle_per_host",))
    kwargs = {}
    if "max_idle_per_host" in table:
        value = values.integer("upstream.max_idle_per_host", table["max_idle_per_host"])
        if value < 0:
            raise ConfigError("upstream.max_idle_per_host", f"must be 0 or more, got {value}")
        kwargs["max_idle_per_host"] = value
    return UpstreamSettings(**kwargs)


def _forward(table: Mapping[str, Any], base: str) -> ForwardSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "allow_clients": values.arrayOf(values.network),
        "allow_destinations": values.arrayOf(values.network),
        "deny_destinations": values.arrayOf(values.destination),
        "connect_ports": values.arrayOf(values.port),
        "parent": _parent,
        "via": values.pseudonym,
        "x_forwarded_for": values.arrayOf(values.network),
        "anonymous": values.boolean,
        "anonymous_headers": values.arrayOf(values.fieldName),
        "auth_file": _passwordFile,
        "auth_realm": values.realm,
        # The proxy's own pages (a PAC file, a redirect): static or redirect
        # routes for requests in origin form; there are no pools here.
        "routes": values.arrayOf(lambda key, value: _route(key, values.table(key, value), (), base)),
        "tls_ca": lambda key, value: _file(key, value, base),
        "cache": values.boolean,
        "rate_limit": lambda key, value: _rateLimit(key, value, "forward"),
    }
    values.checkKeys(table, "forward.", parsers)
    settings = ForwardSettings(
        **{name: parse(f"forward.{name}", table[name]) for name, parse in parsers.items() if name in table}
    )
    if settings.rate_limit is not None and settings.rate_limit.key == "user" and settings.auth_file is None:
        raise ConfigError("forward.rate_limit.key", '"user" needs forward.auth_file (proxy authentication)')
    return settings


def _limits(table: Mapping[str, Any]) -> LimitSettings:
    names = [item.name for item in fields(LimitSettings)]
    values.checkKeys(table, "limits.", names)
    settings = {}
    for name in names:
        if name in table:
            value = values.integer(f"limits.{name}", table[name])
            least = 0 if name in ("max_body", "max_connections", "max_connections_per_client") else 1
            if value < least:
                raise ConfigError(f"limits.{name}", f"must be {least} or more, got {value}")
            settings[name] = value
    return LimitSettings(**settings)


def _admin(table: Mapping[str, Any], base: str) -> AdminSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "listen": _endpoint,
        "auth_file": lambda key, value: _passwordFile(key, _file(key, value, base)),
        "realm": values.realm,
    }
    values.checkKeys(table, "admin.", parsers)
    return AdminSettings(**{name: parse(f"admin.{name}", table[name]) for name, parse in parsers.items()
                            if name in table})


def _cache(table: Mapping[str, Any], base: str) -> CacheSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "store": values.nonEmptyString,
        "name": values.nonEmptyString,
        "lock_timeout": values.seconds,
        "purge_from": values.arrayOf(values.network),
    }
    settings = {name: parse(f"cache.{name}", table[name]) for name, parse in parsers.items() if name in table}
    options = {name: value for name, value in table.items() if name not in parsers}
    if isinstance(options.get("path"), str):
        options["path"] = os.path.join(base, os.path.expanduser(options["path"]))
    return CacheSettings(store_options=MappingProxyType(options), **settings)


def _tls(table: Mapping[str, Any], base: str) -> TLSSettings:
    from .tls import TLSConfigError, loadPair

    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "listen": values.arrayOf(_endpoint),
        "certificates": values.arrayOf(lambda key, value: _certificate(key, value, base)),
        "min_version": values.string,
        "ciphers": values.nonEmptyString,
        "http2": values.boolean,
        "client_ca": lambda key, value: _file(key, value, base),
        "client_certificate_optional": values.boolean,
        "client_subject_header": values.fieldName,
        "hsts": values.headerValue,
        "redirect_http": values.boolean,
    }
    values.checkKeys(table, "tls.", parsers)
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
    table = values.table(key, value)
    values.checkKeys(table, key + ".", ("cert", "key"))
    for name in ("cert", "key"):
        if name not in table:
            raise ConfigError(f"{key}.{name}", "missing (a PEM file)")
    return CertificateFiles(_file(f"{key}.cert", table["cert"], base), _file(f"{key}.key", table["key"], base))


def _file(key: str, value: Any, base: str) -> str:
    path = os.path.join(base, values.nonEmptyString(key, value))
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
    values.checkKeys(table, "reverse.", known)
    kwargs: Dict[str, Any] = {}
    pools = values.table("reverse.pools", table.get("pools", {}))
    kwargs["pools"] = tuple(_pool(f"reverse.pools.{name}", name, values.table(f"reverse.pools.{name}", value), base)
                            for name, value in pools.items())
    names = set(pools)
    kwargs["routes"] = values.arrayOf(lambda key, value: _route(key, values.table(key, value), names, base))(
        "reverse.routes", table.get("routes", []))
    if "trusted_proxies" in table:
        kwargs["trusted_proxies"] = values.arrayOf(values.network)("reverse.trusted_proxies", table["trusted_proxies"])
    for flag in known[3:7]:
        if flag in table:
            kwargs[flag] = values.boolean(f"reverse.{flag}", table[flag])
    if "dns" in table:
        kwargs["dns"] = _dns(values.table("reverse.dns", table["dns"]))
    return ReverseSettings(**kwargs)


def _dns(table: Mapping[str, Any]) -> DnsSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "servers": values.arrayOf(_dnsServer),
        "min_ttl": values.seconds,
        "max_ttl": values.seconds,
    }
    values.checkKeys(table, "reverse.dns.", parsers)
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
    text = values.nonEmptyString(key, value).strip()
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
    values.checkKeys(table, key + ".", ("backends", "balance", "balance_options", "host", "retries", "health",
                                  "tls_verify", "tls_ca", "tls_name", "tls_client_cert", "cache", "rate_limit"))
    if "backends" not in table:
        raise ConfigError(f"{key}.backends", "a pool needs at least one backend")
    backends = values.arrayOf(_backend)(f"{key}.backends", table["backends"])
    if not backends:
        raise ConfigError(f"{key}.backends", "a pool needs at least one backend")
    kwargs: Dict[str, Any] = {}
    if "balance" in table:
        kwargs["balance"] = values.nonEmptyString(f"{key}.balance", table["balance"])
    if "balance_options" in table:
        kwargs["balance_options"] = MappingProxyType(dict(values.table(f"{key}.balance_options", table["balance_options"])))
    if "host" in table:
        kwargs["host"] = values.nonEmptyString(f"{key}.host", table["host"])
    if "retries" in table:
        retries = values.integer(f"{key}.retries", table["retries"])
        if retries < 0:
            raise ConfigError(f"{key}.retries", f"must be 0 or more, got {retries}")
        kwargs["retries"] = retries
    if "health" in table:
        kwargs["health"] = _health(f"{key}.health", values.table(f"{key}.health", table["health"]))
    if "tls_verify" in table:
        kwargs["tls_verify"] = values.boolean(f"{key}.tls_verify", table["tls_verify"])
    if "tls_ca" in table:
        kwargs["tls_ca"] = _file(f"{key}.tls_ca", table["tls_ca"], base)
    if "tls_name" in table:
        kwargs["tls_name"] = values.nonEmptyString(f"{key}.tls_name", table["tls_name"])
    if "tls_client_cert" in table:
        from .tls import TLSConfigError, loadPair

        files = _certificate(f"{key}.tls_client_cert", table["tls_client_cert"], base)
        try:
            loadPair(files.cert, files.key)
        except TLSConfigError as e:
            raise ConfigError(f"{key}.tls_client_cert", str(e))
        kwargs["tls_client_cert"] = files
    if "cache" in table:
        kwargs["cache"] = values.boolean(f"{key}.cache", table["cache"])
    if "rate_limit" in table:
        kwargs["rate_limit"] = _rateLimit(f"{key}.rate_limit", table["rate_limit"], "reverse")
    return PoolSettings(name, backends, **kwargs)


def _backend(key: str, value: Any) -> Backend:
    """
    A backend as a URL string, or a table with C{url} and C{weight}.
    """
    weight = 1
    if isinstance(value, Mapping):
        values.checkKeys(value, key + ".", ("url", "weight"))
        if "weight" in value:
            weight = values.positive(f"{key}.weight", value["weight"])
        key, value = f"{key}.url", value.get("url")
    usage = "expected http://host:port or https://host:port"
    text, url = values.url(key, value, usage)
    port = url.port
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(key, f"{text!r}: {usage}")
    if url.path not in ("", "/") or url.query or url.fragment or url.username is not None:
        raise ConfigError(key, f"{text!r}: a backend URL has no path, query or credentials; {usage}")
    return Backend(text, url.scheme, url.hostname, port or (443 if url.scheme == "https" else 80), weight)


def _health(key: str, table: Mapping[str, Any]) -> HealthSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "path": values.nonEmptyString,
        "interval": values.seconds,
        "timeout": values.seconds,
        "expect_status": values.arrayOf(values.status),
        "rise": values.positive,
        "fall": values.positive,
        "passive_failures": values.positive,
        "cool_off": values.seconds,
    }
    values.checkKeys(table, key + ".", parsers)
    settings = {name: parse(f"{key}.{name}", table[name]) for name, parse in parsers.items() if name in table}
    if "path" in settings and not settings["path"].startswith("/"):
        raise ConfigError(f"{key}.path", f"{settings['path']!r} must start with /")
    return HealthSettings(**settings)


def _route(key: str, table: Mapping[str, Any], pools: Collection[str], base: str) -> RouteSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "host": values.routeHost,
        "prefix": values.prefix,
        "strip_prefix": values.boolean,
        "pool": values.nonEmptyString,
        "static": lambda key, value: _directory(key, value, base),
        "listing": values.boolean,
        "redirect": values.nonEmptyString,
        "redirect_status": values.redirectStatus,
        "add_headers": values.headerTable,
        "remove_headers": values.arrayOf(values.fieldName),
        "client_subjects": values.arrayOf(values.nonEmptyString),
        "cache": values.boolean,
        "rate_limit": lambda key, value: _rateLimit(key, value, "reverse"),
        "upgrades": values.arrayOf(values.upgradeProtocol),
    }
    values.checkKeys(table, key + ".", parsers)
    settings = {name: parse(f"{key}.{name}", table[name]) for name, parse in parsers.items() if name in table}
    targets = [name for name in ("pool", "static", "redirect") if name in settings]
    if len(targets) != 1:
        raise ConfigError(key, "a route needs exactly one of pool, static or redirect")
    if "cache" in settings and "pool" not in settings:
        raise ConfigError(f"{key}.cache", "only a route to a pool is cached")
    if "rate_limit" in settings and "pool" not in settings:
        raise ConfigError(f"{key}.rate_limit", "only a route to a pool is rate limited")
    if "upgrades" in settings and "pool" not in settings:
        raise ConfigError(f"{key}.upgrades", "only a route to a pool relays upgrades")
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
    table = values.table(key, value)
    if "rate" not in table:
        raise ConfigError(f"{key}.rate", "missing (requests per second)")
    rate = table["rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ConfigError(f"{key}.rate", f"expected a number of requests per second, got {values.kind(rate)}")
    if not (rate > 0 and math.isfinite(rate)):
        raise ConfigError(f"{key}.rate", f"must be a positive number of requests per second, got {rate}")
    settings: Dict[str, Any] = {"rate": float(rate)}
    if "burst" in table:
        settings["burst"] = values.positive(f"{key}.burst", table["burst"])
    if "key" in table:
        text = values.string(f"{key}.key", table["key"])
        kind, colon, name = text.partition(":")
        if kind == "header" and colon:
            values.fieldName(f"{key}.key", name)
        elif text == "user" and mode != "forward":
            raise ConfigError(f"{key}.key", '"user" is the forward proxy\'s authenticated user; '
                                            'use "address" or "header:NAME" here')
        elif text not in ("address", "user"):
            raise ConfigError(f"{key}.key", f'{text!r} is not "address", "header:NAME" or "user"')
        settings["key"] = text
    if "limiter" in table:
        settings["limiter"] = values.nonEmptyString(f"{key}.limiter", table["limiter"])
    options = {name: option for name, option in table.items() if name not in ("rate", "burst", "key", "limiter")}
    return RateLimitSettings(options=MappingProxyType(options), **settings)


def _directory(key: str, value: Any, base: str) -> str:
    path = os.path.join(base, values.nonEmptyString(key, value))
    if not os.path.isdir(path):
        raise ConfigError(key, f"{value!r} is not a directory")
    return os.path.abspath(path)


def _passwordFile(key: str, value: Any) -> str:
    from .policy.auth import PasswordFile

    path = values.nonEmptyString(key, value)
    try:
        PasswordFile.load(path)
    except OSError as e:
        raise ConfigError(key, f"cannot read {path!r} ({e.strerror or e})")
    except ValueError as e:
        raise ConfigError(key, f"{path}: {e}")
    return path


def _parent(key: str, value: Any) -> ParentProxy:
    usage = "expected http://[user:password@]host:port"
    text, url = values.url(key, value, usage)
    port = url.port
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

    description = values.nonEmptyString(key, value)
    try:
        serverFromString(reactor, description)
    except Exception as e:
        raise ConfigError(key, f"bad endpoint {description!r}: {values.oneLine(str(e)) or type(e).__name__}")
    return description


