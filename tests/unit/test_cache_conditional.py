"""
Tests for L{dualproxy.cache.conditional}: answering conditional and Range
requests from a stored 200, one table case per rule.
"""

from __future__ import annotations

from email.utils import formatdate

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.cache.conditional import (
    UNSATISFIABLE,
    byteRange,
    notModified,
    partial,
    preconditions,
    unsatisfiable,
)
from dualproxy.http.message import LENGTH, NO_BODY, Headers, RequestHead, ResponseHead
from tests.tables import fromTable

# Sun, 06 Nov 1994 08:49:37 GMT
T0 = 784111777.0


def date(offset: float) -> bytes:
    return formatdate(T0 + offset, usegmt=True).encode("ascii")


DATE = (b"Date", date(0))
MODIFIED = (b"Last-Modified", date(-100))
ETAG = (b"ETag", b'"v1"')
STORED = (DATE, MODIFIED, ETAG)
IM = b"If-Match"
INM = b"If-None-Match"
IMS = b"If-Modified-Since"
IUS = b"If-Unmodified-Since"


def stored(*fields, status=200) -> ResponseHead:
    return ResponseHead(status, b"OK", Headers(list(fields)))


def case(rule, requestFields, expected, method=b"GET", storedFields=STORED, status=200, size=1000):
    return (rule, method, requestFields, storedFields, status, size, expected)


PRECONDITIONS = [
    case("RFC 9110 §13.2.2: without preconditions the stored response is sent", (), None),
    case("RFC 9110 §13.1.1: If-Match with the stored entity-tag passes",
         ((IM, b'"v1"'),), None),
    case("RFC 9110 §13.1.1: If-Match without the stored entity-tag fails with 412",
         ((IM, b'"v2"'),), 412),
    case("RFC 9110 §13.1.1: If-Match uses the strong comparison on the request tag",
         ((IM, b'W/"v1"'),), 412),
    case("RFC 9110 §13.1.1: If-Match never matches a weak stored tag",
         ((IM, b'"v1"'),), 412, storedFields=(DATE, (b"ETag", b'W/"v1"'))),
    case("RFC 9110 §13.1.1: If-Match * matches any stored representation",
         ((IM, b"*"),), None, storedFields=(DATE,)),
    case("RFC 9110 §13.1.1: If-Match fails when nothing is stored to match",
         ((IM, b'"v1"'),), 412, storedFields=(DATE,)),
    case("RFC 9110 §13.1.1: any tag of an If-Match list may match",
         ((IM, b'"a", "b" ,"v1"'),), None),
    case("RFC 9110 §5.3: repeated If-Match fields form one list",
         ((IM, b'"a"'), (IM, b'"v1"')), None),
    case("RFC 9110 §13.2.2: If-Match makes If-Unmodified-Since ignored",
         ((IM, b'"v1"'), (IUS, date(-200))), None),
    case("RFC 9110 §13.1.4: a modification after If-Unmodified-Since fails with 412",
         ((IUS, date(-200)),), 412),
    case("RFC 9110 §13.1.4: If-Unmodified-Since equal to Last-Modified passes",
         ((IUS, date(-100)),), None),
    case("RFC 9110 §13.1.4: an invalid If-Unmodified-Since is ignored",
         ((IUS, b"Sun, 06 Nov 1994"),), None),
    case("RFC 9110 §13.1.4: If-Unmodified-Since is ignored without Last-Modified",
         ((IUS, date(-200)),), None, storedFields=(DATE, ETAG)),
    case("RFC 9110 §13.2.2: a failed If-Match wins over If-None-Match",
         ((IM, b'"v2"'), (INM, b'"v1"')), 412),
    case("RFC 9110 §13.2.2: a failed If-Unmodified-Since wins over If-None-Match",
         ((IUS, date(-200)), (INM, b'"v1"')), 412),
    case("RFC 9110 §13.1.2: If-None-Match with the stored tag answers 304",
         ((INM, b'"v1"'),), 304),
    case("RFC 9110 §13.1.2: If-None-Match uses the weak comparison on the request tag",
         ((INM, b'W/"v1"'),), 304),
    case("RFC 9110 §13.1.2: If-None-Match uses the weak comparison on the stored tag",
         ((INM, b'"v1"'),), 304, storedFields=(DATE, (b"ETag", b'W/"v1"'))),
    case("RFC 9110 §13.1.2: If-None-Match without the stored tag sends the response",
         ((INM, b'"v2", W/"v3"'),), None),
    case("RFC 9110 §13.1.2: If-None-Match * matches any stored representation",
         ((INM, b"*"),), 304, storedFields=(DATE,)),
    case("RFC 9110 §13.1.2: HEAD gets a 304 like GET",
         ((INM, b'"v1"'),), 304, method=b"HEAD"),
    case("RFC 9110 §13.1.2: a matching If-None-Match fails other methods with 412",
         ((INM, b'"v1"'),), 412, method=b"PUT"),
    case("RFC 9110 §8.8.3: a comma inside quotes belongs to the entity-tag",
         ((INM, b'"x", "a,b"'),), 304, storedFields=((b"ETag", b'"a,b"'),)),
    case("RFC 9110 §8.8.3: a tag containing a comma does not match its prefix",
         ((INM, b'"a,b"'),), None, storedFields=((b"ETag", b'"a"'),)),
    case("RFC 9110 §8.8.3: an unquoted entity-tag is garbage and never matches",
         ((INM, b"v1"),), None),
    case("RFC 9110 §8.8.3: the weak prefix W/ is case-sensitive",
         ((INM, b'w/"v1"'),), None),
    case("RFC 9110 §8.8.3: tags after a garbage element still match",
         ((INM, b'v1, "x"y, x"a,b"c, W/"v1"'),), 304),
    case("RFC 9110 §8.8.3: a malformed stored ETag matches nothing",
         ((INM, b'"v1"'),), None, storedFields=((b"ETag", b"v1"),)),
    case("RFC 9110 §13.2.2: If-None-Match makes If-Modified-Since ignored",
         ((INM, b'"v2"'), (IMS, date(0))), None),
    case("RFC 9110 §13.1.3: If-Modified-Since at Last-Modified answers 304",
         ((IMS, date(-100)),), 304),
    case("RFC 9110 §13.1.3: a modification after If-Modified-Since sends the response",
         ((IMS, date(-101)),), None),
    case("RFC 9110 §13.1.3: an invalid If-Modified-Since is ignored",
         ((IMS, b"Mon, 31 Feb 2099 00:00:00 GMT"),), None),
    case("RFC 9110 §13.1.3: If-Modified-Since with more than one member is ignored",
         ((IMS, date(0)), (IMS, date(0))), None),
    case("RFC 9110 §13.1.3: If-Modified-Since is ignored for methods but GET and HEAD",
         ((IMS, date(0)),), None, method=b"POST"),
    case("RFC 9111 §4.3.2: without Last-Modified a cache compares the stored Date",
         ((IMS, date(0)),), 304, storedFields=(DATE, ETAG)),
    case("RFC 9111 §4.3.2: a stored Date after If-Modified-Since sends the response",
         ((IMS, date(-1)),), None, storedFields=(DATE, ETAG)),
    case("RFC 9110 §13.1.3: with no date stored If-Modified-Since is ignored",
         ((IMS, date(0)),), None, storedFields=(ETAG,)),
    case("RFC 9110 §13.2.1: preconditions are ignored for OPTIONS",
         ((IM, b'"v2"'),), None, method=b"OPTIONS"),
]

