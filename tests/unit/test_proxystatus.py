"""
RFC 9209 Proxy-Status values and the error types refusals get from their
status when they name none.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dualproxy.http.proxystatus import DETAILS_LIMIT, defaultErrorType, proxyStatus

from ..tables import fromTable

# (rule, name, error type, details, field value)
VALUES = [
    ("RFC 9209 \u00a72.1.1: the error type is a token", "dualproxy", "dns_timeout", None,
     b"dualproxy; error=dns_timeout"),
    ("RFC 9209 \u00a72.1.5: details are an sf-string", "dualproxy", "connection_refused",
     "origin example.com:80 refused the connection",
     b'dualproxy; error=connection_refused; details="origin example.com:80 refused the connection"'),
    ("RFC 8941 \u00a73.3.3: quote and backslash escaped", "dualproxy", "http_request_error", 'a "b" \\ c',
     b'dualproxy; error=http_request_error; details="a \\"b\\" \\\\ c"'),
    ("RFC 8941 \u00a73.3.3: only printable ASCII in a string", "dualproxy", "dns_error", "caf\u00e9\tbar\x7f",
     b'dualproxy; error=dns_error; details="caf??bar?"'),
    ("empty details are left out", "dualproxy", "proxy_loop_detected", "",
     b"dualproxy; error=proxy_loop_detected"),
    ("RFC 9209 \u00a72: a name that is no token is a string", "proxy 1", "dns_error", None,
     b'"proxy 1"; error=dns_error'),
    ("RFC 8941 \u00a73.3.4: a token may not start with a digit", "1proxy", "dns_error", None,
     b'"1proxy"; error=dns_error'),
    ("RFC 8941 \u00a73.3.4: a token may hold colon and slash", "proxy:3128/a", "dns_error", None,
     b"proxy:3128/a; error=dns_error"),
]

# (rule, status, error type)
DEFAULTS = [
    ("400 is a request error", 400, "http_request_error"),
    ("404 is a request error", 404, "http_request_error"),
    ("405 is a request error", 405, "http_request_error"),
    ("408 is a request error", 408, "http_request_error"),
    ("412 is a request error", 412, "http_request_error"),
    ("413 is a request error", 413, "http_request_error"),
    ("414 is a request error", 414, "http_request_error"),
    ("429 is a request error", 429, "http_request_error"),
    ("431 is a request error", 431, "http_request_error"),
    ("403 is a request denied by policy", 403, "http_request_denied"),
    ("407 is a request denied by policy", 407, "http_request_denied"),
    ("501 refuses what the request asks", 501, "http_request_error"),
    ("505 refuses what the request asks", 505, "http_request_error"),
    ("500 is an internal error", 500, "proxy_internal_error"),
    ("503 is an unavailable next hop", 503, "destination_unavailable"),
    ("508 is a loop", 508, "proxy_loop_detected"),
    ("502 needs the code that saw the failure to name it", 502, None),
    ("504 for only-if-cached has no RFC 9209 type", 504, None),
    ("a redirect is no error", 308, None),
]


@fromTable(VALUES, "checkValue")
@fromTable(DEFAULTS, "checkDefault")
class ProxyStatusTests(SynchronousTestCase):
    def checkValue(self, name, errorType, details, expected):
        self.assertEqual(proxyStatus(name, errorType, details), expected)

    def checkDefault(self, status, expected):
        self.assertEqual(defaultErrorType(status), expected)

    def test_longDetailsCut(self):
        """
        A long reason is cut, and escaping happens after the cut so no
        escape is split.
        """
        value = proxyStatus("dualproxy", "dns_error", '"' * (DETAILS_LIMIT + 50))
        details = value.split(b"details=", 1)[1]
        self.assertEqual(details, b'"' + b'\\"' * (DETAILS_LIMIT - 3) + b'..."')
