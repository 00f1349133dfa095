"""
The proxy started the way a user starts it (twistd dualproxy ...), driven by
curl and raw sockets: safe defaults and a slow client's memory bound.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import sys
from typing import Optional

from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, TestCase

from dualproxy.workers import listenerSockets, reusePortAvailable

from ..certs import CertificateAuthority
from .support import CLEAN_ENV, REPO, Origin, StreamingOrigin, curl, pattern

TWISTD = "from twisted.scripts.twistd import run; run()"


class _Twistd(protocol.ProcessProtocol):
    """
    A twistd child; fires C{listening} with the port from its log.
    """

    def __init__(self):
        self.output = b""
        self.watches: list = []
        self.listening: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data):
        self.output += data
        for watch in list(self.watches):
            start, text, done = watch
            if text in self.output[start:]:
                self.watches.remove(watch)
                done.callback(None)
        match = re.search(rb"(?:HTTPServerFactory|SocksFactory) starting on (\d+)", self.output)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    errReceived = outReceived

    def waitFor(self, text: bytes, since: Optional[int] = None) -> defer.Deferred:
        """
        Fires when the child's output contains C{text}, written from now on
        (or from offset C{since}).
        """
        done: defer.Deferred = defer.Deferred()
        start = len(self.output) if since is None else since
        if text in self.output[start:]:
            done.callback(None)
        else:
            self.watches.append((start, text, done))
        return done

    def processEnded(self, reason):
        if not self.listening.called:
            self.listening.errback(RuntimeError(self.output.decode(errors="replace")))
        self.ended.callback(None)


def rss(pid: int, field: str = "VmRSS") -> int:
    """
    Resident memory of a process in KiB, from /proc.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


class TwistdTestCase(TestCase):
    @inlineCallbacks
    def startTwistd(self, *args: str, pythonPath: str = REPO, script: str = TWISTD):
        child = _Twistd()
        env = dict(CLEAN_ENV, PYTHONPATH=pythonPath)
        transport = reactor.spawnProcess(
            child, sys.executable,
            [sys.executable, "-c", script, "--nodaemon", "--pidfile=", "--logfile=-", "dualproxy", *args],
            env=env, path=REPO,
        )

        def stop():
            if transport.pid is not None:
                transport.signalProcess("KILL")
            return child.ended

        self.addCleanup(stop)
        port = yield child.listening
        return transport.pid, port, child


class DefaultsTests(TwistdTestCase):
    @inlineCallbacks
    def test_defaultRefusesLoopbackDestinations(self):
        """
        Started with no options but a port, the proxy is no open relay into
        the machine it runs on.
        """
        origin = Origin()
        self.addCleanup(origin.stop)
        pid, port, child = yield self.startTwistd("--mode", "forward", "--listen", "tcp:0:interface=127.0.0.1")
        out, err, code = yield curl("-x", f"http://127.0.0.1:{port}", "-D", "-", origin.url("/bytes/3"))
        self.assertIn(b"HTTP/1.1 403 Forbidden", out)
        self.assertEqual(origin.connections, 0)

    @inlineCallbacks
    def test_relaysWithAllowedDestination(self):
        origin = Origin()
        self.addCleanup(origin.stop)
        pid, port, child = yield self.startTwistd(
            "--listen", "tcp:0:interface=127.0.0.1", "--allow-destination", "127.0.0.0/8"
        )
        out, err, code = yield curl("-x", f"http://127.0.0.1:{port}", origin.url("/bytes/1000"))
        self.assertEqual((code, out), (0, pattern(1000)), err)
        self.assertIn(b'"GET ' + origin.url("/bytes/1000").encode() + b' HTTP/1.1" 200 1000', child.output)


class ReverseQuickStartTests(TwistdTestCase):
    @inlineCallbacks
    def test_backendsFromTheCommandLine(self):
        """
        twistd dualproxy --mode reverse --backend URL --backend URL balances
        across both with no config file.
        """
        a, b = Origin("a"), Origin("b")
        self.addCleanup(a.stop)
        self.addCleanup(b.stop)
        pid, port, child = yield self.startTwistd(
            "--mode", "reverse", "--listen", "tcp:0:interface=127.0.0.1",
            "--backend", f"http://{a.address}", "--backend", f"http://{b.address}",
        )
        urls = [f"http://127.0.0.1:{port}/name"] * 4
        out, err, code = yield curl(*[arg for url in urls for arg in ("-w", "\n", url)])
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(out.split()), [b"a", b"a", b"b", b"b"])


