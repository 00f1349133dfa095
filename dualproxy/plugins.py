"""
Plugin discovery: modes and filters, built-in or third-party, are whatever
providers of L{IProxyMode} and L{IRequestFilter} the C{twisted.plugins}
dropins offer, looked up by their C{name}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping

from twisted.plugin import getPlugins

from .settings.model import CacheSettings, RateLimitSettings
from .settings.values import ConfigError
from .interfaces import (
    IBalancer,
    IBalancerFactory,
    ICacheStore,
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


def choose(known: Mapping[str, Any], name: str, key: str, what: str) -> Any:
    """
    C{known[name]}: the one place an unknown plugin name becomes the error
    that lists the known ones.

    @raise ConfigError: C{"<key>: unknown <what> 'name' (known: ...)"}.
    """
    if name not in known:
        raise ConfigError(key, f"unknown {what} {name!r} (known: {_names(known)})")
    return known[name]


def construct(factory: Callable[[Dict[str, Any], Any], Any], options: Mapping[str, Any], key: str,
              resources) -> Any:
    """
    C{factory(options, resources)}, with the C{"option: problem"}
    C{ValueError} a factory raises for a bad option turned into a
    L{ConfigError} keyed C{key.option}.
    """
    try:
        return factory(dict(options), resources)
    except ValueError as e:
        option, _, problem = str(e).partition(": ")
        raise ConfigError(f"{key}.{option}", problem or option)


def loadRateLimiter(settings: RateLimitSettings, key: str, resources) -> IRateLimiter:
    """
    The limiter a C{rate_limit} table describes, built by its plugin with
    the table's C{rate}, C{burst} and other options.

    @param key: the table's dotted key, e.g. C{"forward.rate_limit"}.
    @param resources: the L{IPluginResources} it may use.
    @raise ConfigError: naming C{key.limiter} for a name no plugin provides,
        or the option the plugin refuses.
    """
    factory = choose(findRateLimiters(), settings.limiter, f"{key}.limiter", "limiter")
    options = dict(settings.options, rate=settings.rate)
    if settings.burst is not None:
        options["burst"] = settings.burst
    return construct(factory, options, key, resources)


def loadCacheStore(settings: CacheSettings, resources) -> ICacheStore:
    """
    The store the C{[cache]} table names, built with its other keys and
    the L{IPluginResources} it may use.

    @raise ConfigError: naming C{cache.store}, or the option it refuses.
    """
    return construct(choose(findCacheStores(), settings.store, "cache.store", "store"),
                     settings.store_options, "cache", resources)


def loadBalancer(name: str, options: Mapping[str, Any], key: str) -> IBalancer:
    """
    The balancer a pool's C{balance} names, given its C{balance_options}.

    @param key: the pool's dotted key, e.g. C{"reverse.pools.web"}.
    @raise ConfigError: naming C{key.balance} or C{key.balance_options}.
    """
    factory = choose(findBalancers(), name, f"{key}.balance", "strategy")
    try:
        return factory(dict(options))
    except ValueError as e:
        raise ConfigError(f"{key}.balance_options", str(e))


def loadFilters(names: Iterable[str]) -> List[IRequestFilter]:
    """
    The filters named in the config, in order.

    @raise ConfigError: keyed C{filters[i]} for a name no plugin provides.
    """
    known = findFilters()
    return [choose(known, name, f"filters[{index}]", "filter") for index, name in enumerate(names)]


def _names(plugins: Mapping[str, Any]) -> str:
    return ", ".join(sorted(plugins)) or "none"


def checkOptions(options: Iterable[str], known: Iterable[str], what: str) -> None:
    """
    What a plugin factory calls first, so that every plugin refuses an
    option it does not know with the same message.

    @param what: the plugin, as the message names it ("the disk store").
    @raise ValueError: naming the first unknown option and the known ones.
    """
    known = list(known)
    for option in options:
        if option not in known:
            raise ValueError(f"{option}: unknown option for {what} (known: {', '.join(known) or 'none'})")


def positiveOption(options: Mapping[str, Any], option: str, default: int,
                   expected: str = "a positive integer") -> int:
    """
    C{options[option]} (C{default} if absent), which must be an integer of
    1 or more; what a plugin factory checks sizes and counts with.

    @param expected: what the message says was expected.
    @raise ValueError: C{"option: expected <expected>, got ..."}.
    """
    value = options.get(option, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option}: expected {expected}, got {value!r}")
    return value

