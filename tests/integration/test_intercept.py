"""
TLS interception end to end: curl trusting only the proxy's CA reaches a
real https origin through a CONNECT the proxy opens, and what it asks
passes through the proxy like plain HTTP.
"""

from __future__ import annotations

import json
import os
import shutil

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest

from dualproxy.interception.authority import createAuthority
from dualproxy.policy.passwd import hashPassword

from .support import CLEAN_ENV, Origin, curl, pattern, selfSignedCertificate, serveTLS
from .test_cache import ScriptedOrigin
from .test_dashboard import CHROMIUM, QUIET
from .test_forward import ForwardTestCase, settings


class InterceptTests(ForwardTestCase):
    def setUp(self):
        self.caDir = os.path.abspath(self.mktemp())
        self.caCert, self.caKey = createAuthority(self.caDir)
        cert, key = selfSignedCertificate("localhost")
        self.originCA = os.path.abspath(self.mktemp())
        with open(self.originCA, "wb") as f:
            f.write(cert)
        self.origin = Origin()
        self.port = serveTLS(self, self.origin, cert, key)

    def proxy(self, **intercept):
        table = {"ca_cert": self.caCert, "ca_key": self.caKey, "ports": [self.port]}
        table.update(intercept)
        return self.startProxy(settings(connect_ports=[self.port], tls_ca=self.originCA, intercept=table,
                                        via="interceptor"),
                               names={"localhost": ["127.0.0.1"]})

    @inlineCallbacks
    def test_decryptedAndRelayed(self):
        proxy = self.proxy()
        url = f"https://localhost:{self.port}"
        out, err, code = yield curl("-x", proxy.url, "--cacert", self.caCert, url + "/bytes/300000")
        self.assertEqual((code, out == pattern(300000)), (0, True), err)
        out, err, code = yield curl("-x", proxy.url, "--cacert", self.caCert, "--http1.1", url + "/headers")
        headers = json.loads(out)["headers"]
        self.assertIn(["Via", "1.1 interceptor"], headers, "the request went through the proxy's rewriting")
        out, err, code = yield curl("-x", proxy.url, "--cacert", self.originCA, url + "/bytes/1")
        self.assertEqual(code, 60, "the client sees the minted certificate, not the origin's")

    @inlineCallbacks
    def test_http2Inside(self):
        proxy = self.proxy()
        out, err, code = yield curl("-x", proxy.url, "--cacert", self.caCert, "--http2", "-o", "/dev/null",
                                    "-w", "%{http_version} %{size_download}", f"https://localhost:{self.port}/bytes/5000")
        self.assertEqual((code, out), (0, b"2 5000"), err)

    @inlineCallbacks
    def test_bypassTunnelsUntouched(self):
        proxy = self.proxy(bypass=["localhost"])
        out, err, code = yield curl("-x", proxy.url, "--cacert", self.originCA, f"https://localhost:{self.port}/bytes/10")
        self.assertEqual((code, out), (0, pattern(10)), err)

    @inlineCallbacks
    def test_wrongHostRefused(self):
        proxy = self.proxy()
        out, err, code = yield curl("-x", proxy.url, "--cacert", self.caCert, "-H", "Host: other.test",
                                    "-D", "-", "-o", "/dev/null", f"https://localhost:{self.port}/bytes/1")
        self.assertIn(b"421", out)

    @inlineCallbacks
    def test_browserTrustingTheCA(self):
        """
        Headless Chromium with the CA in its own certificate store (an NSS
        database, as a user importing it would have) loads a page through
        the proxy without a certificate error.
        """
        certutil = shutil.which("certutil")
        if CHROMIUM is None or certutil is None:
            raise SkipTest("chromium and certutil are not installed (.ci/run installs them)")
        home = os.path.abspath(self.mktemp())
        database = os.path.join(home, ".pki", "nssdb")
        os.makedirs(database)
        env = dict(CLEAN_ENV, HOME=home)
        for arguments in (["-N", "--empty-password"], ["-A", "-t", "C,,", "-n", "dualproxy", "-i", self.caCert]):
            out, err, code = yield getProcessOutputAndValue(certutil, ["-d", "sql:" + database, *arguments], env=env)
            self.assertEqual(code, 0, err)
        proxy = self.proxy()
        out, err, code = yield getProcessOutputAndValue(
            CHROMIUM, [*QUIET, f"--user-data-dir={os.path.join(home, 'profile')}", f"--proxy-server={proxy.url}",
                       "--proxy-bypass-list=<-loopback>", "--dump-dom", f"https://localhost:{self.port}/headers"],
            env=env, path=home)
        self.assertEqual(code, 0, err)
        self.assertIn(b"interceptor", out, "the page came through the proxy, decrypted")

    @inlineCallbacks
    def test_originVerified(self):
        """
        The origin's certificate is checked as the client would have: one
        the proxy does not trust is a 502 inside the tunnel, saying why.
        """
        table = {"ca_cert": self.caCert, "ca_key": self.caKey, "ports": [self.port]}
        proxy = self.startProxy(settings(connect_ports=[self.port], intercept=table), names={"localhost": ["127.0.0.1"]})
        out, err, code = yield curl("-x", proxy.url, "--cacert", self.caCert, "-D", "-", "-o", "/dev/null",
                                    f"https://localhost:{self.port}/bytes/1")
        self.assertIn(b" 502", out)
        self.assertIn(b"tls_certificate_error", out)

    @inlineCallbacks
    def test_cachedAndLogged(self):
        """
        What is asked inside a tunnel is cached and logged as the https://
        request it is, with the user who logged in on the CONNECT.
        """
        cert, key = selfSignedCertificate("localhost")
        scripted = ScriptedOrigin()
        port = serveTLS(self, scripted, cert, key)
        scripted.script("/a", b"A" * 100, Cache_Control="max-age=60")
        with open(self.originCA, "wb") as f:
            f.write(cert)
        users = os.path.abspath(self.mktemp())
        with open(users, "w") as f:
            f.write(f"bob:{hashPassword('pw')}\n")
        log = os.path.abspath(self.mktemp())
        table = {"ca_cert": self.caCert, "ca_key": self.caKey, "ports": [port]}
        proxy = self.startProxy({"access_log": "combined", "access_log_file": log, **settings(
            connect_ports=[port], tls_ca=self.originCA, intercept=table, cache=True, auth_file=users)},
            names={"localhost": ["127.0.0.1"]})
        for expected in ("miss", "hit"):
            out, err, code = yield curl("-x", proxy.url, "-U", "bob:pw", "--cacert", self.caCert, "--http1.1",
                                        "-D", "-", f"https://localhost:{port}/a")
            self.assertEqual(code, 0, err)
            self.assertIn(b"A" * 100, out)
            self.assertIn(expected.encode(), out.split(b"\r\n\r\n")[1].lower(), "after the CONNECT's own head")
        self.assertEqual(scripted.count("/a"), 1, "the second came from the cache")
        yield proxy.stop()
        with open(log) as f:
            lines = [line for line in f.read().splitlines() if "GET https://" in line]
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], rf'^127\.0\.0\.1 - bob \[.*\] "GET https://localhost:{port}/a HTTP/1\.1" 200 100 ')
