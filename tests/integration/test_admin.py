"""
Operating a running proxy: the admin listener's metrics, status and
dashboard data, reloads that keep connections, and a draining stop.
"""

from __future__ import annotations

import json
import sys

from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from dualproxy.config import ConfigError, fromDict
from dualproxy.plugins import findModes
from dualproxy.service.reload import ReloadOnHangup

from .support import CLEAN_ENV, Origin, Proxy, curl

# Asks PATH on one keep-alive connection once per line read on stdin, and
# prints "status body local-port" for each; stops at end of input.
STEADY_CLIENT = """
import http.client, sys
host, port = sys.argv[1].split(":")
conn = http.client.HTTPConnection(host, int(port), timeout=20)
for line in sys.stdin:
    conn.request("GET", sys.argv[2])
    response = conn.getresponse()
    print(response.status, response.read().decode(), conn.sock.getsockname()[1], flush=True)
"""


def reverseConfig(*origins, admin=None, **extra):
    config = {
        "mode": "reverse",
        "reverse": {
            "pools": {"app": {"backends": [{"url": f"http://{origin.address}"} for origin in origins]}},
            "routes": [{"prefix": "/", "pool": "app"}],
        },
        "admin": admin if admin is not None else {"listen": "tcp:0:interface=127.0.0.1"},
    }
    config.update(extra)
    return config


