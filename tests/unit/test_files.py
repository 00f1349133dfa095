"""
Tests for L{dualproxy.files}: a file replaced whole, with its mode from the
start, and nothing left behind when writing fails.
"""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.files import replaceFile


class ReplaceFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "file")

    def test_replacedWithItsMode(self) -> None:
        replaceFile(self.path, b"one", 0o644)
        replaceFile(self.path, b"two")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"two")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.directory), ["file"])

    def test_owner(self) -> None:
        replaceFile(self.path, b"one", 0o640, (os.getuid(), os.getgid()))
        status = os.stat(self.path)
        self.assertEqual((status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)),
                         (os.getuid(), os.getgid(), 0o640))

    def test_failureKeepsTheOldFile(self) -> None:
        replaceFile(self.path, b"one")
        self.assertRaises(TypeError, replaceFile, self.path, "not bytes")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"one")
        self.assertEqual(os.listdir(self.directory), ["file"])
