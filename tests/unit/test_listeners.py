"""
Tests for L{dualproxy.listeners}: accepting pauses while descriptors run
out, and resumes on a bounded back-off timer.
"""

from __future__ import annotations

import errno

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dualproxy import listeners
from dualproxy.listeners import AcceptBackoff, ListenerService, _PausingSocket


class _Reading:
    """
    A port's reading switch, recorded.
    """

    def __init__(self):
        self.calls: list = []

    def pause(self):
        self.calls.append("pause")

    def resume(self):
        self.calls.append("resume")


class AcceptBackoffTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.reading = _Reading()
        self.backoff = AcceptBackoff("tcp:8080", self.clock, self.reading.pause, self.reading.resume)

    def test_pausesAndResumesAfterFirstDelay(self):
        """
        A failed accept stops reading at once and starts it again after
        C{firstDelay}, not before.
        """
        self.backoff.failed(errno.EMFILE)
        self.assertEqual(self.reading.calls, ["pause"])
        self.clock.advance(AcceptBackoff.firstDelay * 0.9)
        self.assertEqual(self.reading.calls, ["pause"])
        self.clock.advance(AcceptBackoff.firstDelay * 0.2)
        self.assertEqual(self.reading.calls, ["pause", "resume"])

    def test_delayDoublesUpToMaximum(self):
        """
        While retries keep failing, each waits twice as long as the last,
        never longer than C{maxDelay}.
        """
        delays = []
        for _ in range(8):
            self.backoff.failed(errno.EMFILE)
            [retry] = self.clock.getDelayedCalls()
            delays.append(round(retry.getTime() - self.clock.seconds(), 3))
            self.clock.advance(delays[-1])
            self.assertEqual(self.reading.calls[-2:], ["pause", "resume"])
        self.assertEqual(delays, [0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5])

    def test_logsOncePerEpisode(self):
        """
        One warning naming the endpoint and the errno when a pause begins,
        none for failed retries, one line when accepting works again; the
        next episode is logged (and counted) afresh, from the first delay.
        """
        before = listeners.PAUSES.get("EMFILE", 0)
        with capturedLogs() as events:
            self.backoff.failed(errno.EMFILE)
            self.clock.advance(1)
            self.backoff.failed(errno.EMFILE)
            self.clock.advance(1)
            self.backoff.accepted()
            self.backoff.accepted()
            self.backoff.failed(errno.EMFILE)
        lines = [(e["log_level"], e["log_format"].format(**e)) for e in events]
        warning = ("tcp:8080: cannot accept (EMFILE: this process has no file descriptor left); "
                   "accepting paused, waiting clients stay in the listen backlog")
        self.assertEqual(lines, [
            (LogLevel.warn, warning),
            (LogLevel.info, "tcp:8080: accepting again after 2.00 s paused"),
            (LogLevel.warn, warning),
        ])
        self.assertEqual(listeners.PAUSES["EMFILE"] - before, 2)
        self.clock.advance(AcceptBackoff.firstDelay)
        self.assertEqual(self.reading.calls[-1], "resume")

    def test_stopCancelsRetry(self):
        """
        A port going away takes its pending retry with it.
        """
        self.backoff.failed(errno.ENFILE)
        self.backoff.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.reading.calls, ["pause"])


class _Listening:
    """
    A listening socket whose accepts give what the test queued: a client
    or an errno to fail with.
    """

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)

    def accept(self):
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, int):
            raise OSError(outcome, "failed")
        return outcome

    def getsockname(self):
        return ("127.0.0.1", 8080)


class PausingSocketTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.reading = _Reading()
        self.backoff = AcceptBackoff("tcp:8080", self.clock, self.reading.pause, self.reading.resume)

    def test_exhaustionReadsAsNobodyWaiting(self):
        """
        EMFILE from accept pauses and reaches the port as EAGAIN, which
        Twisted takes as "no more clients" (not as EMFILE, where it would
        accept and close waiting clients).
        """
        wrapped = _PausingSocket(_Listening(errno.EMFILE), self.backoff)
        with capturedLogs():
            e = self.assertRaises(BlockingIOError, wrapped.accept)
        self.assertEqual(e.errno, errno.EAGAIN)
        self.assertEqual(self.reading.calls, ["pause"])
        self.assertIsNotNone(self.backoff.pausedSince)

    def test_otherErrorsPassThrough(self):
        """
        Errors that are not about exhausted resources stay Twisted's to
        handle, and pause nothing.
        """
        wrapped = _PausingSocket(_Listening(errno.ECONNABORTED), self.backoff)
        e = self.assertRaises(OSError, wrapped.accept)
        self.assertEqual(e.errno, errno.ECONNABORTED)
        self.assertEqual(self.reading.calls, [])

    def test_acceptEndsPause(self):
        """
        A client accepted after a pause is handed over, and the pause is
        over.
        """
        client = (object(), ("127.0.0.1", 5000))
        wrapped = _PausingSocket(_Listening(errno.EMFILE, client), self.backoff)
        with capturedLogs():
            self.assertRaises(BlockingIOError, wrapped.accept)
            self.assertIs(wrapped.accept(), client)
        self.assertIsNone(self.backoff.pausedSince)

    def test_delegatesTheRest(self):
        """
        Everything else a port asks of its socket is the real socket's.
        """
        wrapped = _PausingSocket(_Listening(), self.backoff)
        self.assertEqual(wrapped.getsockname(), ("127.0.0.1", 8080))


class ListenerServiceTests(SynchronousTestCase):
    def test_portWithoutSocket(self):
        """
        A port with no socket of its own to accept on (an in-memory one)
        is listened on as it is, with nothing to pause.
        """
        reactor = MemoryReactorClock()
        listener = ListenerService("tcp:0:interface=127.0.0.1", Factory(), reactor)
        listener.startService()
        self.assertIsNotNone(listener.port)
        self.assertIsNone(listener.backoff)
