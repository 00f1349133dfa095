"""
Worker-scaling benchmark: wrk through dualproxy's reverse mode as one
process (--workers 1) and as a supervisor with two worker processes
(--workers 2), to an nginx origin, 1 KiB responses, all in one run so that
the ratio between the two is what counts; the origin asked directly gives a
reference line.

Nothing is pinned: the workers must be free to use both cores, so the proxy,
the origin and wrk share them, and the w2/w1 ratio understates what a second
worker gives on a machine with cores to spare.

Usage: python bench/workers.py [--python PYTHON] [--duration 10] [--json FILE]
(see bench/README.md). Needs nginx and wrk on PATH; ss (iproute2), when
present, counts the connections each worker holds.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from common import BENCH, HOST, ORIGIN_PORT, BenchError, Contender, Processes, Result, Server
import common

W1_PORT = 28094
W2_PORT = 28095  # all three move by --port-offset
W1 = "dualproxy-w1"
W2 = "dualproxy-w2"
SIZE = "1k"
WORKER_MODULE = "dualproxy.worker"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """
    Cores kept busy during one measured run: CPU seconds over wall seconds.
    """

    contender: str
    proxy: float  # dualproxy's processes (supervisor and workers); 0 for direct
    origin: float  # nginx, master and worker
    wrk: float
    machine: float  # every process on the machine, from /proc/stat
    processes: int  # how many proxy processes were counted


# ---------------------------------------------------------------- /proc


def parentOf(pid: int) -> Optional[int]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: the fields after it are plain.
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def descendants(root: int) -> Set[int]:
    """
    C{root}'s children, their children, and so on.
    """
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = parentOf(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found: Set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cpuSeconds(pid: int) -> float:
    """
    User and system CPU seconds C{pid} has used so far, 0 once it is gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime and stime are the 14th and 15th fields of the whole line, the 12th and 13th after the name.
    return (int(fields[11]) + int(fields[12])) / TICK


def machineBusySeconds() -> float:
    """
    CPU seconds all cores have spent not idle since boot.
    """
    with open("/proc/stat") as stat:
        fields = [int(n) for n in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    # guest and guest_nice (fields 9 and 10) are already counted in user and nice.
    return (sum(fields[:8]) - idle) / TICK


def commandLine(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def workerPids(supervisor: int) -> Set[int]:
    return {pid for pid in descendants(supervisor) if WORKER_MODULE in commandLine(pid)}


def connectionsByPid(port: int) -> Optional[Dict[int, int]]:
    """
    Established connections accepted on C{port}, counted by the process that
    holds them; None without ss.
    """
    if shutil.which("ss") is None:
        return None
    completed = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=10,
    )
    counts: Dict[int, int] = {}
    for line in completed.stdout.decode(errors="replace").splitlines():
        for pid in set(re.findall(r"pid=(\d+)", line)):
            counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


# ---------------------------------------------------------------- servers


def servers(arguments: argparse.Namespace, scratch: Path) -> List[Server]:
    """
    The origin, and dualproxy's reverse mode with one and with two workers,
    none of them pinned.
    """
    offset = arguments.port_offset
    origin = ORIGIN_PORT + offset

    def dualproxy(port: int, workers: int) -> List[str]:
        return common.twistdDualproxy(
            arguments.python, "--mode", "reverse",
            "--listen", f"tcp:{port}:interface={HOST}",
            "--backend", f"http://{HOST}:{origin}",
            "--access-log", "off", "--config", str(arguments.config.resolve()),
            "--workers", str(workers),
        )  # fmt: skip

    return [
        Server(Contender("direct", origin), common.prepareOrigin(scratch, origin), None),
        Server(Contender(W1, W1_PORT + offset), dualproxy(W1_PORT + offset, 1), None, common.pythonEnv()),
        Server(Contender(W2, W2_PORT + offset), dualproxy(W2_PORT + offset, 2), None, common.pythonEnv()),
    ]


def wrkArgv(arguments: argparse.Namespace, contender: Contender, seconds: int) -> List[str]:
    return [
        "wrk", f"-t{arguments.threads}", f"-c{arguments.connections}", f"-d{seconds}s", "--latency",
        f"http://{HOST}:{contender.port}/{SIZE}.bin",
    ]  # fmt: skip


def runWrk(argv: List[str], contender: Contender, seconds: int) -> str:
    try:
        completed = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=seconds + 60)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"wrk against {contender.name} did not finish in {e.timeout:.0f} s") from e
    output = completed.stdout.decode(errors="replace")
    if completed.returncode != 0:
        raise BenchError(f"wrk against {contender.name} exited with status {completed.returncode}:\n{output}")
    return output


