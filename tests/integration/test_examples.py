"""
The example filters in examples/ end to end: found as plugins from their
folders, and enabled in a real proxy between curl and a real origin.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.unit.test_examples import EXAMPLES, shippedAddHeader, shippedBlockPaths

from .support import CLEAN_ENV, REPO, Origin, Proxy, RawOrigin, curl

# Prints the names of the filters loaded as the config's filters list names
# them, from the plugins found on the path.
LOAD_FILTERS = """
from dualproxy.plugins import loadFilters
print(" ".join(f.name for f in loadFilters(["addheader", "blockpaths"])))
"""

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class ExampleTestCase(TestCase):
    def startProxy(self, settings, *filters):
        proxy = Proxy(settings, filters)
        self.addCleanup(proxy.stop)
        return proxy

    def reverse(self, origin, *filters):
        return self.startProxy({
            "mode": "reverse",
            "reverse": {
                "pools": {"app": {"backends": [{"url": f"http://{origin.address}"}]}},
                "routes": [{"prefix": "/", "pool": "app"}],
            },
        }, *filters)

    def forward(self, *filters, **settings):
        return self.startProxy({"forward": dict(allow_destinations=["127.0.0.0/8"], **settings)}, *filters)


class DiscoveryTests(ExampleTestCase):
    @inlineCallbacks
    def test_foundByName(self):
        """
        With each example's folder on the path, its dropin is found and its
        filter is enabled by the name the README gives.
        """
        path = os.pathsep.join([os.path.join(EXAMPLES, "addheader"), os.path.join(EXAMPLES, "blockpaths"), REPO])
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, ["-c", LOAD_FILTERS], env=dict(CLEAN_ENV, PYTHONPATH=path)
        )
        self.assertEqual((code, out), (0, b"addheader blockpaths\n"), err)


class AddHeaderTests(ExampleTestCase):
    def setUp(self):
        self.origin = Origin()
        self.addCleanup(self.origin.stop)

    @inlineCallbacks
    def check(self, url, *via):
        out, err, code = yield curl(*via, "-D", "-", "-H", "X-Proxied-By: forged", url)
        self.assertEqual(code, 0, err)
        head, body = out.split(b"\r\n\r\n", 1)
        fields = head.split(b"\r\n")[1:]
        self.assertIn(b"X-Content-Type-Options: nosniff", fields)
        self.assertIn(b"Referrer-Policy: strict-origin-when-cross-origin", fields)
        sent = json.loads(body)["headers"]
        self.assertIn(["X-Proxied-By", "dualproxy"], sent)
        self.assertNotIn(["X-Proxied-By", "forged"], sent)

    def test_reverse(self):
        proxy = self.reverse(self.origin, shippedAddHeader)
        return self.check(proxy.url + "/headers")

    def test_forward(self):
        proxy = self.forward(shippedAddHeader)
        return self.check(self.origin.url("/headers"), "-x", proxy.url)


class BlockPathsTests(ExampleTestCase):
    def setUp(self):
        self.origin = RawOrigin(OK, close=False)
        self.addCleanup(self.origin.stop)

    @inlineCallbacks
    def check(self, base, *via):
        """
        Each spelling of a blocked path is refused and never reaches the
        origin; an allowed one does.
        """
        for path in ("/admin", "/%61dmin/", "/static/../admin", "/admin;x=1", "/app/.git/config"):
            out, err, code = yield curl(*via, "--path-as-is", "-i", base + path)
            self.assertEqual(code, 0, err)
            self.assertTrue(out.startswith(b"HTTP/1.1 403 Forbidden\r\n"), (path, out))
            self.assertTrue(out.endswith(b"\r\n\r\nthis path is blocked by the proxy\n"), (path, out))
        self.assertEqual(self.origin.requests, [])
        out, err, code = yield curl(*via, "-i", base + "/administration")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        self.assertEqual(len(self.origin.requests), 1)
        return self.origin.requests[0]

    @inlineCallbacks
    def test_reverse(self):
        proxy = self.reverse(self.origin, shippedBlockPaths)
        head = yield self.check(proxy.url)
        self.assertTrue(head.startswith(b"GET /administration HTTP/1.1\r\n"), head)

    @inlineCallbacks
    def test_forward(self):
        proxy = self.forward(shippedBlockPaths)
        head = yield self.check(self.origin.url(""), "-x", proxy.url)
        self.assertTrue(head.startswith(b"GET /administration HTTP/1.1\r\n"), head)

    @inlineCallbacks
    def test_forwardToParent(self):
        """
        To a parent proxy the request goes in absolute form: the filter
        matches its path all the same.
        """
        proxy = self.forward(shippedBlockPaths, parent=f"http://{self.origin.address}")
        head = yield self.check("http://example.test", "-x", proxy.url)
        self.assertTrue(head.startswith(b"GET http://example.test/administration HTTP/1.1\r\n"), head)
