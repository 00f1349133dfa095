"""
Twisted's stock forward proxy (twisted.web.proxy.Proxy), the baseline for
bench/forward.py; as in shared/peers/twrp.py, but with the access log off to
match dualproxy's C{--access-log off}.

Usage: python bench/stock_forward.py PORT
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.web.http import HTTPFactory, Request
from twisted.web.proxy import Proxy


class QuietHTTPFactory(HTTPFactory):
    """
    An L{HTTPFactory} that writes no access log.
    """

    protocol = Proxy

    def log(self, request: Request) -> None:
        pass


def main(port: int) -> None:
    reactor.listenTCP(port, QuietHTTPFactory(), interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(int(sys.argv[1]))
