"""
TLS-termination benchmark: dualproxy's reverse mode terminating TLS next to
nginx terminating TLS, both relaying 1 KiB responses from the same nginx
origin, over HTTP/1.1 (wrk) and HTTP/2 (h2load), in one run, so that the
dualproxy/nginx ratio for each protocol is what counts.

Usage: python bench/tls.py [--python PYTHON] [--duration 10] [--json FILE]
(see bench/README.md). Needs nginx and wrk on PATH; h2load (nghttp2-client)
for the HTTP/2 lines, which are skipped, with a note, without it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from common import BENCH, HOST, ORIGIN_PORT, REPO, BenchError, Contender, Cores, Processes, Server
import common

DUALPROXY_TLS_PORT = 28443
DUALPROXY_PLAIN_PORT = 28089  # dualproxy's plain --listen, unused by the clients
NGINX_TLS_PORT = 28444  # all four move by --port-offset
NAME = "localhost"  # the certificate's name and the host the clients ask for (127.0.0.1 in /etc/hosts)
PATH = "/1k.bin"
SIZE = 1024
CONTENDERS = ("dualproxy", "nginx")
PROTOCOLS = ("h1", "h2")


@dataclass(frozen=True)
class Row:
    contender: str
    protocol: str  # "h1" (wrk) or "h2" (h2load)
    requests_per_sec: float
    p50_ms: Optional[float]  # wrk only
    p99_ms: Optional[float]  # wrk only
    mean_ms: Optional[float]  # h2load only: its mean "time for request"
    errors: int  # wrk: non-2xx + socket errors; h2load: failed + errored + timeout + non-2xx


def makeCertificate(python: str, scratch: Path) -> Tuple[Path, Path, Path]:
    """
    Issue a certificate for L{NAME} from a fresh CA with tests/certs.py, run
    by C{python} (which has cryptography, as dualproxy needs it for TLS).

    @return: the CA certificate, the leaf certificate and its key.
    """
    program = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from tests.certs import CertificateAuthority; "
        "ca = CertificateAuthority(sys.argv[2]); cert, key = ca.issue(sys.argv[3], names=[sys.argv[3]]); "
        "print(json.dumps([ca.certPath, cert, key]))"
    )
    completed = subprocess.run(
        [python, "-c", program, str(REPO), str(scratch), NAME], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    if completed.returncode != 0:
        raise BenchError(f"cannot make a certificate: {completed.stderr.decode(errors='replace').strip()}")
    ca, cert, key = (Path(p) for p in json.loads(completed.stdout))
    for path in (scratch, ca, cert, key):  # nginx reads the key as root before dropping, but be readable anyway
        path.chmod(0o755 if path.is_dir() else 0o644)
    return ca, cert, key


def dualproxyConfig(arguments: argparse.Namespace, scratch: Path, cert: Path, key: Path) -> Path:
    """
    The TOML file given by --config, with a [tls] table added: one TLS
    listener, one certificate, HTTP/2 offered; and an idle upstream
    connection allowed for every request h2load keeps in flight (see
    L{idleConnections}).
    """
    base = arguments.config.read_text()
    base, found = re.subn(r"^max_idle_per_host\s*=.*$", f"max_idle_per_host = {idleConnections(arguments)}", base,
                          flags=re.MULTILINE)
    if not found:
        raise BenchError(f"{arguments.config} sets no upstream.max_idle_per_host for tls.py to size")
    if re.search(r"^\s*\[\s*tls\s*\]", base, re.MULTILINE):
        raise BenchError(f"{arguments.config} has a [tls] table already; tls.py adds its own")
    port = DUALPROXY_TLS_PORT + arguments.port_offset
    tls = (
        "\n[tls]\n"
        f'listen = ["tcp:{port}:interface={HOST}"]\n'
        f"certificates = [{{ cert = {json.dumps(str(cert))}, key = {json.dumps(str(key))} }}]\n"
        "http2 = true\n"
    )
    config = scratch / "tls-bench.toml"
    config.write_text(base.rstrip("\n") + "\n" + tls)
    return config


def idleConnections(arguments: argparse.Namespace) -> int:
    """
    Idle origin connections each proxy keeps (dualproxy's
    max_idle_per_host, nginx's keepalive): one per request in flight, which
    for HTTP/2 is h2load's connections times its streams.  With fewer, both
    close and reopen origin connections all the time (nearly half of
    dualproxy's CPU with 64 for 320 streams), which measures connection
    set-up instead of TLS termination.
    """
    return arguments.connections * max(arguments.streams, 1)


def servers(arguments: argparse.Namespace, scratch: Path, cores: Cores, cert: Path, key: Path) -> List[Server]:
    """
    dualproxy and nginx terminating TLS; each Contender's port is its TLS port.
    """
    offset = arguments.port_offset
    origin = ORIGIN_PORT + offset
    dualproxy = common.twistdDualproxy(
        arguments.python, "--mode", "reverse",
        "--config", str(dualproxyConfig(arguments, scratch, cert, key)),
        "--backend", f"http://{HOST}:{origin}", "--access-log", "off",
        "--listen", f"tcp:{DUALPROXY_PLAIN_PORT + offset}:interface={HOST}",
    )  # fmt: skip
    conf = common.fillTemplate("tls-rp.conf", scratch, port=NGINX_TLS_PORT + offset, origin=origin, cert=cert, key=key,
                               keepalive=idleConnections(arguments))
    nginx = ["nginx", "-p", str(scratch), "-e", str(scratch / "logs" / "tls-rp.err"), "-c", str(conf)]
    return [
        Server(Contender("dualproxy", DUALPROXY_TLS_PORT + offset), dualproxy, cores.proxy, common.pythonEnv()),
        Server(Contender("nginx", NGINX_TLS_PORT + offset), nginx + ["-g", "daemon off;"], cores.proxy),
    ]


def url(contender: Contender) -> str:
    return f"https://{NAME}:{contender.port}{PATH}"


def checkHttps(contender: Contender, ca: Path) -> None:
    """
    One HTTP/1.1 request over TLS, verifying the certificate against the CA,
    to check that the contender serves it and relays the file whole.
    """
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection(NAME, contender.port, timeout=30, context=context)
    try:
        connection.request("GET", PATH)
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as e:
        raise BenchError(f"{contender.name}: GET {url(contender)} failed: {e!r}") from e
    finally:
        connection.close()
    if response.status != 200 or len(body) != SIZE:
        raise BenchError(f"{contender.name}: GET {url(contender)} answered {response.status}, {len(body)} bytes")


def h2load(contender: Contender, arguments: argparse.Namespace, core: Optional[int]) -> str:
    argv = [
        "h2load", "-t1", f"-c{arguments.connections}", f"-m{arguments.streams}",
        f"-D{arguments.duration}", f"--warm-up-time={arguments.warmup}", url(contender),
    ]  # fmt: skip
    if arguments.warmup == 0:
        argv.remove("--warm-up-time=0")
    try:
        completed = subprocess.run(
            common.pinned(core, argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=arguments.duration + arguments.warmup + 60,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"h2load against {contender.name} did not finish in {e.timeout:.0f} s") from e
    output = completed.stdout.decode(errors="replace")
    if completed.returncode != 0:
        raise BenchError(f"h2load against {contender.name} exited with status {completed.returncode}:\n{output}")
    return output


_H2LOAD_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parseH2load(contender: str, output: str) -> Row:
    """
    The "finished in 10.00s, N req/s" line, the request counts and status
    codes, and the mean "time for request".
    """
    if "No protocol negotiated" in output or "h2 is not negotiated" in output.lower():
        raise BenchError(f"{contender} did not negotiate h2 with h2load:\n{output}")
    rate = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s", output, re.MULTILINE)
    counts = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored,"
        r" (\d+) timeout",
        output,
        re.MULTILINE,
    )
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output, re.MULTILINE)
    mean = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)\b", output, re.MULTILINE)
    if rate is None or counts is None or codes is None:
        raise BenchError(f"cannot read h2load's output:\n{output}")
    if int(counts.group(4)) == 0:
        raise BenchError(f"h2load: no request to {contender} succeeded:\n{output}")
    failed, errored, timeout = (int(counts.group(i)) for i in (5, 6, 7))
    non2xx = sum(int(codes.group(i)) for i in (2, 3, 4))
    return Row(
        contender=contender,
        protocol="h2",
        requests_per_sec=float(rate.group(1)),
        p50_ms=None,
        p99_ms=None,
        mean_ms=float(mean.group(1)) * _H2LOAD_UNITS_MS[mean.group(2)] if mean else None,
        errors=failed + errored + timeout + non2xx,
    )


def measure(
    contender: Contender, arguments: argparse.Namespace, cores: Cores, protocols: Sequence[str], origin: int
) -> List[Row]:
    rows = []
    for protocol in protocols:
        if protocol == "h1":
            target = url(contender)
            if arguments.warmup:
                common.wrk(contender, origin, PATH, arguments.warmup, arguments.connections, cores.origin, target)
            output = common.wrk(contender, origin, PATH, arguments.duration, arguments.connections, cores.origin, target)
            result = common.parseWrk(contender.name, "1k", output)
            row = Row(
                contender.name, "h1", result.requests_per_sec, result.p50_ms, result.p99_ms, None,
                result.non_2xx + result.socket_errors,
            )  # fmt: skip
        else:
            row = parseH2load(contender.name, h2load(contender, arguments, cores.origin))
        rows.append(row)
        print(f"  {row.contender} {row.protocol}: {row.requests_per_sec:.1f} requests/s", file=sys.stderr, flush=True)
    return rows


def ratios(rows: Sequence[Row]) -> Dict[str, float]:
    rate = {(r.contender, r.protocol): r.requests_per_sec for r in rows}
    return {
        protocol: rate[("dualproxy", protocol)] / rate[("nginx", protocol)]
        for protocol in PROTOCOLS
        if rate.get(("nginx", protocol)) and ("dualproxy", protocol) in rate
    }


def printTable(rows: Sequence[Row]) -> None:
    def ms(value: Optional[float]) -> str:
        return f"{value:>9.2f}" if value is not None and not math.isnan(value) else f"{'-':>9}"

    print(f"{'contender':<10} {'proto':<5} {'requests/s':>11} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'errors':>7}")
    for r in rows:
        print(
            f"{r.contender:<10} {r.protocol:<5} {r.requests_per_sec:>11.1f} {ms(r.p50_ms)} {ms(r.p99_ms)}"
            f" {ms(r.mean_ms)} {r.errors:>7}"
        )
    for protocol, ratio in ratios(rows).items():
        print(f"dualproxy/nginx requests/s, {protocol}: {ratio:.2f}x")


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = common.baseParser(__doc__, BENCH / "reverse-bench.toml")
    parser.add_argument("--streams", type=int, default=10, help="h2load's streams per connection (-m) [default: 10]")
    ports = {
        "origin": ORIGIN_PORT,
        "dualproxy TLS": DUALPROXY_TLS_PORT,
        "dualproxy plain": DUALPROXY_PLAIN_PORT,
        "nginx TLS": NGINX_TLS_PORT,
    }
    common.addOutputArguments(parser, ports)
    arguments = parser.parse_args(argv)
    common.checkArguments(parser, arguments, list(ports.values()))
    if arguments.streams < 1:
        parser.error("--streams must be at least 1")
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    script = "tls.py"
    arguments = parseArguments(argv)
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"{script}: no {' or '.join(missing)} on PATH; apt-get install -y nginx wrk", file=sys.stderr)
        return 1
    protocols = list(PROTOCOLS)
    if shutil.which("h2load") is None:
        print(f"{script}: no h2load on PATH, so no HTTP/2 lines (apt-get install -y nghttp2-client)", file=sys.stderr)
        protocols.remove("h2")
    load = f"{PATH} over TLS; wrk -t1 -c{arguments.connections} -d{arguments.duration}s"
    if "h2" in protocols:
        load += f", h2load -t1 -c{arguments.connections} -m{arguments.streams} -D{arguments.duration}"
    started = common.begin(script, arguments, load)
    if started is None:
        return 1
    python, cores = started
    origin = ORIGIN_PORT + arguments.port_offset
    scratch = Path(tempfile.mkdtemp(prefix="dualproxy-bench-tls-"))
    processes = Processes()
    rows: List[Row] = []
    try:
        ca, cert, key = makeCertificate(arguments.python, scratch)
        contenders = servers(arguments, scratch, cores, cert, key)
        for port in [origin] + [server.contender.port for server in contenders]:
            if common.accepting(port):
                raise BenchError(f"port {port} is in use: stop what listens there or pass --port-offset")
        originLog = scratch / "logs" / "origin.log"
        originArgv = common.prepareOrigin(scratch, origin)
        waitFor = processes.start(common.pinned(cores.origin, originArgv), originLog)
        common.waitForPort("origin", origin, waitFor, originLog)
        # One contender at a time, so that each has core 1 to itself.
        for server in contenders:
            owner = Processes()
            log = scratch / "logs" / f"{server.contender.name}.log"
            try:
                process = owner.start(common.pinned(server.core, server.argv), log, server.env)
                common.waitForPort(server.contender.name, server.contender.port, process, log)
                checkHttps(server.contender, ca)
                rows += measure(server.contender, arguments, cores, protocols, origin)
                if process.poll() is not None:
                    raise BenchError(f"{server.contender.name} exited during the run:{common.logTail(log)}")
            finally:
                owner.stopAll()
    except BenchError as e:
        print(f"{script}: {e}", file=sys.stderr)
        if rows:
            printTable(rows)
        return 1
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        return 130
    finally:
        processes.stopAll()
        common.dropScratch(script, scratch, arguments.keep)
    printTable(rows)
    common.writeReport(arguments, python, cores.proxy is not None, rows,
                       h2_streams=arguments.streams if "h2" in protocols else None,
                       dualproxy_over_nginx=ratios(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
