"""
RFC 9209 Proxy-Status for the answers the proxy gives itself: the error
types it names, and the field value that carries one.

The same type goes to the client (in the field) and to the access log, so
"why did this request fail" has one precise answer on both sides.
"""

from __future__ import annotations

import re
from typing import Optional

# RFC 9209 section 2.3: the proxy error types dualproxy names.
DNS_TIMEOUT = "dns_timeout"
DNS_ERROR = "dns_error"
DESTINATION_UNAVAILABLE = "destination_unavailable"
DESTINATION_IP_PROHIBITED = "destination_ip_prohibited"
DESTINATION_IP_UNROUTABLE = "destination_ip_unroutable"
CONNECTION_REFUSED = "connection_refused"
CONNECTION_TERMINATED = "connection_terminated"
CONNECTION_TIMEOUT = "connection_timeout"
CONNECTION_READ_TIMEOUT = "connection_read_timeout"
TLS_PROTOCOL_ERROR = "tls_protocol_error"
TLS_CERTIFICATE_ERROR = "tls_certificate_error"
TLS_ALERT_RECEIVED = "tls_alert_received"
HTTP_REQUEST_ERROR = "http_request_error"
HTTP_REQUEST_DENIED = "http_request_denied"
HTTP_RESPONSE_INCOMPLETE = "http_response_incomplete"
HTTP_RESPONSE_HEADER_SECTION_SIZE = "http_response_header_section_size"
HTTP_RESPONSE_HEADER_SIZE = "http_response_header_size"
HTTP_RESPONSE_TRANSFER_CODING = "http_response_transfer_coding"
HTTP_PROTOCOL_ERROR = "http_protocol_error"
PROXY_INTERNAL_ERROR = "proxy_internal_error"
PROXY_LOOP_DETECTED = "proxy_loop_detected"

# The intermediary's name in the field (RFC 9209 section 2).
NAME = "dualproxy"

# Enough for any reason the proxy gives; a longer one (an error message
# from elsewhere) is cut so the field stays a reasonable size.
DETAILS_LIMIT = 200

# RFC 8941 section 3.3.4.
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")

# Server errors whose status alone says which error it was.
_SERVER_ERRORS = {
    500: PROXY_INTERNAL_ERROR,
    503: DESTINATION_UNAVAILABLE,
    508: PROXY_LOOP_DETECTED,
}


def _string(text: str) -> str:
    """
    C{text} as an RFC 8941 sf-string: printable ASCII only (anything else
    becomes "?"), cut to L{DETAILS_LIMIT}, backslash and quote escaped.
    """
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    if len(text) > DETAILS_LIMIT:
        text = text[: DETAILS_LIMIT - 3] + "..."
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def proxyStatus(name: str, errorType: str, details: Optional[str] = None) -> bytes:
    """
    A Proxy-Status field value: intermediary C{name} met C{errorType};
    C{details} is for people (the reason the response body gives).
    """
    value = name if _TOKEN.fullmatch(name) else _string(name)
    value += "; error=" + errorType
    if details:
        value += "; details=" + _string(details)
    return value.encode("ascii")


def defaultErrorType(status: int) -> Optional[str]:
    """
    The error type of a refusal that names none, from its status alone.

    A 4xx is the request's fault (403 and 407 by policy); 501 and 505 too,
    since they refuse what the request asks for.  502 and 504 name none:
    only the code that saw the next hop fail knows which failure it was,
    and a 504 for only-if-cached is no error RFC 9209 has a type for.
    Below 400 the answer is no error at all (a redirect).
    """
    if status in (403, 407):
        return HTTP_REQUEST_DENIED
    if 400 <= status < 500 or status in (501, 505):
        return HTTP_REQUEST_ERROR
    return _SERVER_ERRORS.get(status)
