"""
A real redis-server for the tests, on a Unix socket in the test's own
directory: no port to race for, nothing shared with other tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest

from dualproxy.redis.client import RedisClient


class RedisServer(protocol.ProcessProtocol):
    """
    One redis-server child; L{started} fires once it accepts connections.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.socket = os.path.join(directory, "redis.sock")
        self.endpoint = "unix:" + self.socket
        self.output = b""
        self.started: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.transport = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"ready to accept connections" in self.output.lower() and not self.started.called:
            self.started.callback(self)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.started.called:
            self.started.errback(RuntimeError("redis-server did not start:\n" + self.output.decode(errors="replace")))
        self.ended.callback(None)

    def stop(self) -> defer.Deferred:
        """
        Kill the server (a crash, as far as its clients can tell).
        """
        if not self.ended.called:
            self.transport.signalProcess("KILL")
        return self.ended

    def client(self, testCase, **kw) -> RedisClient:
        """
        A running client of this server, stopped at the test's end.
        """
        client = RedisClient(reactor, self.endpoint, **kw)
        client.startService()
        testCase.addCleanup(client.stopService)
        return client


def startRedis(testCase, *options: str, directory: str = None) -> defer.Deferred:
    """
    Start a redis-server for C{testCase} (killed at its end), keeping
    nothing on disk; C{options} are more C{--name value} arguments.

    @param directory: where its socket goes (to restart a server on the
        same socket); a new temporary one by default.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        raise SkipTest("redis-server is not installed (.ci/run installs it)")
    if directory is None:
        directory = tempfile.mkdtemp(prefix="redis-")
        testCase.addCleanup(shutil.rmtree, directory, True)
    server = RedisServer(directory)
    args = [executable, "--port", "0", "--unixsocket", server.socket, "--save", "", "--appendonly", "no",
            "--dir", directory, *options]
    server.transport = reactor.spawnProcess(server, executable, args, env={}, path=directory)
    testCase.addCleanup(server.stop)
    return server.started
