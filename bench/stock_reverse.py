"""
Twisted's stock reverse proxy (twisted.web.proxy.ReverseProxyResource), the
baseline for bench/reverse.py; as in shared/peers/twrp.py, but with the access
log off to match dualproxy's C{--access-log off}.

Usage: python bench/stock_reverse.py PORT ORIGINPORT
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.web.http import Request
from twisted.web.proxy import ReverseProxyResource
from twisted.web.server import Site


class QuietSite(Site):
    """
    A L{Site} that writes no access log.
    """

    def log(self, request: Request) -> None:
        pass


def main(port: int, origin: int) -> None:
    site = QuietSite(ReverseProxyResource("127.0.0.1", origin, b""))
    reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
