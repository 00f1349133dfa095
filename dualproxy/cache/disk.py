"""
A cache store on disk: bounded by bytes, kept across restarts, and never
serving an entry that a crash left half written.

Each entry is one file, named by a hash of its key, in one of 256
subdirectories::

    header | key | body | head

The body comes before the head because it streams in before the head is
known; the fixed-size header is written last, at commit.  A writer fills a
C{.tmp} file beside the final one, fsyncs it and renames it into place, so
a file under its final name is always complete.  The header's checksum
covers the lengths, key and head, and the lengths must add up to the file's
size, so a truncated or damaged file is caught, deleted and treated as a
miss.  (The body is trusted to the fsync and atomic rename: checking it
would mean reading it twice.)

Disk reads and writes block the reactor; a later change may move them to a
thread.
"""

from __future__ import annotations

import errno
import os
import struct
import tempfile
from collections import OrderedDict
from hashlib import blake2b
from typing import BinaryIO, Iterator, List, Mapping, NamedTuple, Optional, Tuple

from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from ..interfaces import ICacheEntry, ICacheStore, ICacheStoreFactory, ICacheWriter
from ..plugins import checkOptions, positiveOption

_log = Logger()

_MAGIC = b"DPXC"
_VERSION = 1
_FIELDS = struct.Struct(">4sB3xIIQ")
_DIGEST_SIZE = 16
_HEADER_SIZE = _FIELDS.size + _DIGEST_SIZE
_CHUNK = 64 * 1024
_TEMPORARY = ".tmp"


def _entryName(key: bytes) -> str:
    """
    The file name for C{key}: stable across processes, unlike L{hash}.
    """
    return blake2b(key, digest_size=20).hexdigest()


def _digest(fields: bytes, key: bytes, head: bytes) -> bytes:
    return blake2b(fields + key + head, digest_size=_DIGEST_SIZE).digest()


class _Layout(NamedTuple):
    key: bytes
    headLength: int
    bodyLength: int
    digest: bytes

    @property
    def fileSize(self) -> int:
        return _HEADER_SIZE + len(self.key) + self.bodyLength + self.headLength

    @property
    def bodyOffset(self) -> int:
        return _HEADER_SIZE + len(self.key)


def _readLayout(file: BinaryIO, fileSize: int) -> Optional[_Layout]:
    """
    The header and key at the start of C{file}, or L{None} unless they are
    well formed and the lengths account for exactly C{fileSize} bytes.
    """
    header = file.read(_HEADER_SIZE)
    if len(header) != _HEADER_SIZE:
        return None
    magic, version, keyLength, headLength, bodyLength = _FIELDS.unpack_from(header)
    if magic != _MAGIC or version != _VERSION:
        return None
    if _HEADER_SIZE + keyLength + headLength + bodyLength != fileSize:
        return None
    key = file.read(keyLength)
    if len(key) != keyLength:
        return None
    return _Layout(key, headLength, bodyLength, header[_FIELDS.size:])


def _identity(status: os.stat_result) -> Tuple[int, int, int]:
    return (status.st_ino, status.st_size, status.st_mtime_ns)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@implementer(ICacheEntry)
class _Entry:
    """
    A committed entry whose body is read from its file only when iterated,
    so a hit costs no more memory than its head.
    """

    def __init__(self, path: str, identity: Tuple[int, int, int], head: bytes, bodyOffset: int, size: int):
        self.path = path
        self.identity = identity
        self.head = head
        self.bodyOffset = bodyOffset
        self.size = size

    def chunks(self, start: int = 0, end: Optional[int] = None) -> Iterator[bytes]:
        """
        Read the body in 64 KiB pieces from a file handle of its own.

        @raise OSError: C{ESTALE} if the file was replaced or removed since
            L{DiskStore.get}, rather than streaming another entry's bytes.
        """
        end = self.size if end is None else min(end, self.size)
        remaining = end - start
        if remaining <= 0:
            return
        try:
            file = open(self.path, "rb")
        except FileNotFoundError:
            raise self._stale() from None
        with file:
            if _identity(os.fstat(file.fileno())) != self.identity:
                raise self._stale()
            file.seek(self.bodyOffset + start)
            while remaining:
                piece = file.read(min(_CHUNK, remaining))
                if not piece:
                    raise self._stale()
                remaining -= len(piece)
                yield piece

    def _stale(self) -> OSError:
        return OSError(errno.ESTALE, "cache entry changed while being read", self.path)


@implementer(ICacheWriter)
class _Writer:
    """
    Streams a body into a temporary file; only L{commit} gives the file its
    final name.
    """

    def __init__(self, store: DiskStore, key: bytes):
        self.store = store
        self.key = key
        self.name = _entryName(key)
        self.size = 0
        directory = store._directory(self.name)
        self.temporary = os.path.join(directory, self.name + _TEMPORARY)
        self.file: Optional[BinaryIO] = None
        try:
            descriptor, self.temporary = tempfile.mkstemp(_TEMPORARY, self.name + ".", directory)
            self.file = os.fdopen(descriptor, "wb")
            self.file.write(bytes(_HEADER_SIZE) + key)
        except OSError:
            self._failed()

    def write(self, data: bytes) -> bool:
        if self.file is None:
            return False
        self.size += len(data)
        if self.size > self.store.maxObjectSize:
            self.abort()
            return False
        try:
            self.file.write(data)
        except OSError:
            self._failed()
            return False
        return True

    def commit(self, head: bytes) -> None:
        if self.file is None:
            return
        fields = _FIELDS.pack(_MAGIC, _VERSION, len(self.key), len(head), self.size)
        layout = _Layout(self.key, len(head), self.size, b"")
        if layout.fileSize > self.store.maxBytes:
            self.abort()
            return
        file, self.file = self.file, None
        try:
            with file:
                file.write(head)
                file.seek(0)
                file.write(fields + _digest(fields, self.key, head))
                file.flush()
                os.fsync(file.fileno())
            os.replace(self.temporary, self.store._path(self.name))
        except OSError:
            self.file = file
            self._failed()
            return
        self.store._committed(self.name, self.key, layout.fileSize)

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
            _unlink(self.temporary)

    def _failed(self) -> None:
        _log.failure("Abandoning cache entry {path}", path=self.temporary)
        self.abort()


