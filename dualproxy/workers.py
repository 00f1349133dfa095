"""
Several processes serving one configuration (C{--workers N}).

The supervisor binds every listener itself and hands the open sockets to N
worker processes.  A TCP listener (plain or TLS) is N sockets on the same
address, bound with C{SO_REUSEPORT}: worker I accepts on socket I only, and
the kernel spreads new connections over the sockets evenly (by a hash of the
addresses).  A UNIX-socket listener, or any listener where C{SO_REUSEPORT} is
not available, is one socket all the workers accept on.  The supervisor keeps
every socket open while it runs: no port is ever unbound, and a restarted
worker adopts the socket its predecessor had, connections queued on it
meanwhile included.

It restarts a worker that dies, passes SIGHUP (reload) and SIGTERM (drain)
on, and serves the admin listener for all of them: each worker's metrics
labelled C{worker="N"}, status and series merged.  Each worker has its own
rate-limit buckets and cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from twisted.application.service import MultiService
from twisted.internet import protocol, tcp
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.endpoints import UNIXClientEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from .listeners import ListenerService
from .settings.values import ConfigError

log = Logger()

# Seconds before a worker that died is started again, growing while it
# keeps dying young.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0


def workerCount(value: str) -> int:
    """
    A C{--workers} value: a positive number, or C{auto} for one per core.

    @raise ValueError: for anything else.
    """
    if value == "auto":
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{value!r} is not a number of workers (a positive integer, or auto)")
    return int(value)


#: PyPy's young generation for the workers, unless the environment sets one:
#: with the default, a 1 MiB relay took 2.4 times the user CPU (docs/operations.md,
#: "Running on PyPy"); PyPy reads it at start only.
PYPY_NURSERY = "32M"


def workerEnvironment(environ: Mapping[str, str], here: str, pypy: bool) -> Dict[str, str]:
    """
    A worker's environment: the supervisor's, with dualproxy's folder first
    on PYTHONPATH and, on PyPy, a larger nursery unless one is set.
    """
    env = dict(environ, PYTHONPATH=os.pathsep.join(filter(None, [here, environ.get("PYTHONPATH")])))
    if pypy:
        env.setdefault("PYPY_GC_NURSERY", PYPY_NURSERY)
    return env


class _NeverAccepted(protocol.Factory):
    """
    The supervisor's side of a listener: it binds, the workers accept.
    """

    noisy = False


# Where worker processes find the listening sockets passed down: descriptor
# 3 and up, in the order of the listeners.
FIRST_DESCRIPTOR = 3


def reusePortAvailable() -> bool:
    """
    Whether this system lets several sockets listen on one port with
    C{SO_REUSEPORT} (Linux 3.9 and later, the BSDs, macOS; not Windows).
    """
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is None:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, option, 1)
        except OSError:
            return False
    return True


def workerSockets(sockets: Mapping[str, Sequence[int]], index: int) -> Dict[str, int]:
    """
    The socket worker C{index} accepts on for each listener: its own when
    the listener has one per worker, else the one every worker shares.

    @param sockets: each listener's description, with the supervisor's
        descriptors for it: one per worker, in worker order, or a single
        shared one.
    """
    assigned = {}
    for description, descriptors in sockets.items():
        if len(descriptors) == 1:
            assigned[description] = descriptors[0]
        elif 0 <= index < len(descriptors):
            assigned[description] = descriptors[index]
        else:
            raise IndexError(f"{description} has {len(descriptors)} sockets, none for worker {index}")
    return assigned


def childDescriptors(assigned: Mapping[str, int],
                     first: int = FIRST_DESCRIPTOR) -> Tuple[Dict[str, int], Dict[int, int]]:
    """
    How a worker's sockets are passed down: which descriptor it finds each
    listener on (what L{dualproxy.listeners.ADOPTED} gets), and the
    C{childFDs} entries that put the supervisor's descriptors there.
    """
    numbers: Dict[str, int] = {}
    childFDs: Dict[int, int] = {}
    for offset, (description, descriptor) in enumerate(assigned.items()):
        numbers[description] = first + offset
        childFDs[first + offset] = descriptor
    return numbers, childFDs


def checkListenersUnchanged(descriptions: Iterable[str], passedDown: Iterable[str]) -> None:
    """
    A worker's reloaded configuration must listen where the supervisor
    bound: the listeners take a restart with workers.

    @raise ConfigError: naming what was added or removed.
    """
    wanted = list(dict.fromkeys(descriptions))
    bound = list(dict.fromkeys(passedDown))
    added = [description for description in wanted if description not in bound]
    removed = [description for description in bound if description not in wanted]
    if added or removed:
        change = "; ".join(filter(None, [
            "added " + ", ".join(added) if added else "",
            "removed " + ", ".join(removed) if removed else "",
        ]))
        raise ConfigError("listen", f"with --workers, changing the listeners takes a restart ({change})")


class _ReusePort(tcp.Port):
    """
    A TCP port bound with C{SO_REUSEPORT}: one of several sockets listening
    on the same address, each with its own accept queue.
    """

    def createInternetSocket(self):
        made = super().createInternetSocket()
        made.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return made


def _probe(interface: str, port: int, family: int) -> int:
    """
    Bind C{interface}:C{port} without C{SO_REUSEPORT} and let it go: a port
    in use fails here even if its holder set C{SO_REUSEPORT} (another
    supervisor), as it does without workers.

    @return: the port, the one the system chose for 0.
    @raise CannotListenError: if it cannot be bound.
    """
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                address = socket.getaddrinfo(interface, port, family, socket.SOCK_STREAM, 0,
                                             socket.AI_NUMERICHOST | socket.AI_PASSIVE)[0][4]
            else:
                address = (interface, port)
            probe.bind(address)
            return probe.getsockname()[1]
    except OSError as e:
        raise CannotListenError(interface, port, e)


def bindPerWorker(reactor, port: int, backlog: int, interface: str, count: int) -> List[IListeningPort]:
    """
    C{count} sockets listening on C{interface}:C{port} with C{SO_REUSEPORT},
    none accepting yet (for port 0: all on the port chosen for the first).

    @raise CannotListenError: if any cannot be bound, after closing those
        that were.
    """
    family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
    port = _probe(interface, port, family)
    ports: List[IListeningPort] = []
    try:
        for _ in range(count):
            listening = _ReusePort(port, _NeverAccepted(), backlog, interface, reactor)
            listening.startListening()
            listening.stopReading()
            ports.append(listening)
    except CannotListenError:
        for done in ports:
            done.stopListening()
        raise
    return ports


class _PerWorkerReactor:
    """
    The reactor, for one endpoint, except that listening on TCP binds
    C{count} sockets with C{SO_REUSEPORT} (see L{bindPerWorker}): any
    endpoint that listens on TCP (C{tcp:}, C{tcp6:}) gets one per worker,
    the others (C{unix:}, ...) listen as usual.
    """

    def __init__(self, reactor, count: int):
        self._reactor = reactor
        self._count = count
        self.ports: List[IListeningPort] = []

    def __getattr__(self, name: str):
        return getattr(self._reactor, name)

    def listenTCP(self, port: int, factory, backlog: int = 50, interface: str = "") -> IListeningPort:
        self.ports = bindPerWorker(self._reactor, port, backlog, interface, self._count)
        return self.ports[0]


def listenerSockets(reactor, description: str, count: int) -> List[IListeningPort]:
    """
    The supervisor's sockets for one listener, listening but not accepting
    (only the workers accept): C{count} for a TCP endpoint, one per worker;
    one for any other, that every worker shares.

    @raise CannotListenError: or whatever else the endpoint fails with.
    """
    perWorker = _PerWorkerReactor(reactor, count)
    outcome: list = []
    serverFromString(perWorker if count > 1 else reactor, description).listen(_NeverAccepted()).addBoth(
        outcome.append)
    if not outcome:
        raise RuntimeError("the endpoint does not listen at once")
    if isinstance(outcome[0], Failure):
        raise outcome[0].value
    if perWorker.ports:
        return perWorker.ports
    port = outcome[0]
    port.stopReading()
    return [port]


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: Supervisor, index: int):
        self.supervisor = supervisor
        self.index = index
        self.ended: Deferred = Deferred()
        self.started = supervisor.reactor.seconds()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            log.info("worker {index}: {line}", index=self.index, line=line.decode("utf-8", "replace"))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.supervisor.workerEnded(self, reason)


class Supervisor(MultiService):
    """
    Starts and watches the workers.

    @ivar arguments: the C{twistd dualproxy} options, for the workers.
    """

    def __init__(self, arguments: List[str], config, count: int, reactor):
        super().__init__()
        self.arguments = arguments
        self.config = config
        self.count = count
        self.reactor = reactor
        self.workers: Dict[int, _Worker] = {}
        self.restarts = 0
        # Each listener's sockets: one per worker, or one they all share.
        self._ports: Dict[str, List[IListeningPort]] = {}
        self._delays: Dict[int, float] = {}
        self._directory = tempfile.mkdtemp(prefix="dualproxy-admin-")
        self._previous = None

    def adminSocket(self, index: int) -> str:
        return os.path.join(self._directory, f"worker-{index}.sock")

    def privilegedStartService(self) -> None:
        descriptions = list(self.config.listen) + list(self.config.tls.listen)
        perWorker = reusePortAvailable()
        if not perWorker:
            log.warn("SO_REUSEPORT is not available: the workers share each listening socket, "
                     "and the kernel may not spread connections evenly over them")
        for description in descriptions:
            try:
                self._ports[description] = listenerSockets(self.reactor, description,
                                                           self.count if perWorker else 1)
            except Exception as e:
                self._closePorts()
                sys.stderr.write(f"dualproxy: cannot listen on {description}: {e}\n")
                raise SystemExit(1)
        super().privilegedStartService()

    def startService(self) -> None:
        if not self._ports:
            self.privilegedStartService()
        super().startService()
        for index in range(self.count):
            self.spawn(index)
        if self.config.admin is not None:
            from .admin.site import adminSite
            from .policy.auth import PasswordFile

            admin = self.config.admin
            passwords = PasswordFile.load(admin.auth_file) if admin.auth_file else None
            ListenerService(admin.listen, adminSite(self, passwords, admin.realm, WorkersView(self)),
                            self.reactor).setServiceParent(self)
        if hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, lambda number, frame: self.reactor.callFromThread(
                self.reload))

    def _closePorts(self) -> None:
        for ports in self._ports.values():
            for port in ports:
                port.stopListening()
        self._ports.clear()

    def passedDown(self, index: int) -> Tuple[Dict[str, int], Dict[int, int]]:
        """
        The listening sockets worker C{index} gets, each time it starts:
        the descriptor it finds each listener on, and the supervisor's
        descriptor put there (see L{workerSockets}, L{childDescriptors}).
        """
        return childDescriptors(workerSockets(
            {description: [port.fileno() for port in ports] for description, ports in self._ports.items()}, index))

    def spawn(self, index: int) -> None:
        fds, passed = self.passedDown(index)
        childFDs: Dict[int, object] = {0: "w", 1: "r", 2: "r", **passed}
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = workerEnvironment(os.environ, here, sys.implementation.name == "pypy")
        worker = _Worker(self, index)
        self.reactor.spawnProcess(
            worker, sys.executable,
            [sys.executable, "-m", "dualproxy.worker", str(index), self.adminSocket(index), json.dumps(fds),
             *self.arguments],
            env=env, childFDs=childFDs,
        )
        self.workers[index] = worker
        log.info("worker {index} started, pid {pid}", index=index, pid=worker.transport.pid)

    def workerEnded(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.index) is not worker:
            return
        del self.workers[worker.index]
        if not self.running:
            return
        self.restarts += 1
        lived = self.reactor.seconds() - worker.started
        delay = RESTART_DELAY if lived > RESTART_DELAY_MAX else min(
            RESTART_DELAY_MAX, self._delays.get(worker.index, RESTART_DELAY / 2) * 2)
        self._delays[worker.index] = delay
        log.warn("worker {index} ended ({reason}); starting it again in {delay} s",
                 index=worker.index, reason=reason.getErrorMessage(), delay=delay)
        self.reactor.callLater(delay, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if self.running and index not in self.workers:
            self.spawn(index)

    def reload(self) -> Optional[str]:
        """
        Ask every worker to reload (each logs its outcome).
        """
        self._signal("HUP")
        return None

    def _signal(self, name: str) -> None:
        for worker in list(self.workers.values()):
            try:
                worker.transport.signalProcess(name)
            except OSError:
                pass

    def stopService(self):
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
        ended = [worker.ended for worker in self.workers.values()]
        self._signal("TERM")
        self._closePorts()
        done = gatherResults(ended) if ended else succeed(None)
        return done.addCallback(lambda _: shutil.rmtree(self._directory, ignore_errors=True))


class WorkersView:
    """
    What the admin listener shows for a supervisor: each worker's answer
    from its private admin socket, merged.
    """

    def __init__(self, supervisor: Supervisor):
        self.supervisor = supervisor

    def fetch(self, path: bytes) -> Deferred:
        """
        C{path} from every running worker: a list of (index, body) pairs,
        without the workers that did not answer.
        """
        supervisor = self.supervisor
        asked = []
        for index in sorted(supervisor.workers):
            endpoint = UNIXClientEndpoint(supervisor.reactor, supervisor.adminSocket(index), timeout=2)
            answer: Deferred = Deferred()
            endpoint.connect(_Fetch.factory(path, answer)).addErrback(answer.errback)
            asked.append(answer.addCallback(lambda body, index=index: (index, body)))
        return DeferredList(asked, consumeErrors=True).addCallback(
            lambda results: [value for ok, value in results if ok])

    def metrics(self) -> Deferred:
        from prometheus_client.core import Metric
        from prometheus_client.parser import text_string_to_metric_families
        from prometheus_client.samples import Sample

        def merge(answers):
            families: Dict[str, Metric] = {}
            for index, body in answers:
                for family in text_string_to_metric_families(body.decode("utf-8")):
                    merged = families.get(family.name)
                    if merged is None:
                        merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                    for sample in family.samples:
                        merged.samples.append(Sample(sample.name, dict(sample.labels, worker=str(index)),
                                                     sample.value, sample.timestamp, sample.exemplar))
            workers = Metric("dualproxy_workers", "Worker processes running.", "gauge")
            workers.add_sample("dualproxy_workers", {}, len(self.supervisor.workers))
            restarts = Metric("dualproxy_worker_restarts", "Workers started again after dying.", "counter")
            restarts.add_sample("dualproxy_worker_restarts_total", {}, self.supervisor.restarts)
            return list(families.values()) + [workers, restarts]

        return self.fetch(b"/metrics").addCallback(merge)

    def status(self) -> Deferred:
        def merge(answers):
            documents = [(index, json.loads(body)) for index, body in answers]
            if not documents:
                return {"workers": [], "error": "no worker answered"}
            merged = dict(documents[0][1])
            merged["in_flight"] = sum(document["in_flight"] for _, document in documents)
            merged["client_connections"] = sum(document["client_connections"] for _, document in documents)
            for pool in merged["pools"]:
                for backend in pool["backends"]:
                    backend["in_flight"] = sum(
                        other["in_flight"] for _, document in documents for otherPool in document["pools"]
                        if otherPool["name"] == pool["name"] for other in otherPool["backends"]
                        if other["url"] == backend["url"])
            merged["workers"] = [{"worker": index, "pid": document["pid"], "uptime": document["uptime"],
                                  "in_flight": document["in_flight"],
                                  "client_connections": document["client_connections"],
                                  "listeners": document["listeners"]}
                                 for index, document in documents]
            merged.pop("pid")
            merged["listeners"] = [listener for listener in merged["listeners"]
                                   if not listener["endpoint"].startswith("unix:" + self.supervisor._directory)]
            return merged

        return self.fetch(b"/status").addCallback(merge)

    def series(self) -> Deferred:
        def merge(answers):
            seconds: Dict[int, dict] = {}
            for _, body in answers:
                for second in json.loads(body):
                    merged = seconds.setdefault(second["time"], {
                        "time": second["time"], "requests": 0, "statuses": {}, "p50": None, "p99": None,
                        "cache_hit_ratio": None})
                    merged["requests"] += second["requests"]
                    for status, count in second["statuses"].items():
                        merged["statuses"][status] = merged["statuses"].get(status, 0) + count
                    # Percentiles do not add up: the slowest worker's stands.
                    for name in ("p50", "p99", "cache_hit_ratio"):
                        if second[name] is not None:
                            merged[name] = max(merged[name] or 0, second[name])
            return [seconds[time] for time in sorted(seconds)]

        return self.fetch(b"/series").addCallback(merge)


class _Fetch(protocol.Protocol):
    """
    One HTTP/1.0 GET on a worker's admin socket; the body when it closes.
    """

    @classmethod
    def factory(cls, path: bytes, answer: Deferred) -> protocol.Factory:
        made = protocol.Factory.forProtocol(cls)
        made.noisy = False
        made.path = path
        made.answer = answer
        return made

    def connectionMade(self) -> None:
        self.data = []
        self.transport.write(b"GET " + self.factory.path + b" HTTP/1.0\r\nHost: worker\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def connectionLost(self, reason=None) -> None:
        head, _, body = b"".join(self.data).partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"):
            self.factory.answer.callback(body)
        else:
            self.factory.answer.errback(Failure(ValueError(head.split(b"\r\n")[0].decode("latin-1"))))
