"""
What every client-side factory shares, whatever it speaks: the open
connections and the connection limits (C{[limits] max_connections} and
C{max_connections_per_client}).
"""

from __future__ import annotations

from typing import Dict, Optional

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

_log = Logger()


class LimitedFactory(Factory):
    """
    Counts its open connections, in all and per client address, and
    refuses a new one beyond a limit; the connections report their own
    opening and closing (L{opened}, L{closed}).
    """

    # Zero: no limit.  Beyond a limit a new connection is closed at once.
    maxConnections = 0
    maxConnectionsPerClient = 0

    def __init__(self):
        self.connections: set = set()
        self.perClient: Dict[str, int] = {}

    def admits(self, addr) -> bool:
        """
        Whether a new connection from C{addr} fits the connection limits.
        """
        if self.maxConnections and len(self.connections) >= self.maxConnections:
            return False
        host = getattr(addr, "host", None)
        return not (self.maxConnectionsPerClient and host is not None
                    and self.perClient.get(host, 0) >= self.maxConnectionsPerClient)

    def opened(self, connection, host: Optional[str]) -> None:
        """
        C{connection} from the client at C{host} (None: no IP address) is
        open.
        """
        self.connections.add(connection)
        if host is not None:
            self.perClient[host] = self.perClient.get(host, 0) + 1

    def closed(self, connection, host: Optional[str]) -> None:
        """
        C{connection} is gone; it was counted by L{opened}, or is ignored.
        """
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        if host is not None:
            left = self.perClient.pop(host, 1) - 1
            if left:
                self.perClient[host] = left

    def buildProtocol(self, addr) -> Optional[Protocol]:
        if not self.admits(addr):
            _log.warn("connection from {client} refused: connection limit reached",
                      client=getattr(addr, "host", "-"))
            return None
        return self.buildConnection()

    def buildConnection(self) -> Protocol:
        """
        The protocol for an admitted connection.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement buildConnection")
