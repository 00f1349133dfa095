"""
The status document: what is running, how healthy, and the effective
configuration with its secrets taken out.
"""

from __future__ import annotations

import dataclasses
import os
from ipaddress import IPv4Network, IPv6Network
from types import MappingProxyType
from typing import Any

from .. import __version__

# Config fields whose values are secrets (credentials, not file names).
SECRET_FIELDS = frozenset({"authorization", "password", "passwords"})

REDACTED = "<redacted>"


def redacted(value: Any, name: str = "") -> Any:
    """
    C{value} (a config dataclass or part of one) as JSON-ready data, with
    every secret replaced by a marker.
    """
    if name in SECRET_FIELDS and value is not None:
        return REDACTED
    if dataclasses.is_dataclass(value):
        return {field.name: redacted(getattr(value, field.name), field.name)
                for field in dataclasses.fields(value)}
    if isinstance(value, (dict, MappingProxyType)):
        return {str(key): redacted(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(item) for item in value]
    if isinstance(value, (IPv4Network, IPv6Network)):
        return str(value)
    if isinstance(value, bytes):
        return REDACTED
    return value


def document(service) -> dict:
    """
    The status of a running L{dualproxy.service.root.ProxyService}.
    """
    config = service.config
    now = service.reactor.seconds()
    metrics = service.metrics
    pools = []
    for pool in getattr(service, "pools", {}).values():
        pools.append({
            "name": pool.name,
            "balance": pool.settings.balance,
            "backends": [{
                "url": backend.name,
                "state": backend.health.state,
                "healthy": backend.health.isUp(now),
                "in_flight": backend.inFlight,
                "latency_ms": _milliseconds(metrics.backendLatency.get(backend.name)),
            } for backend in pool.backends],
        })
    cache = service.cacheIfBuilt()
    redis = service.lasting.redis
    acme = service.lasting.acme
    return {
        "version": __version__,
        "pid": os.getpid(),
        "mode": config.mode,
        "uptime": round(now - service.startedAt, 3),
        "listeners": [{"endpoint": listener.description, "port": listener.portNumber()}
                      for listener in service.listeners()],
        "routes": [{
            "host": route.host, "prefix": route.prefix,
            "target": ("pool:" + route.pool) if route.pool else ("static:" + route.static) if route.static
            else "redirect:" + str(route.redirect),
        } for route in (config.reverse.routes if config.mode == "reverse" else config.forward.routes)],
        "pools": pools,
        "in_flight": service.inFlight(),
        "client_connections": service.openConnections(),
        "cache": None if cache is None else {
            "hits": cache.stats.hits, "misses": cache.stats.misses, "revalidations": cache.stats.revalidations,
            "stale": cache.stats.stale, "stored": cache.stats.stored, "bytes": cache.bytesStored,
            "evictions": cache.evictions, "hit_ratio": round(cache.hitRatio, 4),
        },
        "redis": None if redis is None else {
            "endpoint": redis.endpointDescription, "up": redis.up, "failures": redis.failures,
        },
        "certificates": service.certificates(),
        "acme": None if acme is None else {
            "directory": acme.settings.directory, "challenge": acme.settings.challenge,
            "certificates": acme.describe(),
        },
        "reloads": dict(metrics.reloads),
        "config": _configDocument(config),
    }


def _configDocument(config) -> dict:
    """
    The config as its file is laid out: each mode's settings under the
    mode's name, beside the shared tables.
    """
    document = redacted(config)
    document.update(document.pop("modes"))
    return document


def _milliseconds(seconds):
    return None if seconds is None else round(seconds * 1000, 3)
