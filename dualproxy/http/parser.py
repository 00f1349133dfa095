"""
A sans-IO HTTP/1.x message reader (RFC 9112).

Bytes go in through L{MessageReader.feed}; heads, body data and message ends
come out as calls on a sink.  It never touches a socket, so every framing rule
is tested directly.  It is strict where leniency lets two parsers disagree on
where a message ends (request smuggling): conflicting lengths, unknown
transfer codings, obs-fold and malformed chunks are errors, never guesses.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

from .message import (
    CHUNKED,
    CLOSE,
    LENGTH,
    NO_BODY,
    Headers,
    Refusal,
    RequestHead,
    ResponseHead,
)
from .proxystatus import (
    HTTP_PROTOCOL_ERROR,
    HTTP_RESPONSE_HEADER_SECTION_SIZE,
    HTTP_RESPONSE_HEADER_SIZE,
    HTTP_RESPONSE_INCOMPLETE,
    HTTP_RESPONSE_TRANSFER_CODING,
)

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) (HTTP/[0-9]\.[0-9])\Z")
# No status starts with 0 (RFC 9110 section 15): "099" relayed as 99 would
# not be a status line at all.
_STATUS_LINE = re.compile(rb"(HTTP/[0-9]\.[0-9]) ([1-9][0-9]{2})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?\Z")
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(.*?)[ \t]*\Z", re.S)
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_FIELD_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]*"
# A whole field line, from a line's start to its newline: a block whose
# lines all match is well formed.  The value ends in a visible byte, so no
# lazy repeat has to try the trailing whitespace at every position.
_FIELD_LINE = re.compile(
    rb"^(" + _TOKEN + rb"):[ \t]*((?:" + _FIELD_VALUE + rb"[^\x00-\x20\x7f])?)[ \t]*\r?\n", re.M)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;.*)?\Z", re.S)


def _malformedStatusLine() -> Refusal:
    return Refusal(502, "malformed status line from upstream", errorType=HTTP_PROTOCOL_ERROR)


class Limits:
    """
    Bounds on what a peer may make the reader hold in memory.
    """

    __slots__ = ("maxHead", "maxLine", "maxFields")

    def __init__(self, maxHead: int = 65536, maxLine: int = 8192, maxFields: int = 100):
        self.maxHead = maxHead
        self.maxLine = maxLine
        self.maxFields = maxFields


DEFAULT_LIMITS = Limits()

#: Interim (1xx) responses one request may get before its final one: a few
#: are normal (100 Continue, 102 Processing, 103 Early Hints); an endless run
#: would keep the exchange alive for ever.
MAX_INTERIM = 16


def _headEnd(data: bytes) -> Optional[Tuple[int, int]]:
    """
    Where the first empty line ends a head: its start and end, or None.
    CRLF heads are found by a plain search; a bare LF before the first
    CRLF CRLF sends the search to the regular expression.
    """
    crlf = data.find(b"\r\n\r\n")
    if crlf >= 0 and data.find(b"\n\n", 0, crlf + 2) < 0 and data.find(b"\n\r\n", 0, crlf + 3) < 0:
        return crlf, crlf + 4
    end = _HEAD_END.search(data)
    return None if end is None else end.span()


class MessageReader:
    """
    Reads a sequence of requests (C{isRequest}) or responses from one stream.

    The sink gets C{headReceived(head)}, C{bodyReceived(data)} and
    C{messageEnded()}.  A response reader must be told the method of the
    request each response answers (L{expectResponse}): HEAD responses have no
    body whatever their headers say.

    Malformed input raises L{Refusal} with the status the server should send
    (400, 414, 431, 501, 505); the reader is then unusable.
    """

    def __init__(self, sink, isRequest: bool, limits: Limits = DEFAULT_LIMITS):
        self.sink = sink
        self.isRequest = isRequest
        self.limits = limits
        self._buffer = b""
        self._state = self._readHead
        self._remaining = 0
        self._method: Optional[bytes] = None
        self._interim = 0
        self.paused = False

    def expectResponse(self, method: bytes) -> None:
        self._method = method
        self._interim = 0

    @property
    def idle(self) -> bool:
        """
        True between messages with nothing buffered.
        """
        return self._state == self._readHead and not self._buffer

    @property
    def buffered(self) -> bytes:
        return self._buffer

    def drain(self) -> bytes:
        """
        Take the unparsed bytes: they are no longer HTTP (a tunnel's).
        """
        data, self._buffer = self._buffer, b""
        return data

    @property
    def bodyRemaining(self) -> int:
        """
        Bytes of a Content-Length body still to come (0 outside one).
        """
        return self._remaining if self._state == self._readLength else 0

    def bodyConsumed(self) -> None:
        """
        The rest of the current Content-Length body was moved by someone else
        (spliced from socket to socket): the message is over.
        """
        self._remaining = 0
        self._state = self._readHead
        self.sink.messageEnded()

    def feed(self, data: bytes) -> None:
        """
        Consume C{data}; stops early (keeping the rest buffered) if the sink
        sets L{paused}, e.g. to hold a pipelined request until the current
        one is answered.
        """
        if self._buffer:
            # Consumed from here on: a sink looking at buffered() during a
            # callback must not see bytes already parsed.
            data, self._buffer = self._buffer + data, b""
        while data and not self.paused:
            rest = self._state(data)
            if rest is None:
                break
            data = rest
        self._buffer = data

    def resume(self) -> None:
        self.paused = False
        self.feed(b"")

    def connectionLost(self) -> None:
        """
        The stream ended: finish a close-delimited body, or complain that a
        message was cut short.
        """
        if self._state == self._readClose:
            self._state = self._readHead
            self.sink.messageEnded()
        elif self._state != self._readHead or self._buffer.strip():
            raise self._refusal(400, "message truncated", HTTP_RESPONSE_INCOMPLETE)

    # States: each takes the unconsumed bytes and returns what it left, or
    # None when it needs more bytes before it can consume any.

    def _readHead(self, data: bytes) -> bytes:
        if self.isRequest and data[:1] in (b"\r", b"\n"):
            # RFC 9112 section 2.2: ignore empty lines before a request-line.
            data = data.lstrip(b"\r\n")
            if not data:
                return b""
        end = _headEnd(data)
        if end is None:
            if not self.isRequest:
                self._checkStatusLineStart(data)
            # The last bytes may begin the end of the head ("\r\n\r") or of
            # the start line ("\r"): they are not counted yet.  A start line
            # already too long is refused at once, whole or not, so that the
            # verdict does not depend on where a segment ended.
            if len(data) - 3 > self.limits.maxHead:
                self._tooLarge(data)
            newline = data.find(b"\n")
            if newline < 0:
                newline = len(data)
            if newline - (data[newline - 1:newline] == b"\r") > self.limits.maxLine:
                raise self._startLineTooLong()
            return None
        start, stop = end
        if start > self.limits.maxHead:
            self._tooLarge(data)
        head = data[:start]
        rest = data[stop:]
        if self.isRequest:
            self._dispatchRequest(head)
        else:
            self._dispatchResponse(head)
        return rest

    def _checkStatusLineStart(self, data: bytes) -> None:
        """
        Judge a response head still arriving by its first bytes: an upstream
        that does not speak HTTP (another service's banner, a TLS alert) is
        refused at once rather than waited on until it times out.
        """
        newline = data.find(b"\n")
        if newline < 0:
            valid = b"HTTP/".startswith(data[:5])
        else:
            first = data[:newline]
            valid = _STATUS_LINE.match(first[:-1] if first[-1:] == b"\r" else first) is not None
        if not valid:
            raise _malformedStatusLine()

    def _tooLarge(self, data: bytes) -> None:
        first = data.split(b"\n", 1)[0]
        if len(first) > self.limits.maxLine:
            raise self._startLineTooLong()
        raise self._refusal(431, "header section too large", HTTP_RESPONSE_HEADER_SECTION_SIZE)

    def _startLineTooLong(self) -> Refusal:
        """
        Named for what it is: a request line, or an upstream's status line.
        """
        if self.isRequest:
            return Refusal(414, "request line too long")
        return Refusal(502, "status line too long", errorType=HTTP_RESPONSE_HEADER_SECTION_SIZE)

    def _refusal(self, requestStatus: int, reason: str, responseType: str = HTTP_PROTOCOL_ERROR) -> Refusal:
        """
        The same defect is a client's bad request, or an upstream's bad
        response: a 502 with the RFC 9209 type that names the defect.
        """
        if self.isRequest:
            return Refusal(requestStatus, reason)
        return Refusal(502, reason, errorType=responseType)

    def _parseFields(self, block: bytes) -> Headers:
        """
        Parse the field lines of a head (each ending in a newline).  The
        common well-formed case is checked and split by one regular
        expression pass; only a malformed block is walked line by line, to
        say what is wrong with it.
        """
        limits = self.limits
        items = _FIELD_LINE.findall(block)
        if len(items) != block.count(b"\n"):
            self._fieldError(block)
        if len(block) > limits.maxLine and any(
            len(line) > limits.maxLine for line in block.split(b"\n")
        ):
            raise self._refusal(431, "header field too large", HTTP_RESPONSE_HEADER_SIZE)
        if len(items) > limits.maxFields:
            raise self._refusal(431, "too many header fields", HTTP_RESPONSE_HEADER_SECTION_SIZE)
        return Headers(items)

    def _fieldError(self, block: bytes) -> None:
        for line in block.split(b"\n")[:-1]:
            if line[-1:] == b"\r":
                line = line[:-1]
            if line[:1] in (b" ", b"\t"):
                raise self._refusal(400, "obsolete line folding in header field")
            match = _FIELD.match(line)
            if match is None:
                raise self._refusal(400, "malformed header field")
            if _BAD_VALUE.search(match.group(2)):
                raise self._refusal(400, "control character in header field")
        raise self._refusal(400, "malformed header section")

    def _splitHead(self, head: bytes):
        newline = head.find(b"\n")
        if newline < 0:
            first, block = head, b""
        else:
            first, block = head[:newline], head[newline + 1:] + b"\n"
        if first[-1:] == b"\r":
            first = first[:-1]
        if len(first) > self.limits.maxLine:
            raise self._startLineTooLong()
        return first, self._parseFields(block)

    def _dispatchRequest(self, head: bytes) -> None:
        first, headers = self._splitHead(head)
        match = _REQUEST_LINE.match(first)
        if match is None:
            raise Refusal(400, "malformed request line")
        method, target, version = match.groups()
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise Refusal(505, "HTTP version not supported")
        request = RequestHead(method, target, version, headers)
        hosts = headers.getAll(b"host")
        if len(hosts) > 1:
            raise Refusal(400, "more than one Host header field")
        if version == b"HTTP/1.1" and not hosts:
            raise Refusal(400, "missing Host header field")
        self._frame(request, headers)
        self.sink.headReceived(request)
        self._afterHead(request)

    def _dispatchResponse(self, head: bytes) -> None:
        first, headers = self._splitHead(head)
        match = _STATUS_LINE.match(first)
        if match is None:
            raise _malformedStatusLine()
        version, status, reason = match.groups()
        response = ResponseHead(int(status), reason or b"", headers, version)
        status = response.status
        if 100 <= status < 200:
            response.framing = NO_BODY
            if status != 101:
                # Interim response: the final one is still to come.
                self._interim += 1
                if self._interim > MAX_INTERIM:
                    raise self._refusal(400, f"more than {MAX_INTERIM} interim responses")
                self.sink.headReceived(response)
                return
        elif self._method == b"HEAD" or status in (204, 304):
            response.framing = NO_BODY
        elif self._method == b"CONNECT" and 200 <= status < 300:
            # RFC 9112 section 6.3: the connection is a tunnel from here.
            response.framing = NO_BODY
            status = 101
        else:
            self._frame(response, headers)
        self.sink.headReceived(response)
        if status == 101:
            self._state = self._readUpgraded
            return
        self._afterHead(response)

    def _frame(self, message, headers: Headers) -> None:
        """
        Decide how the body is delimited (RFC 9112 section 6.3).
        """
        codings = headers.tokens(b"transfer-encoding")
        lengths = headers.getAll(b"content-length")
        if codings:
            if lengths:
                raise self._refusal(400, "both Transfer-Encoding and Content-Length")
            if codings != [b"chunked"]:
                # The relay decodes chunked and nothing else: another coding
                # would reach the client undeclared once Transfer-Encoding
                # (hop-by-hop) is dropped.
                if self.isRequest:
                    misused = b"chunked" in codings and (
                        codings[-1] != b"chunked" or codings.count(b"chunked") > 1)
                    raise Refusal(400 if misused else 501, "unsupported Transfer-Encoding")
                raise Refusal(502, "unsupported Transfer-Encoding from upstream",
                              errorType=HTTP_RESPONSE_TRANSFER_CODING)
            if self.isRequest and message.version == b"HTTP/1.0":
                raise Refusal(400, "Transfer-Encoding in an HTTP/1.0 request")
            message.framing = CHUNKED
            return
        if lengths:
            if len(lengths) == 1 and lengths[0].isdigit():
                value = lengths[0]
            else:
                values = {v.strip() for value in lengths for v in value.split(b",")}
                if len(values) != 1:
                    raise self._refusal(400, "conflicting Content-Length values")
                value = values.pop()
            if not value.isdigit() or len(value) > 18:
                raise self._refusal(400, "invalid Content-Length")
            message.length = int(value)
            message.framing = LENGTH if message.length else NO_BODY
            return
        message.framing = NO_BODY if self.isRequest else CLOSE

    def _afterHead(self, message) -> None:
        framing = message.framing
        if framing == NO_BODY:
            self.sink.messageEnded()
        elif framing == LENGTH:
            self._remaining = message.length
            self._state = self._readLength
        elif framing == CHUNKED:
            self._state = self._readChunkSize
        else:
            self._state = self._readClose

    def _readLength(self, data: bytes) -> bytes:
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            self.sink.bodyReceived(data)
            return b""
        self._state = self._readHead
        self.sink.bodyReceived(data[:remaining])
        self.sink.messageEnded()
        return data[remaining:]

    def _readClose(self, data: bytes) -> bytes:
        self.sink.bodyReceived(data)
        return b""

    def _readUpgraded(self, data: bytes) -> None:
        # After a 101, or a 2xx to CONNECT, the bytes belong to another
        # protocol: they stay in the buffer for whoever takes over.
        return None

    def _line(self, data: bytes):
        """
        A chunk or trailer line, held to the line limit whether it came
        whole or in pieces (a last "\r" may end it: it does not count yet).
        """
        end = data.find(b"\n")
        if end < 0:
            if len(data) - 1 > self.limits.maxLine:
                raise self._refusal(400, "chunk line too long")
            return None, None
        line = data[:end]
        if line[-1:] == b"\r":
            line = line[:-1]
        if len(line) > self.limits.maxLine:
            raise self._refusal(400, "chunk line too long")
        return line, data[end + 1:]

    def _readChunkSize(self, data: bytes) -> bytes:
        line, rest = self._line(data)
        if line is None:
            return None
        match = _CHUNK_SIZE.match(line)
        if match is None or b"\r" in line or b"\n" in line:
            raise self._refusal(400, "malformed chunk size")
        size = int(match.group(1), 16)
        if size == 0:
            self._state = self._readTrailer
        else:
            self._remaining = size
            self._state = self._readChunkData
        return rest

    def _readChunkData(self, data: bytes) -> bytes:
        remaining = self._remaining
        if len(data) <= remaining:
            self._remaining = remaining - len(data)
            self.sink.bodyReceived(data)
            if self._remaining == 0:
                self._state = self._readChunkEnd
            return b""
        self.sink.bodyReceived(data[:remaining])
        self._state = self._readChunkEnd
        return data[remaining:]

    def _readChunkEnd(self, data: bytes) -> bytes:
        # Unlike a line, chunk data ends in CRLF and nothing else (RFC 9112
        # section 7.1): a bare LF here is how chunk-boundary smuggling starts.
        if data == b"\r":
            return None
        if data[:2] != b"\r\n":
            raise self._refusal(400, "malformed chunk end")
        self._state = self._readChunkSize
        return data[2:]

    def _readTrailer(self, data: bytes) -> bytes:
        # Trailer fields are read and dropped: the proxy does not forward
        # them (RFC 9110 section 6.5.1 lets an intermediary discard them).
        line, rest = self._line(data)
        if line is None:
            return None
        if line:
            return rest
        self._state = self._readHead
        self.sink.messageEnded()
        return rest
