"""
Tests for L{dualproxy.cache.policy}: the rules of an RFC 9111 shared cache,
one table case per rule.
"""

from __future__ import annotations

from email.utils import formatdate

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.cache.policy import (
    Decision,
    StoredResponse,
    cacheStatus,
    conditionalHeaders,
    currentAge,
    freshnessLifetime,
    httpDate,
    invalidatedLocations,
    invalidates,
    lookup,
    parseCacheControl,
    secondaryKey,
    storable,
    updateHeaders,
    varyMatches,
)
from dualproxy.http.message import Headers, RequestHead, ResponseHead
from tests.tables import fromTable

# Sun, 06 Nov 1994 08:49:37 GMT
T0 = 784111777.0


def date(offset: float) -> bytes:
    return formatdate(T0 + offset, usegmt=True).encode("ascii")


def headers(*fields) -> Headers:
    return Headers([(name, value) for name, value in fields])


def request(*fields, method=b"GET") -> RequestHead:
    return RequestHead(method, b"/", headers=headers(*fields))


def response(*fields, status=200) -> ResponseHead:
    return ResponseHead(status, b"", headers(*fields))


CC = b"Cache-Control"

PARSE = [
    ("RFC 9111 §5.2: directive names are case-insensitive",
     [b"Max-Age=60, NO-STORE"], {"max-age": "60", "no-store": None}),
    ("RFC 9111 §5.2: quoted-string arguments are unquoted",
     [b'max-age="60"'], {"max-age": "60"}),
    ("RFC 9111 §5.2.2.4: a no-cache field list is kept as one string",
     [b'no-cache="Set-Cookie, X-Foo", public'], {"no-cache": "Set-Cookie, X-Foo", "public": None}),
    ("RFC 9110 §5.3: repeated Cache-Control fields are combined",
     [b"public", b"max-age=5"], {"public": None, "max-age": "5"}),
    ("RFC 9111 §4.2.1: the first of duplicate directives is used",
     [b"max-age=5, max-age=10"], {"max-age": "5"}),
    ("RFC 9110 §5.6.1: empty list elements and whitespace are ignored",
     [b" , private ,, s-maxage = 7 ,"], {"private": None, "s-maxage": "7"}),
    ("RFC 9110 §5.6.4: backslash escapes inside a quoted string",
     [b'x="a\\"b,c"'], {"x": 'a"b,c'}),
    ("RFC 9111 §5.2: no Cache-Control field means no directives", [], {}),
]

DATES = [
    ("RFC 9110 §5.6.7: IMF-fixdate", b"Sun, 06 Nov 1994 08:49:37 GMT", T0),
    ("RFC 9110 §5.6.7: obsolete RFC 850 form", b"Sunday, 06-Nov-94 08:49:37 GMT", T0),
    ("RFC 9110 §5.6.7: obsolete asctime form", b"Sun Nov  6 08:49:37 1994", T0),
    ("RFC 9110 §5.6.7: RFC 850 two-digit year below 70 is this century",
     b"Tuesday, 01-Jan-30 00:00:00 GMT", 1893456000.0),
    ("RFC 9111 §5.3: Expires 0 is not a date", b"0", None),
    ("RFC 9110 §5.6.7: a non-GMT zone is invalid", b"Sun, 06 Nov 1994 08:49:37 PST", None),
    ("RFC 9110 §5.6.7: an impossible day is invalid", b"Mon, 31 Feb 2000 00:00:00 GMT", None),
    ("RFC 9110 §5.6.7: an hour beyond 23 is invalid", b"Sun, 06 Nov 1994 24:00:00 GMT", None),
    ("RFC 9110 §5.6.7: an empty value is invalid", b"", None),
]

