"""
The decisions of an RFC 9111 I{shared} cache, as pure functions.

Nothing here reads a clock or a store: times are float seconds passed in by
the caller, so that every rule can be checked by a table of cases and the
cache itself stays a thin layer of storage and I/O around this module.
"""

from __future__ import annotations

import calendar
import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Dict, List, Optional, Tuple
from urllib.parse import urljoin, urlsplit

from dualproxy.http.message import Headers, RequestHead, ResponseHead

# RFC 9111 section 1.2.2: larger delta-seconds are clamped to 2**31.
MAX_DELTA = 2147483648

# RFC 9110 section 15.1: reusable with heuristic freshness.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})

# Final statuses whose semantics this cache implements for whole responses.
# 206 and 304 are left out: the cache neither combines partial content nor
# stores a 304 (it only uses one to update a stored response, section 4.3.4).
UNDERSTOOD_STATUSES = frozenset(
    {200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 451, 501}
)

# RFC 9110 section 9.2.1.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})

# Heuristic freshness: a fraction of the time since Last-Modified, capped.
HEURISTIC_FRACTION = 0.1
HEURISTIC_LIMIT = 86400.0

# Fields a 304 must not change in a stored response (RFC 9111 section 3.2):
# Content-Length, and the hop-by-hop fields never stored (section 3.1).
_NOT_UPDATED = frozenset(
    {b"content-length", b"connection", b"keep-alive", b"proxy-connection", b"te",
     b"transfer-encoding", b"upgrade"}
)

CacheControl = Dict[str, Optional[str]]


def _directives(value: str) -> List[Tuple[str, Optional[str]]]:
    """
    Split one Cache-Control value on the commas outside quoted strings.
    """
    out = []
    name: List[str] = []
    arg: Optional[List[str]] = None
    quoted = escaped = False
    for char in value + ",":
        if quoted:
            if escaped:
                escaped = False
                arg.append(char)
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            else:
                arg.append(char)
        elif char == ",":
            key = "".join(name).strip().lower()
            if key:
                out.append((key, None if arg is None else "".join(arg).strip()))
            name, arg = [], None
        elif arg is not None:
            if char == '"' and not "".join(arg).strip():
                arg = []
                quoted = True
            else:
                arg.append(char)
        elif char == "=":
            arg = []
        else:
            name.append(char)
    return out


def parseCacheControl(headers: Headers) -> CacheControl:
    """
    The directives of every Cache-Control field, names lower-cased and quoted
    values unquoted.  The first occurrence of a repeated directive wins, as
    RFC 9111 section 4.2.1 allows.
    """
    directives: CacheControl = {}
    for value in headers.getAll(b"cache-control"):
        for name, arg in _directives(value.decode("latin-1")):
            directives.setdefault(name, arg)
    return directives


def _deltaSeconds(value: Optional[str]) -> Optional[int]:
    """
    A delta-seconds value (RFC 9111 section 1.2.2), or None if malformed.
    """
    if value is None or not value.isdigit() or not value.isascii():
        return None
    return min(int(value), MAX_DELTA)


_MONTHS = {name: number for number, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(\d\d):(\d\d):(\d\d)"
_IMF = re.compile(_DAY + r", (\d\d) " + _MONTH + r" (\d{4}) " + _TIME + r" GMT")
_RFC850 = re.compile(_LONG_DAY + r", (\d\d)-" + _MONTH + r"-(\d\d) " + _TIME + r" GMT")
_ASCTIME = re.compile(_DAY + r" " + _MONTH + r" ([ \d]\d) " + _TIME + r" (\d{4})")


def httpDate(value: bytes) -> Optional[float]:
    """
    The POSIX time of an HTTP-date in any of the three forms of RFC 9110
    section 5.6.7, or None if it is not one (senders use C{0} to mean "already
    expired").  Two-digit RFC 850 years below 70 are in this century, which
    stays within the "not more than 50 years ahead" rule until 2020 + 50.
    """
    text = value.strip().decode("latin-1")
    match = _IMF.fullmatch(text)
    if match:
        day, month, year, hour, minute, second = match.groups()
    else:
        match = _RFC850.fullmatch(text)
        if match:
            day, month, year, hour, minute, second = match.groups()
            year = str(int(year) + (2000 if int(year) < 70 else 1900))
        else:
            match = _ASCTIME.fullmatch(text)
            if not match:
                return None
            month, day, hour, minute, second, year = match.groups()
    fields = int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute), int(second)
    if not 1 <= fields[2] <= calendar.monthrange(fields[0], fields[1])[1]:
        return None
    if fields[3] > 23 or fields[4] > 59 or fields[5] > 60:
        return None
    return float(calendar.timegm(fields + (0, 0, 0)))


