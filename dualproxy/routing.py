"""
The resource tree both modes route with: twisted.web resources walked with
L{twisted.web.resource.getChildForRequest}.

A L{VirtualHosts} resource picks a tree by the request's host (exact name,
then the longest C{*.suffix}, then the default); in that tree each path
segment is a L{PrefixNode} child, so the walk itself finds the longest
matching prefix.  Leaves are L{Target}s, which answer an
L{dualproxy.server.Exchange} directly: a backend pool, a static directory,
a redirect.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from twisted.web.resource import Resource, getChildForRequest

from .http.message import Headers, Refusal
from .server import errorResponse


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


class PrefixNode(Resource):
    """
    One path segment of a virtual host's routes; C{target} serves the
    prefix ending here when no longer prefix matches.
    """

    def __init__(self, target: Optional[Target] = None):
        super().__init__()
        self.target = target

    def getChild(self, path: bytes, request: RoutingRequest) -> Resource:
        # No longer prefix continues with this segment: it belongs to the
        # remainder, not to the matched prefix.
        request.postpath.insert(0, request.prepath.pop())
        return self.target or NotFound()

    def add(self, prefix: str, target: Target) -> None:
        node = self
        for segment in prefixSegments(prefix):
            child = node.children.get(segment)
            if child is None:
                child = PrefixNode()
                node.putChild(segment, child)
            node = child
        node.target = target


def prefixSegments(prefix: str) -> List[bytes]:
    """
    The path segments of a route prefix: C{"/api/v1/"} is C{[b"api", b"v1"]}.
    """
    return [segment.encode("utf-8") for segment in prefix.strip("/").split("/") if segment]


class VirtualHosts(Resource):
    """
    Picks the route tree for the request's host.
    """

    def __init__(self):
        super().__init__()
        self.exact: Dict[str, PrefixNode] = {}
        self.wildcards: List[Tuple[str, PrefixNode]] = []
        self.default = PrefixNode()

    def tree(self, host: str) -> PrefixNode:
        """
        The routes for C{host} (exact, C{*.suffix} or C{*}), made on first use.
        """
        if host == "*":
            return self.default
        if host.startswith("*."):
            for suffix, node in self.wildcards:
                if suffix == host[1:]:
                    return node
            node = PrefixNode()
            self.wildcards.append((host[1:], node))
            # Longest suffix first, so the most specific wildcard wins.
            self.wildcards.sort(key=lambda item: -len(item[0]))
            return node
        return self.exact.setdefault(host, PrefixNode())

    def select(self, host: str) -> PrefixNode:
        node = self.exact.get(host)
        if node is not None:
            return node
        for suffix, node in self.wildcards:
            if host.endswith(suffix):
                return node
        return self.default

    def getChildWithDefault(self, path: bytes, request: RoutingRequest) -> Resource:
        return self.select(request.host).getChildWithDefault(path, request)


def route(root: VirtualHosts, request: RoutingRequest) -> Target:
    """
    Walk the tree: the target of the longest prefix for the request's host.

    A route limited to some client certificates (mutual TLS) refuses
    everyone else with 403.
    """
    resource = getChildForRequest(root, request)
    if isinstance(resource, PrefixNode):
        resource = resource.target or NotFound()
    elif isinstance(resource, VirtualHosts):
        resource = resource.select(request.host).target or NotFound()
    request.exchange.route = resource.label
    if resource.allowSubjects and request.exchange.channel.clientSubject() not in resource.allowSubjects:
        raise Refusal(403, "this route needs a client certificate it accepts")
    return resource


def pageTarget(settings) -> Target:
    """
    The target of a route to a static directory or a redirect (routes to a
    pool are the reverse mode's).
    """
    from .static import StaticDirectory

    headers = dict(addHeaders=settings.add_headers, removeHeaders=settings.remove_headers,
                   allowSubjects=settings.client_subjects)
    if settings.static is not None:
        return StaticDirectory(settings.static, settings.listing, **headers)
    return Redirect(settings.redirect, settings.redirect_status, **headers)


def hostName(headers: Headers) -> str:
    """
    The requested host, lower case, without port, for virtual hosting.
    """
    host = headers.get(b"host") or b""
    if host.startswith(b"["):
        name = host.split(b"]")[0] + b"]"
    else:
        name = host.rsplit(b":", 1)[0] if b":" in host else host
    return name.decode("latin-1").lower().rstrip(".")


def splitTarget(target: bytes) -> Tuple[bytes, bytes]:
    """
    The path and query of an origin-form request target.
    """
    path, _, query = target.partition(b"?")
    return path, query