STORABLE = [
    ("RFC 9111 §3: GET with max-age is storable",
     b"GET", (), 200, [(CC, b"max-age=60")], True, "storable"),
    ("RFC 9111 §3: HEAD is storable like GET",
     b"HEAD", (), 200, [(CC, b"max-age=60")], True, "storable"),
    ("RFC 9110 §9.3.3: POST with explicit freshness is storable",
     b"POST", (), 200, [(CC, b"max-age=60"), (b"Content-Location", b"/r")], True, "storable"),
    ("RFC 9110 §9.3.3: POST without explicit freshness is not storable",
     b"POST", (), 200, [(b"Last-Modified", date(-100))], False, "POST without explicit freshness"),
    ("RFC 9111 §3: PUT responses are not storable",
     b"PUT", (), 200, [(CC, b"max-age=60")], False, "method not cacheable"),
    ("RFC 9111 §3: an interim 1xx status is not final",
     b"GET", (), 103, [(CC, b"max-age=60")], False, "non-final status"),
    ("RFC 9111 §3: 206 is not stored by a cache that does not combine ranges",
     b"GET", (), 206, [(CC, b"max-age=60")], False, "status not understood"),
    ("RFC 9111 §3: a 304 is not stored",
     b"GET", (), 304, [(CC, b"max-age=60")], False, "status not understood"),
    ("RFC 9111 §3: an unknown status is storable with explicit freshness",
     b"GET", (), 299, [(CC, b"max-age=60")], True, "storable"),
    ("RFC 9111 §5.2.2.5: response no-store forbids storing",
     b"GET", (), 200, [(CC, b"max-age=60, no-store")], False, "no-store"),
    ("RFC 9111 §5.2.1.5: request no-store forbids storing",
     b"GET", ((CC, b"no-store"),), 200, [(CC, b"max-age=60")], False, "no-store in request"),
    ("RFC 9111 §5.2.2.7: private forbids a shared cache to store",
     b"GET", (), 200, [(CC, b"private, max-age=60")], False, "private"),
    ("RFC 9111 §5.2.2.7: qualified private also forbids a shared cache to store",
     b"GET", (), 200, [(CC, b'private="Set-Cookie", max-age=60')], False, "private"),
    ("RFC 9111 §3.5: an authorized request's response needs public",
     b"GET", ((b"Authorization", b"Basic eA=="),), 200, [(CC, b"max-age=60")],
     False, "authorized request"),
    ("RFC 9111 §3.5: public allows storing an authorized response",
     b"GET", ((b"Authorization", b"Basic eA=="),), 200, [(CC, b"public, max-age=60")],
     True, "storable"),
    ("RFC 9111 §3.5: s-maxage allows storing an authorized response",
     b"GET", ((b"Authorization", b"Basic eA=="),), 200, [(CC, b"s-maxage=60")], True, "storable"),
    ("RFC 9111 §3.5: must-revalidate allows storing an authorized response",
     b"GET", ((b"Authorization", b"Basic eA=="),), 200, [(CC, b"must-revalidate, max-age=9")],
     True, "storable"),
    ("RFC 9111 §5.2.2.3: must-understand overrides no-store for an understood status",
     b"GET", (), 200, [(CC, b"must-understand, no-store, max-age=60")], True, "storable"),
    ("RFC 9111 §5.2.2.3: must-understand with a status not understood is not stored",
     b"GET", (), 299, [(CC, b"must-understand, no-store, max-age=60")],
     False, "must-understand: status not understood"),
    ("RFC 9111 §3: Expires is explicit freshness for a non-heuristic status",
     b"GET", (), 302, [(b"Date", date(0)), (b"Expires", date(60))], True, "storable"),
    ("RFC 9111 §3: s-maxage is explicit freshness for a non-heuristic status",
     b"GET", (), 302, [(CC, b"s-maxage=60")], True, "storable"),
    ("RFC 9111 §5.2.2.9: public makes a non-heuristic status storable",
     b"GET", (), 302, [(CC, b"public"), (b"ETag", b'"a"')], True, "storable"),
    ("RFC 9110 §15.1: a heuristically cacheable status with Last-Modified is storable",
     b"GET", (), 404, [(b"Date", date(0)), (b"Last-Modified", date(-1000))], True, "storable"),
    ("RFC 9111 §3: a non-heuristic status without freshness is not storable",
     b"GET", (), 302, [(b"Location", b"/x"), (b"ETag", b'"a"')],
     False, "no freshness information"),
    ("RFC 9111 §5.3: Expires 0 with a validator is stored stale for revalidation",
     b"GET", (), 200, [(b"Expires", b"0"), (b"ETag", b'"a"')], True, "storable"),
    ("RFC 9111 §5.3: Expires 0 without a validator is useless to store",
     b"GET", (), 200, [(b"Expires", b"0")], False, "stale without validator"),
    ("RFC 9111 §4.2.3: an upstream Age beyond max-age without validator is not stored",
     b"GET", (), 200, [(CC, b"max-age=60"), (b"Age", b"100")], False, "stale without validator"),
    ("RFC 5861 §3: stale on arrival without validator is stored for stale-while-revalidate",
     b"GET", (), 200, [(CC, b"max-age=0, stale-while-revalidate=60")], True, "storable"),
    ("RFC 5861 §4: stale on arrival without validator is stored for stale-if-error",
     b"GET", (), 200, [(CC, b"max-age=0, stale-if-error=60")], True, "storable"),
]

