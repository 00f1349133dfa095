"""
The intermediary header rules (RFC 9110 section 7.6), request-target
parsing and re-framing, and the L{Headers} multi-map they work on.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.http.message import CHUNKED, LENGTH, NO_BODY, Headers, Refusal, RequestHead, ResponseHead
from dualproxy.http.rules import (
    Hop,
    RewritePolicy,
    absoluteTarget,
    addVia,
    connectTarget,
    frameBody,
    frameResponse,
    isServerWideOptions,
    offeredUpgrade,
    rewriteRequest,
    rewriteResponse,
    stripHopByHop,
    upgradeOffered,
    wantsKeepAlive,
)

from ..tables import fromTable


# (rule, fields before, fields after)
HOP_BY_HOP = [
    (
        "RFC 9110 \u00a77.6.1: the fixed hop-by-hop fields are removed",
        [
            (b"Connection", b"keep-alive"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Accept", b"*/*"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Proxy-Authorization", b"Basic eDp5"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X-Sum"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"websocket"),
            (b"Authorization", b"Basic eDp5"),
        ],
        [(b"Accept", b"*/*"), (b"Authorization", b"Basic eDp5")],
    ),
    (
        "RFC 9110 \u00a77.6.1: fields named by Connection are removed, case-insensitively",
        [
            (b"CONNECTION", b"X-Foo, x-BAR"),
            (b"x-foo", b"1"),
            (b"X-Baz", b"kept"),
            (b"X-BAR", b"2"),
            (b"connection", b"X-Qux"),
            (b"x-qux", b"3"),
        ],
        [(b"X-Baz", b"kept")],
    ),
    (
        "Content-Length and Host are never taken away by naming them in Connection",
        [(b"Connection", b"host, content-length, X-A"), (b"Host", b"a"), (b"Content-Length", b"0"), (b"X-A", b"1")],
        [(b"Host", b"a"), (b"Content-Length", b"0")],
    ),
    (
        "RFC 9112 \u00a7C.2.2: fields named by the legacy Proxy-Connection are removed",
        [(b"Proxy-Connection", b"X-Hop"), (b"X-Hop", b"1"), (b"Host", b"a")],
        [(b"Host", b"a")],
    ),
    (
        "RFC 9110 \u00a75.3: end-to-end fields keep their order",
        [(b"Host", b"a"), (b"Cookie", b"1"), (b"Accept", b"*/*"), (b"Cookie", b"2")],
        [(b"Host", b"a"), (b"Cookie", b"1"), (b"Accept", b"*/*"), (b"Cookie", b"2")],
    ),
]


# (rule, version, fields, expected)
KEEP_ALIVE = [
    ("RFC 9112 \u00a79.3: HTTP/1.1 persists by default", b"HTTP/1.1", [], True),
    ("RFC 9112 \u00a79.3: HTTP/1.1 with Connection close does not persist", b"HTTP/1.1", [(b"Connection", b"close")], False),
    (
        "RFC 9110 \u00a77.6.1: the close option is found case-insensitively among others",
        b"HTTP/1.1",
        [(b"connection", b"Keep-Alive, CLOSE")],
        False,
    ),
    ("RFC 9112 \u00a79.3: HTTP/1.0 does not persist by default", b"HTTP/1.0", [], False),
    (
        "RFC 9112 \u00a7C.2.2: HTTP/1.0 with Connection keep-alive persists",
        b"HTTP/1.0",
        [(b"Connection", b"Keep-Alive")],
        True,
    ),
    (
        "RFC 9112 \u00a7C.2.2: HTTP/1.0 with Proxy-Connection keep-alive persists",
        b"HTTP/1.0",
        [(b"Proxy-Connection", b"keep-alive")],
        True,
    ),
    (
        "RFC 9112 \u00a79.3: close wins over keep-alive",
        b"HTTP/1.0",
        [(b"Connection", b"keep-alive"), (b"Connection", b"close")],
        False,
    ),
]


# (rule, target, (host, port, Host value, origin-form) or (status, words in the reason))
ABSOLUTE = [
    (
        "RFC 9112 \u00a73.2.2: absolute-form splits into host, port, Host and origin-form",
        b"http://example.com/path?q=1",
        ("example.com", 80, b"example.com", b"/path?q=1"),
    ),
    (
        "RFC 9110 \u00a74.2.1: an explicit port is used",
        b"http://example.com:8080/x",
        ("example.com", 8080, b"example.com:8080", b"/x"),
    ),
    (
        "RFC 9110 \u00a74.2.3: scheme and host are case-insensitive; Host keeps the received case",
        b"HTTP://Example.COM/A",
        ("example.com", 80, b"Example.COM", b"/A"),
    ),
    ("RFC 9112 \u00a73.2.1: an empty path is sent as /", b"http://a", ("a", 80, b"a", b"/")),
    ("RFC 9112 \u00a73.2.1: a query without path gets / before it", b"http://a?x", ("a", 80, b"a", b"/?x")),
    (
        "RFC 3986 \u00a73.2.2: an IPv6 literal with port",
        b"http://[::1]:8080/p",
        ("::1", 8080, b"[::1]:8080", b"/p"),
    ),
    ("RFC 3986 \u00a73.2.2: an IPv6 literal without port", b"http://[::1]/", ("::1", 80, b"[::1]", b"/")),
    (
        "RFC 3986 \u00a73.2.2: an IPv4 address with port",
        b"http://192.0.2.1:81/",
        ("192.0.2.1", 81, b"192.0.2.1:81", b"/"),
    ),
    ("RFC 9110 \u00a74.2.2: an https URL defaults to port 443", b"https://a/x", ("a", 443, b"a", b"/x")),
    ("RFC 9112 \u00a73.2.2: origin-form sent to a proxy is 400", b"/path", (400, "absolute")),
    ("RFC 9112 \u00a73.2.4: asterisk-form sent to a proxy is 400", b"*", (400, "absolute")),
    ("RFC 3986 \u00a73.2.3: port above 65535 is 400", b"http://a:65536/", (400, "port")),
    ("RFC 3986 \u00a73.2.3: port 0 is 400", b"http://a:0/", (400, "port")),
    ("RFC 3986 \u00a73.2.3: non-numeric port is 400", b"http://a:http/", (400, "port")),
    ("RFC 9110 \u00a74.2.4: userinfo with password is 400", b"http://user:pw@a/", (400, "host")),
    ("RFC 9110 \u00a74.2.4: userinfo without password is 400", b"http://user@a/", (400, "host")),
    ("RFC 3986 \u00a74.3: fragment after the path is 400", b"http://a/p#f", (400, "fragment")),
    ("RFC 3986 \u00a74.3: fragment right after the authority is 400", b"http://a#f", (400, "fragment")),
    ("RFC 9110 \u00a74.2.1: empty host is 400", b"http:///p", (400, "host")),
    ("RFC 9110 \u00a74.2.1: non-ASCII host is 400", b"http://caf\xc3\xa9.example/", (400, "host")),
]


# (rule, target, (host, port) or (status, words in the reason))
CONNECT = [
    ("RFC 9112 \u00a73.2.3: authority-form splits into host and port", b"Example.com:443", ("example.com", 443)),
    ("RFC 9112 \u00a73.2.3: an IPv6 literal with port", b"[::1]:8443", ("::1", 8443)),
    ("RFC 9110 \u00a79.3.6: CONNECT target without port is 400", b"example.com", (400, "port")),
    ("RFC 9110 \u00a79.3.6: IPv6 CONNECT target without port is 400", b"[::1]", (400, "port")),
    ("RFC 3986 \u00a73.2.3: CONNECT to port 0 is 400", b"a:0", (400, "port")),
    ("RFC 3986 \u00a73.2.3: CONNECT port above 65535 is 400", b"a:70000", (400, "port")),
    ("RFC 9112 \u00a73.2.3: userinfo in a CONNECT target is 400", b"user@a:443", (400, "host")),
    ("RFC 9112 \u00a73.2.3: path in a CONNECT target is 400", b"a:443/x", (400, "host")),
    ("RFC 9112 \u00a73.2.3: fragment in a CONNECT target is 400", b"a:443#f", (400, "host")),
    ("RFC 9112 \u00a73.2.3: empty query in a CONNECT target is 400", b"[::1]:443?", (400, "host")),
    ("RFC 9112 \u00a73.2.3: absolute-form CONNECT target is 400", b"http://a:443/", (400, "")),
]


# (rule, method, framing, length, fields before, fields after)
FRAMING = [
    (
        "RFC 9112 \u00a76.1: a chunked body is declared by Transfer-Encoding chunked alone",
        b"POST",
        CHUNKED,
        0,
        [(b"Host", b"a"), (b"transfer-encoding", b"Chunked"), (b"Content-Length", b"5")],
        [(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")],
    ),
    (
        "RFC 9110 \u00a78.6: a known length is declared by one canonical Content-Length",
        b"PUT",
        LENGTH,
        5,
        [(b"content-length", b"5, 5"), (b"Host", b"a"), (b"Content-Length", b"5")],
        [(b"Host", b"a"), (b"Content-Length", b"5")],
    ),
    (
        "RFC 9110 \u00a78.6: a POST without body is sent with Content-Length 0",
        b"POST",
        NO_BODY,
        0,
        [(b"Host", b"a")],
        [(b"Host", b"a"), (b"Content-Length", b"0")],
    ),
    (
        "RFC 9110 \u00a78.6: a PATCH without body is sent with Content-Length 0",
        b"PATCH",
        NO_BODY,
        0,
        [(b"Host", b"a"), (b"Content-Length", b"0")],
        [(b"Host", b"a"), (b"Content-Length", b"0")],
    ),
    (
        "RFC 9110 \u00a78.6: a GET without body gets no framing fields",
        b"GET",
        NO_BODY,
        0,
        [(b"Host", b"a"), (b"Content-Length", b"0")],
        [(b"Host", b"a")],
    ),
]


# (rule, status, framing, length, fields before, fields after)
RESPONSE_FRAMING = [
    (
        "RFC 9110 \u00a78.6: a response Content-Length list of one repeated value is sent as that value",
        200,
        LENGTH,
        5,
        [(b"Content-Length", b"5, 5"), (b"ETag", b'"x"'), (b"content-length", b"5")],
        [(b"ETag", b'"x"'), (b"Content-Length", b"5")],
    ),
    (
        "a canonical Content-Length stays where it was",
        200,
        LENGTH,
        5,
        [(b"Content-Length", b"5"), (b"ETag", b'"x"')],
        [(b"Content-Length", b"5"), (b"ETag", b'"x"')],
    ),
    (
        "a Content-Length that is not the body's is replaced by the body's",
        200,
        LENGTH,
        5,
        [(b"Content-Length", b"05"), (b"ETag", b'"x"')],
        [(b"ETag", b'"x"'), (b"Content-Length", b"5")],
    ),
    (
        "RFC 9110 \u00a78.6: a body delimited otherwise gets no Content-Length",
        200,
        CHUNKED,
        0,
        [(b"ETag", b'"x"')],
        [(b"ETag", b'"x"')],
    ),
    (
        "RFC 9110 \u00a78.6: a 304 keeps the representation's length, canonical",
        304,
        NO_BODY,
        0,
        [(b"Content-Length", b"007, 007"), (b"Content-Length", b"007")],
        [(b"Content-Length", b"7")],
    ),
    (
        "RFC 9110 \u00a78.6: a length of 0 is kept",
        200,
        NO_BODY,
        0,
        [(b"Content-Length", b"0")],
        [(b"Content-Length", b"0")],
    ),
    (
        "RFC 9110 \u00a78.6: a HEAD response's invalid Content-Length is dropped",
        200,
        NO_BODY,
        0,
        [(b"Content-Length", b"5, 6"), (b"Content-Length", b"-1"), (b"ETag", b'"x"')],
        [(b"ETag", b'"x"')],
    ),
    (
        "RFC 9110 \u00a78.6: a non-numeric Content-Length without body is dropped",
        200,
        NO_BODY,
        0,
        [(b"Content-Length", b"five")],
        [],
    ),
    (
        "RFC 9110 \u00a78.6: a 204 is sent without Content-Length",
        204,
        NO_BODY,
        0,
        [(b"Content-Length", b"0"), (b"ETag", b'"x"')],
        [(b"ETag", b'"x"')],
    ),
    (
        "RFC 9110 \u00a78.6: a 1xx is sent without Content-Length",
        101,
        NO_BODY,
        0,
        [(b"Content-Length", b"0")],
        [],
    ),
]


# (rule, method, target, whether it asks about the whole server)
SERVER_WIDE = [
    ("RFC 9112 \u00a73.2.4: OPTIONS without path or query is for the whole server",
     b"OPTIONS", b"http://a.example:8080", True),
    ("RFC 9112 \u00a73.2.4: OPTIONS for https without path is for the whole server",
     b"OPTIONS", b"HTTPS://a.example", True),
    ("RFC 9112 \u00a73.2.4: OPTIONS with the path / is for that resource",
     b"OPTIONS", b"http://a.example/", False),
    ("RFC 9112 \u00a73.2.4: OPTIONS with a query is for a resource",
     b"OPTIONS", b"http://a.example?x", False),
    ("RFC 9112 \u00a73.2.4: another method without path is for the resource /",
     b"GET", b"http://a.example", False),
]


@fromTable(HOP_BY_HOP, "checkStrip")
@fromTable(KEEP_ALIVE, "checkKeepAlive")
@fromTable(FRAMING, "checkFraming")
@fromTable(RESPONSE_FRAMING, "checkResponseFraming")
@fromTable(SERVER_WIDE, "checkServerWide")
class HeaderRuleTests(SynchronousTestCase):
    """
    What an intermediary adds, removes and concludes from header fields.
    """

    def checkStrip(self, before, after):
        headers = Headers(before)
        stripHopByHop(headers)
        self.assertEqual(list(headers), after)

    def checkKeepAlive(self, version, fields, expected):
        self.assertIs(wantsKeepAlive(version, Headers(fields)), expected)

    def checkFraming(self, method, framing, length, before, after):
        headers = Headers(before)
        frameBody(headers, RequestHead(method, b"/", framing=framing, length=length))
        self.assertEqual(list(headers), after)

    def checkResponseFraming(self, status, framing, length, before, after):
        head = ResponseHead(status, b"", Headers(before), framing=framing, length=length)
        frameResponse(head)
        self.assertEqual(list(head.headers), after)

    def checkServerWide(self, method, target, expected):
        self.assertIs(isServerWideOptions(RequestHead(method, target)), expected)

    def test_viaEntry(self):
        """
        RFC 9110 \u00a77.6.3: a Via entry is the received protocol version and
        a pseudonym.
        """
        for version, entry in [(b"HTTP/1.1", b"1.1 dualproxy"), (b"HTTP/1.0", b"1.0 dualproxy")]:
            headers = Headers()
            addVia(headers, version, b"dualproxy")
            self.assertEqual(list(headers), [(b"Via", entry)])

    def test_viaKeepsEarlierHops(self):
        """
        RFC 9110 \u00a77.6.3: earlier hops stay in order; this one is appended.
        """
        headers = Headers([(b"Via", b"1.0 fred, 1.1 p.example.net"), (b"Host", b"a")])
        addVia(headers, b"HTTP/1.1", b"dualproxy")
        self.assertEqual(headers.getAll(b"via"), [b"1.0 fred, 1.1 p.example.net", b"1.1 dualproxy"])


class UpgradeTests(SynchronousTestCase):
    """
    Which upgrades go upstream, and which 101 answers are believed.
    """

    def test_h2cNeverOffered(self):
        headers = Headers([(b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"),
                           (b"HTTP2-Settings", b"AAMAAABk")])
        self.assertIsNone(offeredUpgrade(headers, {b"h2c", b"websocket"}))
        stripHopByHop(headers)
        self.assertEqual(list(headers), [])

    def test_h2cDroppedFromSeveral(self):
        headers = Headers([(b"Connection", b"upgrade"), (b"Upgrade", b"h2c, WebSocket")])
        self.assertEqual(offeredUpgrade(headers, {b"h2c", b"websocket"}), b"websocket")

    def test_upgradeWithoutConnectionIgnored(self):
        self.assertIsNone(offeredUpgrade(Headers([(b"Upgrade", b"websocket")]), {b"websocket"}))

    def test_onlyAllowedProtocolsOffered(self):
        headers = Headers([(b"Connection", b"upgrade"), (b"Upgrade", b"x-tunnel, websocket")])
        self.assertEqual(offeredUpgrade(headers, {b"websocket"}), b"websocket")
        self.assertIsNone(offeredUpgrade(headers, set()))

    def test_onlyAnOfferedProtocolBelieved(self):
        def switched(protocol):
            return ResponseHead(101, b"Switching Protocols", Headers([(b"Upgrade", protocol)]), framing=NO_BODY)

        self.assertTrue(upgradeOffered(b"websocket", switched(b"WebSocket")))
        self.assertTrue(upgradeOffered(b"websocket, x/2", switched(b"x/1")))
        self.assertFalse(upgradeOffered(b"websocket", switched(b"h2c")))
        self.assertFalse(upgradeOffered(b"websocket", switched(b"websocket, h2c")))


class RewriteTests(SynchronousTestCase):
    """
    What each mode's policy makes of a relayed request and response.
    """

    REVERSE = RewritePolicy(xForwardedFor=True, xForwardedProto=True, xForwardedHost=True, forwarded=True)

    def request(self, *fields, framing=NO_BODY, length=0, method=b"GET"):
        return RequestHead(method, b"/", b"HTTP/1.1", Headers(list(fields)), framing=framing, length=length)

    def test_untrustedClaimsReplaced(self):
        """
        RFC 7239 section 8.1: forwarding fields from a sender nobody trusts
        are replaced by what the proxy saw.
        """
        request = self.request((b"Host", b"a.example"), (b"X-Forwarded-For", b"6.6.6.6"),
                               (b"X-Forwarded-Proto", b"https"), (b"Forwarded", b"for=6.6.6.6"))
        headers = rewriteRequest(request, self.REVERSE, Hop("10.0.0.5", False, b"http", b"a.example"))
        self.assertEqual(list(headers), [
            (b"Host", b"a.example"), (b"X-Forwarded-For", b"10.0.0.5"), (b"X-Forwarded-Proto", b"http"),
            (b"X-Forwarded-Host", b"a.example"), (b"Forwarded", b'for=10.0.0.5;proto=http;host="a.example"'),
        ])
        self.assertEqual(request.headers.get(b"x-forwarded-for"), b"6.6.6.6", "the request is left as it was")

    def test_trustedChainExtended(self):
        request = self.request((b"X-Forwarded-For", b"1.2.3.4"), (b"X-Forwarded-Proto", b"https"),
                               (b"Forwarded", b"for=1.2.3.4"))
        headers = rewriteRequest(request, self.REVERSE, Hop("::1", True, b"http", None))
        self.assertEqual(headers.get(b"x-forwarded-for"), b"1.2.3.4, ::1")
        self.assertEqual(headers.getAll(b"x-forwarded-proto"), [b"https"])
        self.assertEqual(headers.get(b"forwarded"), b'for=1.2.3.4, for="[::1]";proto=http')
        self.assertNotIn(b"x-forwarded-host", headers)

    def test_unknownClient(self):
        headers = rewriteRequest(self.request(), self.REVERSE, Hop(None, False))
        self.assertEqual(headers.get(b"x-forwarded-for"), b"unknown")
        self.assertEqual(headers.get(b"forwarded"), b"for=unknown;proto=http")

    def test_forwardPolicy(self):
        """
        The forward proxy's policy: hop-by-hop fields gone, Host first, the
        anonymous fields removed, Via added, the body framed one way; no
        forwarding field unless asked.
        """
        policy = RewritePolicy(via=b"edge", remove=(b"cookie",))
        request = self.request((b"Cookie", b"a=1"), (b"Connection", b"close, X-Secret"), (b"X-Secret", b"1"),
                               (b"Host", b"wrong"), (b"Accept", b"*/*"), framing=LENGTH, length=3, method=b"POST")
        headers = rewriteRequest(request, policy, Hop("10.0.0.5", True), host=b"a.example:80")
        self.assertEqual(list(headers), [(b"Host", b"a.example:80"), (b"Accept", b"*/*"), (b"Via", b"1.1 edge"),
                                         (b"Content-Length", b"3")])

    def test_upgradePassedOn(self):
        headers = rewriteRequest(self.request((b"Connection", b"Upgrade"), (b"Upgrade", b"websocket, h2c")),
                                 RewritePolicy(), Hop(None, True), upgrade=b"websocket")
        self.assertEqual(list(headers), [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")])

    def test_response(self):
        """
        A response loses its hop-by-hop fields and gets the policy's Via;
        a 101 keeps the Upgrade it switched to.
        """
        head = ResponseHead(200, b"OK", Headers([(b"Connection", b"keep-alive"), (b"Content-Length", b"2, 2")]),
                            framing=LENGTH, length=2)
        rewriteResponse(head, RewritePolicy(via=b"edge"))
        self.assertEqual(list(head.headers), [(b"Content-Length", b"2"), (b"Via", b"1.1 edge")])
        switched = ResponseHead(101, b"Switching Protocols",
                                Headers([(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")]), framing=NO_BODY)
        rewriteResponse(switched, RewritePolicy())
        self.assertEqual(list(switched.headers), [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")])


@fromTable(ABSOLUTE, "checkAbsolute")
@fromTable(CONNECT, "checkConnect")
class TargetTests(SynchronousTestCase):
    """
    Request targets a forward proxy is sent.
    """

    def checkTarget(self, parse, method, target, expected):
        head = RequestHead(method, target)
        if isinstance(expected[0], int):
            refusal = self.assertRaises(Refusal, parse, head)
            self.assertEqual(refusal.status, expected[0])
            self.assertIn(expected[1].lower(), refusal.reason.lower())
        else:
            self.assertEqual(parse(head), expected)

    def checkAbsolute(self, target, expected):
        self.checkTarget(lambda head: absoluteTarget(head)[1:], b"GET", target, expected)

    def test_scheme(self):
        """
        RFC 9110 section 4.2: the scheme says whether the origin speaks TLS.
        """
        for target, scheme in ((b"http://a/", "http"), (b"HTTPS://a/", "https")):
            self.assertEqual(absoluteTarget(RequestHead(b"GET", target))[0], scheme)

    def checkConnect(self, target, expected):
        self.checkTarget(connectTarget, b"CONNECT", target, expected)


class HeadersTests(SynchronousTestCase):
    """
    The ordered, case-preserving multi-map of header fields.
    """

    def setUp(self):
        self.headers = Headers(
            [(b"Host", b"a"), (b"CONTENT-type", b"text/plain"), (b"Cookie", b"1"), (b"cookie", b"2")]
        )

    def test_caseInsensitiveLookupPreservingCase(self):
        """
        RFC 9110 \u00a75.1: field names are case-insensitive; the received
        case is kept for relaying.
        """
        self.assertEqual(self.headers.get(b"content-type"), b"text/plain")
        self.assertIn(b"content-type", self.headers)
        self.assertNotIn(b"accept", self.headers)
        self.assertEqual([name for name, _ in self.headers][1], b"CONTENT-type")

    def test_getFirstOrDefault(self):
        """
        get returns the first value of a repeated field, or the default.
        """
        self.assertEqual(self.headers.get(b"cookie"), b"1")
        self.assertIsNone(self.headers.get(b"accept"))
        self.assertEqual(self.headers.get(b"accept", b"*/*"), b"*/*")

    def test_getAllInOrder(self):
        """
        RFC 9110 \u00a75.3: field lines with the same name keep their order.
        """
        self.assertEqual(self.headers.getAll(b"cookie"), [b"1", b"2"])
        self.assertEqual(self.headers.getAll(b"accept"), [])

    def test_tokens(self):
        """
        RFC 9110 \u00a75.6.1: list elements of every field line, trimmed and
        lower-cased, empty elements ignored.
        """
        headers = Headers([(b"Connection", b"Keep-Alive, , Upgrade "), (b"Host", b"a"), (b"connection", b"TE")])
        self.assertEqual(headers.tokens(b"connection"), [b"keep-alive", b"upgrade", b"te"])
        self.assertEqual(headers.tokens(b"upgrade"), [])

    def test_addAppends(self):
        """
        RFC 9110 \u00a75.3: a field added later comes after existing ones.
        """
        self.headers.add(b"Cookie", b"3")
        self.assertEqual(list(self.headers)[-1], (b"Cookie", b"3"))
        self.assertEqual(self.headers.getAll(b"cookie"), [b"1", b"2", b"3"])

    def test_insertFirst(self):
        """
        RFC 9110 \u00a77.2: Host is sent as the first field.
        """
        headers = Headers([(b"Accept", b"*/*")])
        headers.insert(b"Host", b"b")
        self.assertEqual(list(headers), [(b"Host", b"b"), (b"Accept", b"*/*")])
        self.assertEqual(headers.get(b"host"), b"b")

    def test_setReplacesEveryOccurrence(self):
        """
        set leaves one field of that name, whatever the case of the old ones.
        """
        self.headers.set(b"COOKIE", b"3")
        self.assertEqual(self.headers.getAll(b"cookie"), [b"3"])
        self.assertEqual(list(self.headers)[-1], (b"COOKIE", b"3"))
        self.assertEqual(len(self.headers), 3)

    def test_remove(self):
        """
        remove drops every field with one of the given lower-cased names and
        ignores names that are absent.
        """
        self.headers.remove(b"cookie", b"host", b"absent")
        self.assertEqual(list(self.headers), [(b"CONTENT-type", b"text/plain")])
        self.headers.remove(b"absent")
        self.assertEqual(len(self.headers), 1)

    def test_removeKeepsTheRestInOrder(self):
        headers = Headers([(b"A", b"1"), (b"Cookie", b"1"), (b"B", b"2"), (b"COOKIE", b"2"), (b"Host", b"h"),
                           (b"C", b"3")])
        headers.removeAny(frozenset([b"cookie", b"host", b"absent"]))
        self.assertEqual(list(headers), [(b"A", b"1"), (b"B", b"2"), (b"C", b"3")])
        self.assertIsNone(headers.get(b"cookie"))
        self.assertEqual(headers.get(b"c"), b"3")

    def test_onlyOfASingleField(self):
        """
        only gives the value of a field sent once, else None.
        """
        self.assertEqual(self.headers.only(b"host"), b"a")
        self.assertIsNone(self.headers.only(b"cookie"))
        self.assertIsNone(self.headers.only(b"accept"))

    def test_copyIsIndependent(self):
        """
        A copy and its original change separately.
        """
        clone = self.headers.copy()
        self.assertEqual(clone, self.headers)
        clone.add(b"X", b"1")
        self.headers.remove(b"host")
        self.assertEqual(clone.get(b"host"), b"a")
        self.assertIsNone(self.headers.get(b"x"))
        self.assertNotEqual(clone, self.headers)

    def test_serialize(self):
        """
        RFC 9112 \u00a75: each field is name, colon, SP, value, CRLF.
        """
        self.assertEqual(
            self.headers.serialize(),
            b"Host: a\r\nCONTENT-type: text/plain\r\nCookie: 1\r\ncookie: 2\r\n",
        )
        self.assertEqual(Headers().serialize(), b"")


class MessageTests(SynchronousTestCase):
    """
    Heads serialize to what goes on the wire; a refusal carries its answer.
    """

    def test_requestHeadSerialize(self):
        """
        RFC 9112 \u00a73: request-line, field lines, empty line.
        """
        head = RequestHead(b"GET", b"/x", b"HTTP/1.1", Headers([(b"Host", b"a")]))
        self.assertEqual(head.serialize(), b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_responseHeadSerialize(self):
        """
        RFC 9112 \u00a74: status-line, field lines, empty line.
        """
        head = ResponseHead(404, b"Not Found", Headers([(b"Content-Length", b"0")]))
        self.assertEqual(head.serialize(), b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def test_refusal(self):
        """
        A refusal keeps its status, reason and extra fields.
        """
        refusal = Refusal(407, "auth needed", [(b"Proxy-Authenticate", b'Basic realm="x"')])
        self.assertEqual(
            (refusal.status, refusal.reason, refusal.headers),
            (407, "auth needed", ((b"Proxy-Authenticate", b'Basic realm="x"'),)),
        )