def measure(
    arguments: argparse.Namespace,
    contender: Contender,
    proxy: Optional[int],
    origin: int,
) -> Tuple[Result, Cpu, List[Dict[str, object]]]:
    """
    One measured wrk run against C{contender}, with the CPU each party used
    meanwhile and, for a supervisor, each worker's share: the cores it kept
    busy and the connections it held half way through.

    @param proxy: the pid of the contender's twistd, None for direct.
    @param origin: the pid of the nginx master.
    """
    seconds = arguments.duration
    proxyPids = ({proxy} | descendants(proxy)) if proxy is not None else set()
    originPids = {origin} | descendants(origin)
    workers = workerPids(proxy) if proxy is not None else set()

    def children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def sample() -> Tuple[float, Dict[int, float], float, float, float]:
        return (
            time.monotonic(),
            {pid: cpuSeconds(pid) for pid in proxyPids},
            sum(cpuSeconds(pid) for pid in originPids),
            machineBusySeconds(),
            children(),  # wrk, once reaped
        )

    start = sample()
    try:
        load = subprocess.Popen(
            wrkArgv(arguments, contender, seconds), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as e:
        raise BenchError(f"cannot run wrk: {e}") from e
    counts: Optional[Dict[int, int]] = None
    try:
        time.sleep(seconds / 2)
        if workers:
            counts = connectionsByPid(contender.port)
        output, _ = load.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"wrk against {contender.name} did not finish in {e.timeout:.0f} s") from e
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    end = sample()
    text = output.decode(errors="replace")
    if load.returncode != 0:
        raise BenchError(f"wrk against {contender.name} exited with status {load.returncode}:\n{text}")
    if proxy is not None and workerPids(proxy) != workers:
        raise BenchError(f"{contender.name}: a worker was restarted during the run (see --keep's logs)")
    wall = end[0] - start[0]
    used = {pid: (end[1][pid] - start[1][pid]) / wall for pid in proxyPids}
    cpu = Cpu(
        contender=contender.name,
        proxy=sum(used.values()),
        origin=(end[2] - start[2]) / wall,
        wrk=(end[4] - start[4]) / wall,
        machine=(end[3] - start[3]) / wall,
        processes=len(proxyPids),
    )
    shares: List[Dict[str, object]] = [
        {"pid": pid, "cores": used[pid], "connections": None if counts is None else counts.get(pid, 0)}
        for pid in sorted(workers)
    ]
    if workers and proxy is not None:
        shares.append({"pid": proxy, "cores": used[proxy], "connections": None, "supervisor": True})
    return common.parseWrk(contender.name, SIZE, text), cpu, shares


# ---------------------------------------------------------------- clean-up


