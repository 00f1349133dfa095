"""
The C{[reverse]} table: pools of backends, routes and the forwarding headers
added for backends; parsed without I/O, its files and certificates checked
before start-up.
"""

from __future__ import annotations

from ipaddress import ip_address
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Sequence

from .. import prestart
from ..settings import tables, values
from ..settings.model import Backend, Config, DnsSettings, HealthSettings, PoolSettings, ReverseSettings
from ..settings.values import ConfigError


FORWARDING_FLAGS = ("x_forwarded_for", "x_forwarded_proto", "x_forwarded_host", "forwarded")


def parseReverse(table: Mapping[str, Any], base: str) -> ReverseSettings:
    """
    @raise ConfigError: naming the first C{reverse.} key that is wrong.
    """
    values.checkKeys(table, "reverse.", ("pools", "routes", "trusted_proxies", "dns") + FORWARDING_FLAGS)
    pools = values.table("reverse.pools", table.get("pools", {}))
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "routes": values.arrayOf(lambda key, value: tables.route(key, value, set(pools), base, "reverse")),
        "trusted_proxies": values.arrayOf(values.network),
        "dns": lambda key, value: _dns(values.table(key, value)),
        **{flag: values.boolean for flag in FORWARDING_FLAGS},
    }
    return ReverseSettings(
        pools=tuple(_pool(f"reverse.pools.{name}", name, value, base) for name, value in pools.items()),
        **values.parsed({name: value for name, value in table.items() if name != "pools"}, "reverse.", parsers),
    )


def checkReverse(settings: ReverseSettings, config: Config) -> None:
    """
    The pre-start checks: CA bundles, client certificates and static
    directories exist and load, and a certificate covers every host
    routed to over TLS.
    """
    for pool in settings.pools:
        key = f"reverse.pools.{pool.name}"
        if pool.tls_ca is not None:
            prestart.existingFile(f"{key}.tls_ca", pool.tls_ca)
        if pool.tls_client_cert is not None:
            prestart.certificatePair(f"{key}.tls_client_cert", pool.tls_client_cert)
    prestart.routeDirectories("reverse.routes", settings.routes)
    if config.tls.listen:
        _checkCoverage(settings, config)


def _checkCoverage(settings: ReverseSettings, config: Config) -> None:
    """
    Every host routed to over TLS must be covered by a certificate (one
    in the files, or one obtained over ACME), or its clients would get the
    default certificate and a name mismatch.
    """
    pairs = [prestart.certificatePair(f"tls.certificates[{index}]", files)
             for index, files in enumerate(config.tls.certificates)]
    from ..acme.service import acmeDomains, mayOrder, onDemandPatterns

    obtained: Sequence[str] = ()
    onDemand: Sequence[str] = ()
    if config.tls.acme is not None:
        obtained, onDemand = acmeDomains(config), onDemandPatterns(config)
    for index, route in enumerate(settings.routes):
        name = "wildcard." + route.host[2:] if route.host.startswith("*.") else route.host
        if route.host == "*" or route.host.split(":")[0] in obtained or mayOrder(onDemand, name.split(":")[0]):
            continue
        if not any(pair.covers(name) for pair in pairs):
            raise ConfigError(f"reverse.routes[{index}].host",
                              f"no certificate in tls.certificates covers {route.host!r}"
                              + (" (nor is it in tls.acme.domains)" if config.tls.acme is not None else ""))


def _dns(table: Mapping[str, Any]) -> DnsSettings:
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "servers": values.arrayOf(_dnsServer),
        "min_ttl": values.seconds,
        "max_ttl": values.seconds,
    }
    settings = DnsSettings(**values.parsed(table, "reverse.dns.", parsers))
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


def _pool(key: str, name: str, value: Any, base: str) -> PoolSettings:
    table = values.table(key, value)
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "backends": values.arrayOf(_backend),
        "balance": values.nonEmptyString,
        "balance_options": lambda key, value: MappingProxyType(dict(values.table(key, value))),
        "host": values.nonEmptyString,
        "retries": values.count,
        "health": lambda key, value: _health(key, values.table(key, value)),
        "tls_verify": values.boolean,
        "tls_ca": lambda key, value: values.path(key, value, base),
        "tls_name": values.nonEmptyString,
        "tls_client_cert": lambda key, value: tables.certificate(key, value, base),
        "cache": values.boolean,
        "rate_limit": lambda key, value: tables.rateLimit(key, value, "reverse"),
        "proxy_protocol": _proxyProtocolVersion,
    }
    settings = values.parsed(table, key + ".", parsers)
    if not settings.get("backends"):
        raise ConfigError(f"{key}.backends", "a pool needs at least one backend")
    return PoolSettings(name, **settings)


def _proxyProtocolVersion(key: str, value: Any) -> int:
    """
    C{"v1"} or C{"v2"}: the PROXY header HAProxy's C{send-proxy} or
    C{send-proxy-v2} would write.
    """
    return int(values.oneOf(key, value, ("v1", "v2"))[1])


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
    settings = values.parsed(table, key + ".", parsers)
    if "path" in settings and not settings["path"].startswith("/"):
        raise ConfigError(f"{key}.path", f"{settings['path']!r} must start with /")
    return HealthSettings(**settings)
