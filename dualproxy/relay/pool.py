"""
Persistent upstream connections, kept idle per destination for reuse.
"""

from __future__ import annotations

from typing import Callable, Dict, Hashable, List, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall

from ..http.parser import Limits
from .client import DEFAULT_RESPONSE_LIMITS, UpstreamProtocol


class ConnectionPool(Service):
    """
    A bounded idle pool per key (an origin, backend or parent proxy).

    Idle connections older than C{idleTimeout} are closed by one sweep for the
    whole pool rather than a timer per connection: releasing and reusing a
    connection is on every request's path and stays cheap.

    The settings of the exchanges a connection carries are given to it each
    time it is handed out, a reused one too, so that a reload that changes
    them applies to the very next request.

    @ivar responseLimits: the bounds on the response heads it reads.
    @ivar readTimeout: the upstream's silence allowed while a response is
        due; None leaves each connection the one it was opened with.
    """

    def __init__(self, clock, maxIdlePerKey: int, idleTimeout: float,
                 responseLimits: Limits = DEFAULT_RESPONSE_LIMITS, readTimeout: Optional[float] = None):
        self.clock = clock
        self.maxIdlePerKey = maxIdlePerKey
        self.idleTimeout = idleTimeout
        self.responseLimits = responseLimits
        self.readTimeout = readTimeout
        self._idle: Dict[Hashable, List[UpstreamProtocol]] = {}
        self._generations: Dict[Hashable, int] = {}
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = clock

    def acquire(self, key: Hashable, connect: Callable[[], Deferred], fresh: bool = False) -> Deferred:
        """
        An idle connection for C{key} if there is one (unless C{fresh}), else
        a new one from C{connect()}; either way a L{Deferred} firing with an
        L{UpstreamProtocol}.
        """
        upstream = None if fresh else self.takeIdle(key)
        if upstream is not None:
            return succeed(upstream)
        return connect().addCallback(self._adopt, key)

    def takeIdle(self, key: Hashable) -> Optional[UpstreamProtocol]:
        """
        An idle connection for C{key}, lent at once, or None: a relay on a
        kept-alive connection need not go through a L{Deferred}.
        """
        idle = self._idle.get(key)
        while idle:
            upstream = idle.pop()
            if upstream.transport.connected and not upstream.transport.disconnecting:
                upstream.reused = True
                return self._lend(upstream)
        return None

    def _adopt(self, upstream: UpstreamProtocol, key: Hashable) -> UpstreamProtocol:
        upstream.pool = self
        upstream.key = key
        upstream.generation = self._generations.get(key, 0)
        upstream.reused = False
        return self._lend(upstream)

    def _lend(self, upstream: UpstreamProtocol) -> UpstreamProtocol:
        upstream.reader.limits = self.responseLimits
        if self.readTimeout is not None:
            upstream.readTimeout = self.readTimeout
        return upstream

    def release(self, upstream: UpstreamProtocol) -> None:
        """
        Keep a connection that finished an exchange cleanly, if there is room.
        """
        idle = self._idle.setdefault(upstream.key, [])
        stale = upstream.generation != self._generations.get(upstream.key, 0)
        if stale or len(idle) >= self.maxIdlePerKey or not self.running:
            upstream.transport.loseConnection()
            return
        idle.append(upstream)

    def forget(self, upstream: UpstreamProtocol) -> None:
        """
        Drop a connection that closed while idle.
        """
        idle = self._idle.get(upstream.key)
        if idle and upstream in idle:
            idle.remove(upstream)
            if not idle:
                del self._idle[upstream.key]

    def dropKey(self, key: Hashable) -> None:
        """
        Close the idle connections for C{key}, and those in use once they
        are done: where they lead is no longer where its requests should go
        (a backend's name resolves elsewhere).
        """
        self._generations[key] = self._generations.get(key, 0) + 1
        for upstream in self._idle.pop(key, []):
            upstream.transport.loseConnection()

    def idleCount(self, key: Optional[Hashable] = None) -> int:
        """
        Idle connections for C{key}, or for every key.
        """
        if key is None:
            return sum(len(idle) for idle in self._idle.values())
        return len(self._idle.get(key, ()))

    def sweep(self) -> None:
        deadline = self.clock.seconds() - self.idleTimeout
        for key, idle in list(self._idle.items()):
            if not idle:
                # A key per client (a pool sending PROXY headers) would
                # otherwise leave one empty list per client behind.
                del self._idle[key]
            for upstream in [u for u in idle if u.lastActivity <= deadline]:
                upstream.transport.loseConnection()

    def startService(self) -> None:
        super().startService()
        self._sweeper.start(max(self.idleTimeout / 4, 0.5), now=False)

    def stopService(self):
        super().stopService()
        if self._sweeper.running:
            self._sweeper.stop()
        # Idle connections carry nothing: closing them at once (a TLS close
        # would wait for the peer) lets shutdown finish promptly.
        for idle in list(self._idle.values()):
            for upstream in list(idle):
                upstream.transport.abortConnection()
        self._idle.clear()
