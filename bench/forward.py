"""
Forward-proxy benchmark: wrk through dualproxy's forward mode and through
Twisted's stock forward proxy to an nginx origin, 1 KiB and 1 MiB responses,
all in one run so that the ratio between them is what counts.

Usage: python bench/forward.py [--python PYTHON] [--duration 10] [--json FILE]
(see bench/README.md). Needs nginx and wrk on PATH.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Dict, List, Optional, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
ORIGIN_PORT = 28080
DUALPROXY_PORT = 28087
STOCK_PORT = 28085  # as shared/peers/twrp.py's; all three move by --port-offset
SIZES: Dict[str, int] = {"1k": 1024, "1m": 1024 * 1024}
START_TIMEOUT = 30.0


class BenchError(Exception):
    """
    A failure to report as one line (plus any log it quotes) before exiting.
    """


@dataclass(frozen=True)
class Contender:
    name: str
    port: int
    proxied: bool  # False: wrk asks the origin directly


@dataclass(frozen=True)
class Server:
    """
    How to start the process behind a contender.
    """

    contender: Contender
    argv: List[str]
    core: Optional[int]
    env: Optional[Dict[str, str]] = None


@dataclass(frozen=True)
class Cores:
    """
    The cores to pin to, or None for both when pinning is impossible.
    """

    origin: Optional[int]  # nginx and wrk
    proxy: Optional[int]  # the proxy under test


@dataclass(frozen=True)
class Result:
    contender: str
    size: str
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


class Processes:
    """
    The servers this run started, stopped by pid in reverse order.
    """

    def __init__(self) -> None:
        self._started: List[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], log: Path, env: Optional[Dict[str, str]] = None) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            # A session of its own: Ctrl-C reaches only this script, which then stops them in order.
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._started.append(process)
        return process

    def stopAll(self) -> None:
        for process in reversed(self._started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._started.clear()


def pinned(core: Optional[int], argv: Sequence[str]) -> List[str]:
    return (["taskset", "-c", str(core)] if core is not None else []) + list(argv)


def chooseCores() -> Cores:
    """
    Origin and wrk on core 0, the proxy on core 1, when this machine allows.
    """
    if shutil.which("taskset") is None:
        print("forward.py: taskset not found; not pinning (apt-get install -y util-linux)", file=sys.stderr)
        return Cores(None, None)
    if hasattr(os, "sched_getaffinity"):
        usable = os.sched_getaffinity(0)
    else:  # PyPy
        usable = set(range(os.cpu_count() or 1))
    if not {0, 1} <= usable:
        print("forward.py: cores 0 and 1 are not both available; not pinning", file=sys.stderr)
        return Cores(None, None)
    return Cores(origin=0, proxy=1)


def accepting(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def logTail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n    {line}" for line in text)


def waitForPort(name: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """
    Poll until C{port} accepts connections, failing early if C{process} exits.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while not accepting(port):
        if process.poll() is not None:
            status = process.returncode
            raise BenchError(f"{name} exited with status {status} before listening on {port}:{logTail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"{name} is not accepting on {HOST}:{port} after {START_TIMEOUT:.0f} s:{logTail(log)}")
        time.sleep(0.05)


def fetch(contender: Contender, origin: int, path: str) -> bytes:
    """
    One request as wrk makes it, to check that the contender relays it whole.
    """
    connection = http.client.HTTPConnection(HOST, contender.port, timeout=30)
    target = f"http://{HOST}:{origin}{path}" if contender.proxied else path
    try:
        connection.request("GET", target, headers={"Host": f"{HOST}:{origin}"})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise BenchError(f"{contender.name}: GET {target} failed: {e!r}") from e
    finally:
        connection.close()
    if response.status != 200:
        raise BenchError(f"{contender.name}: GET {target} answered {response.status} {response.reason}: {body[:200]!r}")
    return body


def wrk(contender: Contender, origin: int, path: str, seconds: int, connections: int, core: Optional[int]) -> str:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if contender.proxied:
        argv += ["-s", str(BENCH / "fwd.lua"), f"http://{HOST}:{contender.port}"]
    else:
        argv.append(f"http://{HOST}:{contender.port}{path}")
    try:
        completed = subprocess.run(
            pinned(core, argv),
            env={**os.environ, "O": f"{HOST}:{origin}", "P": path},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=seconds + 60,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"wrk against {contender.name} did not finish in {e.timeout:.0f} s") from e
    output = completed.stdout.decode(errors="replace")
    if completed.returncode != 0:
        raise BenchError(f"wrk against {contender.name} exited with status {completed.returncode}:\n{output}")
    return output


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _latencyMs(output: str, percentile: int) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {percentile}% latency in wrk's output:\n{output}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parseWrk(contender: str, size: str, output: str) -> Result:
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if rate is None:
        raise BenchError(f"no Requests/sec in wrk's output:\n{output}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Result(
        contender=contender,
        size=size,
        requests_per_sec=float(rate.group(1)),
        p50_ms=_latencyMs(output, 50),
        p99_ms=_latencyMs(output, 99),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def interpreter(python: str) -> Dict[str, str]:
    """
    Name and versions of C{python}, which must import Twisted.
    """
    probe = (
        "import json, platform, sys, twisted; print(json.dumps({'executable': sys.executable, "
        "'implementation': platform.python_implementation(), 'version': platform.python_version(), "
        "'twisted': twisted.__version__}))"
    )
    try:
        completed = subprocess.run([python, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    except OSError as e:
        raise BenchError(f"cannot run {python}: {e}") from e
    if completed.returncode != 0:
        last = completed.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise BenchError(f"{python} cannot import twisted: {' '.join(last)}")
    info: Dict[str, str] = json.loads(completed.stdout)
    return info


def startAll(
    processes: Processes, scratch: Path, python: str, config: Path, cores: Cores, offset: int
) -> List[Contender]:
    """
    Write the origin's files and start the origin and both proxies; return the
    contenders once every one accepts connections.
    """
    www = scratch / "www"
    for folder in (www, scratch / "logs"):
        folder.mkdir()
    for name, size in SIZES.items():
        (www / f"{name}.bin").write_bytes(os.urandom(size))
    # Running as root, nginx's workers are "nobody": they must be able to read the files.
    for path in (scratch, www, *www.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    origin = scratch / "origin.conf"
    template = (BENCH / "origin.conf").read_text()
    origin.write_text(template.replace("@DIR@", str(scratch)).replace("@PORT@", str(ORIGIN_PORT + offset)))

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    dualproxy = [
        python, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
        "dualproxy", "--mode", "forward", "--config", str(config),
        "--listen", f"tcp:{DUALPROXY_PORT + offset}:interface={HOST}",
        "--allow-destination", "127.0.0.0/8", "--access-log", "off",
    ]  # fmt: skip
    nginx = ["nginx", "-p", str(scratch), "-e", str(scratch / "logs" / "origin.err"), "-c", str(origin)]
    servers = [
        Server(Contender("direct", ORIGIN_PORT + offset, proxied=False), nginx + ["-g", "daemon off;"], cores.origin),
        Server(Contender("dualproxy", DUALPROXY_PORT + offset, proxied=True), dualproxy, cores.proxy, env),
        Server(
            Contender("stock", STOCK_PORT + offset, proxied=True),
            [python, str(BENCH / "stock_forward.py"), str(STOCK_PORT + offset)],
            cores.proxy,
        ),
    ]
    contenders = [server.contender for server in servers]
    for contender in contenders:
        if accepting(contender.port):
            raise BenchError(
                f"port {contender.port} (for {contender.name}) is in use: stop what listens there or pass --port-offset"
            )
    for server in servers:
        log = scratch / "logs" / f"{server.contender.name}.log"
        process = processes.start(pinned(server.core, server.argv), log, server.env)
        waitForPort(server.contender.name, server.contender.port, process, log)
    for contender in contenders:
        for name, size in SIZES.items():
            if len(fetch(contender, ORIGIN_PORT + offset, f"/{name}.bin")) != size:
                raise BenchError(f"{contender.name}: /{name}.bin arrived truncated")
    return contenders


def ratios(results: Sequence[Result]) -> Dict[str, float]:
    rate = {(r.contender, r.size): r.requests_per_sec for r in results}
    return {size: rate[("dualproxy", size)] / rate[("stock", size)] for size in SIZES if rate.get(("stock", size))}


def printTable(results: Sequence[Result], out: IO[str]) -> None:
    print(f"{'contender':<10} {'size':<4} {'requests/s':>11} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}", file=out)
    for r in results:
        print(
            f"{r.contender:<10} {r.size:<4} {r.requests_per_sec:>11.1f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f}"
            f" {r.non_2xx + r.socket_errors:>7}",
            file=out,
        )
    for size, ratio in ratios(results).items():
        print(f"dualproxy/stock requests/s, {size}: {ratio:.2f}x", file=out)


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.strip().split("\n\n")[0].split()))
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter running both proxies [default: this one]"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured wrk run [default: 10]")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk before each measured run [default: 2]")
    parser.add_argument("--connections", type=int, default=32, help="wrk's keep-alive connections [default: 32]")
    parser.add_argument(
        "--config", type=Path, default=BENCH / "forward-bench.toml", help="dualproxy's TOML file [default: %(default)s]"
    )
    parser.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help=f"add this to every port: origin {ORIGIN_PORT}, dualproxy {DUALPROXY_PORT}, stock {STOCK_PORT}"
        " [default: 0]",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (origin files, server logs)")
    arguments = parser.parse_args(argv)
    if arguments.duration < 1 or arguments.warmup < 0 or arguments.connections < 1:
        parser.error("--duration and --connections must be at least 1, --warmup at least 0")
    ports = [port + arguments.port_offset for port in (ORIGIN_PORT, DUALPROXY_PORT, STOCK_PORT)]
    if not (0 < min(ports) and max(ports) < 65536):
        parser.error("--port-offset puts the ports out of range")
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = parseArguments(argv)
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"forward.py: no {' or '.join(missing)} on PATH; apt-get install -y nginx wrk", file=sys.stderr)
        return 1
    try:
        python = interpreter(arguments.python)
    except BenchError as e:
        print(f"forward.py: {e}", file=sys.stderr)
        return 1
    cores = chooseCores()
    pinning = "not pinned" if cores.proxy is None else f"proxy on core {cores.proxy}, origin and wrk on {cores.origin}"
    print(
        f"# {python['implementation']} {python['version']} ({python['executable']}), Twisted {python['twisted']};"
        f" wrk -t1 -c{arguments.connections} -d{arguments.duration}s after {arguments.warmup} s warm-up; {pinning}",
        flush=True,
    )
    # SIGINT (even when started in the background, which ignores it) and SIGTERM unwind, stopping the servers.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    origin = ORIGIN_PORT + arguments.port_offset
    scratch = Path(tempfile.mkdtemp(prefix="dualproxy-bench-"))
    processes = Processes()
    results: List[Result] = []
    try:
        contenders = startAll(
            processes, scratch, arguments.python, arguments.config.resolve(), cores, arguments.port_offset
        )
        for size in SIZES:
            for contender in contenders:
                path = f"/{size}.bin"
                if arguments.warmup:
                    wrk(contender, origin, path, arguments.warmup, arguments.connections, cores.origin)
                output = wrk(contender, origin, path, arguments.duration, arguments.connections, cores.origin)
                results.append(parseWrk(contender.name, size, output))
                print(f"  {contender.name} {size}: {results[-1].requests_per_sec:.1f} requests/s", file=sys.stderr)
    except BenchError as e:
        print(f"forward.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("forward.py: interrupted", file=sys.stderr)
        return 130
    finally:
        processes.stopAll()
        if arguments.keep:
            print(f"forward.py: scratch folder kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    printTable(results, sys.stdout)
    if arguments.json:
        report = {
            "python": python,
            "duration_s": arguments.duration,
            "warmup_s": arguments.warmup,
            "connections": arguments.connections,
            "pinned": cores.proxy is not None,
            "results": [asdict(r) for r in results],
            "dualproxy_over_stock": ratios(results),
        }
        arguments.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
