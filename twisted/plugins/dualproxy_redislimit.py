"""
The built-in rate limiter backed by the [redis] server, found like
third-party ones.
"""

from dualproxy.policy.redislimit import redis

__all__ = ["redis"]