R = b"Range"
IR = b"If-Range"


def ranged(rule, value, expected, *fields, **options):
    return case(rule, ((R, value),) + fields, expected, **options)


RANGES = [
    case("RFC 9110 §14.2: without Range the whole response is sent", (), None),
    ranged("RFC 9110 §14.1.2: an int-range selects inclusive offsets",
           b"bytes=0-499", (0, 500)),
    ranged("RFC 9110 §14.1.2: a last-pos past the end is clamped", b"bytes=900-5000", (900, 1000)),
    ranged("RFC 9110 §14.1.2: a range without last-pos runs to the end",
           b"bytes=990-", (990, 1000)),
    ranged("RFC 9110 §14.1.2: a single byte at the end", b"bytes=999-999", (999, 1000)),
    ranged("RFC 9110 §14.1.2: a suffix-range selects the final bytes", b"bytes=-100", (900, 1000)),
    ranged("RFC 9110 §14.1.2: a suffix longer than the representation selects all of it",
           b"bytes=-5000", (0, 1000)),
    ranged("RFC 9110 §14.1.2: positions are not limited in size",
           b"bytes=0-99999999999999999999999", (0, 1000)),
    ranged("RFC 9110 §14.1: range unit names are case-insensitive", b"BYTES=1-1", (1, 2)),
    ranged("RFC 9110 §14.1.1 erratum 7306: whitespace may follow the equals sign",
           b"bytes= \t5-9", (5, 10)),
    ranged("RFC 9110 §5.6.1: empty list elements and whitespace around commas are ignored",
           b"bytes=, 5-9 ,", (5, 10)),
    ranged("RFC 9110 §14.1.1: whitespace inside a range-spec is malformed", b"bytes=5 - 9", None),
    ranged("RFC 9110 §14.1.1: whitespace before the equals sign is malformed",
           b"bytes =5-9", None),
    ranged("RFC 9110 §14.1.1: a last-pos below first-pos is invalid and ignored",
           b"bytes=9-5", None),
    ranged("RFC 9110 §14.1.1: an invalid range is ignored even past the end",
           b"bytes=5000-10", None),
    ranged("RFC 9110 §14.1.1: positions must be digits", b"bytes=0x1-5", None),
    ranged("RFC 9110 §14.1.1: a range-spec needs a position", b"bytes=-", None),
    ranged("RFC 9110 §14.1.1: a negative suffix is malformed", b"bytes=--5", None),
    ranged("RFC 9110 §14.1.1: a range-set needs a range-spec", b"bytes=", None),
    ranged("RFC 9110 §14.1.1: a ranges-specifier needs the equals sign", b"bytes 0-5", None),
    ranged("RFC 9110 §14.1: other range units are ignored", b"items=0-5", None),
    ranged("RFC 9110 §14.2: several ranges are ignored rather than sent as multipart",
           b"bytes=0-0,-1", None),
    ranged("RFC 9110 §14.2: ignoring several ranges avoids a 416 for all of them",
           b"bytes=5000-,6000-", None),
    ranged("RFC 9110 §14.2: Range is defined only for GET", b"bytes=0-5", None, method=b"HEAD"),
    ranged("RFC 9110 §14.2: Range is only applied to a stored 200",
           b"bytes=0-5", None, status=203),
    ranged("RFC 9110 §5.3: repeated Range fields are malformed", b"bytes=0-5", None,
           (R, b"bytes=6-9")),
    ranged("RFC 9110 §14.1.1: a first-pos at the length is unsatisfiable",
           b"bytes=1000-", UNSATISFIABLE),
    ranged("RFC 9110 §14.1.1: a first-pos past the length is unsatisfiable",
           b"bytes=2000-3000", UNSATISFIABLE),
    ranged("RFC 9110 §14.1.1: a zero suffix-length is unsatisfiable", b"bytes=-0", UNSATISFIABLE),
    ranged("RFC 9110 §14.1.1: an empty representation satisfies no int-range",
           b"bytes=0-", UNSATISFIABLE, size=0),
    ranged("RFC 9110 §14.1.1: a suffix of an empty representation is sent as a 200",
           b"bytes=-5", None, size=0),
    ranged("RFC 9110 §13.1.5: If-Range with the stored strong tag allows the range",
           b"bytes=0-9", (0, 10), (IR, b'"v1"')),
    ranged("RFC 9110 §13.1.5: If-Range with another tag sends the whole response",
           b"bytes=0-9", None, (IR, b'"v2"')),
    ranged("RFC 9110 §13.1.5: a weak If-Range tag never matches",
           b"bytes=0-9", None, (IR, b'W/"v1"')),
    ranged("RFC 9110 §13.1.5: a weak stored tag never matches If-Range",
           b"bytes=0-9", None, (IR, b'"v1"'), storedFields=(DATE, (b"ETag", b'W/"v1"'))),
    ranged("RFC 9110 §13.1.5: If-Range with the stored Last-Modified allows the range",
           b"bytes=0-9", (0, 10), (IR, date(-100))),
    ranged("RFC 9110 §13.1.5: If-Range with another date sends the whole response",
           b"bytes=0-9", None, (IR, date(-99))),
    ranged("RFC 9110 §8.8.2.2: a Last-Modified less than a second before Date is weak",
           b"bytes=0-9", None, (IR, date(0)), storedFields=(DATE, (b"Last-Modified", date(0)))),
    ranged("RFC 9110 §8.8.2.2: a Last-Modified without a stored Date is weak",
           b"bytes=0-9", None, (IR, date(-100)), storedFields=(MODIFIED,)),
    ranged("RFC 9110 §13.1.5: identical weak tags never match for If-Range",
           b"bytes=0-9", None, (IR, b'W/"v1"'), storedFields=(DATE, (b"ETag", b'W/"v1"'))),
    ranged("RFC 9110 §5.3: repeated If-Range fields fail",
           b"bytes=0-9", None, (IR, b'"v1"'), (IR, b'"v1"')),
    ranged("RFC 9110 §13.1.5: an If-Range that is neither tag nor date fails",
           b"bytes=0-9", None, (IR, b"v1")),
    ranged("RFC 9110 §13.1.5: a failed If-Range sends a 200, not a 416",
           b"bytes=5000-", None, (IR, b'"v2"')),
]

