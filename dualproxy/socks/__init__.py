"""
The C{socks} mode: SOCKS5 (RFC 1928) tunnels with optional logins (RFC
1929), sharing the forward proxy's client ACLs, SSRF defence, password
file, limits, metrics and access log.
"""