def stopEverything(processes: Processes, started: Dict[str, subprocess.Popen[bytes]], script: str) -> List[str]:
    """
    Stop every server by pid (the supervisor stops its workers on SIGTERM),
    then make sure no worker outlived it: any still there after 10 s is
    killed, by pid. Removes the supervisor's private admin folder if it
    left it empty.

    @return: a line for each worker that had to be killed.
    """
    workers: Set[int] = set()
    adminFolders: Set[str] = set()
    for process in started.values():
        for pid in workerPids(process.pid):
            workers.add(pid)
            # python -m dualproxy.worker INDEX ADMIN-SOCKET ...
            words = commandLine(pid).split()
            if WORKER_MODULE in words and len(words) > words.index(WORKER_MODULE) + 2:
                adminFolders.add(os.path.dirname(words[words.index(WORKER_MODULE) + 2]))
    processes.stopAll()
    deadline = time.monotonic() + 10
    alive = {pid for pid in workers if WORKER_MODULE in commandLine(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {pid for pid in alive if WORKER_MODULE in commandLine(pid)}
    killed = []
    for pid in sorted(alive):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(f"{script}: worker {pid} outlived its supervisor; killed")
        except ProcessLookupError:
            pass
    for folder in adminFolders:
        if os.path.basename(folder).startswith("dualproxy-admin-"):
            try:
                os.rmdir(folder)
            except OSError:
                pass  # gone already, or not empty: not ours to empty
    return killed


# ---------------------------------------------------------------- report


def ratio(results: Sequence[Result]) -> Optional[float]:
    rate = {r.contender: r.requests_per_sec for r in results}
    return rate[W2] / rate[W1] if rate.get(W1) and W2 in rate else None


def printReport(results: Sequence[Result], cpus: Sequence[Cpu], shares: Sequence[Dict[str, object]]) -> None:
    common.printTable(results, sys.stdout)
    if cpus:
        print(f"{'cores busy':<12} {'proxy':>6} {'origin':>6} {'wrk':>6} {'machine':>7}")
        for cpu in cpus:
            print(f"{cpu.contender:<12} {cpu.proxy:>6.2f} {cpu.origin:>6.2f} {cpu.wrk:>6.2f} {cpu.machine:>7.2f}")
    for share in shares:
        role = "supervisor" if share.get("supervisor") else "worker"
        held = "" if share["connections"] is None else f", {share['connections']} connections half way"
        print(f"{W2} {role} {share['pid']}: {share['cores']:.2f} cores{held}")
    idle = [share["pid"] for share in shares if share["connections"] == 0 and not share.get("supervisor")]
    if idle:
        print(
            f"note: {W2} worker {', '.join(map(str, idle))} held none of wrk's connections: the kernel handed them"
            " all to one worker, so this run measured one worker, not two"
        )
    value = ratio(results)
    if value is not None:
        print(f"{W2}/{W1} requests/s, {SIZE}: {value:.2f}x")


def parseArguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = common.baseParser(__doc__, BENCH / "reverse-bench.toml")
    parser.set_defaults(connections=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk's threads [default: %(default)s]")
    ports = {"origin": ORIGIN_PORT, W1: W1_PORT, W2: W2_PORT}
    common.addOutputArguments(parser, ports)
    arguments = parser.parse_args(argv)
    common.checkArguments(parser, arguments, list(ports.values()))
    if not 1 <= arguments.threads <= arguments.connections:
        parser.error("--threads must be at least 1 and at most --connections")
    return arguments


def main(argv: Optional[Sequence[str]] = None) -> int:
    script = "workers.py"
    arguments = parseArguments(argv)
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"{script}: no {' or '.join(missing)} on PATH; apt-get install -y nginx wrk", file=sys.stderr)
        return 1
    if not os.path.exists("/proc/stat"):
        print(f"{script}: needs Linux's /proc to find the workers and count CPU time", file=sys.stderr)
        return 1
    try:
        python = common.interpreter(arguments.python)
    except BenchError as e:
        print(f"{script}: {e}", file=sys.stderr)
        return 1
    cpus = os.cpu_count() or 1
    print(
        f"# {python['implementation']} {python['version']} ({python['executable']}), Twisted {python['twisted']};"
        f" wrk -t{arguments.threads} -c{arguments.connections} -d{arguments.duration}s after {arguments.warmup} s"
        f" warm-up; nothing pinned: proxy, origin and wrk share {cpus} cores; load average"
        f" {os.getloadavg()[0]:.2f} before the run",
        flush=True,
    )
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    origin = ORIGIN_PORT + arguments.port_offset
    scratch = Path(tempfile.mkdtemp(prefix="dualproxy-bench-workers-"))
    processes = Processes()
    started: Dict[str, subprocess.Popen[bytes]] = {}
    results: List[Result] = []
    usage: List[Cpu] = []
    shares: List[Dict[str, object]] = []
    status = 0
    try:
        serverList = servers(arguments, scratch)
        for server in serverList:
            if common.accepting(server.contender.port):
                raise BenchError(
                    f"port {server.contender.port} (for {server.contender.name}) is in use:"
                    " stop what listens there or pass --port-offset"
                )
        for server in serverList:
            log = scratch / "logs" / f"{server.contender.name}.log"
            process = processes.start(server.argv, log, server.env)
            started[server.contender.name] = process
            common.waitForPort(server.contender.name, server.contender.port, process, log)
        contenders = [server.contender for server in serverList]
        for contender in contenders:
            log = scratch / "logs" / f"{contender.name}.log"
            for name, size in common.SIZES.items():
                try:
                    body = common.fetch(contender, origin, f"/{name}.bin")
                except BenchError as e:
                    raise BenchError(f"{e}{common.logTail(log)}") from e
                if len(body) != size:
                    raise BenchError(f"{contender.name}: /{name}.bin arrived truncated")
        count = len(workerPids(started[W2].pid))
        if count != 2:
            log = scratch / "logs" / f"{W2}.log"
            raise BenchError(f"{W2} runs {count} worker processes, not 2:{common.logTail(log)}")
        if workerPids(started[W1].pid):
            raise BenchError(f"{W1} started worker processes: --workers 1 should be the plain single process")
        # One contender at a time under load; the idle ones wait in epoll.
        for contender in contenders:
            if arguments.warmup:
                runWrk(wrkArgv(arguments, contender, arguments.warmup), contender, arguments.warmup)
            proxy = None if contender.name == "direct" else started[contender.name].pid
            result, cpu, split = measure(arguments, contender, proxy, started["direct"].pid)
            results.append(result)
            usage.append(cpu)
            if contender.name == W2:
                shares = split
            process = started[contender.name]
            if process.poll() is not None:
                log = scratch / "logs" / f"{contender.name}.log"
                raise BenchError(f"{contender.name} exited during the run:{common.logTail(log)}")
            print(f"  {contender.name} {SIZE}: {result.requests_per_sec:.1f} requests/s", file=sys.stderr)
    except BenchError as e:
        print(f"{script}: {e}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print(f"{script}: interrupted", file=sys.stderr)
        status = 130
    finally:
        for line in stopEverything(processes, started, script):
            print(line, file=sys.stderr)
        common.dropScratch(script, scratch, arguments.keep)
    if results:
        printReport(results, usage, shares)
    if status:
        return status
    common.writeReport(arguments, python, False, results, wrk_threads=arguments.threads, cpus=cpus,
                       cores_busy=[asdict(c) for c in usage], w2_processes=shares, w2_over_w1=ratio(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
