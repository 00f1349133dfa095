"""
Nagle benchmark: wrk through dualproxy's reverse mode, nginx and HAProxy to a
kept-alive origin that writes each response's head and body in two sends
with Nagle on (bench/nagle_origin.py), and to that origin directly, 1 KiB
bodies, few connections, all in one run. A proxy whose kernel delays the ACK
of the head waits about 40 ms for every body; dualproxy asks for quick ACKs
on upstream reads and should come close to direct.

Usage: python bench/nagle.py [--python PYTHON] [--duration 10] [--json FILE]
(see bench/README.md). Needs wrk and nginx on PATH; HAProxy is optional.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, IO, List, Optional, Sequence

from common import BENCH, HOST, BenchError, Contender, Cores, Processes, Server, pythonEnv, twistdDualproxy
import common

ORIGIN_PORT = 28180  # nagle_origin.py, not common's nginx origin
NGINX_PORT = 28181
HAPROXY_PORT = 28182
DUALPROXY_PORT = 28188  # all four move by --port-offset
PEERS = ("nginx", "haproxy")
SCRIPT = "nagle.py"


@dataclass(frozen=True)
class NagleResult(common.Result):
    mean_ms: float = 0.0  # wrk's mean latency: 40 ms and more is the delayed ACK


def sizeLabel(size: int) -> str:
    return "1k" if size == 1024 else f"{size}B"


def servers(arguments: argparse.Namespace, scratch: Path, cores: Cores) -> List[Server]:
    """
    The Nagle origin (on this script's interpreter, so that it is the same
    origin whatever --python is), dualproxy's reverse mode and the peers
    asked for, each of the proxies in front of it.
    """
    offset = arguments.port_offset
    origin = ORIGIN_PORT + offset
    originArgv = [sys.executable, str(BENCH / "nagle_origin.py"), "--port", str(origin), "--size", str(arguments.size)]
    dualproxy = twistdDualproxy(
        arguments.python, "--mode", "reverse",
        "--listen", f"tcp:{DUALPROXY_PORT + offset}:interface={HOST}",
        "--backend", f"http://{HOST}:{origin}",
        "--access-log", "off", "--config", str(arguments.config.resolve()),
    )  # fmt: skip
    found = [
        Server(Contender("direct", origin), originArgv, cores.origin),
        Server(Contender("dualproxy", DUALPROXY_PORT + offset), dualproxy, cores.proxy, pythonEnv()),
    ]
    found += common.reverseProxyPeers(arguments.peers, scratch, origin, NGINX_PORT + offset, HAPROXY_PORT + offset,
                                      cores.proxy)
    return found


def startServers(
    processes: Processes, scratch: Path, servers: Sequence[Server], origin: int, size: int
) -> List[Contender]:
    """
    As L{common.startServers}, but the check fits nagle_origin.py, which
    answers every path with the same body: one GET through each contender
    must answer 200 with C{size} bytes.
    """
    contenders = [server.contender for server in servers]
    for contender in contenders:
        if common.accepting(contender.port):
            raise BenchError(
                f"port {contender.port} (for {contender.name}) is in use: stop what listens there or pass --port-offset"
            )
    for server in servers:
        log = scratch / "logs" / f"{server.contender.name}.log"
        process = processes.start(common.pinned(server.core, server.argv), log, server.env)
        common.waitForPort(server.contender.name, server.contender.port, process, log)
    for contender in contenders:
        body = common.fetch(contender, origin, "/1k.bin")
        if len(body) != size:
            raise BenchError(f"{contender.name}: {len(body)} bytes of body, not {size}")
    return contenders


_MEAN = re.compile(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s", re.MULTILINE)


def parseWrk(contender: str, size: str, output: str) -> NagleResult:
    """
    L{common.parseWrk} plus wrk's mean latency (its "Thread Stats" line).
    """
    mean = _MEAN.search(output)
    if mean is None:
        raise BenchError(f"no mean latency in wrk's output:\n{output}")
    return NagleResult(
        **asdict(common.parseWrk(contender, size, output)),
        mean_ms=float(mean.group(1)) * common.UNITS_MS[mean.group(2)],
    )


def ratios(results: Sequence[NagleResult]) -> Dict[str, float]:
    """
    dualproxy's requests/s over each peer's measured in this run.
    """
    rate = {r.contender: r.requests_per_sec for r in results}
    return {peer: rate["dualproxy"] / rate[peer] for peer in PEERS if rate.get(peer) and "dualproxy" in rate}


def printTable(results: Sequence[NagleResult], connections: int, out: IO[str]) -> None:
    """
    As L{common.printTable}, with the mean latency and requests/s per
    connection (25 is one response per 40 ms), and the ratios over the peers.
    """
    width = max([10] + [len(r.contender) for r in results])
    print(
        f"{'contender':<{width}} {'size':<4} {'requests/s':>11} {'per conn':>9} {'mean ms':>9} {'p50 ms':>9}"
        f" {'p99 ms':>9} {'errors':>7}",
        file=out,
    )
    for r in results:
        print(
            f"{r.contender:<{width}} {r.size:<4} {r.requests_per_sec:>11.1f} {r.requests_per_sec / connections:>9.1f}"
            f" {r.mean_ms:>9.2f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f} {r.non_2xx + r.socket_errors:>7}",
            file=out,
        )
    for peer, ratio in ratios(results).items():
        print(f"dualproxy/{peer} requests/s: {ratio:.2f}x", file=out)


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = common.baseParser(__doc__, BENCH / "reverse-bench.toml")
    # The origin is threaded Python: a few connections load it enough.
    parser.set_defaults(connections=8)
    parser.add_argument(
        "--size", type=int, default=1024, help="the origin's body bytes [default: %(default)s]"
    )
    parser.add_argument(
        "--peers",
        type=common.peersParser(PEERS),
        default=list(PEERS),
        help="other reverse proxies to run too, comma-separated, or none; haproxy is skipped when not installed"
        " [default: nginx,haproxy]",
    )
    ports = {"origin": ORIGIN_PORT, "nginx": NGINX_PORT, "haproxy": HAPROXY_PORT, "dualproxy": DUALPROXY_PORT}
    common.addOutputArguments(parser, ports)
    arguments = parser.parse_args(argv)
    common.checkArguments(parser, arguments, list(ports.values()))
    if arguments.size < 1:
        parser.error("--size must be at least 1")
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = parseArguments(argv)
    required = ["wrk"] + (["nginx"] if "nginx" in arguments.peers else [])
    missing = [tool for tool in required if shutil.which(tool) is None]
    if missing:
        print(f"{SCRIPT}: no {' or '.join(missing)} on PATH; apt-get install -y {' '.join(required)}", file=sys.stderr)
        return 1
    common.dropMissingHaproxy(SCRIPT, arguments.peers)
    load = (
        f"wrk -t1 -c{arguments.connections} -d{arguments.duration}s to nagle_origin.py"
        f" ({arguments.size}-byte bodies, head and body in two sends)"
    )
    started = common.begin(SCRIPT, arguments, load)
    if started is None:
        return 1
    python, cores = started
    origin = ORIGIN_PORT + arguments.port_offset
    size = sizeLabel(arguments.size)
    scratch = Path(tempfile.mkdtemp(prefix="dualproxy-bench-"))
    (scratch / "logs").mkdir()
    processes = Processes()
    results: List[NagleResult] = []
    try:
        contenders = startServers(processes, scratch, servers(arguments, scratch, cores), origin, arguments.size)
        for contender in contenders:
            path = "/1k.bin"  # any path: the origin answers every one alike
            if arguments.warmup:
                common.wrk(contender, origin, path, arguments.warmup, arguments.connections, cores.origin)
            output = common.wrk(contender, origin, path, arguments.duration, arguments.connections, cores.origin)
            results.append(parseWrk(contender.name, size, output))
            print(
                f"  {contender.name}: {results[-1].requests_per_sec:.1f} requests/s,"
                f" mean {results[-1].mean_ms:.2f} ms",
                file=sys.stderr,
            )
    except BenchError as e:
        print(f"{SCRIPT}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{SCRIPT}: interrupted", file=sys.stderr)
        return 130
    finally:
        processes.stopAll()
        common.dropScratch(SCRIPT, scratch, arguments.keep)
    printTable(results, arguments.connections, sys.stdout)
    common.writeReport(
        arguments, python, cores.proxy is not None, results,
        size_bytes=arguments.size,
        origin={"server": "nagle_origin.py", "python": sys.executable},
        **{f"dualproxy_over_{peer}": ratio for peer, ratio in ratios(results).items()},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
