"""
Soak: a bounded number of requests (200 000 by default) through dualproxy's
forward and reverse modes at once, from an nginx origin, some clients
aborting mid-response, checking that neither proxy leaks file descriptors and
that each one's memory stays within a bound after warm-up.  Prints figures
and PASS or FAIL; the exit status is 1 on FAIL.

Usage: python3 bench/soak.py [--python PYTHON] [--requests 200000] [--clients 8] [--json FILE]
(see bench/README.md). Needs nginx on PATH.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from common import BENCH, HOST, ORIGIN_PORT, SIZES, BenchError, Contender, Processes, pythonEnv, twistdDualproxy
import common

FORWARD_PORT = 28096
REVERSE_PORT = 28097  # both, and the origin's, move by --port-offset

# What each request is: most ask for 1 KiB; some for 1 MiB read whole; some
# for 1 MiB abandoned part way, on a connection of its own whose small receive
# buffer keeps the proxy from writing the whole response into the kernel
# before the client tears the connection down (RST) under it.
ABORT_SHARE = 0.02
LARGE_SHARE = 0.01
ABORT_RECEIVE_BUFFER = 16384
# A client connection ends (cleanly) after each request with this chance,
# so that connections come and go all along.
CLOSE_SHARE = 0.02
# Seconds a request may take before it counts as an error.
REQUEST_TIMEOUT = 30.0
# Seconds to wait, at each quiet point, for a proxy to close every connection.
QUIET_TIMEOUT = 15.0
# Seconds between two samples of each proxy's descriptors and memory.
SAMPLE_EVERY = 0.5

# The bounds.  Descriptors: at the quiet point after the run, at most this
# many more than at the one after warm-up (both with no connection open).
FD_SLACK = 5
# Memory: the highest resident size seen after warm-up, at most this many
# times the size after warm-up, plus this many MiB.
RSS_FACTOR = 1.5
RSS_SLACK_MIB = 32


@dataclass
class Tally:
    """
    What the clients of one mode did.
    """

    done: int = 0  # answered 200 and read whole
    aborted: int = 0  # abandoned mid-response on purpose
    errors: int = 0  # anything else: another status, a short body, a reset, a timeout
    connections: int = 0
    examples: List[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.examples) < 5:
            self.examples.append(what)


@dataclass
class Mode:
    """
    One proxy under load: where it listens, how requests name the origin,
    how many requests are left for it, what happened to them.
    """

    name: str
    port: int
    origin: int
    absoluteForm: bool
    left: int = 0
    tally: Tally = field(default_factory=Tally)
    finishedAt: float = 0.0  # when its last client of a phase was done

    def count(self) -> int:
        return self.tally.done + self.tally.aborted + self.tally.errors

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def request(self, path: str) -> bytes:
        target = f"http://{HOST}:{self.origin}{path}" if self.absoluteForm else path
        return f"GET {target} HTTP/1.1\r\nHost: {HOST}:{self.origin}\r\n\r\n".encode()


@dataclass(frozen=True)
class Census:
    """
    A proxy's open descriptors: its client connections, its connections to
    the origin, and the rest (listening socket, reactor, logs, pipes).
    """

    total: int
    clients: int
    upstream: int

    @property
    def quiet(self) -> bool:
        return self.clients == 0 and self.upstream == 0


@dataclass(frozen=True)
class Sample:
    census: Census
    rssKiB: int


# Pure logic


def choose(rng: random.Random) -> str:
    """
    What the next request is: "abort", "large" or "small".
    """
    draw = rng.random()
    if draw < ABORT_SHARE:
        return "abort"
    if draw < ABORT_SHARE + LARGE_SHARE:
        return "large"
    return "small"


def parseTCPTable(text: str) -> Dict[str, Tuple[int, int, bool]]:
    """
    /proc/net/tcp's sockets by inode: local port, remote port, listening.
    """
    sockets = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        sockets[inode] = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state == "0A")
    return sockets


def countDescriptors(links: Iterable[str], sockets: Dict[str, Tuple[int, int, bool]], port: int,
                     origin: int) -> Census:
    """
    Sort a proxy's descriptors (what each of /proc/PID/fd/* links to) into
    client connections (to C{port}), connections to C{origin}, and the rest.
    """
    total = clients = upstream = 0
    for link in links:
        total += 1
        if not link.startswith("socket:["):
            continue
        found = sockets.get(link[len("socket:["):-1])
        if found is None:
            continue
        local, remote, listening = found
        if local == port and not listening:
            clients += 1
        elif remote == origin:
            upstream += 1
    return Census(total, clients, upstream)


def rssBound(warmKiB: int) -> int:
    return int(warmKiB * RSS_FACTOR) + RSS_SLACK_MIB * 1024


def checks(modes: Sequence[Mode], warm: Dict[str, Sample], end: Dict[str, Sample], peak: Dict[str, int],
           alive: Dict[str, bool], tracebacks: Dict[str, int]) -> List[Tuple[str, bool]]:
    """
    Each bound of the soak, as (what it says, held).
    """
    found = []
    for mode in modes:
        name = mode.name
        found.append((f"{name}: every request not abandoned answered 200 and read whole "
                      f"({mode.tally.errors} errors)", mode.tally.errors == 0))
        found.append((f"{name}: still running, no traceback in its log ({tracebacks[name]})",
                      alive[name] and tracebacks[name] == 0))
        w, e = warm[name].census, end[name].census
        found.append((f"{name}: no connection left open at the end ({e.clients} client, {e.upstream} origin)",
                      e.quiet))
        found.append((f"{name}: descriptors {w.total} after warm-up, {e.total} at the end: growth "
                      f"{e.total - w.total} <= {FD_SLACK}", e.total - w.total <= FD_SLACK))
        bound = rssBound(warm[name].rssKiB)
        found.append((f"{name}: peak RSS after warm-up {peak[name] / 1024:.1f} MiB <= {bound / 1024:.1f} MiB "
                      f"({RSS_FACTOR} x {warm[name].rssKiB / 1024:.1f} + {RSS_SLACK_MIB})", peak[name] <= bound))
    return found


# Reading the proxies from /proc


def sample(mode: Mode, pid: int) -> Sample:
    """
    The descriptors and resident memory of C{mode}'s proxy, process C{pid}.
    """
    links = []
    rss = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except FileNotFoundError:
                continue  # closed meanwhile
        with open(f"/proc/{pid}/net/tcp") as table:
            sockets = parseTCPTable(table.read())
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError) as e:
        raise BenchError(f"the {mode.name} proxy (pid {pid}) is gone") from e
    return Sample(countDescriptors(links, sockets, mode.port, mode.origin), rss)


# The load


async def readResponse(reader: asyncio.StreamReader, abortAfter: Optional[int]) -> Tuple[int, int, bool]:
    """
    Read one response: (status, body bytes read, whether the connection may
    be reused).  With C{abortAfter}, stop reading the body after about that
    many bytes.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ValueError(f"no Content-Length in a {status} response")
    length = int(headers["content-length"])
    if abortAfter is not None:
        length = min(length, abortAfter)
    read = 0
    while read < length:
        chunk = await reader.read(min(65536, length - read))
        if not chunk:
            raise ConnectionError(f"body cut after {read} of {length} bytes")
        read += len(chunk)
    return status, read, headers.get("connection", "").lower() != "close"


