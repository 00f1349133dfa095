"""
Forward-proxy benchmark: wrk through dualproxy's forward mode and through
Twisted's stock forward proxy to an nginx origin, 1 KiB and 1 MiB responses,
all in one run so that the ratio between them is what counts.

Usage: python bench/forward.py [--python PYTHON] [--duration 10] [--json FILE]
(see bench/README.md). Needs nginx and wrk on PATH.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from common import BENCH, HOST, ORIGIN_PORT, Contender, Cores, Server, pythonEnv, twistdDualproxy
import common

DUALPROXY_PORT = 28087
STOCK_PORT = 28085  # as shared/peers/twrp.py's; all three move by --port-offset


def servers(arguments: argparse.Namespace, scratch: Path, cores: Cores) -> List[Server]:
    """
    The origin, dualproxy's forward mode and Twisted's stock forward proxy.
    """
    offset = arguments.port_offset
    python = arguments.python
    dualproxy = twistdDualproxy(
        python, "--mode", "forward", "--config", str(arguments.config.resolve()),
        "--listen", f"tcp:{DUALPROXY_PORT + offset}:interface={HOST}",
        "--allow-destination", "127.0.0.0/8", "--access-log", "off",
    )  # fmt: skip
    nginx = common.prepareOrigin(scratch, ORIGIN_PORT + offset)
    return [
        Server(Contender("direct", ORIGIN_PORT + offset), nginx, cores.origin),
        Server(Contender("dualproxy", DUALPROXY_PORT + offset, absoluteForm=True), dualproxy, cores.proxy, pythonEnv()),
        Server(
            Contender("stock", STOCK_PORT + offset, absoluteForm=True),
            [python, str(BENCH / "stock_forward.py"), str(STOCK_PORT + offset)],
            cores.proxy,
        ),
    ]


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = common.baseParser(__doc__, BENCH / "forward-bench.toml")
    ports = {"origin": ORIGIN_PORT, "dualproxy": DUALPROXY_PORT, "stock": STOCK_PORT}
    common.addOutputArguments(parser, ports)
    arguments = parser.parse_args(argv)
    common.checkArguments(parser, arguments, list(ports.values()))
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run("forward.py", parseArguments(argv), servers)


if __name__ == "__main__":
    sys.exit(main())
