"""
The answers to ACME challenges while an order is pending: HTTP-01 from
the routing tree (a well-known target every virtual host has), TLS-ALPN-01
from the TLS listeners' certificate book.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

from zope.interface import Interface, implementer

from ..http.message import LENGTH, Headers, Refusal, ResponseHead
from ..routing.targets import RoutingRequest, Target
from .tlsalpn import challengeCertificate

#: The well-known URI suffix (RFC 8615) of HTTP-01, under /.well-known/.
WELL_KNOWN = b"acme-challenge"
# RFC 8555 section 8.3: tokens are base64url, with no padding.
_TOKEN = re.compile(rb"[A-Za-z0-9_-]+\Z")


class IChallengeResponder(Interface):
    """
    What answers one challenge type while an order is pending; called on
    the reactor thread.
    """

    def publish(name, token, keyAuthorization):
        """
        Answer validation of C{name}'s challenge C{token} with
        C{keyAuthorization} (the proof the CA checks).
        """

    def withdraw(name, token):
        """
        Stop answering it: the order is settled, whatever the outcome.
        """


@implementer(IChallengeResponder)
class ChallengeTokens:
    """
    The key authorizations of the HTTP-01 challenges in progress, by token.
    """

    def __init__(self) -> None:
        self._answers: Dict[str, str] = {}

    def publish(self, name: str, token: str, keyAuthorization: str) -> None:
        self._answers[token] = keyAuthorization

    def withdraw(self, name: str, token: str) -> None:
        self._answers.pop(token, None)

    def lookup(self, token: str) -> Optional[str]:
        return self._answers.get(token)

    def __len__(self) -> int:
        return len(self._answers)

    def target(self, request: RoutingRequest) -> Optional[Target]:
        """
        The answer to C{request} for C{/.well-known/acme-challenge/TOKEN}
        (the walk is at C{acme-challenge}), or None when it names no
        challenge in progress: the host's own routes then have it.
        """
        token = b"/".join(request.postpath[1:])
        if not _TOKEN.match(token):
            return None
        answer = self.lookup(token.decode("ascii"))
        return None if answer is None else ChallengeAnswer(answer)


class ChallengeAnswer(Target):
    """
    One HTTP-01 answer: the key authorization as the body (RFC 8555
    section 8.3), for GET and HEAD.
    """

    label = "acme-challenge"

    def __init__(self, keyAuthorization: str) -> None:
        super().__init__()
        self.body = keyAuthorization.encode("ascii")

    def serve(self, request: RoutingRequest) -> None:
        exchange = request.exchange
        if exchange.request.method not in (b"GET", b"HEAD"):
            raise Refusal(405, "an ACME challenge is answered to GET and HEAD", [(b"Allow", b"GET, HEAD")])
        body = self.body
        exchange.writeHead(ResponseHead(200, b"OK", Headers([
            (b"Content-Type", b"application/octet-stream"), (b"Content-Length", b"%d" % len(body)),
            (b"Cache-Control", b"no-store")]), framing=LENGTH, length=len(body)))
        exchange.write(body)
        exchange.finish()


@implementer(IChallengeResponder)
class ALPNChallenges:
    """
    TLS-ALPN-01 answered by the TLS listeners: each challenge's
    certificate is put in their book while the order is pending.
    """

    def __init__(self, book) -> None:
        self.book = book

    def publish(self, name: str, token: str, keyAuthorization: str) -> None:
        certificate, key = challengeCertificate(name, keyAuthorization)
        self.book.offerChallenge(name, certificate, key)

    def withdraw(self, name: str, token: str) -> None:
        self.book.withdrawChallenge(name)