async def connect(port: int, receiveBuffer: Optional[int] = None):
    """
    A connection to C{port}, with a receive buffer of that size if given.
    """
    if receiveBuffer is None:
        return await asyncio.open_connection(HOST, port)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def abandon(mode: Mode, rng: random.Random) -> None:
    """
    Ask for 1 MiB on a connection of its own, read part of the answer, and
    tear the connection down.
    """
    writer = None
    try:
        reader, writer = await asyncio.wait_for(connect(mode.port, ABORT_RECEIVE_BUFFER), REQUEST_TIMEOUT)
        mode.tally.connections += 1
        writer.write(mode.request("/1m.bin"))
        status, _, _ = await asyncio.wait_for(readResponse(reader, rng.randrange(1, 256 * 1024)), REQUEST_TIMEOUT)
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
        mode.tally.error(f"GET /1m.bin (to abandon): {e!r}")
    else:
        if status == 200:
            mode.tally.aborted += 1
        else:
            mode.tally.error(f"GET /1m.bin (to abandon): {status}")
    if writer is not None:
        writer.transport.abort()


async def client(mode: Mode, rng: random.Random) -> None:
    """
    Make requests through C{mode}'s proxy while it has some left, on
    keep-alive connections opened and closed along the way.
    """
    reader: Optional[asyncio.StreamReader] = None
    writer: Optional[asyncio.StreamWriter] = None
    tally = mode.tally
    while mode.take():
        kind = choose(rng)
        if kind == "abort":
            await abandon(mode, rng)
            continue
        path = "/1k.bin" if kind == "small" else "/1m.bin"
        expected = SIZES["1k"] if kind == "small" else SIZES["1m"]
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(connect(mode.port), REQUEST_TIMEOUT)
                tally.connections += 1
            assert reader is not None
            writer.write(mode.request(path))
            status, read, reusable = await asyncio.wait_for(readResponse(reader, None), REQUEST_TIMEOUT)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            tally.error(f"GET {path}: {e!r}")
            if writer is not None:
                writer.transport.abort()
            reader = writer = None
            continue
        if status != 200 or read != expected:
            tally.error(f"GET {path}: {status}, {read} of {expected} bytes")
        else:
            tally.done += 1
        if not reusable or rng.random() < CLOSE_SHARE:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def phase(modes: Sequence[Mode], clients: int, seed: int, report: Callable[[], Awaitable[None]]) -> None:
    """
    Every mode's requests, C{clients} connections at a time for each; ends
    when all are done and every client has closed its connection.
    """
    async def run(index: int, mode: Mode) -> None:
        await asyncio.gather(*(client(mode, random.Random(seed * 1000 + index * 100 + n)) for n in range(clients)))
        mode.finishedAt = time.monotonic()

    tasks = [asyncio.ensure_future(run(index, mode)) for index, mode in enumerate(modes)]
    watcher = asyncio.ensure_future(report())
    try:
        await asyncio.gather(*tasks)
    finally:
        watcher.cancel()
        for task in tasks:
            task.cancel()


