"""
One access-log line per request, through twisted.logger.

The line is rendered here (Combined Log Format or a JSON object) and also
carried as structured fields, so an observer can use either.
"""

from __future__ import annotations

import json
import time
from typing import Optional

from twisted.logger import Logger

FORMATS = ("combined", "json", "off")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clfTime(seconds: int) -> str:
    t = time.gmtime(seconds)
    return "%02d/%s/%04d:%02d:%02d:%02d +0000" % (
        t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def _text(value: Optional[bytes]) -> str:
    if value is None:
        return "-"
    return value.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"')


class AccessLog:
    """
    Called with each finished L{dualproxy.core.exchange.Exchange}.
    """

    def __init__(self, fmt: str, clock, log: Optional[Logger] = None):
        self.format = fmt
        self.clock = clock
        self.log = log or Logger(namespace="dualproxy.access")
        self._second = -1
        self._stamp = ""

    def _now(self) -> str:
        second = int(self.clock.seconds())
        if second != self._second:
            self._second = second
            self._stamp = _clfTime(second)
        return self._stamp

    def __call__(self, exchange) -> None:
        if self.format == "off":
            return
        request = exchange.request
        headers = request.headers
        client = exchange.clientHost or "-"
        user = exchange.user or "-"
        referer = headers.get(b"referer")
        agent = headers.get(b"user-agent")
        status = exchange.status or 0
        # A stand-in exchange (a cache's background revalidation) may have
        # met no error it could name.
        errorType = getattr(exchange, "errorType", None)
        if self.format == "json":
            line = json.dumps(
                {
                    "time": self.clock.seconds(),
                    "client": client,
                    "user": exchange.user,
                    "method": request.method.decode("latin-1"),
                    "target": request.target.decode("latin-1"),
                    "version": request.version.decode("latin-1"),
                    "status": status,
                    "bytes": exchange.bytesSent,
                    "referer": referer and referer.decode("latin-1"),
                    "user_agent": agent and agent.decode("latin-1"),
                    "duration": round(self.clock.seconds() - exchange.started, 6),
                    "error": exchange.reason,
                    "error_type": errorType,
                    "completed": not exchange.aborted,
                },
                separators=(",", ":"),
            )
        else:
            line = '%s - %s [%s] "%s %s %s" %s %s "%s" "%s"' % (
                client,
                user,
                self._now(),
                _text(request.method),
                _text(request.target),
                _text(request.version),
                status or "-",
                exchange.bytesSent or "-",
                _text(referer),
                _text(agent),
            )
        self.log.info("{line}", line=line, status=status, client=client, errorType=errorType)
