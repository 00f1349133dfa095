"""
A dualproxy filter that adds header fields: defaults for responses (such as
security headers) and fields the upstream can rely on in requests.

dualproxy's config file only names filters, so an L{AddHeaders} is
configured where it is made: in a dropin module, checked when it loads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Iterable, Tuple, Union

from twisted.plugin import IPlugin
from zope.interface import implementer

from dualproxy.http.message import RequestHead, ResponseHead
from dualproxy.interfaces import IRequestFilter

Fields = Union[Mapping[str, str], Iterable[Tuple[str, str]]]

# RFC 9110 section 5.6.2.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def encodeFields(fields: Fields) -> Tuple[Tuple[bytes, bytes], ...]:
    """
    C{fields} (a mapping or pairs of str) as header fields, checked now so
    that a typo stops the plugin loading instead of corrupting messages.

    @raise ValueError: for a name that is not a token, or a value with a
        line break, a NUL or a character outside Latin-1.
    """
    pairs = fields.items() if isinstance(fields, Mapping) else fields
    encoded = []
    for name, value in pairs:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a header field name")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"the value of {name} has a line break or NUL")
        encoded.append((name.encode("ascii"), value.encode("latin-1")))
    return tuple(encoded)


@implementer(IPlugin, IRequestFilter)
class AddHeaders:
    """
    Adds the C{response} fields to each response that lacks them, so an
    upstream's own choice wins, and sets the C{request} fields on each
    request, replacing any the client sent, so a client cannot forge them.
    """

    def __init__(self, name: str, response: Fields = (), request: Fields = ()):
        self.name = name
        self.responseFields = tuple((key, key.lower(), value) for key, value in encodeFields(response))
        self.requestFields = encodeFields(request)
        self.requestNames = tuple(name.lower() for name, _ in self.requestFields)

    def request(self, head: RequestHead, client) -> None:
        headers = head.headers
        headers.remove(*self.requestNames)
        for name, value in self.requestFields:
            headers.add(name, value)

    def response(self, request: RequestHead, head: ResponseHead) -> None:
        headers = head.headers
        # Judged on the upstream's fields alone, so a name given twice is
        # added twice.
        missing = [(name, value) for name, lower, value in self.responseFields if lower not in headers]
        for name, value in missing:
            headers.add(name, value)
