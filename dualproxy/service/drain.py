"""
Stopping without cutting requests short.
"""

from __future__ import annotations

from typing import Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import LoopingCall

from ..listeners import ListenerService
from .listeners import ListenerGroup


class Drain(Service):
    """
    Stops gracefully: no new connections, each open one told to drain
    (L{dualproxy.interfaces.IClientConnection.drain}: idle ones close, busy
    ones once answered, HTTP/2 ones refuse new streams and send a GOAWAY
    after their last), and after C{timeout} seconds whatever is left
    cut.  Its parent stops it before anything the requests in flight use.

    @ivar timeout: C{timeouts.drain}, which a reload may change.
    """

    interval = 0.05

    def __init__(self, clients: ListenerGroup, accepting: Callable[[], Iterable[ListenerService]], clock,
                 timeout: float):
        """
        @param clients: the listeners whose connections are drained.
        @param accepting: every listener to close at once (the admin one too).
        """
        self.clients = clients
        self.accepting = accepting
        self.clock = clock
        self.timeout = timeout

    def stopService(self):
        """
        Drain; the parent stops this child first and then all of them, when
        it finds this one stopped already.
        """
        if not self.running:
            return None
        super().stopService()
        stopping = [listener.stopService() for listener in self.accepting() if listener.running]
        for connection in self.clients.connections():
            connection.drain()
        drained: Deferred = Deferred()
        deadline = self.clock.seconds() + self.timeout

        def check() -> None:
            if self.clients.inFlight() == 0 or self.clock.seconds() >= deadline:
                poll.stop()

        poll = LoopingCall(check)
        poll.clock = self.clock
        poll.start(self.interval, now=True).addCallback(lambda _: drained.callback(None))

        def closeRest(_):
            for connection in self.clients.connections():
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abortConnection()
            return gatherResults([d for d in stopping if d is not None])

        return drained.addCallback(closeRest)
