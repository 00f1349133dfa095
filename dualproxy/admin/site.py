"""
The admin listener's resources, on twisted.web: its traffic is a few
requests a second from a browser or a Prometheus server, not the proxy's.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from twisted.web import resource, server

from ..forward.auth import PasswordFile, ProxyAuthenticator
from .status import document

_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.html")


def _json(request, data, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(data, indent=1).encode("utf-8") + b"\n"


class Metrics(resource.Resource):
    """
    C{/metrics} in the Prometheus text exposition format.
    """

    isLeaf = True

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class Status(resource.Resource):
    """
    C{/status}: the JSON status document.
    """

    isLeaf = True

    def __init__(self, service):
        super().__init__()
        self.service = service

    def render_GET(self, request) -> bytes:
        return _json(request, document(self.service))


class Series(resource.Resource):
    """
    C{/series}: the last minutes, one entry per second, for the dashboard.
    """

    isLeaf = True

    def __init__(self, service):
        super().__init__()
        self.service = service

    def render_GET(self, request) -> bytes:
        return _json(request, self.service.metrics.series())


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


def adminSite(service, registry, passwords: Optional[PasswordFile] = None, realm: str = "dualproxy admin"):
    """
    The admin web site for a running L{dualproxy.service.ProxyService}.
    """
    root = resource.Resource()
    dashboard = Dashboard()
    root.putChild(b"", dashboard)
    root.putChild(b"metrics", Metrics(registry))
    root.putChild(b"status", Status(service))
    root.putChild(b"series", Series(service))
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
