"""
The in-memory cache store: visibility on commit, size limits, LRU eviction
by bytes, ranges of a stored body.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from dualproxy.cache.memory import MemoryStore, memory

from .storecontract import StoreContract, put


def store(maxBytes=1000, maxObjectSize=500):
    return MemoryStore(maxBytes, maxObjectSize)


class MemoryStoreTests(StoreContract, SynchronousTestCase):
    def store(self, maxBytes=1000, maxObjectSize=500):
        return store(maxBytes, maxObjectSize)

    def test_visibleOnlyOnceCommitted(self):
        target = store()
        writer = target.open(b"k")
        writer.write(b"abc")
        self.assertIsNone(target.get(b"k"))
        writer.commit(b"head")
        entry = target.get(b"k")
        self.assertEqual((entry.head, entry.size, b"".join(entry.chunks())), (b"head", 3, b"abc"))

    def test_abortStoresNothing(self):
        target = store()
        writer = target.open(b"k")
        writer.write(b"abc")
        writer.abort()
        writer.commit(b"head")
        self.assertIsNone(target.get(b"k"))
        self.assertEqual(target.bytesStored, 0)

    def test_objectLimitAbandonsTheWriter(self):
        target = store(maxObjectSize=5)
        writer = target.open(b"k")
        self.assertTrue(writer.write(b"abc"))
        self.assertFalse(writer.write(b"def"))
        self.assertFalse(writer.write(b"g"))
        writer.commit(b"head")
        self.assertIsNone(target.get(b"k"))

    def test_replacingAnEntry(self):
        target = store()
        put(target, b"k", [b"old body"])
        put(target, b"k", [b"new"], b"h2")
        self.assertEqual(b"".join(target.get(b"k").chunks()), b"new")
        self.assertEqual(target.bytesStored, len(b"h2") + 3)

    def test_leastRecentlyUsedEvictedByBytes(self):
        target = store(maxBytes=30, maxObjectSize=30)
        put(target, b"a", [b"x" * 9])
        put(target, b"b", [b"x" * 9])
        put(target, b"c", [b"x" * 9])
        target.get(b"a")
        put(target, b"d", [b"x" * 9])
        self.assertIsNone(target.get(b"b"))
        self.assertIsNotNone(target.get(b"a"))
        self.assertEqual((target.evictions, target.bytesStored), (1, 30))

    def test_remove(self):
        target = store()
        put(target, b"k", [b"abc"])
        target.remove(b"k")
        target.remove(b"missing")
        self.assertIsNone(target.get(b"k"))
        self.assertEqual(target.bytesStored, 0)

    def test_foundAsPlugin(self):
        from dualproxy.plugins import findCacheStores

        self.assertIs(findCacheStores()["memory"], memory)

    def test_factoryOptions(self):
        built = memory({"max_bytes": 100, "max_object_size": 10})
        self.assertEqual((built.maxBytes, built.maxObjectSize), (100, 10))
        for options, message in (({"size": 1}, "size: unknown option"),
                                 ({"max_bytes": 0}, "max_bytes: expected a positive"),
                                 ({"max_object_size": True}, "max_object_size: expected a positive")):
            error = self.assertRaises(ValueError, memory, options)
            self.assertTrue(str(error).startswith(message), str(error))
