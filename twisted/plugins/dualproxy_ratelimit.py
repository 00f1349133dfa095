"""
The built-in rate limiter, found like third-party ones.
"""

from dualproxy.policy.ratelimit import memory

__all__ = ["memory"]
