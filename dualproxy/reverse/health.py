"""
Whether a backend should get requests: active checks on a timer, and
passive marking from the failures of real requests.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Set, Tuple

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..http.message import Headers, Refusal, RequestHead
from ..relay.client import UpstreamProtocol
from ..relay.connect import asRefusal, connectTCP

log = Logger()


class Health:
    """
    The health of one backend, kept apart from any I/O so that every
    transition can be driven directly, with time passed in.

    Active checks move C{state} with hysteresis: C{fall} failures in a row
    take a backend down and C{rise} successes in a row bring it back, so
    one lost probe does not flap it.  Passive failures of real requests
    take it out for C{coolOff} seconds without waiting for a probe.
    """

    def __init__(self, rise: int = 2, fall: int = 3, coolOff: float = 10.0, passiveFailures: int = 3):
        self.rise = rise
        self.fall = fall
        self.coolOff = coolOff
        self.passiveFailures = passiveFailures
        self.state = "up"
        self._streak = 0
        self._passiveStreak = 0
        self._coolUntil: Optional[float] = None

    def checkResult(self, ok: bool) -> Optional[bool]:
        """
        Count one active check; the new up-ness when it changed, else None.
        """
        up = self.state == "up"
        if ok == up:
            # A result agreeing with the state breaks any contrary streak.
            self._streak = 0
            return None
        self._streak += 1
        if self._streak < (self.fall if up else self.rise):
            return None
        self._streak = 0
        self.state = "down" if up else "up"
        return not up

    def requestFailed(self, now: float) -> None:
        """
        A request could not connect or got a 5xx from the backend.
        """
        self._passiveStreak += 1
        if self._passiveStreak >= self.passiveFailures:
            self._passiveStreak = 0
            self._coolUntil = now + self.coolOff

    def requestSucceeded(self) -> None:
        self._passiveStreak = 0

    def isUp(self, now: float) -> bool:
        return self.state == "up" and (self._coolUntil is None or now >= self._coolUntil)


class _Probe:
    """
    One check request on a connection of its own, decided once: by the
    response head, by a failure, or by the deadline.
    """

    def __init__(self, clock, timeout: float, expectStatus: Tuple[int, ...]):
        self.expectStatus = expectStatus
        self.done: Deferred = Deferred()
        self._over = False
        self._upstream: Optional[UpstreamProtocol] = None
        self._connecting: Optional[Deferred] = None
        self._timer = clock.callLater(timeout, self._finish, False, f"no answer within {timeout:g}s")

    def start(self, connecting: Deferred, head: RequestHead, what: str) -> None:
        self._connecting = connecting
        connecting.addCallbacks(self._connected, self._connectFailed, callbackArgs=(head,), errbackArgs=(what,))

    def abort(self) -> None:
        self._finish(False, "health checks stopped")

    def _connected(self, upstream: UpstreamProtocol, head: RequestHead) -> None:
        if self._over:
            upstream.transport.abortConnection()
            return
        self._upstream = upstream
        upstream.send(head, self)

    def _connectFailed(self, failure: Failure, what: str) -> None:
        self._finish(False, asRefusal(failure, what).reason)

    def _finish(self, ok: bool, reason: str) -> None:
        if self._over:
            return
        self._over = True
        if self._timer.active():
            self._timer.cancel()
        if self._upstream is not None:
            # Only the status matters: never read or keep the rest.
            self._upstream.transport.abortConnection()
        elif self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()
        self.done.callback((ok, reason))

    # Response listener

    def responseInterim(self, head) -> None:
        pass

    def responseHead(self, head) -> None:
        self._finish(head.status in self.expectStatus, f"health check answered {head.status}")

    def responseBody(self, data: bytes) -> None:
        pass

    def responseEnded(self) -> None:
        pass

    def responseFailed(self, refusal: Refusal) -> None:
        self._finish(False, refusal.reason)


def _hostField(host: str, port: int) -> bytes:
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}".encode("idna")


class HealthCheck(Service):
    """
    Probes every backend of one pool each C{interval} seconds, each on a
    fresh connection so that a check measures the backend and not a pooled
    connection, and feeds the results to the backends' L{Health}.  A
    backend whose C{scheme} is "https" is probed over TLS.

    @ivar onRound: called after each complete round of probes, so that
        callers (tests) can wait on rounds rather than on time.
    @ivar preamble: sent first on each probe's connection: a LOCAL PROXY
        header for a pool whose backends require one.
    """

    def __init__(
        self,
        reactor,
        backends: Sequence,
        path: bytes = b"/",
        interval: float = 5.0,
        timeout: float = 2.0,
        expectStatus: Tuple[int, ...] = (200,),
        host: Optional[bytes] = None,
        connect: Optional[Callable[..., Deferred]] = None,
        onRound: Optional[Callable[[], None]] = None,
        preamble: bytes = b"",
    ):
        self.reactor = reactor
        self.backends = backends
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.expectStatus = expectStatus
        self.host = host
        self.onRound = onRound
        self.preamble = preamble
        self._connect = connect if connect is not None else connectTCP
        self._loop = LoopingCall(self._round)
        self._loop.clock = reactor
        self._probes: Set[_Probe] = set()

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval).addErrback(lambda failure: log.failure("health checks failed", failure))

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        for probe in list(self._probes):
            probe.abort()

    def _round(self) -> Deferred:
        # LoopingCall waits for this Deferred, so rounds never overlap.
        return DeferredList([self._probe(backend) for backend in self.backends]).addCallback(self._roundDone)

    def _roundDone(self, results) -> None:
        if self.running and self.onRound is not None:
            self.onRound()

    def _probe(self, backend) -> Deferred:
        probe = _Probe(self.reactor, self.timeout, self.expectStatus)
        self._probes.add(probe)
        headers = Headers(
            [
                (b"Host", self.host or _hostField(backend.host, backend.port)),
                (b"Connection", b"close"),
                (b"User-Agent", b"dualproxy-health"),
            ]
        )
        address = backend.addresses[0] if backend.addresses else backend.host
        tls = getattr(backend, "tls", None)
        probe.done.addCallback(self._record, backend, probe)
        extra = {"preamble": self.preamble} if self.preamble else {}
        probe.start(
            self._connect(self.reactor, address, backend.port, self.timeout, self.timeout, tls=tls, **extra),
            RequestHead(b"GET", self.path, b"HTTP/1.1", headers),
            f"backend {backend.name}",
        )
        return probe.done

    def _record(self, outcome: Tuple[bool, str], backend, probe: _Probe) -> None:
        self._probes.discard(probe)
        if not self.running:
            return
        ok, reason = outcome
        changed = backend.health.checkResult(ok)
        if changed is True:
            log.info("backend {backend} is {state}", backend=backend.name, state="up")
        elif changed is False:
            log.warn("backend {backend} is {state}: {reason}", backend=backend.name, state="down", reason=reason)
