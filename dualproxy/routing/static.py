"""
Static directories as route targets, served by twisted.web.static.File.

File renders onto a twisted.web request; L{_ExchangeChannel} is the small
channel that request writes through, so the file's headers and bytes reach
the client through the same exchange (framing, keep-alive, access log) as a
proxied response.  Paths are checked before File sees them: no C{..}, no
encoded separators, nothing that resolves (through a symlink) outside the
directory.
"""

from __future__ import annotations

import os
from io import BytesIO
from urllib.parse import unquote_to_bytes

from twisted.web import server, static
from twisted.web.pages import forbidden

from ..http.message import CLOSE, LENGTH, NO_BODY, Headers, Refusal, ResponseHead
from .targets import RoutingRequest, Target


class _Unlisted(static.File):
    """
    A File with directory listings refused: listing is opt-in, as nginx's
    autoindex, since it reveals more than operators expect.
    """

    def directoryListing(self):
        return forbidden("Forbidden", "Directory listing is off.")


class _ExchangeChannel:
    """
    What a twisted.web request needs of its channel, over an exchange.
    """

    factory = None

    def __init__(self, exchange, site: server.Site):
        self.exchange = exchange
        self.site = site
        self.transport = exchange.channel.transport

    def getPeer(self):
        return self.transport.getPeer()

    def getHost(self):
        return self.transport.getHost()

    def isSecure(self) -> bool:
        return False

    def writeHeaders(self, version, code, reason, headers) -> None:
        items = Headers((name, value) for name, values in headers.getAllRawHeaders() for value in values)
        status = int(code)
        if status in (204, 304) or status < 200:
            framing = NO_BODY
        elif b"content-length" in items:
            framing = LENGTH
        else:
            framing = CLOSE
        self.exchange.writeHead(ResponseHead(status, reason, items, framing=framing))

    def write(self, data: bytes) -> None:
        self.exchange.write(data)

    def writeSequence(self, data) -> None:
        for chunk in data:
            self.exchange.write(chunk)

    def registerProducer(self, producer, streaming: bool) -> None:
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.transport.unregisterProducer()

    def requestDone(self, request) -> None:
        self.exchange.finish()


class StaticDirectory(Target):
    """
    Serves the files under C{path} for the part of the URL past the route's
    prefix, with Content-Type, Range and conditional requests from File.
    """

    def __init__(self, path: str, listing: bool = False, **kw):
        super().__init__(**kw)
        self.root = os.path.realpath(path)
        self.file = (static.File if listing else _Unlisted)(self.root)
        self.site = server.Site(self.file)
        self.site.displayTracebacks = False

    def serve(self, request: RoutingRequest) -> None:
        exchange = request.exchange
        if exchange.request.method not in (b"GET", b"HEAD"):
            raise Refusal(405, "static files are read-only", [(b"Allow", b"GET, HEAD")])
        segments = [unquote_to_bytes(segment) for segment in request.postpath]
        for segment in segments:
            if segment in (b".", b"..") or b"/" in segment or b"\\" in segment or b"\0" in segment:
                raise Refusal(404, "no such file")
        real = os.path.realpath(os.path.join(self.root.encode(), *segments)) if segments else self.root.encode()
        if real != self.root.encode() and not real.startswith(self.root.encode() + b"/"):
            raise Refusal(404, "no such file")
        web = server.Request(_ExchangeChannel(exchange, self.site))
        web.method = exchange.request.method
        web.uri = exchange.request.target
        web.path = request.path
        web.clientproto = b"HTTP/1.0"  # the exchange does the framing
        web.prepath = list(request.prepath)
        web.postpath = segments
        web.args = {}
        web.content = BytesIO()
        for name, value in exchange.request.headers:
            web.requestHeaders.addRawHeader(name, value)
        target = self.file
        while web.postpath and not target.isLeaf:
            segment = web.postpath.pop(0)
            web.prepath.append(segment)
            target = target.getChildWithDefault(segment, web)
        web.render(target)