class _Record(NamedTuple):
    key: bytes
    size: int


@implementer(ICacheStore)
class DiskStore:
    """
    Entries in files under C{path}, indexed in memory by file name and
    ordered by last use; committing makes room by deleting from the cold
    end.  C{bytesStored} counts whole files (header and key included),
    since that is what fills the disk.
    """

    def __init__(self, path: str, maxBytes: int, maxObjectSize: int):
        self.path = path
        self.maxBytes = maxBytes
        self.maxObjectSize = min(maxObjectSize, maxBytes)
        self.bytesStored = 0
        self.evictions = 0
        self._index: "OrderedDict[str, _Record]" = OrderedDict()
        self._load()

    def open(self, key: bytes) -> _Writer:
        return _Writer(self, key)

    def get(self, key: bytes) -> Optional[_Entry]:
        name = _entryName(key)
        record = self._index.get(name)
        if record is None or record.key != key:
            return None
        path = self._path(name)
        try:
            with open(path, "rb") as file:
                status = os.fstat(file.fileno())
                layout = _readLayout(file, status.st_size)
                head = b""
                if layout is not None:
                    file.seek(layout.bodyOffset + layout.bodyLength)
                    head = file.read(layout.headLength)
        except FileNotFoundError:
            self._forget(name)
            return None
        if layout is None or layout.key != key or not self._intact(layout, head):
            _unlink(path)
            self._forget(name)
            return None
        self._index.move_to_end(name)
        return _Entry(path, _identity(status), head, layout.bodyOffset, layout.bodyLength)

    # Every answer is had without waiting.
    peek = get

    def remove(self, key: bytes) -> None:
        name = _entryName(key)
        record = self._index.get(name)
        if record is not None and record.key == key:
            _unlink(self._path(name))
            self._forget(name)

    def _intact(self, layout: _Layout, head: bytes) -> bool:
        fields = _FIELDS.pack(_MAGIC, _VERSION, len(layout.key), layout.headLength, layout.bodyLength)
        return len(head) == layout.headLength and _digest(fields, layout.key, head) == layout.digest

    def _directory(self, name: str) -> str:
        return os.path.join(self.path, name[:2])

    def _path(self, name: str) -> str:
        return os.path.join(self.path, name[:2], name)

    def _forget(self, name: str) -> None:
        record = self._index.pop(name, None)
        if record is not None:
            self.bytesStored -= record.size

    def _committed(self, name: str, key: bytes, size: int) -> None:
        """
        Index a file just renamed into place (replacing any entry, even one
        for a colliding key, that had its name) and make room for it.
        """
        self._forget(name)
        self._index[name] = _Record(key, size)
        self.bytesStored += size
        self._evict()

    def _evict(self) -> None:
        while self.bytesStored > self.maxBytes:
            name = next(iter(self._index))
            _unlink(self._path(name))
            self._forget(name)
            self.evictions += 1

    def _load(self) -> None:
        """
        Rebuild the index from the files a previous run left: unfinished
        writes and malformed files are deleted, and the rest are ordered by
        modification time as the best guess at their last use.
        """
        found: List[Tuple[int, str, _Record]] = []
        for prefix in range(256):
            directory = os.path.join(self.path, f"{prefix:02x}")
            os.makedirs(directory, exist_ok=True)
            for entry in os.scandir(directory):
                if entry.name.endswith(_TEMPORARY):
                    _unlink(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    record = self._validate(entry)
                    if record is None:
                        _unlink(entry.path)
                    else:
                        found.append((entry.stat().st_mtime_ns, entry.name, record))
        for _, name, record in sorted(found):
            self._index[name] = record
            self.bytesStored += record.size
        self._evict()

    def _validate(self, entry: os.DirEntry) -> Optional[_Record]:
        with open(entry.path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            layout = _readLayout(file, size)
        if layout is None or _entryName(layout.key) != entry.name:
            return None
        return _Record(layout.key, size)


@implementer(IPlugin, ICacheStoreFactory)
class DiskStoreFactory:
    name = "disk"

    def __call__(self, options: Mapping, resources=None) -> DiskStore:
        checkOptions(options, ("path", "max_bytes", "max_object_size"), "the disk store")
        path = options.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError(f"path: expected the cache directory, got {path!r}")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise ValueError(f"path: cannot create {path!r}: {error.strerror}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"path: {path!r} is not a writable directory")
        return DiskStore(path, positiveOption(options, "max_bytes", 1 << 30, "a positive number of bytes"),
                         positiveOption(options, "max_object_size", 64 << 20, "a positive number of bytes"))


disk = DiskStoreFactory()
