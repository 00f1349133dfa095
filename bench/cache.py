"""
Cache-hit benchmark: wrk through dualproxy's reverse mode serving cache hits
from its memory store, through the same dualproxy relaying every request,
and through nginx serving hits from proxy_cache, 1 KiB and 100 KiB
responses, all in one run so that the ratios between them are what counts;
the origin asked directly gives a reference line.

Usage: python bench/cache.py [--python PYTHON] [--duration 10] [--json FILE]
(see bench/README.md). Needs nginx and wrk on PATH.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from common import BENCH, HOST, ORIGIN_PORT, BenchError, Contender, Cores, Processes, Result, Server
import common

CACHED_PORT = 28090
RELAY_PORT = 28091
NGINX_PORT = 28092  # all four move by --port-offset
SIZES: Dict[str, int] = {"1k": 1024, "100k": 100 * 1024}
CACHED = "dualproxy-cached"
RELAY = "dualproxy-relay"
NGINX = "nginx-cached"
RATIOS = ((CACHED, RELAY), (CACHED, NGINX))
TARGET = 3.0  # dualproxy-cached/dualproxy-relay on CPython (issue #5)


def dualproxyConfig(arguments: argparse.Namespace, scratch: Path, cache: bool) -> Path:
    """
    The --config template filled in for one of the two dualproxy contenders.
    """
    name = arguments.config.name
    text = arguments.config.read_text().replace("@ORIGIN@", str(ORIGIN_PORT + arguments.port_offset))
    text = text.replace("@CACHE@", "true" if cache else "false")
    config = scratch / (f"cached-{name}" if cache else f"relay-{name}")
    config.write_text(text)
    return config


def servers(arguments: argparse.Namespace, scratch: Path, cores: Cores) -> List[Server]:
    """
    The origin, dualproxy with and without its cache, and nginx with
    proxy_cache.
    """
    offset = arguments.port_offset
    origin = ORIGIN_PORT + offset

    def dualproxy(port: int, cache: bool) -> List[str]:
        return common.twistdDualproxy(
            arguments.python, "--mode", "reverse",
            "--listen", f"tcp:{port}:interface={HOST}",
            "--access-log", "off", "--config", str(dualproxyConfig(arguments, scratch, cache)),
        )  # fmt: skip

    found = [
        # cache-origin.conf marks every file fresh for 10 minutes.
        Server(Contender("direct", origin), common.prepareOrigin(scratch, origin, SIZES, "cache-origin.conf"),
               cores.origin),
        Server(Contender(CACHED, CACHED_PORT + offset), dualproxy(CACHED_PORT + offset, True), cores.proxy,
               common.pythonEnv()),
        Server(Contender(RELAY, RELAY_PORT + offset), dualproxy(RELAY_PORT + offset, False), cores.proxy,
               common.pythonEnv()),
    ]  # fmt: skip
    conf = common.fillTemplate("cache-rp.conf", scratch, port=NGINX_PORT + offset, origin=origin)
    nginx = ["nginx", "-p", str(scratch), "-e", str(scratch / "logs" / "cache-rp.err"), "-c", str(conf)]
    found.append(Server(Contender(NGINX, NGINX_PORT + offset), nginx + ["-g", "daemon off;"], cores.proxy))
    return found


def get(contender: Contender, path: str) -> Tuple[http.client.HTTPResponse, bytes]:
    """
    One request as wrk makes it, with the C{Host} wrk sends, which is part
    of dualproxy's cache key.
    """
    connection = http.client.HTTPConnection(HOST, contender.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": f"{HOST}:{contender.port}"})
        response = connection.getresponse()
        return response, response.read()
    except (OSError, http.client.HTTPException) as e:
        raise BenchError(f"{contender.name}: GET {path} failed: {e!r}") from e
    finally:
        connection.close()


def isHit(contender: Contender, response: http.client.HTTPResponse) -> bool:
    if contender.name == CACHED:
        # RFC 9211: "dualproxy; hit; ttl=599"; a miss is "dualproxy; fwd=uri-miss; stored".
        status = response.getheader("Cache-Status", "")
        return "hit" in (part.strip().lower() for part in status.split(";"))
    return response.getheader("X-Cache-Status", "") == "HIT"


def checkWhole(contender: Contender, path: str, body: bytes) -> http.client.HTTPResponse:
    response, received = get(contender, path)
    if response.status != 200:
        raise BenchError(f"{contender.name}: GET {path} answered {response.status} {response.reason}")
    if received != body:
        raise BenchError(f"{contender.name}: GET {path} did not relay the origin's file whole")
    return response


def warm(contenders: Sequence[Contender], scratch: Path) -> None:
    """
    Fill both caches with one request per size, then check that the next
    request is a hit and that the relay caches nothing, so that no miss is
    ever measured as a hit or a hit as a relayed request.
    """
    for contender in contenders:
        for size in SIZES:
            path = f"/{size}.bin"
            body = (scratch / "www" / f"{size}.bin").read_bytes()
            first = checkWhole(contender, path, body)
            if contender.name == RELAY and first.getheader("Cache-Status") is not None:
                raise BenchError(f"{RELAY}: GET {path} answered from a cache: {first.getheader('Cache-Status')}")
            if contender.name in (CACHED, NGINX):
                checkHit(contender, path, body)


def checkHit(contender: Contender, path: str, body: bytes) -> None:
    response = checkWhole(contender, path, body)
    if not isHit(contender, response):
        field = "Cache-Status" if contender.name == CACHED else "X-Cache-Status"
        raise BenchError(
            f"{contender.name}: GET {path} is not a cache hit ({field}: {response.getheader(field)!r}); "
            "not benchmarking misses"
        )


def ratios(results: Sequence[Result]) -> Dict[str, Dict[str, float]]:
    rate = {(r.contender, r.size): r.requests_per_sec for r in results}
    return {
        f"{top}/{bottom}": {
            size: rate[(top, size)] / rate[(bottom, size)]
            for size in SIZES
            if rate.get((bottom, size)) and (top, size) in rate
        }
        for top, bottom in RATIOS
    }


def printReport(results: Sequence[Result]) -> None:
    common.printTable(results, sys.stdout)
    for name, bySize in ratios(results).items():
        for size, ratio in bySize.items():
            target = f" (target >= {TARGET:g}x on CPython)" if name == f"{CACHED}/{RELAY}" else ""
            print(f"{name} requests/s, {size}: {ratio:.2f}x{target}")


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = common.baseParser(__doc__, BENCH / "cache-bench.toml")
    ports = {"origin": ORIGIN_PORT, CACHED: CACHED_PORT, RELAY: RELAY_PORT, NGINX: NGINX_PORT}
    common.addOutputArguments(parser, ports)
    arguments = parser.parse_args(argv)
    common.checkArguments(parser, arguments, list(ports.values()))
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    script = "cache.py"
    arguments = parseArguments(argv)
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"{script}: no {' or '.join(missing)} on PATH; apt-get install -y nginx wrk", file=sys.stderr)
        return 1
    started = common.begin(script, arguments, f"cache hits; wrk -t1 -c{arguments.connections} -d{arguments.duration}s")
    if started is None:
        return 1
    python, cores = started
    origin = ORIGIN_PORT + arguments.port_offset
    scratch = Path(tempfile.mkdtemp(prefix="dualproxy-bench-cache-"))
    processes = Processes()
    results: List[Result] = []
    try:
        serverList = servers(arguments, scratch, cores)
        for server in serverList:
            if common.accepting(server.contender.port):
                raise BenchError(
                    f"port {server.contender.port} (for {server.contender.name}) is in use:"
                    " stop what listens there or pass --port-offset"
                )
        running = {}
        for server in serverList:
            log = scratch / "logs" / f"{server.contender.name}.log"
            process = processes.start(common.pinned(server.core, server.argv), log, server.env)
            common.waitForPort(server.contender.name, server.contender.port, process, log)
            running[server.contender.name] = (process, log)
        contenders = [server.contender for server in serverList]
        warm(contenders, scratch)
        # One contender at a time under load; the idle ones wait in epoll.
        for size in SIZES:
            path = f"/{size}.bin"
            body = (scratch / "www" / f"{size}.bin").read_bytes()
            for contender in contenders:
                if arguments.warmup:
                    common.wrk(contender, origin, path, arguments.warmup, arguments.connections, cores.origin)
                output = common.wrk(contender, origin, path, arguments.duration, arguments.connections, cores.origin)
                results.append(common.parseWrk(contender.name, size, output))
                process, log = running[contender.name]
                if process.poll() is not None:
                    raise BenchError(f"{contender.name} exited during the run:{common.logTail(log)}")
                if contender.name in (CACHED, NGINX):
                    checkHit(contender, path, body)  # still hits after the run
                print(f"  {contender.name} {size}: {results[-1].requests_per_sec:.1f} requests/s", file=sys.stderr)
    except BenchError as e:
        print(f"{script}: {e}", file=sys.stderr)
        if results:
            printReport(results)
        return 1
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        return 130
    finally:
        processes.stopAll()
        common.dropScratch(script, scratch, arguments.keep)
    printReport(results)
    common.writeReport(arguments, python, cores.proxy is not None, results, ratios=ratios(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