LIFETIME = [
    ("RFC 9111 §4.2.1: s-maxage overrides max-age in a shared cache",
     200, [(CC, b"max-age=10, s-maxage=20")], 20.0),
    ("RFC 9111 §4.2.1: max-age overrides Expires",
     200, [(CC, b"max-age=10"), (b"Date", date(0)), (b"Expires", date(100))], 10.0),
    ("RFC 9111 §4.2.1: Expires minus Date",
     200, [(b"Date", date(0)), (b"Expires", date(100))], 100.0),
    ("RFC 9110 §6.6.1: a missing Date is the time the response was received",
     200, [(b"Expires", date(150))], 100.0),
    ("RFC 9111 §5.3: an invalid Expires means already expired",
     200, [(b"Date", date(0)), (b"Expires", b"0"), (b"Last-Modified", date(-1000))], 0.0),
    ("RFC 9111 §4.2.1: Expires before Date gives no freshness",
     200, [(b"Date", date(0)), (b"Expires", date(-50))], 0.0),
    ("RFC 9111 §4.2.1: an invalid max-age means stale rather than heuristic",
     200, [(CC, b"max-age=soon"), (b"Date", date(0)), (b"Last-Modified", date(-1000))], 0.0),
    ("RFC 9111 §1.2.2: delta-seconds too large are clamped to 2**31",
     200, [(CC, b"max-age=99999999999999999999")], 2147483648.0),
    ("RFC 9111 §4.2.2: heuristic is 10% of the time since Last-Modified",
     200, [(b"Date", date(0)), (b"Last-Modified", date(-1000))], 100.0),
    ("RFC 9111 §4.2.2: heuristic freshness is capped at one day",
     200, [(b"Date", date(0)), (b"Last-Modified", date(-10 ** 8))], 86400.0),
    ("RFC 9111 §4.2.2: no heuristic for a status not heuristically cacheable",
     302, [(b"Date", date(0)), (b"Last-Modified", date(-1000))], 0.0),
    ("RFC 9111 §4.2.2: public allows a heuristic for any status",
     302, [(CC, b"public"), (b"Date", date(0)), (b"Last-Modified", date(-1000))], 100.0),
    ("RFC 9111 §4.2.2: a Last-Modified after Date gives no heuristic",
     200, [(b"Date", date(0)), (b"Last-Modified", date(10))], 0.0),
    ("RFC 9111 §4.2.2: no Last-Modified gives no heuristic freshness",
     200, [(b"Date", date(0))], 0.0),
]

AGE = [
    ("RFC 9111 §4.2.3: age is resident time when Date is the response time",
     [(b"Date", date(0))], 0.0, 0.0, 30.0, 30.0),
    ("RFC 9111 §4.2.3: apparent age from a Date older than the response",
     [(b"Date", date(-20))], 0.0, 0.0, 30.0, 50.0),
    ("RFC 9111 §4.2.3: clock skew with Date in the future gives no apparent age",
     [(b"Date", date(500))], 0.0, 0.0, 30.0, 30.0),
    ("RFC 9111 §4.2.3: Age from an upstream cache adds the response delay",
     [(b"Date", date(0)), (b"Age", b"100")], -2.0, 0.0, 30.0, 132.0),
    ("RFC 9111 §4.2.3: the larger of apparent age and corrected Age wins",
     [(b"Date", date(-300)), (b"Age", b"100")], -2.0, 0.0, 0.0, 300.0),
    ("RFC 9111 §5.1: an invalid Age is ignored",
     [(b"Date", date(0)), (b"Age", b"-5")], 0.0, 0.0, 10.0, 10.0),
    ("RFC 9111 §4.2.3: a missing Date counts as no apparent age",
     [], -1.0, 0.0, 10.0, 11.0),
]

