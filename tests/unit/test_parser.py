"""
The sans-IO HTTP/1.x reader against the framing rules of RFC 9112.

Every table case is one test named after the rule it checks.  Well-formed
input is also fed one byte at a time and split in two at every offset: the
events must not depend on how the stream was segmented.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.http.message import CHUNKED, CLOSE, LENGTH, NO_BODY, Refusal
from dualproxy.http.parser import DEFAULT_LIMITS, MAX_INTERIM, Limits, MessageReader
from dualproxy.http.proxystatus import (
    HTTP_PROTOCOL_ERROR,
    HTTP_RESPONSE_HEADER_SECTION_SIZE,
    HTTP_RESPONSE_HEADER_SIZE,
    HTTP_RESPONSE_INCOMPLETE,
    HTTP_RESPONSE_TRANSFER_CODING,
)

from ..tables import fromTable


class Recorder:
    """
    A sink that records events, joining adjacent body data so that the
    record does not depend on how the input was segmented.
    """

    def __init__(self):
        self.events = []

    def headReceived(self, head):
        if hasattr(head, "method"):
            first = (head.method, head.target)
        else:
            first = (head.status, head.reason)
        self.events.append(("head",) + first + (head.version, list(head.headers), head.framing, head.length))

    def bodyReceived(self, data):
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def messageEnded(self):
        self.events.append(END)


def request(method, target, headers, version=b"HTTP/1.1", framing=NO_BODY, length=0):
    return ("head", method, target, version, list(headers), framing, length)


def response(status, reason, headers, version=b"HTTP/1.1", framing=NO_BODY, length=0):
    return ("head", status, reason, version, list(headers), framing, length)


def body(data):
    return ("body", data)


END = ("end",)
HOST = (b"Host", b"a")
CHUNKED_TE = (b"Transfer-Encoding", b"chunked")


def segmentations(wire):
    """
    The whole input, one byte at a time, and every split into two parts.
    """
    yield [wire]
    yield [wire[i:i + 1] for i in range(len(wire))]
    for i in range(1, len(wire)):
        yield [wire[:i], wire[i:]]


def read(pieces, isRequest, method=None, limits=DEFAULT_LIMITS, lost=False):
    sink = Recorder()
    reader = MessageReader(sink, isRequest, limits)
    if method is not None:
        reader.expectResponse(method)
    for piece in pieces:
        reader.feed(piece)
    if lost:
        reader.connectionLost()
    return sink.events, reader.buffered


def refusal(pieces, isRequest, method=None, limits=DEFAULT_LIMITS, lost=False):
    try:
        read(pieces, isRequest, method, limits, lost)
    except Refusal as e:
        return e.status
    return None


def responseRefusal(pieces, method, lost, limits=DEFAULT_LIMITS):
    try:
        read(pieces, False, method, limits, lost)
    except Refusal as e:
        return e.status, e.errorType
    return None


# (rule, wire, expected events)
REQUESTS = [
    (
        "RFC 9112 \u00a76.3 rule 6: Content-Length delimits the request body",
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        [
            request(b"POST", b"/upload", [HOST, (b"Content-Length", b"5")], framing=LENGTH, length=5),
            body(b"hello"),
            END,
        ],
    ),
    (
        "RFC 9112 \u00a76.3 rule 6: Content-Length 0 means no body",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        [request(b"POST", b"/", [HOST, (b"Content-Length", b"0")]), END],
    ),
    (
        "RFC 9110 \u00a78.6: identical repeated Content-Length field lines are one length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        [
            request(
                b"POST", b"/", [HOST, (b"Content-Length", b"3"), (b"Content-Length", b"3")],
                framing=LENGTH, length=3,
            ),
            body(b"abc"),
            END,
        ],
    ),
    (
        "RFC 9110 \u00a78.6: identical Content-Length list elements are one length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
        [
            request(b"POST", b"/", [HOST, (b"Content-Length", b"3, 3")], framing=LENGTH, length=3),
            body(b"abc"),
            END,
        ],
    ),
    (
        "RFC 9112 \u00a77.1: a chunked request body is decoded",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0006\r\n world\r\n0\r\n\r\n",
        [request(b"POST", b"/", [HOST, CHUNKED_TE], framing=CHUNKED), body(b"hello world"), END],
    ),
    (
        "RFC 9112 \u00a77.1.1: chunk extensions are ignored",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\nA ; q=\"a;b\"\r\n0123456789\r\n0;last\r\n\r\n",
        [request(b"POST", b"/", [HOST, CHUNKED_TE], framing=CHUNKED), body(b"hello0123456789"), END],
    ),
    (
        "RFC 9112 \u00a77.1.2: trailer fields are read and dropped",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
        [
            request(b"POST", b"/", [HOST, CHUNKED_TE], framing=CHUNKED),
            body(b"abc"),
            END,
            request(b"GET", b"/next", [HOST]),
            END,
        ],
    ),
    (
        "RFC 9112 \u00a76.1: transfer coding names are case-insensitive",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        [
            request(b"POST", b"/", [HOST, (b"Transfer-Encoding", b"Chunked")], framing=CHUNKED),
            body(b"ok"),
            END,
        ],
    ),
    (
        "RFC 9112 \u00a76.3 rule 7: a request without Content-Length or Transfer-Encoding has no body",
        b"GET http://a/x?y HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
        [request(b"GET", b"http://a/x?y", [HOST, (b"Accept", b"*/*")]), END],
    ),
    (
        "RFC 9112 \u00a73.2.3: authority-form CONNECT request",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        [request(b"CONNECT", b"a:443", [(b"Host", b"a:443")]), END],
    ),
    (
        "RFC 9112 \u00a79.3.2: two pipelined requests in one segment",
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
        [
            request(b"GET", b"/1", [HOST]),
            END,
            request(b"POST", b"/2", [HOST, (b"Content-Length", b"2")], framing=LENGTH, length=2),
            body(b"hi"),
            END,
        ],
    ),
    (
        "RFC 9112 \u00a72.2: empty lines before a request-line are ignored",
        b"\r\n\r\n\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
        [request(b"GET", b"/1", [HOST]), END, request(b"GET", b"/2", [HOST]), END],
    ),
    (
        "RFC 9112 \u00a72.2: a bare LF ends head lines",
        b"GET / HTTP/1.1\nHost: a\nX: 1\n\n",
        [request(b"GET", b"/", [HOST, (b"X", b"1")]), END],
    ),
    (
        "RFC 9112 \u00a72.2: a bare LF ends chunk lines (chunk data still ends in CRLF)",
        b"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5\nhello\r\n0\nX-T: 1\n\n",
        [request(b"POST", b"/", [HOST, CHUNKED_TE], framing=CHUNKED), body(b"hello"), END],
    ),
    (
        "RFC 9112 \u00a73.2: an HTTP/1.0 request needs no Host",
        b"GET http://a/ HTTP/1.0\r\n\r\n",
        [request(b"GET", b"http://a/", [], version=b"HTTP/1.0"), END],
    ),
    (
        "RFC 9112 \u00a76.3 rule 6: an HTTP/1.0 request body is delimited by Content-Length",
        b"POST http://a/ HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
        [
            request(b"POST", b"http://a/", [(b"Content-Length", b"2")], b"HTTP/1.0", LENGTH, 2),
            body(b"hi"),
            END,
        ],
    ),
    (
        "RFC 9110 \u00a75.5: whitespace around a field value is not part of it",
        b"GET / HTTP/1.1\r\nHost:   a \t\r\nX-Empty:\r\nX-Inner: b  c\r\n\r\n",
        [request(b"GET", b"/", [HOST, (b"X-Empty", b""), (b"X-Inner", b"b  c")]), END],
    ),
    (
        "RFC 9110 \u00a75.1: field names keep the case they arrived with",
        b"GET / HTTP/1.1\r\nhOsT: a\r\nX-MiXeD: 1\r\n\r\n",
        [request(b"GET", b"/", [(b"hOsT", b"a"), (b"X-MiXeD", b"1")]), END],
    ),
    (
        "RFC 9110 \u00a75.5: obs-text and HTAB in a field value are kept",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\tau lait\r\n\r\n",
        [request(b"GET", b"/", [HOST, (b"X", b"caf\xc3\xa9\tau lait")]), END],
    ),
]


# (rule, wire, status[, limits[, connection lost at the end]])
SMALL = Limits(maxHead=256, maxLine=64, maxFields=4)
ROOMY = Limits(maxHead=256, maxLine=64, maxFields=100)
BAD_REQUESTS = [
    ("RFC 9112 \u00a73.2: HTTP/1.1 request without Host is 400", b"GET / HTTP/1.1\r\nX: 1\r\n\r\n", 400),
    (
        "RFC 9112 \u00a73.2: two Host field lines are 400",
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a73.2: two Host field lines in HTTP/1.0 are 400",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        400,
    ),
    ("RFC 9110 \u00a715.6.6: HTTP/2.0 in a request-line is 505", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("RFC 9110 \u00a715.6.6: HTTP/1.2 in a request-line is 505", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
    ("RFC 9112 \u00a73: request-line without version is 400", b"GET /\r\nHost: a\r\n\r\n", 400),
    ("RFC 9112 \u00a73: request-line with two spaces is 400", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("RFC 9112 \u00a73: request-line separated by HTAB is 400", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("RFC 9112 \u00a72.3: lower-case HTTP-name is 400", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    ("RFC 9112 \u00a72.3: two-digit minor version is 400", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
    ("RFC 9110 \u00a79.1: non-token method is 400", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (
        "RFC 9112 \u00a72.2: bare CR ending the request-line is 400",
        b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a75.1: whitespace between field name and colon is 400",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a75.2: obs-fold is 400",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n two\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a72.2: whitespace between start-line and first field is 400",
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        400,
    ),
    ("RFC 9110 \u00a75.5: NUL in a field value is 400", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("RFC 9112 \u00a72.2: bare CR in a field value is 400", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
    (
        "RFC 9110 \u00a75.5: control character in a field value is 400",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        400,
    ),
    ("RFC 9110 \u00a75.5: DEL in a field value is 400", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
    (
        "RFC 9110 \u00a75.1: non-token field name is 400",
        b"GET / HTTP/1.1\r\nHost: a\r\nX(bad): 1\r\n\r\n",
        400,
    ),
    ("RFC 9110 \u00a75.1: empty field name is 400", b"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400),
    ("RFC 9112 \u00a75: field line without colon is 400", b"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", 400),
    (
        "RFC 9112 \u00a76.3 rule 3: Transfer-Encoding and Content-Length together is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a76.3 rule 5: differing Content-Length field lines are 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    (
        "RFC 9112 \u00a76.3 rule 5: differing Content-Length list elements are 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd",
        400,
    ),
    (
        "RFC 9110 \u00a78.6: negative Content-Length is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        400,
    ),
    (
        "RFC 9110 \u00a78.6: non-numeric Content-Length is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: five\r\n\r\n",
        400,
    ),
    (
        "RFC 9110 \u00a78.6: signed Content-Length is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        400,
    ),
    (
        "RFC 9110 \u00a78.6: empty Content-Length is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a76.1: unknown transfer coding in a request is 501",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-unknown\r\n\r\n",
        501,
    ),
    (
        "RFC 9112 \u00a76.1: unknown transfer coding before chunked in a request is 501",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-unknown, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    (
        "RFC 9112 \u00a76.3 rule 4: chunked not the final coding of a request is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a76.1: chunked applied twice is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a76.1: Transfer-Encoding in an HTTP/1.0 request is 400",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a77.1: non-hex chunk size is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a77.1: empty chunk size line is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a77.1: 0x-prefixed chunk size is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a77.1: chunk size with leading whitespace is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a77.1: chunk size over 64 bits is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a77.1: chunk data not followed by CRLF is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a77.1: chunk data followed by a bare LF is 400 (chunk-boundary smuggling)",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
        400,
    ),
    (
        "RFC 9112 \u00a77.1: chunk data followed by a bare CR is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n",
        400,
    ),
    (
        "RFC 9110 \u00a715.5.15: request-line longer than the line limit is 414",
        b"GET /" + b"a" * 80 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        414,
        SMALL,
    ),
    (
        "RFC 6585 \u00a75: more field lines than the field limit is 431",
        b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
        431,
        SMALL,
    ),
    (
        "RFC 6585 \u00a75: header section larger than the head limit is 431",
        b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 50) for i in range(6)) + b"\r\n",
        431,
        ROOMY,
    ),
    (
        "RFC 6585 \u00a75: field line longer than the line limit is 431",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 100 + b"\r\n\r\n",
        431,
        ROOMY,
    ),
    (
        "RFC 9112 \u00a78: request head cut short by the connection closing is 400",
        b"GET / HTTP/1.1\r\nHo",
        400,
        DEFAULT_LIMITS,
        True,
    ),
    (
        "RFC 9112 \u00a78: Content-Length request body cut short is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc",
        400,
        DEFAULT_LIMITS,
        True,
    ),
    (
        "RFC 9112 \u00a78: chunked request body without its last chunk is 400",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        400,
        DEFAULT_LIMITS,
        True,
    ),
]


# (rule, request method, wire, expected events, expected buffered bytes, connection lost at the end)
RESPONSES = [
    (
        "RFC 9112 \u00a76.3 rule 6: Content-Length delimits the response body",
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        [response(200, b"OK", [(b"Content-Length", b"5")], framing=LENGTH, length=5), body(b"hello"), END],
        b"",
        False,
    ),
    (
        "RFC 9112 \u00a77.1: a chunked response body is decoded",
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n",
        [response(200, b"OK", [CHUNKED_TE], framing=CHUNKED), body(b"hello!"), END],
        b"",
        False,
    ),
    (
        "RFC 9112 \u00a76.3 rule 8: a response without length ends with the connection",
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it",
        [response(200, b"OK", [(b"Content-Type", b"text/plain")], framing=CLOSE), body(b"all of it"), END],
        b"",
        True,
    ),
    (
        "RFC 9112 \u00a76.3 rule 8: an HTTP/1.0 response without length ends with the connection",
        b"GET",
        b"HTTP/1.0 200 OK\r\n\r\nold",
        [response(200, b"OK", [], b"HTTP/1.0", CLOSE), body(b"old"), END],
        b"",
        True,
    ),
    (
        "RFC 9112 \u00a76.3 rule 1: a response to HEAD has no body whatever its Content-Length",
        b"HEAD",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        [
            response(200, b"OK", [(b"Content-Length", b"5")]),
            END,
            response(200, b"OK", [(b"Content-Length", b"5")]),
            END,
        ],
        b"",
        False,
    ),
    (
        "RFC 9112 \u00a76.3 rule 1: a 204 response has no body",
        b"GET",
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        [
            response(204, b"No Content", []),
            END,
            response(200, b"OK", [(b"Content-Length", b"2")], framing=LENGTH, length=2),
            body(b"hi"),
            END,
        ],
        b"",
        False,
    ),
    (
        "RFC 9112 \u00a76.3 rule 1: a 304 response has no body whatever its Content-Length",
        b"GET",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        [
            response(304, b"Not Modified", [(b"Content-Length", b"10")]),
            END,
            response(200, b"OK", [(b"Content-Length", b"2")], framing=LENGTH, length=2),
            body(b"hi"),
            END,
        ],
        b"",
        False,
    ),
    (
        "RFC 9110 \u00a715.2: interim 1xx responses precede the final response",
        b"POST",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        [
            response(100, b"Continue", []),
            response(103, b"Early Hints", [(b"Link", b"</s.css>")]),
            response(200, b"OK", [(b"Content-Length", b"2")], framing=LENGTH, length=2),
            body(b"ok"),
            END,
        ],
        b"",
        False,
    ),
    (
        "RFC 9110 \u00a715.2.2: after 101 the bytes belong to the new protocol",
        b"GET",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x05hello HTTP/1.1 200 OK\r\n\r\n",
        [response(101, b"Switching Protocols", [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")])],
        b"\x81\x05hello HTTP/1.1 200 OK\r\n\r\n",
        False,
    ),
    (
        "RFC 9112 \u00a76.3 rule 2: a 2xx response to CONNECT starts a tunnel",
        b"CONNECT",
        b"HTTP/1.1 200 Connection established\r\nContent-Length: 99\r\n\r\n\x16\x03\x01\x00\x05",
        [response(200, b"Connection established", [(b"Content-Length", b"99")])],
        b"\x16\x03\x01\x00\x05",
        False,
    ),
    (
        "RFC 9112 \u00a76.3 rule 2: a non-2xx response to CONNECT has an ordinary body",
        b"CONNECT",
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 2\r\n\r\nno",
        [
            response(407, b"Proxy Authentication Required", [(b"Content-Length", b"2")], framing=LENGTH, length=2),
            body(b"no"),
            END,
        ],
        b"",
        False,
    ),
    (
        "RFC 9112 \u00a79.3.2: pipelined responses in one segment",
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nb",
        [
            response(200, b"OK", [(b"Content-Length", b"1")], framing=LENGTH, length=1),
            body(b"a"),
            END,
            response(404, b"Not Found", [(b"Content-Length", b"1")], framing=LENGTH, length=1),
            body(b"b"),
            END,
        ],
        b"",
        False,
    ),
    (
        "RFC 9112 \u00a74: an empty reason phrase is allowed",
        b"GET",
        b"HTTP/1.1 204 \r\n\r\n",
        [response(204, b"", []), END],
        b"",
        False,
    ),
    (
        "RFC 9112 \u00a72.2: a bare LF ends response head lines",
        b"GET",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        [response(200, b"OK", [(b"Content-Length", b"2")], framing=LENGTH, length=2), body(b"ok"), END],
        b"",
        False,
    ),
]


# (rule, request method, wire, connection lost at the end, status, RFC 9209 error type)
BAD_RESPONSES = [
    (
        "RFC 9112 \u00a76.1: a transfer coding the relay cannot decode (final gzip) is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nzipped",
        False,
        502,
        HTTP_RESPONSE_TRANSFER_CODING,
    ),
    (
        "RFC 9112 \u00a76.1: gzip before chunked would reach the client undeclared, so 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        False,
        502,
        HTTP_RESPONSE_TRANSFER_CODING,
    ),
    (
        "RFC 9112 \u00a76.3 rule 3: Transfer-Encoding and Content-Length in a response is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        False,
        502,
        HTTP_PROTOCOL_ERROR,
    ),
    (
        "RFC 9112 \u00a76.3 rule 5: differing Content-Lengths in a response is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        False,
        502,
        HTTP_PROTOCOL_ERROR,
    ),
    (
        "RFC 9112 \u00a76.3 rule 5: non-numeric Content-Length in a response is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
        False,
        502,
        HTTP_PROTOCOL_ERROR,
    ),
    ("RFC 9112 \u00a74: status line without status code is 502", b"GET", b"HTTP/1.1 OK\r\n\r\n", False, 502,
     HTTP_PROTOCOL_ERROR),
    ("RFC 9112 \u00a74: four-digit status code is 502", b"GET", b"HTTP/1.1 2000 OK\r\n\r\n", False, 502,
     HTTP_PROTOCOL_ERROR),
    ("RFC 9112 \u00a74: status line with a foreign protocol is 502", b"GET", b"ICY 200 OK\r\n\r\n", False, 502,
     HTTP_PROTOCOL_ERROR),
    (
        "RFC 9112 \u00a75.2: obs-fold in a response is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nX: one\r\n two\r\nContent-Length: 0\r\n\r\n",
        False,
        502,
        HTTP_PROTOCOL_ERROR,
    ),
    (
        "RFC 9110 \u00a75.5: NUL in a response field value is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
        False,
        502,
        HTTP_PROTOCOL_ERROR,
    ),
    (
        "RFC 9112 \u00a77.1: bad chunk size in a response is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnope\r\n",
        False,
        502,
        HTTP_PROTOCOL_ERROR,
    ),
    (
        "RFC 9112 \u00a77.1: response chunk data followed by a bare LF is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
        False,
        502,
        HTTP_PROTOCOL_ERROR,
    ),
    (
        "RFC 9112 \u00a78: Content-Length response body cut short is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        True,
        502,
        HTTP_RESPONSE_INCOMPLETE,
    ),
    (
        "RFC 9112 \u00a78: chunked response body without its last chunk is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        True,
        502,
        HTTP_RESPONSE_INCOMPLETE,
    ),
    (
        "RFC 9112 \u00a78: response head cut short is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Len",
        True,
        502,
        HTTP_RESPONSE_INCOMPLETE,
    ),
    (
        "RFC 9209 \u00a72.3.19: a response head over the limit is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\n" + (b"X-Padding: " + b"a" * 40 + b"\r\n") * 8 + b"\r\n",
        False,
        502,
        HTTP_RESPONSE_HEADER_SECTION_SIZE,
        ROOMY,
    ),
    (
        "RFC 9209 \u00a72.3.19: too many response fields is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 5 + b"\r\n",
        False,
        502,
        HTTP_RESPONSE_HEADER_SECTION_SIZE,
        SMALL,
    ),
    (
        "RFC 9209 \u00a72.3.19: a status line over the limit is 502",
        b"GET",
        b"HTTP/1.1 200 " + b"O" * 80 + b"\r\n\r\n",
        False,
        502,
        HTTP_RESPONSE_HEADER_SECTION_SIZE,
        ROOMY,
    ),
    (
        "RFC 9209 \u00a72.3.20: a response field line over the limit is 502",
        b"GET",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * 80 + b"\r\n\r\n",
        False,
        502,
        HTTP_RESPONSE_HEADER_SIZE,
        ROOMY,
    ),
]


@fromTable(REQUESTS, "checkRequest")
@fromTable(BAD_REQUESTS, "checkBadRequest")
class RequestTests(SynchronousTestCase):
    """
    Requests read from a client connection.
    """

    def checkRequest(self, wire, expected):
        for pieces in segmentations(wire):
            self.assertEqual(read(pieces, isRequest=True), (expected, b""), pieces)

    def checkBadRequest(self, wire, status, limits=DEFAULT_LIMITS, lost=False):
        for pieces in ([wire], [wire[i:i + 1] for i in range(len(wire))]):
            self.assertEqual(refusal(pieces, True, limits=limits, lost=lost), status, pieces)

    def test_connectionLostWhenIdle(self):
        """
        RFC 9112 \u00a79.6: closing between requests, even after stray empty
        lines, is not an error.
        """
        self.assertEqual(read([b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n"], True, lost=True)[0][-1], END)

    def test_idle(self):
        """
        The reader is idle only between messages with nothing buffered.
        """
        reader = MessageReader(Recorder(), True)
        self.assertTrue(reader.idle)
        reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n")
        self.assertFalse(reader.idle)
        reader.feed(b"ok")
        self.assertTrue(reader.idle)
        reader.feed(b"GET")
        self.assertFalse(reader.idle)


@fromTable(RESPONSES, "checkResponse")
@fromTable(BAD_RESPONSES, "checkBadResponse")
class ResponseTests(SynchronousTestCase):
    """
    Responses read from an upstream connection.
    """

    def checkResponse(self, method, wire, expected, buffered, lost):
        for pieces in segmentations(wire):
            self.assertEqual(read(pieces, False, method, lost=lost), (expected, buffered), pieces)

    def checkBadResponse(self, method, wire, lost, status, errorType, limits=DEFAULT_LIMITS):
        for pieces in ([wire], [wire[i:i + 1] for i in range(len(wire))]):
            self.assertEqual(responseRefusal(pieces, method, lost, limits), (status, errorType), pieces)

    def test_interimResponsesAreCapped(self):
        """
        A few interim responses pass; an endless run of them is refused
        before the final response, so it cannot keep an exchange for ever.
        """
        interim = b"HTTP/1.1 102 Processing\r\n\r\n"
        final = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        events, _ = read([interim * MAX_INTERIM + final], False, b"GET")
        self.assertEqual(len(events), MAX_INTERIM + 2)
        self.assertEqual(responseRefusal([interim * (MAX_INTERIM + 1) + final], b"GET", False),
                         (502, HTTP_PROTOCOL_ERROR))

    def test_interimCountIsPerRequest(self):
        """
        The cap counts the interim responses to one request, not to a
        connection's lifetime.
        """
        sink = Recorder()
        reader = MessageReader(sink, False)
        for _ in range(3):
            reader.expectResponse(b"GET")
            reader.feed(b"HTTP/1.1 100 Continue\r\n\r\n" * MAX_INTERIM + b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(len(sink.events), 3 * (MAX_INTERIM + 2))

    def test_upgradedBytesKeepAccumulating(self):
        """
        RFC 9110 \u00a715.2.2: bytes arriving after a 101 are only buffered.
        """
        sink = Recorder()
        reader = MessageReader(sink, False)
        reader.expectResponse(b"GET")
        reader.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
        self.assertEqual(reader.buffered, b"")
        reader.feed(b"one")
        reader.feed(b"two")
        self.assertEqual(len(sink.events), 1)
        self.assertEqual(reader.buffered, b"onetwo")


class PauseTests(SynchronousTestCase):
    """
    A sink may pause the reader to hold pipelined requests back.
    """

    FIRST = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    SECOND = b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"

    def setUp(self):
        self.sink = Recorder()
        self.reader = MessageReader(self.sink, True)
        recordEnd = self.sink.messageEnded

        def messageEnded():
            recordEnd()
            self.reader.paused = True

        self.sink.messageEnded = messageEnded

    def test_pauseHoldsPipelinedRequest(self):
        """
        RFC 9112 \u00a79.3.2: a request pipelined behind one still being
        answered stays buffered until the reader is resumed.
        """
        self.reader.feed(self.FIRST + self.SECOND)
        self.assertEqual(self.sink.events, [request(b"GET", b"/1", [HOST]), END])
        self.assertEqual(self.reader.buffered, self.SECOND)
        self.assertFalse(self.reader.idle)
        self.reader.resume()
        self.assertEqual(
            self.sink.events[2:],
            [
                request(b"POST", b"/2", [HOST, (b"Content-Length", b"2")], framing=LENGTH, length=2),
                body(b"hi"),
                END,
            ],
        )
        self.assertEqual(self.reader.buffered, b"")
        self.assertTrue(self.reader.idle)

    def test_feedWhilePausedOnlyBuffers(self):
        """
        Bytes fed while paused are appended to the buffer, not parsed.
        """
        self.reader.feed(self.FIRST)
        self.assertTrue(self.reader.paused)
        self.reader.feed(self.SECOND[:10])
        self.reader.feed(self.SECOND[10:])
        self.assertEqual(len(self.sink.events), 2)
        self.assertEqual(self.reader.buffered, self.SECOND)
        self.reader.resume()
        self.assertEqual(self.sink.events[-2:], [body(b"hi"), END])
