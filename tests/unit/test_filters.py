"""
Tests for L{dualproxy.filters}: a filter that fails answers 500 instead of
letting the message through half-filtered or dropping the connection.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.filters import FilterChain
from dualproxy.http.message import Headers, Refusal, RequestHead, ResponseHead


class _Client:
    client = None


class Broken:
    name = "broken"

    def request(self, head, client):
        raise KeyError("bug")

    def response(self, request, head):
        raise KeyError("bug")


class Stamp:
    name = "stamp"

    def request(self, head, client):
        head.headers.add(b"X-Stamp", b"1")

    def response(self, request, head):
        head.headers.add(b"X-Stamp", b"1")


class FilterChainTests(SynchronousTestCase):
    def head(self):
        return RequestHead(b"GET", b"/", b"HTTP/1.1", Headers())

    def test_requestFilterFailureIs500(self):
        chain = FilterChain([Stamp(), Broken()])
        refusal = self.assertRaises(Refusal, chain.request, self.head(), _Client())
        self.assertEqual((refusal.status, refusal.reason, refusal.errorType),
                         (500, "the request filter broken failed", "proxy_internal_error"))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_responseFilterFailureIs500(self):
        chain = FilterChain([Broken(), Stamp()])
        head = ResponseHead(200, b"OK", Headers())
        refusal = self.assertRaises(Refusal, chain.response, self.head(), head)
        self.assertEqual(refusal.status, 500)
        self.assertNotIn(b"x-stamp", head.headers, "no filter runs after one failed")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_workingFiltersRunInOrder(self):
        head = self.head()
        FilterChain([Stamp(), Stamp()]).request(head, _Client())
        self.assertEqual(head.headers.getAll(b"x-stamp"), [b"1", b"1"])
