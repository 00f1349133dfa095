"""
A proxy.py (https://github.com/abhinavsingh/proxy.py) reverse-proxy plugin for
bench/reverse.py: every path goes, unchanged, to the bench's origin,
http://127.0.0.1:$PROXYPY_ORIGIN [default: 28080].

Started by reverse.py as
C{proxy --enable-reverse-proxy --plugins proxypy_reverse.ReverseToOrigin ...}
with bench/ on C{PYTHONPATH}; it imports proxy.py, so it runs on the
interpreter proxy.py is installed for, not on dualproxy's.

Why not the obvious plugin (tested with proxy.py 2.4.10): a static route
C{("/", [b"http://127.0.0.1:28080"])} sends every request to C{/} (proxy.py
replaces the request's path with the route URL's path), and a dynamic route
returning a L{Url} (the path kept) relays the first request of a connection but
kills the worker on the second one of a keep-alive connection: the core opens a
new origin connection for every request and drops the previous one while its
descriptor is still registered, and the worker's event loop dies of
C{FileNotFoundError} in C{selector.modify} (as in proxy.py issue #1483) — after which
nothing is answered at all. wrk keeps its connections alive, so that would
measure nothing.

So, unless C{PROXYPY_REUSE=0} is set, L{handle_route} returns a
L{TcpServerConnection} instead, a form the plugin API offers (proxy.py PR
#1397): one origin connection per client connection, opened on its first
request and handed back for every later one, with each request written to it
here (the core does not write the request in that case). proxy.py's core still
relays the response bytes as they come, unparsed. C{PROXYPY_REUSE=0} gives the
plain L{Url} route, to reproduce the failure.
"""

import os
from typing import Any, Dict, List, Optional, Tuple, Union

from proxy.common.types import RePattern
from proxy.core.connection import TcpServerConnection
from proxy.http import Url
from proxy.http.parser import HttpParser
from proxy.http.server import ReverseProxyBasePlugin

HOST = "127.0.0.1"
PORT = int(os.environ.get("PROXYPY_ORIGIN", "28080"))
ORIGIN = f"http://{HOST}:{PORT}".encode()
REUSE = os.environ.get("PROXYPY_REUSE", "1") != "0"


class ReverseToOrigin(ReverseProxyBasePlugin):
    """
    One instance per client connection (proxy.py makes the plugins of a
    connection when it accepts it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upstream: Optional[TcpServerConnection] = None

    def routes(self) -> List[Union[str, Tuple[str, List[bytes]]]]:
        return [r"/.*$"]

    def handle_route(self, request: HttpParser, pattern: RePattern) -> Union[Url, TcpServerConnection]:
        if not REUSE:
            choice = Url.from_bytes(ORIGIN)
            choice.remainder = request.path  # proxy.py sends this path upstream: keep it (and the query)
            return choice
        if self.upstream is None or self.upstream.closed:
            self.upstream = TcpServerConnection(HOST, PORT)
            self.upstream.connect()
        # The request as received (origin-form path, Host untouched, as with a Url route
        # without --rewrite-host-header).
        self.upstream.queue(memoryview(request.build()))
        return self.upstream

    def on_access_log(self, context: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        # Called once, when the client connection closes: the core closes only the
        # origin connections it opened itself.
        if self.upstream is not None and not self.upstream.closed:
            self.upstream.close()
        return context
