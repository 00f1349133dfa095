"""
The HTTP cache both modes share: it stands between a mode's handler and the
relay, answers from its store what RFC 9111 lets it answer, and otherwise
lets the request go upstream while it watches, stores and revalidates.

The rules live in L{policy} and L{conditional}; this module only keeps
track of requests in flight (collapsing, revalidation, invalidation).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urljoin

from twisted.internet.defer import Deferred
from twisted.web.http import datetimeToString

from ..core.exchange import proceed
from ..http.message import LENGTH, NO_BODY, Headers, Refusal, RequestHead, ResponseHead
from . import conditional, records
from .policy import (
    MAX_DELTA,
    Decision,
    StoredResponse,
    cacheStatus,
    conditionalHeaders,
    currentAge,
    freshnessLifetime,
    invalidatedLocations,
    invalidates,
    lookup,
    secondaryKey,
    storable,
    updateHeaders,
)
from .records import VaryIndex
from .stream import Background, EntrySender, Passthrough

# Statuses a stale response may stand in for (RFC 5861 section 4).
ERROR_STATUSES = frozenset({500, 502, 503, 504})

# Request fields that make the client's request its own: they are answered
# from the stored response, not forwarded when revalidating it.
_CLIENT_CONDITIONS = frozenset({b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since",
                                b"if-range", b"range"})

_DEFAULT_PORTS = {b"http": b":80", b"https": b":443"}
# What _find answers when nothing is stored.
_NOTHING = (None, None, None)

# Bodies up to this size are written at once, without waiting for the
# client's transport to ask for more.
DIRECT_LIMIT = 131072

# How many decoded stored heads are kept beside the store's bytes.
RECORDS_DECODED = 4096

# A forward function starts a relay: (exchange, head, response sink).
Forward = Callable[[object, RequestHead, object], None]


def primaryKey(uri: bytes) -> bytes:
    """
    The cache key of an absolute URI (RFC 9111 section 4): scheme and host
    are case-insensitive and a default port is the same as none.
    """
    scheme, sep, rest = uri.partition(b"://")
    authority, slash, path = rest.partition(b"/")
    scheme = scheme.lower()
    authority = authority.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and authority.endswith(default):
        authority = authority[: -len(default)]
    return scheme + sep + authority + b"/" + path


class CacheStats:
    """
    Counters for metrics, since start.  Each client GET/HEAD lookup counts
    once in C{hits} (answered from the store), C{misses} (nothing usable
    stored) or C{revalidations} (a conditional request went upstream; of
    those, C{revalidated} got a 304).  C{stale} counts stale responses
    served (stale-while-revalidate, stale-if-error).
    """

    def __init__(self):
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.revalidations = 0
        self.revalidated = 0
        self.stored = 0
        self.collapsed = 0
        self.purged = 0
        self.invalidated = 0


class _Waiter:
    def __init__(self, exchange, head: RequestHead, uri: bytes, forward: Forward):
        self.exchange = exchange
        self.head = head
        self.uri = uri
        self.forward = forward
        self.timer = None


class HTTPCache:
    """
    A shared cache over one L{dualproxy.interfaces.ICacheStore}.

    @ivar name: this cache's name in Cache-Status fields.
    @ivar lockTimeout: how long a request waits for a concurrent identical
        one to fill the cache before going upstream itself.
    @ivar purgeFrom: a L{dualproxy.policy.acl.ClientACL} of clients whose
        C{PURGE} requests are served; None lets PURGE through as any other
        method.
    """

    def __init__(self, store, clock, name: str = "dualproxy", lockTimeout: float = 5.0, purgeFrom=None):
        self.store = store
        self.clock = clock
        self.name = name
        self.lockTimeout = lockTimeout
        self.purgeFrom = purgeFrom
        self.stats = CacheStats()
        self._filling: Dict[bytes, List[_Waiter]] = {}
        self._records: "OrderedDict[Tuple[bytes, int], object]" = OrderedDict()
        # The Cache-Status of a fresh hit, as cacheStatus() words it.
        self._hitStatus = cacheStatus(name, Decision(Decision.HIT, "fresh", ttl=0.0)).replace(b"%", b"%%")[:-1] + b"%d"

    # The programmatic interface

    def purge(self, uri: bytes):
        """
        Forget every stored variant of C{uri} (absolute); whether there was
        any, or a Deferred of that from a store that must ask a server.
        """
        key = primaryKey(uri)
        entry = self.store.get(key)
        if isinstance(entry, Deferred):
            return entry.addCallback(self._purged, key)
        return self._purged(entry, key)

    def _purged(self, entry, key: bytes):
        done = self.store.remove(key)
        if entry is not None:
            self.stats.purged += 1
        if isinstance(done, Deferred):
            return done.addCallbacks(lambda _: entry is not None, self._unconfirmed)
        return entry is not None

    def _unconfirmed(self, failure):
        raise Refusal(503, f"the cache store did not confirm the purge: {failure.getErrorMessage()}",
                      [(b"Retry-After", b"1")])

    @property
    def hitRatio(self) -> float:
        """
        The share of GET/HEAD lookups answered without asking upstream
        first (fresh, or stale while revalidating in the background).
        """
        stats = self.stats
        lookups = stats.hits + stats.misses + stats.revalidations
        return stats.hits / lookups if lookups else 0.0

    @property
    def bytesStored(self) -> int:
        return self.store.bytesStored

    @property
    def evictions(self) -> int:
        return self.store.evictions

    # Requests

    def serveFresh(self, exchange, uri: bytes) -> bool:
        """
        Answer the client's GET or HEAD for the absolute C{uri} at once if a
        stored response is fresh enough for it.  Modes ask this before
        preparing the request for upstream, which a hit never needs; on
        False, they go on to L{handle}.
        """
        request = exchange.request
        if request.method not in (b"GET", b"HEAD"):
            return False
        stored, entry, _ = self._find(primaryKey(uri), request, self.store.peek)
        if stored is None:
            return False
        decision = lookup(request, stored, self.clock.seconds())
        if decision.kind != Decision.HIT:
            return False
        self.stats.hits += 1
        exchange.context.cacheResult = "hit"
        self.answer(exchange, request, stored, entry, decision.age, self._hitStatus % math.floor(decision.ttl))
        return True

    def handle(self, exchange, head: RequestHead, uri: bytes, forward: Forward, waited: bool = False) -> None:
        """
        Answer the client's request for the absolute C{uri} from the store,
        or let C{forward} relay C{head} (the request as it goes upstream)
        with a sink of ours in the way.  The cache's decisions are made on
        the client's request, as presented to it (RFC 9111 section 4).
        """
        method = head.method
        if method == b"PURGE" and self.purgeFrom is not None:
            self._purgeRequest(exchange, uri)
            return
        if method not in (b"GET", b"HEAD"):
            forward(exchange, head, _Invalidate(self, exchange, exchange.request, primaryKey(uri)))
            return
        key = primaryKey(uri)
        proceed(exchange, self._find(key, exchange.request, self.store.get), self._decide, exchange, head, uri, key,
                forward, waited)

    def _decide(self, found: Tuple[Optional[StoredResponse], object, Optional[VaryIndex]], exchange,
                head: RequestHead, uri: bytes, key: bytes, forward: Forward, waited: bool) -> None:
        """
        Answer from what the store had, or go upstream.
        """
        stored, entry, index = found
        method = head.method
        now = self.clock.seconds()
        presented = exchange.request
        decision = lookup(presented, stored, now)
        if stored is None and index is not None:
            decision.reason = "vary-miss"
        exchange.context.cacheResult = decision.kind
        if decision.kind == Decision.HIT:
            self.stats.hits += 1
            self.answer(exchange, presented, stored, entry, decision.age, cacheStatus(self.name, decision))
            return
        if decision.kind == Decision.UNAVAILABLE:
            exchange.refuse(504, "only-if-cached: the response is not in the cache",
                            [(b"Cache-Status", cacheStatus(self.name, decision))])
            return
        if method == b"HEAD" or (decision.kind == Decision.MISS and b"range" in presented.headers):
            # Not worth storing: a HEAD has no body, a range is a part.
            self.stats.misses += 1
            forward(exchange, head, _Annotate(exchange, cacheStatus(self.name, decision)))
            return
        stale = stored if decision.kind == Decision.STALE else None
        lockKey = _lockKey(key, index, presented)
        if stale is not None and decision.staleWhileRevalidate:
            self.stats.hits += 1
            self.stats.stale += 1
            self.answer(exchange, presented, stored, entry, decision.age,
                        cacheStatus(self.name, decision, detail="stale-while-revalidate"))
            if lockKey not in self._filling:
                self._filling[lockKey] = []
                background = Background(presented, exchange.channel.handler, self.clock)
                self._fetch(background, head, key, forward, decision, stale, entry, lockKey, True, index)
            return
        if not waited and lockKey in self._filling:
            self._wait(lockKey, _Waiter(exchange, head, uri, forward))
            return
        if lockKey in self._filling:
            lockKey = None
        else:
            self._filling[lockKey] = []
        self._fetch(exchange, head, key, forward, decision, stale, entry, lockKey, False, index)

    def _fetch(self, exchange, head: RequestHead, key: bytes, forward: Forward, decision: Decision,
               stale: Optional[StoredResponse], entry, lockKey: Optional[bytes], background: bool,
               index: Optional[VaryIndex]) -> None:
        # The client's own conditions are answered here, from the response
        # the cache gets for itself (RFC 9111 section 4.3.2).
        headers = head.headers.copy()
        headers.remove(*_CLIENT_CONDITIONS)
        if stale is not None:
            if not background:
                self.stats.revalidations += 1
            for name, value in conditionalHeaders(stale.response):
                headers.add(name, value)
        else:
            self.stats.misses += 1
        outgoing = RequestHead(head.method, head.target, head.version, headers, head.framing, head.length)
        fill = _Fill(self, exchange, exchange.request, outgoing, key, decision, stale, entry, lockKey, background,
                     index)
        forward(exchange, outgoing, fill)

    def _find(self, key: bytes, head: RequestHead, get: Callable[[bytes], object]):
        """
        The stored response for C{head}'s variant, its entry, and the URI's
        vary index if it has one: as a tuple, or a Deferred of it when
        C{get} (the store's C{get} or C{peek}) must wait.
        """
        entry = get(key)
        if isinstance(entry, Deferred):
            return entry.addCallback(self._indexed, key, head, get)
        return self._indexed(entry, key, head, get)

    def _indexed(self, entry, key: bytes, head: RequestHead, get: Callable[[bytes], object]):
        if entry is None:
            return _NOTHING
        record = self._load(entry)
        if isinstance(record, VaryIndex):
            variant = get(record.variantKey(key, secondaryKey(list(record.names), head) or ()))
            if isinstance(variant, Deferred):
                return variant.addCallback(self._variant, record)
            return self._variant(variant, record)
        if record is None:
            return _NOTHING
        return record, entry, None

    def _variant(self, entry, index: VaryIndex) -> Tuple[Optional[StoredResponse], object, Optional[VaryIndex]]:
        stored = None if entry is None else self._load(entry)
        if not isinstance(stored, StoredResponse):
            return None, None, index
        return stored, entry, index

    def _load(self, entry):
        """
        The record in C{entry}'s head, decoded once while it stays in use.
        """
        memo = (entry.head, entry.size)
        record = self._records.get(memo)
        if record is None:
            record = records.load(entry.head, entry.size)
            self._records[memo] = record
            if len(self._records) > RECORDS_DECODED:
                self._records.popitem(last=False)
        return record

    def answer(self, exchange, request: RequestHead, stored: StoredResponse, entry, age: float,
               status: bytes) -> None:
        """
        Serve a stored response to C{exchange}: whole, as a range of it, or
        as the answer to the client's own conditions.
        """
        response = stored.response
        size = entry.size
        headers = stored.servedHeaders.copy()
        if response.framing == LENGTH:
            headers.add(b"Content-Length", b"%d" % size)
        headers.add(b"Age", b"%d" % min(max(0, math.floor(age)), MAX_DELTA))
        headers.add(b"Cache-Status", status)
        head = ResponseHead(response.status, response.reason, headers, b"HTTP/1.1", response.framing, size)
        if not request.headers.hasAny(_CLIENT_CONDITIONS):
            if size > DIRECT_LIMIT:
                exchange.writeHead(head)
                EntrySender(exchange, entry.chunks()).start()
                return
            try:
                body = b"".join(entry.chunks()) if size and request.method != b"HEAD" else b""
            except OSError as e:
                exchange.refuse(500, f"the cached response could not be read: {e.strerror or e}")
                return
            exchange.respond(head, body)
            return
        outcome = conditional.preconditions(request, head)
        if outcome == 304:
            exchange.writeHead(conditional.notModified(head))
            exchange.finish()
            return
        if outcome == 412:
            exchange.refuse(412, "a precondition of the request does not hold for the cached response")
            return
        start, end = 0, entry.size
        span = conditional.byteRange(request, head, entry.size)
        if span is conditional.UNSATISFIABLE:
            exchange.writeHead(conditional.unsatisfiable(head, entry.size))
            exchange.finish()
            return
        if span is not None:
            start, end = span
            head = conditional.partial(head, start, end, entry.size)
        exchange.writeHead(head)
        if head.framing == NO_BODY or request.method == b"HEAD" or start == end:
            exchange.finish()
            return
        EntrySender(exchange, entry.chunks(start, end)).start(end - start <= DIRECT_LIMIT)

    # Collapsing

    def _wait(self, lockKey: bytes, waiter: _Waiter) -> None:
        waiters = self._filling[lockKey]
        waiters.append(waiter)

        def gaveUp() -> None:
            waiters.remove(waiter)
            self._resume(waiter)

        def clientGone() -> None:
            waiter.timer.cancel()
            waiters.remove(waiter)

        waiter.timer = self.clock.callLater(self.lockTimeout, gaveUp)
        waiter.exchange.onAbort = clientGone

    def release(self, lockKey: Optional[bytes]) -> None:
        """
        The fill under C{lockKey} is done (stored or not): the requests
        waiting for it look again.
        """
        if lockKey is None:
            return
        for waiter in self._filling.pop(lockKey, ()):
            waiter.timer.cancel()
            self.stats.collapsed += 1
            self._resume(waiter)

    def _resume(self, waiter: _Waiter) -> None:
        exchange = waiter.exchange
        exchange.onAbort = None
        if not exchange.finished:
            self.handle(exchange, waiter.head, waiter.uri, waiter.forward, waited=True)

    # Storing

    def storeKey(self, key: bytes, request: RequestHead, response: ResponseHead,
                 found: Optional[VaryIndex] = None) -> Optional[bytes]:
        """
        Where to store C{response} to C{request}, updating the URI's vary
        index as needed; None when it varies on everything.

        @param found: the index the lookup found, for a store that no
            longer has it at hand.
        """
        varies = response.headers.getAll(b"vary")
        if not varies:
            return key
        secondary = secondaryKey(varies, request)
        if secondary is None:
            return None
        names = tuple(name for name, _ in secondary)
        current = self.store.peek(key)
        index = found if current is None else records.load(current.head, current.size)
        if not isinstance(index, VaryIndex) or index.names != names:
            index = VaryIndex.new(names)
            writer = self.store.open(key)
            writer.commit(records.dumpIndex(index))
        return index.variantKey(key, secondary)

    def refresh(self, key: bytes, stored: StoredResponse, entry, request: RequestHead,
                index: Optional[VaryIndex] = None):
        """
        Store C{stored} (updated headers) with C{entry}'s body; the new
        entry, or C{entry} if it could not be stored.
        """
        variant = self.storeKey(key, request, stored.response, index)
        if variant is None:
            return entry
        writer = self.store.open(variant)
        try:
            for chunk in entry.chunks():
                if not writer.write(chunk):
                    return entry
        except OSError:
            writer.abort()
            return entry
        writer.commit(records.dumpResponse(stored))
        return self.store.peek(variant) or entry

    def invalidate(self, key: bytes) -> None:
        found = self.store.peek(key) is not None
        done = self.store.remove(key)
        if isinstance(done, Deferred):
            # The store counts and logs what it could not do.
            done.addErrback(lambda failure: None)
        if found:
            self.stats.invalidated += 1

    def _purgeRequest(self, exchange, uri: bytes) -> None:
        if not self.purgeFrom.allows(exchange.clientHost):
            exchange.refuse(403, "this client may not purge the cache")
            return
        proceed(exchange, self.purge(uri), self._purgeAnswer, exchange, uri)

    def _purgeAnswer(self, found: bool, exchange, uri: bytes) -> None:
        if not found:
            exchange.refuse(404, "nothing cached for " + uri.decode("latin-1"))
            return
        body = b"purged " + uri + b"\n"
        exchange.writeHead(ResponseHead(200, b"OK", Headers([
            (b"Content-Type", b"text/plain; charset=utf-8"), (b"Content-Length", b"%d" % len(body)),
        ]), framing=LENGTH, length=len(body)))
        exchange.write(body)
        exchange.finish()


def _lockKey(key: bytes, index: Optional[VaryIndex], head: RequestHead) -> bytes:
    if index is None:
        return key
    return index.variantKey(key, secondaryKey(list(index.names), head) or ())


def _storeDetail(cache: HTTPCache, request: RequestHead, response: ResponseHead, now: float) -> Optional[str]:
    """
    Why C{response} is not stored, or None if it is: the RFC's rules, then
    this cache's own (a Set-Cookie is never shared, as with nginx).
    """
    ok, reason = storable(request, response, now)
    if not ok:
        return reason
    if request.method == b"HEAD":
        return "method not stored"
    if b"set-cookie" in response.headers:
        return "set-cookie"
    if response.framing == LENGTH and response.length > cache.store.maxObjectSize:
        return "too large"
    return None


class _Annotate(Passthrough):
    """
    Marks a forwarded response with why the cache did not answer it.
    """

    def __init__(self, exchange, status: bytes):
        super().__init__(exchange)
        self.status = status

    def writeHead(self, head: ResponseHead) -> None:
        head.headers.add(b"Cache-Status", self.status)
        self.exchange.writeHead(head)


class _Storing(Passthrough):
    """
    A response on its way to the client that may also go into the store,
    chunk by chunk as it streams, and be committed when it ends whole.
    """

    def __init__(self, cache: HTTPCache, exchange):
        super().__init__(exchange)
        self.cache = cache
        self.requestTime = cache.clock.seconds()
        self.writer = None
        self.record: Optional[StoredResponse] = None

    def store(self, key: bytes, request: RequestHead, head: ResponseHead, now: float,
              index: Optional[VaryIndex] = None) -> Optional[str]:
        """
        Start storing C{head} and the body to come under C{key}, unless it
        may not be: then why not.
        """
        detail = _storeDetail(self.cache, request, head, now)
        if detail is not None:
            return detail
        variant = self.cache.storeKey(key, request, head, index)
        if variant is None:
            return "vary *"
        copy = ResponseHead(head.status, head.reason, head.headers.copy(), head.version, head.framing, head.length)
        varies = head.headers.getAll(b"vary")
        self.record = StoredResponse(copy, self.requestTime, now, secondaryKey(varies, request) if varies else ())
        self.writer = self.cache.store.open(variant)
        return None

    def forClient(self) -> bool:
        """
        Whether the body goes on to the client.
        """
        return True

    def passesBodyThrough(self) -> bool:
        return self.writer is None and self.forClient() and self.exchange.passesBodyThrough()

    def write(self, data: bytes) -> None:
        writer = self.writer
        if writer is not None and not writer.write(data):
            self.writer = None
            self.abandoned()
        if self.forClient():
            self.exchange.write(data)

    def finish(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.commit(records.dumpResponse(self.record))
            self.cache.stats.stored += 1
        self.abandoned()
        self.exchange.finish()

    def refuse(self, status: int, reason: str, headers=()) -> None:
        self.clientGone()
        self.exchange.refuse(status, reason, headers)

    def clientGone(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.abort()
        self.abandoned()

    def abandoned(self) -> None:
        """
        Nothing more will be stored from this response.
        """


class _Invalidate(_Storing):
    """
    An unsafe request's response: on success, what it changed is no longer
    served from the cache (RFC 9111 section 4.4).  An explicitly fresh POST
    response that names its own URI in Content-Location is stored for GETs
    of that URI (RFC 9110 section 9.3.3).
    """

    def __init__(self, cache: HTTPCache, exchange, request: RequestHead, key: bytes):
        super().__init__(cache, exchange)
        self.request = request
        self.key = key

    def writeHead(self, head: ResponseHead) -> None:
        cache = self.cache
        if invalidates(self.request, head):
            cache.invalidate(self.key)
            for uri in invalidatedLocations(self.request, head, self.key):
                cache.invalidate(primaryKey(uri))
        location = head.headers.get(b"content-location")
        if self.request.method == b"POST" and location is not None:
            uri = urljoin(self.key.decode("latin-1"), location.strip().decode("latin-1")).encode("latin-1")
            if _sameOrigin(uri, self.key):
                self.store(primaryKey(uri), self.request, head, cache.clock.seconds())
        self.exchange.writeHead(head)


class _Fill(_Storing):
    """
    A forwarded GET: its response goes to the client and, if storable, into
    the store as it streams; a 304 to our revalidation serves the stored
    body instead, and an error may be hidden behind a stale response.
    Requests waiting for the same response are let go as soon as it is
    stored or known not to be.
    """

    def __init__(self, cache: HTTPCache, exchange, request: RequestHead, outgoing: RequestHead, key: bytes,
                 decision: Decision, stale: Optional[StoredResponse], entry, lockKey: Optional[bytes],
                 background: bool, index: Optional[VaryIndex]):
        super().__init__(cache, exchange)
        self.request = request
        self.outgoing = outgoing
        self.key = key
        self.decision = decision
        self.stale = stale
        self.entry = entry
        self.lockKey = lockKey
        self.background = background
        self.taken = False
        self.bodyToClient = True
        # The URI's vary index as the lookup found it.
        self.index = index

    def abandoned(self) -> None:
        lockKey, self.lockKey = self.lockKey, None
        self.cache.release(lockKey)

    def _takeOver(self, stored: StoredResponse, entry, detail: str) -> None:
        """
        Answer from the store; whatever the relay still sends is dropped.
        """
        self.taken = True
        exchange = self.exchange
        if self.background:
            exchange.finish()
            return
        age = currentAge(stored.response.headers, stored.requestTime, stored.responseTime,
                         self.cache.clock.seconds())
        status = cacheStatus(self.cache.name, self.decision, detail=detail)
        self.cache.answer(exchange, self.request, stored, entry, age, status)

    def writeHead(self, head: ResponseHead) -> None:
        cache = self.cache
        now = cache.clock.seconds()
        stale = self.stale
        if b"date" not in head.headers:
            # RFC 9110 section 6.6.1: a cache records when it received one.
            head.headers.add(b"Date", datetimeToString(now))
        if stale is not None and head.status == 304:
            cache.stats.revalidated += 1
            updated = StoredResponse(updateHeaders(stale.response, head), self.requestTime, now, stale.varyKey)
            entry = cache.refresh(self.key, updated, self.entry, self.outgoing, self.index)
            self.abandoned()
            self._takeOver(updated, entry, "revalidated")
            return
        if stale is not None and head.status in ERROR_STATUSES and self.decision.staleIfError:
            cache.stats.stale += 1
            self.abandoned()
            self._takeOver(stale, self.entry, "stale-if-error")
            return
        detail = self.store(self.key, self.outgoing, head, now, self.index)
        decision = self.decision
        if detail is None:
            record = self.record
            ttl = freshnessLifetime(record.response, now) - currentAge(record.response.headers,
                                                                       self.requestTime, now, now)
            decision = Decision(decision.kind, decision.reason, ttl=ttl)
        else:
            self.abandoned()
        # "stored" only once the size is known to fit.
        stored = detail is None and head.framing == LENGTH
        head.headers.add(b"Cache-Status", cacheStatus(cache.name, decision, stored, detail))
        outcome = conditional.preconditions(self.request, head) if 200 <= head.status < 300 else None
        if outcome == 304:
            self.bodyToClient = False
            self.exchange.writeHead(conditional.notModified(head))
        elif outcome == 412:
            self.bodyToClient = False
            self.exchange.writeHead(ResponseHead(412, b"Precondition Failed", Headers([(b"Content-Length", b"0")]),
                                                 framing=LENGTH, length=0))
        else:
            self.exchange.writeHead(head)

    def forClient(self) -> bool:
        return self.bodyToClient and not self.taken

    def registerProducer(self, producer) -> None:
        if not self.taken:
            self.exchange.registerProducer(producer)

    def unregisterProducer(self) -> None:
        if not self.taken:
            self.exchange.unregisterProducer()

    def finish(self) -> None:
        if self.taken:
            return
        super().finish()

    def refuse(self, status: int, reason: str, headers=()) -> None:
        if self.taken:
            return
        self.clientGone()
        if self.stale is not None and self.decision.staleIfError and not self.exchange.responseStarted:
            self.cache.stats.stale += 1
            self._takeOver(self.stale, self.entry, "stale-if-error")
            return
        self.exchange.refuse(status, reason, headers)


def _sameOrigin(uri: bytes, other: bytes) -> bool:
    return primaryKey(uri).split(b"/", 3)[:3] == primaryKey(other).split(b"/", 3)[:3]
