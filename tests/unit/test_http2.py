"""
HTTP/2 streams in memory, against a real h2 client: what happens when the
proxy answers before a request body has all arrived.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from dualproxy import http2

from .test_server import RecordingHandler, answerOK


class _Factory:
    hsts = None

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
        self.server = http2._H2Connection(self.factory.clock)
        self.server.requestFactory = http2._StreamRequest
        self.server.factory = self.factory
        self.server.site = None
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
