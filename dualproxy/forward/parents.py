"""
Which parent proxy, if any, a forward request goes through: rules per
destination, pools of parents with a selection policy, and each parent's
health.  Pure logic with the time passed in, so every transition can be
driven directly; L{dualproxy.forward.chaining} connects and logs.
"""

from __future__ import annotations

from typing import Dict, Hashable, List, Optional, Sequence, Tuple

from ..policy.acl import Destinations
from ..settings.model import ForwardSettings, ParentProxy


class ParentHealth:
    """
    Whether a parent takes requests.  A failed connection marks it down
    for C{retry} seconds; after that one request may try it again (one
    every C{retry} seconds while it keeps failing), and the first
    connection that succeeds brings it back.  Down or up is a state, not a
    count: a parent that cannot be connected to now will not be in a
    moment either, and the next parent can take the request at once.

    @ivar failures: failed connection attempts since start, for metrics.
    @ivar retryAt: when a down parent may be tried again; the earliest is
        the one that failed longest ago.
    """

    def __init__(self, name: str, retry: float):
        self.name = name
        self.retry = retry
        self.up = True
        self.failures = 0
        self.retryAt = 0.0

    def available(self, now: float) -> bool:
        """
        Whether a request may try this parent now.
        """
        return self.up or now >= self.retryAt

    def trying(self, now: float) -> None:
        """
        A request is about to connect: while down, the retry it takes is
        not given to another request for C{retry} seconds.
        """
        if not self.up:
            self.retryAt = now + self.retry

    def failed(self, now: float) -> bool:
        """
        A connection attempt failed; whether that took the parent down.
        """
        self.failures += 1
        self.retryAt = now + self.retry
        wasUp, self.up = self.up, False
        return wasUp

    def succeeded(self) -> bool:
        """
        A connection was made; whether that brought the parent back up.
        """
        wasDown, self.up = not self.up, True
        return wasDown


class Parent:
    """
    One configured parent: its settings (with its own credentials), and
    the health it shares with every entry for the same C{host:port}.

    @ivar key: its upstream connections' key in the connection pool: per
        parent, scheme and credentials, never shared with an origin.
    """

    def __init__(self, settings: ParentProxy, health: ParentHealth):
        self.settings = settings
        self.health = health
        scheme = "https" if settings.tls else "http"
        self.key: Hashable = ("parent", scheme, settings.host, settings.port, settings.authorization)
        self.what = f"parent proxy {health.name}"


class ParentPool:
    """
    Parents one destination may go through, in the configured order, and
    the order a request tries them in: C{"first"} (the first healthy one,
    the others as failover) or C{"round-robin"} (each healthy one in turn).
    """

    def __init__(self, parents: Sequence[Parent], selection: str = "first"):
        self.parents = tuple(parents)
        self.selection = selection
        self._turn = 0

    def candidates(self, now: float) -> List[Parent]:
        """
        The parents a request tries, in order, until one can be connected
        to.  When every one is down, the one that failed longest ago: a
        mark that has gone stale never blacks the destination out.
        """
        available = [parent for parent in self.parents if parent.health.available(now)]
        if not available:
            return [min(self.parents, key=lambda parent: parent.health.retryAt)]
        if self.selection == "round-robin":
            start = self._turn % len(available)
            self._turn += 1
            available = available[start:] + available[:start]
        return available


class Egress:
    """
    Where each destination's requests leave from: the first rule whose
    destinations match names its parents (or direct), otherwise the
    default pool (C{parents}, or C{parent} alone), otherwise direct.

    @ivar health: the health of every parent, by C{host:port}.
    """

    def __init__(self, settings: ForwardSettings):
        self.health: Dict[str, ParentHealth] = {}
        self._parents: Dict[ParentProxy, Parent] = {}
        selection = settings.parent_selection
        retry = settings.parent_retry
        default = settings.parents or ((settings.parent,) if settings.parent is not None else ())
        self.default = self._pool(default, selection, retry)
        self.rules: Tuple[Tuple[Destinations, Optional[ParentPool]], ...] = tuple(
            (Destinations(rule.destinations), None if rule.direct else self._pool(rule.parents, selection, retry))
            for rule in settings.parent_rules
        )

    def _pool(self, proxies: Sequence[ParentProxy], selection: str, retry: float) -> Optional[ParentPool]:
        if not proxies:
            return None
        parents = []
        for proxy in proxies:
            parent = self._parents.get(proxy)
            if parent is None:
                name = f"{proxy.host}:{proxy.port}"
                health = self.health.get(name)
                if health is None:
                    health = self.health[name] = ParentHealth(name, retry)
                parent = self._parents[proxy] = Parent(proxy, health)
            parents.append(parent)
        return ParentPool(parents, selection)

    def poolFor(self, host: str) -> Optional[ParentPool]:
        """
        The parents for requests to C{host}, or None to go direct.
        """
        for destinations, pool in self.rules:
            if destinations.matches(host):
                return pool
        return self.default
