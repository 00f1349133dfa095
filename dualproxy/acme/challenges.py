"""
HTTP-01 answered from memory: the ACME client publishes a token's key
authorization while its order is pending, and the routing tree serves it
at C{/.well-known/acme-challenge/TOKEN}.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

from twisted.web import resource
from twisted.web.server import Request

CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"
# RFC 8555 8.3: tokens are base64url, with no padding.
_TOKEN = re.compile(rb"[A-Za-z0-9_-]+\Z")


class ChallengeTokens:
    """
    The key authorizations of the HTTP-01 challenges in progress, by token.
    """

    def __init__(self) -> None:
        self._answers: Dict[str, str] = {}

    def publish(self, token: str, keyAuthorization: str) -> None:
        self._answers[token] = keyAuthorization

    def withdraw(self, token: str) -> None:
        self._answers.pop(token, None)

    def lookup(self, token: str) -> Optional[str]:
        return self._answers.get(token)

    def __len__(self) -> int:
        return len(self._answers)


def challengeAnswer(tokens: ChallengeTokens, path: bytes) -> Optional[bytes]:
    """
    The body to answer a request for C{path} (without its query) with, or
    C{None} when it is no challenge in progress: the routing tree then
    handles the request as any other.
    """
    if not path.startswith(CHALLENGE_PREFIX):
        return None
    token = path[len(CHALLENGE_PREFIX):]
    if not _TOKEN.match(token):
        return None
    answer = tokens.lookup(token.decode("ascii"))
    return None if answer is None else answer.encode("ascii")


class HTTP01Resource(resource.Resource):
    """
    A leaf answering challenges in progress and 404 to everything else,
    for a listener that serves nothing but ACME challenges.
    """

    isLeaf = True

    def __init__(self, tokens: ChallengeTokens) -> None:
        super().__init__()
        self.tokens = tokens

    def render_GET(self, request: Request) -> bytes:
        answer = challengeAnswer(self.tokens, request.path)
        if answer is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"no such challenge\n"
        request.setHeader(b"content-type", b"text/plain")
        return answer
