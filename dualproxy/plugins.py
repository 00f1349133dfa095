"""
Plugin discovery: modes and filters, built-in or third-party, are whatever
providers of L{IProxyMode} and L{IRequestFilter} the C{twisted.plugins}
dropins offer, looked up by their C{name}.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

from twisted.plugin import getPlugins

from .config import ConfigError
from .interfaces import IBalancerFactory, ICacheStoreFactory, IProxyMode, IRequestFilter

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
