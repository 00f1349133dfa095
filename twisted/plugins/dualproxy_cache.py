"""
The built-in cache stores, found like third-party ones.
"""

from dualproxy.cache.disk import disk
from dualproxy.cache.memory import memory

__all__ = ["disk", "memory"]
