"""
Header rules every intermediary applies (RFC 9110 section 7.6), as pure
functions on L{Headers}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Collection, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from .message import CHUNKED, LENGTH, Headers, Refusal, RequestHead, ResponseHead

# RFC 9110 section 7.6.1, plus the non-standard ones clients still send.
HOP_BY_HOP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        # Only meaningful with an h2c upgrade, which is never relayed.
        b"http2-settings",
    ]
)


_CONNECTION_FIELDS = frozenset([b"connection", b"proxy-connection"])

# Fields a Connection header may not take away.
_END_TO_END = (b"content-length", b"host")


def stripHopByHop(headers: Headers) -> None:
    """
    Remove the fields that describe one connection, not the message: the
    fixed list and every field the Connection header names.

    Content-Length and Host stay even if named: one delimits the message
    (a relayed 200 that lost its C{Content-Length: 0} would be read up to
    the end of the connection), the other says which site it is for.
    """
    extra = None
    if headers.hasAny(_CONNECTION_FIELDS):
        named = headers.tokens(b"connection") + headers.tokens(b"proxy-connection")
        extra = [name for name in named if name not in _END_TO_END and name not in HOP_BY_HOP]
    headers.removeAny(HOP_BY_HOP.union(extra) if extra else HOP_BY_HOP)


#: Upgrades never relayed: a backend's 101 to h2c would open an HTTP/2
#: connection past the proxy's routing and filters (h2c smuggling).
NEVER_UPGRADED = frozenset([b"h2c"])


def offeredUpgrade(headers: Headers, allowed: Collection[bytes]) -> Optional[bytes]:
    """
    The Upgrade to pass on for a request, or None: only when Connection
    names it (RFC 9110 section 7.8), only the C{allowed} protocols (lower
    case, by name or name/version), never those in L{NEVER_UPGRADED}.
    """
    if b"upgrade" not in headers.tokens(b"connection"):
        return None
    kept = [protocol for protocol in headers.tokens(b"upgrade")
            if _protocolName(protocol) not in NEVER_UPGRADED
            and (protocol in allowed or _protocolName(protocol) in allowed)]
    return b", ".join(kept) if kept else None


def upgradeOffered(offered: bytes, head: ResponseHead) -> bool:
    """
    Whether a 101 switches to a protocol the request offered (RFC 9110
    section 7.8: the server names the one it switched to).
    """
    chosen = head.headers.tokens(b"upgrade")
    names = {_protocolName(protocol.strip()) for protocol in offered.split(b",")}
    return len(chosen) == 1 and _protocolName(chosen[0]) in names


def _protocolName(protocol: bytes) -> bytes:
    """
    C{b"websocket"} of C{b"websocket/13"}: an Upgrade protocol without its version.
    """
    return protocol.split(b"/", 1)[0]


def protocolVersion(version: bytes) -> bytes:
    """
    The received-protocol of a Via entry: C{b"1.1"} for C{b"HTTP/1.1"}.
    """
    return version[5:] if version.startswith(b"HTTP/") else version


def addVia(headers: Headers, version: bytes, pseudonym: bytes) -> None:
    """
    Append this hop to Via (RFC 9110 section 7.6.3): one field per hop keeps
    earlier hops intact and lets a loop be spotted later.
    """
    headers.add(b"Via", protocolVersion(version) + b" " + pseudonym)


def wantsKeepAlive(version: bytes, headers: Headers) -> bool:
    """
    Whether the sender of a message is willing to reuse its connection
    (RFC 9112 section 9.3).
    """
    tokens = headers.tokens(b"connection")
    if b"close" in tokens:
        return False
    if version == b"HTTP/1.1":
        return True
    return b"keep-alive" in tokens or b"keep-alive" in headers.tokens(b"proxy-connection")


_SIMPLE_AUTHORITY = re.compile(r"([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?\Z")


@lru_cache(maxsize=1024)
def splitAuthority(authority: str, defaultPort: int) -> Tuple[str, int]:
    """
    Host and port of C{host[:port]} or C{[v6]:port}; raises L{Refusal} 400.
    Remembered for the hosts seen most: a forward proxy's clients name the
    same few again and again.
    """
    simple = _SIMPLE_AUTHORITY.match(authority)
    if simple is not None:
        host, port = simple.groups()
        port = int(port) if port else defaultPort
        if 0 < port < 65536 or (port == 0 and not simple.group(2)):
            return host.lower(), port
        raise Refusal(400, "invalid port in request target")
    try:
        parts = urlsplit("//" + authority)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise Refusal(400, "invalid host or port in request target")
    if not host or parts.username is not None or parts.netloc != authority:
        raise Refusal(400, "invalid host in request target")
    return host, port or defaultPort


def absoluteTarget(head: RequestHead) -> Tuple[str, str, int, bytes, bytes]:
    """
    Split an absolute-form target (RFC 9112 section 3.2.2) into scheme,
    host, port, the Host field value to send, and the origin-form target.
    """
    target = head.target
    lower = target[:8].lower()
    if lower.startswith(b"http://"):
        scheme, rest, defaultPort = "http", target[7:], 80
    elif lower.startswith(b"https://"):
        scheme, rest, defaultPort = "https", target[8:], 443
    else:
        raise Refusal(400, "not a proxy request: the target must be an absolute http:// or https:// URL")
    slash = len(rest)
    for mark in (b"/", b"?"):
        index = rest.find(mark)
        if 0 <= index < slash:
            slash = index
    authority, path = rest[:slash], rest[slash:]
    if b"#" in rest:
        raise Refusal(400, "fragment in request target")
    try:
        text = authority.decode("ascii")
    except UnicodeDecodeError:
        raise Refusal(400, "non-ASCII host in request target")
    host, port = splitAuthority(text, defaultPort)
    if not path.startswith(b"/"):
        path = b"/" + path
    return scheme, host, port, authority, path


def isServerWideOptions(head: RequestHead) -> bool:
    """
    Whether an absolute-form request is an OPTIONS for the whole server:
    a URI with neither path nor query, which the last proxy on the chain
    sends on as C{OPTIONS *} (RFC 9112 section 3.2.4).
    """
    if head.method != b"OPTIONS":
        return False
    rest = head.target.partition(b"://")[2]
    return b"/" not in rest and b"?" not in rest


def connectTarget(head: RequestHead) -> Tuple[str, int]:
    """
    Host and port of a CONNECT request's authority-form target.
    """
    try:
        text = head.target.decode("ascii")
    except UnicodeDecodeError:
        raise Refusal(400, "non-ASCII CONNECT target")
    host, port = splitAuthority(text, 0)
    if not port:
        raise Refusal(400, "CONNECT target needs a port")
    return host, port


def frameBody(headers: Headers, head: RequestHead) -> None:
    """
    Declare the body of a forwarded request in one canonical way, whatever
    way it arrived (RFC 9112 section 6): the upstream never has to choose
    between conflicting framings.
    """
    headers.remove(b"content-length", b"transfer-encoding")
    if head.framing == LENGTH:
        headers.add(b"Content-Length", b"%d" % head.length)
    elif head.framing == CHUNKED:
        headers.add(b"Transfer-Encoding", b"chunked")
    elif head.method in (b"POST", b"PUT", b"PATCH"):
        headers.add(b"Content-Length", b"0")


def frameResponse(head: ResponseHead) -> None:
    """
    Declare a relayed response's length in one canonical field, as
    L{frameBody} does for requests: a list of one repeated value, or the
    same value in several fields, is sent on once (RFC 9110 section 8.6).

    Without a body to delimit (HEAD, 304), Content-Length only describes
    the representation: a valid one is kept, canonical, and an invalid one
    dropped.  A 1xx or 204 response never has one.
    """
    headers = head.headers
    if head.framing == LENGTH:
        value: Optional[bytes] = b"%d" % head.length
        if headers.only(b"content-length") == value:
            # Canonical already, as nearly every response is.
            return
    elif b"content-length" not in headers:
        return
    elif head.status < 200 or head.status == 204:
        value = None
    else:
        found = {v.strip() for field in headers.getAll(b"content-length") for v in field.split(b",")}
        single = found.pop() if len(found) == 1 else b""
        value = b"%d" % int(single) if single.isdigit() and len(single) <= 18 else None
    headers.remove(b"content-length")
    if value is not None:
        headers.add(b"Content-Length", value)


@dataclass(frozen=True)
class RewritePolicy:
    """
    What a mode adds to and takes from every message it relays, fixed at
    start-up: the forward proxy's Via and anonymity, the reverse proxy's
    forwarding fields.

    @ivar via: the pseudonym of a Via entry added both ways, or None.
    @ivar remove: request fields dropped (lower case): the anonymous
        proxy's identifying fields.
    """

    via: Optional[bytes] = None
    remove: Tuple[bytes, ...] = ()
    xForwardedFor: bool = False
    xForwardedProto: bool = False
    xForwardedHost: bool = False
    forwarded: bool = False


class Hop(NamedTuple):
    """
    Who sent a request and how, as the forwarding fields tell the next hop.

    @ivar client: the sender's IP address (None: unknown, a UNIX socket).
    @ivar trusted: its own forwarding fields are extended, not replaced.
    @ivar proto: C{b"http"} or C{b"https"}.
    @ivar host: the Host it asked for, if any.
    """

    client: Optional[str]
    trusted: bool
    proto: bytes = b"http"
    host: Optional[bytes] = None


def rewriteRequest(request: RequestHead, policy: RewritePolicy, hop: Hop, host: Optional[bytes] = None,
                   upgrade: Optional[bytes] = None) -> Headers:
    """
    The fields to send upstream for C{request}: its hop-by-hop fields gone,
    the body framed one way, the policy's fields added.

    @param host: a Host to send first instead of the request's.
    @param upgrade: the Upgrade to pass on (from L{offeredUpgrade}).
    """
    headers = request.headers.copy()
    stripHopByHop(headers)
    if upgrade is not None:
        headers.add(b"Connection", b"Upgrade")
        headers.add(b"Upgrade", upgrade)
    if host is not None:
        headers.remove(b"host")
        headers.insert(b"Host", host)
    if policy.remove:
        headers.remove(*policy.remove)
    _addForwarding(headers, policy, hop)
    if policy.via is not None:
        addVia(headers, request.version, policy.via)
    frameBody(headers, request)
    return headers


def rewriteResponse(head: ResponseHead, policy: RewritePolicy) -> None:
    """
    Make a response fit to relay: its hop-by-hop fields gone (a 101 keeps
    the Upgrade it switched to), its length declared once, the policy's
    Via added.
    """
    upgrade = head.headers.get(b"upgrade") if head.status == 101 else None
    stripHopByHop(head.headers)
    frameResponse(head)
    if upgrade is not None:
        head.headers.add(b"Connection", b"Upgrade")
        head.headers.add(b"Upgrade", upgrade)
    if policy.via is not None:
        addVia(head.headers, head.version, policy.via)


def _addForwarding(headers: Headers, policy: RewritePolicy, hop: Hop) -> None:
    """
    Add the sender's address, scheme and requested host.

    What an untrusted sender put in these fields is a claim nobody checked,
    so it is replaced; a trusted proxy's chain is extended (RFC 7239
    section 8.1).
    """
    if not hop.trusted:
        headers.remove(b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded")
    if policy.xForwardedFor:
        prior = headers.getAll(b"x-forwarded-for")
        headers.set(b"X-Forwarded-For", b", ".join(prior + [hop.client.encode("ascii") if hop.client else b"unknown"]))
    if policy.xForwardedProto and b"x-forwarded-proto" not in headers:
        headers.add(b"X-Forwarded-Proto", hop.proto)
    if policy.xForwardedHost and hop.host is not None and b"x-forwarded-host" not in headers:
        headers.add(b"X-Forwarded-Host", hop.host)
    if policy.forwarded:
        element = b"for=" + forwardedNode(hop.client) + b";proto=" + hop.proto
        if hop.host is not None:
            element += b';host="' + hop.host.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        prior = headers.getAll(b"forwarded")
        headers.set(b"Forwarded", b", ".join(prior + [element]))


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
