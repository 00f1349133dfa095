"""
The fields a reverse proxy adds so backends know who asked and how: the
de facto X-Forwarded-* family and RFC 7239 Forwarded, as pure functions.
"""

from __future__ import annotations

from typing import Optional

from ..http.message import Headers


def forwardedNode(client: Optional[str]) -> bytes:
    """
    A node for RFC 7239 section 6: IPv6 addresses quoted and bracketed,
    an unknown client (a UNIX socket) as C{unknown}.
    """
    if client is None:
        return b"unknown"
    if ":" in client:
        return b'"[' + client.encode("ascii") + b']"'
    return client.encode("ascii")


def addForwarding(
    headers: Headers,
    client: Optional[str],
    trusted: bool,
    proto: bytes,
    host: Optional[bytes],
    xForwardedFor: bool = True,
    xForwardedProto: bool = True,
    xForwardedHost: bool = True,
    forwarded: bool = False,
) -> None:
    """
    Add the client's address, scheme and requested host.

    What an untrusted client sent in these fields is a claim nobody checked,
    so it is replaced; a trusted proxy's chain is extended (RFC 7239
    section 8.1).
    """
    if not trusted:
        headers.remove(b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded")
    if xForwardedFor:
        mine = client.encode("ascii") if client else b"unknown"
        prior = headers.getAll(b"x-forwarded-for")
        headers.set(b"X-Forwarded-For", b", ".join(prior + [mine]))
    if xForwardedProto and b"x-forwarded-proto" not in headers:
        headers.add(b"X-Forwarded-Proto", proto)
    if xForwardedHost and host is not None and b"x-forwarded-host" not in headers:
        headers.add(b"X-Forwarded-Host", host)
    if forwarded:
        element = b"for=" + forwardedNode(client) + b";proto=" + proto
        if host is not None:
            element += b';host="' + host.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        prior = headers.getAll(b"forwarded")
        headers.set(b"Forwarded", b", ".join(prior + [element]))
