"""
Certificates obtained and renewed over ACME (RFC 8555), issue #16.

The C{acme} library (the C{acme} extra) does the protocol; this package
runs its blocking calls off the reactor thread, answers HTTP-01 from
memory, stores keys privately, and decides when to renew.
"""
