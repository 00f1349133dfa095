"""
Reverse-proxy benchmark: wrk through dualproxy's reverse mode and through
Twisted's stock reverse proxy to an nginx origin, 1 KiB and 1 MiB responses,
all in one run so that the ratio between them is what counts; nginx and
HAProxy as reverse proxies give reference lines, proxy.py (a Python proxy) a
line to compare dualproxy with.

Usage: python bench/reverse.py [--python PYTHON] [--duration 10] [--json FILE]
(see bench/README.md). Needs nginx and wrk on PATH; HAProxy and proxy.py are
optional.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from common import BENCH, HOST, ORIGIN_PORT, PROXYPY, Contender, Cores, Server, pythonEnv, twistdDualproxy
import common

NGINX_PORT = 28081  # as shared/peers/rp.conf's
HAPROXY_PORT = 28082  # as shared/peers/hap.cfg's
STOCK_PORT = 28083  # as shared/peers/twrp.py's
PROXYPY_PORT = 28084
DUALPROXY_PORT = 28088  # all six move by --port-offset
PEERS = ("nginx", "haproxy", PROXYPY)


def servers(arguments: argparse.Namespace, scratch: Path, cores: Cores) -> List[Server]:
    """
    The origin, dualproxy's reverse mode, Twisted's stock reverse proxy, and
    the reference peers asked for.
    """
    offset = arguments.port_offset
    python = arguments.python
    origin = ORIGIN_PORT + offset
    dualproxy = twistdDualproxy(
        python, "--mode", "reverse",
        "--listen", f"tcp:{DUALPROXY_PORT + offset}:interface={HOST}",
        "--backend", f"http://{HOST}:{origin}",
        "--access-log", "off", "--config", str(arguments.config.resolve()),
    )  # fmt: skip
    found = [
        Server(Contender("direct", origin), common.prepareOrigin(scratch, origin), cores.origin),
        Server(Contender("dualproxy", DUALPROXY_PORT + offset), dualproxy, cores.proxy, pythonEnv()),
        Server(
            Contender("stock", STOCK_PORT + offset),
            [python, str(BENCH / "stock_reverse.py"), str(STOCK_PORT + offset), str(origin)],
            cores.proxy,
        ),
    ]
    found += common.reverseProxyPeers(arguments.peers, scratch, origin, NGINX_PORT + offset, HAPROXY_PORT + offset,
                                      cores.proxy)
    if PROXYPY in arguments.peers:
        # proxypy_reverse.py routes every path to the origin, keeping one origin connection per client
        # connection (see there why); proxy.py runs on its own interpreter, not on --python.
        proxypy = common.proxypyArgv(
            arguments.proxypyExecutable, PROXYPY_PORT + offset, scratch,
            "--enable-reverse-proxy", "--plugins", "proxypy_reverse.ReverseToOrigin",
        )  # fmt: skip
        env = dict(os.environ, PROXYPY_ORIGIN=str(origin))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
        found.append(Server(Contender(PROXYPY, PROXYPY_PORT + offset), proxypy, cores.proxy, env))
    return found


parsePeers = common.peersParser(PEERS)


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = common.baseParser(__doc__, BENCH / "reverse-bench.toml")
    parser.add_argument(
        "--peers",
        type=parsePeers,
        default=list(PEERS),
        help="other reverse proxies to run too, comma-separated, or none; haproxy and proxypy are skipped when not"
        " installed [default: nginx,haproxy,proxypy]",
    )
    common.addProxypyArgument(parser)
    ports = {
        "origin": ORIGIN_PORT,
        "nginx": NGINX_PORT,
        "haproxy": HAPROXY_PORT,
        "stock": STOCK_PORT,
        "proxypy": PROXYPY_PORT,
        "dualproxy": DUALPROXY_PORT,
    }
    common.addOutputArguments(parser, ports)
    arguments = parser.parse_args(argv)
    common.checkArguments(parser, arguments, list(ports.values()))
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = parseArguments(argv)
    common.dropMissingHaproxy("reverse.py", arguments.peers)
    return common.runWithProxypy("reverse.py", arguments, servers)


if __name__ == "__main__":
    sys.exit(main())