# Over one TLS connection to 127.0.0.1:PORT (name www.test, trusting CA):
# prints the certificate's O, then on each line read from stdin makes a
# request and prints its status; a second connection then prints its O.
RELOAD_CLIENT = """
import http.client, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
def connect():
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn.connect()
    return conn
def organization(conn):
    subject = dict(item[0] for item in conn.sock.getpeercert()["subject"])
    return subject["organizationName"]
first = connect()
print(organization(first), flush=True)
sys.stdin.readline()
first.request("GET", "/name", headers={"Host": "www.test"})
print(first.getresponse().status, flush=True)
print(organization(connect()), flush=True)
"""


class CertificateReloadTests(TwistdTestCase):
    @inlineCallbacks
    def test_sighupReloadsCertificatesKeepingConnections(self):
        """
        SIGHUP re-reads the certificate files: new connections get the new
        certificate, and a connection opened before keeps working.
        """
        directory = FilePath(self.mktemp())
        directory.makedirs()
        ca = CertificateAuthority(directory.path)
        cert, key = ca.issue("www", names=["www.test"], organization="first")
        config = directory.child("tls.toml")
        config.setContent(
            f'mode = "reverse"\n[tls]\nlisten = ["tcp:0:interface=127.0.0.1"]\nhttp2 = false\n'
            f'certificates = [{{cert = "{cert}", key = "{key}"}}]\n'.encode()
        )
        origin = Origin("a")
        self.addCleanup(origin.stop)
        pid, port, child = yield self.startTwistd(
            "--config", config.path, "--listen", "tcp:0:interface=127.0.0.1", "--backend", f"http://{origin.address}",
        )
        yield child.waitFor(b"(TLS) starting on", since=0)
        tlsPort = int(re.findall(rb"\(TLS\) starting on (\d+)", child.output)[0])
        client = _LineClient()
        reactor.spawnProcess(client, sys.executable, [sys.executable, "-c", RELOAD_CLIENT, str(tlsPort), ca.certPath],
                             env=CLEAN_ENV)
        self.addCleanup(lambda: client.ended)
        first = yield client.nextLine()
        self.assertEqual(first, b"first")
        newer, _ = ca.issue("next", names=["www.test"], organization="second")
        os.replace(newer, cert)
        os.replace(os.path.join(directory.path, "next.key"), key)
        reloaded = child.waitFor(b"configuration reloaded")
        os.kill(pid, signal.SIGHUP)
        yield reloaded
        client.transport.write(b"go\n")
        status = yield client.nextLine()
        self.assertEqual(status, b"200")
        second = yield client.nextLine()
        self.assertEqual(second, b"second")


class _LineClient(protocol.ProcessProtocol):
    def __init__(self):
        self.lines = []
        self.waiting = []
        self.buffer = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if self.waiting:
                self.waiting.pop(0).callback(line)
            else:
                self.lines.append(line)

    def nextLine(self):
        if self.lines:
            return defer.succeed(self.lines.pop(0))
        self.waiting.append(defer.Deferred())
        return self.waiting[-1]

    def errReceived(self, data):
        self.errors = getattr(self, "errors", b"") + data

    def processEnded(self, reason):
        for waiting in self.waiting:
            waiting.errback(RuntimeError(getattr(self, "errors", b"").decode(errors="replace")))
        self.waiting = []
        self.ended.callback(None)


THIRD_PARTY_FILTER = """
from twisted.plugin import IPlugin
from zope.interface import implementer

from dualproxy.http.message import Refusal
from dualproxy.interfaces import IRequestFilter


@implementer(IPlugin, IRequestFilter)
class Stamp:
    name = "stamp-test"

    def request(self, head, client):
        if head.target.endswith(b"/refused"):
            return Refusal(403, "refused by stamp-test")
        head.headers.add(b"X-Stamped", b"third-party")

    def response(self, request, head):
        head.headers.add(b"X-Stamp-Response", b"yes")


stamp = Stamp()
"""


