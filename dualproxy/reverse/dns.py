"""
Backends named by host name, re-resolved while the proxy runs.

Each name is looked up again when its records expire (the smallest TTL,
kept within configured bounds), so a DNS change reaches the proxy without a
reload; a failed lookup keeps the addresses that last worked.
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.names import client, dns, error, hosts, resolve
from twisted.python.failure import Failure

from ..relay.connect import isAddress

log = Logger()

# Seconds before each query is repeated: a lookup gives up after their sum,
# keeping the last good addresses, and shutdown waits at most that long.
QUERY_TIMEOUTS = (1, 3)

RESOLV_CONF = "/etc/resolv.conf"
HOSTS = b"/etc/hosts"


def nextDelay(ttls: Iterable[float], minTtl: float, maxTtl: float) -> float:
    """
    Seconds until a name is looked up again: when its first record expires,
    but not so soon that the DNS server is hammered, nor so late that a
    change is missed for long.
    """
    return min(max(min(ttls, default=minTtl), minTtl), maxTtl)


def serverAddress(server: str) -> Tuple[str, int]:
    """
    A configured C{"host:port"} (C{"[v6]:port"} for IPv6) as a pair.
    """
    host, port = server.rsplit(":", 1)
    return host.strip("[]"), int(port)


def systemServers(path: str = RESOLV_CONF) -> List[Tuple[str, int]]:
    """
    The name servers in a resolv.conf file, or the local one as the C
    library assumes when there are none.
    """
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError:
        lines = []
    servers = [(words[1], dns.PORT) for words in map(str.split, lines) if len(words) > 1 and words[0] == "nameserver"]
    return servers or [("127.0.0.1", dns.PORT)]


def makeResolver(reactor, servers: Sequence[str]):
    """
    A DNS client for the configured servers; with none, what the system
    uses: the hosts file, then the servers in resolv.conf (read once, so
    that no timer re-reads it while the proxy runs).
    """
    if servers:
        return client.Resolver(servers=[serverAddress(s) for s in servers], reactor=reactor, timeout=QUERY_TIMEOUTS)
    system = client.Resolver(servers=systemServers(), reactor=reactor, timeout=QUERY_TIMEOUTS)
    return resolve.ResolverChain([hosts.Resolver(HOSTS), system])


def _answers(results) -> Tuple[Tuple[str, ...], List[float], Optional[str]]:
    """
    The addresses (A before AAAA) and TTLs in the answers to the two
    lookups of a name, and why there is none if neither gave an address.
    """
    addresses: List[str] = []
    ttls: List[float] = []
    failures = []
    for ok, result in results:
        if not ok:
            failures.append(result)
            continue
        for record in result[0]:
            ttls.append(record.ttl)
            if record.type in (dns.A, dns.AAAA):
                address = str(ipaddress.ip_address(record.payload.address))
                if address not in addresses:
                    addresses.append(address)
    if addresses:
        return tuple(addresses), ttls, None
    return (), ttls, _reason(failures[0]) if failures else "no address records"


# The response codes of answers that are errors, as the DNS names them.
_RCODES = {
    error.DNSFormatError: "FORMERR",
    error.DNSServerError: "SERVFAIL",
    error.DNSNotImplementedError: "NOTIMP",
    error.DNSQueryRefusedError: "REFUSED",
}


def _reason(failure: Failure) -> str:
    if failure.check(defer.TimeoutError):
        return "no answer from the DNS servers"
    if failure.type in (error.DNSNameError, error.DomainError):
        return "no such name"
    if failure.check(error.DomainError):
        return f"the DNS server answered {_RCODES.get(failure.type, 'with an error')}"
    return f"{failure.type.__name__}: {failure.getErrorMessage()}"


class BackendResolver(Service):
    """
    Keeps C{addresses} of every backend current, looking each distinct host
    name up again when its records expire.

    @ivar onChange: called with each backend whose addresses changed, so
        that connections to its old address can be let go.
    """

    def __init__(self, clock, backends: Iterable, resolver, minTtl: float, maxTtl: float,
                 onChange: Optional[Callable[[object], None]] = None):
        self.clock = clock
        self.backends = list(backends)
        self.resolver = resolver
        self.minTtl = minTtl
        self.maxTtl = maxTtl
        self.onChange = onChange
        self._names: Dict[str, List] = {}
        for backend in self.backends:
            if isAddress(backend.host):
                backend.addresses = (backend.host,)
            else:
                self._names.setdefault(backend.host, []).append(backend)
        self._calls: Dict[str, object] = {}
        self._inFlight: Dict[str, Deferred] = {}
        self._failing: Dict[str, str] = {}

    def startService(self) -> None:
        super().startService()
        for name in self._names:
            self._lookUp(name)

    def stopService(self) -> Optional[Deferred]:
        """
        Stop looking names up; the returned Deferred waits for lookups
        already sent, so that none outlives the service.
        """
        super().stopService()
        for call in self._calls.values():
            call.cancel()
        self._calls.clear()
        if self._inFlight:
            return DeferredList(list(self._inFlight.values()))
        return None

    def _lookUp(self, name: str) -> None:
        self._calls.pop(name, None)
        lookups = [self.resolver.lookupAddress(name), self.resolver.lookupIPV6Address(name)]
        done = DeferredList(lookups, consumeErrors=True).addCallback(self._resolved, name)
        if not done.called:
            self._inFlight[name] = done

    def _resolved(self, results, name: str) -> None:
        self._inFlight.pop(name, None)
        if not self.running:
            return
        backends = self._names[name]
        which = ", ".join(backend.name for backend in backends)
        addresses, ttls, reason = _answers(results)
        if reason is not None:
            if self._failing.get(name) != reason:
                # Once per spell of failures, not on every retry.
                log.warn("cannot re-resolve backend {backend}, keeping {addresses}: {reason}", backend=which,
                         addresses=", ".join(backends[0].addresses) or "no addresses", reason=reason)
            self._failing[name] = reason
            delay = self.minTtl
        else:
            self._failing.pop(name, None)
            # Servers rotate the order of records: only a different set is a change.
            if set(addresses) != set(backends[0].addresses):
                log.info("backend {backend} now resolves to {addresses}", backend=which,
                         addresses=", ".join(addresses))
                for backend in backends:
                    backend.addresses = addresses
                    if self.onChange is not None:
                        self.onChange(backend)
            delay = nextDelay(ttls, self.minTtl, self.maxTtl)
        self._calls[name] = self.clock.callLater(delay, self._lookUp, name)