# A response stored at T0 (request sent 1s earlier) with these fields.
LOOKUP = [
    ("RFC 9111 §4: no stored response is a uri-miss",
     (), None, 0, Decision.MISS, "uri-miss", False, False),
    ("RFC 9111 §5.2.1.7: only-if-cached with nothing stored answers 504",
     ((CC, b"only-if-cached"),), None, 0, Decision.UNAVAILABLE, "uri-miss", False, False),
    ("RFC 9111 §4.2: a fresh response is a hit",
     (), [(CC, b"max-age=60")], 30, Decision.HIT, "fresh", False, False),
    ("RFC 9111 §4.2: a response past its lifetime must be revalidated",
     (), [(CC, b"max-age=60")], 90, Decision.STALE, "stale", False, False),
    ("RFC 9111 §4.2.3: upstream Age counts towards staleness",
     (), [(CC, b"max-age=60"), (b"Age", b"50")], 20, Decision.STALE, "stale", False, False),
    ("RFC 9111 §5.2.1.4: request no-cache forces revalidation",
     ((CC, b"no-cache"),), [(CC, b"max-age=60")], 1, Decision.STALE, "request", False, False),
    ("RFC 9111 §5.4: Pragma no-cache without Cache-Control forces revalidation",
     ((b"Pragma", b"no-cache"),), [(CC, b"max-age=60")], 1, Decision.STALE, "request",
     False, False),
    ("RFC 9111 §5.4: Pragma is ignored when Cache-Control is present",
     ((b"Pragma", b"no-cache"), (CC, b"max-stale=0")), [(CC, b"max-age=60")], 1,
     Decision.HIT, "fresh", False, False),
    ("RFC 9111 §5.2.1.1: request max-age below the age forces revalidation",
     ((CC, b"max-age=10"),), [(CC, b"max-age=60")], 20, Decision.STALE, "request", False, False),
    ("RFC 9111 §5.2.1.1: request max-age above the age allows a hit",
     ((CC, b"max-age=30"),), [(CC, b"max-age=60")], 20, Decision.HIT, "fresh", False, False),
    ("RFC 9111 §5.2.1.1: an invalid request max-age is ignored",
     ((CC, b"max-age=x"),), [(CC, b"max-age=60")], 20, Decision.HIT, "fresh", False, False),
    ("RFC 9111 §5.2.1.3: min-fresh not met forces revalidation",
     ((CC, b"min-fresh=50"),), [(CC, b"max-age=60")], 20, Decision.STALE, "request", False, False),
    ("RFC 9111 §5.2.1.3: min-fresh met allows a hit",
     ((CC, b"min-fresh=30"),), [(CC, b"max-age=60")], 20, Decision.HIT, "fresh", False, False),
    ("RFC 9111 §5.2.1.2: max-stale without a value accepts any staleness",
     ((CC, b"max-stale"),), [(CC, b"max-age=60")], 5000, Decision.HIT, "stale", False, False),
    ("RFC 9111 §5.2.1.2: max-stale=n accepts staleness up to n",
     ((CC, b"max-stale=40"),), [(CC, b"max-age=60")], 90, Decision.HIT, "stale", False, False),
    ("RFC 9111 §5.2.1.2: max-stale=n refuses staleness beyond n",
     ((CC, b"max-stale=20"),), [(CC, b"max-age=60")], 90, Decision.STALE, "stale", False, False),
    ("RFC 9111 §5.2.2.2: must-revalidate overrides max-stale",
     ((CC, b"max-stale"),), [(CC, b"max-age=60, must-revalidate")], 90, Decision.STALE, "stale",
     False, False),
    ("RFC 9111 §5.2.2.8: proxy-revalidate binds a shared cache",
     ((CC, b"max-stale"),), [(CC, b"max-age=60, proxy-revalidate")], 90, Decision.STALE, "stale",
     False, False),
    ("RFC 9111 §5.2.2.10: s-maxage implies proxy-revalidate",
     ((CC, b"max-stale"),), [(CC, b"s-maxage=60")], 90, Decision.STALE, "stale", False, False),
    ("RFC 9111 §5.2.2.4: response no-cache must be revalidated even when fresh",
     (), [(CC, b"no-cache, max-age=60")], 5, Decision.STALE, "stale", False, False),
    ("RFC 9111 §5.2.2.4: a qualified no-cache is treated as unqualified",
     (), [(CC, b'no-cache="Set-Cookie", max-age=60')], 5, Decision.STALE, "stale", False, False),
    ("RFC 5861 §3: stale-while-revalidate within its window",
     (), [(CC, b"max-age=60, stale-while-revalidate=30")], 80, Decision.STALE, "stale",
     True, False),
    ("RFC 5861 §3: stale-while-revalidate beyond its window",
     (), [(CC, b"max-age=60, stale-while-revalidate=30")], 100, Decision.STALE, "stale",
     False, False),
    ("RFC 5861 §4: response stale-if-error within its window",
     (), [(CC, b"max-age=60, stale-if-error=300")], 100, Decision.STALE, "stale", False, True),
    ("RFC 5861 §4: request stale-if-error within its window",
     ((CC, b"stale-if-error=300"),), [(CC, b"max-age=60")], 100, Decision.STALE, "stale",
     False, True),
    ("RFC 5861 §4: stale-if-error beyond its window",
     (), [(CC, b"max-age=60, stale-if-error=10")], 100, Decision.STALE, "stale", False, False),
    ("RFC 9111 §5.2.2.2: must-revalidate disables RFC 5861 stale serving",
     (), [(CC, b"max-age=60, must-revalidate, stale-if-error=300, stale-while-revalidate=300")],
     100, Decision.STALE, "stale", False, False),
    ("RFC 9111 §5.2.1.7: only-if-cached with a fresh response is a hit",
     ((CC, b"only-if-cached"),), [(CC, b"max-age=60")], 10, Decision.HIT, "fresh", False, False),
    ("RFC 9111 §5.2.1.7: only-if-cached with a stale response answers 504",
     ((CC, b"only-if-cached"),), [(CC, b"max-age=60")], 100, Decision.UNAVAILABLE, "stale",
     False, False),
    ("RFC 9111 §5.3: a stored response with Expires 0 is stale",
     (), [(b"Expires", b"0"), (b"ETag", b'"a"')], 0, Decision.STALE, "stale", False, False),
    ("RFC 9111 §4.2.2: heuristic freshness allows a hit",
     (), [(b"Last-Modified", date(-1000))], 50, Decision.HIT, "fresh", False, False),
]

