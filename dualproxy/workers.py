"""
Several processes serving one configuration (C{--workers N}).

The supervisor binds every listener itself and hands the open sockets to N
worker processes, which all accept on them: the kernel spreads connections
and no port is ever unbound.  It restarts a worker that dies, passes SIGHUP
(reload) and SIGTERM (drain) on, and serves the admin listener for all of
them: each worker's metrics labelled C{worker="N"}, status and series
merged.  Each worker has its own rate-limit buckets and cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from typing import Dict, List, Optional

from twisted.application.service import MultiService
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.endpoints import UNIXClientEndpoint, serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

from .listeners import ListenerService

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


class _NeverAccepted(protocol.Factory):
    """
    The supervisor's side of a listener: it binds, the workers accept.
    """

    noisy = False


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
        self._ports: Dict[str, object] = {}
        self._delays: Dict[int, float] = {}
        self._directory = tempfile.mkdtemp(prefix="dualproxy-admin-")
        self._previous = None

    def adminSocket(self, index: int) -> str:
        return os.path.join(self._directory, f"worker-{index}.sock")

    def privilegedStartService(self) -> None:
        descriptions = list(self.config.listen) + list(self.config.tls.listen)
        for description in descriptions:
            outcome: list = []
            serverFromString(self.reactor, description).listen(_NeverAccepted()).addBoth(outcome.append)
            if not outcome or isinstance(outcome[0], Failure):
                reason = outcome[0].getErrorMessage() if outcome else "the endpoint does not listen at once"
                sys.stderr.write(f"dualproxy: cannot listen on {description}: {reason}\n")
                raise SystemExit(1)
            port = outcome[0]
            # Only the workers accept.
            port.stopReading()
            self._ports[description] = port
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

    def spawn(self, index: int) -> None:
        fds = {}
        childFDs: Dict[int, object] = {0: "w", 1: "r", 2: "r"}
        for offset, (description, port) in enumerate(self._ports.items()):
            fds[description] = 3 + offset
            childFDs[3 + offset] = port.fileno()
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
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
        for port in self._ports.values():
            port.stopListening()
        self._ports.clear()
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
