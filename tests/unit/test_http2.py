"""
HTTP/2 streams in memory, against a real h2 client: what happens when the
proxy answers before a request body has all arrived.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from dualproxy.server import http2

from .test_server import RecordingHandler, answerOK, ok


class _Factory:
    hsts = None
    idleTimeout = 60.0
    writeTimeout = 5.0

    def __init__(self, maxBody: int):
        self.handler = RecordingHandler(answerOK)
        self.clock = Clock()
        self.maxBody = maxBody


class EarlyAnswerTests(SynchronousTestCase):
    def setUp(self):
        if not http2.available():
            raise SkipTest("the http2 extra (h2) is not installed")
        import h2.config
        import h2.connection

        self.factory = _Factory(maxBody=1000)
        self.server = http2.HTTP2Connection(self.factory)
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.client.initiate_connection()
        self.send()

    def send(self):
        self.server.dataReceived(self.client.data_to_send())
        for _ in range(10):
            self.factory.clock.advance(0)
        events = self.client.receive_data(self.transport.value())
        self.transport.clear()
        return events

    def request(self, stream: int, method: str, body: bytes = b"", length: int = 0):
        fields = [(":method", method), (":path", "/"), (":scheme", "https"), (":authority", "a")]
        if length:
            fields.append(("content-length", str(length)))
        self.client.send_headers(stream, fields, end_stream=not (body or length))
        if body:
            self.client.send_data(stream, body)
        return self.send()

    def statuses(self, events):
        import h2.events

        return [(event.stream_id, dict(event.headers)[b":status"]) for event in events
                if isinstance(event, h2.events.ResponseReceived)]

    def data(self, events) -> int:
        import h2.events

        return sum(len(event.data) for event in events if isinstance(event, h2.events.DataReceived))

    def test_bodyAfterTheAnswerIsDropped(self):
        """
        A 413 ends the stream while the client is still sending the body;
        what it sends after that, and a reset of the stream, leave the
        connection serving the next request.
        """
        import h2.events

        events = self.request(1, "POST", b"x" * 16000, length=50000)
        self.assertEqual(self.statuses(events), [(1, b"413")])
        self.assertIn(1, [event.stream_id for event in events if isinstance(event, h2.events.StreamEnded)])
        self.client.send_data(1, b"x" * 16000)
        self.send()
        self.client.send_data(1, b"x" * 16000)
        self.client.reset_stream(1)
        self.send()
        events = self.request(3, "GET")
        self.assertEqual(self.statuses(events), [(3, b"200")])
        self.assertFalse(self.transport.disconnecting)


class _Producer:
    paused = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        pass


class BackpressureTests(EarlyAnswerTests):
    """
    A client that stops reading pauses whatever produces a stream's
    response, however large the window it granted; it resumes with the
    client.
    """

    def test_pausedWithTheConnection(self):
        producer = _Producer()

        def answer(exchange):
            head, body = ok(b"x" * 100)
            exchange.writeHead(head)
            exchange.registerProducer(producer)
            exchange.write(body)

        self.factory.handler.answer = answer
        self.request(1, "GET")
        self.server.pauseProducing()
        self.assertTrue(producer.paused)
        self.server.resumeProducing()
        self.assertFalse(producer.paused)

    def test_stillPausedWhileTheWindowIsShut(self):
        """
        Resuming the connection does not resume a stream whose own
        flow-control window is used up, nor does the sending loop spin on
        it (here the test's clock would never come back); the client's
        WINDOW_UPDATE sends the rest and resumes the producer.
        """
        producer = _Producer()

        def answer(exchange):
            head, _ = ok(b"x" * 100000)
            exchange.writeHead(head)
            exchange.registerProducer(producer)
            exchange.write(b"x" * 70000)

        self.factory.handler.answer = answer
        received = self.data(self.request(1, "GET"))
        self.assertEqual(received, 65535)
        self.assertTrue(producer.paused)
        self.server.pauseProducing()
        self.server.resumeProducing()
        self.assertTrue(producer.paused)
        self.client.increment_flow_control_window(10000)
        self.client.increment_flow_control_window(10000, stream_id=1)
        received += self.data(self.send())
        self.assertEqual(received, 70000)
        self.assertFalse(producer.paused)



class HeadTests(SynchronousTestCase):
    """
    HTTP/2 fields to and from the HTTP/1.1-style heads the exchange core
    uses.
    """

    def test_pseudoFieldsAndCookies(self):
        head = http2.requestHead([(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/a?b"),
                                  (b":authority", b"www.test"), (b"cookie", b"a=1"), (b"accept", b"*/*"),
                                  (b"cookie", b"b=2")])
        self.assertEqual((head.method, head.target, head.version), (b"POST", b"/a?b", b"HTTP/2"))
        self.assertEqual(list(head.headers), [(b"host", b"www.test"), (b"accept", b"*/*"), (b"cookie", b"a=1; b=2")])

    def test_hostAgreeingWithAuthorityIsKeptOnce(self):
        head = http2.requestHead([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"a.test"),
                                  (b"host", b"a.test")])
        self.assertEqual(head.headers.getAll(b"host"), [b"a.test"])

    def test_connectRefused(self):
        with self.assertRaises(http2.Refusal) as caught:
            http2.requestHead([(b":method", b"CONNECT"), (b":authority", b"a.test:443")])
        self.assertEqual(caught.exception.status, 501)

    def test_responseFields(self):
        head, _ = ok(b"x")
        head.headers.add(b"Connection", b"keep-alive")
        head.headers.add(b"Keep-Alive", b"timeout=5")
        head.headers.add(b"X-Thing", b"1")
        self.assertEqual(http2.responseFields(head, b"max-age=60"),
                         [(b":status", b"200"), (b"content-length", b"1"), (b"x-thing", b"1"),
                          (b"strict-transport-security", b"max-age=60")])


class _PullProducer:
    """
    A pull producer like twisted.web's FileSender: a chunk each time it is
    asked, then the end of the response.
    """

    def __init__(self, exchange, chunks):
        self.exchange = exchange
        self.chunks = list(chunks)
        self.calls = 0

    def resumeProducing(self):
        self.calls += 1
        self.exchange.write(self.chunks.pop(0))
        if not self.chunks:
            self.exchange.channel.transport.unregisterProducer()
            self.exchange.finish()

    def stopProducing(self):
        self.stopped = True


class ConnectionTests(EarlyAnswerTests):
    """
    The connection's own behaviour: one write per batch, flow control of
    request bodies, pull producers, GOAWAY, timeouts and resets.
    """

    def events(self, kind):
        import h2.events

        return getattr(h2.events, kind)

    def test_smallResponseInOneWriteWithEndStream(self):
        """
        A whole small answer goes out as HEADERS and DATA carrying
        END_STREAM, in one write to the transport.
        """
        writes = []
        original = self.transport.write
        self.transport.write = lambda data: (writes.append(data), original(data))
        self.factory.handler.answer = lambda exchange: exchange.respond(*ok(b"hello"))
        events = self.request(1, "GET")
        self.assertEqual(len(writes), 1)
        data = [event for event in events if isinstance(event, self.events("DataReceived"))]
        self.assertEqual([event.data for event in data], [b"hello"])
        self.assertIsNotNone(data[0].stream_ended)

    def test_interimResponsesPassed(self):
        from dualproxy.http.message import ResponseHead

        def answer(exchange):
            exchange.writeInterim(ResponseHead(100, b"Continue"))
            answerOK(exchange)

        self.factory.handler.answer = answer
        events = self.request(1, "GET")
        interim = [dict(event.headers)[b":status"] for event in events
                   if isinstance(event, self.events("InformationalResponseReceived"))]
        self.assertEqual(interim, [b"100"])
        self.assertEqual(self.statuses(events), [(1, b"200")])

    def test_requestBodyReadAsTheExchangeTakesIt(self):
        """
        Until the exchange takes the body, what arrives is kept and its
        window is not given back; taking it reopens the window.
        """
        from .test_server import BodySink

        self.factory.handler.answer = None
        self.factory.maxBody = 0
        self.request(1, "POST", length=40000)
        for _ in range(4):
            self.client.send_data(1, b"x" * 10000)
        self.client.end_stream(1)
        self.send()
        self.assertEqual(self.client.local_flow_control_window(1), 65535 - 40000)
        exchange = self.factory.handler.exchanges[0]
        sink = BodySink()
        exchange.setBodySink(sink)
        self.send()
        self.assertEqual(b"".join(sink.data), b"x" * 40000)
        self.assertTrue(sink.ended)
        self.assertEqual(self.client.outbound_flow_control_window, 65535)

    def pulledAnswer(self, chunks: int) -> _PullProducer:
        """
        Ask for stream 1, answered by a pull producer of C{chunks} chunks of
        35000 bytes.
        """
        producers = []

        def answer(exchange):
            head, _ = ok(b"x" * (35000 * chunks))
            exchange.writeHead(head)
            producers.append(_PullProducer(exchange, [b"x" * 35000] * chunks))
            exchange.channel.transport.registerProducer(producers[0], False)

        self.factory.handler.answer = answer
        self.received = self.data(self.request(1, "GET"))
        return producers[0]

    def test_pullProducer(self):
        """
        A pull producer (twisted.web's static files) is asked for chunks
        until one does not fit the window; the end of the stream waits for
        the client's WINDOW_UPDATE to send the rest.
        """
        producer = self.pulledAnswer(2)
        self.assertEqual((self.received, producer.calls), (65535, 2))
        self.client.increment_flow_control_window(10000)
        self.client.increment_flow_control_window(10000, stream_id=1)
        events = self.send()
        self.assertEqual(self.received + self.data(events), 70000)
        self.assertIn(1, [event.stream_id for event in events if isinstance(event, self.events("StreamEnded"))])

    def test_pullProducerStoppedByAReset(self):
        producer = self.pulledAnswer(3)
        self.assertFalse(getattr(producer, "stopped", False))
        self.client.reset_stream(1)
        self.send()
        self.assertTrue(producer.stopped)
        self.assertTrue(self.factory.handler.exchanges[0].aborted)

    def test_clientGoAwayEndsOpenStreams(self):
        """
        h2 sends nothing after a client's GOAWAY: the open exchanges end
        (their upstreams stop) and the connection closes.
        """
        exchanges = []
        self.factory.handler.answer = exchanges.append
        self.request(1, "GET")
        self.client.close_connection()
        self.send()
        self.assertTrue(exchanges[0].aborted)
        self.assertTrue(self.transport.disconnecting)
        answerOK(exchanges[0])

    def test_idleConnectionClosedWithGoAway(self):
        self.request(1, "GET")
        self.factory.clock.advance(59)
        self.assertFalse(self.transport.disconnecting)
        self.factory.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        events = self.client.receive_data(self.transport.value())
        self.assertEqual([event.error_code for event in events
                          if isinstance(event, self.events("ConnectionTerminated"))], [0])
        self.factory.clock.advance(5)
        self.assertTrue(self.transport.disconnected)

    def test_streamWaitingForItsUpstreamIsNotIdle(self):
        self.factory.handler.answer = lambda exchange: None
        self.request(1, "GET")
        self.factory.clock.advance(300)
        self.assertFalse(self.transport.disconnecting)

    def test_stalledClientIsIdle(self):
        """
        A stream whose client reads nothing does not keep the connection.
        """
        self.factory.handler.answer = lambda exchange: None
        self.request(1, "GET")
        self.server.pauseProducing()
        self.factory.clock.advance(60)
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.factory.handler.exchanges[0].aborted)

    def test_resetFloodClosesTheConnection(self):
        import h2.errors

        self.factory.handler.answer = lambda exchange: None
        for stream in range(1, 2 * (http2.RESET_BURST + 1), 2):
            self.client.send_headers(stream, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                                              (":authority", "a")], end_stream=True)
            self.client.reset_stream(stream)
            if self.transport.disconnecting:
                break
            self.server.dataReceived(self.client.data_to_send())
        self.assertTrue(self.transport.disconnecting)
        events = self.client.receive_data(self.transport.value())
        self.assertIn(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                      [event.error_code for event in events if isinstance(event, self.events("ConnectionTerminated"))])

    def test_framesAfterAGoAwayIgnored(self):
        """
        A request in the same batch as the reset that used up the client's
        allowance is not handled: h2 would send nothing for it.
        """
        self.factory.handler.answer = lambda exchange: None
        self.server._resetTokens = 0
        self.client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "a")],
                                 end_stream=True)
        self.client.reset_stream(1)
        self.client.send_headers(3, [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":authority", "a")],
                                 end_stream=True)
        self.server.dataReceived(self.client.data_to_send())
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.factory.handler.exchanges), 1)

    def test_drainIdleClosesWithGoAway(self):
        self.request(1, "GET")
        self.server.drain()
        events = self.client.receive_data(self.transport.value())
        self.assertEqual([event.error_code for event in events
                          if isinstance(event, self.events("ConnectionTerminated"))], [0])
        self.assertTrue(self.transport.disconnecting)

    def test_drainWaitsForOpenStreams(self):
        """
        Draining, a connection answers its open streams, refuses new ones
        (REFUSED_STREAM: safe to retry), and sends its GOAWAY after the
        last answer.
        """
        import h2.errors

        exchanges = []
        self.factory.handler.answer = exchanges.append
        self.request(1, "GET")
        self.server.drain()
        events = self.request(3, "GET")
        self.assertEqual([(event.stream_id, event.error_code) for event in events
                          if isinstance(event, self.events("StreamReset"))],
                         [(3, h2.errors.ErrorCodes.REFUSED_STREAM)])
        self.assertEqual(len(exchanges), 1)
        self.assertFalse(self.transport.disconnecting)
        answerOK(exchanges[0])
        events = self.client.receive_data(self.transport.value())
        self.assertEqual(self.statuses(events), [(1, b"200")])
        self.assertIn(self.events("ConnectionTerminated"), [type(event) for event in events])
        self.assertTrue(self.transport.disconnecting)

    def test_lostWhileDrainingLeavesNoTimer(self):
        self.factory.handler.answer = lambda exchange: None
        self.request(1, "GET")
        self.server.drain()
        self.server.connectionLost(None)
        self.assertEqual(self.factory.clock.getDelayedCalls(), [])
        self.assertTrue(self.factory.handler.exchanges[0].aborted)

    def test_hostNamingAnotherAuthorityNeverHandled(self):
        self.client.config.validate_outbound_headers = False
        self.client.send_headers(1, [(":method", "GET"), (":path", "/x"), (":scheme", "https"), (":authority", "a.test"),
                                     ("host", "b.test")], end_stream=True)
        events = self.send()
        self.assertIn(self.events("ConnectionTerminated"), [type(event) for event in events])
        self.assertEqual(self.factory.handler.exchanges, [])

    def test_connectRefusedAndLoggedAsAsked(self):
        """
        CONNECT (which h2 before 4.4 refuses itself, for want of :path) is
        answered 501 and logged as asked, never handled.
        """
        self.client.config.validate_outbound_headers = False
        self.client.send_headers(1, [(":method", "CONNECT"), (":authority", "a.test:443")], end_stream=True)
        events = self.send()
        if self.statuses(events):
            self.assertEqual(self.statuses(events), [(1, b"501")])
            self.assertEqual([(exchange.request.method, exchange.request.target)
                              for exchange in self.factory.handler.done], [(b"CONNECT", b"a.test:443")])
        else:
            self.assertIn(self.events("ConnectionTerminated"), [type(event) for event in events])
        self.assertEqual(self.factory.handler.exchanges, [])

    def test_protocolErrorClosesWithGoAway(self):
        """
        What h2 finds malformed (here a Content-Length that is no number)
        closes the connection with the GOAWAY h2 queued.
        """
        self.client.send_headers(1, [(":method", "POST"), (":path", "/"), (":scheme", "https"), (":authority", "a"),
                                     ("content-length", "five")])
        events = self.send()
        self.assertEqual([event.error_code for event in events
                          if isinstance(event, self.events("ConnectionTerminated"))], [1])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.factory.handler.exchanges, [])

    def test_signedContentLengthNeverHandled(self):
        """
        A Content-Length of "+5" (which h2 before 4.4 lets through) is
        refused with 400 or a GOAWAY, never handed to the mode.
        """
        self.client.send_headers(1, [(":method", "POST"), (":path", "/"), (":scheme", "https"), (":authority", "a"),
                                     ("content-length", "+5")])
        events = self.send()
        refused = self.statuses(events) == [(1, b"400")]
        closed = any(isinstance(event, self.events("ConnectionTerminated")) for event in events)
        self.assertTrue(refused or closed, events)
        self.assertEqual(self.factory.handler.exchanges, [])
