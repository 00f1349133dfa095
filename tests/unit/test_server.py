"""
The client-side HTTP/1.x connection, in memory: framing of responses,
keep-alive, pipelining, flow control and errors.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.core.exchange import ExchangeContext
from dualproxy.http.message import CHUNKED, CLOSE, LENGTH, NO_BODY, Headers, Refusal, ResponseHead
from dualproxy.server.http1 import HTTPServerChannel


class RecordingHandler:
    """
    A mode handler that records exchanges and lets the test answer them.
    """

    def __init__(self, answer=None):
        self.exchanges = []
        self.done = []
        self.answer = answer

    def connectionMade(self, channel):
        pass

    def connectionLost(self, channel):
        self.lost = True

    def handle(self, exchange):
        self.exchanges.append(exchange)
        if self.answer is not None:
            self.answer(exchange)

    newContext = ExchangeContext

    def exchangeDone(self, exchange):
        self.done.append(exchange)


class BodySink:
    def __init__(self):
        self.data = []
        self.ended = False

    def bodyReceived(self, data):
        self.data.append(data)

    def bodyEnded(self):
        self.ended = True


def ok(body=b"hello", framing=LENGTH):
    headers = Headers([(b"Content-Length", b"%d" % len(body))] if framing == LENGTH else [])
    return ResponseHead(200, b"OK", headers, framing=framing, length=len(body)), body


def answerOK(exchange):
    head, body = ok()
    exchange.writeHead(head)
    exchange.write(body)
    exchange.finish()


def connect(handler, idle=60.0):
    clock = Clock()
    channel = HTTPServerChannel(handler, clock, idle)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, clock


class ResponseFramingTests(SynchronousTestCase):
    def test_lengthKeptForHTTP11(self):
        handler = RecordingHandler(answerOK)
        channel, transport, _ = connect(handler)
        channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(
            transport.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        )
        self.assertFalse(transport.disconnecting)

    def test_chunkedForUnknownLengthOnHTTP11(self):
        """
        RFC 9112 section 7.1: a body of unknown length is chunked to an
        HTTP/1.1 client so the connection survives.
        """

        def answer(exchange):
            head, _ = ok(framing=CLOSE)
            exchange.writeHead(head)
            exchange.write(b"abc")
            exchange.write(b"")
            exchange.write(b"de")
            exchange.finish()

        channel, transport, _ = connect(RecordingHandler(answer))
        channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(
            transport.value(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        self.assertFalse(transport.disconnecting)

    def test_closeDelimitedForHTTP10(self):
        """
        RFC 9112 section 6.3: an HTTP/1.0 client cannot read chunked, so the
        end of the body is the end of the connection.
        """

        def answer(exchange):
            head, _ = ok(framing=CHUNKED)
            exchange.writeHead(head)
            exchange.write(b"abc")
            exchange.finish()

        channel, transport, _ = connect(RecordingHandler(answer))
        channel.dataReceived(b"GET http://a/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc")
        self.assertTrue(transport.disconnecting)

    def test_http10KeepAlive(self):
        channel, transport, _ = connect(RecordingHandler(answerOK))
        channel.dataReceived(b"GET http://a/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.assertIn(b"Connection: keep-alive\r\n", transport.value())
        self.assertFalse(transport.disconnecting)

    def test_http10WithoutKeepAliveCloses(self):
        channel, transport, _ = connect(RecordingHandler(answerOK))
        channel.dataReceived(b"GET http://a/ HTTP/1.0\r\n\r\n")
        self.assertIn(b"Connection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_headHasNoBody(self):
        channel, transport, _ = connect(RecordingHandler(answerOK))
        channel.dataReceived(b"HEAD http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")

    def test_noBodyStatus(self):
        def answer(exchange):
            exchange.writeHead(ResponseHead(304, b"Not Modified", framing=NO_BODY))
            exchange.finish()

        channel, transport, _ = connect(RecordingHandler(answer))
        channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(transport.value(), b"HTTP/1.1 304 Not Modified\r\n\r\n")
        self.assertFalse(transport.disconnecting)


class PipeliningTests(SynchronousTestCase):
    def test_pipelinedRequestsAnsweredInOrder(self):
        """
        RFC 9112 section 9.3.2: the second request is not handled until the
        first is answered.
        """
        handler = RecordingHandler()
        channel, transport, _ = connect(handler)
        channel.dataReceived(
            b"GET http://a/1 HTTP/1.1\r\nHost: a\r\n\r\nGET http://a/2 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual([e.request.target for e in handler.exchanges], [b"http://a/1"])
        self.assertEqual(transport.producerState, "paused")
        answerOK(handler.exchanges[0])
        self.assertEqual(
            [e.request.target for e in handler.exchanges], [b"http://a/1", b"http://a/2"]
        )
        self.assertEqual(transport.producerState, "producing")


class RequestBodyTests(SynchronousTestCase):
    def test_bodyHeldUntilSinkAttached(self):
        """
        Body bytes that arrive before the handler has somewhere to put them
        are kept, and reading pauses meanwhile: nothing is lost, nothing
        piles up unbounded.
        """
        handler = RecordingHandler()
        channel, transport, _ = connect(handler)
        channel.dataReceived(b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc")
        self.assertEqual(transport.producerState, "paused")
        channel.dataReceived(b"def")
        sink = BodySink()
        handler.exchanges[0].setBodySink(sink)
        self.assertEqual(b"".join(sink.data), b"abcdef")
        self.assertTrue(sink.ended)
        self.assertEqual(transport.producerState, "producing")

    def test_unwantedBodyDrainedConnectionReused(self):
        """
        A request refused before its body was read: the body is read and
        dropped so the next request on the connection is understood.
        """

        def answer(exchange):
            if exchange.request.method == b"POST":
                raise Refusal(403, "no")
            answerOK(exchange)

        handler = RecordingHandler(answer)
        channel, transport, _ = connect(handler)
        channel.dataReceived(b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 Forbidden\r\n"))
        channel.dataReceived(b"xyzGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(handler.exchanges), 2)
        self.assertTrue(transport.value().endswith(b"hello"))


class ErrorTests(SynchronousTestCase):
    def test_malformedRequestGets400AndClose(self):
        channel, transport, _ = connect(RecordingHandler())
        channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
        value = transport.value()
        self.assertTrue(value.startswith(b"HTTP/1.1 400 Bad Request\r\n"), value)
        self.assertIn(b"malformed header field\n", value)
        self.assertIn(b'Proxy-Status: dualproxy; error=http_request_error; details="malformed header field"', value)
        self.assertNotIn(b"Traceback", value)
        self.assertTrue(transport.disconnecting)

    def test_refusalNamesTheCause(self):
        def answer(exchange):
            raise Refusal(403, "destination example.com is denied")

        channel, transport, _ = connect(RecordingHandler(answer))
        channel.dataReceived(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(
            transport.value(),
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 34\r\n"
            b'Proxy-Status: dualproxy; error=http_request_denied; details="destination example.com is denied"\r\n'
            b"\r\ndestination example.com is denied\n",
        )

    def test_refusalNamesItsErrorType(self):
        """
        RFC 9209: a refusal that knows its cause names it in Proxy-Status,
        and the exchange keeps it for the access log.
        """

        def answer(exchange):
            raise Refusal(403, "destination 10.0.0.1 is a private address", errorType="destination_ip_prohibited")

        handler = RecordingHandler(answer)
        channel, transport, _ = connect(handler)
        channel.dataReceived(b"GET http://10.0.0.1/ HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n")
        self.assertIn(
            b'\r\nProxy-Status: dualproxy; error=destination_ip_prohibited; '
            b'details="destination 10.0.0.1 is a private address"\r\n',
            transport.value(),
        )
        self.assertEqual(handler.done[0].errorType, "destination_ip_prohibited")

    def test_errorTypeNotedBeforeRefusing(self):
        """
        Whoever passes a refusal on with status and reason only (a cache)
        leaves the type noted on the exchange in place.
        """
        handler = RecordingHandler()
        channel, transport, _ = connect(handler)
        channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        exchange = handler.exchanges[0]
        exchange.errorType = "connection_refused"
        exchange.refuse(502, "origin a:80 refused the connection")
        self.assertIn(b"\r\nProxy-Status: dualproxy; error=connection_refused; details=", transport.value())

    def test_noErrorTypeNoField(self):
        """
        An answer that is no error (a redirect), or an error no type fits
        (a 504 for only-if-cached), carries no Proxy-Status.
        """
        for status in (308, 504):
            handler = RecordingHandler(lambda exchange: exchange.refuse(status, "no error type fits"))
            channel, transport, _ = connect(handler)
            channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 %d " % status))
            self.assertNotIn(b"Proxy-Status", transport.value())
            self.assertIsNone(handler.done[0].errorType)

    def test_refuseAfterResponseStartedAborts(self):
        """
        Once part of a response went out, an error cannot be reported in
        band; the connection is cut so the client sees it is incomplete.
        """
        handler = RecordingHandler()
        channel, transport, _ = connect(handler)
        channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        exchange = handler.exchanges[0]
        head, _ = ok(b"0123456789")
        exchange.writeHead(head)
        exchange.write(b"01234")
        exchange.refuse(502, "upstream closed the connection early", errorType="http_response_incomplete")
        self.assertNotIn(b"502", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(handler.done, [exchange])
        self.assertEqual(exchange.errorType, "http_response_incomplete")


class TimeoutTests(SynchronousTestCase):
    def test_idleConnectionClosed(self):
        channel, transport, clock = connect(RecordingHandler(answerOK), idle=10)
        channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        clock.advance(9)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_activityPostponesIdleClose(self):
        channel, transport, clock = connect(RecordingHandler(answerOK), idle=10)
        clock.advance(6)
        channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        clock.advance(6)
        self.assertFalse(transport.disconnecting)
        clock.advance(4)
        self.assertTrue(transport.disconnecting)

    def test_requestInProgressNotIdle(self):
        handler = RecordingHandler()
        channel, transport, clock = connect(handler, idle=10)
        channel.dataReceived(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        clock.advance(100)
        self.assertFalse(transport.disconnecting)


class _ShortSocket:
    """
    A socket that takes at most C{room} bytes per send, or fails.
    """

    def __init__(self, room, error=None):
        self.room = room
        self.error = error
        self.sent = []

    def send(self, data):
        if self.error is not None:
            raise self.error
        self.sent.append(bytes(data[:self.room]))
        return min(len(data), self.room)


class _SocketTransport(FileDescriptor):
    """
    Just enough of a TCP transport to check the direct write path.
    """

    def __init__(self, sock):
        super().__init__(reactor=Clock())
        self.socket = sock
        self.connected = 1
        self.written = []

    def getPeer(self):
        return IPv4Address("TCP", "127.0.0.1", 1)

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 2)

    def startWriting(self):
        pass

    def stopWriting(self):
        pass

    def write(self, data):
        self.written.append(data)
        super().write(data)


class WriteThroughTests(SynchronousTestCase):
    """
    A whole small response goes straight to the socket when nothing waits
    in the transport's buffer, and whatever the socket does not take goes
    through the transport, in order.
    """

    def answer(self, sock, queued=b""):
        def respond(exchange):
            head, body = ok(b"body")
            exchange.respond(head, body)

        channel = HTTPServerChannel(RecordingHandler(respond), Clock(), 60.0)
        transport = _SocketTransport(sock)
        channel.makeConnection(transport)
        if queued:
            transport.write(queued)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        return transport

    def test_sentDirectly(self):
        sock = _ShortSocket(1 << 16)
        transport = self.answer(sock)
        self.assertEqual(b"".join(sock.sent), b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
        self.assertEqual(transport.written, [])

    def test_restQueued(self):
        sock = _ShortSocket(10)
        transport = self.answer(sock)
        self.assertEqual(sock.sent[0] + b"".join(transport.written),
                         b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")

    def test_queuedDataKeepsItsPlace(self):
        sock = _ShortSocket(1 << 16)
        transport = self.answer(sock, queued=b"earlier")
        self.assertEqual(sock.sent, [])
        self.assertEqual(transport.written[0], b"earlier")
        self.assertTrue(transport.written[1].endswith(b"body"))

    def test_brokenSocketLeftToTheTransport(self):
        transport = self.answer(_ShortSocket(0, ConnectionResetError()))
        self.assertEqual(len(transport.written), 1)


class HandlerFailureTests(SynchronousTestCase):
    def test_bugAnswers500AndKeepsTheConnection(self):
        """
        An exception in a handler is logged and answered with 500 and a
        Proxy-Status; the connection goes on serving.
        """
        calls = []

        def answer(exchange):
            calls.append(exchange)
            if len(calls) == 1:
                raise ZeroDivisionError()
            answerOK(exchange)

        channel, transport, clock = connect(RecordingHandler(answer))
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        output = transport.value()
        self.assertTrue(output.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"))
        self.assertIn(b"Proxy-Status: dualproxy; error=proxy_internal_error", output)
        self.assertNotIn(b"ZeroDivisionError", output)
        self.assertIn(b"HTTP/1.1 200 OK", output)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class HeadTimeoutTests(SynchronousTestCase):
    def test_tricklingHeadGets408(self):
        """
        A client trickling a request head a byte at a time (slowloris) keeps
        the connection busy, but not past the head timeout: 408 and close.
        """
        handler = RecordingHandler(answerOK)
        channel, transport, clock = connect(handler)
        channel.headTimeout = 5.0
        for byte in b"GET / HTTP/1.1\r\nHost: a.example\r\n":
            channel.dataReceived(bytes([byte]))
            clock.advance(0.2)
            if transport.disconnecting:
                break
        self.assertTrue(transport.disconnecting, "cut before the head was complete")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n"))
        self.assertIn(b"Proxy-Status: dualproxy; error=http_request_error", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(handler.exchanges, [])

    def test_headsInTimeServed(self):
        handler = RecordingHandler(answerOK)
        channel, transport, clock = connect(handler)
        channel.headTimeout = 5.0
        for _ in range(3):
            channel.dataReceived(b"GET / HTTP/1.1\r\n")
            clock.advance(4)
            channel.dataReceived(b"Host: a\r\n\r\n")
            clock.advance(4)
        self.assertEqual(len(handler.exchanges), 3)
        self.assertFalse(transport.disconnecting)


def elapse(clock, seconds, step=0.5):
    """
    Let time pass as it does, not in one jump: timers fire when they are due.
    """
    clock.pump([step] * int(seconds / step) + [seconds % step])


def expectBody(onAbort):
    """
    A handler's answer that takes the request body and notes when the
    connection gives up on the request.
    """
    def answer(exchange):
        exchange.onAbort = lambda: onAbort.append(exchange)
        exchange.setBodySink(BodySink())

    return answer


class BodyTimeoutTests(SynchronousTestCase):
    """
    A client that stops sending a request body is given C{bodyTimeout}
    seconds of silence, counted only while the proxy wants to read.
    """

    head = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"

    def start(self):
        self.aborted = []
        handler = RecordingHandler(expectBody(self.aborted))
        channel, transport, clock = connect(handler)
        channel.bodyTimeout = 5.0
        channel.dataReceived(self.head + b"abc")
        return handler, channel, transport, clock

    def test_stalledBodyGets408(self):
        handler, channel, transport, clock = self.start()
        elapse(clock, 4.9)
        self.assertFalse(transport.disconnecting)
        elapse(clock, 0.1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n"))
        self.assertIn(b"the request body stopped arriving for 5 s", transport.value())
        self.assertIn(b"Connection: close", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.aborted, handler.exchanges, "the upstream request is not cut")

    def test_tricklingBodyServed(self):
        handler, channel, transport, clock = self.start()
        for byte in b"defghij":
            elapse(clock, 4)
            channel.dataReceived(bytes([byte]))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(handler.exchanges[0]._sink.ended)

    def test_silenceWhileNotReadingDoesNotCount(self):
        """
        While the upstream cannot take more of the body the proxy stops
        reading, and the client's silence is its own doing.
        """
        handler, channel, transport, clock = self.start()
        throttle = handler.exchanges[0].throttle()
        throttle.pauseProducing()
        elapse(clock, 100)
        self.assertFalse(transport.disconnecting)
        throttle.resumeProducing()
        elapse(clock, 4.9)
        self.assertFalse(transport.disconnecting)
        elapse(clock, 0.1)
        self.assertTrue(transport.disconnecting)

    def test_responseUnderWayIsCut(self):
        """
        Once a response has begun only cutting the connection tells the
        client its request failed.
        """
        handler, channel, transport, clock = self.start()
        head, _ = ok(b"0123456789")
        handler.exchanges[0].writeHead(head)
        elapse(clock, 5)
        self.assertTrue(transport.disconnected, "not aborted")
        self.assertNotIn(b"408", transport.value())
        self.assertEqual(self.aborted, handler.exchanges)


class _StalledTransport(_SocketTransport):
    """
    A socket transport whose client reads only when the test says so.
    """

    aborted = False

    def writeSomeData(self, data):
        return self.socket.send(data)

    def abortConnection(self):
        self.aborted = True


class WriteTimeoutTests(SynchronousTestCase):
    """
    A client that leaves a response unread is cut after C{writeTimeout}
    seconds without progress; one that reads slowly is not.
    """

    def start(self, answer):
        sock = _ShortSocket(0)
        transport = _StalledTransport(sock)
        clock = Clock()
        channel = HTTPServerChannel(RecordingHandler(answer), clock, 60.0)
        channel.writeTimeout = 8.0
        channel.makeConnection(transport)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.channel = channel
        return sock, transport, clock

    def streaming(self, exchange):
        head, _ = ok(b"x" * 1000000)
        exchange.writeHead(head)
        exchange.write(b"x" * 100000)

    def test_unreadResponseCut(self):
        sock, transport, clock = self.start(self.streaming)
        elapse(clock, 8)
        self.assertFalse(transport.aborted)
        elapse(clock, 8)
        self.assertTrue(transport.aborted)

    def test_slowReaderKept(self):
        sock, transport, clock = self.start(self.streaming)
        sock.room = 100
        for _ in range(40):
            elapse(clock, 3)
            transport.doWrite()
        self.assertFalse(transport.aborted)
        sock.room = 0
        elapse(clock, 20)
        self.assertTrue(transport.aborted)

    def test_unreadSmallResponseCut(self):
        """
        A whole response left in the buffer by a client that never reads
        does not keep the connection either.
        """
        def respond(exchange):
            head, body = ok(b"body")
            exchange.respond(head, body)

        sock, transport, clock = self.start(respond)
        self.assertTrue(transport.dataBuffer or transport._tempDataBuffer)
        elapse(clock, 8)
        self.assertFalse(transport.aborted)
        elapse(clock, 4)
        self.assertTrue(transport.aborted)

    def test_undeliveredAnswerKeepsTheConnectionBusy(self):
        """
        A drain waits for answers still in the buffer: stopping before they
        reach the client would lose them.
        """
        def respond(exchange):
            head, body = ok(b"body")
            exchange.respond(head, body)

        sock, transport, clock = self.start(respond)
        channel = self.channel
        self.assertTrue(channel.current is None or channel.current.finished)
        self.assertTrue(channel.busy())
        sock.room = 1 << 16
        transport.doWrite()
        self.assertFalse(channel.busy())
