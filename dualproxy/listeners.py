"""
Listening on Twisted endpoint strings, as a service that knows its port,
and that pauses accepting while the process is out of file descriptors.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Callable, Dict, Optional

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


# Endpoint descriptions whose socket this process was handed already open
# (by a supervisor), with the descriptor to accept on instead of binding.
ADOPTED: Dict[str, int] = {}


# accept(2) failures that mean "no room for one more connection now": an
# immediate retry would fail the same way.
EXHAUSTED: Dict[int, str] = {
    errno.EMFILE: "this process has no file descriptor left",
    errno.ENFILE: "the system has no file descriptor left",
    errno.ENOBUFS: "the kernel has no socket buffer left",
    errno.ENOMEM: "the kernel has no memory left",
}

# Pauses begun in this process, by errno name ("EMFILE"), for metrics.
PAUSES: Dict[str, int] = {}


class AcceptBackoff:
    """
    When accepting fails for lack of descriptors: stop accepting, so that
    waiting clients stay queued in the listen backlog (instead of being
    accepted and closed, Twisted's own recovery, or spun on), and try again
    after a delay that doubles up to L{maxDelay} while it keeps failing.

    Descriptors come back from anywhere (client and upstream connections,
    cache files), so a timer, not any one kind of close, ends a pause.
    """

    firstDelay = 0.05
    maxDelay = 0.5

    def __init__(self, description: str, clock, pause: Callable[[], None], resume: Callable[[], None]):
        self.description = description
        self.clock = clock
        self._pause = pause
        self._resume = resume
        self.pausedSince: Optional[float] = None
        self._delay = self.firstDelay
        self._retry: Optional[IDelayedCall] = None

    def failed(self, code: int) -> None:
        """
        An accept failed with C{code}, one of L{EXHAUSTED}: pause, logging
        only the first failure of an episode.
        """
        self._pause()
        if self.pausedSince is None:
            self.pausedSince = self.clock.seconds()
            self._delay = self.firstDelay
            name = errno.errorcode[code]
            PAUSES[name] = PAUSES.get(name, 0) + 1
            log.warn("{endpoint}: cannot accept ({code}: {why}); accepting paused, "
                     "waiting clients stay in the listen backlog",
                     endpoint=self.description, code=name, why=EXHAUSTED[code])
        else:
            self._delay = min(self._delay * 2, self.maxDelay)
        self.stop()
        self._retry = self.clock.callLater(self._delay, self._tryAgain)

    def accepted(self) -> None:
        """
        An accept succeeded: any pause is over.
        """
        if self.pausedSince is not None:
            log.info("{endpoint}: accepting again after {seconds:.2f} s paused",
                     endpoint=self.description, seconds=self.clock.seconds() - self.pausedSince)
            self.pausedSince = None

    def stop(self) -> None:
        """
        Forget a pending retry (the port is going away).
        """
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _tryAgain(self) -> None:
        self._retry = None
        self._resume()


class _PausingSocket:
    """
    A listening socket as a Twisted port uses it, except that an accept
    failing for lack of descriptors pauses its L{AcceptBackoff} and then
    reads as "nobody waiting" (EAGAIN) to the port.
    """

    def __init__(self, listening: socket.socket, backoff: AcceptBackoff):
        self._socket = listening
        self._backoff = backoff

    def __getattr__(self, name: str):
        return getattr(self._socket, name)

    def accept(self):
        try:
            accepted = self._socket.accept()
        except OSError as e:
            if e.errno not in EXHAUSTED:
                raise
            self._backoff.failed(e.errno)
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        self._backoff.accepted()
        return accepted


def pauseWhenExhausted(port: IListeningPort, description: str, clock) -> Optional[AcceptBackoff]:
    """
    Make a listening socket port (TCP, UNIX, TLS over TCP, adopted) pause
    accepting while descriptors run out; None for ports without one.
    """
    listening = getattr(port, "socket", None)
    if listening is None or not hasattr(listening, "accept"):
        return None

    def resume() -> None:
        if port.connected and not port.disconnecting:
            port.startReading()

    backoff = AcceptBackoff(description, clock, port.stopReading, resume)
    port.socket = _PausingSocket(listening, backoff)
    return backoff


class LayerFactory(Factory):
    """
    A factory in front of a listener's own (the PROXY header reader, the
    on-demand handshake gate), whose protocols read a connection's first
    bytes and then hand it to C{wrappedFactory}'s: it starts, stops and
    logs as that one does.
    """

    noisy = False

    def __init__(self, wrappedFactory: Factory) -> None:
        self.wrappedFactory = wrappedFactory

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def logPrefix(self) -> str:
        return self.wrappedFactory.logPrefix()


class ListenError(Exception):
    """
    An endpoint could not be listened on; the message says which and why.
    """


class ListenerService(Service):
    """
    Listens on one endpoint (e.g. C{tcp:3128:interface=127.0.0.1}) while
    running.

    A listener that cannot listen stops start-up with one line naming the
    endpoint and the reason, instead of a traceback.  One whose accepts
    fail for lack of descriptors pauses (see L{AcceptBackoff}).
    """

    def __init__(self, description: str, factory, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.port: Optional[IListeningPort] = None
        self.backoff: Optional[AcceptBackoff] = None

    def portNumber(self) -> Optional[int]:
        """
        The port listened on (the one the OS chose for port 0), if any.
        """
        return getattr(self.port.getHost(), "port", None) if self.port is not None else None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.port is not None:
            return
        try:
            self.bind()
        except ListenError as e:
            sys.stderr.write(f"dualproxy: {e}\n")
            raise SystemExit(1)

    def bind(self) -> None:
        """
        Listen now (or adopt the socket a supervisor handed down).

        @raise ListenError: naming the endpoint and why not.
        """
        fd = ADOPTED.get(self.description)
        if fd is not None:
            with socket.socket(fileno=os.dup(fd)) as probe:
                family = probe.family
            # Perhaps shared with the other workers (a UNIX socket, or no
            # SO_REUSEPORT), and some socket objects (PyPy's) make it
            # blocking: one blocked accept would stall this worker.
            os.set_blocking(fd, False)
            self.port = self.reactor.adoptStreamPort(fd, family, self.factory)
        else:
            outcome: list = []
            serverFromString(self.reactor, self.description).listen(self.factory).addBoth(outcome.append)
            if outcome and isinstance(outcome[0], Failure):
                raise ListenError(f"cannot listen on {self.description}: {outcome[0].getErrorMessage()}")
            if outcome:
                self.port = outcome[0]
        if self.port is not None:
            self.backoff = pauseWhenExhausted(self.port, self.description, self.reactor)

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if self.backoff is not None:
            self.backoff.stop()
        if port is not None:
            return port.stopListening()
