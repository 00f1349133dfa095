"""
When to renew a certificate and how long to wait after a failed attempt:
pure arithmetic, so the schedule is tested without a clock or a CA.
"""

from __future__ import annotations

RENEW_AT = 2 / 3
FIRST_RETRY = 60.0
LAST_RETRY = 86400.0


def renewalTime(notBefore: float, notAfter: float, fraction: float = RENEW_AT) -> float:
    """
    The moment (POSIX seconds) C{fraction} of the validity period has
    passed: early enough that a CA outage of a third of the lifetime
    costs nothing.
    """
    return notBefore + (notAfter - notBefore) * fraction


def retryDelay(failures: int, jitter: float, first: float = FIRST_RETRY, last: float = LAST_RETRY) -> float:
    """
    Seconds to wait after C{failures} consecutive failures (at least one):
    C{first}, doubling up to C{last}, shortened by up to a quarter by
    C{jitter} (in [0, 1), the caller's random draw) so that many instances
    failing together do not retry together, and never beyond C{last}.
    """
    if failures < 1:
        raise ValueError("retryDelay needs at least one failure")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    base = min(last, first * 2 ** min(failures - 1, 64))
    return base * (1 - jitter / 4)
