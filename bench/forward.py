"""
Forward-proxy benchmark: wrk through dualproxy's forward mode and through
Twisted's stock forward proxy to an nginx origin, 1 KiB and 1 MiB responses,
all in one run so that the ratio between them is what counts; proxy.py (a
Python proxy), when installed, gives a line to compare dualproxy with.

Usage: python bench/forward.py [--python PYTHON] [--duration 10] [--json FILE]
(see bench/README.md). Needs nginx and wrk on PATH; proxy.py is optional.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from common import BENCH, HOST, ORIGIN_PORT, PROXYPY, Contender, Cores, Server, pythonEnv, twistdDualproxy
import common

DUALPROXY_PORT = 28087
STOCK_PORT = 28085  # as shared/peers/twrp.py's
PROXYPY_PORT = 28086  # all four move by --port-offset
PEERS = (PROXYPY,)


def servers(arguments: argparse.Namespace, scratch: Path, cores: Cores) -> List[Server]:
    """
    The origin, dualproxy's forward mode, Twisted's stock forward proxy and
    the peers asked for.
    """
    offset = arguments.port_offset
    python = arguments.python
    dualproxy = twistdDualproxy(
        python, "--mode", "forward", "--config", str(arguments.config.resolve()),
        "--listen", f"tcp:{DUALPROXY_PORT + offset}:interface={HOST}",
        "--allow-destination", "127.0.0.0/8", "--access-log", "off",
    )  # fmt: skip
    nginx = common.prepareOrigin(scratch, ORIGIN_PORT + offset)
    found = [
        Server(Contender("direct", ORIGIN_PORT + offset), nginx, cores.origin),
        Server(Contender("dualproxy", DUALPROXY_PORT + offset, absoluteForm=True), dualproxy, cores.proxy, pythonEnv()),
        Server(
            Contender("stock", STOCK_PORT + offset, absoluteForm=True),
            [python, str(BENCH / "stock_forward.py"), str(STOCK_PORT + offset)],
            cores.proxy,
        ),
    ]
    if PROXYPY in arguments.peers:
        # proxy.py's plain HTTP forward proxy (HttpProxyPlugin), on its own interpreter, not on --python.
        proxypy = common.proxypyArgv(arguments.proxypyExecutable, PROXYPY_PORT + offset, scratch)
        found.append(Server(Contender(PROXYPY, PROXYPY_PORT + offset, absoluteForm=True), proxypy, cores.proxy))
    return found


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = common.baseParser(__doc__, BENCH / "forward-bench.toml")
    parser.add_argument(
        "--peers",
        type=common.peersParser(PEERS),
        default=list(PEERS),
        help="other forward proxies to run too, comma-separated, or none; proxypy is skipped when not installed"
        " [default: proxypy]",
    )
    common.addProxypyArgument(parser)
    ports = {"origin": ORIGIN_PORT, "dualproxy": DUALPROXY_PORT, "stock": STOCK_PORT, "proxypy": PROXYPY_PORT}
    common.addOutputArguments(parser, ports)
    arguments = parser.parse_args(argv)
    common.checkArguments(parser, arguments, list(ports.values()))
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = parseArguments(argv)
    return common.runWithProxypy("forward.py", arguments, servers)


if __name__ == "__main__":
    sys.exit(main())