class _Steady(protocol.ProcessProtocol):
    """
    Drives STEADY_CLIENT: one request per L{ask}, answers as lines.
    """

    def __init__(self):
        self.buffer = b""
        self.waiting = []
        self.ended = defer.Deferred()

    def ask(self) -> defer.Deferred:
        self.waiting.append(defer.Deferred())
        self.transport.write(b"go\n")
        return self.waiting[-1]

    def outReceived(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self.waiting.pop(0).callback(line.decode().split())

    def processEnded(self, reason):
        self.ended.callback(None)


class AdminTestCase(TestCase):
    def start(self, config, configure=None):
        proxy = Proxy(config)
        self.addCleanup(proxy.stop)
        admin = [listener for listener in proxy.service.listeners() if listener.description == config["admin"]["listen"]][-1]
        proxy.admin = f"http://127.0.0.1:{admin.port.getHost().port}"
        if configure is not None:
            proxy.service.configure = configure
        return proxy

    def origins(self, *names):
        found = [Origin(name) for name in names]
        for origin in found:
            self.addCleanup(origin.stop)
        return found

    @inlineCallbacks
    def get(self, url, *args):
        out, err, code = yield curl(*args, url)
        self.assertEqual(code, 0, err)
        return out

    @inlineCallbacks
    def metrics(self, proxy):
        from prometheus_client.parser import text_string_to_metric_families

        text = yield self.get(proxy.admin + "/metrics")
        samples = {}
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def steadyClient(self, proxy, path="/name"):
        client = _Steady()
        reactor.spawnProcess(client, sys.executable, [sys.executable, "-c", STEADY_CLIENT, proxy.address, path],
                             env=CLEAN_ENV)

        def stop():
            client.transport.closeStdin()
            return client.ended

        self.addCleanup(stop)
        return client


class MetricsTests(AdminTestCase):
    @inlineCallbacks
    def test_metricsFollowTraffic(self):
        a, = self.origins("a")
        proxy = self.start(reverseConfig(a))
        before = yield self.metrics(proxy)
        key = ("dualproxy_requests_total", (("backend", f"http://{a.address}"), ("method", "GET"), ("mode", "reverse"),
                                            ("pool", "app"), ("route", "*/"), ("status", "2xx")))
        self.assertNotIn(key, before)
        sent = 0
        for path in ("/name", "/name", "/name", "/missing"):
            sent += len((yield self.get(proxy.url + path)))
        after = yield self.metrics(proxy)
        self.assertEqual(after[key], 3)
        self.assertEqual(after[("dualproxy_requests_total", tuple(
            (name, value if name != "status" else "4xx") for name, value in key[1]))], 1)
        count = after[("dualproxy_request_duration_seconds_count", (("mode", "reverse"), ("route", "*/")))]
        self.assertEqual(count, 4)
        upstream = after[("dualproxy_upstream_duration_seconds_count",
                          (("backend", f"http://{a.address}"), ("mode", "reverse"), ("pool", "app")))]
        self.assertEqual(upstream, 4)
        self.assertEqual(after[("dualproxy_backend_up", (("backend", f"http://{a.address}"), ("pool", "app")))], 1)
        self.assertGreaterEqual(after[("dualproxy_upstream_connections", (("mode", "reverse"),))], 1)
        self.assertEqual(after[("dualproxy_upstream_idle_connections", (("mode", "reverse"),))], 1)
        self.assertEqual(after[("dualproxy_sent_bytes_total", (("mode", "reverse"),))], sent)

    @inlineCallbacks
    def test_errorsCountedByType(self):
        proxy = self.start(reverseConfig(*self.origins("gone")))
        proxy.service.pools["app"].backends[0].port = 1
        yield self.get(proxy.url + "/name")
        samples = yield self.metrics(proxy)
        errors = {labels: value for (name, labels), value in samples.items() if name == "dualproxy_errors_total"}
        self.assertEqual(sum(errors.values()), 1)

    @inlineCallbacks
    def test_statusDocument(self):
        a, b = self.origins("a", "b")
        config = reverseConfig(a, b)
        config["forward"] = {"parent": "http://user:secret@127.0.0.1:3128"}
        proxy = self.start(config)
        status = json.loads((yield self.get(proxy.admin + "/status")))
        self.assertEqual(status["mode"], "reverse")
        self.assertEqual([backend["url"] for backend in status["pools"][0]["backends"]],
                         [f"http://{a.address}", f"http://{b.address}"])
        self.assertTrue(all(backend["healthy"] for backend in status["pools"][0]["backends"]))
        self.assertEqual(status["routes"], [{"host": "*", "prefix": "/", "target": "pool:app"}])
        self.assertEqual(status["config"]["forward"]["parent"]["authorization"], "<redacted>")
        self.assertNotIn("secret", json.dumps(status))

    @inlineCallbacks
    def test_seriesForTheDashboard(self):
        a, = self.origins("a")
        proxy = self.start(reverseConfig(a))
        clock = proxy.service.metrics
        yield self.get(proxy.url + "/name")
        clock._tick(clock.clock.seconds() + 1)
        series = json.loads((yield self.get(proxy.admin + "/series")))
        self.assertEqual(sum(second["requests"] for second in series), 1)
        self.assertEqual(sum(second["statuses"].get("2xx", 0) for second in series), 1)
        page = yield self.get(proxy.admin + "/")
        self.assertIn(b"<title>dualproxy</title>", page)

    @inlineCallbacks
    def test_basicAuth(self):
        from dualproxy.policy.passwd import main as passwd

        path = self.mktemp()
        self.patch(sys, "stdin", _Lines("s3cret\n"))
        passwd([path, "ops"])
        proxy = self.start(reverseConfig(*self.origins("a"), admin={
            "listen": "tcp:0:interface=127.0.0.1", "auth_file": path}))
        out = yield self.get(proxy.admin + "/status", "-o", "/dev/null", "-w", "%{http_code}")
        self.assertEqual(out, b"401")
        out = yield self.get(proxy.admin + "/status", "-u", "ops:s3cret")
        self.assertEqual(json.loads(out)["mode"], "reverse")


class _Lines:
    def __init__(self, text):
        self.lines = text.splitlines(True)

    def readline(self):
        return self.lines.pop(0) if self.lines else ""

    def isatty(self):
        return False


class ReloadTests(AdminTestCase):
    @inlineCallbacks
    def test_reloadUnderLoadKeepsConnectionsAndSwitchesRoutes(self):
        """
        A steady client on one keep-alive connection sees every request
        answered across a reload, the same connection throughout, and the
        new configuration's backend afterwards.
        """
        a, b = self.origins("a", "b")
        mode = findModes()["reverse"]
        proxy = self.start(reverseConfig(a))
        # The same listener descriptions: the listeners are kept.
        newConfig = fromDict(dict(reverseConfig(b), access_log="off", listen=list(proxy.config.listen)))
        proxy.service.configure = lambda: (mode, newConfig, [])
        client = self.steadyClient(proxy)
        answers = []
        for _ in range(20):
            answers.append((yield client.ask()))
        self.assertIsNone(proxy.service.reload())
        for _ in range(20):
            answers.append((yield client.ask()))
        self.assertEqual({status for status, _, _ in answers}, {"200"})
        self.assertEqual([name for _, name, _ in answers], ["a"] * 20 + ["b"] * 20)
        self.assertEqual(len({port for _, _, port in answers}), 1)
        samples = yield self.metrics(proxy)
        self.assertEqual(samples[("dualproxy_config_reloads_total", (("outcome", "success"),))], 1)
        hangup = [child for child in proxy.service if isinstance(child, ReloadOnHangup)]
        self.assertEqual([child.service for child in hangup], [proxy.service], "SIGHUP reloads again")
        self.assertIsNone(proxy.service.reload())

    @inlineCallbacks
    def test_busyNewListenerRejectsReload(self):
        """
        A reload whose new listener cannot bind changes nothing.
        """
        a, b = self.origins("a", "b")
        busy = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        mode = findModes()["reverse"]
        proxy = self.start(reverseConfig(a))
        newConfig = fromDict(dict(reverseConfig(b), access_log="off", listen=list(proxy.config.listen) + [
            f"tcp:{busy.getHost().port}:interface=127.0.0.1"]))
        proxy.service.configure = lambda: (mode, newConfig, [])
        error = proxy.service.reload()
        self.assertIn(f"cannot listen on tcp:{busy.getHost().port}", error)
        self.assertEqual((yield self.get(proxy.url + "/name")), b"a")
        self.assertEqual(len(proxy.service.listeners()), 2)

    @inlineCallbacks
    def test_badReloadKeepsRunningConfig(self):
        a, = self.origins("a")

        def broken():
            raise ConfigError("reverse.pools.app.backends", "a pool needs at least one backend")

        proxy = self.start(reverseConfig(a), configure=broken)
        out = yield self.get(proxy.admin + "/reload", "-X", "POST", "-w", "\n%{http_code}")
        body, status = out.rsplit(b"\n", 1)
        self.assertEqual(status, b"422")
        self.assertIn("a pool needs at least one backend", json.loads(body)["error"])
        self.assertEqual((yield self.get(proxy.url + "/name")), b"a")
        samples = yield self.metrics(proxy)
        self.assertEqual(samples[("dualproxy_config_reloads_total", (("outcome", "failure"),))], 1)

    @inlineCallbacks
    def test_tunnelSurvivesReload(self):
        """
        A CONNECT tunnel opened before a reload keeps carrying bytes.
        """
        a, = self.origins("a")
        mode = findModes()["forward"]
        settings = {"mode": "forward", "forward": {"allow_destinations": ["127.0.0.0/8"],
                                                   "connect_ports": [int(a.address.split(":")[1])]},
                    "admin": {"listen": "tcp:0:interface=127.0.0.1"}}
        proxy = self.start(settings)
        newConfig = fromDict(dict(settings, access_log="off", listen=list(proxy.config.listen)))
        proxy.service.configure = lambda: (mode, newConfig, [])
        endpoint = protocol.ClientCreator(reactor, _Tunnel)
        host, port = proxy.address.split(":")
        tunnel = yield endpoint.connectTCP(host, int(port))
        tunnel.transport.write(f"CONNECT {a.address} HTTP/1.1\r\nHost: {a.address}\r\n\r\n".encode())
        yield tunnel.until(b"\r\n\r\n")
        self.assertIsNone(proxy.service.reload())
        tunnel.transport.write(b"GET /name HTTP/1.1\r\nHost: a\r\n\r\n")
        data = yield tunnel.until(b"\r\n\r\na")
        self.assertTrue(data.endswith(b"a"))
        tunnel.transport.loseConnection()


class _Tunnel(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.waiting = None

    def until(self, marker: bytes) -> defer.Deferred:
        self.waiting = (marker, defer.Deferred())
        self._check()
        return self.waiting[1]

    def dataReceived(self, data):
        self.data += data
        self._check()

    def _check(self):
        if self.waiting is not None and self.waiting[0] in self.data:
            marker, deferred = self.waiting
            self.waiting = None
            before, _, self.data = self.data.partition(marker)
            deferred.callback(before + marker)


class DrainTests(AdminTestCase):
    @inlineCallbacks
    def test_stopFinishesInFlightResponse(self):
        """
        Stopping stops accepting at once, but a response in flight completes
        before the service is stopped.
        """
        a, = self.origins("a")
        proxy = Proxy(reverseConfig(a, admin={"listen": "tcp:0:interface=127.0.0.1"}))
        held = a.whenHeld()
        answered = curl("-s", "-i", proxy.url + "/held")
        yield held
        stopped = proxy.service.stopService()
        self.assertFalse(stopped.called)
        refused = yield curl("-s", "-o", "/dev/null", "-w", "%{http_code}", proxy.url + "/name")
        self.assertEqual(refused[0], b"000")
        a.release()
        out, err, code = yield answered
        self.assertIn(b"HTTP/1.1 200 OK", out)
        self.assertTrue(out.endswith(b"a"))
        yield stopped
