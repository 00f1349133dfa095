"""
The service that keeps the ACME certificates: at start it presents what
the storage holds, orders what is missing or due, and then renews each
certificate at 2/3 of its lifetime, retrying failures with backoff.  Each
new certificate goes into the listeners' book, so new connections get it
and open ones keep theirs.
"""

from __future__ import annotations

import datetime
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..settings.model import AcmeSettings
from ..settings.values import HOSTNAME, ConfigError
from ..tls import CertificateBook, CertificatePair, TLSConfigError, loadPair, validity
from .challenges import ALPNChallenges, ChallengeTokens
from .renewal import renewalTime, retryDelay
from .tlsalpn import selfSigned

_log = Logger()


def acmeDomains(config) -> Sequence[str]:
    """
    The names to keep certificates for from the start: the exact names of
    C{tls.acme.domains}, or else the exact hosts the reverse routes name
    (not C{*}, wildcards or addresses).

    @raise ConfigError: there are none, nor any to order on demand.
    """
    names = tuple(name for name in _names(config) if not name.startswith("*."))
    if not names and not onDemandPatterns(config):
        raise ConfigError("tls.acme.domains", "no names to obtain certificates for: list them here"
                          + (", or give the reverse routes hosts" if config.mode == "reverse" else ""))
    return names


def onDemandPatterns(config) -> Tuple[str, ...]:
    """
    With C{tls.acme.on_demand}: the names and C{*.domain} patterns a
    handshake may order a certificate for, C{tls.acme.domains} or else
    the reverse routes' hosts; none without it.
    """
    return _names(config) if config.tls.acme.on_demand else ()


def _names(config) -> Tuple[str, ...]:
    settings = config.tls.acme
    if settings.domains:
        return settings.domains
    names: List[str] = []
    if config.mode == "reverse":
        for route in config.reverse.routes:
            host = route.host.split(":")[0]
            if host != "*" and not host.replace(".", "").isdigit() and host not in names:
                names.append(host)
    return tuple(names)


def mayOrder(patterns: Sequence[str], name: str) -> bool:
    """
    Whether C{name}, from a client's hello, is one of C{patterns} or under
    one of their C{*.domain}s (at any depth, as the routes match hosts).
    """
    if len(name) > 253 or not HOSTNAME.match(name) or name.startswith(".") or name.replace(".", "").isdigit():
        return False
    return any(pattern == name or (pattern.startswith("*.") and name.endswith(pattern[1:]))
               for pattern in patterns)


def placeholderPair(names: Sequence[str]) -> CertificatePair:
    """
    A self-signed certificate for C{names}, presented until the CA's is
    there: the listeners start at once (TLS-ALPN-01 needs them to), and a
    client that comes too early fails verification rather than connecting
    to nothing.
    """
    certificate, key = selfSigned(names, "dualproxy: certificate pending")
    return CertificatePair("(placeholder)", "(placeholder)", [certificate], key)


