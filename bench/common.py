"""
What bench/forward.py and bench/reverse.py share: starting the nginx origin
and the contenders pinned to their cores, checking that each relays both
files whole, running wrk against each in turn, parsing its output, printing
the table and ratios, writing the JSON report, and stopping every process
started, by pid.

A script describes its contenders as a list of L{Server}s (the first one the
origin itself, "direct") and hands them to L{run}.
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
from typing import IO, Callable, Dict, List, Optional, Sequence, Tuple

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
ORIGIN_PORT = 28080
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
    absoluteForm: bool = False  # True: wrk speaks to it as to a forward proxy (GET http://origin/path)


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


def chooseCores(script: str) -> Cores:
    """
    Origin and wrk on core 0, the proxy on core 1, when this machine allows.
    """
    if shutil.which("taskset") is None:
        print(f"{script}: taskset not found; not pinning (apt-get install -y util-linux)", file=sys.stderr)
        return Cores(None, None)
    if hasattr(os, "sched_getaffinity"):
        usable = os.sched_getaffinity(0)
    else:  # PyPy
        usable = set(range(os.cpu_count() or 1))
    if not {0, 1} <= usable:
        print(f"{script}: cores 0 and 1 are not both available; not pinning", file=sys.stderr)
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
    target = f"http://{HOST}:{origin}{path}" if contender.absoluteForm else path
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


def wrk(
    contender: Contender,
    origin: int,
    path: str,
    seconds: int,
    connections: int,
    core: Optional[int],
    url: Optional[str] = None,
) -> str:
    """
    Run wrk against C{contender} and return its output; C{url}, when given,
    is the whole target (say, C{https://localhost:PORT/1k.bin}) instead of
    the contender's port on L{HOST} and C{path}.
    """
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if url is not None:
        argv.append(url)
    elif contender.absoluteForm:
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


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _latencyMs(output: str, percentile: int) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {percentile}% latency in wrk's output:\n{output}")
    return float(match.group(1)) * UNITS_MS[match.group(2)]


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


def fillTemplate(name: str, scratch: Path, **values: object) -> Path:
    """
    Copy C{bench/NAME} into C{scratch}, replacing C{@DIR@} by C{scratch} and
    C{@KEY@} by each of C{values}; return the copy's path.
    """
    text = (BENCH / name).read_text().replace("@DIR@", str(scratch))
    for key, value in values.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    copy = scratch / name
    copy.write_text(text)
    return copy


def prepareOrigin(scratch: Path, port: int, sizes: Dict[str, int] = SIZES,
                  template: str = "origin.conf") -> List[str]:
    """
    Write the origin's files (one NAME.bin per entry of C{sizes}) and its
    config (from C{template}) into C{scratch}; return the argv that runs
    nginx on them in the foreground.
    """
    www = scratch / "www"
    for folder in (www, scratch / "logs"):
        folder.mkdir()
    for name, size in sizes.items():
        (www / f"{name}.bin").write_bytes(os.urandom(size))
    # Running as root, nginx's workers are "nobody": they must be able to read
    # the files (and write nginx's cache, for the cache benchmark).
    for path in (scratch, www, *www.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    origin = fillTemplate(template, scratch, port=port)
    log = scratch / "logs" / "origin.err"
    return ["nginx", "-p", str(scratch), "-e", str(log), "-c", str(origin), "-g", "daemon off;"]


def pythonEnv() -> Dict[str, str]:
    """
    This environment with the repository root first on C{PYTHONPATH}, so that
    dualproxy need not be installed, and PyPy's nursery enlarged unless set.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # PyPy's young generation, as `./dev run` and the workers set it
    # (docs/operations.md, "Running on PyPy"); CPython ignores it.
    env.setdefault("PYPY_GC_NURSERY", "32M")
    return env


def twistdDualproxy(python: str, *options: str) -> List[str]:
    return [python, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "dualproxy", *options]


# proxy.py (https://github.com/abhinavsingh/proxy.py), a contender of forward.py
# and reverse.py when its `proxy` executable is found (see findProxypy).
PROXYPY = "proxypy"
PROXYPY_FALLBACK = Path("/tmp/venv-proxypy/bin/proxy")


def addProxypyArgument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--proxypy",
        metavar="PATH",
        help="proxy.py's `proxy` executable, for the proxypy contender"
        f" [default: `proxy` on PATH, else {PROXYPY_FALLBACK} if it exists]",
    )


def findProxypy(script: str, arguments: argparse.Namespace) -> Optional[Dict[str, str]]:
    """
    proxy.py's executable and version, or None, after printing one line,
    when none was given and none is found. A C{--proxypy} that cannot run is
    an error (L{BenchError}).
    """
    given = arguments.proxypy
    if given is not None:
        executable = shutil.which(given)
        if executable is None:
            raise BenchError(f"--proxypy {given}: not an executable")
    else:
        executable = shutil.which("proxy")
        if executable is None and os.access(PROXYPY_FALLBACK, os.X_OK):
            executable = str(PROXYPY_FALLBACK)
        if executable is None:
            print(
                f"{script}: no proxy.py (`proxy` on PATH or {PROXYPY_FALLBACK}), so no {PROXYPY} line"
                " (python3 -m venv /tmp/venv-proxypy && /tmp/venv-proxypy/bin/pip install proxy.py;"
                " or --proxypy PATH)",
                file=sys.stderr,
            )
            return None
    try:
        completed = subprocess.run(
            [executable, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"cannot run {executable} --version: {e}") from e
    output = completed.stdout.decode(errors="replace").strip()
    if completed.returncode != 0:
        raise BenchError(f"{executable} --version exited with status {completed.returncode}: {output[-200:]}")
    return {"executable": executable, "version": output.splitlines()[-1] if output else "?"}


def proxypyPeer(script: str, arguments: argparse.Namespace) -> Optional[Dict[str, str]]:
    """
    When C{arguments.peers} has L{PROXYPY}: find proxy.py (L{findProxypy}),
    print one line naming it, or take it out of C{arguments.peers} when there
    is none. Sets C{arguments.proxypyExecutable}; returns what
    L{findProxypy} does, for the JSON report.
    """
    found = findProxypy(script, arguments) if PROXYPY in arguments.peers else None
    if found is None and PROXYPY in arguments.peers:
        arguments.peers.remove(PROXYPY)
    elif found is not None:
        print(f"# proxy.py {found['version']} ({found['executable']})", flush=True)
    arguments.proxypyExecutable = found["executable"] if found else None
    return found


def proxypyArgv(executable: str, port: int, scratch: Path, *options: str) -> List[str]:
    """
    proxy.py on C{HOST}:C{port}, one acceptor and one worker (threadless, its
    default on Linux), its folders in C{scratch} (it makes them at start-up)
    rather than in ~/.proxy; the rest at proxy.py's defaults.
    """
    data = scratch / PROXYPY
    return [
        executable, "--hostname", HOST, "--port", str(port), "--num-acceptors", "1", "--num-workers", "1",
        "--data-dir", str(data), "--ca-cert-dir", str(data / "certificates"), "--cache-dir", str(data / "cache"),
        *options,
    ]  # fmt: skip


def dropMissingHaproxy(script: str, peers: List[str]) -> None:
    """
    Take haproxy out of C{peers}, saying so, when it is not installed.
    """
    if "haproxy" in peers and shutil.which("haproxy") is None:
        print(f"{script}: no haproxy on PATH, so no haproxy line (apt-get install -y haproxy)", file=sys.stderr)
        peers.remove("haproxy")


def runWithProxypy(script: str, arguments: argparse.Namespace, makeServers: ServerList) -> int:
    """
    L{run}, with proxy.py found first when C{arguments.peers} asks for it
    (L{proxypyPeer}) and named in the JSON report.
    """
    try:
        proxypy = proxypyPeer(script, arguments)
    except BenchError as e:
        print(f"{script}: {e}", file=sys.stderr)
        return 1
    return run(script, arguments, makeServers, report={"proxypy": proxypy} if proxypy else None)


def reverseProxyPeers(peers: Sequence[str], scratch: Path, origin: int, nginxPort: int, haproxyPort: int,
                      core: Optional[int]) -> List[Server]:
    """
    nginx (rp.conf) and HAProxy (hap.cfg) as reverse proxies to C{origin},
    those of them C{peers} names.
    """
    found = []
    if "nginx" in peers:
        conf = fillTemplate("rp.conf", scratch, port=nginxPort, origin=origin)
        nginx = ["nginx", "-p", str(scratch), "-e", str(scratch / "logs" / "rp.err"), "-c", str(conf)]
        found.append(Server(Contender("nginx", nginxPort), nginx + ["-g", "daemon off;"], core))
    if "haproxy" in peers:
        conf = fillTemplate("hap.cfg", scratch, port=haproxyPort, origin=origin)
        found.append(Server(Contender("haproxy", haproxyPort), ["haproxy", "-db", "-f", str(conf)], core))
    return found


def startServers(processes: Processes, scratch: Path, servers: Sequence[Server], origin: int) -> List[Contender]:
    """
    Start C{servers} in order; return their contenders once every one
    accepts connections and relays both files whole.
    """
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
            if len(fetch(contender, origin, f"/{name}.bin")) != size:
                raise BenchError(f"{contender.name}: /{name}.bin arrived truncated")
    return contenders


def ratios(results: Sequence[Result], over: str = "stock") -> Dict[str, float]:
    """
    dualproxy's requests/s over C{over}'s, for each size both were measured at.
    """
    rate = {(r.contender, r.size): r.requests_per_sec for r in results}
    return {
        size: rate[("dualproxy", size)] / rate[(over, size)]
        for size in SIZES
        if rate.get((over, size)) and ("dualproxy", size) in rate
    }


def printTable(results: Sequence[Result], out: IO[str]) -> None:
    width = max([10] + [len(r.contender) for r in results])
    print(f"{'contender':<{width}} {'size':<4} {'requests/s':>11} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}", file=out)
    for r in results:
        print(
            f"{r.contender:<{width}} {r.size:<4} {r.requests_per_sec:>11.1f} {r.p50_ms:>9.2f} {r.p99_ms:>9.2f}"
            f" {r.non_2xx + r.socket_errors:>7}",
            file=out,
        )
    for over in ("stock", PROXYPY):
        for size, ratio in ratios(results, over).items():
            print(f"dualproxy/{over} requests/s, {size}: {ratio:.2f}x", file=out)


def baseParser(doc: str, defaultConfig: Path) -> argparse.ArgumentParser:
    """
    The options both scripts take, but --port-offset, whose help names each
    script's ports (see L{checkArguments}).
    """
    parser = argparse.ArgumentParser(description=" ".join(doc.strip().split("\n\n")[0].split()))
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter running both proxies [default: this one]"
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds of each measured wrk run [default: %(default)s]"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of wrk before each measured run [default: %(default)s]"
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk's keep-alive connections [default: %(default)s]"
    )
    parser.add_argument(
        "--config", type=Path, default=defaultConfig, help="dualproxy's TOML file [default: %(default)s]"
    )
    return parser


def addOutputArguments(parser: argparse.ArgumentParser, ports: Dict[str, int]) -> None:
    parser.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="add this to every port: " + ", ".join(f"{name} {port}" for name, port in ports.items()) + " [default: 0]",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (origin files, server logs)")


def peersParser(known: Sequence[str]) -> Callable[[str], List[str]]:
    """
    The C{type} of a C{--peers} option: names from C{known}, comma-separated,
    or C{none}.
    """

    def parsePeers(value: str) -> List[str]:
        names = [name.strip() for name in value.split(",") if name.strip() and name.strip() != "none"]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown peer {unknown[0]!r} (known: {', '.join(known)}, none)")
        return names

    return parsePeers


def checkArguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace, ports: Sequence[int]) -> None:
    if arguments.duration < 1 or arguments.warmup < 0 or arguments.connections < 1:
        parser.error("--duration and --connections must be at least 1, --warmup at least 0")
    moved = [port + arguments.port_offset for port in ports]
    if not (0 < min(moved) and max(moved) < 65536):
        parser.error("--port-offset puts the ports out of range")


