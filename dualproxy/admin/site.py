"""
The admin listener's resources, on twisted.web: its traffic is a few
requests a second from a browser or a Prometheus server, not the proxy's.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional

from twisted.internet.defer import maybeDeferred
from twisted.web import resource, server

from ..policy.auth import PasswordFile, ProxyAuthenticator
from .status import document

_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.html")


def _json(request, data, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(data, indent=1).encode("utf-8") + b"\n"


class Answer(resource.Resource):
    """
    A GET answered with what C{produce()} returns (or a Deferred fires
    with), encoded by C{encode(request, value)}.
    """

    isLeaf = True

    def __init__(self, produce: Callable[[], object], encode: Callable[[object, object], bytes] = _json):
        super().__init__()
        self.produce = produce
        self.encode = encode

    def render_GET(self, request):
        def write(value) -> None:
            request.write(self.encode(request, value))
            request.finish()

        def failed(failure) -> None:
            request.write(_json(request, {"error": failure.getErrorMessage()}, 503))
            request.finish()

        maybeDeferred(self.produce).addCallbacks(write, failed)
        return server.NOT_DONE_YET


def _exposition(request, families) -> bytes:
    """
    Prometheus text for C{families} (an iterable of metric families).
    """
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(list(families)))
    request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
    return generate_latest(registry)


class _Static:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


class Reload(resource.Resource):
    """
    C{POST /reload}: re-read the configuration, as SIGHUP does.
    """

    isLeaf = True

    def __init__(self, service):
        super().__init__()
        self.service = service

    def render_POST(self, request) -> bytes:
        error = self.service.reload()
        if error is not None:
            return _json(request, {"reloaded": False, "error": error}, 422)
        return _json(request, {"reloaded": True})


class _Local:
    """
    What the admin listener shows for a single process.
    """

    def __init__(self, service):
        self.service = service

    def metrics(self):
        return self.service.metrics.collect()

    def status(self) -> dict:
        return document(self.service)

    def series(self) -> list:
        return self.service.metrics.series()


class Dashboard(resource.Resource):
    """
    C{/}: the live dashboard, one self-contained page.
    """

    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        with open(_PAGE, "rb") as page:
            return page.read()


class _Headers:
    """
    The Authorization field where the proxy authenticator looks for its
    own: the same Basic credentials and password file format.
    """

    def __init__(self, request):
        self.request = request

    def getAll(self, name: bytes):
        return self.request.requestHeaders.getRawHeaders(b"authorization", [])


class _Unauthorized(resource.Resource):
    isLeaf = True

    def __init__(self, realm: str):
        super().__init__()
        self.realm = realm

    def render(self, request) -> bytes:
        request.setResponseCode(401)
        request.setHeader(b"www-authenticate", b'Basic realm="%s", charset="UTF-8"' % self.realm.encode("ascii"))
        return b"authentication required\n"


def adminSite(service, passwords: Optional[PasswordFile] = None, realm: str = "dualproxy admin", view=None):
    """
    The admin web site for a running L{dualproxy.service.root.ProxyService}, or
    for a L{dualproxy.workers.Supervisor} with the C{view} that merges its
    workers' answers.
    """
    if view is None:
        view = _Local(service)
    root = resource.Resource()
    root.putChild(b"", Dashboard())
    root.putChild(b"metrics", Answer(view.metrics, _exposition))
    root.putChild(b"status", Answer(view.status))
    root.putChild(b"series", Answer(view.series))
    root.putChild(b"reload", Reload(service))
    top = root if passwords is None else _Gate(root, passwords, realm)
    site = server.Site(top)
    site.displayTracebacks = False
    site.log = lambda request: None
    return site


class _Gate(resource.Resource):
    """
    Every path behind Basic authentication.
    """

    def __init__(self, wrapped, passwords: PasswordFile, realm: str):
        super().__init__()
        self.wrapped = wrapped
        self.check = ProxyAuthenticator(passwords, realm)
        self.realm = realm

    def getChildWithDefault(self, path, request):
        from ..http.message import Refusal

        try:
            self.check.authenticate(_Headers(request))
        except Refusal:
            return _Unauthorized(self.realm)
        return self.wrapped.getChildWithDefault(path, request)
