"""
The default cache store: entries in memory, bounded by total bytes, least
recently used evicted first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, List, Mapping, Optional

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..interfaces import ICacheEntry, ICacheStore, ICacheStoreFactory, ICacheWriter
from ..plugins import checkOptions, positiveOption


@implementer(ICacheEntry)
class MemoryEntry:
    def __init__(self, head: bytes, body: List[bytes], size: int):
        self.head = head
        self.body = body
        self.size = size

    @property
    def footprint(self) -> int:
        return len(self.head) + self.size

    def chunks(self, start: int = 0, end: Optional[int] = None) -> Iterator[bytes]:
        end = self.size if end is None else min(end, self.size)
        offset = 0
        for chunk in self.body:
            following = offset + len(chunk)
            if following > start and offset < end:
                yield chunk[max(start - offset, 0):min(end - offset, len(chunk))]
            if following >= end:
                return
            offset = following


@implementer(ICacheWriter)
class _Writer:
    def __init__(self, store: MemoryStore, key: bytes):
        self.store = store
        self.key = key
        self.body: Optional[List[bytes]] = []
        self.size = 0

    def write(self, data: bytes) -> bool:
        if self.body is None:
            return False
        self.size += len(data)
        if self.size > self.store.maxObjectSize:
            self.body = None
            return False
        self.body.append(data)
        return True

    def commit(self, head: bytes) -> None:
        if self.body is not None:
            self.store.put(self.key, MemoryEntry(head, self.body, self.size))
            self.body = None

    def abort(self) -> None:
        self.body = None


@implementer(ICacheStore)
class MemoryStore:
    """
    Entries kept in a dict ordered by last use; committing makes room by
    evicting from the cold end.
    """

    def __init__(self, maxBytes: int, maxObjectSize: int):
        self.maxBytes = maxBytes
        self.maxObjectSize = min(maxObjectSize, maxBytes)
        self.bytesStored = 0
        self.evictions = 0
        self._entries: "OrderedDict[bytes, MemoryEntry]" = OrderedDict()

    def open(self, key: bytes) -> _Writer:
        return _Writer(self, key)

    def get(self, key: bytes) -> Optional[MemoryEntry]:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    # Every answer is had without waiting.
    peek = get

    def remove(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytesStored -= entry.footprint

    def clear(self) -> None:
        self._entries.clear()
        self.bytesStored = 0

    def put(self, key: bytes, entry: MemoryEntry) -> None:
        """
        Hold a whole entry at once (one had from elsewhere), unless it is
        larger than the store.
        """
        if entry.footprint > self.maxBytes:
            return
        self.remove(key)
        while self.bytesStored + entry.footprint > self.maxBytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytesStored -= evicted.footprint
            self.evictions += 1
        self._entries[key] = entry
        self.bytesStored += entry.footprint


@implementer(IPlugin, ICacheStoreFactory)
class MemoryStoreFactory:
    name = "memory"

    def __call__(self, options: Mapping, resources=None) -> MemoryStore:
        checkOptions(options, ("max_bytes", "max_object_size"), "the memory store")
        return MemoryStore(positiveOption(options, "max_bytes", 256 << 20, "a positive number of bytes"),
                           positiveOption(options, "max_object_size", 16 << 20, "a positive number of bytes"))


memory = MemoryStoreFactory()
