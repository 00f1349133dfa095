"""
The built-in rate limiters, found like third-party ones.
"""

from dualproxy.policy.ratelimit import memory
from dualproxy.policy.redislimit import redis

__all__ = ["memory", "redis"]