def _dateField(headers: Headers, name: bytes) -> Optional[float]:
    value = headers.get(name)
    return None if value is None else httpDate(value)


def _hasExplicitFreshness(directives: CacheControl, headers: Headers) -> bool:
    return "s-maxage" in directives or "max-age" in directives or b"expires" in headers


def storable(request: RequestHead, response: ResponseHead, now: float) -> Tuple[bool, str]:
    """
    Whether a shared cache may store C{response} (RFC 9111 section 3), and
    if not a short reason for the Cache-Status detail.

    A POST response is stored only with explicit freshness (RFC 9110 section
    9.3.3); the caller must then file it under its Content-Location for
    later GETs.  C{private} responses are never stored, including the
    field-qualified form, whose fields a shared cache would have to strip.
    A response that is already stale on arrival and has no validator is not
    stored either, unless RFC 5861 lets it be served stale: no request
    could ever be answered from it.
    """
    directives = parseCacheControl(response.headers)
    requestDirectives = parseCacheControl(request.headers)
    explicit = _hasExplicitFreshness(directives, response.headers)
    if request.method == b"POST":
        if not explicit:
            return False, "POST without explicit freshness"
    elif request.method not in (b"GET", b"HEAD"):
        return False, "method not cacheable"
    if response.status < 200:
        return False, "non-final status"
    understood = response.status in UNDERSTOOD_STATUSES
    if "must-understand" in directives:
        if not understood:
            return False, "must-understand: status not understood"
    elif response.status in (206, 304):
        return False, "status not understood"
    elif "no-store" in directives:
        return False, "no-store"
    if "no-store" in requestDirectives:
        return False, "no-store in request"
    if "private" in directives:
        return False, "private"
    if b"authorization" in request.headers and not (
        "public" in directives or "s-maxage" in directives or "must-revalidate" in directives
    ):
        return False, "authorized request"
    if not (explicit or "public" in directives or response.status in HEURISTIC_STATUSES):
        return False, "no freshness information"
    validator = b"etag" in response.headers or b"last-modified" in response.headers
    mayServeStale = "stale-while-revalidate" in directives or "stale-if-error" in directives
    if not (validator or mayServeStale) and freshnessLifetime(response, now) <= currentAge(
        response.headers, now, now, now
    ):
        return False, "stale without validator"
    return True, "storable"


def freshnessLifetime(
    response: ResponseHead,
    responseTime: float,
    heuristicFraction: float = HEURISTIC_FRACTION,
    heuristicLimit: float = HEURISTIC_LIMIT,
) -> float:
    """
    The freshness lifetime of a response in a shared cache (RFC 9111 section
    4.2.1).  Malformed explicit values make the response stale rather than
    letting a heuristic apply.  C{responseTime} stands in for a missing or
    invalid Date, as RFC 9110 section 6.6.1 asks a cache to do.
    """
    directives = parseCacheControl(response.headers)
    for name in ("s-maxage", "max-age"):
        if name in directives:
            return float(_deltaSeconds(directives[name]) or 0)
    date = _dateField(response.headers, b"date")
    if date is None:
        date = responseTime
    if b"expires" in response.headers:
        expires = _dateField(response.headers, b"expires")
        return 0.0 if expires is None else max(0.0, expires - date)
    if response.status in HEURISTIC_STATUSES or "public" in directives:
        modified = _dateField(response.headers, b"last-modified")
        if modified is not None and modified <= date:
            return min(heuristicLimit, (date - modified) * heuristicFraction)
    return 0.0


def currentAge(
    responseHeaders: Headers, requestTime: float, responseTime: float, now: float
) -> float:
    """
    The current age of a stored response, exactly as RFC 9111 section 4.2.3
    computes it: the larger of the age implied by Date and the upstream Age
    plus the round trip, plus the time spent in this cache.  A Date in the
    future (clock skew) counts as no apparent age.
    """
    date = _dateField(responseHeaders, b"date")
    apparentAge = 0.0 if date is None else max(0.0, responseTime - date)
    ageValue = _deltaSeconds((responseHeaders.get(b"age") or b"").decode("latin-1").strip()) or 0
    responseDelay = responseTime - requestTime
    correctedInitialAge = max(apparentAge, ageValue + responseDelay)
    residentTime = now - responseTime
    return correctedInitialAge + residentTime


def secondaryKey(varyHeaderValues: List[bytes], request: RequestHead) -> Optional[Tuple]:
    """
    The request fields a stored response varies on (RFC 9111 section 4.1),
    as sorted (lower-case name, normalised value) pairs; None for C{Vary: *},
    which no later request matches.  Repeated fields are combined and
    whitespace around commas dropped; an absent field is None so that it
    only matches another absence.
    """
    names = set()
    for value in varyHeaderValues:
        for name in value.split(b","):
            name = name.strip().lower()
            if name == b"*":
                return None
            if name:
                names.add(name)
    key = []
    for name in sorted(names):
        values = request.headers.getAll(name)
        if not values:
            key.append((name, None))
            continue
        parts = [part.strip() for value in values for part in value.split(b",")]
        key.append((name, b",".join(parts)))
    return tuple(key)


