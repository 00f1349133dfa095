"""
The built-in rate limiter, found like third-party ones.
"""

from dualproxy.ratelimit import memory

__all__ = ["memory"]
