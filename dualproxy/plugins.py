"""
Plugin discovery: modes and filters, built-in or third-party, are whatever
providers of L{IProxyMode} and L{IRequestFilter} the C{twisted.plugins}
dropins offer, looked up by their C{name}.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

from twisted.plugin import getPlugins

from .config import ConfigError, RateLimitSettings
from .interfaces import (
    IBalancerFactory,
    ICacheStoreFactory,
    IProxyMode,
    IRateLimiter,
    IRateLimiterFactory,
    IRequestFilter,
)

def _byName(interface) -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    for plugin in getPlugins(interface):
        found.setdefault(plugin.name, plugin)
    return found


def findModes() -> Dict[str, IProxyMode]:
    """
    Every installed proxy mode, by the name given to C{--mode}.
    """
    return _byName(IProxyMode)


def findFilters() -> Dict[str, IRequestFilter]:
    """
    Every installed request filter, by the name used in C{filters}.
    """
    return _byName(IRequestFilter)


def findBalancers() -> Dict[str, IBalancerFactory]:
    """
    Every installed load-balancing strategy, by the name used in C{balance}.
    """
    return _byName(IBalancerFactory)


def findCacheStores() -> Dict[str, ICacheStoreFactory]:
    """
    Every installed cache store, by the name used in the cache C{store}.
    """
    return _byName(ICacheStoreFactory)


def findRateLimiters() -> Dict[str, IRateLimiterFactory]:
    """
    Every installed rate limiter, by the name used in a C{rate_limit}'s
    C{limiter}.
    """
    return _byName(IRateLimiterFactory)


def loadRateLimiter(settings: RateLimitSettings, key: str) -> IRateLimiter:
    """
    The limiter a C{rate_limit} table describes, built by its plugin with
    the table's C{rate}, C{burst} and other options.

    @param key: the table's dotted key, e.g. C{"forward.rate_limit"}.
    @raise ConfigError: naming C{key.limiter} for a name no plugin provides,
        or the option the plugin refuses.
    """
    limiters = findRateLimiters()
    factory = limiters.get(settings.limiter)
    if factory is None:
        raise ConfigError(f"{key}.limiter", f"unknown limiter {settings.limiter!r} (known: {_names(limiters)})")
    options = dict(settings.options, rate=settings.rate)
    if settings.burst is not None:
        options["burst"] = settings.burst
    try:
        return factory(options)
    except ValueError as e:
        option, _, problem = str(e).partition(": ")
        raise ConfigError(f"{key}.{option}", problem or option)


def loadFilters(names: Iterable[str]) -> List[IRequestFilter]:
    """
    The filters named in the config, in order.

    @raise ConfigError: keyed C{filters[i]} for a name no plugin provides.
    """
    known = findFilters()
    filters = []
    for index, name in enumerate(names):
        if name not in known:
            raise ConfigError(f"filters[{index}]", f"unknown filter {name!r} (known: {_names(known)})")
        filters.append(known[name])
    return filters


def _names(plugins: Dict[str, Any]) -> str:
    return ", ".join(sorted(plugins)) or "none"