VARY = [
    ("RFC 9111 §4.1: no Vary matches any request", [], (), ((b"Accept", b"x"),), True),
    ("RFC 9111 §4.1: the same varied field value matches",
     [b"Accept-Encoding"], ((b"Accept-Encoding", b"gzip"),),
     ((b"accept-encoding", b"gzip"),), True),
    ("RFC 9111 §4.1: a different varied field value is a vary-miss",
     [b"Accept-Encoding"], ((b"Accept-Encoding", b"gzip"),), ((b"Accept-Encoding", b"br"),), False),
    ("RFC 9111 §4.1: Vary * never matches",
     [b"Accept, *"], ((b"Accept", b"x"),), ((b"Accept", b"x"),), False),
    ("RFC 9111 §4.1: several Vary fields and field-name case are combined",
     [b"ACCEPT", b" accept-Language ,User-Agent"],
     ((b"Accept", b"a"), (b"Accept-Language", b"en"), (b"User-Agent", b"u")),
     ((b"User-Agent", b"u"), (b"accept", b"a"), (b"ACCEPT-LANGUAGE", b"en")), True),
    ("RFC 9111 §4.1: one differing field of several is a vary-miss",
     [b"Accept, Accept-Language"], ((b"Accept", b"a"), (b"Accept-Language", b"en")),
     ((b"Accept", b"a"), (b"Accept-Language", b"fr")), False),
    ("RFC 9111 §4.1: whitespace around commas is normalised",
     [b"Accept-Encoding"], ((b"Accept-Encoding", b"gzip,  br"),),
     ((b"Accept-Encoding", b"gzip ,br"),), True),
    ("RFC 9111 §4.1: repeated request fields combine like one list",
     [b"Accept-Encoding"], ((b"Accept-Encoding", b"gzip, br"),),
     ((b"Accept-Encoding", b"gzip"), (b"Accept-Encoding", b"br")), True),
    ("RFC 9111 §4.1: an absent field only matches an absent field",
     [b"Cookie"], (), ((b"Cookie", b""),), False),
    ("RFC 9111 §4.1: a field absent from both requests matches",
     [b"Cookie"], ((b"Accept", b"a"),), (), True),
    ("RFC 9111 §4.1: values are compared case-sensitively",
     [b"X-Mode"], ((b"X-Mode", b"A"),), ((b"X-Mode", b"a"),), False),
]

