"""
RESP2, the Redis wire protocol, without I/O: commands to bytes, and bytes
to replies as they arrive in any split.

Replies are C{bytes} (simple and bulk strings), C{int}, C{None} (a null
bulk or array), C{list} (arrays, nested), or a L{RedisError} value for an
error reply; the caller decides whether that one fails its command.
"""

from __future__ import annotations

from typing import Any, List, Optional, Union

# Bounds on what a server may make us hold: one bulk string, and nesting.
MAX_BULK = 512 << 20
MAX_DEPTH = 8
_MAX_LINE = 64 << 10


class RedisError(Exception):
    """
    An error reply (C{-ERR ...}), or a command that could not be had.
    """


class ProtocolError(Exception):
    """
    The server sent something that is not RESP2 within our bounds: the
    connection cannot be trusted further.
    """


def encode(*args: Union[bytes, str, int, float]) -> bytes:
    """
    One command as a RESP array of bulk strings.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, (int, float)):
            arg = repr(arg).encode("ascii")
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


class _Array:
    __slots__ = ("items", "remaining")

    def __init__(self, remaining: int):
        self.items: List[Any] = []
        self.remaining = remaining


class ReplyParser:
    """
    Feed it bytes; it returns the replies they complete.
    """

    def __init__(self, maxBulk: int = MAX_BULK):
        self.maxBulk = maxBulk
        self._buffer = bytearray()
        self._stack: List[_Array] = []
        # The length of the bulk string being read, if one is.
        self._bulk: Optional[int] = None

    def feed(self, data: bytes) -> List[Any]:
        """
        @raise ProtocolError: for bytes no Redis server sends.
        """
        buffer = self._buffer
        buffer += data
        replies: List[Any] = []
        position = 0
        while True:
            if self._bulk is not None:
                end = position + self._bulk
                if len(buffer) < end + 2:
                    break
                if buffer[end:end + 2] != b"\r\n":
                    raise ProtocolError("a bulk string does not end in CRLF")
                value: Any = bytes(buffer[position:end])
                position = end + 2
                self._bulk = None
            else:
                newline = buffer.find(b"\r\n", position)
                if newline < 0:
                    if len(buffer) - position > _MAX_LINE:
                        raise ProtocolError("a reply line is too long")
                    break
                kind, line = buffer[position:position + 1], bytes(buffer[position + 1:newline])
                position = newline + 2
                if kind == b"+":
                    value = line
                elif kind == b"-":
                    value = RedisError(line.decode("utf-8", "replace"))
                elif kind == b":":
                    value = _integer(line)
                elif kind == b"$":
                    length = _integer(line)
                    if length > self.maxBulk:
                        raise ProtocolError(f"a bulk string of {length} bytes is over the limit")
                    if length >= 0:
                        self._bulk = length
                        continue
                    value = None
                elif kind == b"*":
                    count = _integer(line)
                    if count > 0:
                        if len(self._stack) >= MAX_DEPTH:
                            raise ProtocolError("replies nest too deep")
                        self._stack.append(_Array(count))
                        continue
                    value = None if count < 0 else []
                else:
                    raise ProtocolError(f"unknown reply type {kind!r}")
            value = self._complete(value)
            if value is not _PENDING:
                replies.append(value)
        del buffer[:position]
        return replies

    def _complete(self, value: Any) -> Any:
        """
        Place C{value} in the array being read, if any; what is complete.
        """
        stack = self._stack
        while stack:
            top = stack[-1]
            top.items.append(value)
            top.remaining -= 1
            if top.remaining:
                return _PENDING
            stack.pop()
            value = top.items
        return value


_PENDING = object()


def _integer(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"{line[:20]!r} is not an integer") from None
