"""
The "addheader" filter: security headers on every relayed response that
has none of its own, and X-Proxied-By on every request sent upstream.

This module is the filter's configuration: for other fields, copy it into a
twisted/plugins/ folder of your own and give the copy another name.
"""

from addheader import AddHeaders

addheader = AddHeaders(
    "addheader",
    response={
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    },
    request={"X-Proxied-By": "dualproxy"},
)
