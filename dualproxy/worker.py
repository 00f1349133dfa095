"""
One worker process of a supervised proxy (see L{dualproxy.workers}): the
same command line as C{twistd dualproxy}, served on listening sockets the
supervisor passed down (this worker's own for a TCP listener, a shared one
otherwise), with a private admin socket the supervisor reads.

Usage (by the supervisor only): python -m dualproxy.worker INDEX ADMIN-SOCKET
FDS-JSON DUALPROXY-OPTIONS...
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import List

from twisted.internet import stdio
from twisted.internet.protocol import Protocol


def main(argv: List[str]) -> None:
    index, adminSocket, fds, *arguments = argv
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from . import listeners
    from .config import AdminSettings
    from .tap import Options
    from .twistedcompat import fastDispatch
    from .workers import checkListenersUnchanged

    listeners.ADOPTED.update({description: int(fd) for description, fd in json.loads(fds).items()})
    options = Options()
    options.parseOptions(arguments)

    def load():
        mode, config, filters = options.load()
        # The supervisor serves the admin listener; each worker's is private.
        private = AdminSettings(listen=f"unix:{adminSocket}:mode=600")
        return mode, dataclasses.replace(config, admin=private), filters

    def reload():
        # A listener the supervisor did not bind would be this worker's
        # alone; one it bound but no worker adopts would queue connections
        # that nobody accepts.
        mode, config, filters = load()
        checkListenersUnchanged(list(config.listen) + list(config.tls.listen), listeners.ADOPTED)
        return mode, config, filters

    mode, config, filters = load()
    # The supervisor logs each line with its own time and the worker's name.
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout, timeFormat=None)], redirectStandardIO=False)
    service = mode.makeService(config, filters)
    service.configure = reload
    fastDispatch(reactor)
    service.privilegedStartService()
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    with open(os.devnull, "wb") as nowhere:
        stdio.StandardIO(_Lifeline(reactor), stdin=0, stdout=nowhere.fileno())
        reactor.run()


class _Lifeline(Protocol):
    """
    The supervisor's end of our stdin: when it closes, the supervisor is
    gone (even killed outright) and this worker must not outlive it.
    """

    def __init__(self, reactor):
        self.reactor = reactor

    def connectionLost(self, reason=None) -> None:
        if self.reactor.running:
            self.reactor.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
