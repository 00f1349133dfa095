"""
The example filters in examples/, imported as a user with the example's
folder on their path would, and tested on heads alone.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dualproxy.http.message import Headers, Refusal, RequestHead, ResponseHead
from dualproxy.interfaces import IRequestFilter
from tests.tables import fromTable

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")


def loadExample(name: str):
    """
    The example's package and the filter its dropin module makes.
    """
    folder = os.path.join(EXAMPLES, name)
    sys.path.insert(0, folder)
    try:
        package = importlib.import_module(name)
        dropin = runpy.run_path(os.path.join(folder, "twisted", "plugins", f"{name}_plugin.py"))
    finally:
        sys.path.remove(folder)
    return package, dropin[name]


addheader, shippedAddHeader = loadExample("addheader")
blockpaths, shippedBlockPaths = loadExample("blockpaths")


class AddHeaderTests(SynchronousTestCase):
    def test_shippedDropin(self):
        self.assertTrue(verifyObject(IRequestFilter, shippedAddHeader))
        self.assertEqual(shippedAddHeader.name, "addheader")

    def test_requestFieldReplacesTheClients(self):
        """
        A client cannot forge a field the upstream relies on.
        """
        head = RequestHead(b"GET", b"/", headers=Headers([(b"x-proxied-by", b"forged"), (b"Host", b"a")]))
        self.assertIsNone(shippedAddHeader.request(head, None))
        self.assertEqual(list(head.headers), [(b"Host", b"a"), (b"X-Proxied-By", b"dualproxy")])

    def test_responseFieldsAdded(self):
        head = ResponseHead(200, b"OK", Headers([(b"Content-Length", b"0")]))
        shippedAddHeader.response(RequestHead(b"GET", b"/"), head)
        self.assertEqual(head.headers.get(b"x-content-type-options"), b"nosniff")
        self.assertEqual(head.headers.get(b"referrer-policy"), b"strict-origin-when-cross-origin")

    def test_upstreamsOwnResponseFieldWins(self):
        head = ResponseHead(200, b"OK", Headers([(b"referrer-policy", b"no-referrer")]))
        shippedAddHeader.response(RequestHead(b"GET", b"/"), head)
        self.assertEqual(head.headers.getAll(b"referrer-policy"), [b"no-referrer"])

    def test_fieldsAsPairs(self):
        """
        Pairs keep their order and may repeat a name.
        """
        fields = [("Link", "</a.css>; rel=preload"), ("Link", "</b.js>; rel=preload")]
        head = ResponseHead(200)
        addheader.AddHeaders("links", response=fields).response(RequestHead(b"GET", b"/"), head)
        self.assertEqual(head.headers.getAll(b"link"), [b"</a.css>; rel=preload", b"</b.js>; rel=preload"])
        request = RequestHead(b"GET", b"/", headers=Headers([(b"Link", b"forged")]))
        addheader.AddHeaders("links", request=fields).request(request, None)
        self.assertEqual(request.headers.getAll(b"link"), [b"</a.css>; rel=preload", b"</b.js>; rel=preload"])

    def test_badFieldsStopLoading(self):
        for fields in ({"Bad Name": "x"}, {"": "x"}, {"X-A": "a\r\nX-Injected: 1"}, {"X-A": "\u2603"}):
            self.assertRaises(ValueError, addheader.AddHeaders, "bad", response=fields)
            self.assertRaises(ValueError, addheader.AddHeaders, "bad", request=fields)


NORMALIZED = [
    ("origin form", b"/a/b?admin", "/a/b"),
    ("absolute form", b"http://example.test:8080/a/b?c", "/a/b"),
    ("absolute form with https", b"https://example.test/a", "/a"),
    ("absolute form without a path", b"http://example.test?x", "/"),
    ("absolute form without path or query", b"http://example.test", "/"),
    ("percent-encoding decoded", b"/%61dmin", "/admin"),
    ("double encoding decoded", b"/%2561dmin", "/admin"),
    ("an encoded slash separates", b"/a%2Fb", "/a/b"),
    ("an encoded question mark stays in the path", b"/a%3Fb?c", "/a?b"),
    ("dot segments resolved", b"/a/./b/../../admin", "/admin"),
    ("encoded dot segments resolved", b"/a/%2e%2e/admin", "/admin"),
    ("dot-dot above the root stays at the root", b"/../../admin", "/admin"),
    ("empty segments dropped", b"//admin//x", "/admin/x"),
    ("path parameters dropped", b"/admin;jsessionid=1/x", "/admin/x"),
    ("dot-dot with a parameter resolved", b"/a/..;/admin", "/admin"),
    ("trailing slash kept", b"/admin/", "/admin/"),
    ("trailing dot-dot names a directory", b"/a/b/..", "/a/"),
    ("the root", b"/", "/"),
    ("UTF-8 decoded", b"/caf%C3%A9", "/caf\u00e9"),
    ("other bytes kept as surrogates", b"/%FF", "/\udcff"),
    ("three rounds of decoding", b"/%252561", "/a"),
    ("four rounds are too many", b"/%25252561", None),
]


@fromTable(NORMALIZED, "check")
class NormalizedPathTests(SynchronousTestCase):
    def check(self, target, expected):
        self.assertEqual(blockpaths.normalizedPath(blockpaths.targetPath(target)), expected)


BLOCKED = [
    ("the admin area", b"/admin", True),
    ("below the admin area", b"/admin/users?x=1", True),
    ("a longer name is not the admin area", b"/administration", False),
    ("the admin area percent-encoded", b"/%61dmin/", True),
    ("the admin area by dot segments", b"/static/../admin", True),
    ("the admin area with a path parameter", b"/admin;x=1", True),
    ("the admin area in absolute form", b"http://example.test/admin", True),
    ("the admin area in a query is not its path", b"/search?q=/admin", False),
    ("a git folder anywhere", b"/app/.git/config", True),
    ("an env file", b"/.env", True),
    ("an env-like name is not one", b"/.envelope", False),
    ("an ordinary page", b"http://example.test/index.html", False),
]


@fromTable(BLOCKED, "check")
class ShippedBlockPathsTests(SynchronousTestCase):
    def check(self, target, blocked):
        refusal = shippedBlockPaths.request(RequestHead(b"GET", target), None)
        if blocked:
            self.assertIsInstance(refusal, Refusal)
            self.assertEqual((refusal.status, refusal.reason), (403, "this path is blocked by the proxy"))
        else:
            self.assertIsNone(refusal)


class BlockPathsTests(SynchronousTestCase):
    def test_shippedDropin(self):
        self.assertTrue(verifyObject(IRequestFilter, shippedBlockPaths))
        self.assertEqual(shippedBlockPaths.name, "blockpaths")

    def test_tooDeeplyEncodedRefused(self):
        refusal = shippedBlockPaths.request(RequestHead(b"GET", b"/%25252561"), None)
        self.assertEqual((refusal.status, refusal.reason), (403, "the request path is percent-encoded too many times"))

    def test_patternsSearchedAnywhere(self):
        block = blockpaths.BlockPaths("php", [r"\.php$", r"(?i)^/wp-"])
        for target, blocked in [(b"/a/b.php", True), (b"/b.php5", False), (b"/WP-login", True), (b"/a/wp-x", False)]:
            self.assertEqual(block.request(RequestHead(b"GET", target), None) is not None, blocked, target)

    def test_responsesUnchanged(self):
        head = ResponseHead(200, b"OK", Headers([(b"A", b"b")]))
        shippedBlockPaths.response(RequestHead(b"GET", b"/admin"), head)
        self.assertEqual(list(head.headers), [(b"A", b"b")])