class ThirdPartyFilterTests(TwistdTestCase):
    @inlineCallbacks
    def test_filterFromAnotherPackageIsFoundAndUsed(self):
        """
        A filter shipped as a plugin by another package, enabled by name in
        the config, rewrites requests and responses and can refuse.
        """
        package = FilePath(self.mktemp())
        package.child("twisted").child("plugins").makedirs()
        package.child("twisted").child("plugins").child("stamp_test.py").setContent(THIRD_PARTY_FILTER.encode())
        config = package.child("proxy.toml")
        config.setContent(b'filters = ["stamp-test"]\n[forward]\nallow_destinations = ["127.0.0.0/8"]\n')
        origin = Origin()
        self.addCleanup(origin.stop)
        pid, port, child = yield self.startTwistd(
            "--config", config.path, "--listen", "tcp:0:interface=127.0.0.1",
            pythonPath=os.pathsep.join([package.path, REPO]),
        )
        out, err, code = yield curl("-x", f"http://127.0.0.1:{port}", "-D", "-", origin.url("/headers"))
        head, body = out.split(b"\r\n\r\n", 1)
        self.assertIn(b"X-Stamp-Response: yes", head)
        self.assertIn(["X-Stamped", "third-party"], json.loads(body)["headers"])
        out, err, code = yield curl("-x", f"http://127.0.0.1:{port}", "-D", "-", origin.url("/refused"))
        self.assertIn(b"403 Forbidden", out)
        self.assertIn(b"refused by stamp-test", out)


class SlowClientTests(TwistdTestCase):
    SIZE = 1 << 30

    @inlineCallbacks
    def test_clientReadingNothingKeepsMemoryFlat(self):
        """
        Relaying 1 GiB to a client that reads nothing: backpressure stops
        the origin, and the proxy's memory stays within a few MiB of idle.
        Then the client reads it all, and every byte arrives.

        "Idle" is measured after a first large transfer, so that what a JIT
        (PyPy) compiles on first use is not counted as buffering.
        """
        pid, port, child = yield self.startTwistd(
            "--listen", "tcp:0:interface=127.0.0.1", "--allow-destination", "127.0.0.0/8",
            "--access-log", "off",
        )
        warmUp = StreamingOrigin(256 << 20)
        self.addCleanup(warmUp.stop)
        client = _request(port, warmUp)
        self.addCleanup(client.close)
        received = yield _readAll(client, warmUp.size)
        self.assertEqual(received, warmUp.size)

        idle = rss(pid)
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")  # restart the peak (VmHWM) from here
        origin = StreamingOrigin(self.SIZE)
        self.addCleanup(origin.stop)
        client = _request(port, origin)
        self.addCleanup(client.close)
        sentWhenPaused = yield origin.paused
        self.assertLess(sentWhenPaused, 64 << 20)
        grown = rss(pid) - idle
        self.assertLess(grown, 8 * 1024, f"proxy grew by {grown} KiB while the client read nothing")

        received = yield _readAll(client, self.SIZE)
        self.assertEqual(received, self.SIZE)
        peak = rss(pid, "VmHWM") - idle
        # PyPy's collector lets a 1 GiB stream's garbage pile up to its next
        # major collection: measured 12-16 MiB, so its bound has room.
        bound = 32 if platform.python_implementation() == "PyPy" else 16
        self.assertLess(peak, bound * 1024, f"proxy peaked {peak} KiB above idle")


def _request(port: int, origin: StreamingOrigin) -> socket.socket:
    """
    A raw client that sends one GET for C{origin} through the proxy and
    reads nothing yet.
    """
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    address = origin.address.encode()
    client.sendall(b"GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n" % (address, address))
    return client


def _readAll(client: socket.socket, size: int) -> defer.Deferred:
    """
    Read the response head and C{size} body bytes in a thread, so the
    reactor keeps running the origin meanwhile; fires with the body size.
    """
    from twisted.internet.threads import deferToThread

    def read():
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += client.recv(65536)
        body = len(buffer.split(b"\r\n\r\n", 1)[1])
        while body < size:
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            body += len(chunk)
        return body

    return deferToThread(read)




