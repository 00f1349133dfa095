"""
The built-in load-balancing strategies: pure choices among a pool's backends.

Each strategy is published as an L{IBalancerFactory} plugin (see
C{twisted/plugins/dualproxy_balancers.py}) so a pool's C{balance} setting
finds the built-in ones exactly as it finds a third party's.

Every balancer copes with the candidate list changing between calls (a
backend marked down, or excluded because a retry already tried it): state is
kept per backend name, never per position.
"""

from __future__ import annotations

import math
from hashlib import blake2b
from random import Random
from typing import Callable, Collection, Dict, Mapping, Optional, Protocol, Sequence, TypeVar

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..http.message import Headers
from ..interfaces import IBalancer, IBalancerFactory
from ..plugins import checkOptions


class Backend(Protocol):
    """
    What a balancer needs to know of a backend.
    """

    name: str
    weight: int
    inFlight: int


B = TypeVar("B", bound=Backend)


def _lessBusy(a: Backend, b: Backend) -> bool:
    """
    Whether C{a} has fewer requests in flight per unit of weight than C{b},
    compared without division so that equal loads stay exactly equal.
    """
    return a.inFlight * b.weight < b.inFlight * a.weight


@implementer(IBalancer)
class RoundRobin:
    """
    Smooth weighted round robin (nginx's): every pick credits each candidate
    with its weight and debits the winner with the candidates' total, so
    weights 5, 1, 1 give C{a a b a c a a} rather than bursts of C{a}.
    """

    def __init__(self) -> None:
        self._scores: Dict[str, int] = {}

    def pick(self, backends: Sequence[B], client: Optional[str], headers: Headers) -> B:
        return self.choose(backends)

    def choose(self, backends: Sequence[B]) -> B:
        """
        The next backend, for callers that have no request to show.
        """
        scores = self._scores
        total = 0
        best = backends[0]
        bestScore: Optional[int] = None
        for backend in backends:
            score = scores.get(backend.name, 0) + backend.weight
            scores[backend.name] = score
            total += backend.weight
            if bestScore is None or score > bestScore:
                best, bestScore = backend, score
        scores[best.name] -= total
        return best


@implementer(IBalancer)
class LeastBusy:
    """
    The backend with the fewest requests in flight for its weight; ties go
    round robin, so that an idle pool still spreads its load.
    """

    def __init__(self) -> None:
        self._tieBreak = RoundRobin()

    def pick(self, backends: Sequence[B], client: Optional[str], headers: Headers) -> B:
        tied = [backends[0]]
        for backend in backends[1:]:
            if _lessBusy(backend, tied[0]):
                tied = [backend]
            elif not _lessBusy(tied[0], backend):
                tied.append(backend)
        return self._tieBreak.choose(tied)


@implementer(IBalancer)
class RandomTwo:
    """
    The power of two random choices: the less busy of two distinct backends
    drawn by weight, which avoids overloaded backends without the herd
    effect of every balancer rushing to the single least busy one.
    """

    def __init__(self, random: Optional[Random] = None) -> None:
        self._random = random if random is not None else Random()

    def pick(self, backends: Sequence[B], client: Optional[str], headers: Headers) -> B:
        first = self._draw(backends)
        if len(backends) == 1:
            return first
        second = self._draw([backend for backend in backends if backend is not first])
        # Ties keep the first draw, so an idle pool is spread exactly by weight.
        return second if _lessBusy(second, first) else first

    def _draw(self, backends: Sequence[B]) -> B:
        return self._random.choices(backends, [backend.weight for backend in backends])[0]


_SOURCE_ERROR = "hash: expected client, header:NAME or cookie:NAME"


@implementer(IBalancer)
class ConsistentHash:
    """
    Sticky sessions by weighted rendezvous hashing: every backend scores the
    request's key and the highest score wins, so removing a backend moves
    only the keys it held and adding one takes its weighted share from all.

    The key is the client address, or a header or cookie value falling back
    to the client address; without any key the pick is round robin.
    """

    def __init__(self, source: str = "client") -> None:
        """
        @param source: C{"client"}, C{"header:NAME"} or C{"cookie:NAME"}.
        @raise ValueError: for any other C{source}.
        """
        if not isinstance(source, str):
            raise ValueError(_SOURCE_ERROR)
        kind, _, name = source.partition(":")
        name = name.strip()
        self._key: Optional[Callable[[Headers], Optional[bytes]]] = None
        if kind == "header" and name:
            self._name = name.lower().encode("latin-1", "replace")
            self._key = self._header
        elif kind == "cookie" and name:
            self._name = name.encode("latin-1", "replace")
            self._key = self._cookie
        elif source != "client":
            raise ValueError(_SOURCE_ERROR)
        self._fallback = RoundRobin()

    def pick(self, backends: Sequence[B], client: Optional[str], headers: Headers) -> B:
        key = self._key(headers) if self._key is not None else None
        if not key:
            if not client:
                return self._fallback.choose(backends)
            key = client.encode("utf-8")
        return rendezvous(key, backends)

    def _header(self, headers: Headers) -> Optional[bytes]:
        return headers.get(self._name)

    def _cookie(self, headers: Headers) -> Optional[bytes]:
        for field in headers.getAll(b"cookie"):
            for pair in field.split(b";"):
                name, equals, value = pair.partition(b"=")
                if equals and name.strip() == self._name:
                    return value.strip()
        return None


def rendezvous(key: bytes, backends: Sequence[B]) -> B:
    """
    The backend with the highest weighted rendezvous score for C{key}:
    C{-weight / ln(h)} with C{h} in (0, 1) from a keyed BLAKE2b of the
    backend's name, stable across processes unlike L{hash}.
    """
    secret = blake2b(key, digest_size=32).digest()
    best = backends[0]
    bestScore = -1.0
    for backend in backends:
        digest = blake2b(backend.name.encode("utf-8"), key=secret, digest_size=8).digest()
        # 52 bits plus a half keep h exactly representable and inside (0, 1).
        h = ((int.from_bytes(digest, "big") >> 12) + 0.5) / 2.0**52
        score = -backend.weight / math.log(h)
        if score > bestScore:
            best, bestScore = backend, score
    return best


@implementer(IPlugin, IBalancerFactory)
class BalancerFactory:
    """
    A strategy published as a plugin under C{name}, refusing options it
    does not know before building a pool's balancer.
    """

    def __init__(
        self,
        name: str,
        build: Callable[[Mapping[str, object]], IBalancer],
        options: Collection[str] = (),
    ) -> None:
        self.name = name
        self._build = build
        self._options = options

    def __repr__(self) -> str:
        return f"<BalancerFactory {self.name!r}>"

    def __call__(self, options: Mapping[str, object]) -> IBalancer:
        checkOptions(options, sorted(self._options), self.name)
        return self._build(options)


roundRobin = BalancerFactory("round-robin", lambda options: RoundRobin())
leastBusy = BalancerFactory("least-busy", lambda options: LeastBusy())
randomTwo = BalancerFactory("random-two", lambda options: RandomTwo())
consistentHash = BalancerFactory(
    "hash", lambda options: ConsistentHash(options.get("hash", "client")), ("hash",)
)
