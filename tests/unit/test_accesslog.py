"""
The access log's own file (access_log_file): lines buffered and appended
a second after the first one waiting, or once enough wait, or at stop;
a file that cannot be written costs lines, not memory.
"""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from dualproxy.accesslog import AccessLogFile


class AccessLogFileTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.path = self.mktemp()
        self.file = AccessLogFile(self.path, self.clock, limit=100)
        self.file.startService()

    def content(self) -> bytes:
        if not os.path.exists(self.path):
            return b""
        with open(self.path, "rb") as written:
            return written.read()

    def test_writtenAfterASecond(self):
        self.file.write("one")
        self.file.write("two")
        self.clock.advance(0.9)
        self.assertEqual(self.content(), b"")
        self.clock.advance(0.1)
        self.assertEqual(self.content(), b"one\ntwo\n")
        self.file.write("three")
        self.clock.advance(1)
        self.assertEqual(self.content(), b"one\ntwo\nthree\n")

    def test_writtenWhenEnoughWaits(self):
        self.file.write("x" * 60)
        self.assertEqual(self.content(), b"")
        self.file.write("y" * 60)
        self.assertEqual(self.content(), b"x" * 60 + b"\n" + b"y" * 60 + b"\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWritesAndLaterLinesGoAtOnce(self):
        """
        Stopping (a reload, the end) writes what waits; a request still
        finishing afterwards is logged at once.
        """
        self.file.write("before")
        self.file.stopService()
        self.assertEqual(self.content(), b"before\n")
        self.file.write("after")
        self.assertEqual(self.content(), b"before\nafter\n")

    def test_rotatedFileStartsAgain(self):
        """
        The file is opened for each write: once logrotate has moved it,
        the next lines start a new one.
        """
        self.file.write("old")
        self.clock.advance(1)
        os.rename(self.path, self.path + ".1")
        self.file.write("new")
        self.clock.advance(1)
        self.assertEqual(self.content(), b"new\n")

    def test_unwritableSaidOnce(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        os.mkdir(self.path)
        for _ in range(3):
            self.file.write("lost")
            self.clock.advance(1)
        said = [e for e in events if "cannot write the access log" in e.get("log_format", "")]
        self.assertEqual(len(said), 1)
        self.assertEqual(self.file._lines, [])
