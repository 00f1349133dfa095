"""
What a running proxy counts, cheaply on the request path, and shows on
demand: as Prometheus families (through prometheus_client's collector
interface, built only when scraped) and as per-second series for the
dashboard.

Recording a request is a few dict and list updates; all formatting waits
for a scrape, so metrics cost the hot path almost nothing.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from typing import Callable, Deque, Dict, Iterable, List, Optional, Tuple

# Latency bucket bounds in seconds (Prometheus "le" values).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Seconds of history the dashboard can draw.
HISTORY = 300

# Latencies kept per second for its percentiles: a uniform sample.
SAMPLE = 2000


class Histogram:
    """
    Cumulative-on-export bucket counts, a sum and a count, per label set.
    """

    __slots__ = ("counts", "sum")

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1
        self.sum += value


class Second:
    """
    One second of traffic, for the dashboard's charts.
    """

    __slots__ = ("time", "requests", "statuses", "latencies", "seen", "hits", "lookups")

    def __init__(self, time: int):
        self.time = time
        self.requests = 0
        self.statuses: Dict[str, int] = {}
        self.latencies: List[float] = []
        self.seen = 0
        self.hits = 0
        self.lookups = 0

    def observe(self, status: str, latency: float) -> None:
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.seen += 1
        if len(self.latencies) < SAMPLE:
            self.latencies.append(latency)
        else:
            slot = random.randrange(self.seen)
            if slot < SAMPLE:
                self.latencies[slot] = latency

    def summary(self) -> dict:
        ordered = sorted(self.latencies)
        return {
            "time": self.time,
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "p50": percentile(ordered, 0.5),
            "p99": percentile(ordered, 0.99),
            "cache_hit_ratio": self.hits / self.lookups if self.lookups else None,
        }


def percentile(ordered: List[float], fraction: float) -> Optional[float]:
    """
    The nearest-rank percentile of sorted values; None for none.
    """
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, int(fraction * len(ordered) + 0.5) - 1))]


_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class Metrics:
    """
    The counters of one proxy process.

    @ivar gauges: callables named by metric, sampled at scrape time for
        what is a state rather than an event (open connections, backend
        health, cache size), each returning (labels, value) pairs.
    """

    def __init__(self, mode: str, clock):
        self.mode = mode
        self.clock = clock
        self.requests: Dict[Tuple, int] = {}
        self.durations: Dict[Tuple, Histogram] = {}
        self.upstreamDurations: Dict[Tuple, Histogram] = {}
        self.errors: Dict[str, int] = {}
        self.bytesIn = 0
        self.bytesOut = 0
        self.reloads: Dict[str, int] = {"success": 0, "failure": 0}
        self.socksSessions: Dict[str, int] = {}
        self.socksBytes: Dict[str, int] = {"from_client": 0, "to_client": 0}
        self.backendLatency: Dict[str, float] = {}
        self.history: Deque[dict] = deque(maxlen=HISTORY)
        self._second = Second(int(clock.seconds()))
        self.gauges: List[Tuple[str, str, str, Callable[[], Iterable[Tuple[Dict[str, str], float]]]]] = []

    def addGauge(self, name: str, help: str, kind: str,
                 sample: Callable[[], Iterable[Tuple[Dict[str, str], float]]]) -> None:
        """
        Export C{sample()} as metric C{name} of C{kind} ("gauge" or
        "counter") at every scrape.
        """
        self.gauges.append((name, help, kind, sample))

    def exchangeDone(self, exchange) -> None:
        """
        Count a finished request (called for every exchange, before the
        access log).
        """
        now = self.clock.seconds()
        latency = now - exchange.started
        status = _CLASSES.get(exchange.status // 100, "other")
        context = exchange.context
        route = context.route
        pool = context.pool
        backendName = context.backendName
        method = exchange.request.method
        if method not in _METHODS:
            method = b"other"
        key = (route, pool, backendName, method, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        timing = self.durations.get(route)
        if timing is None:
            timing = self.durations[route] = Histogram()
        timing.observe(latency)
        upstream = context.upstreamLatency
        if upstream is not None:
            upstreamKey = (pool, backendName)
            timing = self.upstreamDurations.get(upstreamKey)
            if timing is None:
                timing = self.upstreamDurations[upstreamKey] = Histogram()
            timing.observe(upstream)
            if backendName:
                previous = self.backendLatency.get(backendName)
                self.backendLatency[backendName] = upstream if previous is None else previous * 0.8 + upstream * 0.2
        errorType = exchange.errorType
        if errorType:
            self.errors[errorType] = self.errors.get(errorType, 0) + 1
        self.bytesIn += exchange.bytesReceived
        self.bytesOut += exchange.bytesSent
        second = self._second
        if int(now) != second.time:
            second = self._tick(now)
        second.observe(status, latency)
        cacheStatus = context.cacheResult
        if cacheStatus is not None:
            second.lookups += 1
            if cacheStatus == "hit":
                second.hits += 1

    def sessionDone(self, session) -> None:
        """
        Count a finished SOCKS session (a L{dualproxy.socks.handler.Session}).
        """
        self.socksSessions[session.result] = self.socksSessions.get(session.result, 0) + 1
        self.socksBytes["from_client"] += session.bytesReceived
        self.socksBytes["to_client"] += session.bytesSent

    def _tick(self, now: float) -> Second:
        current = self._second
        whole = int(now)
        if whole != current.time:
            self.history.append(current.summary())
            for missing in range(current.time + 1, min(whole, current.time + HISTORY)):
                self.history.append(Second(missing).summary())
            current = self._second = Second(whole)
        return current

    def series(self) -> List[dict]:
        """
        The finished seconds of the last few minutes, oldest first.
        """
        self._tick(self.clock.seconds())
        return list(self.history)

    # prometheus_client's collector interface

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily(
            "dualproxy_requests", "Requests answered, by route, pool, backend, method and status class.",
            labels=["mode", "route", "pool", "backend", "method", "status"])
        for (route, pool, backend, method, status), count in self.requests.items():
            requests.add_metric([self.mode, route, pool, backend, method.decode("latin-1"), status], count)
        yield requests
        yield self._histograms("dualproxy_request_duration_seconds",
                               "Time from a request's head to the end of its answer.",
                               ["mode", "route"], {(route,): h for route, h in self.durations.items()},
                               HistogramMetricFamily)
        yield self._histograms("dualproxy_upstream_duration_seconds",
                               "Time from sending a request upstream to its response head.",
                               ["mode", "pool", "backend"], self.upstreamDurations, HistogramMetricFamily)
        errors = CounterMetricFamily("dualproxy_errors", "Errors the proxy answered itself, by RFC 9209 type.",
                                     labels=["mode", "type"])
        for errorType, count in self.errors.items():
            errors.add_metric([self.mode, errorType], count)
        yield errors
        for name, help, value in (("dualproxy_received_bytes", "Request body bytes received.", self.bytesIn),
                                  ("dualproxy_sent_bytes", "Response body bytes sent to clients.", self.bytesOut)):
            family = CounterMetricFamily(name, help, labels=["mode"])
            family.add_metric([self.mode], value)
            yield family
        if self.socksSessions:
            sessions = CounterMetricFamily("dualproxy_socks_sessions", "SOCKS sessions ended, by result.",
                                           labels=["result"])
            for result, count in sorted(self.socksSessions.items()):
                sessions.add_metric([result], count)
            yield sessions
            tunnelled = CounterMetricFamily("dualproxy_socks_bytes", "Bytes SOCKS tunnels carried, by direction.",
                                            labels=["direction"])
            for direction, count in self.socksBytes.items():
                tunnelled.add_metric([direction], count)
            yield tunnelled
        reloads = CounterMetricFamily("dualproxy_config_reloads", "Configuration reloads, by outcome.",
                                      labels=["outcome"])
        for outcome, count in self.reloads.items():
            reloads.add_metric([outcome], count)
        yield reloads
        for name, help, kind, sample in self.gauges:
            samples = list(sample())
            labels = sorted(samples[0][0]) if samples else []
            family = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(name, help, labels=labels)
            for sampleLabels, value in samples:
                family.add_metric([sampleLabels[label] for label in labels], value)
            yield family

    def _histograms(self, name, help, labels, histograms, familyType):
        family = familyType(name, help, labels=labels)
        for key, histogram in histograms.items():
            running = 0
            buckets = []
            for bound, count in zip(BUCKETS + (float("inf"),), histogram.counts):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric([self.mode, *key], buckets, histogram.sum)
        return family


_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"CONNECT", b"PURGE"})
