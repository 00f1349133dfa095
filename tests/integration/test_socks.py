"""
SOCKS mode with real clients: curl through the proxy to an origin the test
starts on 127.0.0.1, with and without a login, refused where it must be,
and started by twistd from a config file.
"""

from __future__ import annotations

import os
import signal

from twisted.internet.defer import inlineCallbacks
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from dualproxy.policy.auth import hashPassword

from .support import Origin, Proxy, curl, pattern
from .test_twistd import TwistdTestCase

# curl's exit code when the SOCKS proxy refuses (or cannot complete) a tunnel.
CURL_SOCKS_REFUSED = 97


class SocksTestCase(TestCase):
    def setUp(self):
        self.origin = Origin()
        self.addCleanup(self.origin.stop)

    def proxy(self, **socks) -> Proxy:
        socks.setdefault("allow_destinations", ["127.0.0.0/8"])
        socks.setdefault("ports", ["1-65535"])
        proxy = Proxy({"mode": "socks", "socks": socks}, names={"origin.test": ["127.0.0.1"]})
        self.addCleanup(proxy.stop)
        return proxy

    def passwords(self) -> str:
        path = self.mktemp()
        FilePath(path).setContent(f"alice:{hashPassword('s3cret')}\n".encode())
        return os.path.abspath(path)

    def originURL(self, path: str, host: str = "origin.test") -> str:
        return f"http://{host}:{self.origin.port.getHost().port}{path}"


class TunnelTests(SocksTestCase):
    @inlineCallbacks
    def test_socks5Hostname(self):
        """
        The proxy resolves the name (through its own resolver: the test's).
        """
        proxy = self.proxy()
        out, err, code = yield curl("--socks5-hostname", proxy.address, self.originURL("/bytes/100000"))
        self.assertEqual((code, out), (0, pattern(100000)), err)

    @inlineCallbacks
    def test_socks5Address(self):
        """
        The client resolves the name and sends an IPv4 address.
        """
        proxy = self.proxy()
        out, err, code = yield curl("--socks5", proxy.address, self.origin.url("/name"))
        self.assertEqual((code, out), (0, b"origin"), err)

    @inlineCallbacks
    def test_login(self):
        proxy = self.proxy(auth_file=self.passwords())
        out, err, code = yield curl("--socks5-hostname", proxy.address, "--proxy-user", "alice:s3cret",
                                    self.originURL("/name"))
        self.assertEqual((code, out), (0, b"origin"), err)
        out, err, code = yield curl("-x", f"socks5h://alice:s3cret@{proxy.address}", self.originURL("/name"))
        self.assertEqual((code, out), (0, b"origin"), err)

    @inlineCallbacks
    def test_wrongPasswordOrNone(self):
        proxy = self.proxy(auth_file=self.passwords())
        out, err, code = yield curl("--socks5-hostname", proxy.address, "-U", "alice:wrong", self.originURL("/name"))
        self.assertNotEqual(code, 0)
        out, err, code = yield curl("--socks5-hostname", proxy.address, self.originURL("/name"))
        self.assertNotEqual(code, 0)
        self.assertEqual(self.origin.connections, 0)


class RefusalTests(SocksTestCase):
    @inlineCallbacks
    def test_privateDestinationRefusedByDefault(self):
        """
        Without allow_destinations, the loopback origin is out of reach,
        by address or by a name resolving to it.
        """
        proxy = self.proxy(allow_destinations=[])
        for option, url in (("--socks5", self.origin.url("/name")), ("--socks5-hostname", self.originURL("/name"))):
            out, err, code = yield curl(option, proxy.address, url)
            self.assertEqual(code, CURL_SOCKS_REFUSED, err)
            self.assertIn(b"(2)", err)
        self.assertEqual(self.origin.connections, 0)

    @inlineCallbacks
    def test_clientNotAllowed(self):
        proxy = self.proxy(allow_clients=["192.0.2.0/24"])
        out, err, code = yield curl("--socks5-hostname", proxy.address, self.originURL("/name"))
        self.assertNotEqual(code, 0)
        self.assertEqual(self.origin.connections, 0)

    @inlineCallbacks
    def test_portNotAllowed(self):
        proxy = self.proxy(ports=[443])
        out, err, code = yield curl("--socks5-hostname", proxy.address, self.originURL("/name"))
        self.assertEqual(code, CURL_SOCKS_REFUSED, err)
        self.assertEqual(self.origin.connections, 0)


class TwistdSocksTests(TwistdTestCase):
    @inlineCallbacks
    def test_fromConfigFile(self):
        """
        twistd dualproxy --mode socks starts from a conf file, logs each
        session, and reloads on SIGHUP.
        """
        origin = Origin()
        self.addCleanup(origin.stop)
        config = FilePath(self.mktemp())
        config.setContent(b'mode = "socks"\nlisten = ["tcp:0:interface=127.0.0.1"]\n'
                          b'[socks]\nallow_destinations = ["127.0.0.0/8"]\nports = ["1-65535"]\n')
        pid, port, child = yield self.startTwistd("--mode", "socks", "--config", config.path)
        out, err, code = yield curl("--socks5-hostname", f"127.0.0.1:{port}", origin.url("/bytes/1000"))
        self.assertEqual((code, out), (0, pattern(1000)), err)
        yield child.waitFor(b'"SOCKS5 CONNECT ' + origin.address.encode() + b'" succeeded 1', since=0)
        config.setContent(config.getContent().replace(b'"1-65535"', b"443"))
        os.kill(pid, signal.SIGHUP)
        yield child.waitFor(b"configuration reloaded", since=0)
        out, err, code = yield curl("--socks5-hostname", f"127.0.0.1:{port}", origin.url("/bytes/1000"))
        self.assertEqual(code, CURL_SOCKS_REFUSED, err)