CONDITIONAL = [
    ("RFC 9111 §4.3.1: ETag becomes If-None-Match",
     [(b"ETag", b'W/"v1"')], [(b"If-None-Match", b'W/"v1"')]),
    ("RFC 9111 §4.3.1: Last-Modified becomes If-Modified-Since",
     [(b"Last-Modified", date(-5))], [(b"If-Modified-Since", date(-5))]),
    ("RFC 9111 §4.3.1: both validators are sent",
     [(b"Last-Modified", date(-5)), (b"ETag", b'"v1"')],
     [(b"If-None-Match", b'"v1"'), (b"If-Modified-Since", date(-5))]),
    ("RFC 9111 §4.3.1: no validator gives no conditional fields", [(b"Date", date(0))], []),
]

UPDATE = [
    ("RFC 9111 §3.2: a 304 field replaces every stored field of its name",
     [(b"Date", date(0)), (b"Cache-Control", b"max-age=1"), (b"Cache-Control", b"public"),
      (b"Content-Type", b"text/plain")],
     [(b"Date", date(9)), (b"cache-control", b"max-age=60")],
     [(b"Content-Type", b"text/plain"), (b"Date", date(9)), (b"cache-control", b"max-age=60")]),
    ("RFC 9111 §3.2: a 304 never changes Content-Length",
     [(b"Content-Length", b"10"), (b"ETag", b'"a"')],
     [(b"Content-Length", b"0"), (b"ETag", b'"a"')],
     [(b"Content-Length", b"10"), (b"ETag", b'"a"')]),
    ("RFC 9111 §3.1: hop-by-hop fields of a 304 are not stored",
     [(b"ETag", b'"a"')],
     [(b"Connection", b"close, X-Hop"), (b"X-Hop", b"1"), (b"Keep-Alive", b"5"), (b"X-New", b"n")],
     [(b"ETag", b'"a"'), (b"X-New", b"n")]),
    ("RFC 9111 §4.3.4: stored fields absent from the 304 are kept",
     [(b"ETag", b'"a"'), (b"X-Kept", b"k")], [], [(b"ETag", b'"a"'), (b"X-Kept", b"k")]),
]

TARGET = b"http://example.com/a/b"

INVALIDATE = [
    ("RFC 9111 §4.4: a successful POST invalidates the target",
     b"POST", 201, [], True, []),
    ("RFC 9111 §4.4: a redirected DELETE invalidates the target",
     b"DELETE", 303, [], True, []),
    ("RFC 9111 §4.4: an unknown method is treated as unsafe",
     b"PURGEX", 200, [], True, []),
    ("RFC 9111 §4.4: an error response does not invalidate",
     b"POST", 500, [(b"Location", b"/c")], False, []),
    ("RFC 9111 §4.4: a safe method does not invalidate",
     b"GET", 200, [(b"Content-Location", b"/c")], False, []),
    ("RFC 9111 §4.4: Location and Content-Location of the same origin are invalidated",
     b"PUT", 200, [(b"Location", b"c"), (b"Content-Location", b"http://EXAMPLE.com:80/d")],
     True, [b"http://example.com/a/c", b"http://EXAMPLE.com:80/d"]),
    ("RFC 9111 §4.4: a Location of another origin is not invalidated",
     b"POST", 201,
     [(b"Location", b"http://other.example/x"), (b"Content-Location", b"https://example.com/a/b")],
     True, []),
    ("RFC 9111 §4.4: a Content-Location equal to the target is not listed twice",
     b"POST", 200, [(b"Content-Location", b"/a/b")], True, []),
]

CACHE_STATUS = [
    ("RFC 9211 §2.1: a hit reports hit and ttl",
     "edge", Decision(Decision.HIT, "fresh", ttl=376.4), False, None, b"edge; hit; ttl=376"),
    ("RFC 9211 §2.2: a uri-miss that was stored",
     "edge", Decision(Decision.MISS, "uri-miss"), True, None, b"edge; fwd=uri-miss; stored"),
    ("RFC 9211 §2.2: a vary-miss", "edge", Decision(Decision.MISS, "vary-miss"), False, None,
     b"edge; fwd=vary-miss"),
    ("RFC 9211 §2.2: a stale response forwarded for revalidation with negative ttl",
     "edge", Decision(Decision.STALE, "stale", ttl=-10.0), True, None,
     b"edge; fwd=stale; stored; ttl=-10"),
    ("RFC 9211 §2.2: a request directive forced forwarding",
     "edge", Decision(Decision.STALE, "request", ttl=5.0), False, None,
     b"edge; fwd=request; ttl=5"),
    ("RFC 9211 §2.8: a detail string explains why nothing was stored",
     "my cache", Decision(Decision.MISS, "uri-miss"), False, "no-store in request",
     b'"my cache"; fwd=uri-miss; detail="no-store in request"'),
    ("RFC 9211 §2: only-if-cached without a stored response is not forwarded",
     "edge", Decision(Decision.UNAVAILABLE, "uri-miss"), False, "only-if-cached",
     b"edge; detail=only-if-cached"),
]


