"""
A dualproxy filter that refuses, with 403, requests whose path matches any
of a list of regular expressions, before they reach the upstream.

The path is matched as a backend would resolve it, not as it was spelled:
otherwise C{/%61dmin}, C{/x/../admin} or C{/admin;x} would slip past a
pattern meant for C{/admin}.
"""

from __future__ import annotations

import re
from typing import Iterable, List, Optional
from urllib.parse import unquote_to_bytes

from twisted.plugin import IPlugin
from zope.interface import implementer

from dualproxy.http.message import Refusal, RequestHead, ResponseHead
from dualproxy.interfaces import IRequestFilter
from dualproxy.routing.tree import splitTarget

# Rounds of percent-decoding undone: a path still encoded after them is
# refused, as no honest client encodes that deep and a backend might decode
# once more.
DECODINGS = 3

_SCHEME_AND_AUTHORITY = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")


def targetPath(target: bytes) -> bytes:
    """
    The path of an origin-form (C{/a?b}, reverse mode and most forwarded
    requests) or absolute-form (C{http://host/a?b}, forwarded to a parent
    proxy) request target.
    """
    scheme = _SCHEME_AND_AUTHORITY.match(target)
    if scheme is not None:
        target = target[scheme.end():]
    return splitTarget(target)[0] or b"/"


def normalizedPath(path: bytes) -> Optional[str]:
    """
    C{path} as a backend would resolve it: percent-decoded until nothing
    changes (in case a backend decodes twice), then C{;parameters} dropped
    from each segment (as Tomcat does), empty and C{.} segments dropped and
    C{..} resolved.

    @return: the path, or L{None} if it is still percent-encoded after
        L{DECODINGS} rounds.
    """
    for _ in range(DECODINGS + 1):
        decoded = unquote_to_bytes(path)
        if decoded == path:
            break
        path = decoded
    else:
        return None
    segments: List[str] = []
    for segment in path.decode("utf-8", "surrogateescape").split("/"):
        segment = segment.split(";", 1)[0]
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    # "/a/" and "/a/b/.." name a directory: the trailing slash stays.
    trailingSlash = segments and segment in ("", ".", "..")
    return "/" + "/".join(segments) + ("/" if trailingSlash else "")


@implementer(IPlugin, IRequestFilter)
class BlockPaths:
    """
    Refuses requests whose L{normalizedPath} matches any of C{patterns},
    searched anywhere in it (anchor them with C{^} and C{$}).
    """

    def __init__(self, name: str, patterns: Iterable[str]):
        self.name = name
        self.patterns = [re.compile(pattern) for pattern in patterns]

    def request(self, head: RequestHead, client) -> Optional[Refusal]:
        path = normalizedPath(targetPath(head.target))
        if path is None:
            return Refusal(403, "the request path is percent-encoded too many times")
        for pattern in self.patterns:
            if pattern.search(path):
                return Refusal(403, "this path is blocked by the proxy")
        return None

    def response(self, request: RequestHead, head: ResponseHead) -> None:
        """
        Responses pass unchanged: only requests are refused.
        """
