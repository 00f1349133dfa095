"""
A Redis client for the reactor: one pipelined command connection and, for
those who subscribe, one pub/sub connection, each kept up by a
L{ClientService} that reconnects with backoff.

It never queues a command while disconnected and never waits past its
timeout: a command that cannot be answered in time fails at once, and a
connection whose replies are late is dropped (so replies never fall out
of step with the commands), which is what lets the cache and the rate
limits choose fail-open or fail-closed instead of hanging a request.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from .protocol import ProtocolError, RedisError, ReplyParser, encode

_log = Logger()


class RedisUnavailable(RedisError):
    """
    No answer could be had: not connected, timed out, or connection lost.
    """


class _Connection(Protocol):
    """
    One connection's commands and their replies, in order.
    """

    def __init__(self, client: RedisClient):
        self.client = client
        self.parser = ReplyParser(client.maxReply)
        self.waiting: Deque[Tuple[defer.Deferred, Any]] = deque()
        self.lost = False
        # Digests of the scripts this connection has sent whole.
        self.scripts: Set[str] = set()

    def unwrapped(self) -> _Connection:
        """
        This protocol itself, where L{ClientService} hands out a proxy of it.
        """
        return self

    def execute(self, *args) -> defer.Deferred:
        d = defer.Deferred()
        timer = self.client.reactor.callLater(self.client.timeout, self._late)
        self.waiting.append((d, timer))
        self.transport.write(encode(*args))
        return d

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self.parser.feed(data)
        except ProtocolError as e:
            _log.warn("Redis at {endpoint} sent a bad reply, reconnecting: {error}",
                      endpoint=self.client.endpointDescription, error=e)
            self.transport.abortConnection()
            return
        for reply in replies:
            self.replyReceived(reply)

    def replyReceived(self, reply: Any) -> None:
        if not self.waiting:
            return
        d, timer = self.waiting.popleft()
        timer.cancel()
        if isinstance(reply, RedisError):
            d.errback(reply)
        else:
            d.callback(reply)

    def _late(self) -> None:
        if self.lost:
            return
        _log.warn("Redis at {endpoint} did not answer within {timeout} s, reconnecting",
                  endpoint=self.client.endpointDescription, timeout=self.client.timeout)
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        self.lost = True
        self.client._lost(self)
        waiting, self.waiting = self.waiting, deque()
        for d, timer in waiting:
            if timer.active():
                timer.cancel()
            d.errback(RedisUnavailable("the connection to Redis was lost"))


class _Subscriber(_Connection):
    """
    A connection in pub/sub mode: pushed messages go to their channel's
    callback, the rest answer commands.
    """

    def replyReceived(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            callback = self.client.subscriptions.get(reply[1])
            if callback is not None:
                callback(reply[2])
            return
        super().replyReceived(reply)


class _Factory(Factory):
    def __init__(self, client: RedisClient, protocol):
        self.client = client
        self.protocol = protocol

    def buildProtocol(self, addr):
        return self.protocol(self.client)


class RedisClient(MultiService):
    """
    The proxy's connection to one Redis server.

    @ivar prefix: what the keys of everything using it begin with (bytes).
    @ivar up: whether the command connection is ready now.
    @ivar failures: commands that failed for want of an answer, for
        metrics.
    @ivar subscriptions: callbacks by channel (bytes) of L{subscribe}.
    """

    def __init__(self, reactor, endpoint: str, timeout: float = 0.5, database: int = 0,
                 username: Optional[str] = None, password: Optional[str] = None, prefix: str = "dualproxy:",
                 maxReply: int = 512 << 20):
        super().__init__()
        self.reactor = reactor
        self.endpointDescription = endpoint
        self.timeout = timeout
        self.database = database
        self.username = username
        self.password = password
        self.prefix = prefix.encode("utf-8")
        self.maxReply = maxReply
        self.up = False
        self.failures = 0
        self.subscriptions: Dict[bytes, Callable[[bytes], None]] = {}
        self._commands: Optional[_Connection] = None
        self._subscriber: Optional[_Subscriber] = None
        self._scripts: Dict[str, str] = {}
        self._waiting: List[defer.Deferred] = []
        self._service(_Connection)

    def _service(self, protocol) -> None:
        endpoint = clientFromString(self.reactor, self.endpointDescription)
        service = ClientService(endpoint, _Factory(self, protocol), retryPolicy=backoffPolicy(0.1, 5.0),
                                clock=self.reactor, prepareConnection=self._ready)
        service.setServiceParent(self)

    def _ready(self, connection: _Connection) -> defer.Deferred:
        """
        Log in and choose the database before the connection is used.
        """
        connection = connection.unwrapped()
        steps: List[Sequence[Any]] = []
        if self.password is not None:
            steps.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.database:
            steps.append(("SELECT", self.database))
        if isinstance(connection, _Subscriber):
            # One channel a command: each is confirmed by a reply of its own.
            steps.extend(("SUBSCRIBE", channel) for channel in self.subscriptions)
        d = defer.gatherResults([connection.execute(*step) for step in steps], consumeErrors=True)

        def ready(_) -> None:
            if connection.lost:
                return
            if isinstance(connection, _Subscriber):
                self._subscriber = connection
                # Messages published while we were away are lost for good:
                # subscribers start again from nothing they hold.
                for callback in self.subscriptions.values():
                    callback(None)
            else:
                self._commands = connection
                if not self.up:
                    self.up = True
                    _log.info("Redis at {endpoint} is up", endpoint=self.endpointDescription)
            # Told once ClientService, next in this chain, has the connection
            # as made: stopping it before then leaves it in a state it
            # cannot leave.
            self.reactor.callLater(0, self._tellConnected)

        def refused(failure) -> None:
            # Dropped as a lost connection, which ClientService retries with
            # backoff (a failed set-up it would leave open).
            _log.error("Redis at {endpoint} refused the connection's set-up: {error}",
                       endpoint=self.endpointDescription, error=failure.value.subFailure.value)
            connection.transport.loseConnection()

        return d.addCallbacks(ready, refused)

    def _lost(self, connection: _Connection) -> None:
        if connection is self._subscriber:
            self._subscriber = None
        if connection is self._commands:
            self._commands = None
            if self.up:
                self.up = False
                _log.warn("Redis at {endpoint} is down; retrying", endpoint=self.endpointDescription)

    def whenConnected(self) -> defer.Deferred:
        """
        Fires once the command connection, and the subscriber if anything
        subscribed, are ready.
        """
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        self._tellConnected()
        return d

    def _tellConnected(self) -> None:
        if self._commands is None or (self.subscriptions and self._subscriber is None):
            return
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(self)

    def execute(self, *args) -> defer.Deferred:
        """
        Send one command; its reply, or a L{RedisError} failure (a
        L{RedisUnavailable} when there was no answer to be had).
        """
        connection = self._commands
        if connection is None:
            self.failures += 1
            return defer.fail(RedisUnavailable(f"Redis at {self.endpointDescription} is not connected"))
        return connection.execute(*args).addErrback(self._counted)

    def _counted(self, failure):
        if failure.check(RedisUnavailable):
            self.failures += 1
        return failure

    def evaluate(self, script: str, keys: Sequence[Any], args: Sequence[Any]) -> defer.Deferred:
        """
        Run a Lua C{script} atomically.  Its text goes once a connection,
        in order with the commands around it; after that only its digest.
        """
        connection = self._commands
        digest = self._scripts.get(script)
        if digest is None:
            digest = self._scripts[script] = hashlib.sha1(script.encode("utf-8")).hexdigest()
        if connection is None or digest not in connection.scripts:
            if connection is not None:
                connection.scripts.add(digest)
            return self.execute("EVAL", script, len(keys), *keys, *args)

        def unknown(failure):
            # The server's script cache was flushed under us.
            failure.trap(RedisError)
            if not str(failure.value).startswith("NOSCRIPT"):
                return failure
            return self.execute("EVAL", script, len(keys), *keys, *args)

        return self.execute("EVALSHA", digest, len(keys), *keys, *args).addErrback(unknown)

    def subscribe(self, channel: bytes, callback: Callable[[Optional[bytes]], None]) -> None:
        """
        Call C{callback(message)} for each message published on
        C{channel}, and C{callback(None)} whenever messages may have been
        missed (at each (re)connection of the subscriber).
        """
        first = not self.subscriptions
        self.subscriptions[channel] = callback
        if first:
            self._service(_Subscriber)
        elif self._subscriber is not None:
            self._subscriber.execute("SUBSCRIBE", channel)

    def publish(self, channel: bytes, message: bytes) -> defer.Deferred:
        return self.execute("PUBLISH", channel, message)