async def quiet(pids: Dict[str, int], modes: Sequence[Mode]) -> Dict[str, Sample]:
    """
    Each proxy's sample once it holds no connection (idle origin
    connections close after soak.toml's upstream_idle), or after
    L{QUIET_TIMEOUT} seconds.  Polled: nothing tells when a proxy has closed
    a connection.
    """
    deadline = time.monotonic() + QUIET_TIMEOUT
    while True:
        samples = {mode.name: sample(mode, pids[mode.name]) for mode in modes}
        if all(s.census.quiet for s in samples.values()) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.2)


async def soak(arguments: argparse.Namespace, modes: Sequence[Mode], pids: Dict[str, int]) -> dict:
    """
    Warm-up, quiet point, the rest of the requests (sampled all along),
    quiet point; returns the figures.
    """
    total = arguments.requests
    warmup = arguments.warmup
    for mode, share in zip(modes, (warmup // 2, warmup - warmup // 2)):
        mode.left = share
    started = time.monotonic()

    async def nothing() -> None:
        return None

    await phase(modes, arguments.clients, 1, nothing)
    warm = await quiet(pids, modes)
    print(f"  warm-up: {warmup} requests in {time.monotonic() - started:.0f} s; "
          + "; ".join(f"{name} {s.census.total} fds, {s.rssKiB / 1024:.1f} MiB" for name, s in warm.items()),
          file=sys.stderr, flush=True)
    rest = total - warmup
    for mode, share in zip(modes, (rest // 2, rest - rest // 2)):
        mode.left = share
    counted = {mode.name: mode.count() for mode in modes}
    peak = {name: s.rssKiB for name, s in warm.items()}
    highestFds = {name: s.census.total for name, s in warm.items()}
    measured = time.monotonic()

    async def watch() -> None:
        nextReport = measured + 30
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            for mode in modes:
                try:
                    now = sample(mode, pids[mode.name])
                except BenchError:
                    return  # reported at the quiet point after the run
                peak[mode.name] = max(peak[mode.name], now.rssKiB)
                highestFds[mode.name] = max(highestFds[mode.name], now.census.total)
            if time.monotonic() >= nextReport:
                nextReport += 30
                done = sum(m.count() for m in modes)
                print(f"  {done}/{total} requests, {time.monotonic() - started:.0f} s; RSS "
                      + ", ".join(f"{name} {kib / 1024:.1f} MiB" for name, kib in peak.items()) + " (peak)",
                      file=sys.stderr, flush=True)

    await phase(modes, arguments.clients, 2, watch)
    elapsed = time.monotonic() - measured
    end = await quiet(pids, modes)
    for name, s in end.items():
        peak[name] = max(peak[name], s.rssKiB)
    return {"warm": warm, "end": end, "peak": peak, "highestFds": highestFds, "seconds": elapsed,
            "totalSeconds": time.monotonic() - started,
            "rates": {mode.name: (mode.count() - counted[mode.name]) / max(mode.finishedAt - measured, 1e-3)
                      for mode in modes}}


# Running it


def tracebacksIn(log: Path) -> int:
    try:
        return log.read_text(errors="replace").count("Traceback (most recent call last)")
    except OSError:
        return 0


def printFigures(modes: Sequence[Mode], figures: dict, found: List[Tuple[str, bool]], out=sys.stdout) -> None:
    print(f"{'mode':<8} {'requests':>9} {'answered':>9} {'aborted':>8} {'errors':>7} {'connections':>11} "
          f"{'req/s':>7}", file=out)
    for mode in modes:
        t = mode.tally
        print(f"{mode.name:<8} {mode.count():>9} {t.done:>9} {t.aborted:>8} {t.errors:>7} {t.connections:>11} "
              f"{figures['rates'][mode.name]:>7.0f}", file=out)
    print(f"(counts include warm-up; req/s after it, over {figures['seconds']:.0f} s; "
          f"whole run {figures['totalSeconds']:.0f} s)", file=out)
    print(f"{'proxy':<8} {'fds warm-up':>11} {'fds end':>8} {'fds max':>8} {'RSS MiB warm-up':>16} {'peak':>7} "
          f"{'end':>7}", file=out)
    for mode in modes:
        name = mode.name
        warm, end = figures["warm"][name], figures["end"][name]
        print(f"{name:<8} {warm.census.total:>11} {end.census.total:>8} {figures['highestFds'][name]:>8} "
              f"{warm.rssKiB / 1024:>16.1f} {figures['peak'][name] / 1024:>7.1f} {end.rssKiB / 1024:>7.1f}",
              file=out)
    for mode in modes:
        for example in mode.tally.examples:
            print(f"{mode.name} error: {example}", file=out)
    for what, held in found:
        print(f"{'PASS' if held else 'FAIL'} {what}", file=out)
    print("PASS" if all(held for _, held in found) else "FAIL", file=out)


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.strip().split("\n\n")[0].split()))
    parser.add_argument("--python", default=sys.executable, help="interpreter running both proxies [default: this one]")
    parser.add_argument("--requests", type=int, default=200000,
                        help="requests in all, warm-up included, half through each proxy [default: %(default)s]")
    parser.add_argument("--warmup", type=int,
                        help="requests before the figures the bounds start from [default: a tenth of --requests]")
    parser.add_argument("--clients", type=int, default=8,
                        help="connections at a time through each proxy [default: %(default)s]")
    parser.add_argument("--config", type=Path, default=BENCH / "soak.toml",
                        help="dualproxy's TOML file, for both proxies [default: %(default)s]")
    common.addOutputArguments(parser, {"origin": ORIGIN_PORT, "forward": FORWARD_PORT, "reverse": REVERSE_PORT})
    arguments = parser.parse_args(argv)
    if arguments.warmup is None:
        arguments.warmup = arguments.requests // 10
    if arguments.clients < 1 or arguments.warmup < 2 or arguments.requests <= arguments.warmup:
        parser.error("--clients must be at least 1, --warmup at least 2 and less than --requests")
    moved = [port + arguments.port_offset for port in (ORIGIN_PORT, FORWARD_PORT, REVERSE_PORT)]
    if not (0 < min(moved) and max(moved) < 65536):
        parser.error("--port-offset puts the ports out of range")
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = parseArguments(argv)
    if not os.path.isdir("/proc/self/fd"):
        print("soak.py: needs /proc (Linux)", file=sys.stderr)
        return 1
    if shutil.which("nginx") is None:
        print("soak.py: no nginx on PATH; apt-get install -y nginx", file=sys.stderr)
        return 1
    try:
        python = common.interpreter(arguments.python)
    except BenchError as e:
        print(f"soak.py: {e}", file=sys.stderr)
        return 1
    print(f"# {python['implementation']} {python['version']} ({python['executable']}), Twisted {python['twisted']};"
          f" {arguments.requests} requests ({arguments.warmup} warm-up), {arguments.clients} connections at a time"
          f" through each proxy; not pinned", flush=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    offset = arguments.port_offset
    origin = ORIGIN_PORT + offset
    modes = [
        Mode("forward", FORWARD_PORT + offset, origin, absoluteForm=True),
        Mode("reverse", REVERSE_PORT + offset, origin, absoluteForm=False),
    ]
    config = str(arguments.config.resolve())
    argvs = {
        "forward": twistdDualproxy(
            arguments.python, "--mode", "forward", "--config", config,
            "--listen", f"tcp:{FORWARD_PORT + offset}:interface={HOST}",
            "--allow-destination", "127.0.0.0/8", "--access-log", "off"),
        "reverse": twistdDualproxy(
            arguments.python, "--mode", "reverse", "--config", config,
            "--listen", f"tcp:{REVERSE_PORT + offset}:interface={HOST}",
            "--backend", f"http://{HOST}:{origin}", "--access-log", "off"),
    }  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="dualproxy-soak-"))
    logs = scratch / "logs"
    processes = Processes()
    try:
        for port in (origin, *(mode.port for mode in modes)):
            if common.accepting(port):
                raise BenchError(f"port {port} is in use: stop what listens there or pass --port-offset")
        nginx = common.prepareOrigin(scratch, origin)
        common.waitForPort("origin", origin, processes.start(nginx, logs / "origin.log"), logs / "origin.log")
        pids = {}
        for mode in modes:
            log = logs / f"{mode.name}.log"
            process = processes.start(argvs[mode.name], log, pythonEnv())
            common.waitForPort(mode.name, mode.port, process, log)
            pids[mode.name] = process.pid
            for size, path in ((SIZES["1k"], "/1k.bin"), (SIZES["1m"], "/1m.bin")):
                if len(common.fetch(Contender(mode.name, mode.port, mode.absoluteForm), origin, path)) != size:
                    raise BenchError(f"{mode.name}: {path} arrived truncated")
        figures = asyncio.run(soak(arguments, modes, pids))
        alive = {mode.name: os.path.isdir(f"/proc/{pids[mode.name]}") for mode in modes}
        tracebacks = {mode.name: tracebacksIn(logs / f"{mode.name}.log") for mode in modes}
    except BenchError as e:
        print(f"soak.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("soak.py: interrupted", file=sys.stderr)
        return 130
    finally:
        processes.stopAll()
        common.dropScratch("soak.py", scratch, arguments.keep)
    found = checks(modes, figures["warm"], figures["end"], figures["peak"], alive, tracebacks)
    printFigures(modes, figures, found)
    passed = all(held for _, held in found)
    if arguments.json:
        report = {
            "python": python,
            "requests": arguments.requests,
            "warmup_requests": arguments.warmup,
            "clients_per_proxy": arguments.clients,
            "seconds_after_warmup": round(figures["seconds"], 1),
            "requests_per_sec_after_warmup": {name: round(rate, 1) for name, rate in figures["rates"].items()},
            "modes": {mode.name: asdict(mode.tally) for mode in modes},
            "proxies": {
                mode.name: {
                    "fds_warmup": asdict(figures["warm"][mode.name].census),
                    "fds_end": asdict(figures["end"][mode.name].census),
                    "fds_max": figures["highestFds"][mode.name],
                    "rss_kib_warmup": figures["warm"][mode.name].rssKiB,
                    "rss_kib_peak": figures["peak"][mode.name],
                    "rss_kib_end": figures["end"][mode.name].rssKiB,
                }
                for mode in modes
            },
            "checks": [{"check": what, "passed": held} for what, held in found],
            "passed": passed,
        }
        arguments.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
