"""
Running the enabled L{IRequestFilter} plugins, in order.
"""

from __future__ import annotations

from typing import Sequence

from twisted.logger import Logger

from .http.message import Refusal, RequestHead, ResponseHead
from .http.proxystatus import PROXY_INTERNAL_ERROR

_log = Logger()


class FilterChain:
    """
    The filters a mode was started with.

    A filter that raises fails closed: its traceback goes to the log and the
    client gets a 500 naming the filter, never a half-filtered message.
    """

    def __init__(self, filters: Sequence = ()):
        self.filters = tuple(filters)

    def request(self, head: RequestHead, exchange) -> None:
        """
        Let each filter rewrite the request; the first refusal answers it.
        """
        for requestFilter in self.filters:
            try:
                refusal = requestFilter.request(head, exchange.client)
            except Exception:
                raise self._failed(requestFilter, "request")
            if refusal is not None:
                raise refusal

    def response(self, request: RequestHead, head: ResponseHead) -> None:
        """
        Let each filter rewrite the response head.

        @raise Refusal: a filter failed.
        """
        for responseFilter in self.filters:
            try:
                responseFilter.response(request, head)
            except Exception:
                raise self._failed(responseFilter, "response")

    @staticmethod
    def _failed(failing, side: str) -> Refusal:
        name = getattr(failing, "name", type(failing).__name__)
        _log.failure("the {side} filter {name} failed", side=side, name=name)
        return Refusal(500, f"the {side} filter {name} failed", errorType=PROXY_INTERNAL_ERROR)