class Certificate:
    """
    One name's certificate as the service keeps it, for status and metrics.

    @ivar notAfter: when the certificate presented now expires (POSIX
        seconds), or None before the first.
    @ivar renewAt: when the next order is due.
    @ivar failures: orders failed in a row.
    @ivar error: the last failure, in words; None once one succeeded.
    @ivar settled: fired once the order in progress is settled.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.notAfter: Optional[float] = None
        self.renewAt: Optional[float] = None
        self.failures = 0
        self.error: Optional[str] = None
        self.settled: List[defer.Deferred] = []
        self.ordering = False
        self.call = None

    def describe(self) -> dict:
        return {"name": self.name, "not_after": self.notAfter, "renew_at": self.renewAt,
                "failures": self.failures, "error": self.error}


class AcmeService(Service):
    """
    Keeps one certificate per name of C{domains}, and of each name of
    C{onDemand} a handshake asks for, obtained through C{client} (an
    L{dualproxy.acme.client.AcmeClient}).

    @param onDemand: names and C{*.domain} patterns (L{onDemandPatterns}).
    @param jitter: draws a number in [0, 1) to spread retries.
    """

    def __init__(self, settings: AcmeSettings, domains: Sequence[str], reactor, client=None,
                 jitter: Callable[[], float] = random.random, onDemand: Sequence[str] = ()) -> None:
        self.settings = settings
        self.reactor = reactor
        self.jitter = jitter
        self.onDemandPatterns = tuple(onDemand)
        self.book = CertificateBook(placeholderPair(list(domains) + [name for name in onDemand if name not in domains]))
        self.tokens = ChallengeTokens()
        if client is None:
            try:
                from .client import AcmeClient
            except ImportError as e:
                raise ConfigError("tls.acme", f"needs the acme library ({e}): pip install 'dualproxy[acme]'")
            responder = self.tokens if settings.challenge == "http-01" else ALPNChallenges(self.book)
            client = AcmeClient(reactor, settings.directory, settings.storage, responder, settings.challenge,
                                settings.contact, settings.ca or True)
        self.client = client
        self.certificates: Dict[str, Certificate] = {name: Certificate(name) for name in domains}
        self._waiting: Dict[str, List[defer.Deferred]] = {}
        self._orderedOnDemand = 0
        self._limitLogged = False

    def ready(self, name: str) -> defer.Deferred:
        """
        Fires once the listeners present a CA's certificate for C{name}
        (at once if they do), for what must not start before.
        """
        if self.book.get(name) is not None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiting.setdefault(name, []).append(d)
        return d

    def startService(self) -> None:
        super().startService()
        now = self.reactor.seconds()
        for state in self.certificates.values():
            self._presentStored(state, now)
            self._schedule(state, state.renewAt if state.renewAt is not None else now)

    def onDemand(self, name: str) -> Optional[defer.Deferred]:
        """
        For a handshake asking for C{name}, which no certificate covers: a
        Deferred that fires once the order for it is settled, the order
        started now if C{name} may be ordered on demand; None for the
        handshake to go on at once.
        """
        state = self.certificates.get(name)
        if state is None:
            if not self.running or not mayOrder(self.onDemandPatterns, name):
                return None
            if self._orderedOnDemand >= self.settings.on_demand_limit:
                if not self._limitLogged:
                    self._limitLogged = True
                    _log.warn("ACME: not ordering a certificate for {name} on demand, nor for any other new name: "
                              "the tls.acme.on_demand_limit of {limit} names is reached", name=name,
                              limit=self.settings.on_demand_limit)
                return None
            self._orderedOnDemand += 1
            state = self.certificates[name] = Certificate(name)
            self._presentStored(state, self.reactor.seconds())
            if state.notAfter is not None:
                self._schedule(state, state.renewAt)
                return None
            self.renew(name)
        if not state.ordering:
            return None
        d = defer.Deferred()
        state.settled.append(d)
        return d

    def stopService(self) -> None:
        super().stopService()
        for state in self.certificates.values():
            if state.call is not None and state.call.active():
                state.call.cancel()
            state.call = None
            _settle(state)

    def _presentStored(self, state: Certificate, now: float) -> None:
        """
        Present the certificate the storage holds for the name, if it loads
        and has not expired.
        """
        from .client import storedPaths

        paths = storedPaths(self.settings.storage, state.name)
        if paths is None:
            return
        try:
            pair = loadPair(paths.certificate, paths.key)
        except TLSConfigError as e:
            _log.warn("ACME: the stored certificate for {name} does not load ({error}); ordering another",
                      name=state.name, error=e)
            return
        if pair.covers(state.name) and validity(pair.chain[0])[1] > now:
            self._present(state, pair)

    def _present(self, state: Certificate, pair: CertificatePair) -> None:
        notBefore, notAfter = validity(pair.chain[0])
        state.notAfter = notAfter
        state.renewAt = renewalTime(notBefore, notAfter)
        self.book.put(state.name, pair)
        for d in self._waiting.pop(state.name, []):
            d.callback(None)

    def _schedule(self, state: Certificate, when: float) -> None:
        state.renewAt = when
        state.call = self.reactor.callLater(max(0.0, when - self.reactor.seconds()), self.renew, state.name)

    def renew(self, name: str) -> defer.Deferred:
        """
        Order C{name}'s certificate now (at its due time, or when asked);
        the next order is scheduled when this one is settled.

        @return: a Deferred that fires once it is.
        """
        state = self.certificates[name]
        if state.ordering:
            return defer.succeed(None)
        if state.call is not None and state.call.active():
            state.call.cancel()
        state.call = None
        state.ordering = True
        _log.info("ACME: ordering a certificate for {name}", name=name)
        d = self.client.obtain([name])
        d.addCallbacks(self._obtained, self._failed, (state,), errbackArgs=(state,))
        return d

    def _obtained(self, paths, state: Certificate) -> None:
        state.ordering = False
        if not self.running:
            return
        try:
            pair = loadPair(paths.certificate, paths.key)
        except TLSConfigError as e:
            self._failed(Failure(e), state)
            return
        state.failures = 0
        state.error = None
        self._present(state, pair)
        _log.info("ACME: presenting the new certificate for {name} (expires {notAfter}); renewing at {renewAt}",
                  name=state.name, notAfter=_when(state.notAfter), renewAt=_when(state.renewAt))
        self._schedule(state, state.renewAt)
        _settle(state)

    def _failed(self, failure: Failure, state: Certificate) -> None:
        state.ordering = False
        if not self.running:
            return
        state.failures += 1
        state.error = " ".join(str(failure.value).split()) or failure.type.__name__
        delay = retryDelay(state.failures, self.jitter())
        _log.warn("ACME: ordering a certificate for {name} failed ({error}); trying again in {delay:.0f} s",
                  name=state.name, error=state.error, delay=delay)
        self._schedule(state, self.reactor.seconds() + delay)
        _settle(state)

    def describe(self) -> List[dict]:
        return [state.describe() for state in self.certificates.values()]


def _settle(state: Certificate) -> None:
    settled, state.settled = state.settled, []
    for d in settled:
        d.callback(None)


def _when(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
