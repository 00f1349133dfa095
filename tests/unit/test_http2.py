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
            raise SkipTest("the http2 extra (h2, priority) is not installed")
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

    def data(self, events) -> int:
        import h2.events

        return sum(len(event.data) for event in events if isinstance(event, h2.events.DataReceived))