@fromTable(PARSE, "checkParse")
@fromTable(DATES, "checkDate")
@fromTable(STORABLE, "checkStorable")
@fromTable(LIFETIME, "checkLifetime")
@fromTable(AGE, "checkAge")
class FreshnessTests(SynchronousTestCase):
    def checkParse(self, values, expected):
        fields = Headers([(b"Cache-Control", value) for value in values])
        self.assertEqual(parseCacheControl(fields), expected)

    def checkDate(self, value, expected):
        self.assertEqual(httpDate(value), expected)

    def checkStorable(self, method, requestFields, status, responseFields, expected, reason):
        result = storable(
            request(*requestFields, method=method), response(*responseFields, status=status), T0
        )
        self.assertEqual(result, (expected, reason))

    def checkLifetime(self, status, fields, expected):
        self.assertEqual(freshnessLifetime(response(*fields, status=status), T0 + 50), expected)

    def checkAge(self, fields, requestTime, responseTime, now, expected):
        age = currentAge(headers(*fields), T0 + requestTime, T0 + responseTime, T0 + now)
        self.assertEqual(age, expected)


@fromTable(LOOKUP, "checkLookup")
@fromTable(VARY, "checkVary")
class LookupTests(SynchronousTestCase):
    def checkLookup(
        self, requestFields, responseFields, elapsed, kind, reason, whileRevalidate, onError
    ):
        stored = None
        if responseFields is not None:
            stored = StoredResponse(response((b"Date", date(0)), *responseFields), T0 - 1, T0)
        decision = lookup(request(*requestFields), stored, T0 + elapsed)
        self.assertEqual(
            (decision.kind, decision.reason, decision.staleWhileRevalidate, decision.staleIfError),
            (kind, reason, whileRevalidate, onError),
        )
        self.assertEqual(decision.status, 504 if kind == Decision.UNAVAILABLE else None)

    def checkVary(self, varyValues, storingFields, laterFields, matches):
        key = secondaryKey(varyValues, request(*storingFields))
        self.assertEqual(varyMatches(key, request(*laterFields)), matches)
        stored = StoredResponse(response((CC, b"max-age=60")), T0, T0, key)
        decision = lookup(request(*laterFields), stored, T0)
        self.assertEqual(decision.reason, "fresh" if matches else "vary-miss")

    def test_hitCarriesAgeAndTtl(self):
        """
        RFC 9111 §5.1: a hit carries the current age for the Age field and the
        remaining freshness for Cache-Status.
        """
        stored = StoredResponse(response((b"Date", date(0)), (CC, b"max-age=60")), T0 - 1, T0)
        decision = lookup(request(), stored, T0 + 10)
        self.assertEqual((decision.age, decision.ttl), (11.0, 49.0))


@fromTable(CONDITIONAL, "checkConditional")
@fromTable(UPDATE, "checkUpdate")
@fromTable(INVALIDATE, "checkInvalidate")
@fromTable(CACHE_STATUS, "checkCacheStatus")
class RevalidationTests(SynchronousTestCase):
    def checkConditional(self, fields, expected):
        self.assertEqual(list(conditionalHeaders(response(*fields))), expected)

    def checkUpdate(self, storedFields, notModifiedFields, expected):
        stored = response(*storedFields)
        updated = updateHeaders(stored, response(*notModifiedFields, status=304))
        self.assertEqual(list(updated.headers), expected)
        self.assertEqual(updated.status, 200)
        self.assertEqual(list(stored.headers), list(storedFields))

    def checkInvalidate(self, method, status, fields, expected, locations):
        req = RequestHead(method, TARGET)
        resp = response(*fields, status=status)
        self.assertEqual(invalidates(req, resp), expected)
        self.assertEqual(invalidatedLocations(req, resp, TARGET), locations)

    def checkCacheStatus(self, name, decision, stored, detail, expected):
        self.assertEqual(cacheStatus(name, decision, stored, detail), expected)
