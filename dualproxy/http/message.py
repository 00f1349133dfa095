"""
The value objects the whole proxy passes around: message heads and headers.

Header names keep the case they arrived with (some peers care) and are looked
up case-insensitively.  Values are bytes: the proxy relays octets and never
guesses an encoding.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Tuple

# How a message body is delimited (RFC 9112 section 6.3).
NO_BODY = 0
LENGTH = 1
CHUNKED = 2
CLOSE = 3


class Headers:
    """
    An ordered multi-map of header fields.

    Lower-cased names are kept beside the fields so that the many lookups
    of absent fields on every request are a single C-level scan.
    """

    __slots__ = ("_items", "_lower")

    def __init__(self, items: Optional[Iterable[Tuple[bytes, bytes]]] = None):
        self._items: List[Tuple[bytes, bytes]] = list(items) if items else []
        self._lower: List[bytes] = [key.lower() for key, _ in self._items]

    def __iter__(self) -> Iterator[Tuple[bytes, bytes]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __contains__(self, name: bytes) -> bool:
        return name in self._lower

    def hasAny(self, names: frozenset) -> bool:
        """
        Whether any field has one of the lower-case C{names}.
        """
        return not names.isdisjoint(self._lower)

    def copy(self) -> Headers:
        clone = Headers()
        clone._items = self._items[:]
        clone._lower = self._lower[:]
        return clone

    def only(self, name: bytes) -> Optional[bytes]:
        """
        The value of the one C{name} field (lower case); None when there is
        none or more than one.
        """
        lower = self._lower
        if name not in lower:
            return None
        index = lower.index(name)
        if name in lower[index + 1:]:
            return None
        return self._items[index][1]

    def get(self, name: bytes, default: Optional[bytes] = None) -> Optional[bytes]:
        """
        The first value of C{name} (lower case), or C{default}.
        """
        if name not in self._lower:
            return default
        return self._items[self._lower.index(name)][1]

    def getAll(self, name: bytes) -> List[bytes]:
        if name not in self._lower:
            return []
        return [item[1] for item, key in zip(self._items, self._lower) if key == name]

    def tokens(self, name: bytes) -> List[bytes]:
        """
        The comma-separated list elements of every C{name} field, lower-cased
        (RFC 9110 section 5.6.1), for fields like Connection.
        """
        if name not in self._lower:
            return []
        out = []
        for value in self.getAll(name):
            for part in value.split(b","):
                part = part.strip().lower()
                if part:
                    out.append(part)
        return out

    def add(self, name: bytes, value: bytes) -> None:
        self._items.append((name, value))
        self._lower.append(name.lower())

    def insert(self, name: bytes, value: bytes) -> None:
        """
        Add a field first, where Host belongs (RFC 9110 section 7.2).
        """
        self._items.insert(0, (name, value))
        self._lower.insert(0, name.lower())

    def set(self, name: bytes, value: bytes) -> None:
        """
        Replace every C{name} field with a single one.
        """
        self.remove(name.lower())
        self.add(name, value)

    def remove(self, *names: bytes) -> None:
        """
        Drop every field whose lower-cased name is in C{names}.
        """
        if len(names) == 1 and names[0] not in self._lower:
            return
        self.removeAny(frozenset(names))

    def removeAny(self, names: frozenset) -> None:
        """
        L{remove} for a set made once: a request that has none of them
        costs one C-level scan.
        """
        lower = self._lower
        if names.isdisjoint(lower):
            return
        items = self._items
        for name in names.intersection(lower):
            while name in lower:
                index = lower.index(name)
                del lower[index]
                del items[index]

    def serialize(self) -> bytes:
        items = self._items
        if not items:
            return b""
        return b"\r\n".join(map(b": ".join, items)) + b"\r\n"


class RequestHead:
    """
    A request line and its header fields.

    C{framing} and C{length} describe the body as received (set by the
    parser); the relay re-frames it for the upstream.
    """

    __slots__ = ("method", "target", "version", "headers", "framing", "length")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes = b"HTTP/1.1",
        headers: Optional[Headers] = None,
        framing: int = NO_BODY,
        length: int = 0,
    ):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.framing = framing
        self.length = length

    def __repr__(self) -> str:
        return f"<RequestHead {self.method!r} {self.target!r} {self.version!r}>"

    def serialize(self) -> bytes:
        return (
            self.method + b" " + self.target + b" " + self.version + b"\r\n"
            + self.headers.serialize() + b"\r\n"
        )


class ResponseHead:
    """
    A status line and its header fields; C{framing}/C{length} as for requests.
    """

    __slots__ = ("version", "status", "reason", "headers", "framing", "length")

    def __init__(
        self,
        status: int,
        reason: bytes = b"",
        headers: Optional[Headers] = None,
        version: bytes = b"HTTP/1.1",
        framing: int = NO_BODY,
        length: int = 0,
    ):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers if headers is not None else Headers()
        self.framing = framing
        self.length = length

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status} {self.reason!r}>"

    def serialize(self) -> bytes:
        return (
            b"%s %d %s\r\n" % (self.version, self.status, self.reason)
            + self.headers.serialize() + b"\r\n"
        )


class Refusal(Exception):
    """
    An answer the proxy gives itself instead of relaying: a status and a short
    plain-text reason, plus any extra header fields (e.g. Proxy-Authenticate).
    C{errorType} is the RFC 9209 proxy error type, where the status alone
    does not say it (see L{dualproxy.http.proxystatus}).

    Raised or returned by policy code; the server turns it into a response.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: Iterable[Tuple[bytes, bytes]] = (),
        errorType: Optional[str] = None,
    ):
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = tuple(headers)
        self.errorType = errorType