BODY = ((b"Content-Type", b"text/plain"), (b"Content-Length", b"1000"))

NOT_MODIFIED = [
    ("RFC 9110 §15.4.5: a 304 keeps the validators and caching fields in order",
     (DATE, (b"Content-Type", b"text/plain"), (b"cache-control", b"max-age=60"),
      (b"Content-Location", b"/a.txt"), MODIFIED, (b"Expires", date(60)), ETAG,
      (b"Vary", b"Accept"), (b"Content-Length", b"1000")),
     [DATE, (b"cache-control", b"max-age=60"), (b"Content-Location", b"/a.txt"), MODIFIED,
      (b"Expires", date(60)), ETAG, (b"Vary", b"Accept")]),
    ("RFC 9110 §15.4.5: a 304 drops representation metadata",
     BODY + ((b"Content-Encoding", b"gzip"), (b"Set-Cookie", b"a=b")), []),
    ("RFC 9110 §15.4.5: repeated fields are all kept",
     ((b"Cache-Control", b"public"), (b"Vary", b"Accept"), (b"Cache-Control", b"max-age=9"),
      (b"Vary", b"Cookie")),
     [(b"Cache-Control", b"public"), (b"Vary", b"Accept"), (b"Cache-Control", b"max-age=9"),
      (b"Vary", b"Cookie")]),
]

