"""
A backend named by host name follows its DNS records while the proxy runs:
a twisted.names server on 127.0.0.1 answers for the name, and the test
changes the answer.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import fail, inlineCallbacks, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.names import dns, error, server
from twisted.names.common import ResolverBase
from twisted.trial.unittest import SkipTest, TestCase

from dualproxy.reverse.dns import BackendResolver

from .support import Origin, Proxy, curl


class Zone(ResolverBase):
    """
    The records a test controls: {name: ([address, ...], ttl)}.
    """

    def __init__(self, records):
        super().__init__()
        self.records = records
        self.queries = 0

    def _lookup(self, name, cls, type, timeout):
        self.queries += 1
        key = name.decode("ascii") if isinstance(name, bytes) else name
        if key not in self.records:
            return fail(error.DomainError(name))
        addresses, ttl = self.records[key]
        answers = []
        for address in addresses:
            if type == dns.A and ":" not in address:
                answers.append(dns.RRHeader(name, dns.A, dns.IN, ttl, dns.Record_A(address, ttl), auth=True))
            elif type == dns.AAAA and ":" in address:
                answers.append(dns.RRHeader(name, dns.AAAA, dns.IN, ttl, dns.Record_AAAA(address, ttl), auth=True))
        return succeed((answers, [], []))


@inlineCallbacks
def waitFor(condition, what, timeout=10.0):
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield deferLater(reactor, 0.05, lambda: None)


class ReResolutionTests(TestCase):
    def setUp(self):
        self.zone = Zone({"backend.test": (["127.0.0.1"], 1)})
        factory = server.DNSServerFactory(authorities=[self.zone], verbose=0)
        factory.noisy = False
        self.dnsPort = reactor.listenUDP(0, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1")
        self.addCleanup(self.dnsPort.stopListening)

    def origins(self):
        """
        Origin A on 127.0.0.1 and B on 127.0.0.2 with the same port, since
        the backend URL fixes the port and only the address may change.
        """
        a = Origin("a")
        self.addCleanup(a.stop)
        port = a.port.getHost().port
        try:
            b = Origin("b", port, "127.0.0.2")
        except CannotListenError as e:
            raise SkipTest(f"cannot listen on 127.0.0.2 here: {e}")
        self.addCleanup(b.stop)
        return a, b, port

    @inlineCallbacks
    def fetch(self, proxy):
        out, err, code = yield curl(proxy.url + "/name")
        self.assertEqual(code, 0, err)
        return out

    @inlineCallbacks
    def test_followsDnsChanges(self):
        """
        Requests go where the name resolves now, without a restart: the
        pooled connection to the old address is let go, and a failed
        lookup keeps the last good address.
        """
        a, b, port = self.origins()
        dnsServer = f"127.0.0.1:{self.dnsPort.getHost().port}"
        proxy = Proxy(
            {
                "mode": "reverse",
                "reverse": {
                    "dns": {"servers": [dnsServer], "min_ttl": 0.1, "max_ttl": 1},
                    "pools": {"app": {"backends": [f"http://backend.test:{port}"]}},
                    "routes": [{"prefix": "/", "pool": "app"}],
                },
            },
            # Requests before the first lookup fail here instead of asking the system.
            names={},
        )
        self.addCleanup(proxy.stop)
        resolver = [s for s in proxy.service.upstreams if isinstance(s, BackendResolver)][0]
        backend = resolver.backends[0]

        yield waitFor(lambda: backend.addresses == ("127.0.0.1",), "the first lookup")
        self.assertEqual([(yield self.fetch(proxy)), (yield self.fetch(proxy))], [b"a", b"a"])

        self.zone.records["backend.test"] = (["127.0.0.2"], 0)
        yield waitFor(lambda: backend.addresses == ("127.0.0.2",), "the change")
        self.assertEqual([(yield self.fetch(proxy)), (yield self.fetch(proxy))], [b"b", b"b"])
        self.assertEqual((a.requests, b.requests), (2, 2))

        del self.zone.records["backend.test"]
        queries = self.zone.queries
        yield waitFor(lambda: self.zone.queries >= queries + 4, "two failed lookups")
        self.assertEqual(backend.addresses, ("127.0.0.2",))
        self.assertEqual((yield self.fetch(proxy)), b"b")
