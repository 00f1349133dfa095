"""
The resource tree both modes route with: twisted.web resources walked with
L{twisted.web.resource.getChildForRequest}.

A L{VirtualHosts} resource picks a tree by the request's host (exact name,
then the longest C{*.suffix}, then the default); in that tree each path
segment is a L{PrefixNode} child, so the walk itself finds the longest
matching prefix.  Leaves are L{Target}s, which answer an
L{dualproxy.core.exchange.Exchange} directly: a backend pool, a static directory,
a redirect.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Dict, List, Optional, Tuple

from twisted.web.resource import Resource, getChildForRequest

from ..http.message import Headers, Refusal
from .targets import NotFound, RoutingRequest, Target


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

    @ivar wellKnown: RFC 8615 well-known URIs every host has, before its
        own routes: C{/.well-known/NAME/...} asks C{wellKnown[NAME]} for
        its target, which may be None to leave the request to the routes
        (an ACME challenge it has no token for).
    """

    def __init__(self):
        super().__init__()
        self.exact: Dict[str, PrefixNode] = {}
        self.wildcards: List[Tuple[str, PrefixNode]] = []
        self.default = PrefixNode()
        self.wellKnown: Dict[bytes, Callable[[RoutingRequest], Optional[Target]]] = {}

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
        if path == b".well-known" and self.wellKnown:
            target = self.wellKnownTarget(request)
            if target is not None:
                return target
        return self.select(request.host).getChildWithDefault(path, request)

    def wellKnownTarget(self, request: RoutingRequest) -> Optional[Target]:
        """
        The well-known target for a request whose walk is past
        C{.well-known}, or None.
        """
        answer = self.wellKnown.get(request.postpath[0]) if request.postpath else None
        return None if answer is None else answer(request)


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
    request.exchange.context.route = resource.label
    if resource.allowSubjects and request.exchange.channel.clientSubject() not in resource.allowSubjects:
        raise Refusal(403, "this route needs a client certificate it accepts")
    return resource


def hostName(headers: Headers) -> str:
    """
    The requested host, lower case, without port, for virtual hosting.
    """
    return _nameOf(headers.get(b"host") or b"")


@lru_cache(maxsize=1024)
def _nameOf(host: bytes) -> str:
    # Remembered: a site's clients name the same few hosts again and again.
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
