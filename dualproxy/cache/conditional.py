"""
Answering conditional and Range requests from a complete stored 200.

Revalidations (If-None-Match, If-Modified-Since) and resumed downloads
(Range, If-Range) are most of what clients send for cached content; answering
them from the stored response saves a round trip to the origin.  These are
pure functions of the request and the stored head: the cache picks the stored
response, streams the body, and adds Age.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import List, Optional, Tuple, Union

from dualproxy.cache.policy import httpDate
from dualproxy.http.message import LENGTH, NO_BODY, Headers, RequestHead, ResponseHead

# RFC 9110 section 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, where
# etagc = %x21 / %x23-7E / obs-text (so a comma can be part of a tag).
_TAG = re.compile(rb'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')

# One list element: the text up to the next comma outside double quotes.
_ELEMENT = re.compile(rb'(?:[^,"]|"[^"]*"?)+')

# RFC 9110 section 14.1.2: int-range / suffix-range.
_RANGE_SPEC = re.compile(rb"([0-9]+)-([0-9]*)|-([0-9]+)")

_OWS = b" \t"

# RFC 9110 section 13.2.1: methods that do not select a representation.
_NO_SELECTION = frozenset({b"CONNECT", b"OPTIONS", b"TRACE"})

# RFC 9110 section 15.4.5, plus Last-Modified to guide cache updates.
_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary",
     b"last-modified"}
)

_UNSATISFIABLE_FIELDS = frozenset({b"cache-control", b"date", b"etag", b"last-modified"})

# (weak, opaque-tag)
EntityTag = Tuple[bool, bytes]


class Unsatisfiable(Enum):
    """
    The type of L{UNSATISFIABLE}, so that type checkers can tell it from a
    range.
    """

    UNSATISFIABLE = "unsatisfiable"


# byteRange's answer when the request deserves a 416.
UNSATISFIABLE = Unsatisfiable.UNSATISFIABLE


def _entityTag(value: bytes) -> Optional[EntityTag]:
    match = _TAG.fullmatch(value.strip(_OWS))
    if match is None:
        return None
    return bool(match.group(1)), match.group(2)


def _entityTags(value: bytes) -> List[EntityTag]:
    """
    The valid entity-tags of an If-Match/If-None-Match list.  Malformed
    elements are dropped: a tag nobody can parse cannot match anything.
    """
    tags = []
    for element in _ELEMENT.findall(value):
        tag = _entityTag(element)
        if tag is not None:
            tags.append(tag)
    return tags


def _tagMatches(field: bytes, stored: Optional[EntityTag], strong: bool) -> bool:
    """
    Whether an If-Match/If-None-Match value matches the stored ETag with the
    strong or weak comparison of RFC 9110 section 8.8.3.2.  C{*} matches
    because a stored response means a current representation exists.
    """
    if field == b"*":
        return True
    if stored is None:
        return False
    return any(
        opaque == stored[1] and not (strong and (weak or stored[0]))
        for weak, opaque in _entityTags(field)
    )


def _list(headers: Headers, name: bytes) -> Optional[bytes]:
    values = headers.getAll(name)
    return b", ".join(values) if values else None


def _date(headers: Headers, name: bytes) -> Optional[float]:
    """
    A single-valued HTTP-date field, or None if absent, repeated or invalid:
    the cases in which RFC 9110 section 13.1 says to ignore it.
    """
    values = headers.getAll(name)
    return httpDate(values[0]) if len(values) == 1 else None


def preconditions(request: RequestHead, stored: ResponseHead) -> Optional[int]:
    """
    The status (304 or 412) that the request's preconditions call for, taken
    in the order of RFC 9110 section 13.2.2, or None if the stored response
    (or a range of it) should be sent.
    """
    if request.method in _NO_SELECTION:
        return None
    fields = request.headers
    etag = stored.headers.get(b"etag")
    tag = None if etag is None else _entityTag(etag)
    lastModified = _date(stored.headers, b"last-modified")
    ifMatch = _list(fields, b"if-match")
    if ifMatch is not None:
        if not _tagMatches(ifMatch, tag, strong=True):
            return 412
    else:
        since = _date(fields, b"if-unmodified-since")
        if since is not None and lastModified is not None and lastModified > since:
            return 412
    safe = request.method in (b"GET", b"HEAD")
    ifNoneMatch = _list(fields, b"if-none-match")
    if ifNoneMatch is not None:
        if _tagMatches(ifNoneMatch, tag, strong=False):
            return 304 if safe else 412
    elif safe:
        since = _date(fields, b"if-modified-since")
        # RFC 9111 section 4.3.2: a cache falls back to the stored Date.
        modified = lastModified if lastModified is not None else _date(stored.headers, b"date")
        if since is not None and modified is not None and modified <= since:
            return 304
    return None


def notModified(stored: ResponseHead) -> ResponseHead:
    """
    The 304 for a stored response: only the fields RFC 9110 section 15.4.5
    lets it carry, so that the client's copy keeps its own representation
    metadata.
    """
    headers = Headers(
        [(name, value) for name, value in stored.headers
         if name.lower() in _NOT_MODIFIED_FIELDS]
    )
    return ResponseHead(304, b"Not Modified", headers, framing=NO_BODY, length=0)


def _ifRangeHolds(request: RequestHead, stored: ResponseHead) -> bool:
    """
    Whether If-Range (RFC 9110 section 13.1.5), if any, lets the range be
    sent: only a strong validator proves the client's part is of this
    representation.
    """
    values = request.headers.getAll(b"if-range")
    if not values:
        return True
    if len(values) > 1:
        return False
    tag = _entityTag(values[0])
    if tag is not None:
        etag = stored.headers.get(b"etag")
        return not tag[0] and etag is not None and _entityTag(etag) == tag
    date = httpDate(values[0])
    served = _date(stored.headers, b"date")
    # RFC 9110 section 8.8.2.2: a cache's Last-Modified is strong only when
    # at least a second older than the stored Date.
    return (
        date is not None
        and date == _date(stored.headers, b"last-modified")
        and served is not None
        and served - date >= 1
    )


def byteRange(
    request: RequestHead, stored: ResponseHead, size: int
) -> Union[Tuple[int, int], Unsatisfiable, None]:
    """
    The single byte range C{(start, end)}, end exclusive, that a GET asks
    of a stored 200 whose body is C{size} bytes; L{UNSATISFIABLE} for a 416;
    or None to send the whole response, which RFC 9110 section 14.2 always
    allows: for other methods and statuses, other units, malformed fields,
    several ranges (not worth a multipart body) and a failed If-Range.
    """
    values = request.headers.getAll(b"range")
    if request.method != b"GET" or stored.status != 200 or len(values) != 1:
        return None
    unit, equals, rangeSet = values[0].partition(b"=")
    specs = [spec.strip(_OWS) for spec in rangeSet.split(b",") if spec.strip(_OWS)]
    if not equals or unit.lower() != b"bytes" or len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None or not _ifRangeHolds(request, stored):
        return None
    first, last, suffix = match.groups()
    if suffix is not None:
        if int(suffix) == 0:
            return UNSATISFIABLE
        # An empty body satisfies a suffix range, but no Content-Range can
        # describe zero bytes: send the (empty) 200.
        return (max(size - int(suffix), 0), size) if size else None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, (min(int(last) + 1, size) if last else size)


def partial(stored: ResponseHead, start: int, end: int, size: int) -> ResponseHead:
    """
    The 206 for bytes C{start} to C{end} (exclusive) of a stored 200 of
    C{size} bytes; it keeps every stored field, as RFC 9110 section 15.3.7
    requires of the cache-related ones.
    """
    headers = stored.headers.copy()
    headers.set(b"Content-Length", b"%d" % (end - start))
    headers.set(b"Content-Range", b"bytes %d-%d/%d" % (start, end - 1, size))
    return ResponseHead(206, b"Partial Content", headers, framing=LENGTH, length=end - start)


def unsatisfiable(stored: ResponseHead, size: int) -> ResponseHead:
    """
    The 416 for a stored 200 of C{size} bytes, whose Content-Range tells the
    client the current length (RFC 9110 section 15.5.17).
    """
    headers = Headers(
        [(name, value) for name, value in stored.headers
         if name.lower() in _UNSATISFIABLE_FIELDS]
    )
    headers.add(b"Content-Range", b"bytes */%d" % size)
    headers.add(b"Content-Length", b"0")
    return ResponseHead(416, b"Range Not Satisfiable", headers, framing=LENGTH, length=0)
