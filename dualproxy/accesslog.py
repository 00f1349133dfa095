"""
One access-log line per request (or per SOCKS session), through
twisted.logger or to a file of its own.

The line is rendered here (Combined Log Format or a JSON object).  Through
twisted.logger it is also carried as structured fields, so an observer can
use either; a file (C{access_log_file}) takes the lines buffered, as
nginx's C{access_log} path does, which costs a request far less.
"""

from __future__ import annotations

import json
import time
from typing import Optional

from twisted.application.service import Service
from twisted.logger import Logger

FORMATS = ("combined", "json", "off")

_log = Logger()

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clfTime(seconds: int) -> str:
    t = time.gmtime(seconds)
    return "%02d/%s/%04d:%02d:%02d:%02d +0000" % (
        t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def _text(value: Optional[bytes]) -> str:
    if value is None:
        return "-"
    return value.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"')


class AccessLogFile(Service):
    """
    Access-log lines appended to a file, written when a second has passed
    since the first line waiting or when C{limit} bytes wait, and at once
    once the service has stopped (requests finishing after a reload).  The
    file is opened for each write, so logrotate needs no signal; with
    several workers each appends whole lines.

    What cannot be written is dropped and said once in the log, so a full
    disk costs lines, not memory.
    """

    def __init__(self, path: str, clock, delay: float = 1.0, limit: int = 64 * 1024):
        self.path = path
        self.clock = clock
        self.delay = delay
        self.limit = limit
        self._lines: list = []
        self._size = 0
        self._call = None
        self._failing = False

    def stopService(self):
        self.flush()
        return super().stopService()

    def write(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= self.limit or not self.running:
            self.flush()
        elif self._call is None:
            self._call = self.clock.callLater(self.delay, self.flush)

    def flush(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        lines, self._lines, self._size = self._lines, [], 0
        if not lines:
            return
        lines.append("")
        try:
            with open(self.path, "ab") as file:
                file.write("\n".join(lines).encode("utf-8", "replace"))
        except OSError as e:
            if not self._failing:
                _log.error("cannot write the access log {path}: {reason}; its lines are dropped until it can",
                           path=self.path, reason=e.strerror)
            self._failing = True
        else:
            self._failing = False



class AccessLog:
    """
    Called with each finished L{dualproxy.core.exchange.Exchange}.

    @param file: where the lines go, if not through C{log}.
    """

    def __init__(self, fmt: str, clock, log: Optional[Logger] = None, file: Optional[AccessLogFile] = None):
        self.format = fmt
        self.clock = clock
        self.log = log or Logger(namespace="dualproxy.access")
        self.file = file
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
        self._emit(line, status=status, client=client, errorType=errorType)

    def session(self, session) -> None:
        """
        The line of a finished SOCKS session (a
        L{dualproxy.socks.handler.Session}): who went where, how it ended,
        the bytes tunnelled each way and how long it lasted.  In the
        combined format::

            CLIENT - USER [TIME] "SOCKS5 CONNECT HOST:PORT" RESULT SENT RECEIVED SECONDS
        """
        if self.format == "off":
            return
        client = session.clientHost or "-"
        duration = round(self.clock.seconds() - session.started, 6)
        if self.format == "json":
            line = json.dumps(
                {
                    "time": self.clock.seconds(),
                    "client": client,
                    "user": session.user,
                    "protocol": "socks5",
                    "destination": session.destination,
                    "result": session.result,
                    "reason": session.reason,
                    "bytes_sent": session.bytesSent,
                    "bytes_received": session.bytesReceived,
                    "duration": duration,
                },
                separators=(",", ":"),
            )
        else:
            line = '%s - %s [%s] "SOCKS5 CONNECT %s" %s %d %d %.3f' % (
                client, _text(session.user and session.user.encode("utf-8")), self._now(),
                session.destination or "-", session.result, session.bytesSent, session.bytesReceived, duration,
            )
        self._emit(line, client=client, result=session.result)

    def _emit(self, line: str, **fields) -> None:
        if self.file is not None:
            self.file.write(line)
        else:
            self.log.info("{line}", line=line, **fields)
