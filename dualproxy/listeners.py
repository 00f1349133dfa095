"""
Listening on Twisted endpoint strings, as a service that knows its port.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Dict, Optional

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure


# Endpoint descriptions whose socket this process was handed already open
# (by a supervisor), with the descriptor to accept on instead of binding.
ADOPTED: Dict[str, int] = {}


class ListenError(Exception):
    """
    An endpoint could not be listened on; the message says which and why.
    """


class ListenerService(Service):
    """
    Listens on one endpoint (e.g. C{tcp:3128:interface=127.0.0.1}) while
    running.

    A listener that cannot listen stops start-up with one line naming the
    endpoint and the reason, instead of a traceback.
    """

    def __init__(self, description: str, factory, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.port: Optional[IListeningPort] = None

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
            # Shared with the other workers, and some socket objects (PyPy's)
            # make it blocking: one blocked accept would stall this worker.
            os.set_blocking(fd, False)
            self.port = self.reactor.adoptStreamPort(fd, family, self.factory)
            return
        outcome: list = []
        serverFromString(self.reactor, self.description).listen(self.factory).addBoth(outcome.append)
        if outcome and isinstance(outcome[0], Failure):
            raise ListenError(f"cannot listen on {self.description}: {outcome[0].getErrorMessage()}")
        if outcome:
            self.port = outcome[0]

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