def varyMatches(storedKey: Optional[Tuple], request: RequestHead) -> bool:
    """
    Whether C{request} selects a response stored with C{storedKey}.
    """
    if not storedKey:
        return storedKey is not None
    return secondaryKey([name for name, _ in storedKey], request) == storedKey


@dataclass(frozen=True)
class StoredResponse:
    """
    A stored response head with what the cache learnt when storing it: the
    times for section 4.2.3 and the secondary key from the storing request.

    What depends only on the stored head is worked out once, on first use:
    a cache answers many requests from one stored response.
    """

    response: ResponseHead
    requestTime: float
    responseTime: float
    varyKey: Optional[Tuple] = ()

    @cached_property
    def directives(self) -> CacheControl:
        return parseCacheControl(self.response.headers)

    @cached_property
    def lifetime(self) -> float:
        return freshnessLifetime(self.response, self.responseTime)

    @cached_property
    def initialAge(self) -> float:
        """
        The corrected initial age: L{currentAge} at the response time.
        """
        return currentAge(self.response.headers, self.requestTime, self.responseTime, self.responseTime)

    def age(self, now: float) -> float:
        return self.initialAge + now - self.responseTime

    @cached_property
    def servedHeaders(self) -> Headers:
        """
        The stored fields as every answer from the store starts: without
        the stored Age and length, which each answer gives anew.
        """
        headers = self.response.headers.copy()
        headers.remove(b"age", b"content-length")
        return headers


class Decision:
    """
    What to do with a request given the stored response, if any.

    C{HIT}: answer from the store (fresh, or stale that the client accepts).
    C{STALE}: revalidate the stored response with a conditional request;
    C{staleWhileRevalidate} and C{staleIfError} (RFC 5861) say whether it may
    be served meanwhile or if revalidation fails.  C{MISS}: forward.
    C{UNAVAILABLE}: answer 504, the client asked for C{only-if-cached}.

    C{reason} is the RFC 9211 C{fwd} value for a non-hit: C{uri-miss},
    C{vary-miss}, C{stale} or C{request}.
    """

    HIT = "hit"
    STALE = "stale"
    MISS = "miss"
    UNAVAILABLE = "unavailable"

    def __init__(
        self,
        kind: str,
        reason: str,
        age: float = 0.0,
        ttl: Optional[float] = None,
        staleWhileRevalidate: bool = False,
        staleIfError: bool = False,
    ):
        self.kind = kind
        self.reason = reason
        self.age = age
        self.ttl = ttl
        self.staleWhileRevalidate = staleWhileRevalidate
        self.staleIfError = staleIfError

    @property
    def status(self) -> Optional[int]:
        """
        The status the cache answers with itself (RFC 9111 section 5.2.1.7).
        """
        return 504 if self.kind == self.UNAVAILABLE else None

    def __repr__(self) -> str:
        return (
            f"<Decision {self.kind} {self.reason} age={self.age} ttl={self.ttl}"
            f" swr={self.staleWhileRevalidate} sie={self.staleIfError}>"
        )


def _within(directives: CacheControl, name: str, staleness: float) -> bool:
    limit = _deltaSeconds(directives.get(name))
    return limit is not None and staleness <= limit