PARTIAL = [
    ("RFC 9110 §15.3.7: a 206 replaces Content-Length and adds Content-Range",
     BODY + (ETAG,), 0, 500, 1000,
     [(b"Content-Type", b"text/plain"), ETAG, (b"Content-Length", b"500"),
      (b"Content-Range", b"bytes 0-499/1000")]),
    ("RFC 9110 §14.4: Content-Range names the last byte inclusively",
     (DATE,), 999, 1000, 1000,
     [DATE, (b"Content-Length", b"1"), (b"Content-Range", b"bytes 999-999/1000")]),
]

UNSATISFIABLE_HEADS = [
    ("RFC 9110 §15.5.17: a 416 names the current length in Content-Range",
     BODY + (DATE, (b"Vary", b"Accept"), ETAG, MODIFIED, (b"Cache-Control", b"max-age=60")),
     1000,
     [DATE, ETAG, MODIFIED, (b"Cache-Control", b"max-age=60"),
      (b"Content-Range", b"bytes */1000"), (b"Content-Length", b"0")]),
    ("RFC 9110 §15.5.17: a 416 for an empty representation",
     (), 0, [(b"Content-Range", b"bytes */0"), (b"Content-Length", b"0")]),
]


@fromTable(PRECONDITIONS, "checkPreconditions")
@fromTable(RANGES, "checkRange")
class EvaluationTests(SynchronousTestCase):
    def checkPreconditions(self, method, requestFields, storedFields, status, size, expected):
        request = RequestHead(method, b"/", headers=Headers(list(requestFields)))
        self.assertEqual(preconditions(request, stored(*storedFields, status=status)), expected)

    def checkRange(self, method, requestFields, storedFields, status, size, expected):
        request = RequestHead(method, b"/", headers=Headers(list(requestFields)))
        self.assertEqual(byteRange(request, stored(*storedFields, status=status), size), expected)


@fromTable(NOT_MODIFIED, "checkNotModified")
@fromTable(PARTIAL, "checkPartial")
@fromTable(UNSATISFIABLE_HEADS, "checkUnsatisfiable")
class HeadTests(SynchronousTestCase):
    def assertHead(self, head, status, reason, framing, length, fields):
        self.assertEqual(
            (head.status, head.reason, head.framing, head.length, list(head.headers)),
            (status, reason, framing, length, fields),
        )

    def checkNotModified(self, storedFields, expected):
        original = stored(*storedFields)
        self.assertHead(notModified(original), 304, b"Not Modified", NO_BODY, 0, expected)
        self.assertEqual(list(original.headers), list(storedFields))

    def checkPartial(self, storedFields, start, end, size, expected):
        original = stored(*storedFields)
        head = partial(original, start, end, size)
        self.assertHead(head, 206, b"Partial Content", LENGTH, end - start, expected)
        self.assertEqual(list(original.headers), list(storedFields))

    def checkUnsatisfiable(self, storedFields, size, expected):
        head = unsatisfiable(stored(*storedFields), size)
        self.assertHead(head, 416, b"Range Not Satisfiable", LENGTH, 0, expected)
