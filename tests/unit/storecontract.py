"""
What every cache store promises (L{ICacheStore}): one set of tests run
against each built-in store; a third-party store can mix it in too.
"""

from __future__ import annotations

from zope.interface.verify import verifyObject

from dualproxy.interfaces import ICacheEntry, ICacheStore, ICacheWriter


def put(target, key, body, head=b"h"):
    writer = target.open(key)
    for chunk in body:
        writer.write(chunk)
    writer.commit(head)


class StoreContract:
    """
    Mixed into a test case whose C{store(maxBytes, maxObjectSize)} builds
    the store under test.
    """

    def test_interfaces(self):
        target = self.store()
        verifyObject(ICacheStore, target)
        writer = target.open(b"k")
        verifyObject(ICacheWriter, writer)
        writer.commit(b"head")
        verifyObject(ICacheEntry, target.get(b"k"))

    def test_ranges(self):
        target = self.store()
        put(target, b"k", [b"0123", b"4567", b"89"])
        entry = target.get(b"k")
        for start, end, expected in ((0, None, b"0123456789"), (2, 6, b"2345"), (4, 8, b"4567"),
                                     (9, 10, b"9"), (3, 4, b"3"), (5, 5, b""), (8, 20, b"89")):
            self.assertEqual(b"".join(entry.chunks(start, end)), expected, (start, end))