class WorkerTests(TwistdTestCase):
    @inlineCallbacks
    def test_workersSharePortAndReplaceTheDead(self):
        """
        With --workers 2 each worker accepts on its own SO_REUSEPORT socket
        of the supervisor's, the supervisor's admin listener shows them
        both, and a killed worker is replaced on the same socket while the
        port keeps answering: fresh connections reach both.
        """
        origin = Origin("a")
        self.addCleanup(origin.stop)
        config = FilePath(self.mktemp())
        config.setContent(b'mode = "reverse"\n[admin]\nlisten = "tcp:0:interface=127.0.0.1"\n')
        pid, port, child = yield self.startTwistd(
            "--config", config.path, "--listen", "tcp:0:interface=127.0.0.1", "--backend", f"http://{origin.address}",
            "--workers", "2",
        )
        yield child.waitFor(b"Site starting on", since=0)
        admin = int(re.findall(rb"Site starting on (\d+)", child.output)[0])
        while len(re.findall(rb"worker \d: .*HTTPServerFactory starting on", child.output)) < 2:
            yield child.waitFor(b"HTTPServerFactory starting on")
        status = yield self.status(admin)
        workers = status["workers"]
        self.assertEqual(len({worker["pid"] for worker in workers}), 2)
        for worker in workers:
            self.assertIn(port, [listener["port"] for listener in worker["listeners"]])
        victim = workers[0]
        before = len(child.output)
        os.kill(victim["pid"], signal.SIGKILL)
        started = re.compile(b"worker %d: .*HTTPServerFactory starting on" % victim["worker"])
        while not started.search(child.output, before):
            yield child.waitFor(b"HTTPServerFactory starting on")
        # Fresh connections spread over both workers' own sockets: the
        # replacement adopted its predecessor's.
        out, err, code = yield curl("-H", "Connection: close", *[f"http://127.0.0.1:{port}/name"] * 40)
        self.assertEqual(out, b"a" * 40, err)
        status = yield self.status(admin)
        self.assertEqual(len(status["workers"]), 2)
        self.assertNotIn(victim["pid"], [worker["pid"] for worker in status["workers"]])
        out, err, code = yield curl(f"http://127.0.0.1:{admin}/metrics")
        self.assertIn(b"dualproxy_worker_restarts_total 1.0", out)
        answered = {"0": 0.0, "1": 0.0}
        for worker, count in re.findall(rb'^dualproxy_requests_total\{.*worker="(\d)".*\} (\S+)$', out, re.M):
            answered[worker.decode()] += float(count)
        self.assertEqual(sum(answered.values()), 40)
        self.assertTrue(all(answered.values()), f"each worker answers some: {answered}")
        # SIGTERM drains the workers before the supervisor exits.
        os.kill(pid, signal.SIGTERM)
        yield child.ended
        self.assertIn(b"Server Shut Down", child.output)
        for worker in status["workers"]:
            self.assertFalse(os.path.exists(f"/proc/{worker['pid']}"), "no worker outlives the supervisor")

    @inlineCallbacks
    def status(self, admin: int):
        out, err, code = yield curl(f"http://127.0.0.1:{admin}/status")
        self.assertEqual(code, 0, err)
        return json.loads(out)


class DrainTests(TwistdTestCase):
    @inlineCallbacks
    def test_sigtermFinishesInFlightResponse(self):
        """
        SIGTERM stops accepting at once and lets a slow response in flight
        complete before the process exits.
        """
        origin = Origin("a")
        self.addCleanup(origin.stop)
        pid, port, child = yield self.startTwistd(
            "--listen", "tcp:0:interface=127.0.0.1", "--backend", f"http://{origin.address}", "--mode", "reverse",
        )
        held = origin.whenHeld()
        answered = curl("-s", "-i", f"http://127.0.0.1:{port}/held")
        yield held
        closed = child.waitFor(b"Port %d Closed" % port)
        os.kill(pid, signal.SIGTERM)
        yield closed
        refused = yield curl("-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/name")
        self.assertEqual(refused[0], b"000")
        origin.release()
        out, err, code = yield answered
        self.assertIn(b"HTTP/1.1 200 OK", out)
        self.assertTrue(out.endswith(b"a"))
        yield child.ended
        self.assertIn(b"Server Shut Down", child.output)


class PerWorkerSocketTests(TestCase):
    def setUp(self):
        if not reusePortAvailable():
            raise SkipTest("SO_REUSEPORT is not available here")

    def test_socketsShareOnePort(self):
        """
        For port 0 the supervisor binds one socket per worker, all on the
        port the first got, each its own accept queue, none accepting yet.
        """
        ports = listenerSockets(reactor, "tcp:0:interface=127.0.0.1", 3)
        self.addCleanup(lambda: [port.stopListening() for port in ports])
        self.assertEqual(len({port.fileno() for port in ports}), 3)
        self.assertEqual(len({port.getHost().port for port in ports}), 1)
        self.assertTrue(all(port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for port in ports))

    def test_portInUse(self):
        """
        A port another process holds, even with SO_REUSEPORT, is refused as
        it is without workers.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        self.assertRaises(CannotListenError, listenerSockets, reactor, f"tcp:{taken}:interface=127.0.0.1", 2)

    def test_unixSocketShared(self):
        """
        A UNIX-socket listener is one socket all workers share.
        """
        path = self.mktemp()
        ports = listenerSockets(reactor, f"unix:{path}", 2)
        self.addCleanup(lambda: [port.stopListening() for port in ports])
        self.assertEqual(len(ports), 1)
