"""
The built-in cache stores, found like third-party ones.
"""

from dualproxy.cache.disk import disk
from dualproxy.cache.memory import memory
from dualproxy.cache.redisstore import redis

__all__ = ["disk", "memory", "redis"]
