"""
What a route leads to: L{Target}s answer an exchange directly.  The proxy's
own pages (redirects here, static directories in L{dualproxy.routing.static})
are targets; so is a reverse pool.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.web.resource import Resource

from ..core.exchange import errorResponse
from ..http.message import Headers, Refusal


class RoutingRequest:
    """
    The part of a request a resource walk uses, over an exchange.

    C{prepath} ends up holding the matched prefix's segments and C{postpath}
    the rest, as in twisted.web.
    """

    def __init__(self, exchange, host: str, path: bytes, query: bytes):
        self.exchange = exchange
        self.host = host
        self.path = path
        self.query = query
        self.prepath: List[bytes] = []
        self.postpath: List[bytes] = path[1:].split(b"/")

    def getHeader(self, name: bytes) -> Optional[bytes]:
        return self.exchange.request.headers.get(name.lower())


class Target(Resource):
    """
    A route's destination; subclasses answer the exchange.
    """

    isLeaf = True

    # How metrics name the route ("host/prefix"); empty for none.
    label = ""

    def __init__(self, addHeaders=(), removeHeaders=(), allowSubjects=()):
        super().__init__()
        self.allowSubjects = frozenset(allowSubjects)
        self.addHeaders = tuple((name.encode("ascii"), value.encode("latin-1")) for name, value in addHeaders)
        self.removeHeaders = tuple(name.lower().encode("ascii") for name in removeHeaders)

    def serve(self, request: RoutingRequest) -> None:
        raise NotImplementedError()

    def adjust(self, headers: Headers) -> None:
        """
        The route's own header changes for what is sent on.
        """
        if self.removeHeaders:
            headers.remove(*self.removeHeaders)
        for name, value in self.addHeaders:
            headers.add(name, value)


class NotFound(Target):
    def serve(self, request: RoutingRequest) -> None:
        raise Refusal(404, "no route for this host and path")


class Redirect(Target):
    """
    Answers with a redirect; a location without a path gets the request's
    path and query appended, as nginx's C{return 301 https://host$request_uri}.
    """

    def __init__(self, location: str, status: int = 302, **kw):
        super().__init__(**kw)
        self.location = location.encode("ascii")
        self.status = status
        self.appendPath = location.count("/") == 2

    def serve(self, request: RoutingRequest) -> None:
        location = self.location
        if self.appendPath:
            location += request.path + (b"?" + request.query if request.query else b"")
        head, body = errorResponse(self.status, "redirecting to " + location.decode("ascii"),
                                   [(b"Location", location)])
        self.adjust(head.headers)
        exchange = request.exchange
        exchange.writeHead(head)
        exchange.write(body)
        exchange.finish()
