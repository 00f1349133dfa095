"""
Tables more than one part of the config has: routes (reverse routes and the
forward proxy's own pages), rate limits and certificate pairs.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Callable, Collection, Dict

from . import values
from .model import CertificateFiles, RateLimitSettings, RouteSettings
from .values import ConfigError


def certificate(key: str, value: Any, base: str) -> CertificateFiles:
    table = values.table(key, value)
    values.checkKeys(table, key + ".", ("cert", "key"))
    for name in ("cert", "key"):
        if name not in table:
            raise ConfigError(f"{key}.{name}", "missing (a PEM file)")
    return CertificateFiles(values.path(f"{key}.cert", table["cert"], base),
                            values.path(f"{key}.key", table["key"], base))


def route(key: str, value: Any, pools: Collection[str], base: str, mode: str) -> RouteSettings:
    """
    A route to exactly one of a pool (one of C{pools}), a static directory
    or a redirect.
    """
    table = values.table(key, value)
    parsers: Dict[str, Callable[[str, Any], Any]] = {
        "host": values.routeHost,
        "prefix": values.prefix,
        "strip_prefix": values.boolean,
        "pool": values.nonEmptyString,
        "static": lambda key, value: values.path(key, value, base),
        "listing": values.boolean,
        "redirect": values.nonEmptyString,
        "redirect_status": values.redirectStatus,
        "add_headers": values.headerTable,
        "remove_headers": values.arrayOf(values.fieldName),
        "client_subjects": values.arrayOf(values.nonEmptyString),
        "cache": values.boolean,
        "rate_limit": lambda key, value: rateLimit(key, value, mode),
        "upgrades": values.arrayOf(values.upgradeProtocol),
    }
    settings = values.parsed(table, key + ".", parsers)
    targets = [name for name in ("pool", "static", "redirect") if name in settings]
    if len(targets) != 1:
        raise ConfigError(key, "a route needs exactly one of pool, static or redirect")
    for name, what in (("cache", "is cached"), ("rate_limit", "is rate limited"), ("upgrades", "relays upgrades")):
        if name in settings and "pool" not in settings:
            raise ConfigError(f"{key}.{name}", f"only a route to a pool {what}")
    if "pool" in settings and settings["pool"] not in pools:
        raise ConfigError(f"{key}.pool", f"no pool named {settings['pool']!r} (known: {', '.join(sorted(pools)) or 'none'})")
    return RouteSettings(**settings)


def rateLimit(key: str, value: Any, mode: str) -> RateLimitSettings:
    """
    A C{rate_limit} table: C{rate}, C{burst}, C{key} and C{limiter} are
    dualproxy's, any other key is an option of the limiter.

    C{key = "user"} is the forward or socks proxy's authenticated user; a
    reverse proxy authenticates nobody, and a user name the client merely claims
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
        settings["key"] = _limitKey(f"{key}.key", table["key"], mode)
    if "limiter" in table:
        settings["limiter"] = values.nonEmptyString(f"{key}.limiter", table["limiter"])
    options = {name: option for name, option in table.items() if name not in ("rate", "burst", "key", "limiter")}
    return RateLimitSettings(options=MappingProxyType(options), **settings)


# The modes that log users in, so that a bucket per user means something.
_AUTHENTICATING = ("forward", "socks")


def _limitKey(key: str, value: Any, mode: str) -> str:
    text = values.string(key, value)
    kind, colon, name = text.partition(":")
    if kind == "header" and colon:
        values.fieldName(key, name)
    elif text == "user" and mode not in _AUTHENTICATING:
        raise ConfigError(key, '"user" is the authenticated user of forward and socks modes; '
                               'use "address" or "header:NAME" here')
    elif text not in ("address", "user"):
        raise ConfigError(key, f'{text!r} is not "address", "header:NAME" or "user"')
    return text