# What a script supplies to L{run}: the servers to start (origin first) in a
# scratch folder holding the origin's files, given its arguments and cores.
ServerList = Callable[[argparse.Namespace, Path, Cores], List[Server]]


def begin(script: str, arguments: argparse.Namespace, load: str) -> Optional[Tuple[Dict[str, str], Cores]]:
    """
    What every benchmark does first: check the interpreter, pick the cores,
    print one line saying what runs where, and make SIGINT (even in the
    background, where it is ignored) and SIGTERM unwind so the servers stop.

    @param load: how the load is generated, for the printed line.
    @return: the interpreter's description and the cores, or None after
        printing why the run cannot start.
    """
    try:
        python = interpreter(arguments.python)
    except BenchError as e:
        print(f"{script}: {e}", file=sys.stderr)
        return None
    cores = chooseCores(script)
    pinning = "not pinned" if cores.proxy is None else f"proxy on core {cores.proxy}, origin and load on {cores.origin}"
    print(
        f"# {python['implementation']} {python['version']} ({python['executable']}), Twisted {python['twisted']};"
        f" {load} after {arguments.warmup} s warm-up; {pinning}",
        flush=True,
    )
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return python, cores


def run(
    script: str,
    arguments: argparse.Namespace,
    makeServers: ServerList,
    tools: Sequence[str] = (),
    report: Optional[Dict[str, object]] = None,
) -> int:
    """
    The whole benchmark: start everything, run wrk against each contender for
    each size, stop everything, print the table, write the JSON report.

    @param script: the script's name, to begin messages with.
    @param tools: programs needed besides nginx and wrk.
    @param report: more entries for the JSON report (say, proxy.py's version).
    @return: the exit status.
    """
    required = ("nginx", "wrk", *tools)
    missing = [tool for tool in required if shutil.which(tool) is None]
    if missing:
        print(f"{script}: no {' or '.join(missing)} on PATH; apt-get install -y {' '.join(required)}", file=sys.stderr)
        return 1
    started = begin(script, arguments, f"wrk -t1 -c{arguments.connections} -d{arguments.duration}s")
    if started is None:
        return 1
    python, cores = started
    origin = ORIGIN_PORT + arguments.port_offset
    scratch = Path(tempfile.mkdtemp(prefix="dualproxy-bench-"))
    processes = Processes()
    results: List[Result] = []
    try:
        contenders = startServers(processes, scratch, makeServers(arguments, scratch, cores), origin)
        for size in SIZES:
            for contender in contenders:
                path = f"/{size}.bin"
                if arguments.warmup:
                    wrk(contender, origin, path, arguments.warmup, arguments.connections, cores.origin)
                output = wrk(contender, origin, path, arguments.duration, arguments.connections, cores.origin)
                results.append(parseWrk(contender.name, size, output))
                print(f"  {contender.name} {size}: {results[-1].requests_per_sec:.1f} requests/s", file=sys.stderr)
    except BenchError as e:
        print(f"{script}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        return 130
    finally:
        processes.stopAll()
        dropScratch(script, scratch, arguments.keep)
    printTable(results, sys.stdout)
    extra: Dict[str, object] = {"dualproxy_over_stock": ratios(results)}
    if any(r.contender == PROXYPY for r in results):
        extra["dualproxy_over_proxypy"] = ratios(results, PROXYPY)
    writeReport(arguments, python, cores.proxy is not None, results, **extra, **(report or {}))
    return 0


def dropScratch(script: str, scratch: Path, keep: bool) -> None:
    """
    Remove a run's scratch folder, or say where it is kept (--keep).
    """
    if keep:
        print(f"{script}: scratch folder kept: {scratch}", file=sys.stderr)
    else:
        shutil.rmtree(scratch, ignore_errors=True)


def writeReport(arguments: argparse.Namespace, python: str, pinned: bool, results: list, **extra) -> None:
    """
    The --json report: the run's settings, its results and what the
    script adds (its ratios), if --json was given.
    """
    if not arguments.json:
        return
    report = {
        "python": python,
        "duration_s": arguments.duration,
        "warmup_s": arguments.warmup,
        "connections": arguments.connections,
        "pinned": pinned,
        "results": [asdict(r) for r in results],
        **extra,
    }
    arguments.json.write_text(json.dumps(report, indent=2) + "\n")
