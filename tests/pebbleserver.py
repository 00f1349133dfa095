"""
A real ACME server for the tests: Debian's pebble, on loopback ports of
its own, with its HTTPS certificate made by L{tests.certs}.

Pebble cannot report a port it was given as 0, so free ports are picked
just before it starts; it logs that it listens before it has bound, so
readiness is probed with a connection rather than guessed with a sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from typing import Optional

from twisted.internet import defer, error, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.names import dns, server
from twisted.trial.unittest import SkipTest

from .certs import CertificateAuthority


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Loopback:
    """
    A resolver for which every name is 127.0.0.1, and has no other record.
    """

    def query(self, query: dns.Query, timeout=None) -> defer.Deferred:
        answers = []
        if query.type == dns.A:
            answers.append(dns.RRHeader(query.name.name, dns.A, ttl=0, payload=dns.Record_A("127.0.0.1", 0)))
        return defer.succeed((answers, [], []))


def startLoopbackDNS(testCase) -> str:
    """
    A name server on loopback (stopped at C{testCase}'s end) under which
    every name is 127.0.0.1, for pebble to validate any name on this
    machine.

    @return: its C{host:port}.
    """
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(server.DNSServerFactory(clients=[_Loopback()])),
                             interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    return f"127.0.0.1:{port.getHost().port}"


class PebbleServer(protocol.ProcessProtocol):
    """
    One pebble child; L{started} fires once its directory accepts connections.

    @ivar directoryURL: the ACME directory.
    @ivar managementURL: its management interface (C{/roots/0} is the root
        every certificate it issues chains to).
    @ivar caBundle: the CA file to trust for both URLs' HTTPS.
    """

    def __init__(self, directory: str, port: int, managementPort: int) -> None:
        self.directory = directory
        self.port = port
        self.managementPort = managementPort
        self.directoryURL = f"https://localhost:{port}/dir"
        self.managementURL = f"https://localhost:{managementPort}"
        self.caBundle = ""
        self.output = b""
        self.logged: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.transport = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"ACME directory available at" in self.output and not self.logged.called:
            self.logged.callback(None)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.logged.called:
            self.logged.errback(RuntimeError("pebble did not start:\n" + self.output.decode(errors="replace")))
        self.ended.callback(None)

    def stop(self) -> defer.Deferred:
        if not self.ended.called:
            self.transport.signalProcess("KILL")
        return self.ended

    @defer.inlineCallbacks
    def _accepting(self, port: int, attempts: int = 200):
        for _ in range(attempts):
            if self.ended.called:
                raise RuntimeError("pebble exited:\n" + self.output.decode(errors="replace"))
            try:
                connected = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                    protocol.Factory.forProtocol(protocol.Protocol))
            except error.ConnectError:
                yield deferLater(reactor, 0.01, lambda: None)
            else:
                connected.transport.abortConnection()
                return
        raise RuntimeError(f"pebble never accepted connections on port {port}")

    @defer.inlineCallbacks
    def _start(self):
        yield self.logged
        yield self._accepting(self.port)
        yield self._accepting(self.managementPort)
        return self


def startPebble(testCase, httpPort: int, tlsPort: Optional[int] = None, directory: Optional[str] = None,
                dnsServer: Optional[str] = None, **environment: str) -> defer.Deferred:
    """
    Start pebble for C{testCase} (killed at its end), validating HTTP-01 on
    C{httpPort} and TLS-ALPN-01 on C{tlsPort} of the names' addresses
    (C{localhost} is 127.0.0.1 through the system resolver, every name is
    through L{startLoopbackDNS}'s C{dnsServer}).

    @param environment: more C{PEBBLE_*} settings, over the fast and
        deterministic defaults.
    @return: a Deferred firing with the running L{PebbleServer}.
    """
    executable = shutil.which("pebble")
    if executable is None:
        raise SkipTest("pebble is not installed (.ci/run installs it)")
    if directory is None:
        directory = tempfile.mkdtemp(prefix="pebble-")
        testCase.addCleanup(shutil.rmtree, directory, True)
    authority = CertificateAuthority(directory, "pebble test CA", "pebble-ca")
    certPath, keyPath = authority.issue("pebble", ["localhost"])
    server = PebbleServer(directory, freePort(), freePort())
    server.caBundle = authority.certPath
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{server.port}",
        "managementListenAddress": f"127.0.0.1:{server.managementPort}",
        "certificate": certPath,
        "privateKey": keyPath,
        "httpPort": httpPort,
        "tlsPort": tlsPort if tlsPort is not None else freePort(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}
    configPath = os.path.join(directory, "pebble.json")
    with open(configPath, "w") as f:
        json.dump(config, f)
    env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PATH": os.environ.get("PATH", ""),
           **environment}
    arguments = [executable, "-config", configPath] + (["-dnsserver", dnsServer] if dnsServer else [])
    server.transport = reactor.spawnProcess(server, executable, arguments, env=env, path=directory)
    testCase.addCleanup(server.stop)
    return server._start()
