"""
Running the enabled L{IRequestFilter} plugins, in order.
"""

from __future__ import annotations

from typing import Sequence

from .http.message import RequestHead, ResponseHead


class FilterChain:
    """
    The filters a mode was started with.
    """

    def __init__(self, filters: Sequence = ()):
        self.filters = tuple(filters)

    def request(self, head: RequestHead, exchange) -> None:
        """
        Let each filter rewrite the request; the first refusal answers it.
        """
        for requestFilter in self.filters:
            refusal = requestFilter.request(head, exchange.client)
            if refusal is not None:
                raise refusal

    def response(self, request: RequestHead, head: ResponseHead) -> None:
        for responseFilter in self.filters:
            responseFilter.response(request, head)
