"""
How the supervisor hands listening sockets to its workers: pure assignment
of descriptors, the reload rule that listeners stay as bound, and the
workers' environment.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from dualproxy.settings.values import ConfigError
from dualproxy.workers import (
    FIRST_DESCRIPTOR,
    checkListenersUnchanged,
    childDescriptors,
    workerEnvironment,
    workerSockets,
)


class WorkerSocketsTests(TestCase):
    def test_ownSocketPerWorker(self):
        """
        A listener with one socket per worker gives worker I socket I.
        """
        sockets = {"tcp:80": [10, 11, 12]}
        self.assertEqual([workerSockets(sockets, index) for index in range(3)],
                         [{"tcp:80": 10}, {"tcp:80": 11}, {"tcp:80": 12}])

    def test_sharedSocket(self):
        """
        A listener with a single socket (UNIX, or no SO_REUSEPORT) is every
        worker's, next to per-worker ones.
        """
        sockets = {"tcp:80": [10, 11], "unix:/run/p.sock": [7]}
        self.assertEqual(workerSockets(sockets, 1), {"tcp:80": 11, "unix:/run/p.sock": 7})
        self.assertEqual(workerSockets(sockets, 0), {"tcp:80": 10, "unix:/run/p.sock": 7})

    def test_noSocketForWorker(self):
        """
        A worker index past the sockets bound is a bug, named, not a socket
        silently shared.
        """
        with self.assertRaises(IndexError) as caught:
            workerSockets({"tcp:80": [10, 11]}, 2)
        self.assertIn("tcp:80", str(caught.exception))


class ChildDescriptorsTests(TestCase):
    def test_numberedFromThree(self):
        """
        The worker finds its listeners on descriptors 3 and up, in listener
        order, each mapped from the supervisor's own descriptor.
        """
        numbers, childFDs = childDescriptors({"tcp:80": 11, "tcp:443": 14, "unix:/s": 7})
        self.assertEqual(FIRST_DESCRIPTOR, 3)
        self.assertEqual(numbers, {"tcp:80": 3, "tcp:443": 4, "unix:/s": 5})
        self.assertEqual(childFDs, {3: 11, 4: 14, 5: 7})


class ListenersUnchangedTests(TestCase):
    def test_sameListeners(self):
        """
        Reloading with the listeners bound (any order, repeats) is fine.
        """
        checkListenersUnchanged(["tcp:443", "tcp:80", "tcp:80"], ["tcp:80", "tcp:443"])

    def test_changedListeners(self):
        """
        A listener added or removed is refused, naming both, since only a
        restart rebinds the supervisor's sockets.
        """
        with self.assertRaises(ConfigError) as caught:
            checkListenersUnchanged(["tcp:80", "tcp:8080"], ["tcp:80", "tcp:443"])
        message = str(caught.exception)
        self.assertIn("added tcp:8080", message)
        self.assertIn("removed tcp:443", message)
        self.assertIn("restart", message)


class WorkerEnvironmentTests(TestCase):
    def test_pathFirstAndNurseryOnPyPy(self):
        env = workerEnvironment({"PYTHONPATH": "/x", "HOME": "/root"}, "/repo", pypy=True)
        self.assertEqual(env, {"PYTHONPATH": "/repo:/x", "HOME": "/root", "PYPY_GC_NURSERY": "32M"})

    def test_operatorsNurseryKept(self):
        env = workerEnvironment({"PYPY_GC_NURSERY": "8M"}, "/repo", pypy=True)
        self.assertEqual(env["PYPY_GC_NURSERY"], "8M")

    def test_cpythonUnchanged(self):
        self.assertEqual(workerEnvironment({}, "/repo", pypy=False), {"PYTHONPATH": "/repo"})
