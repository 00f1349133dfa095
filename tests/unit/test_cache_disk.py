"""
The disk cache store: visibility on commit, size limits, LRU eviction by
bytes, survival across restarts, and never serving a damaged or unfinished
file or another key's entry.
"""

from __future__ import annotations

import errno
import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dualproxy.cache import disk as diskModule
from dualproxy.cache.disk import DiskStore, disk
from dualproxy.interfaces import ICacheStoreFactory
from dualproxy.plugins import findCacheStores

from .storecontract import StoreContract, put

HEADER = 40


def footprint(key, head, body):
    return HEADER + len(key) + len(head) + len(body)


def read(target, key):
    entry = target.get(key)
    return None if entry is None else (entry.head, b"".join(entry.chunks()))


def files(path, suffix=""):
    return sorted(name for _, _, names in os.walk(path) for name in names if name.endswith(suffix))


class DiskStoreTests(StoreContract, SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()
        os.makedirs(self.path)

    def store(self, maxBytes=10_000, maxObjectSize=5_000):
        return DiskStore(self.path, maxBytes, maxObjectSize)

    def entryPath(self, key):
        name = diskModule._entryName(key)
        return os.path.join(self.path, name[:2], name)

    def test_visibleOnlyOnceCommitted(self):
        target = self.store()
        writer = target.open(b"k")
        writer.write(b"abc")
        self.assertIsNone(target.get(b"k"))
        self.assertEqual(files(self.path), files(self.path, ".tmp"))
        writer.commit(b"head")
        entry = target.get(b"k")
        self.assertEqual((entry.head, entry.size, b"".join(entry.chunks())), (b"head", 3, b"abc"))
        self.assertEqual(files(self.path, ".tmp"), [])
        self.assertEqual(target.bytesStored, footprint(b"k", b"head", b"abc"))

    def test_largeBodyInManyChunks(self):
        """
        A body larger than the read size comes back whole, in bounded
        pieces, and any range of it can be read.
        """
        body = bytes(range(256)) * 1000
        target = self.store(maxBytes=1 << 20, maxObjectSize=1 << 20)
        put(target, b"big", [body[i:i + 1000] for i in range(0, len(body), 1000)], b"H" * 300)
        entry = target.get(b"big")
        self.assertEqual((entry.head, entry.size), (b"H" * 300, len(body)))
        pieces = list(entry.chunks())
        self.assertEqual(b"".join(pieces), body)
        self.assertLessEqual(max(map(len, pieces)), 64 * 1024)
        for start, end in ((0, 10), (65535, 65537), (100_000, 200_000), (255_990, None), (255_999, 300_000),
                           (7, 7), (10, 5)):
            self.assertEqual(b"".join(entry.chunks(start, end)), body[start:end], (start, end))

    def test_abortLeavesNoFile(self):
        target = self.store()
        writer = target.open(b"k")
        writer.write(b"abc")
        writer.abort()
        writer.commit(b"head")
        self.assertIsNone(target.get(b"k"))
        self.assertEqual((files(self.path), target.bytesStored), ([], 0))

    def test_objectLimitAbandonsTheWriter(self):
        target = self.store(maxObjectSize=5)
        writer = target.open(b"k")
        self.assertTrue(writer.write(b"abc"))
        self.assertFalse(writer.write(b"def"))
        self.assertFalse(writer.write(b"g"))
        self.assertEqual(files(self.path), [])
        writer.commit(b"head")
        self.assertIsNone(target.get(b"k"))

    def test_entryLargerThanTheStoreIsNotKept(self):
        target = self.store(maxBytes=60, maxObjectSize=60)
        put(target, b"k", [b"x" * 10], b"h" * 20)
        self.assertEqual((target.get(b"k"), files(self.path)), (None, []))

    def test_replacingAnEntry(self):
        target = self.store()
        put(target, b"k", [b"old body"])
        stale = target.get(b"k")
        put(target, b"k", [b"new"], b"h2")
        self.assertEqual(read(target, b"k"), (b"h2", b"new"))
        self.assertEqual(target.bytesStored, footprint(b"k", b"h2", b"new"))
        self.assertEqual(len(files(self.path)), 1)
        error = self.assertRaises(OSError, b"".join, stale.chunks())
        self.assertEqual(error.errno, errno.ESTALE)

    def test_remove(self):
        target = self.store()
        put(target, b"k", [b"abc"])
        target.remove(b"k")
        target.remove(b"missing")
        self.assertIsNone(target.get(b"k"))
        self.assertEqual((files(self.path), target.bytesStored), ([], 0))

    def test_leastRecentlyUsedEvictedByBytes(self):
        size = footprint(b"a", b"h", b"x" * 9)
        target = self.store(maxBytes=3 * size, maxObjectSize=100)
        for key in (b"a", b"b", b"c"):
            put(target, key, [b"x" * 9])
        target.get(b"a")
        put(target, b"d", [b"x" * 9])
        self.assertIsNone(target.get(b"b"))
        self.assertFalse(os.path.exists(self.entryPath(b"b")))
        self.assertIsNotNone(target.get(b"a"))
        self.assertEqual((target.evictions, target.bytesStored), (1, 3 * size))

    def test_survivesRestart(self):
        target = self.store()
        put(target, b"a", [b"first", b" body"], b"ha")
        put(target, b"b", [b"second"], b"hb")
        again = self.store()
        self.assertEqual(again.bytesStored, target.bytesStored)
        self.assertEqual(read(again, b"a"), (b"ha", b"first body"))
        self.assertEqual(read(again, b"b"), (b"hb", b"second"))

    def test_restartEvictsOldestByModificationTime(self):
        size = footprint(b"a", b"h", b"x" * 9)
        target = self.store()
        for age, key in enumerate((b"c", b"a", b"b")):
            put(target, key, [b"x" * 9])
            os.utime(self.entryPath(key), ns=(10**18 - age * 10**9,) * 2)
        again = self.store(maxBytes=2 * size, maxObjectSize=100)
        self.assertEqual((again.evictions, again.bytesStored), (1, 2 * size))
        self.assertIsNone(again.get(b"b"))
        self.assertIsNotNone(again.get(b"a"))
        self.assertIsNotNone(again.get(b"c"))

    def test_leftoverTemporaryFileRemovedAtStart(self):
        """
        A write cut short by a crash leaves only a temporary file, which is
        never served and is cleaned up on the next start.
        """
        target = self.store()
        writer = target.open(b"k")
        writer.write(b"partial")
        self.assertEqual(len(files(self.path, ".tmp")), 1)
        again = self.store()
        self.assertEqual((files(self.path), again.bytesStored), ([], 0))
        self.assertIsNone(again.get(b"k"))

    def test_truncatedEntryIsAMiss(self):
        target = self.store()
        put(target, b"k", [b"abcdef"], b"head")
        os.truncate(self.entryPath(b"k"), os.path.getsize(self.entryPath(b"k")) - 3)
        self.assertIsNone(target.get(b"k"))
        self.assertEqual((files(self.path), target.bytesStored), ([], 0))

    def test_truncatedEntryDeletedAtStart(self):
        target = self.store()
        put(target, b"k", [b"abcdef"], b"head")
        put(target, b"other", [b"kept"])
        os.truncate(self.entryPath(b"k"), 30)
        again = self.store()
        self.assertIsNone(again.get(b"k"))
        self.assertFalse(os.path.exists(self.entryPath(b"k")))
        self.assertEqual(read(again, b"other"), (b"h", b"kept"))
        self.assertEqual(again.bytesStored, footprint(b"other", b"h", b"kept"))

    def test_corruptedHeaderIsAMiss(self):
        """
        Damage that keeps the lengths consistent is caught by the checksum
        over lengths, key and head; damage to the magic or lengths is caught
        before it.
        """
        for offset in (0, 4, 12, 30, HEADER, HEADER + 1 + 6 + 1):
            target = self.store()
            put(target, b"k", [b"abcdef"], b"head")
            with open(self.entryPath(b"k"), "r+b") as file:
                file.seek(offset)
                byte = file.read(1)
                file.seek(offset)
                file.write(bytes([byte[0] ^ 0x01]))
            self.assertIsNone(target.get(b"k"), offset)
            self.assertEqual((files(self.path), target.bytesStored), ([], 0), offset)

    def test_collidingKeysNeverServeEachOther(self):
        """
        Two keys that hash to the same file replace each other, and each
        lookup checks the key, so neither ever gets the other's entry.
        """
        self.patch(diskModule, "_entryName", lambda key: "ab" * 20)
        target = self.store()
        put(target, b"one", [b"first"])
        self.assertIsNone(target.get(b"two"))
        put(target, b"two", [b"second"])
        self.assertIsNone(target.get(b"one"))
        self.assertEqual(read(target, b"two"), (b"h", b"second"))
        self.assertEqual(target.bytesStored, footprint(b"two", b"h", b"second"))
        target.remove(b"one")
        again = self.store()
        self.assertIsNone(again.get(b"one"))
        self.assertEqual(read(again, b"two"), (b"h", b"second"))


class FactoryTests(SynchronousTestCase):
    def test_options(self):
        path = self.mktemp()
        built = disk({"path": path, "max_bytes": 100, "max_object_size": 10})
        self.assertEqual((built.path, built.maxBytes, built.maxObjectSize), (path, 100, 10))
        defaults = disk({"path": path})
        self.assertEqual((defaults.maxBytes, defaults.maxObjectSize), (1 << 30, 64 << 20))

    def test_badOptions(self):
        path = self.mktemp()
        os.makedirs(path)
        notADirectory = os.path.join(path, "file")
        with open(notADirectory, "w"):
            pass
        for options, message in (({"path": path, "size": 1}, "size: unknown option"),
                                 ({}, "path: expected the cache directory"),
                                 ({"path": 3}, "path: expected the cache directory"),
                                 ({"path": notADirectory}, "path: cannot create"),
                                 ({"path": path, "max_bytes": 0}, "max_bytes: expected a positive"),
                                 ({"path": path, "max_object_size": True}, "max_object_size: expected a positive"),
                                 ({"path": path, "max_object_size": "1M"}, "max_object_size: expected a positive")):
            error = self.assertRaises(ValueError, disk, options)
            self.assertTrue(str(error).startswith(message), str(error))

    def test_unwritableDirectory(self):
        path = self.mktemp()
        os.makedirs(path)
        self.patch(os, "access", lambda path, mode: False)
        error = self.assertRaises(ValueError, disk, {"path": path})
        self.assertTrue(str(error).startswith("path: "), str(error))

    def test_foundAsPlugin(self):
        found = findCacheStores()
        self.assertIs(found["disk"], disk)
        verifyObject(ICacheStoreFactory, disk)
