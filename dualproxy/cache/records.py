"""
What the cache writes as an entry's head: a stored response with its
timings, or the index of a URI's variants.  Stores see only the bytes.

Every variant of a URI is stored under a key derived from the index's
I{generation}: dropping the index (purge, invalidation) makes all its
variants unreachable at once, though the store only evicts them later.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from ..http.message import LENGTH, NO_BODY, Headers, ResponseHead
from .policy import StoredResponse

_BODYLESS = frozenset({204, 304})


@dataclass(frozen=True)
class VaryIndex:
    """
    A URI whose responses vary on the request fields in C{names}.
    """

    names: Tuple[bytes, ...]
    generation: str

    @classmethod
    def new(cls, names: Tuple[bytes, ...]) -> VaryIndex:
        return cls(names, os.urandom(8).hex())

    def variantKey(self, primary: bytes, secondary: Tuple) -> bytes:
        parts = [primary, self.generation.encode("ascii")]
        for name, value in secondary:
            parts.append(name + b"=" + (b"-" if value is None else b"+" + value))
        return b"\0".join(parts)


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _bytes(value: str) -> bytes:
    return value.encode("latin-1")


def dumpResponse(stored: StoredResponse) -> bytes:
    response = stored.response
    return json.dumps({
        "status": response.status,
        "reason": _text(response.reason),
        "headers": [[_text(name), _text(value)] for name, value in response.headers],
        "requested": stored.requestTime,
        "responded": stored.responseTime,
        "vary": None if stored.varyKey is None else [
            [_text(name), None if value is None else _text(value)] for name, value in stored.varyKey
        ],
    }, separators=(",", ":")).encode("ascii")


def dumpIndex(index: VaryIndex) -> bytes:
    return json.dumps(
        {"index": [_text(name) for name in index.names], "generation": index.generation},
        separators=(",", ":"),
    ).encode("ascii")


def load(data: bytes, size: int) -> Optional[Union[StoredResponse, VaryIndex]]:
    """
    The record in an entry's head, with C{size} (the stored body's length)
    as its framing; None for bytes this version cannot read, which the
    cache then treats as a miss.
    """
    try:
        record = json.loads(data)
        if "index" in record:
            return VaryIndex(tuple(_bytes(name) for name in record["index"]), record["generation"])
        status = int(record["status"])
        headers = Headers([(_bytes(name), _bytes(value)) for name, value in record["headers"]])
        vary = record["vary"]
        varyKey = None if vary is None else tuple(
            (_bytes(name), None if value is None else _bytes(value)) for name, value in vary
        )
        framing = NO_BODY if status in _BODYLESS else LENGTH
        response = ResponseHead(status, _bytes(record["reason"]), headers, b"HTTP/1.1", framing, size)
        return StoredResponse(response, float(record["requested"]), float(record["responded"]), varyKey)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
