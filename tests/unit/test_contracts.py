"""
The contracts the exchange core passes around (dualproxy/interfaces.py)
are kept by what implements them: a missing or misnamed method fails here
rather than deep inside a relay.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from dualproxy.cache.stream import Background, Passthrough
from dualproxy.core.exchange import Exchange, ExchangeContext
from dualproxy.forward.proxy import ForwardHandler
from dualproxy.http.message import Headers, RequestHead
from dualproxy.interfaces import (
    IClientChannel,
    IClientConnection,
    IClientFactory,
    IExchangeHandler,
    IRequestBodySink,
    IResponseSink,
    IUpstreamListener,
)
from dualproxy.relay.relay import Relay
from dualproxy.reverse.proxy import PoolRelay, ReverseContext, ReverseHandler
from dualproxy.server.http1 import HTTPServerChannel, HTTPServerFactory
from dualproxy.server.http2 import HTTP2Stream, NegotiatedProtocol, NegotiatingFactory
from dualproxy.service.listeners import RedirectToHTTPS


class _Handler:
    newContext = ExchangeContext

    def connectionMade(self, channel):
        pass

    def connectionLost(self, channel):
        pass

    def handle(self, exchange):
        pass

    def exchangeDone(self, exchange):
        pass


def _channel() -> HTTPServerChannel:
    channel = HTTPServerChannel(_Handler(), Clock(), 60.0)
    channel.makeConnection(StringTransport())
    return channel


class ContractTests(SynchronousTestCase):
    def test_clientChannels(self):
        self.assertTrue(verifyObject(IClientChannel, _channel()))
        self.assertTrue(verifyClass(IClientChannel, HTTP2Stream))

    def test_clientConnectionsAndFactories(self):
        """
        What the service tree counts, drains and reloads, whatever the
        protocol.
        """
        self.assertTrue(verifyObject(IClientConnection, _channel()))
        self.assertTrue(verifyClass(IClientConnection, NegotiatedProtocol))
        for factory in (HTTPServerFactory, NegotiatingFactory):
            self.assertTrue(verifyObject(IClientFactory, factory(_Handler(), Clock(), 60.0)))

    def test_responseSinks(self):
        exchange = Exchange(_channel(), RequestHead(b"GET", b"/", b"HTTP/1.1", Headers()))
        self.assertTrue(verifyObject(IResponseSink, exchange))
        self.assertTrue(verifyObject(IResponseSink, Passthrough(exchange)))
        self.assertTrue(verifyObject(IResponseSink, Background(exchange.request, _Handler(), Clock())))

    def test_handlers(self):
        for handler in (ForwardHandler, ReverseHandler, RedirectToHTTPS):
            self.assertTrue(verifyClass(IExchangeHandler, handler))

    def test_relaysListenAndTakeBodies(self):
        for relay in (Relay, PoolRelay):
            self.assertTrue(verifyClass(IUpstreamListener, relay))
            self.assertTrue(verifyClass(IRequestBodySink, relay))

    def test_exchangeHasNoModeFields(self):
        """
        What a mode learns goes to the context its handler makes: the
        reverse proxy's backend is on its context, not on the exchange.
        """
        exchange = Exchange(_channel(), RequestHead(b"GET", b"/", b"HTTP/1.1", Headers()))
        for field in ("backend", "pool", "route", "cacheResult", "upstreamLatency"):
            self.assertFalse(hasattr(exchange, field), field)
        self.assertIsInstance(exchange.context, ExchangeContext)
        context = ReverseContext()
        self.assertEqual(context.backendName, "")