def lookup(request: RequestHead, stored: Optional[StoredResponse], now: float) -> Decision:
    """
    Whether C{stored} can answer C{request} at C{now} (RFC 9111 section 4).

    Malformed request directive values are ignored.  A field-qualified
    response C{no-cache} is treated as unqualified, which section 5.2.2.4
    permits.  C{s-maxage} forbids serving stale like C{proxy-revalidate}
    (section 5.2.2.10).
    """
    directives = parseCacheControl(request.headers)
    onlyIfCached = "only-if-cached" in directives

    def forward(kind: str, reason: str, **extra) -> Decision:
        if onlyIfCached:
            return Decision(Decision.UNAVAILABLE, reason, **extra)
        return Decision(kind, reason, **extra)

    if stored is None:
        return forward(Decision.MISS, "uri-miss")
    if not varyMatches(stored.varyKey, request):
        return forward(Decision.MISS, "vary-miss")
    responseDirectives = stored.directives
    age = stored.age(now)
    ttl = stored.lifetime - age
    timing = {"age": age, "ttl": ttl}
    noCache = "no-cache" in directives or (
        b"cache-control" not in request.headers and b"no-cache" in request.headers.tokens(b"pragma")
    )
    maxAge = _deltaSeconds(directives.get("max-age"))
    minFresh = _deltaSeconds(directives.get("min-fresh")) or 0
    if noCache or (maxAge is not None and age > maxAge):
        return forward(Decision.STALE, "request", **timing)
    if "no-cache" in responseDirectives:
        return forward(Decision.STALE, "stale", **timing)
    if ttl > 0:
        if ttl >= minFresh:
            return Decision(Decision.HIT, "fresh", **timing)
        return forward(Decision.STALE, "request", **timing)
    staleness = -ttl
    mayServeStale = not (
        "must-revalidate" in responseDirectives
        or "proxy-revalidate" in responseDirectives
        or "s-maxage" in responseDirectives
    )
    if mayServeStale and "max-stale" in directives:
        if directives["max-stale"] is None or _within(directives, "max-stale", staleness):
            return Decision(Decision.HIT, "stale", **timing)
    return forward(
        Decision.STALE,
        "stale",
        staleWhileRevalidate=mayServeStale
        and _within(responseDirectives, "stale-while-revalidate", staleness),
        staleIfError=mayServeStale
        and (
            _within(responseDirectives, "stale-if-error", staleness)
            or _within(directives, "stale-if-error", staleness)
        ),
        **timing,
    )


def conditionalHeaders(stored: ResponseHead) -> Headers:
    """
    The validators to send when revalidating C{stored} (RFC 9111 section
    4.3.1): both, since an origin ignoring one may honour the other.
    """
    headers = Headers()
    etags = stored.headers.getAll(b"etag")
    if etags:
        headers.add(b"If-None-Match", b", ".join(etags))
    modified = stored.headers.get(b"last-modified")
    if modified is not None:
        headers.add(b"If-Modified-Since", modified)
    return headers


def updateHeaders(stored: ResponseHead, notModified: ResponseHead) -> ResponseHead:
    """
    C{stored} freshened by a 304 (RFC 9111 sections 3.2 and 4.3.4): each
    field the 304 carries replaces the stored ones of that name, except
    Content-Length and fields that are never stored; other fields stay.
    """
    excluded = _NOT_UPDATED.union(notModified.headers.tokens(b"connection"))
    replacing = [(name, value) for name, value in notModified.headers
                 if name.lower() not in excluded]
    headers = stored.headers.copy()
    headers.remove(*{name.lower() for name, _ in replacing})
    for name, value in replacing:
        headers.add(name, value)
    return ResponseHead(
        stored.status, stored.reason, headers, stored.version, stored.framing, stored.length
    )


def invalidates(request: RequestHead, response: ResponseHead) -> bool:
    """
    Whether the response to C{request} invalidates what is stored for its
    target URI (RFC 9111 section 4.4): a non-error answer to an unsafe (or
    unknown) method.
    """
    return request.method not in SAFE_METHODS and 200 <= response.status < 400


def _origin(uri: str) -> Tuple[str, str, Optional[int]]:
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or ""), port


def invalidatedLocations(
    request: RequestHead, response: ResponseHead, requestURI: bytes
) -> List[bytes]:
    """
    The other absolute URIs that C{response} invalidates: its Location and
    Content-Location resolved against C{requestURI}, only where they share
    its origin, since another origin's content is not this response's to
    invalidate (RFC 9111 section 4.4).
    """
    if not invalidates(request, response):
        return []
    base = requestURI.decode("latin-1")
    origin = _origin(base)
    found: List[bytes] = []
    for name in (b"location", b"content-location"):
        value = response.headers.get(name)
        if value is None:
            continue
        uri = urljoin(base, value.strip().decode("latin-1"))
        encoded = uri.encode("latin-1")
        if _origin(uri) == origin and uri != base and encoded not in found:
            found.append(encoded)
    return found


_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")


def _item(text: str) -> str:
    """
    A structured-field token or string (RFC 8941) for C{text}.
    """
    if _TOKEN.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cacheStatus(
    cacheName: str, decision: Decision, stored: bool = False, detail: Optional[str] = None
) -> bytes:
    """
    This cache's member of a Cache-Status field (RFC 9211): C{hit}, or why
    the request went forward; whether the response was then C{stored}; the
    remaining freshness as C{ttl}; and an optional C{detail} such as the
    reason from L{storable}.
    """
    params = [_item(cacheName)]
    if decision.kind == Decision.HIT:
        params.append("hit")
    elif decision.kind != Decision.UNAVAILABLE:
        params.append("fwd=" + decision.reason)
    if stored:
        params.append("stored")
    if decision.ttl is not None:
        params.append("ttl=%d" % math.floor(decision.ttl))
    if detail is not None:
        params.append("detail=" + _item(detail))
    return "; ".join(params).encode("latin-1")
